// The labelled-set view in Chromium against the real server: on foolbox's 20 labelled photos (what CI
// has; served as the server's sample set with --samples-dir) the view's top-1 / top-5 counts are
// `inferscope eval`'s on the same photos (the real CLI, run here), the gallery lists exactly the photos
// where a variant's top-1 differs from the baseline's (from eval's own predictions), the filter keeps
// one variant's, and a click opens the photo in the main view. Photos the user chooses run too; one
// that cannot be decoded is listed as not run, the others answer.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ARTIFACTS, BIN, MODELS, PHOTOS, binEnv, launchBrowser, openApp, requireBuilt, startServer } from './harness.mjs';

const BASELINE = 'resnet50-baseline';
let server;
let browser;
let dir;
let eval_;

before(async () => {
  requireBuilt();
  // The server's sample set: foolbox's photos in a folder of their own (never in the repository).
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferscope-labelled-'));
  for (const name of fs.readdirSync(PHOTOS).filter((n) => n.endsWith('.jpg'))) {
    fs.copyFileSync(path.join(PHOTOS, name), path.join(dir, name));
  }
  // The reference: the real CLI on the same photos, every variant whose file exists.
  const out = execFileSync(BIN, ['eval', '--images', dir, '--models-dir', MODELS, '--json'], {
    env: binEnv(),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 16 << 20,
  });
  eval_ = JSON.parse(out);
  server = await startServer({ args: ['--samples-dir', dir] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The expected gallery from eval's predictions: photo name → variants whose top-1 differs. */
function expectedDisagreements(names) {
  const base = eval_.results.find((r) => r.variant === BASELINE);
  const out = {};
  names.forEach((name, i) => {
    const differing = eval_.results
      .filter((r) => r.variant !== BASELINE && r.predictions[i] !== base.predictions[i])
      .map((r) => r.variant);
    if (differing.length) out[name] = differing.sort().join(' ');
  });
  return out;
}

async function gallery(page) {
  return page.locator('li.disagreement').evaluateAll((items) =>
    Object.fromEntries(items.map((li) => [li.dataset.photo, li.dataset.variants.split(' ').sort().join(' ')])),
  );
}

test("the view's top-1 counts are inferscope eval's, and the gallery lists exactly the disagreements", async () => {
  const names = fs.readdirSync(dir).filter((n) => n.endsWith('.jpg')).sort();
  const { page, errors } = await openApp(browser, server.url);
  const run = page.locator('#set-run-samples');
  await page.waitForFunction(() => !document.querySelector('#set-run-samples').disabled);
  assert.match(await run.textContent(), new RegExp(`${names.length} sample photos`));
  await run.click();
  await page.waitForSelector('.labelled-set[data-state="done"], .labelled-set[data-state="failed"]', { timeout: 600_000 });
  assert.equal(await page.getAttribute('.labelled-set', 'data-state'), 'done', await page.textContent('.set-progress'));
  await page.screenshot({ path: path.join(ARTIFACTS, 'labelled-set.png'), fullPage: true });

  const rows = await page.locator('tr.set-variant').evaluateAll((trs) =>
    Object.fromEntries(trs.map((tr) => [tr.dataset.variant, { ...tr.dataset }])),
  );
  assert.deepEqual(Object.keys(rows).sort(), eval_.results.map((r) => r.variant).sort(), 'the same variants ran');
  for (const r of eval_.results) {
    const row = rows[r.variant];
    assert.equal(Number(row.answered), names.length, `${r.variant} answered every photo`);
    assert.equal(Number(row.labelled), r.images, r.variant);
    assert.equal(Number(row.top1), r.top1_correct, `${r.variant}: top-1 count against eval`);
    assert.equal(Number(row.top5), Math.round(r.top5 * r.images), `${r.variant}: top-5 count against eval`);
  }
  // One point per variant on the chart.
  assert.equal(await page.locator('.set-chart g.point').count(), eval_.results.length);

  const expected = expectedDisagreements(names);
  if (eval_.results.length < 2) {
    console.log(`# only ${eval_.results.map((r) => r.variant)} is built: no variant can disagree; the gallery must not show`);
    assert.equal(await page.locator('.gallery').count(), 0);
  } else {
    console.log(`# ${Object.keys(expected).length} of ${names.length} photos with a disagreement: ${JSON.stringify(expected)}`);
    assert.deepEqual(await gallery(page), expected);
    // Filtered by one variant: exactly the photos where that one disagrees.
    for (const r of eval_.results.filter((r) => r.variant !== BASELINE)) {
      await page.selectOption('#set-filter', r.variant);
      const want = Object.keys(expected).filter((n) => expected[n].split(' ').includes(r.variant)).sort();
      assert.deepEqual(Object.keys(await gallery(page)).sort(), want, `filtered by ${r.variant}`);
    }
    await page.selectOption('#set-filter', '');
    const first = Object.keys(expected).sort()[0];
    if (first) {
      // Each entry shows the crop, the label and the baseline's answer; a click opens it above.
      const item = page.locator(`li.disagreement[data-photo="${first}"]`);
      assert.match(await item.locator('img').getAttribute('src'), /^data:image\/jpeg;base64,/);
      assert.match(await item.locator('.label').textContent(), /^label: /);
      assert.match(await item.locator('.baseline').textContent(), /^Baseline: /);
      await item.locator('button').click();
      await page.waitForSelector('.summary[data-phase="done"]', { timeout: 120_000 });
      assert.equal((await page.textContent('.file-name')).trim(), first);
    }
  }
  assert.deepEqual(errors, []);
  await page.close();
});

test('photos the user chooses run too; one that cannot be decoded is listed, the others answer', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'inferscope-chosen-'));
  const chosen = ['imagenet_00_243.jpg', 'imagenet_14_129.jpg', 'imagenet_16_251.jpg'].map((n) => path.join(dir, n));
  const broken = path.join(tmp, 'imagenet_99_1.jpg');
  fs.writeFileSync(broken, Buffer.from('not a photo at all'));
  const { page, errors } = await openApp(browser, server.url);
  await page.setInputFiles('#set-files', [...chosen, broken]);
  await page.waitForSelector('.labelled-set[data-state="done"], .labelled-set[data-state="failed"]', { timeout: 300_000 });
  assert.equal(await page.getAttribute('.labelled-set', 'data-state'), 'done', await page.textContent('.set-progress'));
  const baseline = page.locator(`tr.set-variant[data-variant="${BASELINE}"]`);
  assert.equal(await baseline.getAttribute('data-answered'), '3');
  assert.equal(await baseline.getAttribute('data-labelled'), '3');
  const skipped = await page.textContent('.set-skipped');
  assert.match(skipped, /1 not run/);
  assert.match(skipped, /imagenet_99_1\.jpg: cannot be classified/);
  assert.match(await page.textContent('.set-progress .status'), /4 of 4 photos, 4 photos you chose \(4 labelled/);
  fs.rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(errors, []);
  await page.close();
});
