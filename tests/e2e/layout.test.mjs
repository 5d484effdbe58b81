// The grid at the three widths it is designed for (issue 16, item 3): 420 px one column with
// the prediction and the maps first; 1,400 px two columns with the maps and the layer table
// across both; 1,920 px three columns, the maps beside the filters and the residual stream, the
// table beside the diagram. Nothing sticks out sideways, the table's columns are not clipped,
// the residual row does not wrap on a wide screen, and no text is under 11 px.
//
//   DIST=dist node --test tests/e2e/layout.test.mjs
//
// Full-page screenshots: tests/artifacts/layout-{420,1400,1920}.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, artifacts, openExplorer, waitForImage } from './page.mjs';

let page, base, close;

before(async () => {
  ({ page, base, close } = await openExplorer({ width: 1400, height: 1000 }));
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await page.click(`${$('sample-image')}[data-name="dog-1.jpg"]`);
  await waitForImage(page, 'dog-1.jpg');
  // A block output: the residual view (x, F(x), H(x)) is on.
  const value = await page.$eval($('layer-select'), (s) => [...s.options].find((o) => o.textContent.startsWith('layer2.1.relu — ')).value);
  await page.selectOption($('layer-select'), value);
  await page.waitForSelector(`${$('residual-view')} canvas`, { timeout: 20_000 });
});
after(async () => close?.());

/// Every panel's box, by its class.
async function boxes() {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll('main > .panel')].map((p) => {
    const r = p.getBoundingClientRect();
    return [p.classList[1], { left: Math.round(r.left), top: Math.round(r.top + scrollY), width: Math.round(r.width), right: Math.round(r.right) }];
  })));
}

async function settle(width) {
  await page.setViewportSize({ width, height: 1000 });
  await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok))));
}

for (const width of [420, 1400, 1920]) {
  test(`at ${width} px: the designed grid, nothing clipped, text ≥ 11 px`, async () => {
    await settle(width);
    const b = await boxes();
    const main = await page.$eval('main', (m) => { const r = m.getBoundingClientRect(); const s = getComputedStyle(m); return { left: r.left + parseFloat(s.paddingLeft), right: r.right - parseFloat(s.paddingRight) }; });
    const full = main.right - main.left;
    const near = (a, e, msg) => assert.ok(Math.abs(a - e) <= 2, `${msg}: ${a} vs ${e}`);
    if (width === 420) {
      for (const [name, p] of Object.entries(b)) near(p.width, full, `${name} fills the column`);
      const order = Object.entries(b).sort((x, y) => x[1].top - y[1].top).map(([n]) => n);
      assert.deepEqual(order.slice(0, 3), ['input', 'prediction', 'activations'], 'the prediction and the maps come first');
    } else if (width === 1400) {
      near(b.input.top, b.prediction.top, 'input beside prediction');
      near(b.activations.width, full, 'the maps span both columns');
      near(b['layer-table'].width, full, 'the table spans both columns');
      near(b['residual-stream'].top, b.diagram.top, 'the residual stream beside the diagram');
    } else {
      near(b.input.top, b.cam.top, 'input, prediction and the CAM in one row');
      near(b.filters.top, b.activations.top, 'the maps beside the filters');
      assert.ok(b.activations.width > 1.9 * b.filters.width, `the maps are two columns wide: ${b.activations.width} vs ${b.filters.width}`);
      near(b['residual-stream'].left, b.filters.left, 'the residual stream under the filters');
      near(b['layer-table'].top, b.diagram.top, 'the table beside the diagram');
      assert.ok(b['layer-table'].width > 1.9 * b.diagram.width, 'the table is two columns wide');
    }
    // Nothing sticks out of the page sideways.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the window`);
    // Every shown column of the layer table is inside its panel (no clipped params or MACs).
    const clipped = await page.evaluate(() => {
      const box = document.querySelector('.table-scroll').getBoundingClientRect();
      return [...document.querySelectorAll('[data-testid="layer-table"] thead th')]
        .filter((th) => getComputedStyle(th).display !== 'none')
        .filter((th) => th.getBoundingClientRect().right > box.right + 1)
        .map((th) => th.textContent);
    });
    assert.deepEqual(clipped, [], 'table columns cut off');
    const shown = await page.$$eval('[data-testid="layer-table"] thead th', (ths) => ths.filter((th) => getComputedStyle(th).display !== 'none').map((th) => th.textContent));
    for (const col of ['layer', 'output C×H×W', 'params', 'MACs', 'ms']) assert.ok(shown.includes(col), `${col} is shown: ${shown}`);
    // The diagram is drawn at its own size: its text is as large as its CSS says.
    const diagram = await page.$eval($('arch-diagram'), (svg) => {
      const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
      const sizes = [...svg.querySelectorAll('text')].map((t) => parseFloat(getComputedStyle(t).fontSize) * scale);
      return { scale, min: Math.min(...sizes) };
    });
    assert.ok(diagram.min >= 11, `diagram text ${diagram.min.toFixed(1)} px (scale ${diagram.scale.toFixed(2)})`);
    // No text on the page under 11 px.
    const small = await page.evaluate(() => {
      const out = new Set();
      const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walk.nextNode()) {
        const n = walk.currentNode;
        const el = n.parentElement;
        if (!n.textContent.trim() || !el || el.closest('.visually-hidden, noscript, title')) continue;
        const s = getComputedStyle(el);
        if (s.display === 'none' || s.visibility === 'hidden') continue;
        const r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;
        if (parseFloat(s.fontSize) < 11) out.add(`${el.tagName}.${el.className?.baseVal ?? el.className}: ${s.fontSize} "${n.textContent.trim().slice(0, 20)}"`);
      }
      return [...out];
    });
    assert.deepEqual(small, [], 'text under 11 px');
    // On a wide screen the residual view's x, F(x), shortcut(x) and H(x) are in one row.
    if (width >= 1400) {
      const rows = await page.$$eval(`${$('residual-view')} .residual-row > figure`, (fs) => fs.map((f) => { const r = f.getBoundingClientRect(); return [Math.round(r.top), Math.round(r.bottom)]; }));
      assert.ok(rows.length >= 3 && rows.every(([top]) => top < rows[0][1]) && rows.every(([, bottom]) => bottom > rows[0][0]), `one row: ${JSON.stringify(rows)}`);
    }
    await page.screenshot({ path: join(artifacts, `layout-${width}.png`), fullPage: true });
  });
}
