// Serves the bench page (or the explorer's dist/) on 127.0.0.1 and drives Debian Chromium with
// playwright-core, through the project's browser harness (tests/browser.mjs: the server and the
// Chromium launcher the end-to-end tests use). Prints one JSON object on stdout.
//   node drive.mjs bench CONFIG.json   -> runBench(config) on bench/web/index.html
//   node drive.mjs page DIST_DIR LOADS -> page weight and open → first prediction, cold cache
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launchChromium as launch } from '../../tests/browser.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const bench = path.dirname(here);
const repo = path.dirname(bench);

async function runBenchPage(cfgPath) {
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  const server = await serve([
    ['/ort/', path.join(bench, 'node_modules/onnxruntime-web/dist')],
    ['/pkg/', path.join(bench, '.work/pkg')],
    ['/pkg-threads/', path.join(bench, '.work/pkg-threads')],
    ['/pkg-relaxed/', path.join(bench, '.work/pkg-relaxed')],
    ['/pkg-relaxed-threads/', path.join(bench, '.work/pkg-relaxed-threads')],
    ['/work/', path.join(bench, '.work')],
    ['/shared/', path.resolve(repo, '../shared')],
    ['/', here],
  ]);
  const browser = await launch();
  try {
    const out = { browser: `Chromium ${browser.version()}`, variants: [] };
    for (const variant of cfg.variants) {
      const page = await browser.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
      const origins = new Set();
      page.on('request', (r) => origins.add(new URL(r.url()).origin));
      await page.goto(`http://127.0.0.1:${server.address().port}/index.html`);
      try {
        await page.waitForFunction(() => window.benchReady === true, null, { timeout: 60_000 });
      } catch (e) {
        throw new Error(`bench page did not load: ${errors.join('; ') || e.message}`);
      }
      let r;
      try {
        r = await page.evaluate((c) => (c.camModels ? window.runCamBench(c) : window.runBench(c)), { ...cfg.common, ...variant });
      } catch (e) {
        throw new Error(`runBench failed: ${e.message}; page errors: ${errors.join('; ')}`);
      }
      const remote = [...origins].filter((o) => !o.startsWith('http://127.0.0.1'));
      if (remote.length) throw new Error(`the bench page reached outside localhost: ${remote.join(', ')}`);
      out.variants.push({ ...variant, models: undefined, result: r });
      await page.close();
    }
    return out;
  } finally {
    await browser.close();
    server.close();
  }
}

// Open → first prediction of the explorer, cold cache (a fresh browser context per load): the
// clock starts at navigation; the first sample image is clicked as soon as it is on the page;
// it stops when the prediction panel shows the result. Bytes are counted as the server sends
// them (uncompressed), and gzipped as a compressing server would send them.
async function runExplorerPage(dist, loads) {
  const root = path.resolve(dist);
  const served = [];
  const server = await serve(root);
  server.on('request', (req) => served.push(decodeURIComponent(new URL(req.url, 'http://x').pathname)));
  const browser = await launch();
  const { gzipSync } = await import('node:zlib');
  const size = (url) => {
    let f = path.join(root, url);
    if (fs.existsSync(f) && fs.statSync(f).isDirectory()) f = path.join(f, 'index.html');
    if (!fs.existsSync(f)) return [0, 0];
    const b = fs.readFileSync(f);
    return [b.length, gzipSync(b, { level: 6 }).length];
  };
  try {
    const out = { browser: `Chromium ${browser.version()}`, loads: [] };
    for (let i = 0; i < loads; i++) {
      served.length = 0;
      const context = await browser.newContext();
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${server.address().port}/`);
      try {
        await page.locator('[data-testid="sample-image"]').first().click({ timeout: 60_000 });
        const clickMs = await page.evaluate(() => performance.now());
        await page.waitForFunction(() => {
          const p = document.querySelector('[data-testid="prediction"]');
          return p && p.dataset.busy !== 'true'
            && (p.querySelector('[data-testid="top-class"]') || p.querySelector('[data-testid="inference-ms"]'));
        }, null, { timeout: 60_000, polling: 'raf' });
        const ms = await page.evaluate(() => performance.now());
        await page.waitForLoadState('networkidle');
        const sizes = served.map(size);
        out.loads.push({
          first_prediction_ms: ms,
          sample_clicked_ms: clickMs,
          total_bytes: sizes.reduce((a, s) => a + s[0], 0),
          total_gzip_bytes: sizes.reduce((a, s) => a + s[1], 0),
          requests: served.length,
        });
      } catch (e) {
        throw new Error(`explorer load ${i + 1}: ${e.message}; page errors: ${errors.join('; ')}`);
      }
      await context.close();
    }
    return out;
  } finally {
    await browser.close();
    server.close();
  }
}

const [mode, ...args] = process.argv.slice(2);
try {
  const result = mode === 'bench' ? await runBenchPage(args[0])
    : mode === 'page' ? await runExplorerPage(args[0], Number(args[1] ?? 5))
    : (() => { throw new Error('usage: drive.mjs bench CONFIG.json | page DIST LOADS'); })();
  process.stdout.write(JSON.stringify(result) + '\n');
} catch (e) {
  process.stderr.write(`drive.mjs: ${e.message}\n`);
  process.exit(1);
}
