#!/usr/bin/env node
// Browser smoke test for the built-in templates: the legacy recorder page
// (`{base}/#/{layout}?url=&token=`, index.html) and the egress page
// (`{base}/egress.html?layout=&token=&url=`, as livekit egress builds it).
//
//   npm run smoke                      # serves ./dist itself on a free loopback port
//   npm run smoke -- http://127.0.0.1:8080/#     # tests an already running server
//   SMOKE_BASE_URL=http://127.0.0.1:8080 npm run smoke
//   npm run smoke -- http://127.0.0.1:8080/# http://127.0.0.1:8080/egress.html   # egress base too
//
// Env: CHROMIUM_PATH (default /usr/lib/chromium/chromium, else /usr/bin/chromium),
//      SMOKE_DIST (directory to serve when no base URL is given; default ./dist),
//      SMOKE_SKIP_PATH=1 (skip the path-routing checks, for servers without index.html fallback),
//      SMOKE_EGRESS_BASE_URL (egress page base; default {root}/egress.html).
// Prints PASS/FAIL per check, then "N passed, N failed"; exits 1 on any failure.

import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { check, finish, launchChromium } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const LAYOUTS = ['speaker-light', 'speaker-dark', 'grid-light', 'grid-dark'];
const MISSING = 'missing required params url and token';
const CLOSED_WS = 'ws://127.0.0.1:9';
const DUMMY_TOKEN = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzbW9rZSJ9.c21va2U';
const CONNECT_ERROR_TIMEOUT_MS = 15_000;

// ---- static server (same contract as the recorder: index.html for unknown paths) ----

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

async function serve(dir) {
  const root = resolve(dir);
  if (!existsSync(join(root, 'index.html'))) {
    throw new Error(`${root}/index.html not found: run \`npm run build\` first`);
  }
  const server = createServer(async (req, res) => {
    try {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      let file = normalize(join(root, path));
      if (!file.startsWith(root + sep) || !(await stat(file).then((s) => s.isFile(), () => false))) {
        // Assets by basename (so /speaker-dark/app.js works too), else index.html.
        const base = path.split('/').pop() ?? '';
        const asset = join(root, base);
        file = base && (await stat(asset).then((s) => s.isFile(), () => false)) ? asset : join(root, 'index.html');
      }
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return { server, base: `http://127.0.0.1:${port}` };
}

// ---- checks ----

const report = (ok, name, detail = '') => check(name, ok, detail);

async function withPage(browser, fn) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const consoleLines = [];
  const pageErrors = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  page.on('pageerror', (e) => pageErrors.push(e.message));
  try {
    return await fn(page, consoleLines, pageErrors);
  } finally {
    await context.close();
  }
}

/** What the recorder does: navigate, wait for load, read div.error once. */
const errorTextNow = (page) => page.evaluate(() => document.querySelector('div.error')?.innerText ?? null);

const markersIn = (lines) => lines.filter((l) => l === 'START_RECORDING' || l === 'END_RECORDING');

async function checkMissingParams(browser, name, url) {
  await withPage(browser, async (page, lines, errors) => {
    try {
      await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
      const text = await errorTextNow(page);
      const scroll = await page.evaluate(() => ({
        x: document.documentElement.scrollWidth > window.innerWidth,
        y: document.documentElement.scrollHeight > window.innerHeight,
      }));
      const problems = [];
      if (text !== MISSING) problems.push(`div.error at load = ${JSON.stringify(text)}`);
      if (markersIn(lines).length) problems.push(`logged ${markersIn(lines).join(',')}`);
      if (errors.length) problems.push(`page errors: ${errors.join('; ')}`);
      if (scroll.x || scroll.y) problems.push('page has scrollbars');
      report(problems.length === 0, name, problems.join('; ') || JSON.stringify(text));
    } catch (e) {
      report(false, name, e.message);
    }
  });
}

async function checkConnectError(browser, name, url) {
  await withPage(browser, async (page, lines, errors) => {
    try {
      const t0 = Date.now();
      await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
      const loc = page.locator('div.error');
      await loc.waitFor({ state: 'attached', timeout: CONNECT_ERROR_TIMEOUT_MS });
      await page.waitForFunction(() => (document.querySelector('div.error')?.innerText ?? '').trim() !== '', null, {
        timeout: 2_000,
      });
      const text = (await loc.innerText()).trim();
      const ms = Date.now() - t0;
      const problems = [];
      if (!text) problems.push('empty div.error');
      if (text === MISSING) problems.push('params were not read');
      if (markersIn(lines).length) problems.push(`logged ${markersIn(lines).join(',')}`);
      if (errors.length) problems.push(`page errors: ${errors.join('; ')}`);
      report(problems.length === 0, name, problems.join('; ') || `${JSON.stringify(text)} after ${ms} ms`);
    } catch (e) {
      report(false, name, e.message.split('\n')[0]);
    }
  });
}

async function checkUnknownLayout(browser, name, url, layout) {
  await withPage(browser, async (page, _lines, errors) => {
    try {
      await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
      const text = await errorTextNow(page);
      const html = await page.evaluate(() => document.querySelector('div.error')?.outerHTML ?? null);
      const want = `unknown layout ${layout}`;
      const wantHtml = `<div class="error">unknown layout ${layout.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</div>`;
      const ok = text === want && html === wantHtml && errors.length === 0;
      report(ok, name, ok ? html : `div.error = ${html} ${errors.join('; ')}`);
    } catch (e) {
      report(false, name, e.message);
    }
  });
}

async function checkHome(browser, name, url) {
  await withPage(browser, async (page, lines, errors) => {
    try {
      await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
      const state = await page.evaluate(() => ({
        error: document.querySelector('div.error')?.innerText ?? null,
        text: document.body.innerText.trim(),
      }));
      const ok = state.error === null && state.text === '' && errors.length === 0 && markersIn(lines).length === 0;
      report(ok, name, ok ? 'empty page' : JSON.stringify({ ...state, errors }));
    } catch (e) {
      report(false, name, e.message);
    }
  });
}

// ---- egress page ----

/** What livekit egress does to a base: add layout, token, url to its query (keys sorted). */
function egressAddress(base, params) {
  const u = new URL(base);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  u.searchParams.sort();
  return u.toString();
}

async function checkEgressMissing(browser, name, url) {
  await withPage(browser, async (page, lines, errors) => {
    try {
      await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
      const text = await errorTextNow(page);
      const problems = [];
      if (text !== MISSING) problems.push(`div.error at load = ${JSON.stringify(text)}`);
      if (markersIn(lines).length) problems.push(`logged ${markersIn(lines).join(',')}`);
      if (errors.length) problems.push(`page errors: ${errors.join('; ')}`);
      report(problems.length === 0, name, problems.join('; ') || JSON.stringify(text));
    } catch (e) {
      report(false, name, e.message);
    }
  });
}

/**
 * The egress page with a closed ws port: renders its layout, fails to connect
 * with a div.error, logs no marker, and asks for nothing but its own files and
 * the ws url's host.
 */
async function checkEgressConnectError(browser, name, url, want) {
  await withPage(browser, async (page, lines, errors) => {
    const foreign = [];
    const allowed = new Set([new URL(url).host, new URL(CLOSED_WS).host]);
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (!['data:', 'blob:'].includes(u.protocol) && !allowed.has(u.host)) foreign.push(r.url());
    });
    try {
      const t0 = Date.now();
      await page.goto(url, { waitUntil: 'load', timeout: 15_000 });
      const body = await page.evaluate(() => document.body.className);
      const loc = page.locator('div.error');
      await loc.waitFor({ state: 'attached', timeout: CONNECT_ERROR_TIMEOUT_MS });
      const text = (await loc.innerText()).trim();
      const ms = Date.now() - t0;
      const problems = [];
      if (!text.startsWith('could not connect')) problems.push(`div.error = ${JSON.stringify(text)}`);
      if (body !== want.body) problems.push(`body class ${JSON.stringify(body)}, want ${JSON.stringify(want.body)}`);
      if (want.console && !lines.some((l) => l.includes(want.console))) {
        problems.push(`console lacks ${JSON.stringify(want.console)}: ${JSON.stringify(lines)}`);
      }
      if (markersIn(lines).length) problems.push(`logged ${markersIn(lines).join(',')}`);
      if (errors.length) problems.push(`page errors: ${errors.join('; ')}`);
      if (foreign.length) problems.push(`requests beyond the page and ws hosts: ${foreign.join(' ')}`);
      report(problems.length === 0, name, problems.join('; ') || `${JSON.stringify(text)} after ${ms} ms`);
    } catch (e) {
      report(false, name, e.message.split('\n')[0]);
    }
  });
}

async function egressChecks(browser, egressBase) {
  const q = { token: DUMMY_TOKEN, url: CLOSED_WS };
  await checkEgressMissing(browser, 'egress: missing params', egressAddress(egressBase, { layout: 'speaker' }));
  await checkEgressMissing(browser, 'egress: only url', egressAddress(egressBase, { layout: 'grid', url: CLOSED_WS }));
  for (const [layout, body] of [
    ['grid', 'theme-dark layout-grid'],
    ['speaker-light', 'theme-light layout-speaker'],
    ['single-speaker-dark', 'theme-dark layout-single-speaker'],
  ]) {
    await checkEgressConnectError(browser, `egress ${layout}: connect error`, egressAddress(egressBase, { layout, ...q }), {
      body,
    });
  }
  await checkEgressConnectError(
    browser,
    'egress: unknown layout falls back to grid',
    egressAddress(egressBase, { layout: 'fancy-light', ...q }),
    { body: 'theme-light layout-grid', console: 'unknown layout "fancy-light"' },
  );
  await checkEgressConnectError(
    browser,
    'egress: base with its own query',
    egressAddress(`${egressBase}?a=1&zz=2`, { layout: 'speaker', ...q }),
    { body: 'theme-dark layout-speaker' },
  );
}

// ---- main ----

function rootOf(base) {
  // Accept "http://h:p", "http://h:p/", "http://h:p/#", "http://h:p/#/".
  return base.replace(/\/?#\/?$/, '').replace(/\/+$/, '');
}

async function main() {
  const [arg, egressArg] = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  let base = arg ?? process.env.SMOKE_BASE_URL ?? '';
  let server = null;
  if (!base) {
    const s = await serve(process.env.SMOKE_DIST ?? join(here, '..', 'dist'));
    server = s.server;
    base = s.base;
    console.log(`serving ${resolve(process.env.SMOKE_DIST ?? join(here, '..', 'dist'))} at ${base}`);
  }
  const root = rootOf(base);
  const browser = await launchChromium();
  try {
    const q = `?url=${encodeURIComponent(CLOSED_WS)}&token=${DUMMY_TOKEN}`;
    for (const layout of LAYOUTS) {
      await checkMissingParams(browser, `${layout}: missing params (hash)`, `${root}/#/${layout}`);
      await checkConnectError(browser, `${layout}: connect error (hash)`, `${root}/#/${layout}${q}`);
    }
    if (!process.env.SMOKE_SKIP_PATH) {
      await checkMissingParams(browser, 'speaker-dark: missing params (path)', `${root}/speaker-dark`);
      await checkMissingParams(browser, 'grid-light: only url (path)', `${root}/grid-light?url=${encodeURIComponent(CLOSED_WS)}`);
      await checkConnectError(browser, 'grid-dark: connect error (path)', `${root}/grid-dark${q}`);
      await checkUnknownLayout(browser, 'unknown layout (path)', `${root}/single-speaker`, 'single-speaker');
    }
    await checkUnknownLayout(browser, 'unknown layout (hash)', `${root}/#/<fancy>${q}`, '<fancy>');
    await checkHome(browser, 'home page (/)', `${root}/`);
    await egressChecks(browser, egressArg ?? process.env.SMOKE_EGRESS_BASE_URL ?? `${root}/egress.html`);
  } finally {
    await browser.close();
    server?.close();
  }
  finish();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
