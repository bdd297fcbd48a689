// rayon's pool threads for blipq's threaded wasm build (src/web/pool.rs).
//
// Imported by blipq.js as a module (startWorkers), and run as each pool Worker's script: such a
// Worker is named POOL_NAME, receives the wasm module and the shared memory, loads blipq.js on
// them and runs one rayon thread (poolWorkerRun, which blocks for the pool's lifetime).

const POOL_NAME = "blipq-pool";

function nextMessage(target, type) {
  return new Promise((resolve, reject) => {
    target.addEventListener("message", function onMessage({ data }) {
      if (data == null || data.type !== type) return;
      target.removeEventListener("message", onMessage);
      if (data.error) reject(new Error(data.error));
      else resolve(data);
    });
  });
}

if (typeof WorkerGlobalScope !== "undefined" && self.name === POOL_NAME) {
  nextMessage(self, "blipq-pool-init").then(async ({ mainJS, module, memory }) => {
    try {
      const pkg = await import(mainJS);
      await pkg.default({ module_or_path: module, memory });
      postMessage({ type: "blipq-pool-ready" });
      pkg.poolWorkerRun();
    } catch (e) {
      postMessage({ type: "blipq-pool-ready", error: String(e?.message ?? e) });
    }
  });
}

// The Workers, kept referenced so that no engine collects a Worker that shares the memory.
let workers = [];

export async function startWorkers(module, memory, start) {
  const init = { type: "blipq-pool-init", module, memory, mainJS: start.mainJS() };
  // The script goes through a blob URL: a Worker made from it inherits this page's
  // cross-origin isolation whatever the server sends for the script itself.
  const script = await fetch(import.meta.url).then((r) => r.blob());
  const url = URL.createObjectURL(script);
  try {
    workers = await Promise.all(
      Array.from({ length: start.workers() }, async () => {
        const worker = new Worker(url, { type: "module", name: POOL_NAME });
        const ready = nextMessage(worker, "blipq-pool-ready");
        worker.postMessage(init);
        await ready;
        return worker;
      }),
    );
  } finally {
    URL.revokeObjectURL(url);
  }
  start.build();
}
