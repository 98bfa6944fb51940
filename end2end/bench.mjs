// Browser benchmark (`./x bench-page`): what the page costs besides inference, in headless Chromium
// against the release server. Prints a Markdown table and writes end2end/artifacts/bench-page.json.
//
// 1. WASM preprocessing (decode + EXIF + resize + crop + normalize) of a 1-megapixel (1280×800) and a
//    12-megapixel (4000×3000) JPEG, median of several runs. The JPEGs are made by Chromium's own encoder
//    (canvas.toBlob, quality 0.9) from one of foolbox's photos, scaled up.
// 2. Per classification through the page (sample photo clicks): transport (the browser's round trip
//    minus the server's time), fan-out (the server's time minus the slowest variant's queue + inference)
//    and rendering (from the response's last byte to the answers in the DOM), medians.

import fs from 'node:fs';
import path from 'node:path';

import { ARTIFACTS, launchBrowser, openApp, photo, requireBuilt, SITE, startServer } from './harness.mjs';

const runs1 = Number(process.env.BENCH_RUNS_1MP || 15);
const runs12 = Number(process.env.BENCH_RUNS_12MP || 5);
const requests = Number(process.env.BENCH_REQUESTS || 20);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

requireBuilt();
const server = await startServer();
const browser = await launchBrowser();
const result = { date: new Date().toISOString(), chromium: browser.version(), wasm_bytes: fs.statSync(path.join(SITE, 'pkg', 'inferscope_bg.wasm')).size };
try {
  const { page } = await openApp(browser, server.url);
  const b64 = fs.readFileSync(photo('imagenet_00_243.jpg').path).toString('base64');
  result.preprocess = await page.evaluate(
    async ({ b64, runs1, runs12 }) => {
      const src = new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/jpeg' });
      const bitmap = await createImageBitmap(src);
      const jpeg = async (w, h) => {
        const canvas = new OffscreenCanvas(w, h);
        canvas.getContext('2d').drawImage(bitmap, 0, 0, w, h);
        return new Uint8Array(await (await canvas.convertToBlob({ type: 'image/jpeg', quality: 0.9 })).arrayBuffer());
      };
      const out = {};
      for (const [name, w, h, runs] of [['1MP', 1280, 800, runs1], ['12MP', 4000, 3000, runs12]]) {
        const bytes = await jpeg(w, h);
        window.__inferscope.preprocess(bytes); // warm-up
        const ms = [];
        for (let i = 0; i < runs; i++) {
          const t0 = performance.now();
          window.__inferscope.preprocess(bytes);
          ms.push(performance.now() - t0);
        }
        out[name] = { width: w, height: h, jpeg_bytes: bytes.length, runs, ms };
      }
      return out;
    },
    { b64, runs1, runs12 },
  );
  for (const v of Object.values(result.preprocess)) v.median_ms = median(v.ms);

  // Classifications through the page.
  const samples = [];
  const button = page.locator('button.sample').first();
  for (let i = 0; i < requests + 1; i++) {
    await page.evaluate(() => {
      performance.clearResourceTimings();
      window.__benchDone = new Promise((resolve) => {
        const summary = document.querySelector('.summary');
        const obs = new MutationObserver(() => {
          if (summary.dataset.phase === 'done' || summary.dataset.phase === 'failed') {
            obs.disconnect();
            resolve(performance.now());
          }
        });
        obs.observe(summary, { attributes: true, attributeFilter: ['data-phase'] });
      });
    });
    await button.click();
    const m = await page.evaluate(async () => {
      const doneAt = await window.__benchDone;
      const entry = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/classify')).pop();
      const num = (sel) => parseFloat(document.querySelector(sel)?.textContent ?? 'NaN');
      const variants = [...document.querySelectorAll('.card:not(.unavailable)')].map((c) => num(`[data-variant="${c.dataset.variant}"] .queue-ms`) + num(`[data-variant="${c.dataset.variant}"] .inference-ms`));
      return {
        phase: document.querySelector('.summary').dataset.phase,
        round_trip: num('#round-trip-ms'),
        server: num('#server-ms'),
        slowest_variant: Math.max(...variants),
        variants: variants.length,
        render: entry ? doneAt - entry.responseEnd : NaN,
      };
    });
    if (m.phase !== 'done') throw new Error(`classification ${i} failed`);
    if (i > 0) samples.push(m); // the first one warms up
  }
  result.page = {
    requests: samples.length,
    variants: samples[0].variants,
    transport_ms: median(samples.map((s) => s.round_trip - s.server)),
    fan_out_ms: median(samples.map((s) => s.server - s.slowest_variant)),
    render_ms: median(samples.map((s) => s.render)),
    round_trip_ms: median(samples.map((s) => s.round_trip)),
    slowest_variant_ms: median(samples.map((s) => s.slowest_variant)),
  };
  result.page.not_inference_ms = result.page.transport_ms + result.page.fan_out_ms + result.page.render_ms;
  await page.close();
} finally {
  await browser.close();
  await server.stop();
}

fs.mkdirSync(ARTIFACTS, { recursive: true });
fs.writeFileSync(path.join(ARTIFACTS, 'bench-page.json'), JSON.stringify(result, null, 2));
const f = (x) => x.toFixed(1);
const p = result.page;
console.log(`
| what (headless Chromium ${result.chromium}, ${result.date.slice(0, 10)}) | median | goal |
|---|---|---|
| WASM preprocessing, 1280×800 JPEG (${result.preprocess['1MP'].jpeg_bytes} B), ${result.preprocess['1MP'].runs} runs | ${f(result.preprocess['1MP'].median_ms)} ms | ≤ 25 ms |
| WASM preprocessing, 4000×3000 JPEG (${result.preprocess['12MP'].jpeg_bytes} B), ${result.preprocess['12MP'].runs} runs | ${f(result.preprocess['12MP'].median_ms)} ms | ≤ 250 ms |
| transport (round trip − server time), ${p.requests} requests, ${p.variants} variants | ${f(p.transport_ms)} ms | |
| fan-out (server time − slowest variant's queue + inference) | ${f(p.fan_out_ms)} ms | |
| rendering (response's last byte → answers in the DOM) | ${f(p.render_ms)} ms | |
| **everything but inference** (sum of the three) | **${f(p.not_inference_ms)} ms** | ≤ 10 ms |
| (round trip, for scale; slowest variant's queue + inference) | ${f(p.round_trip_ms)} ms; ${f(p.slowest_variant_ms)} ms | |
| WASM bundle after wasm-opt | ${(result.wasm_bytes / 1e6).toFixed(2)} MB | ≤ 2 MB |
`);
