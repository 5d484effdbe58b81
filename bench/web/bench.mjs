// The bench page's side: runBench(config) / runCamBench(config) each run in a fresh module worker
// (bench-worker.mjs), which posts log lines, then its result or its error.
const log = (msg) => { document.getElementById('log').textContent += msg + '\n'; };

function inWorker(fn, cfg) {
  const worker = new Worker('bench-worker.mjs', { type: 'module' });
  return new Promise((ok, fail) => {
    worker.onmessage = ({ data }) => {
      if (data.log !== undefined) return log(data.log);
      worker.terminate();
      if (data.error !== undefined) fail(new Error(data.error));
      else ok(data.result);
    };
    worker.onerror = (e) => { worker.terminate(); fail(new Error(`bench worker: ${e.message}`)); };
    worker.postMessage({ fn, cfg });
  });
}

window.runBench = (cfg) => inWorker('runBench', cfg);
window.runCamBench = (cfg) => inWorker('runCamBench', cfg);
window.benchReady = true;
