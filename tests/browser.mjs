// The project's one browser harness, used by the end-to-end tests (tests/e2e/), the benchmark's
// driver (bench/web/drive.mjs) and `node tests/serve.mjs` (scripts/serve):
//   serve(root, port)    a static file server on loopback (no dependencies);
//   launchChromium()     Debian's Chromium through playwright-core, with the project's flags.
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png', '.jpg': 'image/jpeg',
  '.json': 'application/json', '.safetensors': 'application/octet-stream',
  '.onnx': 'application/octet-stream', '': 'text/plain; charset=utf-8',
};

// The file `url` names under `dir`, or null; a folder stands for its index.html. Nothing outside
// `dir` is ever served.
async function fileUnder(dir, url) {
  let file = resolve(join(dir, url));
  if (file !== dir && !file.startsWith(dir + sep)) return null;
  try {
    let s = await stat(file);
    if (s.isDirectory()) {
      file = join(file, 'index.html');
      s = await stat(file);
    }
    return s.isFile() ? { file, size: s.size } : null;
  } catch {
    return null;
  }
}

// The headers that make a page cross-origin isolated, so that it may share wasm memory between
// workers: the explorer then runs its threaded worker, onnxruntime-web its threaded build.
export const ISOLATION_HEADERS = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
};

// Serves `root` on http://HOST:PORT/ (port 0: any free port; `server.address().port` tells).
// `root` is a folder, or routes `[[urlPrefix, folder], ...]`: the first route whose prefix
// matches and that holds the file answers. Resolves to the listening http.Server. Pages are
// cross-origin isolated unless `isolated` is false.
export function serve(root, port = 0, host = '127.0.0.1', { isolated = true } = {}) {
  const routes = (typeof root === 'string' ? [['/', root]] : root).map(([p, d]) => [p, resolve(d)]);
  const server = createServer(async (req, res) => {
    let url;
    try {
      url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      url = null;
    }
    for (const [prefix, dir] of url === null ? [] : routes) {
      if (!url.startsWith(prefix)) continue;
      const found = await fileUnder(dir, url.slice(prefix.length));
      if (!found) continue;
      try {
        const body = await readFile(found.file);
        res.writeHead(200, {
          'content-type': TYPES[extname(found.file)] ?? 'application/octet-stream',
          'content-length': body.length,
          'cache-control': 'no-cache',
          ...(isolated ? ISOLATION_HEADERS : {}),
        });
        res.end(body);
        return;
      } catch {
        break;
      }
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => ok(server));
  });
}

// Headless, nothing reaching out on its own (no QUIC, no background networking, component
// updates or sync), no first-run UI; no sandbox and no GPU, as in the containers CI runs in.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Debian's Chromium (`CHROMIUM` overrides the path) with CHROMIUM_ARGS (+ `args`), through
// playwright-core (from tests/node_modules, scripts/install-web-tools). Each launch gets a fresh
// temporary user-data-dir, deleted on close (playwright's launch() makes one), so no profile,
// cache or cookie carries over between runs.
export async function launchChromium({ args = [], ...options } = {}) {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, ...args],
    ...options,
  });
}
