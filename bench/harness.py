"""bench/run's orchestrator: native CPU (ours vs onnxruntime vs PyTorch), the browser (ours in
wasm vs onnxruntime-web), the explorer page, then bench/results.json and results.md.

Called by bench/run, which has built everything and set up the venv and node_modules.
Every figure is a median from this run, beside its anchor from the same run.
"""

import argparse
import datetime
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from report import markdown

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = (REPO / ".." / "shared").resolve()
WORK = BENCH / ".work"
OURS = REPO / os.environ.get("BENCH_OURS", "target/release/resnet-bench")
MAX_LOGIT_DIFF = 1e-3
# The browser's threaded rows: ours and onnxruntime-web with this many threads each.
WASM_THREADS = 2

# model -> ONNX file, input side, our weights (None: random weights of our own, timing only)
MODELS = {
    "cifar-resnet20": (SHARED / "bench" / "cifar10-resnet20.onnx", 32, SHARED / "weights" / "cifar10-resnet20.safetensors"),
    "resnet18": (SHARED / "bench" / "resnet18-imagenet-random.onnx", 224, None),
    # The browser's alone (full runs): exported by the bench's torch (torch_export.py), random
    # weights that both sides load, so the logits are compared.
    "resnet50": (WORK / "resnet50-imagenet-random.onnx", 224, WORK / "resnet50-imagenet-random.safetensors"),
}
# The native section's models (ResNet-50 at batch 32 would take most of its time).
NATIVE_MODELS = ["cifar-resnet20", "resnet18"]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    else:
        name = platform.processor() or "unknown"
    flags = Path("/proc/cpuinfo").read_text()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    return f"{name} ({os.cpu_count()} logical cores, {isa})"


def make_input(model, batch):
    """A fixed N(0,1) tensor (seed 0), as raw little-endian f32, shared by every runner."""
    side = MODELS[model][1]
    path = WORK / f"input-{model}-b{batch}.f32"
    if not path.exists():
        rng = np.random.default_rng(0)
        rng.standard_normal((batch, 3, side, side), dtype=np.float32).tofile(path)
    return path


def url(path):
    """Where the bench page (bench/web/drive.mjs) serves a file of ../shared or bench/.work."""
    for root, prefix in ((SHARED, "/shared/"), (WORK, "/work/")):
        if path.is_relative_to(root):
            return prefix + path.relative_to(root).as_posix()
    raise ValueError(f"{path} is served by neither /shared/ nor /work/")


def torch_env():
    """PyTorch's environment (the CUDA stand-ins), or None where bench/run installed no torch."""
    stubs = BENCH / ".venv" / "cuda-stubs"
    return dict(os.environ, LD_LIBRARY_PATH=str(stubs)) if stubs.exists() else None


def exported_models(quick):
    """The browser's models that the bench's torch exports (torch_export.py), made once; none in
    a --quick run or without torch."""
    if quick:
        return []
    env = torch_env()
    if env is None:
        log("browser: no torch, so no ResNet-50 (bench/run installs it for full runs)")
        return []
    m = "resnet50"
    onnx_path, _, weights = MODELS[m]
    if not (onnx_path.exists() and weights.exists()):
        log(f"torch_export.py {m}")
        prefix = WORK / onnx_path.stem
        p = subprocess.run([str(BENCH / ".venv/bin/python"), str(BENCH / "torch_export.py"), m, str(prefix)],
                           env=env, capture_output=True, text=True, cwd=BENCH)
        if p.returncode != 0:
            raise SystemExit(f"torch_export.py {m} failed:\n{p.stderr}")
    return [m]


def dynamic_batch_onnx(model):
    """The shared ONNX files have batch 1 baked in: a copy with a symbolic batch dimension."""
    src = MODELS[model][0]
    dst = WORK / f"{model}-dynamic.onnx"
    if not dst.exists():
        m = onnx.load(src)
        for v in list(m.graph.input) + list(m.graph.output):
            v.type.tensor_type.shape.dim[0].dim_param = "N"
        del m.graph.value_info[:]  # stale batch-1 shapes; ORT infers them again
        onnx.save(m, dst)
    return dst


def ort_session(model, threads, batch):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = MODELS[model][0] if batch == 1 else dynamic_batch_onnx(model)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_loop(fn, it):
    import time

    first = fn()
    for _ in range(it["warmup"] - 1):
        fn()
    times, t0 = [], time.perf_counter()
    while len(times) < it["max_iters"] and (len(times) < it["min_iters"] or time.perf_counter() - t0 < it["budget_s"]):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return first, {
        "median_ms": statistics.median(times),
        "min_ms": times[0],
        "p90_ms": times[min(len(times) - 1, int(np.ceil(len(times) * 0.9)) - 1)],
        "iters": len(times),
    }


def run_ours(model, threads, batch, it, mode="fast", logits_out=None):
    cmd = [str(OURS), "--model", model, "--batch", str(batch), "--input", str(make_input(model, batch))]
    cmd += ["--mode", mode, "--warmup", str(it["warmup"]), "--min-iters", str(it["min_iters"])]
    cmd += ["--max-iters", str(it["max_iters"]), "--budget-s", str(it["budget_s"])]
    if MODELS[model][2]:
        cmd += ["--weights", str(MODELS[model][2])]
    if logits_out:
        cmd += ["--logits-out", str(logits_out)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    if r["rayon_threads"] != threads or r["candle_threads"] != threads:
        raise SystemExit(f"thread setting did not take effect: asked {threads}, got {r}")
    return r


def run_torch(threads, runs, it):
    """PyTorch in a subprocess (its thread pool is per process), or the reason it is missing."""
    env = torch_env()
    if env is None:
        return None, "unavailable: torch not installed (bench/run --quick skips it)"
    cfg = WORK / f"torch-{threads}.json"
    cfg.write_text(json.dumps({"threads": threads, "runs": runs, **it}))
    p = subprocess.run(
        [str(BENCH / ".venv/bin/python"), str(BENCH / "torch_bench.py"), str(cfg)], env=env, capture_output=True, text=True
    )
    if p.returncode != 0:
        return None, "unavailable: " + (p.stderr.strip().splitlines() or ["torch failed"])[-1]
    return json.loads(p.stdout), None


def native(models, threads_list, batches, it):
    out, notes = {}, {}
    for model in models:
        out[model] = {}
        for threads in threads_list:
            out[model][str(threads)] = {}
            torch_runs = []
            for batch in batches:
                log(f"native {model} threads={threads} batch={batch}")
                it_b = dict(it, min_iters=max(3, it["min_iters"] // 6)) if batch > 1 and model == "resnet18" else it
                logits_path = WORK / f"ours-{model}-b{batch}.f32"
                sess = ort_session(model, threads, batch)
                x = np.fromfile(make_input(model, batch), dtype=np.float32).reshape(batch, 3, MODELS[model][1], -1)
                feeds = {sess.get_inputs()[0].name: x}
                # Alternate ours and ORT in rounds and keep each one's median round: a slow phase
                # of a shared machine then costs both sides alike.
                rounds_ours, rounds_ort = [], []
                for _ in range(it["rounds"]):
                    rounds_ours.append(run_ours(model, threads, batch, it_b, logits_out=logits_path))
                    ort_logits, ort_r = time_loop(lambda: sess.run(None, feeds)[0], it_b)
                    rounds_ort.append(ort_r)
                ours = sorted(rounds_ours, key=lambda r: r["median_ms"])[len(rounds_ours) // 2]
                ort_t = sorted(rounds_ort, key=lambda r: r["median_ms"])[len(rounds_ort) // 2]
                cell = {
                    "ours_ms": ours["median_ms"],
                    "ort_ms": ort_t["median_ms"],
                    "torch_ms": None,
                    "ours": {k: ours[k] for k in ("median_ms", "min_ms", "p90_ms", "iters", "gflops", "cpu_per_wall")},
                    "ort": ort_t,
                    "ratio_vs_ort": ours["median_ms"] / ort_t["median_ms"],
                }
                if MODELS[model][2]:
                    ours_logits = np.fromfile(logits_path, dtype=np.float32).reshape(ort_logits.shape)
                    diff = float(np.abs(ours_logits - ort_logits).max())
                    cell["logits_max_abs_diff_vs_ort"] = diff
                    if diff > MAX_LOGIT_DIFF:
                        raise SystemExit(f"{model} batch {batch}: our logits differ from ORT's by {diff} > {MAX_LOGIT_DIFF}")
                out[model][str(threads)][str(batch)] = cell
                run = {"model": model, "batch": batch, "input": str(make_input(model, batch))}
                if MODELS[model][2]:
                    run["weights"] = str(MODELS[model][2])
                    run["logits_out"] = str(WORK / f"torch-{model}-b{batch}.f32")
                torch_runs.append(run)
            log(f"torch {model} threads={threads}")
            t, why = run_torch(threads, torch_runs, it)
            for run, batch in zip(torch_runs, batches):
                cell = out[model][str(threads)][str(batch)]
                if t is None:
                    cell["torch_ms"] = why
                    continue
                r = next(r for r in t["runs"] if r["batch"] == batch)
                cell["torch_ms"] = r["median_ms"]
                cell["torch"] = {k: r[k] for k in ("median_ms", "min_ms", "p90_ms", "iters")}
                cell["ratio_vs_torch"] = cell["ours_ms"] / r["median_ms"]
                if run.get("logits_out"):
                    ref = np.fromfile(WORK / f"ours-{model}-b{batch}.f32", dtype=np.float32)
                    tl = np.fromfile(run["logits_out"], dtype=np.float32)
                    cell["torch_logits_max_abs_diff_vs_ours"] = float(np.abs(ref - tl).max())
                notes["torch_version"] = t["torch_version"]
    return out, notes


def summarize_profile(p):
    """Node-by-node profile of the fast forward (resnet_core::profile, from either bench)."""
    p["conv_share_of_forward"] = p["conv_ms"] / p["forward_ms"]
    return p


# The node-by-node profile passes for at least this long (as the browser's, `profileMinMs`), so
# that its per-node medians outlast a slow phase of the machine: ResNet-20's 15 passes (~13 ms)
# once read 1.45 ms a forward against 0.83 timed.
PROFILE_MIN_MS = 1000


def ours_one_thread(m, *args):
    """`resnet-bench --model M ARGS` on 1 thread (with M's weights where it has some): its parsed JSON."""
    cmd = [str(OURS), "--model", m, *args]
    if MODELS[m][2]:
        cmd += ["--weights", str(MODELS[m][2])]
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    return json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)


def native_profile(models, quick, native_results):
    """`native_results`: native()'s, whose 1-thread batch-1 median sets the passes."""
    out = {}
    for m in models:
        reps = 1 if quick else max(15, math.ceil(PROFILE_MIN_MS / native_results[m]["1"]["1"]["ours_ms"]))
        out[m] = summarize_profile(ours_one_thread(m, "--mode", "profile", "--min-iters", str(reps), "--max-iters", str(reps)))
    return out


# Seconds each conv shape's kernels are timed for by `resnet-bench --mode kernels`.
KERNELS_BUDGET_S = 1.0


def native_kernels(models, quick):
    """Each conv shape of each model timed in the forward on every kernel that can run it, 1 thread:
    where the rule that picks a conv's kernel is not the fastest on this CPU (resnet_core::profile)."""
    budget = str(0 if quick else KERNELS_BUDGET_S)
    return {m: ours_one_thread(m, "--mode", "kernels", "--budget-s", budget) for m in models}


def drive_bench_page(cfg, name):
    """bench/web/drive.mjs on config `cfg` (written to WORK/NAME.json): its parsed output."""
    path = WORK / f"{name}.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run(["node", str(BENCH / "web" / "drive.mjs"), "bench", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name} bench failed:\n{p.stderr}")
    return json.loads(p.stdout)


def add_relaxed(row, rel, plain, what):
    """The relaxed-SIMD build's time (`rel`: its variant's result for this model) into `row`, as a
    ratio to the onnxruntime-web time of its own variant; its logits must equal the SIMD128
    build's (`plain`) up to rounding (a fused multiply-add rounds once)."""
    diff = max(abs(a - b) for a, b in zip(rel["logits"], plain["logits"]))
    if not diff <= MAX_LOGIT_DIFF:
        raise SystemExit(f"{what}: the relaxed-SIMD build's logits differ from the SIMD128 build's by {diff}")
    row["ours_relaxed_ms"] = rel["ours"]["median_ms"]
    row["ort_relaxed_run_ms"] = rel["ort"]["median_ms"]
    row["relaxed_ratio"] = rel["ours"]["median_ms"] / rel["ort"]["median_ms"]
    row["relaxed_logits_max_abs_diff"] = diff
    row["stats"]["ours_relaxed"] = rel["ours"]
    row["stats"]["ort_relaxed_run"] = rel["ort"]


def browser(models, quick):
    models = list(models) + exported_models(quick)
    settle = 0 if quick else 100
    cfg = {
        "common": {
            "warmup": 1 if quick else 3,
            "warmupMs": 0 if quick else 2000,
            "samples": 3 if quick else 30,
            "minSampleMs": 5 if quick else 30,
            "profileReps": 1 if quick else 11,
            "profileMinMs": 0 if quick else 1000,
            # The kernel rule checked in the browser too, on issue 15's two nets (1 s per shape).
            "kernelsMinMs": 0 if quick else 1000 * KERNELS_BUDGET_S,
            "models": [
                {
                    "name": m,
                    "onnx": url(MODELS[m][0]),
                    "weights": url(MODELS[m][2]) if MODELS[m][2] else None,
                    "input": f"/work/{make_input(m, 1).name}",
                    "dims": [1, 3, MODELS[m][1], MODELS[m][1]],
                }
                for m in models
            ],
        },
        "variants": [
            {"name": "gemm-simd128", "gemmSimd128": True, "ort": True, "taps": True, "profile": True},
            # Our relaxed-SIMD build (fused multiply-adds; the explorer loads it where the browser
            # validates relaxed SIMD), on a page of its own, against onnxruntime-web again.
            {"name": "relaxed", "relaxed": True, "gemmSimd128": True, "ort": True, "taps": False, "profile": False,
             "kernelsModels": [m for m in models if m in ("cifar-resnet20", "resnet18")]},
            {"name": "gemm-scalar", "gemmSimd128": False, "ort": False, "taps": False, "profile": False},
            # Ours threaded (a pool of WASM_THREADS Web Workers) against onnxruntime-web's
            # threaded build with as many, the page cross-origin isolated. A pause before each
            # contender's sample (settleMs): a threaded contender's pool spins on after its loop
            # and took a core from the next one (ours on 2 threads: 1.6 ms alone, 2.7 interleaved
            # with onnxruntime-web; 2026-12-06).
            {"name": "threads", "threads": WASM_THREADS, "gemmSimd128": True, "ort": True, "taps": False, "profile": False,
             "settleMs": settle},
        ]
        # (--quick leaves the relaxed threaded build out: the explorer's e2e test runs it.)
        + ([] if quick else [{"name": "relaxed-threads", "threads": WASM_THREADS, "relaxed": True, "gemmSimd128": True,
                              "ort": True, "taps": False, "profile": False, "settleMs": settle}]),
    }
    raw = drive_bench_page(cfg, "browser")
    simd = next(v["result"] for v in raw["variants"] if v["name"] == "gemm-simd128")
    scalar = next(v["result"] for v in raw["variants"] if v["name"] == "gemm-scalar")
    threaded = next(v["result"] for v in raw["variants"] if v["name"] == "threads")
    relaxed = next(v["result"] for v in raw["variants"] if v["name"] == "relaxed")
    relaxed_threaded = next((v["result"] for v in raw["variants"] if v["name"] == "relaxed-threads"), None)
    if threaded["threads"] != WASM_THREADS:
        raise SystemExit(f"wasm threads: ours ran on {threaded['threads']} threads, not {WASM_THREADS}")
    out, out_threads = {}, {}
    for m in models:
        r, s = simd["models"][m], scalar["models"][m]
        diff = r.get("logits_max_abs_diff")
        if MODELS[m][2] and (diff is None or diff > MAX_LOGIT_DIFF):
            raise SystemExit(f"wasm {m}: our logits differ from onnxruntime-web's by {diff} > {MAX_LOGIT_DIFF}")
        gflops = 2 * r["macs"] / (r["ours"]["median_ms"] * 1e6)
        out[m] = {
            "ours_ms": r["ours"]["median_ms"],
            "ours_taps_ms": r["ours_taps"]["median_ms"],
            "ort_ms": r["ort"]["median_ms"],
            "ratio": r["ours"]["median_ms"] / r["ort"]["median_ms"],
            "taps_ratio": r["ours_taps"]["median_ms"] / r["ours"]["median_ms"],
            "ours_gemm_scalar_ms": s["ours"]["median_ms"],
            "ours_gflops": gflops,
            "ort_gflops": 2 * r["macs"] / (r["ort"]["median_ms"] * 1e6),
            "logits_max_abs_diff": diff if MODELS[m][2] else None,
            "stats": {"ours": r["ours"], "ours_taps": r["ours_taps"], "ort": r["ort"], "ours_gemm_scalar": s["ours"]},
            "profile": summarize_profile(r["profile"]),
        }
        add_relaxed(out[m], relaxed["models"][m], r, f"wasm {m}")
        if "kernels" in relaxed["models"][m]:
            out[m]["kernels"] = relaxed["models"][m]["kernels"]
        t = threaded["models"][m]
        diff = t.get("logits_max_abs_diff")
        if MODELS[m][2] and (diff is None or diff > MAX_LOGIT_DIFF):
            raise SystemExit(f"wasm {m}, threads: our logits differ from onnxruntime-web's by {diff} > {MAX_LOGIT_DIFF}")
        out_threads[m] = {
            "threads": threaded["threads"],
            "ours_ms": t["ours"]["median_ms"],
            "ort_ms": t["ort"]["median_ms"],
            "ratio": t["ours"]["median_ms"] / t["ort"]["median_ms"],
            "ours_speedup": r["ours"]["median_ms"] / t["ours"]["median_ms"],
            "ort_speedup": r["ort"]["median_ms"] / t["ort"]["median_ms"],
            "logits_max_abs_diff": diff if MODELS[m][2] else None,
            "stats": {"ours": t["ours"], "ort": t["ort"]},
        }
        if relaxed_threaded:
            add_relaxed(out_threads[m], relaxed_threaded["models"][m], t, f"wasm {m}, threads")
            out_threads[m]["ours_relaxed_speedup"] = out[m]["ours_relaxed_ms"] / out_threads[m]["ours_relaxed_ms"]
    return out, out_threads, raw["browser"], simd.get("ort_version")


def browser_cam(quick):
    """Grad-CAM in the browser against the plain forward (the issue's bound: ≤ 3×), interleaved."""
    models = [("cifar-resnet20", 32, "/shared/weights/cifar10-resnet20.safetensors")]
    if not quick:
        models.append(("resnet50", 224, None))
    cfg = {
        "common": {
            "warmup": 1 if quick else 3,
            "warmupMs": 0 if quick else 2000,
            "samples": 3 if quick else 15,
            "minSampleMs": 5 if quick else 30,
            "camModels": [{"name": m, "weights": w, "dims": [1, 3, side, side]} for m, side, w in models],
        },
        "variants": [{"name": "cam"}],
    }
    r = drive_bench_page(cfg, "browser-cam")["variants"][0]["result"]["models"]
    out = {}
    for m, _, w in models:
        v = r[m]
        out[m] = {
            "forward_ms": v["forward"]["median_ms"],
            "cam_ms": v["cam"]["median_ms"],
            "cam_backward_ms": v["cam_backward"]["median_ms"],
            "cam_ratio": v["cam"]["median_ms"] / v["forward"]["median_ms"],
            "cam_size": v["cam_size"],
            "weights": "shipped" if w else "random",
            "stats": {k: v[k] for k in ("forward", "cam", "cam_backward")},
        }
    return out


def page(quick):
    dist = REPO / "dist"
    wasm = sorted(dist.glob("*.wasm"), key=lambda p: p.stat().st_size, reverse=True) if dist.is_dir() else []
    if not wasm:
        return {
            "wasm_bytes": None,
            "wasm_gzip_bytes": None,
            "total_bytes": None,
            "first_prediction_ms": None,
            "note": "dist/ not built (trunk build --release): the explorer was not measured",
        }
    raw = sum(p.stat().st_size for p in wasm)
    gz = sum(len(gzip.compress(p.read_bytes(), 9)) for p in wasm)
    out = {"wasm_bytes": raw, "wasm_gzip_bytes": gz, "wasm_files": [p.name for p in wasm]}
    # The threaded worker (dist/threads/), which a cross-origin isolated page loads instead of
    # worker_bg.wasm: a build of its own.
    threaded = sorted((dist / "threads").glob("*.wasm"))
    if threaded:
        out["threads_wasm_bytes"] = sum(p.stat().st_size for p in threaded)
        out["threads_wasm_gzip_bytes"] = sum(len(gzip.compress(p.read_bytes(), 9)) for p in threaded)
    p = subprocess.run(
        ["node", str(BENCH / "web" / "drive.mjs"), "page", str(dist), "2" if quick else "5"],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        out.update(total_bytes=None, first_prediction_ms=None, note=f"page not measured: {p.stderr.strip()[-300:]}")
        return out
    loads = json.loads(p.stdout)["loads"]
    out["total_bytes"] = int(statistics.median(x["total_bytes"] for x in loads))
    out["total_gzip_bytes"] = int(statistics.median(x["total_gzip_bytes"] for x in loads))
    out["first_prediction_ms"] = statistics.median(x["first_prediction_ms"] for x in loads)
    out["loads"] = loads
    return out


# Training: (model, batch) rows the issue asks for; images/s of SGD steps on one fixed batch.
TRAIN_ROWS = [("cifar-resnet20", 128), ("cifar-resnet56", 128), ("cifar-plain56", 128), ("resnet18", 16)]


def train_input(model, batch):
    """A fixed N(0,1) batch (seed 1) for the training rows, shared by ours and PyTorch."""
    side = 32 if model.startswith("cifar") else 224
    path = WORK / f"train-{model}-b{batch}.f32"
    if not path.exists():
        np.random.default_rng(1).standard_normal((batch, 3, side, side), dtype=np.float32).tofile(path)
    return path


def run_ours_train(model, threads, batch, it):
    cmd = [str(OURS), "--model", model, "--batch", str(batch), "--input", str(train_input(model, batch))]
    cmd += ["--mode", "train", "--warmup", str(it["warmup"]), "--min-iters", str(it["min_iters"])]
    cmd += ["--max-iters", str(it["max_iters"]), "--budget-s", str(it["budget_s"])]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    if r["rayon_threads"] != threads:
        raise SystemExit(f"thread setting did not take effect: asked {threads}, got {r}")
    return r


def training(quick):
    """`resnet train`'s step (the fast CPU plan) beside PyTorch eager's, interleaved round by
    round (ours, then PyTorch, each in a fresh process so peak RSS is that run's alone); each
    side's median round."""
    if quick:
        rows, threads_list = [("cifar-resnet20", 8)], [1]
        it = {"warmup": 1, "min_iters": 2, "max_iters": 3, "budget_s": 0.1, "rounds": 1}
    else:
        rows, threads_list = TRAIN_ROWS, [1, 2]
        it = {"warmup": 2, "min_iters": 5, "max_iters": 40, "budget_s": 4.0, "rounds": 3}
    out, torch_note = {}, None
    for model, batch in rows:
        out[model] = {"batch": batch, "threads": {}}
        for threads in threads_list:
            log(f"training {model} batch={batch} threads={threads}")
            ours_rounds, torch_rounds = [], []
            for _ in range(it["rounds"]):
                ours_rounds.append(run_ours_train(model, threads, batch, it))
                run = {"model": model, "batch": batch, "input": str(train_input(model, batch)), "train": True}
                t, why = run_torch(threads, [run], it)
                if t is None:
                    torch_note = why
                else:
                    torch_rounds.append(dict(t["runs"][0], base_rss_mb=t["base_rss_mb"], version=t["torch_version"]))
            ours = sorted(ours_rounds, key=lambda r: r["median_ms"])[len(ours_rounds) // 2]
            cell = {
                "ours_images_per_s": ours["images_per_s"],
                "ours_peak_rss_mb": ours["peak_rss_mb"],
                "ours": {k: ours[k] for k in ("path", "median_ms", "min_ms", "p90_ms", "iters", "cpu_per_wall")},
                "torch_images_per_s": None,
                "torch_peak_rss_mb": None,
                "ratio": None,
                "rss_ratio": None,
            }
            if torch_rounds:
                tr = sorted(torch_rounds, key=lambda r: r["median_ms"])[len(torch_rounds) // 2]
                cell.update(
                    torch_images_per_s=tr["images_per_s"],
                    torch_peak_rss_mb=tr["peak_rss_mb"],
                    torch={k: tr[k] for k in ("median_ms", "min_ms", "p90_ms", "iters", "cpu_per_wall", "base_rss_mb")},
                    ratio=ours["images_per_s"] / tr["images_per_s"],
                    rss_ratio=ours["peak_rss_mb"] / tr["peak_rss_mb"],
                )
            out[model]["threads"][str(threads)] = cell
    return {"rows": out, "torch_note": torch_note}


def validate(res):
    """The shape the issue asks for; bench/run --quick and scripts/test.d/40-bench-quick use it."""
    for k in ("date", "cpu", "browser", "wasm", "native", "page", "gpu"):
        assert k in res, f"missing {k}"
    for m, r in res["wasm"].items():
        for k in ("ours_ms", "ours_taps_ms", "ort_ms", "ratio", "ours_relaxed_ms", "relaxed_ratio"):
            assert isinstance(r[k], (int, float)) and r[k] > 0, f"wasm.{m}.{k} = {r.get(k)}"
    for m, r in (res.get("wasm_threads") or {}).items():
        for k in ("threads", "ours_ms", "ort_ms", "ratio"):
            assert isinstance(r[k], (int, float)) and r[k] > 0, f"wasm_threads.{m}.{k} = {r.get(k)}"
    assert res["native"], "no native results"
    kernel_rows = [(f"native_kernels.{m}", s) for m, s in (res.get("native_kernels") or {}).items()]
    kernel_rows += [(f"wasm.{m}.kernels", r["kernels"]) for m, r in res["wasm"].items() if "kernels" in r]
    for where, shapes in kernel_rows:
        assert shapes, f"{where}: no convs"
        for c in shapes:
            assert c["rule"] in c["times"], f"{where} {c['shape']}: the rule's kernel was not timed"
            assert all(t > 0 for t in c["times"].values()), f"{where} {c['shape']}: {c['times']}"
    for m, by_t in res["native"].items():
        for t, by_b in by_t.items():
            for b, c in by_b.items():
                for k in ("ours_ms", "ort_ms"):
                    assert isinstance(c[k], (int, float)) and c[k] > 0, f"native.{m}.{t}.{b}.{k}"
                assert "torch_ms" in c
    for k in ("wasm_bytes", "wasm_gzip_bytes", "total_bytes", "first_prediction_ms"):
        assert k in res["page"], f"page.{k}"
    assert res["gpu"] is None or isinstance(res["gpu"], dict)
    for m, r in (res.get("cam") or {}).items():
        for k in ("forward_ms", "cam_ms", "cam_backward_ms", "cam_ratio"):
            assert isinstance(r[k], (int, float)) and r[k] > 0, f"cam.{m}.{k} = {r.get(k)}"
    for m, r in ((res.get("train") or {}).get("rows") or {}).items():
        assert r["threads"], f"train.{m}: no thread counts"
        for t, c in r["threads"].items():
            for k in ("ours_images_per_s", "ours_peak_rss_mb"):
                assert isinstance(c[k], (int, float)) and c[k] > 0, f"train.{m}.{t}.{k} = {c.get(k)}"
            assert c["ours"]["path"] == "fast", f"train.{m}.{t}: ran on {c['ours']['path']}, not the fast plan"
            assert c["ratio"] is None or c["ratio"] > 0, f"train.{m}.{t}.ratio"


def native_plan(quick):
    """Models, thread counts, batch sizes and loop settings of the native section."""
    if quick:
        return NATIVE_MODELS[:1], [1], [1, 2], {"warmup": 1, "min_iters": 3, "max_iters": 5, "budget_s": 0.1, "rounds": 1}
    # Seven short rounds a side rather than three long ones: this VM's slow phases last seconds,
    # and three rounds left a 1.2 vs 1.8 ms median of the same code path (2026-12-06).
    return NATIVE_MODELS, [1, 2], [1, 32], {"warmup": 3, "min_iters": 30, "max_iters": 300, "budget_s": 0.5, "rounds": 7}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, help="directory for results.json and results.md")
    ap.add_argument("--validate", type=Path, help="only check that this results.json has the expected shape")
    ap.add_argument(
        "--only", choices=["cam", "train", "native", "wasm", "page"], help="measure this part alone and merge it into OUT/results.json"
    )
    a = ap.parse_args()
    if a.validate:
        validate(json.loads(a.validate.read_text()))
        print(f"{a.validate}: valid")
        return
    if a.out is None:
        ap.error("--out is required")
    WORK.mkdir(exist_ok=True)
    if a.only:
        path = a.out / "results.json"
        res = json.loads(path.read_text())
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if a.only == "cam":
            log("browser Grad-CAM")
            res["cam"] = browser_cam(a.quick)
            res["cam_date"] = now
        elif a.only == "page":
            measured = page(a.quick)
            if measured["first_prediction_ms"] is None:
                # Keep the committed figures rather than overwrite them with none.
                raise SystemExit(f"--only page: {measured['note']}")
            res["page"] = measured
            res["page"]["date"] = now
        elif a.only == "wasm":
            # The browser's inference alone: it carries its own date and CPU.
            models = native_plan(a.quick)[0]
            res["wasm"], res["wasm_threads"], res["browser"], res["versions"]["onnxruntime_web"] = browser(models, a.quick)
            res["wasm_run"] = {"date": now, "cpu": cpu_model()}
        elif a.only == "native":
            # Native alone, perhaps on another CPU than the rest: it carries its own date and CPU.
            load0 = list(os.getloadavg())
            models, threads, batches, it = native_plan(a.quick)
            res["native"], notes = native(models, threads, batches, it)
            log("native profile")
            res["native_profile"] = native_profile(models, a.quick, res["native"])
            log("native kernel choices")
            res["native_kernels"] = native_kernels(models, a.quick)
            res["versions"]["onnxruntime"] = ort.__version__
            res["versions"]["torch"] = notes.get("torch_version") or res["versions"].get("torch")
            res["native_run"] = {"date": now, "cpu": cpu_model(), "load_average": {"start": load0, "end": list(os.getloadavg())}}
        else:
            load0 = list(os.getloadavg())
            res["train"] = training(a.quick)
            res["train"].update(date=now, load_average={"start": load0, "end": list(os.getloadavg())})
        validate(res)
        path.write_text(json.dumps(res, indent=2) + "\n")
        (a.out / "results.md").write_text(markdown(res) + "\n")
        print(markdown(res))
        return
    models, threads, batches, it = native_plan(a.quick)
    load0 = list(os.getloadavg())  # the machine is shared: say how busy it was
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "browser": None,
        "quick": a.quick,
        "versions": {"onnxruntime": ort.__version__},
    }
    res["native"], notes = native(models, threads, batches, it)
    log("native profile")
    res["native_profile"] = native_profile(models, a.quick, res["native"])
    log("native kernel choices")
    res["native_kernels"] = native_kernels(models, a.quick)
    res["versions"]["torch"] = notes.get("torch_version")
    log("browser")
    res["wasm"], res["wasm_threads"], res["browser"], res["versions"]["onnxruntime_web"] = browser(models, a.quick)
    log("browser Grad-CAM")
    res["cam"] = browser_cam(a.quick)
    log("training")
    res["train"] = training(a.quick)
    log("page")
    res["page"] = page(a.quick)
    res["gpu"] = None
    res["gpu_note"] = "no GPU lent to this run"
    res["peak_note"] = (
        "simd128 peak ≈ 4-wide f32 × (mul + add) = 8 flop/cycle/core; at ~3 GHz ≈ 24 GFLOP/s per core. "
        "wasm.*.ours_gflops is the achieved rate (2·MACs / median)."
    )
    res["load_average"] = {"start": load0, "end": list(os.getloadavg())}
    validate(res)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (a.out / "results.md").write_text(markdown(res) + "\n")
    print(markdown(res))


if __name__ == "__main__":
    main()
