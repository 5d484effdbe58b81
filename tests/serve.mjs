// Serves a folder (dist/ by default) on 127.0.0.1: `node tests/serve.mjs [dir] [port]`, as
// scripts/serve does. The server itself is tests/browser.mjs's serve(), which the end-to-end
// tests and the benchmark use too; it is re-exported here for older imports.
import { fileURLToPath } from 'node:url';
import { serve } from './browser.mjs';

export { serve };

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2] ?? 'dist';
  const port = Number(process.argv[3] ?? 8080);
  await serve(dir, port);
  console.log(`ResNet explorer: http://127.0.0.1:${port}/  (serving ${dir}; Ctrl-C to stop)`);
}
