// The loader of the inference worker's variant builds (scripts/build-wasm-variant, Trunk's
// build-stage hook): the page spawns it as a module worker, `worker-variant.js?build=NAME`, with
// NAME one of threads (the page is cross-origin isolated), relaxed (the browser validates relaxed
// SIMD) or relaxed-threads (both). It loads that build; a threaded one starts its rayon pool on
// one Web Worker per core first (the caller, this worker, waits while they work). Then it runs
// the same worker as ./worker.js. If any of that fails (a browser without shared wasm memory, a
// build missing), the plain single-threaded SIMD128 worker starts here instead, so the page never
// waits on a worker that is not there.
const BUILDS = ['threads', 'relaxed', 'relaxed-threads'];
let started = false;
try {
  const build = new URL(import.meta.url).searchParams.get('build');
  if (!BUILDS.includes(build)) throw new Error(`unknown build ${build}`);
  // The wasm is fetched and compiled while its JS glue loads, not after (a server that does not
  // send it as application/wasm cannot stream it: the glue fetches it itself then).
  const wasmUrl = new URL(`./${build}/resnet_web_bg.wasm`, import.meta.url);
  const compiled = WebAssembly.compileStreaming(fetch(wasmUrl)).catch(() => wasmUrl);
  const variant = await import(`./${build}/resnet_web.js`);
  await variant.default({ module_or_path: await compiled });
  if (build.endsWith('threads')) {
    // The pool's workers, kept to end them with this worker: they share its memory (which never
    // shrinks) and would keep it alive after the page has moved to a fresh worker.
    const pool = [];
    const NativeWorker = self.Worker;
    self.Worker = class extends NativeWorker {
      constructor(...args) {
        super(...args);
        pool.push(this);
      }
    };
    try {
      await variant.initThreadPool(Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 8)));
    } finally {
      self.Worker = NativeWorker;
    }
    const close = self.close.bind(self);
    self.close = () => {
      pool.forEach((w) => w.terminate());
      close();
    };
  }
  variant.startWorker();
  started = true;
} catch (e) {
  console.warn('worker build unavailable, running the single-threaded SIMD128 one:', e);
}
if (!started) {
  const single = await import('./worker.js');
  await single.default();
}
