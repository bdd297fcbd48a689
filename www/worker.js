// The inference worker: loads the wasm module (dist/blipq.js, a stable name because
// filehash = false), downloads checkpoints (streaming progress, Cache API), keeps loaded models
// and answers requests one at a time, so the page never waits on the model.
//
// Protocol. Page → worker: {id, type, ...}. Worker → page: any number of events
// {id, type: "progress" | "token" | "bench-progress", ...}, then exactly one final reply:
// {id, type: "done", ...result} or {id, type: "error", message, fatal}. `fatal` means the wasm
// module trapped (e.g. ran out of memory): its state cannot be trusted, so the page starts a new
// worker. Every other error leaves the worker and its loaded models usable.
//
// Threads: with the threaded build (scripts/web.sh; it exports `initThreadPool`) on a
// cross-origin isolated page, this worker starts a rayon pool of Web Workers sharing the wasm
// memory before it answers anything; otherwise everything runs on this worker's one thread.
// `?threads=N` on this script's URL (the page passes its own `?threads=`) sets the pool size;
// the default is navigator.hardwareConcurrency, at most MAX_THREADS.
//
// Requests:
//   hello                                   → {version, wasmMemoryBytes, threads, threadsNote,
//                                              threadedBuild, crossOriginIsolated}
//   load {key, source}                      → {info, files, weightBytes, totalBytes, fromCache,
//                                              memBefore, memAfter}
//        source = {kind: "url", base} | {kind: "files", files: File[]}
//   unload {key}                            → {}
//   caption {key, image: Blob|ArrayBuffer, options, references?}
//                                           → token events {text}, then {caption, tokenIds,
//                                              newTokens, timings, bleu4, wasmMemoryBytes, jsHeapBytes}
//   bench {source, items, imagesBase, options, warmup}   (sent to a fresh worker per model)
//                                           → bench-progress events, then {samples, failures,
//                                              info, weightBytes, peakMemoryBytes, memBefore, memAfter}
// A namespace import: `initThreadPool` exists in the threaded build only, and a named import
// of a missing export would fail the whole module.
import init, * as blipq from "../blipq.js";
import { CACHE_NAME } from "./common.js";

const { Captioner, version, wasmMemoryBytes, bleu4 } = blipq;

const REQUIRED = ["config.json", "model.safetensors", "tokenizer.json"];
const OPTIONAL = ["tokenizer_config.json", "generation_config.json"];
const PREPROCESSOR = ["preprocessor_config.json", "processor_config.json"];

/** Upper bound of the default pool size: beyond it memory bandwidth, not cores, limits. */
const MAX_THREADS = 8;
/** Give up on a pool whose workers did not all start within this time (and run on one thread). */
const POOL_TIMEOUT_MS = 30_000;

/** Starts rayon's pool when this build and page can; resolves to {threads, threadsNote}. */
async function startThreads() {
  const threadedBuild = typeof blipq.initThreadPool === "function";
  const requested = Number(new URL(self.location.href).searchParams.get("threads"));
  const wanted =
    Number.isInteger(requested) && requested > 0
      ? Math.min(requested, 64)
      : Math.max(1, Math.min(self.navigator?.hardwareConcurrency || 1, MAX_THREADS));
  let note = null;
  if (!threadedBuild) note = "single-threaded build";
  else if (!self.crossOriginIsolated) note = "page is not cross-origin isolated";
  else if (wanted < 2) note = requested ? "one thread requested" : "one core";
  else {
    let timer;
    try {
      const pool = blipq.initThreadPool(wanted);
      pool.catch(() => {}); // a pool that fails after the time-out is no unhandled rejection
      await Promise.race([
        pool,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`its workers did not start in ${POOL_TIMEOUT_MS / 1000} s`)), POOL_TIMEOUT_MS);
        }),
      ]);
    } catch (e) {
      note = `thread pool failed: ${errorMessage(e)}`;
      console.warn(`blipq worker: running on one thread, the ${note}`);
    } finally {
      clearTimeout(timer);
    }
  }
  // Fixes rayon's global pool: the one just started, else this thread alone.
  const threads = blipq.rayonThreads();
  return { threads, threadsNote: note, threadedBuild, crossOriginIsolated: !!self.crossOriginIsolated };
}

const ready = init({ module_or_path: new URL("../blipq_bg.wasm", import.meta.url) }).then(startThreads);
/** key → {captioner, info, weightBytes} */
const models = new Map();

class HttpError extends Error {
  constructor(url, status, statusText) {
    super(`${url} answered HTTP ${status}${statusText ? ` ${statusText}` : ""}${status === 404 ? " (file not found)" : ""}`);
    this.status = status;
  }
}

function jsHeapBytes() {
  return self.performance?.memory?.usedJSHeapSize ?? null;
}

async function openCache() {
  try {
    return self.caches ? await self.caches.open(CACHE_NAME) : null;
  } catch {
    return null; // e.g. an insecure origin or a browser with storage disabled
  }
}

/** Reads a response body with progress; one buffer when Content-Length is known and honest. */
async function readBody(response, onProgress) {
  const total = Number(response.headers.get("Content-Length")) || 0;
  const reader = response.body.getReader();
  let buffer = total ? new Uint8Array(total) : null;
  let chunks = buffer ? null : [];
  let loaded = 0;
  onProgress(0, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (buffer && loaded + value.length > total) {
      // Content-Length was the compressed size: fall back to collecting chunks.
      chunks = [buffer.subarray(0, loaded)];
      buffer = null;
    }
    if (buffer) buffer.set(value, loaded);
    else chunks.push(value);
    loaded += value.length;
    onProgress(loaded, total);
  }
  if (buffer) return loaded === total ? buffer : buffer.subarray(0, loaded);
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Downloads one file (or takes it from the cache). Returns null for a 404 when `optional`. */
async function fetchFile(url, cache, onProgress, optional) {
  let response = cache ? await cache.match(url) : undefined;
  const fromCache = !!response;
  if (!response) {
    try {
      response = await fetch(url, { mode: "cors" });
    } catch (e) {
      throw new Error(
        `could not download ${url}: the server did not answer, or it does not allow cross-origin ` +
          `requests (CORS). (${e.message})`,
      );
    }
    if (!response.ok) {
      if (optional && response.status === 404) return null;
      throw new HttpError(url, response.status, response.statusText);
    }
  }
  const bytes = await readBody(response, onProgress);
  if (!fromCache && cache) {
    const headers = {
      "Content-Type": response.headers.get("Content-Type") || "application/octet-stream",
      "Content-Length": String(bytes.length),
    };
    try {
      await cache.put(url, new Response(bytes, { headers }));
    } catch {
      // Quota exceeded: the model still loads, it just is not cached.
    }
  }
  return { bytes, fromCache };
}

/** All files of a checkpoint folder at `base`, with progress events per file. */
async function downloadCheckpoint(base, emit) {
  if (!/\/$/.test(base)) base += "/";
  const cache = await openCache();
  const files = {};
  const sizes = {};
  let fromCache = true;
  const get = async (name, optional) => {
    const url = new URL(name, base).href;
    const got = await fetchFile(
      url,
      cache,
      (loaded, total) => emit({ type: "progress", file: name, loaded, total }),
      optional,
    );
    if (got) {
      files[name] = got.bytes;
      sizes[name] = got.bytes.length;
      fromCache &&= got.fromCache;
      emit({ type: "progress", file: name, loaded: got.bytes.length, total: got.bytes.length, done: true, fromCache: got.fromCache });
    }
    return got;
  };
  // config.json first: a wrong URL fails fast, before the big download.
  for (const name of REQUIRED) await get(name, false);
  let pre = null;
  for (const name of PREPROCESSOR) {
    pre = await get(name, true);
    if (pre) break;
  }
  if (!pre) throw new Error(`${base} has neither ${PREPROCESSOR.join(" nor ")}`);
  for (const name of OPTIONAL) await get(name, true);
  return { files, sizes, fromCache };
}

/** Files picked or dropped by the user, keyed by name. */
async function readLocalFiles(list, emit) {
  const files = {};
  const sizes = {};
  for (const f of list) {
    emit({ type: "progress", file: f.name, loaded: 0, total: f.size });
    files[f.name] = new Uint8Array(await f.arrayBuffer());
    sizes[f.name] = f.size;
    emit({ type: "progress", file: f.name, loaded: f.size, total: f.size, done: true });
  }
  if (!files["model.safetensors"]) {
    const names = Object.keys(files).join(", ") || "nothing";
    throw new Error(
      `not a checkpoint: model.safetensors is missing (got ${names}). Pick the folder's ` +
        `config.json, model.safetensors, tokenizer.json and preprocessor_config.json together.`,
    );
  }
  return { files, sizes, fromCache: false };
}

async function loadModel(source, emit) {
  const got =
    source.kind === "url" ? await downloadCheckpoint(source.base, emit) : await readLocalFiles(source.files, emit);
  const weightBytes = got.files["model.safetensors"].length;
  const totalBytes = Object.values(got.sizes).reduce((a, b) => a + b, 0);
  emit({ type: "progress", stage: "building", file: "model.safetensors", loaded: weightBytes, total: weightBytes });
  const memBefore = wasmMemoryBytes();
  // The weights stay in this JS Uint8Array; the constructor copies one tensor at a time.
  const captioner = new Captioner(got.files);
  const memAfter = wasmMemoryBytes();
  return {
    captioner,
    info: captioner.info(),
    weightBytes,
    totalBytes,
    sizes: got.sizes,
    fromCache: got.fromCache,
    memBefore,
    memAfter,
  };
}

function model(key) {
  const m = models.get(key);
  if (!m) throw new Error(`model "${key}" is not loaded (load it first)`);
  return m;
}

async function imageBytes(image) {
  if (image instanceof Uint8Array) return image;
  if (image instanceof ArrayBuffer) return new Uint8Array(image);
  if (image && typeof image.arrayBuffer === "function") return new Uint8Array(await image.arrayBuffer());
  throw new Error("no image given");
}

const handlers = {
  hello: async () => ({ version: version(), wasmMemoryBytes: wasmMemoryBytes(), ...(await ready) }),

  load: async ({ key, source }, emit) => {
    const old = models.get(key);
    if (old) {
      return { ...old.summary, alreadyLoaded: true };
    }
    const m = await loadModel(source, emit);
    const summary = {
      info: m.info,
      files: m.sizes,
      weightBytes: m.weightBytes,
      totalBytes: m.totalBytes,
      fromCache: m.fromCache,
      memBefore: m.memBefore,
      memAfter: m.memAfter,
      wasmMemoryBytes: wasmMemoryBytes(),
    };
    models.set(key, { captioner: m.captioner, summary });
    return summary;
  },

  unload: async ({ key }) => {
    const m = models.get(key);
    if (m) {
      m.captioner.free();
      models.delete(key);
    }
    return { wasmMemoryBytes: wasmMemoryBytes() };
  },

  caption: async ({ key, image, options, references }, emit) => {
    const { captioner } = model(key);
    const bytes = await imageBytes(image);
    let updates = 0;
    const out = captioner.caption(bytes, options ?? {}, (text) => {
      updates += 1;
      emit({ type: "token", text, step: updates });
    });
    return {
      ...out,
      bleu4: references?.length ? bleu4(out.caption, references) : null,
      wasmMemoryBytes: wasmMemoryBytes(),
      jsHeapBytes: jsHeapBytes(),
      streamUpdates: updates,
    };
  },

  bench: async ({ source, items, imagesBase, options, warmup }, emit) => {
    const memBefore = wasmMemoryBytes();
    const m = await loadModel(source, () => {});
    const memAfterLoad = wasmMemoryBytes();
    const samples = [];
    const failures = [];
    const fetchImage = async (item) => {
      const url = new URL(item.file, imagesBase).href;
      const res = await fetch(url);
      if (!res.ok) throw new HttpError(url, res.status, res.statusText);
      return new Uint8Array(await res.arrayBuffer());
    };
    // Untimed warm-up captions on the first image, as `blipq bench --warmup` does.
    if (warmup > 0 && items.length) {
      const first = await fetchImage(items[0]).catch(() => null);
      for (let i = 0; first && i < warmup; i++) {
        try {
          m.captioner.caption(first, options ?? {});
        } catch {
          break;
        }
      }
    }
    for (const [i, item] of items.entries()) {
      try {
        const bytes = await fetchImage(item);
        const out = m.captioner.caption(bytes, options ?? {});
        const sample = {
          image: item.file,
          image_id: item.image_id ?? null,
          caption: out.caption,
          token_ids: out.tokenIds,
          new_tokens: out.newTokens,
          timings: out.timings,
        };
        samples.push(sample);
        emit({ type: "bench-progress", done: i + 1, total: items.length, sample });
      } catch (e) {
        if (e instanceof WebAssembly.RuntimeError) throw e;
        failures.push({ image: item.file, error: errorMessage(e) });
        emit({ type: "bench-progress", done: i + 1, total: items.length, failure: failures.at(-1) });
      }
    }
    const info = m.info;
    m.captioner.free();
    return {
      samples,
      failures,
      info,
      weightBytes: m.weightBytes,
      // Linear memory never shrinks: its size now is the peak of this worker's run.
      peakMemoryBytes: wasmMemoryBytes(),
      memBefore,
      memAfterLoad,
    };
  },
};

function errorMessage(e) {
  if (e instanceof Error) return e.message || String(e);
  return String(e);
}

// One request at a time, in arrival order (the model is not re-entrant and the CPU is shared).
let queue = Promise.resolve();
self.onmessage = (event) => {
  const msg = event.data ?? {};
  const { id, type } = msg;
  const emit = (m) => postMessage({ id, ...m });
  queue = queue.then(async () => {
    try {
      await ready;
      const handler = handlers[type];
      if (!handler) throw new Error(`unknown request "${type}"`);
      const result = await handler(msg, emit);
      postMessage({ id, ...result, type: "done" });
    } catch (e) {
      const fatal = e instanceof WebAssembly.RuntimeError;
      postMessage({
        id,
        type: "error",
        fatal,
        message: fatal
          ? `the WebAssembly module stopped (${errorMessage(e)}); this usually means it ran out of memory`
          : errorMessage(e),
      });
    }
  });
};
