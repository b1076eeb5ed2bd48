// Shared by the browser tests: the system Chromium launched headless with the flags this closed
// network needs, and the PASS/FAIL tally that ends with "N passed, N failed".
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

/** Chromium from CHROMIUM_PATH, else Debian's binary, else its wrapper. */
export function launchChromium() {
  const executablePath =
    process.env.CHROMIUM_PATH ??
    ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find((p) => existsSync(p)) ??
    '/usr/bin/chromium';
  return chromium.launch({ executablePath, headless: true, args: FLAGS });
}

let passed = 0;
let failed = 0;

/** Records and prints one check. */
export function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` - ${detail}` : ''}`);
}

/** Prints the closing line and exits 1 if any check failed. */
export function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}
