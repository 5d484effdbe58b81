"""A random-weight ImageNet network, the same weights twice: ONNX (onnxruntime-web's input,
exported by torch) and safetensors under torchvision's names (ours), so the browser bench can
check our logits against onnxruntime-web's as it does for the shipped CIFAR weights.

Random BatchNorm statistics (mean 0, variance 1) would let activations grow block by block;
the running statistics are instead measured on N(0, 1) images, so every layer sees values of
order one, as in a trained network.

usage: torch_export.py MODEL OUT_PREFIX  -> OUT_PREFIX.onnx and OUT_PREFIX.safetensors
"""
import sys
from pathlib import Path

import torch  # with bench/.venv/cuda-stubs (torch_stubs.py) on LD_LIBRARY_PATH
from torch import nn

from torch_bench import build, save_safetensors


def main():
    name, prefix = sys.argv[1], Path(sys.argv[2])
    torch.manual_seed(0)
    model = build(name, None)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, 224, 224))
    model.eval()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    out = {ext: Path(f"{prefix}.{ext}") for ext in ("safetensors", "onnx")}
    tmp = {ext: Path(f"{prefix}.tmp.{ext}") for ext in out}
    save_safetensors(tmp["safetensors"], state)
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, (x,), str(tmp["onnx"]), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamo=False)
    # Renamed last, so that a run stopped half-way leaves no pair that does not match.
    for ext in out:
        tmp[ext].rename(out[ext])


if __name__ == "__main__":
    main()
