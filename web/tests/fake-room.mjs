#!/usr/bin/env node
// Drives the real page code (src/main.ts + src/room.ts) in Chromium against a
// fake livekit-client 1.1.x (tests/fixtures/fake-livekit.mjs): checks the
// console markers and the rendered layouts without a LiveKit server. Then runs
// the egress page's scenarios (tests/fake-egress.mjs, fake livekit-client 2.x).
//
//   npm run test:browser            (SCREENSHOTS=dir to also save screenshots)
//
// Prints PASS/FAIL per check, then "N passed, N failed"; exits 1 on failure.

import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { check, finish, launchChromium } from './browser.mjs';
import { egressScenarios } from './fake-egress.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..');
const ORIGIN = 'http://fake-room.test';
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function bundle() {
  const out = await mkdtemp(join(tmpdir(), 'fake-room-'));
  await build({
    entryPoints: [join(web, 'src/main.ts')],
    outfile: join(out, 'app.js'),
    bundle: true,
    format: 'iife',
    target: ['chrome100'],
    alias: { 'livekit-client-legacy': join(here, 'fixtures/fake-livekit.mjs') },
    logLevel: 'warning',
  });
  await build({ entryPoints: [join(web, 'src/styles.css')], outfile: join(out, 'app.css'), bundle: true, logLevel: 'warning' });
  const files = {
    '/index.html': [await readFile(join(web, 'src/index.html')), 'text/html'],
    '/app.js': [await readFile(join(out, 'app.js')), 'text/javascript'],
    '/app.css': [await readFile(join(out, 'app.css')), 'text/css'],
  };
  await rm(out, { recursive: true, force: true });
  return files;
}

async function openPage(browser, files, hash, initial = []) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const lines = [];
  const errors = [];
  page.on('console', (m) => lines.push(m.text()));
  page.on('pageerror', (e) => errors.push(e.message));
  await page.route(`${ORIGIN}/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    const [body, type] = files[path] ?? files['/index.html'];
    return route.fulfill({ status: 200, body, contentType: type });
  });
  await page.addInitScript((ids) => {
    window.__fakeInitial = ids;
  }, initial);
  await page.goto(`${ORIGIN}/${hash}`, { waitUntil: 'load' });
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
        stage: stage?.className ?? null,
        tiles,
        audio: document.querySelectorAll('.audio audio').length,
        error: document.querySelector('div.error')?.innerText ?? null,
        notice: document.querySelector('div.notice')?.innerText ?? null,
      };
    });
  return { page, context, lines, errors, markers, fake, state };
}

async function shot(page, name) {
  if (!process.env.SCREENSHOTS) return;
  await mkdir(process.env.SCREENSHOTS, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(process.env.SCREENSHOTS, `${name}.png`) });
}

async function gridScenario(browser, files) {
  const t = await openPage(browser, files, '#/grid-dark?url=ws%3A%2F%2Ffake&token=t');
  let s = await t.state();
  check('grid: empty room at connect, no START', eq(t.markers(), []) && s.tiles.length === 0, JSON.stringify(s));

  await t.fake('join', 'alice', 'Alice');
  await t.fake('publish', 'alice', 'video', 'camera', '#c33');
  await t.fake('publish', 'alice', 'audio', 'microphone');
  s = await t.state();
  check('grid: START on first join', eq(t.markers(), ['START_RECORDING']), JSON.stringify(t.markers()));
  check(
    'grid: 1 tile 1x1 with video, 1 audio element',
    s.stage === 'stage grid grid-1x1' && s.tiles.length === 1 && s.tiles[0].video !== null && s.audio === 1,
    JSON.stringify(s),
  );

  await t.fake('join', 'bob');
  await t.fake('join', 'carol');
  await t.fake('publish', 'carol', 'video', 'camera', '#36c');
  s = await t.state();
  check('grid: 3 tiles 2x2 in join order', s.stage === 'stage grid grid-2x2' && eq(s.tiles.map((x) => x.name), ['Alice', 'bob', 'carol']), JSON.stringify(s));
  check('grid: no video -> placeholder', s.tiles[1].cls.includes('no-video'), s.tiles[1].cls);

  await t.fake('speakers', ['carol']);
  s = await t.state();
  check('grid: active speaker moved to the front', eq(s.tiles.map((x) => x.name), ['carol', 'Alice', 'bob']) && s.tiles[0].cls.includes('speaking'), JSON.stringify(s.tiles));
  await shot(t.page, 'grid-dark-3');

  for (let i = 1; i <= 8; i++) await t.page.evaluate((n) => window.__fake.join(`p${n}`), i);
  await t.page.waitForTimeout(50);
  s = await t.state();
  check('grid: cut to 9 tiles, 3x3', s.stage === 'stage grid grid-3x3' && s.tiles.length === 9, `${s.stage} ${s.tiles.length}`);
  check('START still logged once', eq(t.markers(), ['START_RECORDING']));

  const ids = await t.fake('restart');
  await t.page.waitForTimeout(100);
  check('grid: full reconnect dropping everybody does not END', eq(t.markers(), ['START_RECORDING']), JSON.stringify(t.markers()));
  await t.fake('restarted', ids);
  await t.page.waitForTimeout(50);
  s = await t.state();
  check('grid: participants back after reconnect', s.tiles.length === 9, String(s.tiles.length));
  check(
    'grid: Reconnected before participants are re-added does not END',
    eq(t.markers(), ['START_RECORDING']),
    JSON.stringify(t.markers()),
  );

  for (const id of ['alice', 'bob', 'carol', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7']) {
    await t.page.evaluate((x) => window.__fake.leave(x), id);
  }
  await t.page.waitForTimeout(50);
  check('grid: no END while one participant remains', eq(t.markers(), ['START_RECORDING']));
  s = await t.state();
  check('grid: audio element removed with its track', s.audio === 0, String(s.audio));
  await t.fake('leave', 'p8');
  check('grid: END when the last participant leaves', eq(t.markers(), ['START_RECORDING', 'END_RECORDING']), JSON.stringify(t.markers()));
  await t.fake('join', 'late');
  await t.fake('disconnect');
  s = await t.state();
  check('grid: no second START/END after END', eq(t.markers(), ['START_RECORDING', 'END_RECORDING']), JSON.stringify(t.markers()));
  check('grid: room closed notice, no div.error', s.notice === 'room closed' && s.error === null, JSON.stringify(s));
  check('grid: no page errors', t.errors.length === 0, t.errors.join('; '));
  await t.context.close();
}

async function speakerScenario(browser, files) {
  const t = await openPage(browser, files, '#/speaker-light?url=ws%3A%2F%2Ffake&token=t', ['alice', 'bob']);
  let s = await t.state();
  check('speaker: START at connect with participants present', eq(t.markers(), ['START_RECORDING']), JSON.stringify(t.markers()));
  check(
    'speaker: first participant main, other in sidebar',
    s.stage === 'stage speaker with-sidebar' && eq(s.tiles.map((x) => [x.name, x.cls.split(' ')[1]]), [['alice', 'main'], ['bob', 'side']]),
    JSON.stringify(s),
  );
  await t.fake('publish', 'alice', 'video', 'camera', '#c33');
  await t.fake('publish', 'bob', 'video', 'camera', '#36c');
  await t.fake('speakers', ['bob']);
  s = await t.state();
  check('speaker: active speaker becomes main', eq(s.tiles.map((x) => x.name), ['bob', 'alice']) && s.tiles.every((x) => x.video), JSON.stringify(s.tiles));
  await t.fake('speakers', []);
  s = await t.state();
  check('speaker: main kept during silence', s.tiles[0].name === 'bob', JSON.stringify(s.tiles));
  await t.fake('mute', 'bob', 'camera');
  s = await t.state();
  check('speaker: muted camera -> placeholder', s.tiles[0].name === 'bob' && s.tiles[0].cls.includes('no-video'), JSON.stringify(s.tiles));
  await t.fake('mute', 'bob', 'camera', false);
  s = await t.state();
  check('speaker: unmuted camera -> video again', s.tiles[0].cls.includes('has-video'), JSON.stringify(s.tiles));
  await t.fake('resume');
  await t.fake('resumed');
  s = await t.state();
  check(
    'speaker: resumed connection keeps markers and tiles',
    eq(t.markers(), ['START_RECORDING']) && s.tiles.length === 2,
    JSON.stringify({ markers: t.markers(), tiles: s.tiles.length }),
  );
  await shot(t.page, 'speaker-light-2');

  await t.fake('publish', 'alice', 'video', 'screen_share', '#3a3');
  await t.fake('speakers', ['bob']);
  s = await t.state();
  check(
    'speaker: screen share wins, sharer camera in sidebar',
    eq(s.tiles.map((x) => [x.name, x.cls.split(' ')[1]]), [['alice (screen)', 'main'], ['alice', 'side'], ['bob', 'side']]) ||
      eq(s.tiles.map((x) => [x.name, x.cls.split(' ')[1]]), [['alice (screen)', 'main'], ['bob', 'side'], ['alice', 'side']]),
    JSON.stringify(s.tiles),
  );
  await shot(t.page, 'speaker-light-screen');
  await t.fake('unpublish', 'alice', 'screen_share');
  s = await t.state();
  check('speaker: back to the active speaker after the share ends', s.tiles[0].name === 'bob' && s.tiles.length === 2, JSON.stringify(s.tiles));

  await t.fake('leave', 'bob');
  s = await t.state();
  check('speaker: single participant, no sidebar', s.stage === 'stage speaker' && s.tiles.length === 1, JSON.stringify(s));
  await t.fake('disconnect');
  check('speaker: END on disconnect', eq(t.markers(), ['START_RECORDING', 'END_RECORDING']), JSON.stringify(t.markers()));
  check('speaker: no page errors', t.errors.length === 0, t.errors.join('; '));
  await t.context.close();
}

async function closedBeforeStart(browser, files) {
  const t = await openPage(browser, files, '#/speaker-dark?url=ws%3A%2F%2Ffake&token=t');
  await t.fake('disconnect');
  const s = await t.state();
  check(
    'closed before START: no markers, div.error set',
    eq(t.markers(), []) && s.error === 'room closed before recording started (left by the server)',
    JSON.stringify(s),
  );
  await t.context.close();
  const r = await openPage(browser, files, '#/grid-dark?url=ws%3A%2F%2Ffake&token=t');
  await r.fake('resume');
  await r.fake('disconnect');
  const s1 = await r.state();
  check(
    'reconnect failed before START: div.error names it, no page errors',
    eq(r.markers(), []) && s1.error === 'room closed before recording started (connection lost, reconnect failed)' && r.errors.length === 0,
    JSON.stringify({ ...s1, errors: r.errors }),
  );
  await r.context.close();
  const f = await openPage(browser, files, '#/grid-light?url=ws%3A%2F%2Ffail&token=t');
  const s2 = await f.state();
  check('connect() rejecting: div.error "could not connect: ..."', s2.error === 'could not connect: fake failure', JSON.stringify(s2));
  check('connect() rejecting: no unhandled rejection', f.errors.length === 0, f.errors.join('; '));
  await f.context.close();
}

async function main() {
  const files = await bundle();
  const browser = await launchChromium();
  try {
    await gridScenario(browser, files);
    await speakerScenario(browser, files);
    await closedBeforeStart(browser, files);
    await egressScenarios(browser);
  } catch (e) {
    check('scenario ran to completion', false, e.stack);
  } finally {
    await browser.close();
  }
  finish();
}

main();
