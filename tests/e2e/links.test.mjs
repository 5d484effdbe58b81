// Deep links, paste and the camera (issue 13): the URL's hash restores model, layer, channel
// and sample (on load and when it changes), "copy link" puts the address on the clipboard, a
// pasted image is classified, and the camera (Chromium's fake device) classifies frame after
// frame with its rate shown until it is stopped.
//
//   DIST=dist node --test tests/e2e/links.test.mjs
//
// Screenshots go to tests/artifacts/links-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { $, activeChannel, artifacts, clickChannel, openExplorer, repo, waitForImage } from './page.mjs';

let page, base, errors, close;

before(async () => ({ page, base, errors, close } = await openExplorer({ width: 1400, height: 1000 }, {
  args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
})));
after(async () => close?.());

const hash = () => page.evaluate(() => location.hash);

test('a link restores model, layer, channel and sample', async () => {
  await page.goto(`${base}#model=cifar-resnet56&layer=layer2.1.relu&channel=5&sample=dog-1`);
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await waitForImage(page, 'dog-1.jpg');
  assert.equal(await page.$eval($('model-select'), (s) => s.value), 'cifar-resnet56');
  const node = await page.$eval(`${$('layer-row')}.selected`, (r) => r.dataset.name);
  assert.equal(node, 'layer2.1.relu');
  await page.waitForSelector($('activation-grid'), { timeout: 20_000 });
  assert.equal(await activeChannel(page), 5);
  assert.equal(await hash(), '#model=cifar-resnet56&layer=layer2.1.relu&channel=5&sample=dog-1');
  await page.screenshot({ path: join(artifacts, 'links-restored.png') });
});

test('the hash follows what is shown, and a changed hash is followed', async () => {
  await page.click(`${$('sample-image')}[data-name="ship-2.jpg"]`);
  await waitForImage(page, 'ship-2.jpg');
  await clickChannel(page, 2);
  await page.waitForFunction(() => location.hash.includes('channel=2&sample=ship-2'));
  await page.evaluate(() => { location.hash = '#model=cifar-resnet20&layer=layer3.0.conv1&channel=1'; });
  await page.waitForFunction(() => document.querySelector('[data-testid="model-select"]').value === 'cifar-resnet20');
  await page.waitForSelector(`${$('model-status')}[data-state="ready"]`, { timeout: 60_000 });
  await page.waitForFunction(() => document.querySelector('[data-testid="layer-row"].selected')?.dataset.name === 'layer3.0.conv1');
  await page.waitForFunction(() => location.hash === '#model=cifar-resnet20&layer=layer3.0.conv1&channel=1&sample=ship-2');
  // A link to something that is not there says so and keeps the page working.
  await page.evaluate(() => { location.hash = '#layer=layer9.9&channel=0'; });
  await page.waitForSelector($('error-banner'));
  assert.match(await page.textContent($('error-banner')), /layer9\.9 is not in cifar-resnet20/);
  await page.click(`${$('error-banner')} button`);
});

test('copy link puts the address on the clipboard', async () => {
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await page.click($('copy-link'));
  await page.waitForFunction(() => document.querySelector('[data-testid="copy-link-status"]').textContent === 'link copied');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), page.url());
  assert.match(page.url(), /#model=cifar-resnet20&layer=/);
});

test('a pasted image is classified', async () => {
  const bytes = [...readFileSync(join(repo, 'www/samples/horse-0.jpg'))];
  await page.evaluate((bytes) => {
    const file = new File([new Uint8Array(bytes)], 'pasted.jpg', { type: 'image/jpeg' });
    const data = new DataTransfer();
    data.items.add(file);
    document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true }));
  }, bytes);
  await waitForImage(page, 'pasted.jpg');
  assert.equal(await page.textContent($('top-class')), 'horse');
  assert.ok(!(await hash()).includes('sample='), 'a pasted image is no sample');
});

test('the camera classifies frame after frame, with its rate, until stopped', async () => {
  await page.click($('camera-button'));
  await page.waitForSelector($('camera-fps'), { timeout: 20_000 });
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="camera-fps"]').dataset.fps) > 0, null, { timeout: 20_000 });
  const caption = await page.textContent('.preview figcaption');
  assert.match(caption, /^camera \(\d+×\d+\)/);
  // The fake camera's picture moves: the frames keep coming (the view changes).
  const view = () => page.$eval($('input-preview'), (c) => c.toDataURL());
  const first = await view();
  await page.waitForFunction((first) => document.querySelector('[data-testid="input-preview"]').toDataURL() !== first, first, { timeout: 10_000 });
  const fps = Number(await page.$eval($('camera-fps'), (e) => e.dataset.fps));
  assert.ok(fps > 0.5, `${fps} frames/s`);
  await page.locator('section.input').screenshot({ path: join(artifacts, 'links-camera.png') });
  await page.click($('camera-button'));
  await page.waitForSelector($('camera-fps'), { state: 'detached' });
  assert.equal(await page.$eval($('camera-button'), (b) => b.getAttribute('aria-pressed')), 'false');
  // Stopped: no more frames.
  await page.waitForTimeout(300);
  const still = await view();
  await page.waitForTimeout(700);
  assert.equal(await view(), still);
  assert.deepEqual(errors, []);
});
