// The user's own weights (issue 12): a PyTorch .pth chosen in the page's file input (the same
// one images go through) is read in the worker, its architecture recognised, and every panel
// shows that network; a truncated file shows the error banner and the previous model keeps
// working. With the bench's torch (bench/.venv), also torchvision's ResNet-50 saved with
// torch.save: the page's top-1 is torchvision's.
//
//   DIST=dist node --test tests/e2e/weights.test.mjs
//
// Screenshots go to tests/artifacts/weights-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $, artifacts, openExplorer, repo, waitForImage } from './page.mjs';

let page, base, errors, close;
const tmp = mkdtempSync(join(tmpdir(), 'resnet-weights-e2e-'));

before(async () => ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 })));
after(async () => {
  await close?.();
  rmSync(tmp, { recursive: true, force: true });
});

const ready = () => page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 120_000 });

/// Every first-layer filter tile's pixels.
const filterTiles = () => page.$$eval(`${$('filter-grid')} canvas`, (cs) => cs.map((c) => c.toDataURL()).join());

/// Chooses `path` in the page's file input, as a user does.
const choose = (path) => page.setInputFiles($('file-input'), path);

async function waitForUserWeights(name, arch, timeout = 120_000) {
  await page.waitForFunction(([name, arch]) => {
    const el = document.querySelector('[data-testid="user-weights"]');
    return el?.dataset.arch === arch && el.textContent.includes(`your weights: ${name}`)
      && !document.querySelector('[data-testid="weights-loading"]');
  }, [name, arch], { timeout });
  await ready();
}

test('a .pth chosen in the file input becomes the model; a truncated one leaves it working', async () => {
  await page.goto(base);
  await ready();
  // Start from an untrained net, so that everything visibly changes.
  await page.selectOption($('model-select'), 'cifar-resnet32');
  await ready();
  await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
  await waitForImage(page, 'cat-0.jpg');
  assert.ok(await page.$(`${$('untrained-note')}`), 'random weights make no predictions');
  const randomTiles = await filterTiles();

  await choose(join(repo, 'crates/core/tests/fixtures/resnet20.pth'));
  await waitForUserWeights('resnet20.pth', 'cifar-resnet20');
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'cifar-resnet20');
  await waitForImage(page, 'cat-0.jpg');
  // The CLI's top-1 for this image and file (crates/cli/tests/weights.rs): cat.
  assert.equal(await page.textContent($('top-class')), 'cat');
  assert.notEqual(await filterTiles(), randomTiles, 'conv1 shows the file\'s filters');
  assert.match(await page.textContent($('user-weights-note')), /cifar-plain20/);
  await page.screenshot({ path: join(artifacts, 'weights-resnet20-pth.png') });

  // A truncated file: the banner says why; the model and its results stay.
  const pth = readFileSync(join(repo, 'crates/core/tests/fixtures/resnet20.pth'));
  const cut = join(tmp, 'cut.pth');
  writeFileSync(cut, pth.subarray(0, pth.length / 2));
  await choose(cut);
  await page.waitForSelector($('error-banner'), { timeout: 30_000 });
  assert.match(await page.textContent($('error-banner')), /cannot load cut\.pth: not a valid PyTorch \.pth file/);
  assert.ok(await page.$(`${$('user-weights')}[data-arch="cifar-resnet20"]`), 'the previous file is still the model');
  await page.click(`${$('sample-image')}[data-name="ship-0.jpg"]`);
  await waitForImage(page, 'ship-0.jpg');
  assert.equal(await page.textContent($('top-class')), 'ship', 'the previous model still classifies');
  assert.deepEqual(errors, []);
});

const python = join(repo, 'bench/.venv/bin/python');
const torchEnv = { ...process.env, LD_LIBRARY_PATH: join(repo, 'bench/.venv/cuda-stubs') };
// The bench's venv may hold torch without torchvision (bench/run installs what its anchors need).
const noTorchvision = !existsSync(python) ? 'no bench/.venv'
  : spawnSync(python, ['-c', 'import torch, torchvision'], { env: torchEnv }).status !== 0 && 'bench/.venv has no torch + torchvision';

test('torchvision\'s ResNet-50 saved with torch.save: ImageNet names, torchvision\'s top-1', { skip: noTorchvision }, async () => {
  const made = spawnSync(python, [join(repo, 'crates/cli/tests/fixtures/make_torchvision_check.py'), tmp, 'resnet50', join(repo, 'www/samples/dog-0.jpg')], {
    env: torchEnv,
    encoding: 'utf8',
  });
  assert.equal(made.status, 0, made.stderr);
  const logits = JSON.parse(readFileSync(join(tmp, 'resnet50.json'), 'utf8')).logits;
  const best = logits.indexOf(Math.max(...logits));
  const names = readFileSync(join(repo, 'crates/core/assets/imagenet1k.txt'), 'utf8').split('\n');

  await page.selectOption($('model-select'), 'resnet50');
  await ready();
  const randomTiles = await filterTiles();
  await choose(join(tmp, 'resnet50.pth'));
  await waitForUserWeights('resnet50.pth', 'resnet50', 300_000);
  assert.notEqual(await filterTiles(), randomTiles, 'conv1 shows the file\'s filters');
  await choose(join(tmp, 'resnet50-input.png'));
  await waitForImage(page, 'resnet50-input.png', 120_000);
  assert.equal(await page.textContent($('top-class')), names[best], `torchvision's top-1 is class ${best}`);
  assert.equal(await page.locator($('topk-row')).count(), 5);
  await page.screenshot({ path: join(artifacts, 'weights-resnet50-pth.png') });
  assert.deepEqual(errors, []);
});

test('a weights file dropped anywhere on the page loads like a chosen one', async () => {
  await page.goto(base);
  await ready();
  await page.selectOption($('model-select'), 'cifar-resnet44');
  await ready();
  const pth = readFileSync(join(repo, 'crates/core/tests/fixtures/resnet20.pth'));
  // On the layer table, not the drop zone: the whole page takes files.
  await page.evaluate(({ data }) => {
    const u8 = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([u8], 'dropped.pth'));
    const target = document.querySelector('[data-testid="layer-table"]');
    target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, { data: pth.toString('base64') });
  await waitForUserWeights('dropped.pth', 'cifar-resnet20');
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'cifar-resnet20');
  assert.deepEqual(errors, []);
});

test('a file the worker did not hear is posted again; one that never reaches it is an error', async () => {
  // The page's posts on the weights channel are dropped while window.__lose > 0.
  await page.addInitScript(() => {
    const post = BroadcastChannel.prototype.postMessage;
    BroadcastChannel.prototype.postMessage = function (m) {
      if (this.name === 'resnet-explorer-weights-file' && window.__lose > 0) {
        window.__lose -= 1;
        return undefined;
      }
      return post.call(this, m);
    };
  });
  await page.goto(base);
  await ready();
  const pth = join(repo, 'crates/core/tests/fixtures/resnet20.pth');
  await page.evaluate(() => { window.__lose = 1; });
  await choose(pth);
  await waitForUserWeights('resnet20.pth', 'cifar-resnet20');

  await page.selectOption($('model-select'), 'cifar-resnet32');
  await ready();
  await page.evaluate(() => { window.__lose = 1000; });
  await choose(pth);
  await page.waitForSelector($('error-banner'), { timeout: 30_000 });
  assert.match(await page.textContent($('error-banner')), /did not reach the inference worker within 10 s/);
  assert.equal(await page.$($('weights-loading')), null, 'no progress bar left spinning');
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'cifar-resnet32', 'the model stays');
  assert.deepEqual(errors, []);
});
