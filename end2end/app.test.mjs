// The app in a real browser: Debian's Chromium driven by playwright-core, against the release server
// with the real models. Run with `node --test end2end/` (./x test does); screenshots go to
// end2end/artifacts/.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { ARTIFACTS, PHOTOS, classNames, openApp, photo, useServerAndBrowser } from './harness.mjs';

const suite = useServerAndBrowser(before, after);

/** Uploads a file through the page's file input and waits for the run to end. */
async function upload(page, file) {
  await page.setInputFiles('#photo', file);
  await page.waitForSelector('.summary[data-phase="done"], .summary[data-phase="failed"]', { timeout: 120_000 });
  return page.getAttribute('.summary', 'data-phase');
}

// foolbox labels these photos; the reference ResNet50 conversion gets both right (ENV.md: 19/20).
for (const name of ['imagenet_00_243.jpg', 'imagenet_01_559.jpg']) {
  test(`a photo shows its labelled class as the baseline's top-1 (${name})`, async () => {
    const { path: file, label } = photo(name);
    const expected = classNames()[label];
    const { page, errors } = await openApp(suite.browser(), suite.server().url);
    assert.equal(await upload(page, file), 'done', await page.textContent('.summary'));

    const top1 = page.locator('[data-variant="resnet50-baseline"] .top5 li.top1');
    assert.equal(await top1.getAttribute('data-class'), String(label));
    assert.equal((await top1.locator('.name').textContent()).trim(), expected);
    // Five classes with probabilities, and the server-measured inference time.
    assert.equal(await page.locator('[data-variant="resnet50-baseline"] .top5 li').count(), 5);
    assert.match(await page.textContent('[data-variant="resnet50-baseline"] .inference-ms'), /^\d+\.\d\s?ms$/);
    // Every card of a variant that exists on disk answered.
    const ready = await page.locator('.card:not(.unavailable)').count();
    assert.equal(await page.locator('.card .top5').count(), ready);

    const preprocessMs = parseFloat(await page.textContent('#preprocess-ms'));
    const roundTripMs = parseFloat(await page.textContent('#round-trip-ms'));
    assert.ok(preprocessMs > 0 && roundTripMs > 0);
    console.log(`# ${name}: ${expected}; browser preprocessing ${preprocessMs} ms, round trip ${roundTripMs} ms (${ready} variants)`);
    await page.screenshot({ path: path.join(ARTIFACTS, `photo-${label}.png`), fullPage: true });
    assert.deepEqual(errors, []);
    await page.close();
  });
}

test('a text file named .jpg gives a clear message and the server stays up', async () => {
  const fake = path.join(ARTIFACTS, 'not-a-photo.jpg');
  fs.writeFileSync(fake, 'This is a text file, renamed to .jpg.\n'.repeat(40));
  const { page } = await openApp(suite.browser(), suite.server().url);
  assert.equal(await upload(page, fake), 'failed');
  const message = await page.textContent('.summary .error');
  assert.match(message, /not-a-photo\.jpg cannot be classified: not a supported image/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'not-an-image.png'), fullPage: true });

  // The server did not go down, and the same page still classifies a real photo.
  const health = await fetch(`${suite.server().url}/healthz`);
  assert.equal(health.status, 200);
  assert.equal((await health.json()).status, 'ok');
  assert.equal(await upload(page, photo('imagenet_00_243.jpg').path), 'done');
  await page.close();
});

test("the browser's WASM preprocessing matches the server's native build (max abs ≤ 1e-4)", async () => {
  const { page } = await openApp(suite.browser(), suite.server().url);
  const names = fs.readdirSync(PHOTOS).filter((n) => n.endsWith('.jpg')).sort().slice(0, 6);
  for (const name of names) {
    const b64 = fs.readFileSync(photo(name).path).toString('base64');
    const r = await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const t0 = performance.now();
      const wasm = window.__inferscope.preprocess(bytes);
      const ms = performance.now() - t0;
      const res = await fetch('/api/preprocess', { method: 'POST', body: bytes });
      if (!res.ok) return { error: `${res.status} ${await res.text()}` };
      const native = new Float32Array(await res.arrayBuffer());
      let maxAbs = 0;
      for (let i = 0; i < native.length; i++) maxAbs = Math.max(maxAbs, Math.abs(native[i] - wasm[i]));
      return { wasmLen: wasm.length, nativeLen: native.length, maxAbs, ms, anyNaN: wasm.some(Number.isNaN) };
    }, b64);
    assert.equal(r.error, undefined, r.error);
    assert.equal(r.wasmLen, 3 * 224 * 224);
    assert.equal(r.nativeLen, 3 * 224 * 224);
    assert.equal(r.anyNaN, false);
    assert.ok(r.maxAbs <= 1e-4, `${name}: max abs difference ${r.maxAbs}`);
    console.log(`# parity ${name}: max abs ${r.maxAbs.toExponential(2)}, WASM preprocessing ${r.ms.toFixed(1)} ms`);
  }
  await page.close();
});
