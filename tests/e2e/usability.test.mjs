// The page as people use it (issue 16, items 1 and 2): the selected layer's maps are on screen
// whatever was clicked, at 420, 1400 and 1920 px; vector layers are one canvas and no layer
// freezes the page (no main-thread task over 100 ms while drawing).
//
//   DIST=dist node --test tests/e2e/usability.test.mjs
//
// Screenshots go to tests/artifacts/usability-*.png.
//
// Time on the 2-core machine: vgg16 and resnet50 with random weights take seconds to build and
// to run in wasm, so they are loaded once each and only their vector layers (and the layers just
// before them) are stepped through; every layer is stepped through on cifar-resnet20, whose
// forward takes milliseconds.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, artifacts, openExplorer, waitForImage } from './page.mjs';

// A task this long freezes the page for the user (the bound; Chromium reports from 50 ms).
const LONG_TASK_MS = 100;

let page, base, consoleErrors, close;

before(async () => ({ page, base, errors: consoleErrors, close } = await openExplorer({ width: 1400, height: 900 })));
after(async () => close?.());

const waitForRun = (name, timeout) => waitForImage(page, name, timeout);

async function selectedNode() {
  return page.$eval($('layer-select'), (s) => s.value);
}

/// Waits until the maps (a tile grid or a vector strip) of the selected layer are drawn.
async function waitForMaps(timeout = 30_000) {
  const node = await selectedNode();
  await page.waitForFunction((node) => {
    const el = document.querySelector(`[data-testid="activation-grid"][data-node="${node}"], [data-testid="activation-vector"][data-node="${node}"], [data-testid="logits"][data-node="${node}"]`);
    return el && (el.dataset.testid !== 'activation-grid' || el.querySelector('canvas'));
  }, node, { timeout });
  // Two frames: the drawing effects and the paint are done.
  await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok))));
}

/// How far the activation maps panel and its maps are on screen.
async function mapsOnScreen() {
  return page.evaluate(() => {
    const vh = innerHeight;
    const box = (el) => { const r = el.getBoundingClientRect(); return { top: r.top, bottom: r.bottom }; };
    const panel = box(document.querySelector('section.activations'));
    const maps = document.querySelector('[data-testid="activation-grid"], [data-testid="activation-vector"]');
    const m = maps ? box(maps) : null;
    return {
      vh, panel, maps: m,
      panelVisible: panel.top < vh && panel.bottom > 0,
      mapsVisible: !!m && m.top < vh && m.bottom > 0,
    };
  });
}

async function selectLayerByName(name) {
  const value = await page.$eval($('layer-select'), (sel, name) =>
    [...sel.options].find((o) => o.textContent.startsWith(`${name} — `))?.value, name);
  assert.ok(value, `layer ${name} is in the layer select`);
  await page.selectOption($('layer-select'), value);
  return value;
}

/// Starts recording long tasks (from now on only).
async function watchLongTasks() {
  await page.evaluate(() => {
    window.__longTasks = [];
    window.__longTaskObserver?.disconnect();
    window.__longTaskObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
    });
    window.__longTaskObserver.observe({ type: 'longtask' });
  });
}

async function longTasks() {
  // Entries are delivered after the task: give the observer a frame and a tick.
  await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => setTimeout(ok, 50))));
  return page.evaluate(() => window.__longTasks.slice());
}

/// Switches to `arch` and waits for its first layer's maps; returns the long tasks (ms) seen
/// meanwhile (reported, not checked: they include the model's first, largest maps).
async function loadModel(arch, timeout = 120_000) {
  await watchLongTasks();
  await page.selectOption($('model-select'), arch);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout });
  await waitForRun('cat-0.jpg', timeout);
  await waitForMaps(timeout);
  return longTasks();
}

test('a sample is classified', async () => {
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await page.click(`${$('sample-image')}[alt="cat-0.jpg"]`);
  await waitForRun('cat-0.jpg');
  await waitForMaps();
});

for (const width of [420, 1400, 1920]) {
  test(`at ${width} px the maps of a layer picked in the table or the diagram are on screen`, async () => {
    await page.setViewportSize({ width, height: 900 });
    await page.evaluate(() => scrollTo(0, 0));
    // The table row (playwright scrolls the page down to it, as a user would).
    await page.click(`${$('layer-row')}[data-name="layer3.0.conv1"]`);
    assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^layer3\.0\.conv1 — /);
    await waitForMaps();
    let seen = await mapsOnScreen();
    assert.ok(seen.panelVisible && seen.mapsVisible, `table click at ${width} px: ${JSON.stringify(seen)}`);
    assert.equal(await page.locator($('activation-map')).count(), 64);
    await page.screenshot({ path: join(artifacts, `usability-table-click-${width}.png`) });
    // The diagram block (another layer, so that the selection changes).
    await page.evaluate(() => scrollTo(0, 0));
    await page.click(`${$('diagram-item')}[data-name="layer2.1"] rect`);
    assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^layer2\.1\.relu — /);
    await waitForMaps();
    seen = await mapsOnScreen();
    assert.ok(seen.panelVisible && seen.mapsVisible, `diagram click at ${width} px: ${JSON.stringify(seen)}`);
    assert.equal(await page.locator($('activation-map')).count(), 32);
    await page.screenshot({ path: join(artifacts, `usability-diagram-click-${width}.png`) });
    // The focus stays on the page, not moved to the maps.
    assert.equal(await page.evaluate(() => !!document.activeElement?.closest?.('section.activations')), false);
  });
}

test('stepping through every layer of cifar-resnet20 with the keyboard: no long task', async () => {
  await page.setViewportSize({ width: 1400, height: 900 });
  await selectLayerByName('conv1');
  await waitForMaps();
  const count = await page.$eval($('layer-select'), (s) => s.options.length);
  await page.focus($('layer-select'));
  await watchLongTasks();
  for (let i = 0; i < count - 2; i++) {
    const before = await selectedNode();
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(([sel, before]) => document.querySelector(sel).value !== before, [$('layer-select'), before]);
    await waitForMaps();
  }
  assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^linear — /);
  // A few classes' logits: one labelled bar each.
  assert.deepEqual(await page.$$eval($('logit-row'), (rs) => rs.map((r) => r.dataset.class)),
    ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']);
  assert.equal(await page.locator($('activation-map')).count(), 0);
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-logits-resnet20.png') });
  const tasks = await longTasks();
  assert.ok(tasks.every((d) => d <= LONG_TASK_MS), `long tasks (ms): ${tasks}`);
});

/// Selects `from` and steps with ArrowDown to the last layer, waiting for each layer's maps;
/// returns the long tasks (ms) seen from the first step on.
async function stepToTheEnd(arch, from) {
  await selectLayerByName(from);
  await waitForMaps(60_000);
  await page.focus($('layer-select'));
  await watchLongTasks();
  const last = await page.$eval($('layer-select'), (s) => s.options[s.options.length - 1].value);
  const vectors = [];
  while ((await selectedNode()) !== last) {
    const before = await selectedNode();
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(([sel, before]) => document.querySelector(sel).value !== before, [$('layer-select'), before]);
    await waitForMaps(60_000);
    const v = await page.$$eval($('activation-vector'), (vs) => vs.map((v) => Number(v.dataset.values)));
    vectors.push(...v);
  }
  assert.equal(await page.locator($('activation-map')).count(), 0, `${arch}: the last layer is a vector, no tiles`);
  return { tasks: await longTasks(), vectors };
}

test('vgg16 (untrained): flatten (25,088 values) and the classifier are one canvas each, no long task', async (t) => {
  // Building and running vgg16 in the worker takes seconds; measured only once it is ready.
  const loading = await loadModel('vgg16');
  t.diagnostic(`vgg16 long tasks while loading and drawing features.1 (64×224×224) (ms): ${loading.join(', ') || 'none'}`);
  const { tasks, vectors } = await stepToTheEnd('vgg16', 'avgpool');
  assert.ok(vectors.includes(25_088), `flatten drawn as one vector: ${vectors}`);
  assert.ok(vectors.includes(1000), `the logits drawn as one vector: ${vectors}`);
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-logits-vgg16.png') });
  await selectLayerByName('flatten');
  await waitForMaps();
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-flatten-vgg16.png') });
  t.diagnostic(`vgg16 long tasks while stepping (ms): ${tasks.join(', ') || 'none'}`);
  assert.ok(tasks.every((d) => d <= LONG_TASK_MS), `long tasks (ms): ${tasks}`);
});

test('resnet50 (untrained): avgpool, flatten and fc are one canvas each, no long task', async (t) => {
  const loading = await loadModel('resnet50');
  t.diagnostic(`resnet50 long tasks while loading and drawing layer1.0 (ms): ${loading.join(', ') || 'none'}`);
  const { tasks, vectors } = await stepToTheEnd('resnet50', 'layer4.2.relu');
  assert.ok(vectors.includes(2048), `avgpool drawn as one vector: ${vectors}`);
  assert.ok(vectors.includes(1000), `fc drawn as one vector: ${vectors}`);
  await selectLayerByName('avgpool');
  await waitForMaps();
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-avgpool-resnet50.png') });
  t.diagnostic(`resnet50 long tasks while stepping (ms): ${tasks.join(', ') || 'none'}`);
  assert.ok(tasks.every((d) => d <= LONG_TASK_MS), `long tasks (ms): ${tasks}`);
});

test('no console errors', () => {
  assert.deepEqual(consoleErrors, []);
});
