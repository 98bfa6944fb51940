// What it costs: the machines come from the server's config ([[machines]] in `serve --config`), each
// price shown with its source and date; each variant's cost per million images is the chosen price
// over the photos/s the labelled set measured; a price edited on the page is labelled as the
// reader's; the chart plots top-1 against cost as well as against latency.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { launchBrowser, openApp, photo, requireBuilt, startServer } from './harness.mjs';

let server;
let browser;
let dir;

before(async () => {
  requireBuilt();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferscope-cost-'));
  const config = path.join(dir, 'serve.toml');
  fs.writeFileSync(
    config,
    `[[machines]]
name = "Test CPU box"
kind = "CPU: 2 vCPU"
usd_per_hour = 0.5
source = "a test's own price list"
date = "2026-11-30"
terms = "made up for the test"

[[machines]]
name = "Test GPU box"
kind = "GPU: 1 GPU"
usd_per_hour = 2.0
source = "a test's own price list"
date = "2026-11-30"
`,
  );
  server = await startServer({ args: ['--config', config] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function costs(page) {
  return page.locator('tr.cost').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.dataset.variant, Number(tr.dataset.usdPerMillion)])),
  );
}

async function photosPerSecond(page) {
  return page.locator('tr.set-variant').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.dataset.variant, Number(tr.querySelectorAll('td')[6].textContent)])),
  );
}

test("the config's machines price the labelled set's throughput; an edited price is the reader's", async () => {
  const { page, errors } = await openApp(browser, server.url);
  await page.setInputFiles('#set-files', ['imagenet_00_243.jpg', 'imagenet_14_129.jpg', 'imagenet_16_251.jpg'].map((n) => photo(n).path));
  await page.waitForSelector('.labelled-set[data-state="done"]', { timeout: 300_000 });

  // The config's list, not the defaults, each price with its source and date.
  const machines = await page.locator('tr.machine').evaluateAll((trs) => trs.map((tr) => tr.dataset.machine));
  assert.deepEqual(machines, ['Test CPU box', 'Test GPU box']);
  assert.match(await page.textContent('tr.machine[data-machine="Test CPU box"] .source'), /a test's own price list \(made up for the test\), as of 2026-11-30/);

  // $ per million = price per hour / (photos per second × 3600) × 10⁶, for the first machine.
  const rate = await photosPerSecond(page);
  const first = await costs(page);
  assert.ok(Object.keys(first).length >= 1);
  for (const [id, usd] of Object.entries(first)) {
    const want = (0.5 / (rate[id] * 3600)) * 1e6;
    // photos/s is shown to one decimal: allow that rounding.
    assert.ok(Math.abs(usd - want) / want < 0.05 / rate[id] + 1e-3, `${id}: ${usd} vs ${want} at ${rate[id]} photos/s`);
  }
  assert.match(await page.textContent('.cost-table caption'), /Test CPU box's \$0\.5000\/h \(made up for the test, a test's own price list, as of 2026-11-30\)/);

  // The second machine costs 4× as much per image.
  await page.check('#cost-machine-1');
  const second = await costs(page);
  for (const id of Object.keys(first)) assert.ok(Math.abs(second[id] / first[id] - 4) < 1e-3, id);

  // An edited price: the costs follow it and the table says whose price it is.
  await page.fill('tr.machine[data-machine="Test GPU box"] input.price', '1');
  await page.dispatchEvent('tr.machine[data-machine="Test GPU box"] input.price', 'change');
  await page.waitForFunction(() => /your price/.test(document.querySelector('tr.machine[data-machine="Test GPU box"] .source').textContent));
  const edited = await costs(page);
  for (const id of Object.keys(first)) assert.ok(Math.abs(edited[id] / first[id] - 2) < 1e-3, id);
  assert.match(await page.textContent('.cost-table caption'), /at your price for Test GPU box/);

  // The chart against cost: one point per variant, the axis named.
  await page.selectOption('#set-x-axis', 'cost');
  await page.waitForSelector('.set-chart[data-axis="cost"]');
  assert.equal(await page.locator('.set-chart g.point').count(), Object.keys(first).length);
  assert.match(await page.textContent('.set-chart svg'), /\$ per million images at Test GPU box's price/);
  assert.deepEqual(errors, []);
  await page.close();
});
