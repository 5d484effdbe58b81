"""PyTorch CPU anchor: the same architectures as resnet-core (torchvision's ResNet-18 layout, the
CIFAR ResNets with option-A shortcuts and the plain CIFAR nets, same parameter names).
Inference: eval mode, inference_mode. Training (`"train": true`): train mode, SGD steps
(lr 0.01, momentum 0.9, weight decay 1e-4, the loss, backward and the update) on one fixed
batch with labels i mod classes, as `resnet-bench --mode train` does; peak RSS is the process's,
so bench/harness.py gives each training run a process of its own.

usage: torch_bench.py CONFIG.json  -> prints one JSON object (timings per model and batch).
CONFIG: {"threads", "runs": [{"model", "batch", "input", "weights"?, "logits_out"?, "train"?}],
"min_iters", "max_iters", "budget_s", "warmup"}
"""
import json
import resource
import sys
import time

import numpy as np

import torch  # with bench/.venv/cuda-stubs (torch_stubs.py) on LD_LIBRARY_PATH
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut_kind = shortcut
        self.stride, self.pad = stride, planes - inp
        if shortcut == "B":  # torchvision's downsample
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut_kind == "plain":  # the plain nets: no shortcut at all
            return F.relu(out)
        if self.shortcut_kind == "B":
            x = self.downsample(x)
        elif self.shortcut_kind == "A":
            x = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
        return F.relu(out + x)


class CifarResNet(nn.Module):
    def __init__(self, n, plain=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inp = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                kind = "plain" if plain else "A" if (s != 1 or inp != planes) else None
                blocks.append(BasicBlock(inp, planes, s, kind))
                inp = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Bottleneck(nn.Module):
    """torchvision's bottleneck (v1.5: the stride on the 3×3), its names."""

    def __init__(self, inp, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    """torchvision's ResNet-18 (basic blocks) and ResNet-50 (bottlenecks), its names."""

    def __init__(self, counts, bottleneck=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        for i, (planes, stride, n) in enumerate(zip([64, 128, 256, 512], [1, 2, 2, 2], counts)):
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                if bottleneck:
                    blocks.append(Bottleneck(inp, planes, s))
                    inp = planes * 4
                else:
                    blocks.append(BasicBlock(inp, planes, s, "B" if (s != 1 or inp != planes) else None))
                    inp = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inp, 1000)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def load_safetensors(path):
    """float32 tensors of a safetensors file (the format is a JSON header and raw bytes)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    state = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        state[name] = torch.from_numpy(np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=np.float32).reshape(t["shape"]).copy())
    return state


def save_safetensors(path, state):
    """float32 tensors as a safetensors file, in the layout load_safetensors reads."""
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        blob = t.detach().contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def build(name, weights):
    model = {
        "cifar-resnet20": lambda: CifarResNet(3),
        "cifar-resnet56": lambda: CifarResNet(9),
        "cifar-plain56": lambda: CifarResNet(9, plain=True),
        "resnet18": lambda: ImageNetResNet([2, 2, 2, 2]),
        "resnet50": lambda: ImageNetResNet([3, 4, 6, 3], bottleneck=True),
    }[name]()
    if weights:
        state = load_safetensors(weights)
        model.load_state_dict(state, strict=False)
        missing = set(model.state_dict()) - set(state)
        if any(not k.endswith("num_batches_tracked") for k in missing):
            raise SystemExit(f"{weights}: missing {sorted(missing)}")
    return model.eval()


def rss_mb(key):
    """A line of /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(cfg, fn):
    """Sorted milliseconds of `fn` after the warm-up, as many as the budget allows."""
    for _ in range(max(1, cfg["warmup"])):
        fn()
    times, t0 = [], time.perf_counter()
    while len(times) < cfg["max_iters"] and (len(times) < cfg["min_iters"] or time.perf_counter() - t0 < cfg["budget_s"]):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)


def train_run(cfg, run, model, x):
    """SGD steps on one batch: what `resnet-bench --mode train` times."""
    model.train()
    classes = model.fc.out_features if hasattr(model, "fc") else model.linear.out_features
    labels = torch.arange(run["batch"]) % classes
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise SystemExit(f"{run['model']}: the loss diverged")

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    times = timed(cfg, step)
    cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    median = float(np.median(times))
    return {
        "model": run["model"],
        "batch": run["batch"],
        "train": True,
        "iters": len(times),
        "median_ms": median,
        "min_ms": times[0],
        "p90_ms": times[min(len(times) - 1, int(np.ceil(len(times) * 0.9)) - 1)],
        "images_per_s": run["batch"] / (median / 1e3),
        "cpu_per_wall": cpu_per_wall,
        "peak_rss_mb": max(rss_mb("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main():
    cfg = json.load(open(sys.argv[1]))
    torch.set_num_threads(cfg["threads"])
    torch.set_num_interop_threads(1)
    out = {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "runs": []}
    out["base_rss_mb"] = rss_mb("VmRSS")  # torch imported, no model yet
    for run in cfg["runs"]:
        model = build(run["model"], run.get("weights"))
        shape = (run["batch"], 3, 32, 32) if run["model"].startswith("cifar") else (run["batch"], 3, 224, 224)
        x = torch.from_numpy(np.fromfile(run["input"], dtype=np.float32).reshape(shape))
        if run.get("train"):
            out["runs"].append(train_run(cfg, run, model, x))
            continue
        with torch.inference_mode():
            logits = model(x)
            for _ in range(cfg["warmup"] - 1):
                model(x)
            times, t0 = [], time.perf_counter()
            while len(times) < cfg["max_iters"] and (
                len(times) < cfg["min_iters"] or time.perf_counter() - t0 < cfg["budget_s"]
            ):
                t = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t) * 1e3)
        if run.get("logits_out"):
            logits.numpy().astype(np.float32).tofile(run["logits_out"])
        times.sort()
        out["runs"].append(
            {
                "model": run["model"],
                "batch": run["batch"],
                "iters": len(times),
                "median_ms": float(np.median(times)),
                "min_ms": times[0],
                "p90_ms": times[min(len(times) - 1, int(np.ceil(len(times) * 0.9)) - 1)],
            }
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
