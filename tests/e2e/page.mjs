// What every end-to-end test file starts from: the release build (DIST, default dist/) served
// on loopback, one Chromium page on it, and the console errors and page errors it reports.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launchChromium } from '../browser.mjs';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const dist = resolve(repo, process.env.DIST ?? 'dist');
export const artifacts = join(repo, 'tests/artifacts');
/// The CLI, for tests that compare with it or make files with it.
export const resnetBin = process.env.RESNET_BIN ?? join(repo, 'target/debug/resnet');
mkdirSync(artifacts, { recursive: true });

/// A selector for `data-testid`.
export const $ = (id) => `[data-testid="${id}"]`;

/// Serves the build and opens it: `{ page, base, errors, close }`; `errors` collects console
/// errors and uncaught exceptions as they happen. `args`: more Chromium flags; `isolated`: false
/// serves the page without the cross-origin isolation headers (the single-threaded worker).
/// `init`: a script run in the page before its own (page.addInitScript), e.g. to stand in for a
/// browser without some feature; `serviceWorkers`: 'block' for a browser without them (a page
/// served without the isolation headers then stays unisolated: index.html's service worker
/// would otherwise isolate it).
export async function openExplorer(
  viewport = { width: 1400, height: 1000 },
  { args = [], isolated = true, init, serviceWorkers = 'allow' } = {},
) {
  assert.ok(existsSync(join(dist, 'index.html')), `no build in ${dist}: run trunk build --release`);
  const server = await serve(dist, 0, '127.0.0.1', { isolated });
  const base = `http://127.0.0.1:${server.address().port}/`;
  const browser = await launchChromium({ args });
  const page = await browser.newPage({ viewport, serviceWorkers });
  if (init) await page.addInitScript(init);
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  const close = async () => {
    await browser.close();
    server.close();
  };
  return { page, base, errors, close };
}

/// Waits until `name` is the current image and its run has finished.
export async function waitForImage(page, name, timeout = 30_000) {
  await page.waitForFunction((name) => {
    const cap = document.querySelector('.preview figcaption')?.textContent ?? '';
    const pred = document.querySelector('[data-testid="prediction"]');
    return cap.startsWith(name) && pred?.dataset.busy === 'false' && document.querySelector('[data-testid="inference-ms"]');
  }, name, { timeout });
}

/// The channel maps are one canvas (components/channel_grid.rs): how many channels it shows
/// (0 without one).
export async function channelCount(page) {
  return page.$$eval($('activation-grid'), (g) => (g.length ? Number(g[0].dataset.channels) : 0));
}

/// Waits until the maps of the selected layer show `n` channels.
export async function waitForChannels(page, n, timeout = 30_000) {
  await page.waitForFunction(([sel, n]) => {
    const g = document.querySelector(sel);
    return g && Number(g.dataset.channels) === n && g.dataset.node === document.querySelector('[data-testid="layer-select"]').value;
  }, [$('activation-grid'), n], { timeout });
}

/// The channel marked active (shown enlarged), or null.
export async function activeChannel(page) {
  return page.$$eval($('activation-grid'), (g) => (g.length ? Number(g[0].dataset.active) : null));
}

/// Clicks channel `n`'s tile, as a user would: scrolled into the grid's view first (once the
/// grid is there: a new image's maps come after its prediction is painted).
export async function clickChannel(page, n) {
  await page.waitForSelector('[data-testid="activation-grid"]', { timeout: 30_000 });
  const at = await page.$eval($('activation-grid'), (g, n) => {
    const { cols, tile, gap } = Object.fromEntries(['cols', 'tile', 'gap'].map((k) => [k, Number(g.dataset[k])]));
    const [x, y] = [(n % cols) * (tile + gap) + tile / 2, Math.floor(n / cols) * (tile + gap) + tile / 2];
    g.scrollTop = Math.max(0, y - g.clientHeight / 2);
    return { x, y: y - g.scrollTop };
  }, n);
  await page.locator($('activation-grid')).scrollIntoViewIfNeeded();
  const box = await page.locator($('activation-grid')).boundingBox();
  await page.mouse.click(box.x + at.x, box.y + at.y);
}
