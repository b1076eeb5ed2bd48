// Drives the real egress page code (src/egress/main.ts + room.ts, the shared
// stage/markers modules) in Chromium against a fake livekit-client 2.x
// (tests/fixtures/fake-livekit-v2.mjs): the egress address form, the START/END
// rule of egress's template, layout switching through the recorder
// participant's metadata (UpdateLayout), and div.error on connection failure.
// Run by tests/fake-room.mjs (`npm run test:browser`), which owns the tally.

import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { check } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..');
const ORIGIN = 'http://fake-egress.test';
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const MISSING = 'missing required params url and token';

async function bundle() {
  const out = await mkdtemp(join(tmpdir(), 'fake-egress-'));
  await build({
    entryPoints: [join(web, 'src/egress/main.ts')],
    outfile: join(out, 'egress.js'),
    bundle: true,
    format: 'iife',
    target: ['chrome100'],
    alias: { 'livekit-client': join(here, 'fixtures/fake-livekit-v2.mjs') },
    logLevel: 'warning',
  });
  await build({ entryPoints: [join(web, 'src/styles.css')], outfile: join(out, 'app.css'), bundle: true, logLevel: 'warning' });
  const files = {
    '/egress.html': [await readFile(join(web, 'src/egress/egress.html')), 'text/html'],
    '/egress.js': [await readFile(join(out, 'egress.js')), 'text/javascript'],
    '/app.css': [await readFile(join(out, 'app.css')), 'text/css'],
  };
  await rm(out, { recursive: true, force: true });
  return files;
}

/** The page address as egress builds it: base + layout, token, url (keys sorted). */
function egressAddress(layout, url = 'ws://fake', token = 't') {
  const u = new URL(`${ORIGIN}/egress.html`);
  if (layout !== null) u.searchParams.set('layout', layout);
  if (token !== null) u.searchParams.set('token', token);
  if (url !== null) u.searchParams.set('url', url);
  u.searchParams.sort();
  return u.toString();
}

async function openPage(browser, files, address, init = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const lines = [];
  const errors = [];
  page.on('console', (m) => lines.push(m.text()));
  page.on('pageerror', (e) => errors.push(e.message));
  await page.route(`${ORIGIN}/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    const hit = files[path];
    return hit ? route.fulfill({ status: 200, body: hit[0], contentType: hit[1] }) : route.fulfill({ status: 404 });
  });
  await page.addInitScript((i) => {
    window.__fakeInitial = i.initial ?? [];
    window.__fakeLocalMetadata = i.local ?? null;
  }, init);
  await page.goto(address, { waitUntil: 'load' });
  const loadError = await page.evaluate(() => document.querySelector('div.error')?.innerText ?? null);
  await page.waitForTimeout(50);
  const markers = () => lines.filter((l) => l === 'START_RECORDING' || l === 'END_RECORDING');
  const fake = async (fn, ...args) => {
    const r = await page.evaluate(([f, a]) => window.__fake[f](...a), [fn, args]);
    await page.waitForTimeout(30);
    return r;
  };
  const state = () =>
    page.evaluate(() => {
      const stage = document.querySelector('.stage');
      const tiles = [...document.querySelectorAll('.stage .tile')]
        .sort((a, b) => Number(a.style.order) - Number(b.style.order))
        .map((t) => ({
          name: t.querySelector('.name').textContent,
          cls: t.className,
          video: t.querySelector('video').dataset.track ?? null,
        }));
      return {
        body: document.body.className,
        stage: stage?.className ?? null,
        tiles,
        audio: document.querySelectorAll('.audio audio').length,
        error: document.querySelector('div.error')?.innerText ?? null,
        notice: document.querySelector('div.notice')?.innerText ?? null,
      };
    });
  /** Waits until `pred()` holds or `ms` pass; returns whether it held. */
  const until = async (pred, ms = 2000) => {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if (await pred()) return true;
      await page.waitForTimeout(20);
    }
    return pred();
  };
  return { page, context, lines, errors, markers, fake, state, until, loadError };
}

async function shot(page, name) {
  if (!process.env.SCREENSHOTS) return;
  await mkdir(process.env.SCREENSHOTS, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(process.env.SCREENSHOTS, `${name}.png`) });
}

async function mainScenario(browser, files) {
  const t = await openPage(browser, files, egressAddress('speaker'));
  let s = await t.state();
  check('egress: address form read (speaker, dark by default)', s.body === 'theme-dark layout-speaker' && s.stage === 'stage speaker', JSON.stringify(s));
  await t.page.waitForTimeout(700);
  check('egress: empty room, no START', eq(t.markers(), []), JSON.stringify(t.markers()));

  await t.fake('join', 'alice', 'Alice');
  await t.page.waitForTimeout(700);
  check('egress: participant without tracks, no START', eq(t.markers(), []), JSON.stringify(t.markers()));

  await t.fake('publish', 'alice', 'audio', 'microphone');
  await t.fake('publish', 'alice', 'video', 'camera', '#c33', 1);
  const started = await t.until(() => t.markers().length > 0, 1000);
  s = await t.state();
  check('egress: START once a subscribed video track decodes frames', started && eq(t.markers(), ['START_RECORDING']), JSON.stringify(t.markers()));
  check(
    'egress: speaker layout shows the participant, audio played',
    s.stage === 'stage speaker' && s.tiles.length === 1 && s.tiles[0].name === 'Alice' && s.tiles[0].video !== null && s.audio === 1,
    JSON.stringify(s),
  );

  await t.fake('join', 'bob');
  await t.fake('publish', 'bob', 'video', 'camera', '#36c');
  await t.fake('speakers', ['bob']);
  s = await t.state();
  check(
    'egress: speaker with sidebar, active speaker main',
    s.stage === 'stage speaker with-sidebar' && eq(s.tiles.map((x) => [x.name, x.cls.split(' ')[1]]), [['bob', 'main'], ['Alice', 'side']]),
    JSON.stringify(s),
  );
  await shot(t.page, 'egress-speaker-dark');

  await t.fake('metadata', JSON.stringify({ layout: 'grid-light' }));
  s = await t.state();
  check(
    'egress: UpdateLayout metadata -> grid-light live',
    s.body === 'theme-light layout-grid' && s.stage === 'stage grid grid-2x1' && s.tiles.length === 2,
    JSON.stringify(s),
  );
  check('egress: layout switch logged', t.lines.includes('layout grid-light'), JSON.stringify(t.lines));
  await shot(t.page, 'egress-grid-light');

  await t.fake('metadata', JSON.stringify({ layout: 'single-speaker' }));
  s = await t.state();
  check(
    'egress: metadata -> single-speaker (dark), one tile',
    s.body === 'theme-dark layout-single-speaker' && s.stage === 'stage single-speaker' && eq(s.tiles.map((x) => x.name), ['bob']),
    JSON.stringify(s),
  );

  await t.fake('metadata', 'not json');
  s = await t.state();
  check('egress: metadata that is not JSON is ignored', s.stage === 'stage single-speaker' && t.errors.length === 0, JSON.stringify({ s, errors: t.errors }));

  await t.fake('metadata', JSON.stringify({ layout: 'mosaic' }));
  s = await t.state();
  check(
    'egress: unknown layout in metadata -> grid, said in the console',
    s.body === 'theme-dark layout-grid' && s.stage.startsWith('stage grid') && t.lines.some((l) => l.includes('unknown layout "mosaic"')),
    JSON.stringify({ s, lines: t.lines }),
  );

  await t.fake('publish', 'alice', 'video', 'screen_share', '#3a3');
  s = await t.state();
  check(
    'egress: grid turns into speaker while a screen is shared',
    s.stage === 'stage speaker with-sidebar' && s.tiles[0].name === 'Alice (screen)' && s.tiles[0].cls.includes('main'),
    JSON.stringify(s),
  );
  await t.fake('unpublish', 'alice', 'screen_share');
  s = await t.state();
  check('egress: back to grid when the share ends', s.stage === 'stage grid grid-2x1', JSON.stringify(s));

  await t.fake('rename', 'bob', 'Bob B.');
  s = await t.state();
  check('egress: name change re-rendered', s.tiles.some((x) => x.name === 'Bob B.'), JSON.stringify(s.tiles));

  await t.fake('leave', 'bob');
  await t.fake('leave', 'alice');
  await t.page.waitForTimeout(200);
  s = await t.state();
  check('egress: empty room does not END (the server ends it)', eq(t.markers(), ['START_RECORDING']) && s.tiles.length === 0 && s.audio === 0, JSON.stringify({ m: t.markers(), s }));

  await t.fake('disconnect');
  s = await t.state();
  check('egress: END on disconnect', eq(t.markers(), ['START_RECORDING', 'END_RECORDING']), JSON.stringify(t.markers()));
  check('egress: room closed notice, no div.error', s.notice === 'room closed (ROOM_DELETED)' && s.error === null, JSON.stringify(s));
  check('egress: no page errors', t.errors.length === 0, t.errors.join('; '));
  await t.context.close();
}

async function metadataAtConnect(browser, files) {
  for (const silent of [false, true]) {
    const t = await openPage(browser, files, egressAddress('grid'), {
      initial: ['alice'],
      local: { metadata: JSON.stringify({ layout: 'single-speaker-light' }), silent },
    });
    const s = await t.state();
    check(
      `egress: layout metadata already set at connect is honoured (${silent ? 'no event' : 'event during connect'})`,
      s.body === 'theme-light layout-single-speaker' && s.stage === 'stage single-speaker' && s.tiles.length === 1,
      JSON.stringify(s),
    );
    await t.context.close();
  }
}

async function startRules(browser, files) {
  // audio only: START after 500 ms, not right away
  const a = await openPage(browser, files, egressAddress('grid-dark'), { initial: ['alice'] });
  await a.page.waitForTimeout(600); // past 500 ms since connect began, nothing subscribed yet
  check('egress: participant present without tracks, no START', eq(a.markers(), []), JSON.stringify(a.markers()));
  await a.fake('publish', 'alice', 'audio', 'microphone');
  const audioStarted = await a.until(() => a.markers().length > 0, 1000);
  check('egress: audio only -> START (no video, a subscribed track, > 500 ms)', audioStarted && eq(a.markers(), ['START_RECORDING']), JSON.stringify(a.markers()));
  await a.context.close();

  // video that has not decoded a frame yet: wait for frames
  const v = await openPage(browser, files, egressAddress('speaker-light'), { initial: ['bob'] });
  await v.fake('publish', 'bob', 'video', 'camera', '#36c', 0);
  await v.fake('publish', 'bob', 'audio', 'microphone');
  await v.page.waitForTimeout(1000);
  check('egress: video without decoded frames, no START yet (< 5 s)', eq(v.markers(), []), JSON.stringify(v.markers()));
  await v.fake('frames', 'bob', 'camera', 3);
  const videoStarted = await v.until(() => v.markers().length > 0, 1000);
  check('egress: START once the video decodes frames', videoStarted && eq(v.markers(), ['START_RECORDING']), JSON.stringify(v.markers()));
  await v.context.close();

  // the room closes before anything is recorded: END (as egress does), never START
  const c = await openPage(browser, files, egressAddress('grid'));
  await c.fake('disconnect', 3);
  await c.fake('join', 'late');
  await c.page.waitForTimeout(300);
  const s = await c.state();
  check(
    'egress: disconnect before START logs END only',
    eq(c.markers(), ['END_RECORDING']) && s.notice === 'room closed (SERVER_SHUTDOWN)' && c.errors.length === 0,
    JSON.stringify({ m: c.markers(), s, errors: c.errors }),
  );
  await c.context.close();
}

async function errors(browser, files) {
  const f = await openPage(browser, files, egressAddress('speaker', 'ws://fail'));
  const ok = await f.until(async () => (await f.state()).error !== null, 2000);
  const s = await f.state();
  check(
    'egress: connection failure -> div.error "could not connect: ..."',
    ok && s.error === 'could not connect: could not establish signal connection: fake failure' && eq(f.markers(), []),
    JSON.stringify(s),
  );
  check('egress: connection failure, no page errors', f.errors.length === 0, f.errors.join('; '));
  await f.context.close();

  const m = await openPage(browser, files, egressAddress('grid', null, 't'));
  check('egress: missing url -> div.error at load', m.loadError === MISSING, JSON.stringify(m.loadError));
  await m.context.close();

  const u = await openPage(browser, files, egressAddress('fancy-light'));
  const su = await u.state();
  check(
    'egress: unknown layout in the address -> grid (light kept), said in the console',
    su.body === 'theme-light layout-grid' && su.stage === 'stage grid' && su.error === null &&
      u.lines.some((l) => l.includes('unknown layout "fancy-light"')),
    JSON.stringify({ su, lines: u.lines }),
  );
  await u.context.close();
}

export async function egressScenarios(browser) {
  const files = await bundle();
  await mainScenario(browser, files);
  await metadataAtConnect(browser, files);
  await startRules(browser, files);
  await errors(browser, files);
}
