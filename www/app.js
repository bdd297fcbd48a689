// Placeholder page script: shows the wasm module's version, then checks that the worker (where
// the model will run) can load the same module.

function show(id, text) {
  document.getElementById(id).textContent = text;
}

function onReady(bindings) {
  show("version", bindings.version());
  show("memory", `${(bindings.wasmMemoryBytes() / 2 ** 20).toFixed(1)} MiB`);
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = (event) => {
    const msg = event.data;
    show("worker-status", msg.ok ? `Worker ready (blipq ${msg.version}).` : `Worker failed: ${msg.error}`);
  };
  worker.onerror = (event) => show("worker-status", `Worker failed: ${event.message}`);
}

// trunk's loader sets window.wasmBindings and fires TrunkApplicationStarted once init() is done.
if (window.wasmBindings) {
  onReady(window.wasmBindings);
} else {
  addEventListener("TrunkApplicationStarted", () => onReady(window.wasmBindings), { once: true });
}
