// Pretrained weights from the hub (issue 12), against a local imitation of the hub (fake-hub.mjs,
// its address given to the page as ?hub=): nothing is fetched until the button is clicked; the
// download shows its progress and can be cancelled; the file becomes the model (ImageNet names,
// the file's conv1 filters, the CLI's top-1); a later visit loads it from Cache Storage with no
// request; a bad file shows the banner and the page keeps working.
//
//   DIST=dist node --test tests/e2e/hub.test.mjs      (needs target/debug/resnet)
//
// Screenshots go to tests/artifacts/hub-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $, artifacts, openExplorer, repo, resnetBin, waitForImage } from './page.mjs';
import { fakeHub } from './fake-hub.mjs';

const cli = resnetBin;
const tmp = mkdtempSync(join(tmpdir(), 'resnet-hub-e2e-'));
let page, base, errors, close, hub;

/// The hub's "resnet18.tv_in1k": ResNet-18 under torchvision's names, with random weights of
/// another seed than the page's own (so its filters differ from the untrained ones).
const r18 = join(tmp, 'resnet18.safetensors');

before(async () => {
  assert.ok(existsSync(cli), `no ${cli}: cargo build -p resnet-cli`);
  const made = spawnSync(cli, ['weights', 'init', '--arch', 'resnet18', '--seed', '7', '--out', r18], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const junk = Buffer.alloc(4096, 'not weights ');
  hub = await fakeHub({
    'timm/resnet18.tv_in1k': { body: readFileSync(r18) },
    // Slow enough to be caught downloading, and cancelled.
    'timm/resnet34.tv_in1k': { body: Buffer.alloc(40 << 20), delayMs: 250 },
    'timm/resnet50.tv_in1k': { body: junk },
  });
  ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 }));
});
after(async () => {
  await close?.();
  hub?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const ready = () => page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 120_000 });
const offer = (state) => page.waitForSelector(`${$('hub-weights')}[data-state="${state}"]`, { timeout: 60_000 });
const filterTiles = () => page.$$eval(`${$('filter-grid')} canvas`, (cs) => cs.map((c) => c.toDataURL()).join());
const open = async () => {
  await page.goto('about:blank'); // the same address with a hash would not load the page again
  await page.goto(`${base}?hub=${encodeURIComponent(hub.url)}#model=resnet18&sample=cat-0`);
  await ready();
  await waitForImage(page, 'cat-0.jpg', 120_000);
};

test('fetched on request only: progress, then the hub\'s file is the model', async () => {
  await open();
  await offer('offer');
  assert.match(await page.textContent($('hub-weights')), /47 MB from 127\.0\.0\.1:\d+ \(timm\/resnet18\.tv_in1k, BSD-3-Clause\)/);
  assert.equal(hub.requests(), 0, 'nothing is fetched before the click');
  assert.ok(await page.$($('untrained-note')), 'random weights make no predictions');
  const randomTiles = await filterTiles();

  await page.click($('hub-fetch'));
  await page.waitForFunction(() => {
    const el = document.querySelector('[data-testid="user-weights"]');
    return el?.dataset.arch === 'resnet18' && !document.querySelector('[data-testid="weights-loading"]');
  }, null, { timeout: 120_000 });
  await waitForImage(page, 'cat-0.jpg', 120_000);
  assert.match(await page.textContent($('user-weights')), /pretrained: torchvision's ImageNet weights \(timm\/resnet18\.tv_in1k, BSD-3-Clause\)/);
  assert.equal(await page.$($('hub-weights')), null, 'no offer once the model runs them');
  assert.equal(await page.$($('untrained-badge')), null);
  assert.notEqual(await filterTiles(), randomTiles, 'conv1 shows the hub file\'s filters');

  // The CLI's top-1 for this file and image, with ImageNet's name.
  const predicted = spawnSync(cli, ['predict', '--weights', r18, '--json', join(repo, 'www/samples/cat-0.jpg')], { encoding: 'utf8' });
  assert.equal(predicted.status, 0, predicted.stderr);
  const [first, second] = JSON.parse(predicted.stdout).results[0].top;
  const top = await page.textContent($('top-class'));
  if ((first.prob - second.prob) / first.prob > 0.01) assert.equal(top, first.label);
  else assert.ok([first.label, second.label].includes(top), `${top} is the CLI's top-1 or a near tie`);
  await page.screenshot({ path: join(artifacts, 'hub-resnet18.png') });
  assert.deepEqual(errors, []);
});

test('a later visit loads the weights from this browser\'s cache, with no request', async () => {
  const asked = hub.requests();
  await open();
  await offer('cached');
  assert.match(await page.textContent($('hub-fetch')), /load pretrained weights/);
  await page.click($('hub-fetch'));
  await page.waitForSelector(`${$('user-weights')}[data-arch="resnet18"]`, { timeout: 120_000 });
  await waitForImage(page, 'cat-0.jpg', 120_000);
  assert.equal(hub.requests(), asked, 'from Cache Storage, not the network');
  assert.deepEqual(errors, []);
});

test('a download can be cancelled; a bad file is one banner and the page keeps working', async () => {
  await page.selectOption($('model-select'), 'resnet34');
  await ready();
  await offer('offer');
  await page.click($('hub-fetch'));
  await offer('downloading');
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="hub-progress"]')?.value) > 0, null, { timeout: 30_000 });
  assert.match(await page.textContent($('hub-weights')), /downloading timm\/resnet34\.tv_in1k from 127\.0\.0\.1:\d+: \d+ MB of 42 MB/);
  await page.screenshot({ path: join(artifacts, 'hub-downloading.png') });
  await page.click($('hub-cancel'));
  await offer('offer');
  assert.equal(await page.$($('error-banner')), null, 'a cancel is not an error');
  assert.equal(await page.$($('user-weights')), null);

  await page.selectOption($('model-select'), 'resnet50');
  await ready();
  await offer('offer');
  await page.click($('hub-fetch'));
  await page.waitForSelector($('error-banner'), { timeout: 60_000 });
  assert.match(await page.textContent($('error-banner')), /cannot load resnet50\.tv_in1k\.safetensors/);
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'resnet50', 'the model stays');
  await page.click(`${$('sample-image')}[data-name="dog-0.jpg"]`);
  await waitForImage(page, 'dog-0.jpg', 120_000);
  await offer('offer');
  assert.deepEqual(errors, []);
});
