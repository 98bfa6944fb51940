// Where the each-alone gap comes from (issue 14): the page's each-alone request replayed over HTTP
// by node (no browser), back to back and with pauses, against the server's own alone timing.
//   node end2end/alone-gap.mjs   (env as for bench.mjs; GAP_REQUESTS, GAP_PAUSE_MS)
import os from 'node:os';

import { clickAndWaitQuietly, launchBrowser, openApp, requireBuilt, startServer } from './harness.mjs';

const requests = Number(process.env.GAP_REQUESTS || 10);
const pauseMs = Number(process.env.GAP_PAUSE_MS || 1000);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

requireBuilt();
const server = await startServer({ args: (process.env.GAP_SERVER_ARGS || '').split(' ').filter(Boolean) });
const browser = await launchBrowser();
const { page } = await openApp(browser, server.url);
await page.emulateMedia({ reducedMotion: 'reduce' });
await page.check('input[name="timing-mode"][value="alone"]');
const bodies = [];
page.on('request', (r) => {
  if (r.method() === 'POST' && new URL(r.url()).pathname === '/api/classify') bodies.push(r.postDataBuffer());
});
const done = '.summary[data-phase="done"], .summary[data-phase="failed"]';
// One photo through the page (a sample click), each alone: each card's inference.
// GAP_WAIT=poll: Playwright's waitForSelector (as the e2e tests did); else a MutationObserver in the
// page (nothing runs in the browser while the server works, as with a person at the screen).
const viaPage = async () => {
  if (process.env.GAP_WAIT === 'poll') {
    await page.locator('button.sample').first().click();
    await page.waitForSelector('.summary[data-phase="busy"]', { timeout: 30_000 }).catch(() => {});
    await page.waitForSelector(done, { timeout: 120_000 });
  } else {
    await clickAndWaitQuietly(page, 'button.sample');
  }
  return page.locator('.card:not(.unavailable)').evaluateAll((cards) =>
    Object.fromEntries(cards.map((c) => [c.dataset.variant, parseFloat(c.querySelector('.inference-ms')?.textContent ?? 'NaN')])),
  );
};
await viaPage(); // warm-up; its request body is replayed below
const body = bodies[0];
const classify = async () => {
  const res = await fetch(`${server.url}/api/classify`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', accept: 'application/json' }, body });
  if (!res.ok) throw new Error(`classify: ${res.status} ${await res.text()}`);
  const r = await res.json();
  return Object.fromEntries(r.outcomes.filter((o) => o.result.Ok).map((o) => [o.id, o.result.Ok.inference_us / 1000]));
};
const alone = async (id, runs) => {
  const res = await fetch(`${server.url}/api/time_alone`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `id=${id}&runs=${runs}` });
  if (!res.ok) throw new Error(`time_alone: ${res.status} ${await res.text()}`);
  return (await res.json()).runs_us.map((u) => u / 1000);
};
const load0 = os.loadavg()[0];
const ids = Object.keys(await classify());
const rows = Object.fromEntries(ids.map((id) => [id, { page: [], http: [], http_paused: [], alone: [] }]));
// Rounds, so that every way of asking sees the same load on a shared machine.
for (let i = 0; i < requests; i++) {
  for (const [id, ms] of Object.entries(await viaPage())) rows[id]?.page.push(ms);
  for (const [id, ms] of Object.entries(await classify())) rows[id].http.push(ms);
  await sleep(pauseMs);
  for (const [id, ms] of Object.entries(await classify())) rows[id].http_paused.push(ms);
  for (const id of ids) rows[id].alone.push(...(await alone(id, 3)));
}
await browser.close();
console.log(`load ${load0.toFixed(1)} → ${os.loadavg()[0].toFixed(1)}; ${requests} rounds; pause ${pauseMs} ms`);
console.log('| variant | page (Chromium) | HTTP from node, back to back | HTTP from node, after a pause | server alone (3 per round) | ratios to alone |');
console.log('|---|---|---|---|---|---|');
for (const id of ids) {
  const [p, b, q, s] = ['page', 'http', 'http_paused', 'alone'].map((k) => median(rows[id][k]));
  console.log(`| ${id} | ${p.toFixed(1)} | ${b.toFixed(1)} | ${q.toFixed(1)} | ${s.toFixed(1)} | ${(p / s).toFixed(2)}× / ${(b / s).toFixed(2)}× / ${(q / s).toFixed(2)}× |`);
}
await server.stop();
