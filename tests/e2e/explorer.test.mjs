// End-to-end tests of the explorer: Debian's Chromium driven by playwright-core against the
// release build served on localhost. One page for the whole run, like a user's session.
//
//   DIST=dist RESNET_BIN=target/debug/resnet node --test tests/e2e/
//
// Screenshots of every panel go to tests/artifacts/ (look at them).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { $, activeChannel, artifacts, clickChannel, openExplorer, waitForChannels, waitForImage, repo, resnetBin } from './page.mjs';

let page, base, consoleErrors, close;
const requestsAfterLoad = [];
let recording = false;

before(async () => {
  ({ page, base, errors: consoleErrors, close } = await openExplorer({ width: 1400, height: 1000 }));
  page.on('requestfailed', (r) => consoleErrors.push(`request failed: ${r.url()}`));
  page.on('request', (r) => { if (recording) requestsAfterLoad.push(r.url()); });
});

after(async () => close?.());

async function shot(panel, name) {
  await page.locator(panel).first().screenshot({ path: join(artifacts, `${name}.png`) });
}

/// Drops a file on the drop zone the way a browser does (DataTransfer + drop event).
async function dropFile(name, bytes, type) {
  await page.evaluate(({ name, data, type }) => {
    const u8 = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([u8], name, { type }));
    const zone = document.querySelector('[data-testid="drop-zone"]');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, { name, data: Buffer.from(bytes).toString('base64'), type });
}

const waitForRun = (name, timeout) => waitForImage(page, name, timeout);

async function selectLayer(name) {
  const value = await page.$eval($('layer-select'), (sel, name) =>
    [...sel.options].find((o) => o.textContent.startsWith(`${name} — `))?.value, name);
  assert.ok(value, `layer ${name} is in the layer select`);
  await page.selectOption($('layer-select'), value);
}

function cliSummary(arch) {
  const out = execFileSync(resnetBin, ['summary', '--arch', arch, '--json'], { encoding: 'utf8' });
  return JSON.parse(out);
}

async function checkTableAgainstCli(arch) {
  const cli = cliSummary(arch);
  const rows = await page.$$eval(`${$('layer-row')}`, (rs) => rs.map((r) => ({
    name: r.dataset.name, params: Number(r.dataset.params), macs: Number(r.dataset.macs), out: r.dataset.out,
    rf: Number(r.dataset.rf), jump: Number(r.dataset.jump),
  })));
  assert.equal(rows.length, cli.layers.length, `${arch}: one row per layer`);
  rows.forEach((r, i) => {
    const c = cli.layers[i];
    assert.deepEqual(r, { name: c.name, params: c.params, macs: c.macs, out: c.out_shape.join('×'), rf: c.rf, jump: c.jump }, `${arch} row ${i}`);
  });
  const total = await page.$eval($('layer-total'), (t) => ({ params: Number(t.dataset.params), macs: Number(t.dataset.macs) }));
  assert.deepEqual(total, { params: cli.total_params, macs: cli.total_macs }, `${arch} totals`);
  return total;
}

/// A PNG from raw scanlines (8-bit grey when `channels` is 1, RGB when 3).
function png(width, height, channels, rawRows) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = channels === 1 ? 0 : 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rawRows, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

function sample(name) {
  return readFileSync(join(repo, 'www/samples', name));
}

test('the page loads the default model and shows every panel', async () => {
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  for (const id of ['drop-zone', 'file-input', 'model-select', 'input-preview', 'prediction', 'filter-grid',
    'layer-select', 'layer-table', 'layer-total', 'arch-diagram']) {
    assert.equal(await page.locator($(id)).count(), 1, id);
  }
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'cifar-resnet20');
  assert.ok((await page.locator($('sample-image')).count()) >= 30);
  assert.match(await page.textContent($('weights-license')), /Idelbayev.*BSD/);
  // Everything the page needs is loaded now: from here on it must not touch the network.
  await page.waitForLoadState('networkidle');
  recording = true;
});

test('dropped samples are classified as their class, with top-5 and timing', async (t) => {
  for (const name of ['cat-0.jpg', 'ship-1.jpg', 'frog-2.jpg', 'automobile-0.jpg']) {
    await dropFile(name, sample(name), 'image/jpeg');
    await waitForRun(name);
    assert.equal(await page.textContent($('top-class')), name.split('-')[0], name);
    assert.equal(await page.locator($('topk-row')).count(), 5);
  }
  const ms = Number(await page.textContent($('inference-ms')));
  assert.ok(ms > 0 && ms < 5000, `inference ${ms} ms`);
  t.diagnostic(`ResNet-20 inference in the page: ${ms} ms`);
  await shot('section.input', 'input');
  await shot('section.prediction', 'prediction');
});

test('clicking a sample and picking a file classify too', async () => {
  await page.click(`${$('sample-image')}[data-name="horse-1.jpg"]`);
  await waitForRun('horse-1.jpg');
  assert.equal(await page.textContent($('top-class')), 'horse');
  await page.setInputFiles($('file-input'), join(repo, 'www/samples/deer-2.jpg'));
  await waitForRun('deer-2.jpg');
  assert.equal(await page.textContent($('top-class')), 'deer');
});

test('ResNet-20 has 16 first-layer filters', async () => {
  assert.equal(await page.locator($('filter-tile')).count(), 16);
  await page.hover(`${$('filter-tile')} >> nth=5`);
  assert.match(await page.textContent('[data-testid="filter-zoom"] figcaption'), /filter 5 · 3×3 · weights -?\d/);
  await shot('section.filters', 'filters');
});

test('each stage shows one activation map per channel: 16, 32, 64', async () => {
  for (const [layer, channels] of [['layer1.2.relu', 16], ['layer2.2.relu', 32], ['layer3.2.relu', 64]]) {
    await selectLayer(layer);
    await waitForChannels(page, channels, 15_000);
    assert.equal(await page.locator($('residual-view')).count(), 1, 'a block output shows x, F(x), H(x)');
  }
  await page.waitForSelector(`${$('residual-view')} canvas`);
  await clickChannel(page, 3);
  await page.waitForFunction(() => document.querySelector('[data-testid="activation-grid"]').dataset.active === '3');
  await shot('section.activations', 'activations');
  // A downsampling block: option A's zero-padded shortcut next to F(x).
  await selectLayer('layer2.0.relu');
  await waitForChannels(page, 32);
  await page.waitForSelector(`${$('residual-view')} canvas`);
  assert.match(await page.textContent($('residual-view')), /shortcut\(x\)/);
  // Channel 3 was picked, but channels 0–7 of option A are zeros: the view moves to channel 8,
  // which carries x's channel 0, and says so.
  assert.equal(await activeChannel(page), 8);
  const caption = await page.textContent($('residual-caption'));
  assert.match(caption, /relu\(F\(x\) \+ shortcut\(x\)\)/);
  assert.match(caption, /zero channels \(0–7 and 24–31 of 32\)/);
  assert.match(caption, /Channel 8 carries x's channel 0/);
  assert.match(await page.textContent($('residual-view')), /channel 0, which feeds channel 8/);
  assert.match(await page.textContent(`${$('residual-view')} h3`), /channel 8/);
  await shot('section.activations', 'activations-downsample');
  // A zero channel: said in words, not shown as a blank square.
  await clickChannel(page, 30);
  await page.waitForFunction(() => /is one of the zero channels/.test(document.querySelector('[data-testid="residual-caption"]').textContent));
  assert.equal(await page.locator($('zero-channel')).count(), 2, 'x has no channel for it; shortcut(x) is zero there');
});

test('the table and the diagram select layers', async () => {
  await page.click(`${$('layer-row')}[data-name="layer2.1.conv1"]`);
  assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^layer2\.1\.conv1 — Conv2d/);
  await waitForChannels(page, 32);
  await page.click(`${$('diagram-item')}[data-name="layer3.1"] rect`);
  assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^layer3\.1\.relu — ReLU — 64×8×8/);
  assert.equal(await page.locator(`${$('layer-row')}.selected`).getAttribute('data-name'), 'layer3.1.relu');
  await shot('section.layer-table', 'table-selected');
  await shot('section.diagram', 'diagram');
  await shot('section.layer-table', 'layer-table');
});

test('the layer table equals `resnet summary --json`', async () => {
  const total = await checkTableAgainstCli('cifar-resnet20');
  assert.equal(total.params, 269_722);
});

test('bad files give a clear error, keep the state, and the next image works', async () => {
  const huge = join(artifacts, 'huge-20000x20000.png');
  if (!existsSync(huge)) {
    // 20000 rows of (filter byte + 20000 grey pixels): 400 MB raw, ~0.4 MB deflated.
    writeFileSync(huge, png(20000, 20000, 1, Buffer.alloc(20000 * 20001)));
  }
  const noise = Buffer.from(Array.from({ length: 32 * (1 + 96) }, (_, i) => (i % 97 === 0 ? 0 : (i * 73) % 256)));
  const goodPng = png(32, 32, 3, noise);
  const jpeg = sample('dog-0.jpg');
  const cases = [
    ['notes.txt', Buffer.from('this is not an image\n'), 'text/plain', /not an image/],
    ['dog-truncated.jpg', jpeg.subarray(0, Math.floor(jpeg.length / 2)), 'image/jpeg', /truncated/],
    ['noise-truncated.png', goodPng.subarray(0, Math.floor(goodPng.length * 0.6)), 'image/png', /truncated/],
    ['garbage.png', Buffer.concat([goodPng.subarray(0, 33), Buffer.alloc(200, 0x5a)]), 'image/png', /truncated|not an image/],
    ['empty.jpg', Buffer.alloc(0), 'image/jpeg', /empty \(0 bytes\)/],
    ['huge.png', readFileSync(huge), 'image/png', /too large.*20000×20000/],
  ];
  const before = await page.textContent($('top-class'));
  for (const [name, bytes, type, message] of cases) {
    await dropFile(name, bytes, type);
    await page.waitForSelector($('error-banner'), { timeout: 20_000 });
    const text = await page.textContent($('error-banner'));
    assert.match(text, message, `${name}: ${text}`);
    assert.match(text, new RegExp(name.replace('.', '\\.')), 'the message names the file');
    assert.equal(await page.textContent($('top-class')), before, 'the previous result stays');
    assert.equal(await page.locator(`canvas${$('input-preview')}`).count(), 1, 'the previous input stays');
    if (name === 'huge.png') await shot($('error-banner'), 'error-banner');
    await page.click(`${$('error-banner')} button`);
  }
  // A valid PNG (noise) decodes; then a real image classifies again.
  await dropFile('noise.png', goodPng, 'image/png');
  await waitForRun('noise.png');
  await dropFile('ship-0.jpg', sample('ship-0.jpg'), 'image/jpeg');
  await waitForRun('ship-0.jpg');
  assert.equal(await page.textContent($('top-class')), 'ship');
  assert.equal(await page.locator($('error-banner')).count(), 0);
});

test('ResNet-50 (untrained): 25,557,032 parameters, real activations, no predictions', async () => {
  await page.selectOption($('model-select'), 'resnet50');
  await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.params === '25557032', $('layer-total'));
  assert.match(await page.textContent($('layer-total')), /25,557,032/);
  await checkTableAgainstCli('resnet50');
  assert.equal(await page.locator($('untrained-badge')).count(), 1);
  // The current image is kept and runs through the new net.
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 120_000 });
  await waitForRun('ship-0.jpg', 180_000);
  assert.equal(await page.locator($('topk-row')).count(), 0, 'no fake predictions');
  assert.equal(await page.locator($('untrained-note')).count(), 1);
  assert.equal(await page.locator($('filter-tile')).count(), 64);
  await selectLayer('layer4.2.relu');
  await waitForChannels(page, 2048);
  await page.waitForSelector(`${$('residual-view')} canvas`);
  await page.screenshot({ path: join(artifacts, 'resnet50-page.png'), fullPage: true });
  await shot('section.prediction', 'prediction-untrained');
});

test('GoogLeNet (untrained): the diagram shows the parallel Inception branches', async () => {
  await page.selectOption($('model-select'), 'googlenet');
  await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.params === '6624904', $('layer-total'));
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 120_000 });
  await waitForRun('ship-0.jpg', 180_000);
  const inception = page.locator(`${$('diagram-item')}[data-name="inception3a"]`);
  assert.equal(await inception.locator('.branch').count(), 4);
  await inception.locator('rect').first().click();
  assert.match(await page.$eval($('layer-select'), (s) => s.selectedOptions[0].textContent), /^inception3a\./);
  await page.waitForSelector($('activation-grid'), { timeout: 30_000 });
  await inception.scrollIntoViewIfNeeded();
  await shot('section.diagram', 'diagram-googlenet');
});

test('no console errors and no network request after load', async () => {
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(requestsAfterLoad, []);
  await page.screenshot({ path: join(artifacts, 'page.png'), fullPage: true });
});
