// A service worker that makes the explorer cross-origin isolated where its host does not send
// the two headers itself (a static host such as GitHub Pages): it answers the page's own
// requests with COOP/COEP added, so that the page, reloaded once under it (index.html), may use
// shared memory, and the worker runs on threads. It caches nothing: every request still goes to
// the network (or the browser's cache) exactly as without it.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const request = event.request;
  // Only this origin's files: anything else (the model hub) keeps its own CORS headers.
  if (new URL(request.url).origin !== self.location.origin) return;
  if (request.cache === 'only-if-cached' && request.mode !== 'same-origin') return;
  event.respondWith(
    fetch(request).then((response) => {
      if (response.status === 0) return response;
      const headers = new Headers(response.headers);
      headers.set('Cross-Origin-Opener-Policy', 'same-origin');
      headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
      headers.set('Cross-Origin-Resource-Policy', 'same-origin');
      return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
    }),
  );
});
