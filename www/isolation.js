// Cross-origin isolation for the threaded wasm build: the isolation service worker and the one
// reload it needs, on hosts that do not send COOP/COEP themselves.

/** sessionStorage key: set while the page reloads to come back cross-origin isolated. */
const COI_RELOAD_KEY = "blipq-coi-reload";

/**
 * The threaded wasm needs a cross-origin isolated page (COOP + COEP headers). When the server did
 * not send them, registers www/coi-sw.js, which adds them, and reloads the page once so that the
 * service worker serves it. Never reloads twice in a row: the sessionStorage flag stays set until
 * a load comes back isolated. Resolves to null when isolated, else to why not (the page then runs
 * on one thread). `wasmBindings` resolves to the page's own wasm module.
 */
export async function ensureIsolation(wasmBindings) {
  const session = (() => {
    try {
      return window.sessionStorage;
    } catch {
      return null; // storage disabled
    }
  })();
  if (self.crossOriginIsolated) {
    session?.removeItem(COI_RELOAD_KEY);
    return null;
  }
  // The single-threaded build has no use for isolation: no service worker, no reload.
  if (typeof (await wasmBindings).initThreadPool !== "function") return null;
  if (!window.isSecureContext || !("serviceWorker" in navigator)) {
    return "not cross-origin isolated, and service workers are unavailable here (https or localhost needed)";
  }
  if (!session) return "not cross-origin isolated, and without session storage the page cannot reload safely";
  try {
    await navigator.serviceWorker.register(new URL("../coi-sw.js", import.meta.url));
    if (session.getItem(COI_RELOAD_KEY)) {
      session.removeItem(COI_RELOAD_KEY);
      return "not cross-origin isolated, even through the service worker (forced reload?)";
    }
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("it did not activate")), 5_000));
    await Promise.race([navigator.serviceWorker.ready, timeout]);
    session.setItem(COI_RELOAD_KEY, "1");
    location.reload();
    return new Promise(() => {}); // the page is going away
  } catch (e) {
    return `not cross-origin isolated: the isolation service worker failed (${e.message})`;
  }
}
