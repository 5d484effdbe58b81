// "Why residual?" and the training replay (issue 14): the chart draws every Figure 6 run the
// manifest ships (one schedule; longer runs are in the replay only), a curve loads its model, the slider swaps filters, maps, metrics and the chart's cursor
// to each epoch's snapshot, and a run of the user's own (made here with the CLI) replays from its
// snapshot files; a file that is no snapshot is refused and the replay stays.
//
//   DIST=dist RESNET_BIN=target/debug/resnet node --test tests/e2e/replay.test.mjs
//
// Screenshots: tests/artifacts/degradation.png, replay-epoch-0.png, replay-last.png, replay-yours.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $, artifacts, openExplorer, repo, resnetBin } from './page.mjs';

const manifest = JSON.parse(readFileSync(join(repo, 'www/weights/manifest.json'), 'utf8'));
const runs = manifest.models.filter((m) => m.figure6);
const longer = manifest.models.filter((m) => m.source.kind === 'ours' && !m.figure6);
let page, base, errors, close;

before(async () => {
  ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 }));
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
});
after(async () => close?.());

/// The replay's filter tiles as one string of data URLs: equal when every filter looks the same.
const replayFilters = () => page.$$eval(`${$('replay-filters')} canvas`, (cs) => cs.map((c) => c.toDataURL()).join());

async function slideTo(position) {
  await page.$eval($('replay-slider'), (s, v) => {
    s.value = String(v);
    s.dispatchEvent(new Event('input', { bubbles: true }));
  }, position);
}

test('the chart draws every shipped run, plain on the left, residual on the right', { skip: !runs.length && 'no run shipped' }, async () => {
  await page.waitForSelector(`${$('degradation-chart')} .run`, { timeout: 30_000 });
  for (const r of runs) {
    const plot = r.arch.includes('resnet') ? 'plot-residual' : 'plot-plain';
    assert.equal(await page.locator(`${$(plot)} ${$(`curve-${r.arch}`)}`).count(), 1, r.arch);
    // A train and a test line with one point per epoch trained.
    const points = await page.$eval(`${$(`curve-${r.arch}`)} polyline.test`, (l) => l.getAttribute('points').split(' ').length);
    assert.equal(points, r.source.epochs, r.arch);
  }
  await page.locator($('degradation-chart')).screenshot({ path: join(artifacts, 'degradation.png') });
});

test('clicking a curve loads that model with our weights, and the replay follows it', { skip: !runs.length && 'no run shipped' }, async () => {
  const run = runs[runs.length - 1];
  // The keyboard path: a curve is a button (a mouse click lands on its line, not its box).
  await page.focus($(`curve-${run.arch}`));
  await page.keyboard.press('Enter');
  await page.waitForFunction((arch) => document.querySelector('[data-testid="model-select"]').value === arch
    && document.querySelector('[data-testid="model-status"]').dataset.state === 'ready', run.arch, { timeout: 60_000 });
  assert.equal(await page.$eval($(`curve-${run.arch}`), (g) => g.getAttribute('aria-pressed')), 'true');
  assert.equal(await page.$eval($('replay-run'), (s) => s.value), run.file);
  await page.waitForSelector(`${$('replay-filters')} canvas`, { timeout: 30_000 });
  assert.match(await page.textContent($('replay-metrics')), new RegExp(`after epoch ${run.source.epochs}:`));
});

test('the slider swaps filters, maps, metrics and the chart cursor to each epoch', { skip: !runs.length && 'no run shipped' }, async () => {
  const run = runs.find((r) => r.file === 'weights/ours-cifar-resnet20.safetensors') ?? runs[0];
  await page.selectOption($('replay-run'), run.file);
  await page.waitForSelector(`${$('replay-filters')} canvas`, { timeout: 30_000 });
  await page.waitForFunction((n) => document.querySelector('[data-testid="replay-metrics"]')?.textContent.includes(`after epoch ${n}:`), run.source.epochs);
  const last = await replayFilters();
  const cursorAt = () => page.$eval(`${$(`plot-${run.arch.includes('resnet') ? 'residual' : 'plain'}`)} ${$('replay-cursor')}`, (l) => Number(l.getAttribute('x1')));
  const lastX = await cursorAt();
  await page.locator($('replay')).screenshot({ path: join(artifacts, 'replay-last.png') });

  await slideTo(0);
  await page.waitForFunction(() => document.querySelector('[data-testid="replay-metrics"]')?.textContent.startsWith('the initial weights'), null, { timeout: 30_000 });
  assert.notEqual(await replayFilters(), last, 'the random filters are not the trained ones');
  assert.ok(await cursorAt() < lastX, 'the cursor moved left');
  assert.equal(await page.locator(`${$('replay-maps')} canvas`).count(), 2 * (1 + 4 * 8), 'two images, four layers of eight maps');
  await page.locator($('replay')).screenshot({ path: join(artifacts, 'replay-epoch-0.png') });

  // Every epoch in between shows its own metrics line.
  for (let e = 1; e < run.source.epochs; e += Math.max(1, Math.floor(run.source.epochs / 4))) {
    await slideTo(e);
    await page.waitForFunction((e) => document.querySelector('[data-testid="replay-metrics"]')?.textContent.startsWith(`after epoch ${e}:`), e, { timeout: 30_000 });
  }
  assert.deepEqual(errors, []);
});

test('a longer run of a Figure 6 net replays all its epochs, outside the chart', { skip: !longer.length && 'no longer run shipped' }, async () => {
  for (const run of longer) {
    await page.selectOption($('replay-run'), run.file);
    await page.waitForFunction((n) => document.querySelector('[data-testid="replay-metrics"]')?.textContent.includes(`after epoch ${n}:`), run.source.epochs, { timeout: 30_000 });
    assert.equal(await page.$eval($('replay-slider'), (s) => s.max), String(run.source.epochs), run.file);
    // The chart compares one schedule: this run has no curve there, so no cursor either.
    assert.equal(await page.locator(`${$('degradation-chart')} ${$('replay-cursor')}`).count(), 0, run.file);
    assert.equal(await page.locator($(`curve-${run.arch}`)).count(), 1, `${run.arch}: one curve, the Figure 6 run's`);
  }
  assert.deepEqual(errors, []);
});

test('a run of the user\'s own replays from its snapshot files; a weights file is refused', async () => {
  // An ImageFolder of the shipped samples, and two epochs of ResNet-20 on it with snapshots.
  const tmp = mkdtempSync(join(tmpdir(), 'replay-'));
  const data = join(tmp, 'data');
  for (const f of readdirSync(join(repo, 'www/samples')).filter((f) => f.endsWith('.jpg'))) {
    const cls = f.replace(/-\d+\.jpg$/, '');
    mkdirSync(join(data, cls), { recursive: true });
    copyFileSync(join(repo, 'www/samples', f), join(data, cls, f));
  }
  execFileSync(resnetBin, ['train', '--arch', 'cifar-plain20', '--data', data, '--val', data, '--epochs', '2', '--batch-size', '10',
    '--snapshots', '--out', join(tmp, 'run')], { stdio: 'pipe' });
  const snaps = join(tmp, 'run/snapshots');
  const files = readdirSync(snaps).sort().map((f) => join(snaps, f));
  assert.equal(files.length, 3, 'epochs 0, 1 and 2');

  await page.setInputFiles($('replay-files'), files);
  await page.waitForFunction(() => document.querySelector('[data-testid="replay-run"]').value === 'yours', null, { timeout: 30_000 });
  assert.match(await page.textContent($('replay-run')), /cifar-plain20 — your snapshot files/);
  assert.equal(await page.$eval($('replay-slider'), (s) => s.max), '2');
  assert.match(await page.textContent($('replay-metrics')), /after epoch 2:/);
  await slideTo(0);
  await page.waitForFunction(() => document.querySelector('[data-testid="replay-metrics"]').textContent.startsWith('the initial weights'));
  await page.locator($('replay')).screenshot({ path: join(artifacts, 'replay-yours.png') });

  // A weights file is not a snapshot: the banner says so, the user's replay stays.
  await page.setInputFiles($('replay-files'), join(repo, 'www/weights/cifar10-resnet20.safetensors'));
  await page.waitForSelector($('error-banner'), { timeout: 30_000 });
  assert.match(await page.textContent($('error-banner')), /cannot replay cifar10-resnet20\.safetensors: not a snapshot file: no training snapshot/);
  assert.equal(await page.$eval($('replay-run'), (s) => s.value), 'yours');
  assert.deepEqual(errors, []);
});
