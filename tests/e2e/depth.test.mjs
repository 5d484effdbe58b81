// Why depth works (issue 13): a pixel's receptive field drawn on the input on hover (its size
// from the layer table), the effective receptive field on a click (computed in the worker,
// inside that box), and the residual stream measured per block on the diagram and as charts.
//
//   DIST=dist node --test tests/e2e/depth.test.mjs
//
// Screenshots go to tests/artifacts/depth-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { $, artifacts, openExplorer, waitForImage } from './page.mjs';

let page, base, errors, close;

before(async () => ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 })));
after(async () => close?.());

async function selectLayer(name) {
  const value = await page.$eval($('layer-select'), (s, name) =>
    [...s.options].find((o) => o.textContent.startsWith(`${name} —`)).value, name);
  await page.selectOption($('layer-select'), value);
  await page.waitForSelector(`${$('activation-grid')}[data-node="${value}"]`, { timeout: 20_000 });
  await page.waitForSelector($('activation-zoom'));
  return value;
}

test('hovering a pixel draws its receptive field with the size of the layer table', async () => {
  await page.goto(base);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await page.click(`${$('sample-image')}[data-name="cat-0.jpg"]`);
  await waitForImage(page, 'cat-0.jpg');
  const node = await selectLayer('layer2.0.relu');
  const rf = await page.$eval(`${$('layer-row')}[data-name="layer2.0.relu"]`, (r) => Number(r.dataset.rf));
  assert.equal(rf, 21, 'conv1 3, layer1 +12, layer2.0 +2 +4');

  // Pixel (5, 6) of the 16×16 map: the box is 21 px, rows 0..21 and columns 2..23 of 32.
  const stack = page.locator(`${$('activation-zoom')} .stack`);
  await stack.scrollIntoViewIfNeeded();
  const box = await stack.boundingBox();
  await page.mouse.move(box.x + box.width * (6.5 / 16), box.y + box.height * (5.5 / 16));
  await page.waitForSelector($('rf-box'));
  assert.equal(await page.$eval($('rf-box'), (b) => b.dataset.size), String(rf));
  assert.equal(await page.$eval($('rf-box'), (b) => b.dataset.clipped), '21x21');
  const drawn = await page.locator($('rf-box')).boundingBox();
  assert.ok(Math.abs(drawn.width - box.width * 21 / 32) < 2, `box ${drawn.width} px of ${box.width}`);
  assert.ok(Math.abs(drawn.x - (box.x + box.width * 2 / 32)) < 2, 'starts at input column 2');
  assert.match(await page.textContent($('rf-caption')), /pixel \(5, 6\) sees 21×21 px/);

  // At the corner the box is clipped to the image.
  await page.mouse.move(box.x + 1, box.y + 1);
  await page.waitForFunction(() => document.querySelector('[data-testid="rf-box"]')?.dataset.clipped === '11x11');
  assert.match(await page.textContent($('rf-caption')), /21×21 px \(11×11 inside the image\)/);
  await page.locator($('activation-zoom')).screenshot({ path: join(artifacts, 'depth-rf-box.png') });
  await page.mouse.move(0, 0);
  await page.waitForSelector($('rf-box'), { state: 'detached' });
});

test('a click shows the effective receptive field, inside the theoretical one and smaller', async () => {
  const stack = page.locator(`${$('activation-zoom')} .stack`);
  await stack.scrollIntoViewIfNeeded();
  const box = await stack.boundingBox();
  await page.mouse.click(box.x + box.width * (8.5 / 16), box.y + box.height * (8.5 / 16));
  await page.waitForSelector(`${$('erf')}[data-unit$=",8,8"]`, { timeout: 20_000 });
  const half = Number(await page.$eval($('erf'), (e) => e.dataset.half));
  const caption = await page.textContent(`${$('erf')} figcaption`);
  if (half === 0) {
    assert.match(caption, /no gradient reaches the input/);
  } else {
    assert.ok(half >= 1 && half < 21, `half the gradient within ${half} px of 21`);
    assert.match(caption, /Half of \|∂unit\/∂input\| lies within \d+×\d+ px .* of the 21×21 px theoretical field/);
  }
  // The keyboard path: focus the map, move with the arrows, Enter.
  await page.focus(`${$('activation-zoom')} .stack`);
  await page.keyboard.press('ArrowLeft');
  await page.keyboard.press('Enter');
  await page.waitForSelector(`${$('erf')}[data-unit$=",8,7"]`, { timeout: 20_000 });
  await page.locator(`${$('activation-zoom')}`).evaluate((e) => e.parentElement.scrollIntoView());
  await page.locator('.zoom-pair').screenshot({ path: join(artifacts, 'depth-erf.png') });

  // The map's opacity slider.
  await page.$eval($('map-opacity'), (s) => { s.value = '20'; s.dispatchEvent(new Event('input', { bubbles: true })); });
  assert.equal(await page.$eval(`${$('activation-zoom')} .over`, (o) => o.style.opacity), '0.2');
});

test('the residual stream: one ratio per block on the diagram, the chart and Fig. 7', async () => {
  await page.waitForSelector($('residual-ratio'));
  const ratios = await page.$$eval($('residual-ratio'), (ts) => ts.map((t) => [t.dataset.block, Number(t.dataset.ratio)]));
  assert.equal(ratios.length, 9, 'ResNet-20 has 9 blocks');
  assert.ok(ratios.every(([, r]) => r > 0 && Number.isFinite(r)), JSON.stringify(ratios));
  const bars = await page.$$eval($('residual-bar'), (bs) => bs.map((b) => [b.dataset.block, Number(b.dataset.ratio)]));
  assert.deepEqual(bars.map(([b]) => b), ratios.map(([b]) => b));
  for (const [i, [, r]] of bars.entries()) assert.ok(Math.abs(r - ratios[i][1]) < 1e-3);
  assert.equal(await page.locator($('response-point')).count(), 19, "Fig. 7: ResNet-20's 19 3×3 layers");
  await page.locator('section.residual-stream').screenshot({ path: join(artifacts, 'depth-residual-stream.png') });

  // A bar selects its block.
  await page.click(`${$('residual-bar')}[data-block="layer3.0"]`);
  const out = await page.$eval(`${$('diagram-item')}[data-name="layer3.0"]`, (g) => g.dataset.node);
  await page.waitForSelector(`${$('activation-grid')}[data-node="${out}"]`, { timeout: 20_000 });

  // A new image, new measurements.
  await page.click(`${$('sample-image')}[data-name="ship-0.jpg"]`);
  await waitForImage(page, 'ship-0.jpg');
  await page.waitForFunction((before) => {
    const now = [...document.querySelectorAll('[data-testid="residual-ratio"]')].map((t) => t.dataset.ratio).join();
    return now && now !== before;
  }, ratios.map(([, r]) => r.toFixed(4)).join(), { timeout: 20_000 });
});

test('a plain net: ‖H(x) − x‖ / ‖x‖ where the shape allows, and no errors', async () => {
  await page.selectOption($('model-select'), 'cifar-plain20');
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="residual-ratio"]').length === 9, null, { timeout: 20_000 });
  const texts = await page.$$eval($('residual-ratio'), (ts) => ts.map((t) => t.textContent));
  assert.ok(texts.every((t) => t.startsWith('‖H−x‖/‖x‖')), texts.join());
  assert.ok(texts.some((t) => t.endsWith('–')), 'the shape changes at layer2.0 and layer3.0');
  assert.deepEqual(errors, []);
});

test('at 1,400 px the layer table of resnet50 shows every column, params and MACs included', async () => {
  await page.selectOption($('model-select'), 'resnet50');
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 120_000 });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="layer-row"]').length > 100);
  const fit = await page.$eval('.table-scroll', (s) => ({ scroll: s.scrollWidth, client: s.clientWidth, right: s.getBoundingClientRect().right }));
  assert.ok(fit.scroll <= fit.client + 1, `the table is ${fit.scroll} px in a ${fit.client} px panel`);
  assert.ok(fit.right <= 1400, `the panel ends at ${fit.right} px`);
  const total = await page.$eval('tfoot', (f) => f.textContent);
  assert.match(total, /25,557,032/, 'the params total is shown whole');
  await page.locator('.table-scroll').screenshot({ path: join(artifacts, 'depth-table-1400.png') });
});
