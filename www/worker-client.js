// The page's side of the inference worker (worker.js): requests and replies over postMessage,
// events routed to the request that caused them, and every pending request failed when the
// worker dies.

const WORKER_URL = new URL("./worker.js", import.meta.url);
// `?threads=N` on the page's URL sets the worker's thread pool size (e.g. 1 to compare).
const THREADS_PARAM = new URLSearchParams(location.search).get("threads");
if (THREADS_PARAM) WORKER_URL.searchParams.set("threads", THREADS_PARAM);
// `?simd=simd128` loads the simd128 build even where relaxed SIMD is there (see worker.js).
const SIMD_PARAM = new URLSearchParams(location.search).get("simd");
if (SIMD_PARAM) WORKER_URL.searchParams.set("simd", SIMD_PARAM);

/** Request/response over one worker; events are routed to the request that caused them. */
export class WorkerClient {
  constructor(onFatal) {
    this.worker = new Worker(WORKER_URL, { type: "module" });
    this.nextId = 1;
    this.pending = new Map();
    this.onFatal = onFatal;
    this.worker.onmessage = (e) => this.dispatch(e.data);
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.failAll(`the worker failed to start or crashed (${e.message || "no details"})`);
    };
  }
  dispatch(msg) {
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (msg.type === "done") {
      this.pending.delete(msg.id);
      p.resolve(msg);
    } else if (msg.type === "error") {
      this.pending.delete(msg.id);
      const err = new Error(msg.message);
      err.fatal = msg.fatal;
      p.reject(err);
      if (msg.fatal && this.onFatal) this.onFatal(msg.message);
    } else {
      p.onEvent?.(msg);
    }
  }
  failAll(message) {
    for (const p of this.pending.values()) p.reject(Object.assign(new Error(message), { fatal: true }));
    this.pending.clear();
    if (this.onFatal) this.onFatal(message);
  }
  request(type, payload = {}, onEvent = null) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.worker.postMessage({ id, type, ...payload });
    });
  }
  terminate() {
    this.onFatal = null;
    this.worker.terminate();
    for (const p of this.pending.values()) p.reject(new Error("the worker was stopped"));
    this.pending.clear();
  }
}
