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
mkdirSync(artifacts, { recursive: true });

/// A selector for `data-testid`.
export const $ = (id) => `[data-testid="${id}"]`;

/// Serves the build and opens it: `{ page, base, errors, close }`; `errors` collects console
/// errors and uncaught exceptions as they happen. `args`: more Chromium flags.
export async function openExplorer(viewport = { width: 1400, height: 1000 }, { args = [] } = {}) {
  assert.ok(existsSync(join(dist, 'index.html')), `no build in ${dist}: run trunk build --release`);
  const server = await serve(dist, 0);
  const base = `http://127.0.0.1:${server.address().port}/`;
  const browser = await launchChromium({ args });
  const page = await browser.newPage({ viewport });
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
