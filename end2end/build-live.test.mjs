// The page is up first (issue 16, item 5): a server started on a models folder with only the baseline
// answers at once, while the real `inferscope build-variants` builds a variant beside it. The card of
// the variant being built shows the build's step, the times measured meanwhile say they shared the
// machine with the build, and when the file is written the server loads it without a restart
// (`--model-control poll`): the card comes alive in the same open page and answers, and KServe says
// the model is ready.
//
// The build is the real builder on a small setting (`--only int8 --quick`, a few of foolbox's photos,
// no benchmark), so this runs on CI's machine too; its accuracy is not what is tested here.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { BIN, MODELS, PHOTOS, binEnv, launchBrowser, openApp, photo, requireBuilt, startServer } from './harness.mjs';

const VARIANT = 'resnet50-int8';
let dir;
let server;
let browser;
let build;
let buildLog = '';

before(async () => {
  requireBuilt();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'inferscope-build-live-'));
  for (const f of ['resnet50-baseline.onnx', 'labels.json']) fs.symlinkSync(path.join(MODELS, f), path.join(dir, f));
  server = await startServer({ models: dir, args: ['--model-control', 'poll', '--repository-poll-secs', '0.5'] });
  browser = await launchBrowser();
});

after(async () => {
  build?.kill('SIGTERM');
  await browser?.close();
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('the page serves the baseline at once, shows the build, and picks up the variant when it is written', async () => {
  // The real builder, in the background, into the server's folder.
  build = spawn(BIN, ['build-variants', '--models-dir', dir, '--calib', PHOTOS, '--only', 'int8', '--quick',
    '--calib-limit', '8', '--eval-limit', '4', '--no-bench'], { env: binEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  build.stdout.on('data', (c) => { buildLog += c; });
  build.stderr.on('data', (c) => { buildLog += c; });
  const built = new Promise((resolve) => build.on('exit', resolve));
  const status = path.join(dir, 'build-status.json');
  for (let i = 0; !fs.existsSync(status); i++) {
    assert.ok(i < 600, `no build-status.json after 60 s:\n${buildLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  const { page, errors } = await openApp(browser, server.url);
  const card = page.locator(`[data-variant="${VARIANT}"]`);
  // While it builds: the card says so, with the step; the baseline answers, under a contention label.
  await card.locator('.building[data-running="true"]').waitFor({ timeout: 30_000 });
  const building = await card.textContent();
  assert.match(building, /being built on the server/, building);
  assert.match(building, /Queued|Building/, building);
  assert.match(await page.textContent('.variants-note'), /being built on the server now: .*INT8/i);

  const { path: file, label } = photo('imagenet_00_243.jpg');
  await page.setInputFiles('#photo', file);
  await page.waitForSelector('.summary[data-phase="done"]', { timeout: 180_000 });
  const base = page.locator('[data-variant="resnet50-baseline"]');
  assert.equal(await base.locator('.top5 li.top1').getAttribute('data-class'), String(label));
  if (fs.readFileSync(status, 'utf8').includes('"finished": null')) {
    // The server saw the build running when it answered (it may finish in between on a fast machine).
    assert.match(await page.textContent('.summary'), /Measured under contention: build-variants/);
  }

  // Written → loaded by the server → the same open page shows the card ready (it asks every 3 s).
  // A build that fails says so at once; a card that does not come alive within two minutes of the
  // build's end is reported with what the page and the server last said.
  const code = await built;
  assert.equal(code, 0, `build-variants failed:\n${buildLog}`);
  try {
    await card.locator('.ran-on').waitFor({ timeout: 120_000 });
  } catch (e) {
    const listed = await fetch(`${server.url}/api/variants`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })
      .then((r) => r.text()).catch((err) => String(err));
    assert.fail(`the card did not come alive 2 minutes after the build ended (${e.message.split('\n')[0]})\n`
      + `card: ${await card.textContent()}\n/api/variants: ${listed}\nserver log:\n${server.log()}`);
  }
  assert.equal(await card.evaluate((el) => el.classList.contains('unavailable')), false);
  const ready = await fetch(`${server.url}/v2/models/${VARIANT}/ready`);
  assert.equal(ready.status, 200, server.log());
  assert.match(server.log(), /model file changed: loading it/);

  // The new card answers the next photo, with the others.
  await page.setInputFiles('#photo', photo('imagenet_01_559.jpg').path);
  await card.locator('.top5 li.top1').waitFor({ timeout: 180_000 });
  assert.match(await card.locator('.top5 li.top1').getAttribute('data-class'), /^\d+$/);
  assert.deepEqual(errors, []);
});
