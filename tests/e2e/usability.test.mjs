// The page as people use it (issue 16, items 1 and 2): the selected layer's maps are on screen
// whatever was clicked, at 420, 1400 and 1920 px; vector layers are one canvas and no layer
// freezes the page (no main-thread task over 100 ms while drawing that comes back when the same
// step is taken again: a loaded CI machine pauses the page now and then, a freeze recurs).
//
//   DIST=dist node --test tests/e2e/usability.test.mjs
//
// Screenshots go to tests/artifacts/usability-*.png.
//
// Every layer of cifar-resnet20, vgg16 and resnet50 is stepped through with the keyboard
// (~4 minutes on the 2-core machine: vgg16 and resnet50 take seconds to build and run in wasm).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, activeChannel, artifacts, channelCount, clickChannel, openExplorer, waitForImage } from './page.mjs';

// A task this long freezes the page for the user (the bound; Chromium reports from 50 ms).
const LONG_TASK_MS = 100;
// vgg16 and resnet50 are held to the same bound while stepping through every layer (measured
// max 59 ms and none over 50 ms; before the windowed canvas, the subsampled atlas and maps in
// 4 MB messages: 165 and 158 ms, and 15 s for vgg16's flatten drawn a canvas per value).

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

/// The name `longTasks(steps)` gives a task that started before the first step.
const BEFORE_THE_FIRST_STEP = 'before the first step';

/// Starts recording long tasks (from now on only).
async function watchLongTasks() {
  await page.evaluate(() => {
    window.__longTasks = [];
    window.__longTaskObserver?.disconnect();
    window.__longTaskObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push([e.startTime, Math.round(e.duration)]);
    });
    window.__longTaskObserver.observe({ type: 'longtask' });
  });
}

/// The long tasks (ms) seen since `watchLongTasks`; with `steps` ([start, layer] in page time),
/// each is named by the step it fell in ("layer4.0.conv1 62").
async function longTasks(steps) {
  // Entries are delivered after the task: give the observer a frame and a tick.
  await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => setTimeout(ok, 50))));
  const tasks = await page.evaluate(() => window.__longTasks.slice());
  if (!steps) return tasks.map(([, d]) => d);
  return tasks.map(([start, d]) => `${steps.findLast(([t]) => t <= start)?.[1] ?? BEFORE_THE_FIRST_STEP} ${d}`);
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
  await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
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
    assert.equal(await channelCount(page), 64);
    await page.screenshot({ path: join(artifacts, `usability-table-click-${width}.png`) });
    // The diagram block (another layer, so that the selection changes).
    await page.evaluate(() => scrollTo(0, 0));
    await page.click(`${$('diagram-item')}[data-name="layer2.1"] rect`);
    assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^layer2\.1\.relu — /);
    await waitForMaps();
    seen = await mapsOnScreen();
    assert.ok(seen.panelVisible && seen.mapsVisible, `diagram click at ${width} px: ${JSON.stringify(seen)}`);
    assert.equal(await channelCount(page), 32);
    await page.screenshot({ path: join(artifacts, `usability-diagram-click-${width}.png`) });
    // The focus stays on the page, not moved to the maps.
    assert.equal(await page.evaluate(() => !!document.activeElement?.closest?.('section.activations')), false);
  });
}

test('stepping through every layer of cifar-resnet20 with the keyboard: no long task', async (t) => {
  await page.setViewportSize({ width: 1400, height: 900 });
  await selectLayerByName('conv1');
  await waitForMaps();
  const count = await page.$eval($('layer-select'), (s) => s.options.length);
  await page.focus($('layer-select'));
  await watchLongTasks();
  const steps = [];
  for (let i = 0; i < count - 2; i++) {
    const before = await selectedNode();
    steps.push([await page.evaluate(() => performance.now()), await nextLayerName()]);
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(([sel, before]) => document.querySelector(sel).value !== before, [$('layer-select'), before]);
    await waitForMaps();
  }
  assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^linear — /);
  // A few classes' logits: one labelled bar each.
  assert.deepEqual(await page.$$eval($('logit-row'), (rs) => rs.map((r) => r.dataset.class)),
    ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']);
  assert.equal(await channelCount(page), 0);
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-logits-resnet20.png') });
  const tasks = await longTasks(steps);
  t.diagnostic(`cifar-resnet20 long tasks while stepping (layer ms): ${tasks.join(', ') || 'none'}`);
  await assertNoFreeze(tasks, t);
});

/// The name of the layer after the selected one (what ArrowDown selects).
async function nextLayerName() {
  return page.$eval($('layer-select'), (s) => s.options[s.selectedIndex + 1].textContent.split(' — ')[0]);
}

/// Named long tasks ("layer ms", from `longTasks(steps)`): none over the bound. A freeze comes
/// back every time its layer is drawn; a pause of a busy machine (CI shares its cores) does not.
/// So each step that had one is taken again, twice, from the layer before, and only a task that
/// recurs on every try fails; the others are reported.
async function assertNoFreeze(named, t) {
  const recurring = [];
  for (const task of named.filter((x) => Number(x.split(' ').pop()) > LONG_TASK_MS)) {
    const layer = task.slice(0, task.lastIndexOf(' '));
    if (layer === BEFORE_THE_FIRST_STEP) {
      t.diagnostic(`${task}: no step's (the page was not asked to draw anything)`);
      continue;
    }
    const again = [await stepOnceTo(layer), await stepOnceTo(layer)];
    if (again.every((d) => d > LONG_TASK_MS)) recurring.push(`${task} (again: ${again.join(', ')})`);
    else t.diagnostic(`${task}: not on stepping to it again (${again.join(', ')} ms), a pause of the machine`);
  }
  assert.deepEqual(recurring, [], `long tasks over ${LONG_TASK_MS} ms on every try (layer ms): ${named}`);
}

/// Selects the layer before `layer`, then steps to `layer` with ArrowDown; returns the longest
/// main-thread task (ms) of that step, 0 if none.
async function stepOnceTo(layer) {
  const prev = await page.$eval($('layer-select'), (s, name) => {
    const i = [...s.options].findIndex((o) => o.textContent.split(' — ')[0] === name);
    return i > 0 ? s.options[i - 1].value : null;
  }, layer);
  assert.ok(prev !== null, `layer ${layer} has a layer before it`);
  await page.selectOption($('layer-select'), prev);
  await waitForMaps(60_000);
  await page.focus($('layer-select'));
  await watchLongTasks();
  await page.keyboard.press('ArrowDown');
  await page.waitForFunction(([sel, prev]) => document.querySelector(sel).value !== prev, [$('layer-select'), prev]);
  await waitForMaps(60_000);
  return Math.max(0, ...(await longTasks()));
}

/// Selects the input and steps with ArrowDown through every layer to the last, waiting for each
/// layer's maps; returns the long tasks (ms) seen from the first step on.
async function stepToTheEnd(arch) {
  await page.selectOption($('layer-select'), '0');
  await waitForMaps(60_000);
  await page.focus($('layer-select'));
  await watchLongTasks();
  const last = await page.$eval($('layer-select'), (s) => s.options[s.options.length - 1].value);
  const vectors = [];
  const steps = [];
  while ((await selectedNode()) !== last) {
    const before = await selectedNode();
    steps.push([await page.evaluate(() => performance.now()), await nextLayerName()]);
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(([sel, before]) => document.querySelector(sel).value !== before, [$('layer-select'), before]);
    await waitForMaps(60_000);
    const v = await page.$$eval($('activation-vector'), (vs) => vs.map((v) => Number(v.dataset.values)));
    vectors.push(...v);
    // The canvas holds the rows near the view only (a view above and below), not every row.
    const held = await page.$$eval($('activation-tiles'), (cs) => cs.map((c) => [c.height, c.closest('[data-testid="activation-grid"]').clientHeight]));
    for (const [height, view] of held) assert.ok(height <= 3 * view + 59, `${await selectedNode()}: a ${height} px canvas for a ${view} px view`);
  }
  assert.equal(await channelCount(page), 0, `${arch}: the last layer is a vector, no tiles`);
  return { tasks: await longTasks(steps), vectors };
}

test('vgg16 (untrained): every layer by keyboard, flatten (25,088 values) and the classifier one canvas each, no freeze', async (t) => {
  // Building and running vgg16 in the worker takes seconds; measured only once it is ready.
  const loading = await loadModel('vgg16');
  t.diagnostic(`vgg16 long tasks while loading and drawing features.1 (64×224×224) (ms): ${loading.join(', ') || 'none'}`);
  const { tasks, vectors } = await stepToTheEnd('vgg16');
  assert.ok(vectors.includes(25_088), `flatten drawn as one vector: ${vectors}`);
  assert.ok(vectors.includes(1000), `the logits drawn as one vector: ${vectors}`);
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-logits-vgg16.png') });
  await selectLayerByName('flatten');
  await waitForMaps();
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-flatten-vgg16.png') });
  t.diagnostic(`vgg16 long tasks while stepping (layer ms): ${tasks.join(', ') || 'none'}`);
  await assertNoFreeze(tasks, t);
});

test('resnet50 (untrained): every layer by keyboard, avgpool, flatten and fc one canvas each, no freeze', async (t) => {
  const loading = await loadModel('resnet50');
  t.diagnostic(`resnet50 long tasks while loading and drawing layer1.0 (ms): ${loading.join(', ') || 'none'}`);
  const { tasks, vectors } = await stepToTheEnd('resnet50');
  assert.ok(vectors.includes(2048), `avgpool drawn as one vector: ${vectors}`);
  assert.ok(vectors.includes(1000), `fc drawn as one vector: ${vectors}`);
  await selectLayerByName('avgpool');
  await waitForMaps();
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-avgpool-resnet50.png') });
  // 2,048 channels: the grid scrolled to its end draws the last rows, and a click there picks one.
  await selectLayerByName('layer4.2.relu');
  await waitForMaps();
  const rows = await page.$eval($('activation-grid'), (g) => Number(g.dataset.rows));
  const first = await page.$eval($('activation-grid'), (g) => g.dataset.held);
  await clickChannel(page, 2047);
  await page.waitForFunction((first) => document.querySelector('[data-testid="activation-grid"]').dataset.held !== first, first);
  assert.equal(await activeChannel(page), 2047);
  const [from, to] = (await page.$eval($('activation-grid'), (g) => g.dataset.held)).split('-').map(Number);
  assert.ok(from > 0 && to === rows, `rows ${from}–${to} of ${rows} held at the end`);
  const drawn = await page.$eval($('activation-tiles'), (c, from) => {
    const g = c.closest('[data-testid="activation-grid"]');
    const { cols, tile, gap } = Object.fromEntries(['cols', 'tile', 'gap'].map((k) => [k, Number(g.dataset[k])]));
    const [x, y] = [(2047 % cols) * (tile + gap) + tile / 2, (Math.floor(2047 / cols) - from) * (tile + gap) + tile / 2];
    return c.getContext('2d').getImageData(x, y, 1, 1).data[3];
  }, from);
  assert.equal(drawn, 255, 'the last tile is drawn');
  await page.locator('section.activations').screenshot({ path: join(artifacts, 'usability-layer4-end-resnet50.png') });
  t.diagnostic(`resnet50 long tasks while stepping (layer ms): ${tasks.join(', ') || 'none'}`);
  await assertNoFreeze(tasks, t);
});

test('no console errors', () => {
  assert.deepEqual(consoleErrors, []);
});
