// A Chromium page driven the way a person's browser runs: over DevTools' pipe with only the Runtime
// domain in use (scripts evaluated in the page), no Network, Page or Fetch instrumentation.
//
// Why not Playwright for timings: Playwright enables the Network domain on every page it drives, so
// Chromium reports each request to it, a POST's body included (the 150 KB upload, base64 in a protocol
// message), and the node process handles those events on the same cores while the server works. On this
// 2-core machine that added ~9 ms to everything-but-inference per classification (2026-12-01: encoding
// +2.3, fetch +1.6, decoding +1.8 ms; the same page, interleaved) — work a visitor's browser never does.
// `./x bench-page` and the each-alone test time the page here; Playwright drives everything else.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Opens `url` in a fresh headless Chromium and waits until the page is hydrated. Returns
 * `{ evaluate(fn, arg), reduceMotion(), close() }`: `evaluate` runs `fn(arg)` in the page (awaiting a
 * promise) and returns its JSON value; `reduceMotion` makes the page see `prefers-reduced-motion`.
 */
export async function openPlainPage(url, { timeoutMs = 60_000 } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'inferscope-plain-'));
  const chrome = spawn(
    process.env.CHROMIUM || '/usr/bin/chromium',
    [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--window-size=1280,900',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--remote-debugging-pipe',
      `--user-data-dir=${profile}`,
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  chrome.stdio[2].on('data', (d) => {
    stderr = (stderr + d).slice(-2000);
  });
  const exited = new Promise((resolve) => chrome.once('exit', resolve));
  // The protocol over the pipe: JSON messages, each ended by a NUL byte (fd 3 in, fd 4 out).
  const pending = new Map();
  let nextId = 0;
  let buffer = '';
  chrome.stdio[4].on('data', (chunk) => {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf('\0')) >= 0) {
      const msg = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      const waiter = pending.get(msg.id);
      if (waiter) {
        pending.delete(msg.id);
        if (msg.error) waiter.reject(new Error(`${waiter.method}: ${msg.error.message}`));
        else waiter.resolve(msg.result);
      }
    }
  });
  const send = (method, params = {}, sessionId) =>
    new Promise((resolve, reject) => {
      const id = ++nextId;
      pending.set(id, { resolve, reject, method });
      chrome.stdio[3].write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    });
  const close = async () => {
    await send('Browser.close').catch(() => {});
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
    if (chrome.exitCode === null) chrome.kill('SIGKILL');
    fs.rmSync(profile, { recursive: true, force: true });
  };
  try {
    const { targetId } = await send('Target.createTarget', { url });
    const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
    const evaluate = async (fn, arg) => {
      const expression = typeof fn === 'string' ? fn : `(${fn})(${JSON.stringify(arg ?? null)})`;
      const r = await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId);
      if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
      return r.result.value;
    };
    const t0 = Date.now();
    while (!(await evaluate(() => document.querySelector('main')?.dataset.hydrated === 'true').catch(() => false))) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`${url} was not hydrated within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Emulation only changes what CSS media queries see (no instrumentation).
    const reduceMotion = () => send('Emulation.setEmulatedMedia', { features: [{ name: 'prefers-reduced-motion', value: 'reduce' }] }, sessionId);
    return { evaluate, reduceMotion, close };
  } catch (e) {
    await close();
    throw new Error(`plain Chromium: ${e.message}; stderr: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
  }
}

/**
 * In the page: clicks `selector` and resolves once the run summary says done or failed, watched by a
 * MutationObserver (nothing polls while the server works), to `{ doneAt, paintedAt }`:
 * `performance.now()` then and at the next frame after it. Pass to `evaluate`.
 */
export async function clickAndAwaitSummary(selector) {
  const summary = document.querySelector('.summary');
  const done = new Promise((resolve) => {
    const obs = new MutationObserver(() => {
      if (summary.dataset.phase === 'done' || summary.dataset.phase === 'failed') {
        obs.disconnect();
        resolve(performance.now());
      }
    });
    obs.observe(summary, { attributes: true, attributeFilter: ['data-phase'] });
  });
  document.querySelector(selector).click();
  const doneAt = await done;
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return { doneAt, paintedAt: performance.now() };
}
