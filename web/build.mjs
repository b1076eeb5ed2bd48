// Bundles the built-in templates into dist/ (flat, embedded into the binary as is):
//   index.html, app.js   legacy recorder page, livekit-client 1.1.7 (`livekit-client-legacy`)
//   egress.html, egress.js   egress page, livekit-client 2.x
//   app.css              styles of both
// Usage: node build.mjs [--outdir DIR]
import { build } from 'esbuild';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const argIdx = process.argv.indexOf('--outdir');
const outdir = resolve(argIdx >= 0 ? process.argv[argIdx + 1] : join(here, 'dist'));

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  target: ['chrome100'],
  logLevel: 'warning',
};
const script = {
  ...common,
  format: 'iife',
  platform: 'browser',
  define: { 'process.env.NODE_ENV': '"production"' },
};

await build({ ...script, entryPoints: [join(here, 'src/main.ts')], outfile: join(outdir, 'app.js') });
await build({ ...script, entryPoints: [join(here, 'src/egress/main.ts')], outfile: join(outdir, 'egress.js') });
await build({
  ...common,
  entryPoints: [join(here, 'src/styles.css')],
  outfile: join(outdir, 'app.css'),
});
await copyFile(join(here, 'src/index.html'), join(outdir, 'index.html'));
await copyFile(join(here, 'src/egress/egress.html'), join(outdir, 'egress.html'));

for (const f of ['index.html', 'app.js', 'egress.html', 'egress.js', 'app.css']) {
  const { size } = await stat(join(outdir, f));
  console.log(`${f.padEnd(12)} ${(size / 1024).toFixed(1).padStart(8)} KiB`);
}
