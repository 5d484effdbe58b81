// The browser half of bench/run, in a module worker (where the explorer runs its inference too,
// and where a thread pool may block waiting for its threads, which a page's main thread may
// not). Ours and onnxruntime-web see the same input tensor; each is timed as loops of runs after
// a warm-up, and each sample is one loop's time divided by its length. `cfg.threads` > 1: our
// threaded build (bench/run builds it with scripts/build-wasm-threads) with a pool of that many
// threads, and onnxruntime-web with as many; both need the page cross-origin isolated.
import * as ort from '/ort/ort.wasm.min.mjs';

const log = (msg) => postMessage({ log: msg });

// Our wasm: with or without threads, simd128 or relaxed SIMD; each build loaded once per worker
// (a pool starts once).
const builds = new Map();
async function loadOurs(threads, relaxed = false) {
  const pkg = `/pkg${relaxed ? '-relaxed' : ''}${threads > 1 ? '-threads' : ''}/`;
  if (builds.has(pkg)) return builds.get(pkg);
  if (threads > 1 && !self.crossOriginIsolated) throw new Error('threads need a cross-origin isolated page (COOP/COEP)');
  const ours = await import(`${pkg}resnet_bench_wasm.js`);
  await ours.default();
  if (threads > 1) await ours.initThreadPool(threads);
  builds.set(pkg, ours);
  return ours;
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

function stats(times, runsPerSample) {
  const t = [...times].sort((a, b) => a - b);
  const n = t.length;
  const median = n % 2 ? t[(n - 1) / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
  const p90 = t[Math.min(n - 1, Math.ceil(n * 0.9) - 1)];
  return { median_ms: median, min_ms: t[0], p90_ms: p90, samples: n, runs_per_sample: runsPerSample };
}

// fns: name -> fn(k) that runs k forward passes. The contenders are timed in interleaved rounds
// (one loop of each per round), so a slow phase of a noisy machine hits all of them alike. The
// warm-up lasts at least `warmupMs` as well as `warmup` runs of each: V8 first runs wasm in its
// baseline compiler and swaps in optimised code for hot functions while it runs.
async function timeInterleaved(fns, { warmup, warmupMs = 0, samples, minSampleMs, settleMs = 0 }) {
  const names = Object.keys(fns);
  const w0 = performance.now();
  for (let i = 0; i < warmup || performance.now() - w0 < warmupMs; i++) {
    for (const n of names) await fns[n](1);
  }
  const k = {};
  for (const n of names) {
    const t0 = performance.now();
    await fns[n](1);
    k[n] = Math.max(1, Math.ceil(minSampleMs / Math.max(performance.now() - t0, 0.05)));
  }
  const times = Object.fromEntries(names.map((n) => [n, []]));
  for (let s = 0; s < samples; s++) {
    for (const n of names) {
      // A threaded contender's pool spins for a while after its loop (onnxruntime-web's as
      // ours): the next one's sample starts once those threads are idle, as on a page that
      // runs one engine, and after one untimed pass (a core idle for the pause runs the first
      // pass after it slowly).
      if (settleMs) {
        await new Promise((r) => setTimeout(r, settleMs));
        await fns[n](1);
      }
      const t0 = performance.now();
      await fns[n](k[n]);
      times[n].push((performance.now() - t0) / k[n]);
    }
  }
  return Object.fromEntries(names.map((n) => [n, stats(times[n], k[n])]));
}

async function runBench(cfg) {
  const threads = cfg.threads ?? 1;
  // cfg.relaxed: our relaxed-SIMD build instead of the SIMD128 one (one of them per worker: with
  // both in one worker, V8 ran the first ~1.5× slower than alone, measured 2026-12-06).
  const { BenchModel, setGemmSimd128, gemmSimd128, threads: ourThreads } = await loadOurs(threads, cfg.relaxed);
  ort.env.wasm.wasmPaths = '/ort/';
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.simd = true;
  const out = { ort_version: ort.env.versions?.web ?? null, threads: ourThreads(), ort_threads: threads, models: {} };
  for (const m of cfg.models) {
    log(`${m.name}: loading`);
    const input = new Float32Array((await fetchBytes(m.input)).buffer);
    const weights = m.weights ? await fetchBytes(m.weights) : undefined;
    const ours = new BenchModel(m.name, weights);
    // gemm picks its kernels at the first matmul and keeps them: set the switch before it.
    setGemmSimd128(cfg.gemmSimd128);
    ours.setInput(input, m.dims[0]);
    const r = { macs: ours.macs() };
    const opts = { warmup: cfg.warmup, warmupMs: cfg.warmupMs, samples: cfg.samples, minSampleMs: cfg.minSampleMs, settleMs: cfg.settleMs };
    const oursLogits = ours.logits();
    const fns = { ours: (k) => ours.run(k, false) };
    if (cfg.taps) fns.ours_taps = (k) => ours.run(k, true);
    let session = null;
    if (cfg.ort) {
      session = await ort.InferenceSession.create(await fetchBytes(m.onnx), {
        executionProviders: ['wasm'],
        graphOptimizationLevel: 'all',
      });
      const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', input, m.dims) };
      const ortLogits = (await session.run(feeds))[session.outputNames[0]].data;
      let diff = 0;
      for (let i = 0; i < ortLogits.length; i++) diff = Math.max(diff, Math.abs(ortLogits[i] - oursLogits[i]));
      r.logits_max_abs_diff = oursLogits.length === ortLogits.length ? diff : null;
      fns.ort = async (k) => { for (let i = 0; i < k; i++) await session.run(feeds); };
    }
    log(`${m.name}: timing ${Object.keys(fns).join(', ')}`);
    Object.assign(r, await timeInterleaved(fns, opts));
    if (cfg.taps) r.taps_count = ours.run(1, true);
    if (session) await session.release();
    if (cfg.profile) {
      // Passes for at least profileMinMs, so the per-node medians outlast a slow phase of the
      // machine: ResNet-20's 11 passes took 25 ms, and twice read 1.8× the timed forward.
      const reps = Math.max(cfg.profileReps, Math.ceil((cfg.profileMinMs ?? 0) / r.ours.median_ms));
      r.profile = JSON.parse(ours.profile(reps));
    }
    if ((cfg.kernelsModels ?? []).includes(m.name)) {
      // Each conv shape on every kernel that can run it, in the forward: the rule checked here.
      r.kernels = JSON.parse(ours.kernel_choices(cfg.kernelsMinMs ?? 0));
    }
    ours.free();
    r.logits = Array.from(oursLogits);
    out.models[m.name] = r;
    out.gemm_simd128 = gemmSimd128();
  }
  return out;
}
// Grad-CAM against the plain forward, interleaved: a CAM for a new image (the pass with taps +
// the gradient) and from kept taps (the backward alone, as when the class changes).
async function runCamBench(cfg) {
  const { BenchModel, setGemmSimd128 } = await loadOurs(1);
  setGemmSimd128(true);
  const out = { models: {} };
  for (const m of cfg.camModels) {
    log(`${m.name}: Grad-CAM`);
    const weights = m.weights ? await fetchBytes(m.weights) : undefined;
    const ours = new BenchModel(m.name, weights);
    const n = m.dims.reduce((a, b) => a * b, 1);
    // A fixed pseudo-random input (the CAM's cost does not depend on the values).
    const input = new Float32Array(n);
    let seed = 1;
    for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) >>> 0; input[i] = (seed / 2 ** 32) * 2 - 1; }
    ours.setInput(input, 1);
    const fns = { forward: (k) => ours.run(k, false), cam: (k) => ours.cam(k), cam_backward: (k) => ours.camBackward(k) };
    const opts = { warmup: cfg.warmup, warmupMs: cfg.warmupMs, samples: cfg.samples, minSampleMs: cfg.minSampleMs };
    const r = await timeInterleaved(fns, opts);
    r.cam_size = ours.cam(1);
    ours.free();
    out.models[m.name] = r;
  }
  return out;
}

onmessage = async ({ data: { fn, cfg } }) => {
  try {
    postMessage({ result: await (fn === 'runCamBench' ? runCamBench(cfg) : runBench(cfg)) });
  } catch (e) {
    postMessage({ error: `${e.message ?? e}${e.stack ? `\n${e.stack}` : ''}` });
  }
};
