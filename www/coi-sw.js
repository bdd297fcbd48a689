// blipq's cross-origin isolation service worker, for static hosts that cannot send headers.
//
// The threaded wasm build shares its memory with worker threads, which browsers allow only on
// cross-origin isolated pages: served with `Cross-Origin-Opener-Policy: same-origin` and
// `Cross-Origin-Embedder-Policy: require-corp`. When the server does not send them, the page
// (www/app.js) registers this worker, which re-serves every same-origin response with the two
// headers added, and reloads itself once. Cross-origin requests (e.g. a Hugging Face checkpoint,
// fetched with CORS, which require-corp allows) are left to the browser. Trunk copies this file
// to the site's root (index.html), so its scope is the whole page.
const COOP = "same-origin";
const COEP = "require-corp";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (new URL(request.url).origin !== self.location.origin) return;
  // A DevTools quirk: such requests fail when re-fetched from a worker.
  if (request.cache === "only-if-cached" && request.mode !== "same-origin") return;
  event.respondWith(
    fetch(request).then((response) => {
      // Opaque and redirect responses cannot be rebuilt without changing what they mean.
      if (response.status === 0 || response.type === "opaqueredirect" || response.redirected) return response;
      const headers = new Headers(response.headers);
      headers.set("Cross-Origin-Opener-Policy", COOP);
      headers.set("Cross-Origin-Embedder-Policy", COEP);
      return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
    }),
  );
});
