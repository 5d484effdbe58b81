// Memory and stale work (issue 16, item 7): WebAssembly memory never shrinks, so after a big
// model the page gets a fresh worker; after vgg16 → resnet152 → cifar-resnet20 the browser's
// memory is back within 300 MB of where it started. Quick successive switches do not queue
// every build: the last model picked is the one shown, and soon.
//
//   DIST=dist node --test tests/e2e/memory.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { $, openExplorer, waitForImage } from './page.mjs';

let page, base, errors, close, cdp;

before(async () => {
  ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 }));
  cdp = await page.context().browser().newBrowserCDPSession();
});
after(async () => close?.());

/// Resident memory of every process of this browser (browser, renderers with their workers,
/// utilities), MB, from the OS.
async function browserMemoryMb() {
  const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
  let kb = 0;
  for (const p of processInfo) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p.id}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch { /* the process has just exited */ }
  }
  return kb / 1024;
}

async function ready(model, timeout = 180_000) {
  await page.waitForFunction((m) => document.querySelector('[data-testid="model-select"]').value === m
    && document.querySelector('[data-testid="model-status"]')?.dataset.state === 'ready', model, { timeout });
}

/// Memory once it has settled: old workers close after their last job (the page then has no more
/// workers than `workers`, the threaded worker's pool included) and are collected.
async function settledMemoryMb(workers = Infinity) {
  for (let i = 0; i < 60 && page.workers().length > workers; i++) await page.waitForTimeout(500);
  let last = Infinity;
  for (let i = 0; i < 20; i++) {
    await page.waitForTimeout(500);
    const now = await browserMemoryMb();
    if (Math.abs(now - last) < 5) return now;
    last = now;
  }
  return last;
}

test('after vgg16 → resnet152 → cifar-resnet20 the memory is back', async () => {
  await page.goto(base);
  await ready('cifar-resnet20', 60_000);
  await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
  await waitForImage(page, 'cat-0.jpg');
  const start = await settledMemoryMb();
  const workers = page.workers().length;
  const peaks = [];
  for (const model of ['vgg16', 'resnet152', 'cifar-resnet20']) {
    await page.selectOption($('model-select'), model);
    await ready(model);
    await waitForImage(page, 'cat-0.jpg', 180_000);
    peaks.push([model, Math.round(await browserMemoryMb())]);
  }
  const end = await settledMemoryMb(workers);
  console.log(`memory: start ${start.toFixed(0)} MB with ${workers} workers, after each model ${JSON.stringify(peaks)}, end ${end.toFixed(0)} MB with ${page.workers().length}`);
  assert.ok(end - start < 300, `${end.toFixed(0)} MB at the end against ${start.toFixed(0)} MB at the start`);
});

test('quick successive switches show the last model picked, without queuing every build', async () => {
  const t0 = Date.now();
  for (const model of ['vgg16', 'resnet152', 'cifar-resnet56']) {
    await page.selectOption($('model-select'), model);
    await page.waitForTimeout(50);
  }
  await ready('cifar-resnet56', 60_000);
  await waitForImage(page, 'cat-0.jpg', 60_000);
  console.log(`three quick switches settled in ${Date.now() - t0} ms`);
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'cifar-resnet56');
  assert.equal(await page.textContent($('top-class')), 'cat');
  assert.deepEqual(errors, []);
});
