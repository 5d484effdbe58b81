// Threads in the browser (issue 15): a cross-origin isolated page (the headers scripts/serve
// sends) runs inference in the threaded worker, on a pool of Web Workers, and says on how many
// threads; served without the headers, the single-threaded worker runs. Both predict the same.
//
//   DIST=dist node --test tests/e2e/threads.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { $, openExplorer, waitForImage } from './page.mjs';

/// The prediction of cat-0.jpg on a page served with or without the isolation headers.
async function predict(isolated) {
  const { page, base, errors, close } = await openExplorer(undefined, { isolated });
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
    };
    assert.deepEqual(errors, [], `page errors (isolated: ${isolated})`);
    return out;
  } finally {
    await close();
  }
}

test('an isolated page runs on a pool of threads, a plain one on one; the prediction is the same', async () => {
  const threaded = await predict(true);
  const single = await predict(false);
  assert.equal(threaded.crossOriginIsolated, true);
  assert.equal(single.crossOriginIsolated, false);
  assert.equal(threaded.threads, Math.max(1, Math.min(threaded.cores, 8)), threaded.timing);
  if (threaded.cores > 1) assert.match(threaded.timing, new RegExp(`on ${threaded.threads} threads of this computer`));
  assert.equal(single.threads, 1);
  assert.match(single.timing, /on one thread of this computer/);
  assert.equal(threaded.top.length, 5);
  assert.deepEqual(threaded.top, single.top, 'the same top-5 with the same probabilities');
});
