// Class activation maps in a real browser (issue 15, item 1): every ready card overlays its map on the
// photo, and the baseline's hottest cell lies on the object.
//
// The photo: foolbox's imagenet_14_129.jpg, two spoonbills perched on a wire against a plain grey sky.
// The birds are small (about a tenth of the 224×224 crop) and nothing else in the frame is an animal,
// so "on the object" is unambiguous and a map that looked elsewhere (sky, wire) fails. The cells of
// the 7×7 grid (32×32 pixels of the crop each; row, column from 0) that hold part of a bird, read off
// the crop with the grid drawn over it before any map was computed: the left bird's body, head and
// legs (2,2) (2,3) (3,2) (3,3), the right bird cut by the frame (2,6) (3,6).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { ARTIFACTS, openApp, photo, useServerAndBrowser } from './harness.mjs';

const suite = useServerAndBrowser(before, after);

const SPOONBILL = 'imagenet_14_129.jpg';
const BIRD_CELLS = ['2,2', '2,3', '3,2', '3,3', '2,6', '3,6'];

async function classify(page, file) {
  await page.setInputFiles('#photo', file);
  await page.waitForSelector('.summary[data-phase="done"], .summary[data-phase="failed"]', { timeout: 180_000 });
  assert.equal(await page.getAttribute('.summary', 'data-phase'), 'done', await page.textContent('.summary'));
}

test('every ready card overlays its class activation map, and the baseline looks at the spoonbills', async () => {
  const { path: file, label } = photo(SPOONBILL);
  const { page, errors } = await openApp(suite.browser(), suite.server().url);
  assert.equal(await page.isChecked('input[name="cam-show"]'), true, 'maps are on by default');
  await classify(page, file);

  const ready = await page.locator('.card:not(.unavailable)').all();
  assert.ok(ready.length >= 1);
  for (const card of ready) {
    const id = await card.getAttribute('data-variant');
    const figure = card.locator('figure.cam');
    assert.equal(await figure.count(), 1, `${id}: no map (${await card.textContent()})`);
    assert.ok(await figure.isVisible(), `${id}: map hidden`);
    // 7×7 cells over the photo (a 7×7 canvas, painted), the photo itself loaded, the map for the
    // card's own top-1 class.
    const map = await figure.locator('canvas.cam-map').evaluate((el) => {
      const px = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
      return { width: el.width, height: el.height, values: el.dataset.values.split(' '), painted: px.filter((v, i) => i % 4 === 3 && v === 255).length };
    });
    assert.deepEqual([map.width, map.height, map.values.length, map.painted], [7, 7, 49, 49], `${id}: ${JSON.stringify(map)}`);
    const img = figure.locator('img.cam-photo');
    assert.ok(await img.evaluate((el) => el.complete && el.naturalWidth > 0), `${id}: photo not shown`);
    const top1 = await card.locator('.top5 li.top1').getAttribute('data-class');
    assert.equal(await figure.getAttribute('data-class'), top1, id);
    // The hottest cell is the one the map colours highest (normalized value 1).
    const [r, c] = [await figure.getAttribute('data-hottest-row'), await figure.getAttribute('data-hottest-col')];
    assert.equal(map.values[Number(r) * 7 + Number(c)], '1.000', id);
    console.log(`# ${id}: top-1 ${top1}, hottest cell (${r},${c})`);
  }

  const base = page.locator('[data-variant="resnet50-baseline"]');
  assert.equal(await base.locator('.top5 li.top1').getAttribute('data-class'), String(label), 'the baseline sees a spoonbill');
  const hot = `${await base.locator('figure.cam').getAttribute('data-hottest-row')},${await base.locator('figure.cam').getAttribute('data-hottest-col')}`;
  assert.ok(BIRD_CELLS.includes(hot), `the baseline's hottest cell (${hot}) is not on a bird (${BIRD_CELLS.join(' ')})`);

  // Opacity follows the slider; "versus the baseline" recolours the other cards, not the baseline's.
  await page.locator('input[name="cam-opacity"]').fill('80');
  assert.equal(Number(await base.locator('.cam-map').evaluate((el) => el.style.opacity)), 0.8);
  await page.locator('input[name="cam-versus-baseline"]').check();
  assert.equal(await base.locator('figure.cam').getAttribute('data-view'), 'map');
  for (const card of ready.slice(1)) {
    const id = await card.getAttribute('data-variant');
    if (id === 'resnet50-baseline') continue;
    assert.equal(await card.locator('figure.cam').getAttribute('data-view'), 'versus-baseline', id);
    assert.match(await card.locator('.cam-compare').textContent(), /baseline/, id);
  }
  await page.screenshot({ path: path.join(ARTIFACTS, 'cam-spoonbill.png'), fullPage: true });

  // Off: the maps hide, and the next run does not ask the server for them.
  await page.locator('input[name="cam-show"]').uncheck();
  assert.equal(await base.locator('figure.cam').isVisible(), false);
  await classify(page, file);
  assert.equal(await base.locator('figure.cam').count(), 0);
  assert.equal(await base.locator('[data-cam="not-asked"]').count(), 1);
  assert.deepEqual(errors, []);
  await page.close();
});

// Per-layer drift (issue 15, item 2): off by default; switched on, the page asks the server once the
// timed run has answered, and draws one line per other ready variant over the stem and the 16 blocks,
// with the same figures as the server's answer in its table.
test('per-layer drift: one line per variant, the server\'s figures in the table, asked again for a new photo', async () => {
  const { page, errors } = await openApp(suite.browser(), suite.server().url);
  const drift = page.locator('section.drift');
  assert.equal(await drift.getAttribute('data-drift'), 'off', 'off by default');
  assert.equal(await page.isChecked('input[name="drift-show"]'), false);
  await classify(page, photo(SPOONBILL).path);
  const pct = (e) => {
    const p = e * 100;
    return p === 0 ? '0%' : p < 0.1 ? `${p.toFixed(2)}%` : `${p.toFixed(1)}%`;
  };
  const drifted = () => page.waitForResponse((r) => r.url().endsWith('/api/layer_drift'), { timeout: 180_000 });
  let answered = drifted();
  await page.locator('input[name="drift-show"]').check();
  let res = await answered;
  assert.equal(res.status(), 200, await res.text());
  let body = await res.json();
  await page.waitForSelector('section.drift[data-drift="ready"]', { timeout: 60_000 });
  assert.equal(body.layers.length, 17);
  assert.deepEqual([body.layers[0], body.layers[16]], ['stem', 'layer4.2']);
  const ready = await page.locator('.card:not(.unavailable)').evaluateAll((cs) => cs.map((c) => c.dataset.variant));
  const others = ready.filter((id) => id !== 'resnet50-baseline');
  assert.deepEqual(body.variants.map((v) => v.id), others, 'every other ready variant, in card order');
  for (const v of body.variants) {
    const errs = v.result.Ok.map((l) => l.relative_error.Ok);
    assert.equal(errs.length, 17, v.id);
    console.log(`# drift ${v.id}: stem ${pct(errs[0])}, layer2.0 ${pct(errs[4])}, layer4.2 ${pct(errs[16])}`);
    // The line: 17 points, one per layer.
    const line = drift.locator(`.drift-line[data-variant="${v.id}"]`);
    const points = (await line.locator('polyline').getAttribute('points')).trim().split(/\s+/);
    assert.equal(points.length, 17, v.id);
    assert.equal(await line.locator('circle').count(), 17, v.id);
    // The table shows the server's figures.
    const col = 1 + body.variants.indexOf(v);
    const cells = await drift.locator('.drift-table tbody tr').evaluateAll(
      (rows, col) => rows.map((r) => r.children[col].textContent),
      col,
    );
    assert.deepEqual(cells, errs.map(pct), v.id);
    if (v.id === 'resnet50-int8') assert.ok(errs[0] > 0, 'INT8 quantizes the stem');
  }
  assert.match(await drift.locator('figcaption').textContent(), /after the timed run/);

  // A new photo: asked again, with other figures.
  answered = drifted();
  await classify(page, photo('imagenet_16_251.jpg').path);
  res = await answered;
  const second = await res.json();
  await page.waitForSelector('section.drift[data-drift="ready"]', { timeout: 60_000 });
  if (second.variants.length) {
    assert.notDeepEqual(second.variants[0].result, body.variants[0].result, 'another photo, other drift');
  }
  await page.screenshot({ path: path.join(ARTIFACTS, 'drift.png'), fullPage: true });
  // Off again: the panel empties.
  await page.locator('input[name="drift-show"]').uncheck();
  assert.equal(await drift.getAttribute('data-drift'), 'off');
  assert.equal(await drift.locator('svg').count(), 0);
  assert.deepEqual(errors, []);
  await page.close();
});
