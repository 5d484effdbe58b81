// What a student would misread (issue 16, item 6): the table counts operations and the depth in
// the name apart; the logits carry class names; the input's channels are named; a first-layer
// filter leads to its output; the prediction says the model knows only its classes; the
// shortcut legend shows only where there are shortcuts.
//
//   DIST=dist node --test tests/e2e/student.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, artifacts, openExplorer, waitForImage } from './page.mjs';

let page, base, errors, close;

before(async () => ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 })));
after(async () => close?.());

test('operations and weight layers are counted apart; the prediction knows its limits', async () => {
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  assert.match(await page.textContent($('layer-count')), /^71 operations, 20 weight layers deep/);
  await page.click(`${$('sample-image')}[data-name="frog-1.jpg"]`);
  await waitForImage(page, 'frog-1.jpg');
  assert.match(await page.textContent($('domain-note')), /knows only its 10 classes/);
});

test('a first-layer filter selects its output channel in the maps', async () => {
  await page.click(`${$('filter-tile')} >> nth=6`);
  await page.waitForFunction(() => document.querySelector('[data-testid="layer-row"].selected')?.dataset.name === 'conv1');
  await page.waitForSelector(`${$('activation-grid')}[data-active="6"][data-node="1"]`, { timeout: 20_000 });
  const top = await page.$eval('section.activations', (s) => s.getBoundingClientRect().top);
  assert.ok(top >= 0 && top < 1000, `the maps are on screen (top ${top})`);
});

test('the input channels are R, G, B and the logits are labelled', async () => {
  await page.selectOption($('layer-select'), '0');
  await page.waitForSelector(`${$('activation-grid')}[data-node="0"]`, { timeout: 20_000 });
  // The channel picked before (6 of conv1) is the input's last one here: B.
  assert.equal(await page.$eval($('activation-tiles'), (c) => c.getAttribute('aria-valuetext')), 'channel 2: B (normalised)');
  await page.focus($('activation-tiles'));
  await page.keyboard.press('Home');
  await page.waitForSelector(`${$('activation-tiles')}[aria-valuetext="channel 0: R (normalised)"]`);
  assert.match(await page.textContent($('input-channels')), /R, G and B, each normalised/);
  const linear = await page.$eval($('layer-select'), (s) => [...s.options].find((o) => o.textContent.startsWith('linear —')).value);
  await page.selectOption($('layer-select'), linear);
  await page.waitForSelector($('logit-row'), { timeout: 20_000 });
  const rows = await page.$$eval($('logit-row'), (rs) => rs.map((r) => [r.dataset.class, Number(r.querySelector('.num').textContent)]));
  assert.equal(rows.length, 10);
  const best = rows.reduce((a, b) => (b[1] > a[1] ? b : a));
  assert.equal(best[0], await page.textContent($('top-class')), 'the largest logit is the prediction');
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'student-logits.png') });
});

test('dragging a file over the page lights the drop zone up', async () => {
  await page.evaluate(() => document.body.dispatchEvent(new DragEvent('dragenter', { bubbles: true })));
  await page.waitForSelector(`${$('drop-zone')}[data-dragging="true"]`);
  assert.match(await page.textContent($('drop-zone')), /Drop it: anywhere on the page/);
  await page.locator('section.input').screenshot({ path: join(artifacts, 'student-dragging.png') });
  await page.evaluate(() => document.body.dispatchEvent(new DragEvent('dragleave', { bubbles: true })));
  await page.waitForSelector(`${$('drop-zone')}[data-dragging="false"]`);
});

test('while a new model builds, the image stays, the prediction says it is coming, and no panel shrinks', async () => {
  const heights = () => page.$$eval('main > section.panel', (ps) => ps.map((p) => [p.getAttribute('aria-label'), Math.round(p.getBoundingClientRect().height)]));
  const before = await heights();
  await page.selectOption($('model-select'), 'cifar-resnet56');
  // An image is loaded: the panel never asks for one while the model builds.
  assert.doesNotMatch(await page.textContent($('prediction')), /Drop an image/);
  assert.doesNotMatch(await page.textContent($('input-preview')), /no image yet/);
  // The page does not jump: every panel keeps at least its height until the new maps are in.
  assert.equal(await page.locator('main > section.panel[data-held]').count(), before.length);
  const during = await heights();
  for (const [i, [name, h]] of during.entries()) assert.ok(h >= before[i][1] - 1, `${name}: ${before[i][1]} → ${h} px while building`);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await waitForImage(page, 'frog-1.jpg');
  await page.waitForSelector(`${$('activation-grid')}`, { timeout: 30_000 });
  await page.waitForFunction(() => !document.querySelector('main > section.panel[data-held]'), null, { timeout: 30_000 });
});

test('no shortcut legend on a net without shortcuts', async () => {
  assert.match(await page.textContent('section.diagram'), /Shortcuts: solid = identity/);
  await page.selectOption($('model-select'), 'vgg11');
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  assert.doesNotMatch(await page.textContent('section.diagram'), /Shortcuts/);
  assert.match(await page.textContent($('layer-count')), / 11 weight layers deep/);
  assert.deepEqual(errors, []);
});
