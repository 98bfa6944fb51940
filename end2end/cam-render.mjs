// The page's rendering time with the class activation maps shown or not, A/B in one page (docs/page.md,
// "Drawing cost"): a sample photo clicked in interleaved rounds of 4 (first of each round discarded);
// rendering = the classify call's end mark → the run summary says done. Env as for bench.mjs.
import { launchBrowser, openApp, startServer } from './harness.mjs';
const server = await startServer();
const browser = await launchBrowser();
const { page } = await openApp(browser, server.url);
const button = page.locator('button.sample').first();
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const out = { on: [], off: [] };
for (let round = 0; round < 6; round++) {
  for (const cam of round % 2 ? ['off', 'on'] : ['on', 'off']) {
    if (cam === 'on') await page.check('input[name="cam-show"]'); else await page.uncheck('input[name="cam-show"]');
    for (let i = 0; i < 4; i++) {
      await page.evaluate(() => {
        performance.clearMarks();
        window.__done = new Promise((resolve) => {
          const summary = document.querySelector('.summary');
          const obs = new MutationObserver(() => {
            if (summary.dataset.phase === 'done' || summary.dataset.phase === 'failed') { obs.disconnect(); resolve(performance.now()); }
          });
          obs.observe(summary, { attributes: true, attributeFilter: ['data-phase'] });
        });
      });
      await button.click();
      const r = await page.evaluate(async () => {
        const done = await window.__done;
        const end = performance.getEntriesByName('inferscope:classify:end', 'mark').pop()?.startTime;
        return { render: done - end, maps: document.querySelectorAll('figure.cam').length };
      });
      if (i > 0) out[cam].push(r.render);
      if (i === 1) console.log(cam, 'maps in DOM', r.maps);
    }
  }
}
console.log('render ms median: cam on', med(out.on).toFixed(1), 'off', med(out.off).toFixed(1), 'n', out.on.length, out.off.length);
console.log(JSON.stringify(out));
await browser.close(); await server.stop();
