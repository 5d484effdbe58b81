// Keyboard and screen readers (issue 16, item 4): a sample classified with the keyboard alone;
// every control is reached by Tab, works with Enter, Space or the arrows, and shows a focus
// ring; the prediction and the model's state are announced; canvases say what they show; and
// axe-core finds nothing serious or critical at 420, 1400 and 1920 px.
//
//   DIST=dist node --test tests/e2e/access.test.mjs
//
// Screenshots: tests/artifacts/access-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, activeChannel, artifacts, openExplorer, repo, waitForImage } from './page.mjs';

let page, base, errors, close;

before(async () => ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 })));
after(async () => close?.());

/// What has the focus: its test id (or tag and role) and whether a focus ring is drawn.
async function focused() {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const s = getComputedStyle(el);
    const rect = el.getBoundingClientRect();
    return {
      id: el.dataset?.testid ?? null,
      tag: el.tagName.toLowerCase(),
      role: el.getAttribute('role'),
      name: el.getAttribute('aria-label') ?? el.textContent?.trim().slice(0, 40),
      // An outline or (SVG) a thicker stroke on the item's box.
      ring: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0)
        || (el.matches('svg .item') && parseFloat(getComputedStyle(el.querySelector('rect')).strokeWidth) >= 3),
      visible: rect.width > 0 && rect.height > 0,
    };
  });
}

/// Presses Tab until `pred(focused())` holds; returns the stops passed on the way.
async function tabTo(pred, limit = 120) {
  const stops = [];
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press('Tab');
    const f = await focused();
    stops.push(f);
    if (f && pred(f)) return stops;
  }
  assert.fail(`not reached in ${limit} Tabs: ${JSON.stringify(stops.map((s) => s?.id ?? s?.tag))}`);
}

test('a sample is classified with the keyboard alone, and the result is announced', async () => {
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  // The model's state is in a live region.
  assert.equal(await page.$eval($('model-status'), (s) => s.closest('[aria-live]')?.getAttribute('aria-live')), 'polite');
  const stops = await tabTo((f) => f.id === 'sample-image');
  // The samples are one Tab stop: the next Tab leaves the strip.
  assert.equal(stops.filter((s) => s?.id === 'sample-image').length, 1);
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.name), 'airplane-2.jpg');
  const f = await focused();
  assert.ok(f.ring, 'the focused sample has a focus ring');
  assert.equal(await page.evaluate(() => document.activeElement.querySelector('img').alt), 'airplane, sample 3',
    'samples are named by class, not by file');
  await page.keyboard.press('Enter');
  await waitForImage(page, 'airplane-2.jpg');
  const said = await page.textContent($('prediction-announcement'));
  assert.match(said, /^prediction: \w+, \d+\.\d %$/);
  assert.equal(await page.$eval($('prediction-announcement'), (p) => p.getAttribute('aria-live')), 'polite');
  assert.equal(await page.textContent($('top-class')), said.replace(/^prediction: (\w+),.*/, '$1'));
  await page.screenshot({ path: join(artifacts, 'access-keyboard-sample.png') });
  assert.deepEqual(errors, []);
});

test('every control is reached by Tab, with a focus ring', async () => {
  await page.evaluate(() => { document.activeElement?.blur(); scrollTo(0, 0); });
  const stops = [];
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press('Tab');
    const f = await focused();
    if (!f) continue;
    stops.push(f);
  }
  const ids = new Set(stops.map((s) => s.id));
  for (const id of ['model-select', 'copy-link', 'file-input', 'camera-button', 'sample-image', 'topk-pick',
    'filter-tile', 'layer-select', 'activation-tiles', 'map-opacity', 'layer-row', 'diagram-item']) {
    assert.ok(ids.has(id), `${id} is reached by Tab (stops: ${[...ids].join(', ')})`);
  }
  const ringless = stops.filter((s) => !s.ring && s.tag !== 'input');
  assert.deepEqual(ringless, [], 'every stop shows a focus ring');
  // The file input itself is hidden: its label shows the ring.
  await page.focus($('file-input'));
  assert.notEqual(await page.$eval('.file-button', (l) => getComputedStyle(l).outlineStyle), 'none');
});

test('the filters, the maps, the table and the diagram work from the keyboard', async () => {
  // A filter: arrows move, Enter picks its output channel.
  await page.focus(`${$('filter-tile')}[tabindex="0"]`);
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('[data-testid="layer-row"].selected')?.dataset.name === 'conv1');
  await page.waitForSelector(`${$('activation-grid')}[data-node="1"][data-active="2"]`, { timeout: 20_000 });
  // The channel grid is a slider over the channels.
  await page.focus($('activation-tiles'));
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction(() => document.querySelector('[data-testid="activation-grid"]').dataset.active === '3');
  assert.equal(await page.$eval($('activation-tiles'), (c) => c.getAttribute('aria-valuetext')), 'channel 3');
  await page.keyboard.press('End');
  await page.waitForFunction(() => document.querySelector('[data-testid="activation-grid"]').dataset.active === '15');
  assert.match(await page.$eval($('activation-tiles'), (c) => c.getAttribute('aria-label')), /^Channel of conv1: 16 maps of 32×32, values /);
  assert.equal(await activeChannel(page), 15);
  // A table row: the selected one is the Tab stop; arrows move, Enter selects.
  await page.focus(`${$('layer-row')}[tabindex="0"]`);
  for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowDown');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.name), 'layer1.0.conv1');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('[data-testid="layer-select"]').selectedOptions[0].textContent.startsWith('layer1.0.conv1 — '));
  assert.equal(await page.evaluate(() => document.activeElement.dataset.name), 'layer1.0.conv1', 'the focus stays on the row');
  // A diagram block: Space selects it.
  await page.focus(`${$('diagram-item')}[tabindex="0"]`);
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  const name = await page.evaluate(() => document.activeElement.dataset.name);
  await page.keyboard.press(' ');
  await page.waitForFunction((n) => document.querySelector(`[data-testid="diagram-item"][data-name="${n}"]`)?.classList.contains('selected'), name);
  await page.screenshot({ path: join(artifacts, 'access-keyboard-diagram.png') });
});

test('canvases say what they show', async () => {
  const unlabelled = await page.$$eval('canvas', (cs) => cs
    .filter((c) => c.getAttribute('aria-hidden') !== 'true' && !c.closest('[aria-hidden="true"]'))
    .filter((c) => !c.getAttribute('aria-label') && !c.closest('[role="application"][aria-label]'))
    .map((c) => c.outerHTML.slice(0, 120)));
  assert.deepEqual(unlabelled, []);
  const input = await page.$eval($('input-preview'), (c) => c.getAttribute('aria-label'));
  assert.match(input, /input tensor the network sees/);
});

for (const width of [420, 1400, 1920]) {
  test(`axe-core: no serious or critical finding at ${width} px`, async (t) => {
    await page.setViewportSize({ width, height: 1000 });
    await page.addScriptTag({ path: join(repo, 'tests/node_modules/axe-core/axe.min.js') });
    const found = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')}: ${n.html.slice(0, 100)} ${n.failureSummary?.slice(0, 200)}`) }));
    });
    for (const v of found) t.diagnostic(`${v.impact}: ${v.id} (${v.help}) ${v.nodes.join(' | ')}`);
    const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad, []);
    await page.screenshot({ path: join(artifacts, `access-${width}.png`) });
  });
}
