// The threaded inference worker's loader: the page spawns it as a module worker where it is
// cross-origin isolated. It loads the wasm built with atomics (scripts/build-wasm-threads),
// starts its rayon pool on one Web Worker per core (the caller, this worker, waits while they
// work), then runs the same worker as ./worker.js. If any of that fails (a browser without
// shared wasm memory, a build without the threaded wasm), the single-threaded worker starts
// here instead, so the page never waits on a worker that is not there.
let started = false;
try {
  const threaded = await import('./threads/resnet_web.js');
  await threaded.default();
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
    await threaded.initThreadPool(Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 8)));
  } finally {
    self.Worker = NativeWorker;
  }
  const close = self.close.bind(self);
  self.close = () => {
    pool.forEach((w) => w.terminate());
    close();
  };
  threaded.startWorker();
  started = true;
} catch (e) {
  console.warn('threaded worker unavailable, running on one thread:', e);
}
if (!started) {
  const single = await import('./worker.js');
  await single.default();
}
