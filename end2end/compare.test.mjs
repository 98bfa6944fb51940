// The comparison page's live parts in Chromium: every card answers, bursts fill the histograms,
// sample photos, model facts, the embed layout. Screenshots of each state go to end2end/artifacts/.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { ARTIFACTS, MODELS, classNames, openApp, photo, useServerAndBrowser } from './harness.mjs';

const suite = useServerAndBrowser(before, after);

const done = '.summary[data-phase="done"], .summary[data-phase="failed"]';

/** The ids of the cards whose variant is loaded. */
async function readyVariants(page) {
  return page.locator('.card:not(.unavailable)').evaluateAll((cards) => cards.map((c) => c.dataset.variant));
}

/** The histogram count shown in each ready card, by variant id. */
async function histogramCounts(page) {
  return page
    .locator('.card:not(.unavailable)')
    .evaluateAll((cards) => Object.fromEntries(cards.map((c) => [c.dataset.variant, Number(c.querySelector('.percentiles .count').textContent)])));
}

test('a clear photo gets the right top-1 in every card, with the time split and a histogram sample', async () => {
  const { path: file, label } = photo('imagenet_00_243.jpg'); // bull mastiff, 94% for the baseline
  const { page, errors } = await openApp(suite.browser(), suite.server().url);
  await page.screenshot({ path: path.join(ARTIFACTS, 'compare-idle.png'), fullPage: true });
  await page.setInputFiles('#photo', file);
  await page.waitForSelector(done, { timeout: 120_000 });
  assert.equal(await page.getAttribute('.summary', 'data-phase'), 'done', await page.textContent('.summary'));

  const ready = await readyVariants(page);
  assert.ok(ready.includes('resnet50-baseline'), `ready: ${ready}`);
  for (const id of ready) {
    const card = page.locator(`[data-variant="${id}"]`);
    assert.equal(await card.locator('.top5 li.top1').getAttribute('data-class'), String(label), `${id}'s top-1`);
    assert.equal((await card.locator('.top5 li.top1 .name').textContent()).trim(), classNames()[label]);
    // The five parts of the time split, each a number of milliseconds.
    for (const part of ['transport-ms', 'queue-ms', 'inference-ms', 'total-ms']) {
      assert.match(await card.locator(`.${part}`).textContent(), /^\d+\.\d\s?ms$/, `${id} ${part}`);
    }
    const total = parseFloat(await card.locator('.total-ms').textContent());
    const inference = parseFloat(await card.locator('.inference-ms').textContent());
    assert.ok(total >= inference, `${id}: total ${total} < inference ${inference}`);
  }
  // One answer: one sample in every histogram, and its p50 is that answer.
  const counts = await histogramCounts(page);
  assert.deepEqual(Object.values(counts), ready.map(() => 1), JSON.stringify(counts));
  await page.screenshot({ path: path.join(ARTIFACTS, 'compare-answer.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('a burst of 20 puts 20 samples in each histogram; reset clears them; cancel stops early', async () => {
  const { page, errors } = await openApp(suite.browser(), suite.server().url);
  // Before any photo there is nothing to send.
  assert.equal(await page.isDisabled('#burst-start'), true);
  await page.setInputFiles('#photo', photo('imagenet_01_559.jpg').path);
  await page.waitForSelector(done, { timeout: 120_000 });
  await page.click('#burst-reset');
  const ready = await readyVariants(page);
  assert.deepEqual(Object.values(await histogramCounts(page)), ready.map(() => 0));

  // Out-of-range settings are explained and block the start.
  await page.fill('#burst-concurrency', '99');
  assert.match(await page.textContent('.burst [role="alert"]'), /Concurrency must be a whole number from 1 to 16/);
  assert.equal(await page.isDisabled('#burst-start'), true);

  await page.fill('#burst-requests', '20');
  await page.fill('#burst-concurrency', '4');
  await page.click('#burst-start');
  await page.waitForSelector('.burst-status[data-done="20"][data-total="20"]', { timeout: 300_000 });
  await page.waitForFunction(() => !document.querySelector('#burst-start').disabled);
  const counts = await histogramCounts(page);
  assert.deepEqual(Object.values(counts), ready.map(() => 20), JSON.stringify(counts));
  // The percentiles beside each chart are times, in order.
  for (const id of ready) {
    const card = page.locator(`[data-variant="${id}"]`);
    const [p50, p90, p99] = await Promise.all(['p50', 'p90', 'p99'].map(async (q) => toMs(await card.locator(`.percentiles .${q}`).textContent())));
    assert.ok(p50 > 0 && p50 <= p90 && p90 <= p99, `${id}: ${p50} ${p90} ${p99}`);
  }
  const status = await page.textContent('.burst-status');
  assert.match(status, /20 of 20 answered \(done\) · [\d.]+ requests\/s/);
  console.log(`# burst: ${status}`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'compare-burst.png'), fullPage: true });

  // Cancel: a long burst stops after the requests in flight, well short of its total.
  await page.fill('#burst-requests', '400');
  await page.fill('#burst-concurrency', '2');
  await page.click('#burst-start');
  await page.waitForSelector('.burst-status[data-done="2"], .burst-status[data-done="3"]', { timeout: 120_000 });
  await page.click('#burst-cancel');
  await page.waitForFunction(() => !document.querySelector('#burst-start').disabled, null, { timeout: 120_000 });
  const cancelled = Number(await page.getAttribute('.burst-status', 'data-done'));
  assert.ok(cancelled < 400, `cancelled after ${cancelled}`);
  assert.match(await page.textContent('.burst-status'), /\(cancelled\)/);

  await page.click('#burst-reset');
  assert.deepEqual(Object.values(await histogramCounts(page)), ready.map(() => 0));
  assert.deepEqual(errors, []);
  await page.close();
});

test('a sample photo classifies with one click, keyboard included', async () => {
  const { page, errors } = await openApp(suite.browser(), suite.server().url);
  const samples = await page.locator('button.sample').count();
  assert.ok(samples >= 1, 'no sample photos on the page (./x build-site copies them)');
  const first = page.locator('button.sample').first();
  const url = await first.getAttribute('data-sample');
  const label = Number(url.replace(/\.jpg$/, '').split('_').pop());
  await first.focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector(done, { timeout: 120_000 });
  assert.equal(await page.getAttribute('.summary', 'data-phase'), 'done');
  assert.equal(await page.getAttribute('[data-variant="resnet50-baseline"] .top5 li.top1', 'data-class'), String(label));
  assert.deepEqual(errors, []);
  await page.close();
});

test('model facts come from models/report.json when it exists', async () => {
  const { page } = await openApp(suite.browser(), suite.server().url);
  const report = path.join(MODELS, 'report.json');
  if (!fs.existsSync(report)) {
    assert.equal(await page.locator('.facts').count(), 0);
    console.log('# no models/report.json: the page shows no facts (build-variants writes it)');
  } else {
    const json = JSON.parse(fs.readFileSync(report, 'utf8'));
    // Every card whose variant the report measured shows its facts (the report also holds the
    // magnitude 2:4 comparison, which has no card).
    const cards = new Set(await page.locator('.card').evaluateAll((cs) => cs.map((c) => c.dataset.variant)));
    const measured = json.variants.filter((v) => cards.has(v.id));
    assert.ok(measured.length > 0, 'the report names no variant of the page');
    for (const v of measured) {
      const card = page.locator(`[data-variant="${v.id}"] .facts`);
      assert.equal(await card.count(), 1, `${v.id} shows no facts`);
      const text = await card.textContent();
      assert.ok(text.includes(`${(100 * v.accuracy.top1).toFixed(1)}%`), `${v.id}: ${text}`);
      assert.ok(text.includes(`${v.gmacs.toFixed(2)} GMAC`), `${v.id}: ${text}`);
    }
    assert.match(await page.textContent('.facts-note'), /measured by build-variants on/);
  }
  await page.close();
});

test('?embed=1 fits a 640×720 iframe without horizontal scrolling, and works in one', async () => {
  const page = await suite.browser().newPage({ viewport: { width: 640, height: 720 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // The course site: a page that embeds the app in an iframe of that size.
  await page.setContent(`<iframe id="demo" src="${suite.server().url}/?embed=1" width="640" height="720" style="border:0"></iframe>`);
  const frame = page.frameLocator('#demo');
  await frame.locator('main[data-hydrated="true"]').waitFor({ timeout: 60_000 });
  assert.equal(await frame.locator('.masthead').isVisible(), false);
  await frame.locator('#photo').setInputFiles(photo('imagenet_00_243.jpg').path);
  await frame.locator('.summary[data-phase="done"]').waitFor({ timeout: 120_000 });
  const inner = await page.frames().find((f) => f.url().includes('embed=1'));
  const [scrollWidth, clientWidth] = await inner.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  assert.ok(scrollWidth <= clientWidth, `horizontal scroll: ${scrollWidth} > ${clientWidth}`);
  assert.equal(await frame.locator('[data-variant="resnet50-baseline"] .top5 li.top1').getAttribute('data-class'), '243');
  await page.screenshot({ path: path.join(ARTIFACTS, 'embed-640x720.png') });
  // A phone: no horizontal scroll on the full page either.
  const phone = await suite.browser().newPage({ viewport: { width: 375, height: 740 } });
  await phone.goto(suite.server().url);
  const [sw, cw] = await phone.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  assert.ok(sw <= cw, `phone width: ${sw} > ${cw}`);
  await phone.screenshot({ path: path.join(ARTIFACTS, 'phone-375.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await phone.close();
  await page.close();
});

function toMs(text) {
  const v = parseFloat(text);
  return /\bs$/.test(text.trim()) && !/ms$/.test(text.trim()) ? v * 1000 : v;
}
