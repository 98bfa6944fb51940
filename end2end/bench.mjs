// Browser benchmark (`./x bench-page`): what the page costs besides inference, in headless Chromium
// against the release server. Prints a Markdown table and writes end2end/artifacts/bench-page.json.
//
// 1. WASM preprocessing as the page runs it (decode + EXIF + resize + crop to the 224×224 bytes it
//    uploads: `window.__inferscope.pixels`) of a 1-megapixel (1280×800) and a 12-megapixel (4000×3000)
//    JPEG, median of several runs. The JPEGs are made by Chromium's own encoder (canvas.toBlob,
//    quality 0.9) from one of foolbox's photos, scaled up.
// 2. Per classification through the page (sample photo clicks), in each timing mode (each alone, all
//    at once), in a Chromium driven as a visitor's browser runs (plain-browser.mjs: no automation
//    instrumentation): the transport (the browser's round trip minus the server's time), split with
//    the request's Resource Timing between the page's User Timing marks around the call (encoding in
//    WASM, the fetch, decoding the answer); the server's time that is not inference; rendering (from
//    the call's return to the answers in the DOM) and painting (to the next frame); medians. The
//    upload's size, and the each-alone figures through Playwright for comparison (its instrumentation
//    reports every request to the driving process).
// 3. Each variant's inference each alone against the server's own measurement of it alone in the same
//    run (`/api/time_alone`) and against `./x bench`'s figure in models/report.json; and the page's
//    each-alone request replayed from node (no browser working on the same cores).
//
// The machine's load average is recorded: on a shared, loaded machine the table says so.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ARTIFACTS, launchBrowser, MODELS, openApp, photo, requireBuilt, SITE, startServer } from './harness.mjs';
import { clickAndAwaitSummary, openPlainPage } from './plain-browser.mjs';

const runs1 = Number(process.env.BENCH_RUNS_1MP || 15);
const runs12 = Number(process.env.BENCH_RUNS_12MP || 5);
const requests = Number(process.env.BENCH_REQUESTS || 20);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * One sample-photo click through the page (`evaluate` runs a function in it), and where its time went.
 * The transport is split with the request's Resource Timing between the page's User Timing marks
 * around the call (encoding in WASM, the fetch, decoding the answer); rendering runs from the call's
 * return to the answers in the DOM (the run summary says done), painting from there to the next frame.
 */
async function measureClassification(evaluate) {
  await evaluate(() => {
    performance.clearResourceTimings();
    performance.clearMarks();
  });
  const at = await evaluate(clickAndAwaitSummary, 'button.sample');
  return evaluate(({ doneAt, paintedAt }) => {
    const summary = document.querySelector('.summary');
    const entry = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/classify')).pop();
    const mark = (name) => performance.getEntriesByName(name, 'mark').pop()?.startTime ?? NaN;
    const [start, end] = [mark('inferscope:classify:start'), mark('inferscope:classify:end')];
    const num = (el, sel) => parseFloat(el.querySelector(sel)?.textContent ?? 'NaN');
    const variants = [...document.querySelectorAll('.card:not(.unavailable)')].map((c) => ({
      id: c.dataset.variant,
      queue: num(c, '.queue-ms'),
      inference: num(c, '.inference-ms'),
    }));
    return {
      phase: summary.dataset.phase,
      round_trip: num(document, '#round-trip-ms'),
      server: num(document, '#server-ms'),
      variants,
      encode: entry.fetchStart - start,
      wire: entry.responseEnd - entry.fetchStart,
      decode: end - entry.responseEnd,
      render: doneAt - end,
      paint: paintedAt - doneAt,
    };
  }, at);
}

/** Medians of a mode's samples and the derived figures. */
function summarize(samples, mode) {
  const med = (f) => median(samples.map(f));
  const inferenceSum = (s) => s.variants.reduce((t, v) => t + v.inference, 0);
  const slowest = (s) => Math.max(...s.variants.map((v) => v.queue + v.inference));
  const r = {
    requests: samples.length,
    variants: samples[0].variants.length,
    round_trip_ms: med((s) => s.round_trip),
    server_ms: med((s) => s.server),
    transport_ms: med((s) => s.round_trip - s.server),
    encode_ms: med((s) => s.encode),
    // The fetch from its start to the response's last byte, the server's own time taken out: the
    // HTTP exchange on loopback, the body's read and bitcode decode, the answer's encoding.
    fetch_minus_server_ms: med((s) => s.wire - s.server),
    decode_ms: med((s) => s.decode),
    render_ms: med((s) => s.render),
    // From the answers in the DOM to the next frame: style, layout and paint of what changed.
    paint_ms: med((s) => s.paint),
    // Inside the server, what is not a variant's inference: each alone, the variants' queue waits
    // (hand-offs and the wait for the engine) and the fan-out; all at once, the time beyond the
    // slowest variant's queue wait + inference.
    server_not_inference_ms: mode === 'alone' ? med((s) => s.server - inferenceSum(s)) : med((s) => s.server - slowest(s)),
    inference_ms: Object.fromEntries(samples[0].variants.map((v, i) => [v.id, median(samples.map((s) => s.variants[i].inference))])),
    queue_ms: Object.fromEntries(samples[0].variants.map((v, i) => [v.id, median(samples.map((s) => s.variants[i].queue))])),
  };
  r.not_inference_ms = r.transport_ms + r.server_not_inference_ms + r.render_ms;
  return r;
}

requireBuilt();
const server = await startServer();
const browser = await launchBrowser();
const result = {
  date: new Date().toISOString(),
  chromium: browser.version(),
  machine: `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores`,
  // The machine's load when the benchmark starts and ends (1-minute average): above the core count,
  // other work shared the cores and the figures are labelled so.
  load_before: os.loadavg()[0],
  wasm_bytes: fs.statSync(path.join(SITE, 'pkg', 'inferscope_bg.wasm')).size,
};
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
        window.__inferscope.pixels(bytes); // warm-up
        const ms = [];
        for (let i = 0; i < runs; i++) {
          const t0 = performance.now();
          window.__inferscope.pixels(bytes);
          ms.push(performance.now() - t0);
        }
        out[name] = { width: w, height: h, jpeg_bytes: bytes.length, runs, ms };
      }
      return out;
    },
    { b64, runs1, runs12 },
  );
  for (const v of Object.values(result.preprocess)) v.median_ms = median(v.ms);

  // The upload as Chromium sends it (Playwright sees the request's body), and the each-alone body
  // replayed from node below.
  const bodies = [];
  page.on('request', (r) => {
    if (r.method() !== 'POST' || new URL(r.url()).pathname !== '/api/classify') return;
    bodies.push(r.postDataBuffer());
  });
  await page.check('input[name="timing-mode"][value="alone"]');
  const classifications = async (drive, n) => {
    const samples = [];
    for (let i = 0; i < n + 1; i++) {
      const m = await measureClassification(drive);
      if (m.phase !== 'done') throw new Error(`classification ${i} failed`);
      if (i > 0) samples.push(m); // the first one warms up
    }
    return samples;
  };
  // What Playwright's instrumentation adds (it reports every request, the upload's body included, to
  // the driving process): the same each-alone clicks, for comparison only.
  result.instrumented_alone = summarize(await classifications((fn, arg) => page.evaluate(fn, arg), Math.max(3, Math.floor(requests / 2))), 'alone');
  const aloneBody = bodies.find(Boolean) ?? null;

  // Classifications through the page as a visitor's browser runs it (plain-browser.mjs: no automation
  // instrumentation), in each timing mode.
  const plain = await openPlainPage(server.url);
  result.modes = {};
  try {
    for (const mode of ['alone', 'all-at-once']) {
      await plain.evaluate((mode) => document.querySelector(`input[name="timing-mode"][value="${mode}"]`).click(), mode);
      result.modes[mode] = summarize(await classifications((fn, arg) => plain.evaluate(fn, arg), requests), mode);
    }
  } finally {
    await plain.close();
  }
  result.upload_bytes = median(bodies.map((b) => b?.length ?? NaN));

  // The same each-alone request sent by node instead of the page (the browser idle): what the
  // browser itself adds to the each-alone figures when it shares the server's cores.
  result.alone_http = {};
  if (aloneBody) {
    const per = {};
    for (let i = 0; i < requests; i++) {
      const res = await fetch(`${server.url}/api/classify`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, body: aloneBody });
      if (!res.ok) throw new Error(`classify from node: ${res.status} ${await res.text()}`);
      for (const o of (await res.json()).outcomes) if (o.result.Ok) (per[o.id] ??= []).push(o.result.Ok.inference_us / 1000);
    }
    for (const [id, ms] of Object.entries(per)) result.alone_http[id] = median(ms);
  }

  // The server's own figure for each variant, alone, in the same run; and build-variants' (`./x bench`)
  // from models/report.json, when it exists.
  const ids = Object.keys(result.modes.alone.inference_ms);
  result.alone_reference = {};
  for (const id of ids) {
    const t = await page.evaluate(async (id) => {
      const res = await fetch('/api/time_alone', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `id=${id}&runs=20` });
      return res.ok ? res.json() : null;
    }, id);
    result.alone_reference[id] = { server_alone_ms: t ? t.median_us / 1000 : NaN };
  }
  const report = path.join(MODELS, 'report.json');
  if (fs.existsSync(report)) {
    for (const v of JSON.parse(fs.readFileSync(report, 'utf8')).variants) {
      if (result.alone_reference[v.id] && v.speed) result.alone_reference[v.id].bench_ms = v.speed.rust_ms_b1;
    }
  }
  await page.close();
} finally {
  await browser.close();
  await server.stop();
}

result.load_after = os.loadavg()[0];
fs.mkdirSync(ARTIFACTS, { recursive: true });
fs.writeFileSync(path.join(ARTIFACTS, 'bench-page.json'), JSON.stringify(result, null, 2));
const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const [a, c, ins] = [result.modes.alone, result.modes['all-at-once'], result.instrumented_alone];
const loaded = Math.max(result.load_before, result.load_after) > os.cpus().length;
const refs = Object.entries(result.alone_reference)
  .map(([id, r]) => {
    const mine = a.inference_ms[id];
    const vs = (x) => (Number.isFinite(x) ? `${f(x)} ms (${(mine / x).toFixed(2)}×)` : '–');
    const http = result.alone_http[id];
    const httpVs = (x) => (Number.isFinite(http) && Number.isFinite(x) ? ` (${(http / x).toFixed(2)}×)` : '');
    return `| ${id} | ${f(mine)} ms | ${f(http)} ms${httpVs(r.server_alone_ms)} | ${vs(r.server_alone_ms)} | ${vs(r.bench_ms)} | ${f(c.inference_ms[id])} ms |`;
  })
  .join('\n');
console.log(`
${result.date.slice(0, 10)}, ${result.machine}, headless Chromium ${result.chromium}; load average ${result.load_before.toFixed(1)} → ${result.load_after.toFixed(1)}${loaded ? ' (a shared, loaded machine)' : ''}

| what | median | goal |
|---|---|---|
| WASM preprocessing, 1280×800 JPEG (${result.preprocess['1MP'].jpeg_bytes} B), ${result.preprocess['1MP'].runs} runs | ${f(result.preprocess['1MP'].median_ms)} ms | ≤ 25 ms |
| WASM preprocessing, 4000×3000 JPEG (${result.preprocess['12MP'].jpeg_bytes} B), ${result.preprocess['12MP'].runs} runs | ${f(result.preprocess['12MP'].median_ms)} ms | ≤ 250 ms |
| upload (bitcode body) | ${result.upload_bytes} B | ~150 KB |
| **each alone**, ${a.requests} requests, ${a.variants} variants: transport (round trip − server) | ${f(a.transport_ms)} ms | |
| … of which encoding in WASM (call → fetch start) | ${f(a.encode_ms)} ms | |
| … of which the fetch minus the server's time (HTTP, body read + decode, answer encode) | ${f(a.fetch_minus_server_ms)} ms | |
| … of which decoding the answer (response end → call returns) | ${f(a.decode_ms)} ms | |
| server time that is not inference (queue waits, hand-offs) | ${f(a.server_not_inference_ms)} ms | |
| rendering (call returns → answers in the DOM) | ${f(a.render_ms)} ms | |
| painting them (answers in the DOM → next frame; not in the sum below) | ${f(a.paint_ms)} ms | |
| **everything but inference** (transport + server's non-inference + rendering) | **${f(a.not_inference_ms)} ms** | ≤ 10 ms |
| round trip, for scale; server time | ${f(a.round_trip_ms)} ms; ${f(a.server_ms)} ms | |
| **all at once**: transport; fan-out beyond the slowest variant; rendering | ${f(c.transport_ms)}; ${f(c.server_not_inference_ms)}; ${f(c.render_ms)} ms | |
| all at once: everything but inference; round trip | ${f(c.not_inference_ms)} ms; ${f(c.round_trip_ms)} ms | |
| each alone through Playwright (instrumented), for comparison: encoding; fetch − server; decoding; everything but inference | ${f(ins.encode_ms)}; ${f(ins.fetch_minus_server_ms)}; ${f(ins.decode_ms)}; ${f(ins.not_inference_ms)} ms | |
| WASM bundle after wasm-opt | ${(result.wasm_bytes / 1e6).toFixed(2)} MB | ≤ 2.0 MB |

| variant | inference each alone (page, median) | each alone, the same request from node (no browser) | server alone now (20 runs) | \`./x bench\` (report.json) | all at once (page) |
|---|---|---|---|---|---|
${refs}
`);
