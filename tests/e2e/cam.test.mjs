// Where the net looks and where its time goes (issue 13): the Grad-CAM heat map over the input,
// computed in the worker, changes with the class clicked in the prediction, the layer picked,
// the method and the opacity slider; the layer table shows each layer's measured time.
//
//   DIST=dist node --test tests/e2e/cam.test.mjs
//
// Screenshots go to tests/artifacts/cam-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, artifacts, openExplorer } from './page.mjs';

let page, base, errors, close;

before(async () => ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 })));
after(async () => close?.());

/// The overlay's pixels once the panel is idle and its caption mentions `text`.
async function overlay(text, timeout = 30_000) {
  await page.waitForFunction((text) => {
    const panel = document.querySelector('[data-testid="cam-panel"]');
    const cap = document.querySelector('[data-testid="cam-caption"]')?.textContent ?? '';
    return panel?.dataset.busy === 'false' && cap.includes(text) && document.querySelector('[data-testid="cam-overlay"]');
  }, text, { timeout });
  await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok))));
  return page.$eval($('cam-overlay'), (c) => c.toDataURL());
}

test('the heat map of the top class appears with the prediction', async () => {
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
  const first = await overlay('for cat');
  assert.match(await page.textContent($('cam-caption')), /Grad-CAM of layer3\.2\.relu \(8×8\) for cat/);
  assert.equal(await page.$eval($('cam-overlay'), (c) => [c.width, c.height].join('×')), '32×32');
  await page.locator(`${$('cam-panel')}`).screenshot({ path: join(artifacts, 'cam-panel.png') });

  // Another class of the top-5: another map, and its row is marked.
  const second = await page.$eval(`${$('topk-row')}:nth-child(2)`, (r) => r.dataset.class);
  await page.click(`${$('topk-row')}:nth-child(2) ${$('topk-pick')}`);
  const other = await overlay(`for ${second}`);
  assert.notEqual(other, first, 'the map changes with the class');
  assert.equal(await page.$eval(`${$('topk-row')}:nth-child(2) ${$('topk-pick')}`, (b) => b.getAttribute('aria-pressed')), 'true');

  // The opacity slider re-blends the same map.
  await page.$eval($('cam-opacity'), (s) => { s.value = '90'; s.dispatchEvent(new Event('input', { bubbles: true })); });
  await page.waitForFunction((before) => document.querySelector('[data-testid="cam-overlay"]').toDataURL() !== before, other);
  await page.locator(`${$('cam-panel')}`).screenshot({ path: join(artifacts, 'cam-opacity-90.png') });
});

test('the layer table shows each layer\'s measured time and its share', async () => {
  const cells = await page.$$eval($('layer-ms'), (cs) => cs.map((c) => Number(c.dataset.ms)));
  assert.equal(cells.length, await page.locator($('layer-row')).count(), 'one time per layer');
  assert.ok(cells.every((t) => Number.isFinite(t) && t >= 0), `${cells}`);
  const sum = cells.reduce((a, b) => a + b, 0);
  const total = Number(await page.textContent($('layer-ms-total')));
  assert.ok(Math.abs(total - sum) < 0.01 + 1e-6 * sum, `total ${total} vs sum ${sum}`);
  const inference = Number(await page.textContent($('inference-ms')));
  assert.ok(sum > 0 && sum <= inference + 0.1, `the layers' times (${sum} ms) make up the inference (${inference} ms)`);
  assert.match(await page.textContent(`${$('layer-ms')}:not(:empty)`), /^\d+\.\d\d \(\d+ %\)$/);
});

test('a layer picked in the layer select is the one explained; vectors fall back to the last block', async () => {
  const pick = async (name) => {
    const value = await page.$eval($('layer-select'), (sel, name) => [...sel.options].find((o) => o.textContent.startsWith(`${name} — `))?.value, name);
    assert.ok(value, `layer ${name} is in the layer select`);
    await page.selectOption($('layer-select'), value);
  };
  await pick('layer2.0.conv1');
  await overlay('layer2.0.conv1 (16×16)');
  await pick('linear');
  await overlay('layer3.2.relu (8×8)');
});

test('EigenCAM needs no gradient and gives a map too', async () => {
  await page.selectOption($('cam-method'), 'eigencam');
  await overlay('EigenCAM of');
  assert.deepEqual(errors, [], 'no console errors');
});
