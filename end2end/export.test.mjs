// Export: after a photo, a burst and a small labelled set, the page downloads the runs as JSON and as
// one HTML report; the report opens in Chromium with the network off (every request other than the
// file itself is refused and recorded) and shows the tables, the crop and the charts.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ARTIFACTS, openApp, photo, useServerAndBrowser } from './harness.mjs';

const suite = useServerAndBrowser(before, after);

test('the runs download as JSON and as an HTML report that opens offline with its tables', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'inferscope-export-'));
  const { page, errors } = await openApp(suite.browser(), suite.server().url);
  // A photo.
  const { path: file } = photo('imagenet_00_243.jpg');
  await page.setInputFiles('#photo', file);
  await page.waitForSelector('.summary[data-phase="done"]', { timeout: 120_000 });
  const ready = await page.locator('.card:not(.unavailable)').evaluateAll((cards) => cards.map((c) => c.dataset.variant));
  // A short burst.
  await page.fill('#burst-requests', '3');
  await page.click('#burst-start');
  await page.waitForSelector('.burst-status[data-done="3"][data-total="3"]', { timeout: 120_000 });
  await page.waitForFunction(() => !document.querySelector('#burst-start').disabled);
  // A labelled set of two photos.
  await page.setInputFiles('#set-files', [photo('imagenet_14_129.jpg').path, photo('imagenet_16_251.jpg').path]);
  await page.waitForSelector('.labelled-set[data-state="done"]', { timeout: 300_000 });

  const [json] = await Promise.all([page.waitForEvent('download'), page.click('#export-json')]);
  const jsonPath = path.join(tmp, json.suggestedFilename());
  await json.saveAs(jsonPath);
  assert.match(json.suggestedFilename(), /^inferscope-report-\d+T\d+\.json$/);
  const report = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  assert.equal(report.photo.name, 'imagenet_00_243.jpg');
  assert.deepEqual(report.photo.variants.map((v) => v.id), ready);
  assert.match(report.photo.crop, /^data:image\/jpeg;base64,/);
  assert.equal(report.burst.requests, 3);
  assert.equal(report.labelled_set.results.length, 2);
  assert.ok(report.histograms.length >= ready.length);

  const [html] = await Promise.all([page.waitForEvent('download'), page.click('#export-html')]);
  const htmlPath = path.join(tmp, 'report.html');
  await html.saveAs(htmlPath);
  fs.copyFileSync(htmlPath, path.join(ARTIFACTS, 'export-report.html'));
  assert.deepEqual(errors, []);
  await page.close();

  // Offline: a fresh context with the network off; any request that is not the file is refused and
  // recorded.
  const context = await suite.browser().newContext({ offline: true });
  const requests = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
    requests.push(url);
    return route.abort();
  });
  const offline = await context.newPage();
  await offline.goto(`file://${htmlPath}`);
  await offline.waitForLoadState('load');
  assert.deepEqual(requests, [], 'the report asked for nothing from outside the file');
  // The tables: one row per variant that answered the photo, the histograms, the labelled set.
  assert.equal(await offline.locator('table.photo-variants tbody tr').count(), ready.length);
  assert.equal(await offline.locator('table.set-variants tbody tr').count(), ready.length);
  assert.ok((await offline.locator('table.histograms tbody tr').count()) >= ready.length);
  assert.match(await offline.textContent('table.burst'), /requests\s*3/);
  assert.equal(await offline.locator('table.set-photos tbody tr').count(), 2);
  assert.match(await offline.textContent('table.photo-variants'), /bull mastiff/);
  // The images decoded from their data URLs; the charts are inline SVG.
  const images = await offline.locator('img').evaluateAll((imgs) => imgs.map((i) => i.complete && i.naturalWidth));
  assert.ok(images.length >= 1 && images.every((w) => w === 224), JSON.stringify(images));
  assert.ok((await offline.locator('svg').count()) >= 2);
  await offline.screenshot({ path: path.join(ARTIFACTS, 'export-report.png'), fullPage: true });
  await context.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});
