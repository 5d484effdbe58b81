// A local imitation of the Hugging Face hub's file layout, for tests that must not need the
// internet: GET /{repo}/resolve/main/{file} with range requests, ETag and X-Repo-Commit (what
// hf-hub asks for) and CORS (what a page on another origin needs). Anything else is a 404.
//
//   const hub = await fakeHub({ 'timm/resnet18.tv_in1k': { body: bytes } });
//   hub.url; hub.requests(); hub.close();
//
// A file may be `{ body, delayMs }`: each 1 MB chunk waits `delayMs`, to catch a download
// in progress.

import { createServer } from 'node:http';

export async function fakeHub(files) {
  let requests = 0;
  const server = createServer(async (req, res) => {
    requests += 1;
    res.setHeader('Access-Control-Allow-Origin', '*');
    const m = req.url.match(/^\/(.+)\/resolve\/main\/model\.safetensors$/);
    const file = m && files[m[1]];
    if (!file) {
      res.writeHead(404, { 'Content-Length': 0 });
      res.end();
      return;
    }
    const { body, delayMs = 0 } = file;
    const total = body.length;
    const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    const start = range ? Number(range[1]) : 0;
    const end = range && range[2] ? Math.min(Number(range[2]), total - 1) : total - 1;
    res.writeHead(range ? 206 : 200, {
      'Content-Length': end - start + 1,
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${total}` } : {}),
      ETag: '"e7a9f1b2c3d4"',
      'X-Repo-Commit': '0123456789abcdef0123456789abcdef01234567',
      'Accept-Ranges': 'bytes',
    });
    let closed = false;
    const gone = new Promise((r) => res.once('close', () => { closed = true; r(); }));
    for (let at = start; at <= end && !closed; at += 1 << 20) {
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      if (!res.write(body.subarray(at, Math.min(at + (1 << 20), end + 1)))) {
        await Promise.race([new Promise((r) => res.once('drain', r)), gone]);
      }
    }
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests: () => requests,
    close: () => { server.closeAllConnections(); server.close(); },
  };
}
