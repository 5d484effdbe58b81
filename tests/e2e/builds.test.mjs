// The worker's four builds (issue 15): a cross-origin isolated page (the headers scripts/serve
// sends) runs inference on a pool of Web Workers and says on how many threads; a browser whose
// WebAssembly validates relaxed SIMD gets the build with fused multiply-adds and the page says
// so; otherwise the plain single-threaded SIMD128 worker runs. All four predict the same.
//
//   DIST=dist node --test tests/e2e/builds.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { $, openExplorer, waitForImage } from './page.mjs';

// Chromium cannot switch relaxed SIMD off (it shipped; V8 dropped the flag): a browser without
// it is one whose WebAssembly.validate rejects the page's probe module. Nothing else on the page
// calls validate (wasm-bindgen instantiates without it).
const NO_RELAXED_SIMD = () => {
  WebAssembly.validate = () => false;
};

/// The prediction of cat-0.jpg on a page served with or without the isolation headers, in a
/// browser with or without relaxed SIMD.
async function predict(isolated, relaxed) {
  const { page, base, errors, close } = await openExplorer(undefined, {
    isolated,
    init: relaxed ? undefined : NO_RELAXED_SIMD,
    serviceWorkers: 'block',
  });
  const requested = [];
  page.on('request', (r) => requested.push(new URL(r.url()).pathname));
  try {
    await page.goto(base);
    await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
    await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
    await waitForImage(page, 'cat-0.jpg');
    const out = {
      crossOriginIsolated: await page.evaluate(() => self.crossOriginIsolated),
      cores: await page.evaluate(() => navigator.hardwareConcurrency),
      top: await page.$$eval($('topk-row'), (rows) => rows.map((r) => r.textContent.trim())),
      timing: await page.textContent($('timing')),
      threads: await page.$$eval($('threads'), (t) => (t.length ? Number(t[0].textContent) : 1)),
      instructions: await page.textContent($('instructions')),
      wasm: requested.filter((p) => p.endsWith('.wasm')),
    };
    assert.deepEqual(errors, [], `page errors (isolated: ${isolated}, relaxed: ${relaxed})`);
    return out;
  } finally {
    await close();
  }
}

test('each browser gets its build (threads where isolated, relaxed SIMD where validated); all predict the same', async () => {
  const runs = {};
  for (const isolated of [true, false]) {
    for (const relaxed of [true, false]) {
      const r = await predict(isolated, relaxed);
      const what = `isolated ${isolated}, relaxed ${relaxed}: ${r.timing}`;
      assert.equal(r.crossOriginIsolated, isolated, what);
      const threads = isolated ? Math.max(1, Math.min(r.cores, 8)) : 1;
      assert.equal(r.threads, threads, what);
      assert.match(r.timing, threads > 1 ? new RegExp(`on ${threads} threads of this computer`) : /on one thread of this computer/);
      assert.equal(r.instructions, relaxed ? 'relaxed SIMD' : 'SIMD128', what);
      const build = `${relaxed ? 'relaxed' : ''}${relaxed && isolated ? '-' : ''}${isolated ? 'threads' : ''}`;
      const worker = build ? `/${build}/resnet_web_bg.wasm` : '/worker_bg.wasm';
      assert.ok(r.wasm.includes(worker), `${what}: loaded ${r.wasm.join(', ')}, not ${worker}`);
      assert.equal(r.top.length, 5, what);
      runs[build || 'plain'] = r.top;
    }
  }
  for (const [build, top] of Object.entries(runs)) {
    assert.deepEqual(top, runs.plain, `${build}: the same top-5 with the same probabilities as the plain build`);
  }
});

// A host that cannot send the headers: the page's service worker adds them, the page reloads
// once under it, and runs on threads.
test('served without the isolation headers, the service worker isolates the page: threads', async () => {
  const { page, base, errors, close } = await openExplorer(undefined, { isolated: false });
  try {
    await page.goto(base);
    await page.waitForFunction(() => self.crossOriginIsolated === true, null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('isolate-sw-reloaded')), '1', 'reloaded once');
    await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
    await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
    await waitForImage(page, 'cat-0.jpg');
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    const threads = await page.$$eval($('threads'), (t) => (t.length ? Number(t[0].textContent) : 1));
    assert.equal(threads, Math.max(1, Math.min(cores, 8)));
    assert.equal(await page.evaluate(() => navigator.serviceWorker.controller?.scriptURL), `${base}isolate-sw.js`);
    // Reloading again keeps it isolated, with no further reload.
    await page.reload();
    await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), true);
    assert.deepEqual(errors, []);
  } finally {
    await close();
  }
});
