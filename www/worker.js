// The inference worker: loads the wasm module (dist/blipq.js, a stable name because
// filehash = false; or dist/relaxed/blipq.js, the relaxed-SIMD build, where the engine has it), downloads checkpoints (streaming progress, Cache API), keeps loaded models
// and answers requests one at a time, so the page never waits on the model.
//
// Protocol. Page → worker: {id, type, ...}. Worker → page: any number of events
// {id, type: "progress" | "notice" | "token" | "bench-progress", ...} ("notice": {message}, e.g. a
// damaged cache entry that is downloaded again), then exactly one final reply:
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
//                                              threadedBuild, crossOriginIsolated, wasmBuild
//                                              ("relaxed-simd" | "simd128"), wasmBuildNote}
//   load {key, source}                      → {info, files, weightBytes, totalBytes, fromCache,
//                                              memBefore, memAfter}
//        source = {kind: "url", base} | {kind: "files", files: File[]} | {kind: "made", id}
//   unload {key}                            → {}
//   caption {key, image: Blob|ArrayBuffer, options, references?}
//                                           → token events {text}, then {caption, tokenIds,
//                                              newTokens, timings, bleu4, wasmMemoryBytes, jsHeapBytes}
//   quantize {source, label, title, from, scheme, options?}   (sent to a fresh worker; scheme:
//        "q8_0" (default), "int8-channel", "q4_0", "q4_g128", "mixed", "f16" or "bf16", as
//        `blipq quantize --scheme`; options: {sizeBudget?, qualityFloor?} for mixed,
//        {calibrate: true} for the 4-bit schemes and int8-channel)
//                                           → progress and quantize-progress {stage: "start" |
//                                              "calibrate" | "hash" | "quantize" | "reference" | "sweep" |
//                                              "plan" | "write" | "store", done, total}
//                                              events, then {manifest, alreadyKept?,
//                                              peakMemoryBytes, memBefore}; or, if the browser
//                                              would not keep the files, {manifest, files,
//                                              storeError}
//   bench {source, items, imagesBase, images?, options, warmup}   (sent to a fresh worker per
//        model; `images`: the items' image files, else they are fetched from imagesBase)
//                                           → bench-progress events, then {samples, failures,
//                                              info, weightBytes, peakMemoryBytes, device,
//                                              memBefore, memAfter}
//
// Downloads and the Cache. A download is held to its Content-Length: a body that breaks off or
// ends short is an error naming the file and the byte counts. Weights whose safetensors header
// shows they cannot fit into wasm memory are refused as soon as that header has arrived. Files
// go into the Cache (CACHE_NAME) only once the whole checkpoint has downloaded, just before it
// is built (so the store's copy is never made next to the built model), each entry with its
// size (X-Blipq-Size) and read back to check it; an entry read later must still have that size,
// else it is deleted and downloaded again. A checkpoint that fails to build has its cached files
// deleted (unless memory was short, which says nothing about the files). A fetch() that throws (no HTTP answer: unreachable, or refused by CORS)
// is explained in plain words.
//
import { CACHE_NAME, fileLabel, madeSuffix, SCHEMES } from "./common.js";
import {
  cachedFile,
  errorMessage,
  fileName,
  fmtBytes,
  listMade,
  putMade,
  readBody,
  readMade,
  storeInCache,
} from "./store.js";

/**
 * A module with one `i32x4.relaxed_dot_i8x16_i7x16_add_s`: it validates only in engines with
 * relaxed SIMD, which can then load the relaxed build (the INT8 kernel the page's relaxed/ folder
 * holds, scripts/web.sh); any other engine would refuse that whole module.
 */
const RELAXED_SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // types: () -> v128
  0x03, 0x02, 0x01, 0x00, // one function of type 0
  0x0a, 0x13, 0x01, 0x11, 0x00, // code: one body of 17 bytes, no locals
  0x41, 0x01, 0xfd, 0x0f, // i32.const 1, i8x16.splat
  0x41, 0x02, 0xfd, 0x0f, // i32.const 2, i8x16.splat
  0x41, 0x03, 0xfd, 0x11, // i32.const 3, i32x4.splat
  0xfd, 0x93, 0x02, // i32x4.relaxed_dot_i8x16_i7x16_add_s
  0x0b, // end
]);

/**
 * Loads and instantiates the relaxed-SIMD build where the engine has relaxed SIMD, else (or if
 * that fails) the simd128 one (every engine with fixed-width SIMD). `?simd=simd128` on this
 * script's URL (the page passes its own) forces the simd128 build, e.g. to compare the two in
 * one browser. Resolves to {blipq, buildNote}: the initialized bindings (a namespace:
 * `initThreadPool` exists in the threaded builds only, and a named import of a missing export
 * would fail the whole module).
 */
async function importBuild() {
  const asked = new URL(self.location.href).searchParams.get("simd");
  let note = null;
  if (asked === "simd128") note = "simd128 requested";
  else if (!WebAssembly.validate(RELAXED_SIMD_PROBE)) note = "this browser has no relaxed SIMD";
  else {
    try {
      const blipq = await import("../relaxed/blipq.js");
      await blipq.default({ module_or_path: new URL("../relaxed/blipq_bg.wasm", import.meta.url) });
      return { blipq, buildNote: null };
    } catch (e) {
      // A dist/ built without it (a plain `trunk build`, or `scripts/web.sh serve`), or a
      // module that did not load: the simd128 build runs everywhere.
      note = `no relaxed-SIMD build here (${errorMessage(e)})`;
      console.warn(`blipq worker: loading the simd128 build: ${note}`);
    }
  }
  const blipq = await import("../blipq.js");
  await blipq.default({ module_or_path: new URL("../blipq_bg.wasm", import.meta.url) });
  return { blipq, buildNote: note };
}

/**
 * The loaded build's bindings: set before `ready` (below) resolves, and every request waits for
 * it. (No top-level await: the message handler must exist before the module's first await, or
 * the page's first requests would find none.)
 */
let blipq, Captioner, version, wasmMemoryBytes, bleu4;

/** The checkpoint's file names, as the engine reads them (set with the bindings). */
let FILES;

/** Upper bound of the default pool size: beyond it memory bandwidth, not cores, limits. */
const MAX_THREADS = 8;
/** Give up on a pool whose workers did not all start within this time (and run on one thread). */
const POOL_TIMEOUT_MS = 30_000;

/** Starts rayon's pool when this build and page can; resolves to {threads, threadsNote}. */
async function startThreads(buildNote) {
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
  return {
    threads,
    threadsNote: note,
    threadedBuild,
    crossOriginIsolated: !!self.crossOriginIsolated,
    wasmBuild: blipq.wasmBuild(),
    wasmBuildNote: buildNote,
  };
}

const ready = importBuild().then((build) => {
  blipq = build.blipq;
  ({ Captioner, version, wasmMemoryBytes, bleu4 } = blipq);
  FILES = blipq.checkpointFileNames();
  return startThreads(build.buildNote);
});
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

/**
 * A readBody inspector for model.safetensors: the engine's `checkWeightsPrefix` judges the
 * header as soon as it has arrived (the format's rules, and whether the weights fit in wasm
 * memory next to what is in use), so a file that cannot load stops downloading after its header.
 * The engine checks everything again once the whole file is there.
 */
function weightsFitCheck() {
  return (prefix, total) => {
    try {
      return blipq.checkWeightsPrefix(prefix);
    } catch (e) {
      const of = total ? ` of ${fmtBytes(total)}` : "";
      throw new Error(
        `${e?.message ?? e}. The download stopped after the file's header ` +
          `(${fmtBytes(prefix.length)}${of} bytes); nothing was cached.`,
      );
    }
  };
}

/** Why a fetch() of `url` threw (it does so only when no HTTP response arrived), in plain words. */
function networkFailure(url, e) {
  console.warn(`blipq worker: fetch ${url} failed: ${errorMessage(e)}`);
  const origin = new URL(url).origin;
  if (origin === self.location.origin) {
    return new Error(`could not download ${url}: the server did not answer (is it still running, and is the network up?)`);
  }
  return new Error(
    `could not download ${url}: the server at ${origin} is unreachable, or it does not allow ` +
      `cross-origin requests (CORS) from this page; it must answer with an ` +
      `Access-Control-Allow-Origin header`,
  );
}

/**
 * Downloads one file, or takes it from the cache. Returns null for a 404 when `optional`, else
 * {bytes, fromCache, contentType}. Nothing is cached here: see downloadCheckpoint. `fitCheck`:
 * stop a model.safetensors download whose weights cannot load into wasm memory (not wanted
 * when the file is only quantized, which never loads it whole).
 */
async function fetchFile(url, cache, onProgress, optional, onDamaged, fitCheck = true) {
  const name = fileName(url);
  const cached = cache ? await cachedFile(cache, url, onProgress, onDamaged) : null;
  if (cached) return { bytes: cached, fromCache: true };
  let response;
  try {
    // no-store: the Cache API keeps the file (verified); the HTTP cache need not keep it twice.
    response = await fetch(url, { mode: "cors", cache: "no-store" });
  } catch (e) {
    throw networkFailure(url, e);
  }
  if (!response.ok) {
    response.body?.cancel().catch(() => {});
    if (optional && response.status === 404) return null;
    throw new HttpError(url, response.status, response.statusText);
  }
  // The safetensors header says early whether the weights can fit; a pickle is judged once read.
  const inspect = fitCheck && name === FILES.weights[0] ? weightsFitCheck() : null;
  const bytes = await readBody(response, name, onProgress, inspect);
  return { bytes, fromCache: false, contentType: response.headers.get("Content-Type") };
}

/**
 * All files of a checkpoint folder at `base`, with progress events per file. Returns {files,
 * sizes, fromCache, store, forget}: `store()` puts the files just downloaded into the Cache and
 * `forget()` deletes every cached file of this folder. Nothing is stored before every file has
 * downloaded, and loadModel forgets a checkpoint that does not build, so the Cache never keeps
 * a file of a folder that failed to download or to load; files taken from the Cache stay there
 * when a later file fails to download. Options:
 * `fitCheck` (see fetchFile) and `extras` (also fetch FILES.extra, optionally: the files a
 * checkpoint made from this one carries along).
 */
async function downloadCheckpoint(base, emit, { fitCheck = true, extras = false } = {}) {
  if (!/\/$/.test(base)) base += "/";
  const cache = await openCache();
  const files = {};
  const sizes = {};
  const downloaded = [];
  const urls = [];
  let fromCache = true;
  const onDamaged = (message) => emit({ type: "notice", message });
  const get = async (name, optional) => {
    const url = new URL(name, base).href;
    urls.push(url);
    const got = await fetchFile(
      url,
      cache,
      (loaded, total) => emit({ type: "progress", file: name, loaded, total }),
      optional,
      onDamaged,
      fitCheck,
    );
    if (got) {
      files[name] = got.bytes;
      sizes[name] = got.bytes.length;
      fromCache &&= got.fromCache;
      if (!got.fromCache) downloaded.push({ url, bytes: got.bytes, contentType: got.contentType });
      emit({ type: "progress", file: name, loaded: got.bytes.length, total: got.bytes.length, done: true, fromCache: got.fromCache });
    }
    return got;
  };
  // config.json first: a wrong URL fails fast, before the big download.
  for (const name of FILES.required) await get(name, false);
  // The first weights file present (model.safetensors, else pytorch_model.bin): a 404 on one is
  // not an error while another may follow.
  let weights = null;
  for (const name of FILES.weights) {
    weights = await get(name, true);
    if (!weights) continue;
    // A sharded checkpoint: its index names the shards, each one required.
    if (name === FILES.shardedIndex) for (const shard of blipq.shardNames(weights.bytes)) await get(shard, false);
    break;
  }
  if (!weights) {
    throw new Error(`${base} has no weights: ${FILES.weights.join(", ")} are all not found (HTTP 404)`);
  }
  let pre = null;
  for (const name of FILES.preprocessor) {
    pre = await get(name, true);
    if (pre) break;
  }
  if (!pre) throw new Error(`${base} has neither ${FILES.preprocessor.join(" nor ")}`);
  for (const name of FILES.optional) await get(name, true);
  // Files the engine does not read, carried along by a checkpoint made from this one.
  if (extras) for (const name of FILES.extra) await get(name, true);
  return {
    files,
    sizes,
    fromCache,
    store: async () => {
      if (cache) for (const d of downloaded) await storeInCache(cache, d.url, d.bytes, d.contentType);
    },
    forget: () => forget(cache, urls),
  };
}

async function forget(cache, urls) {
  if (cache) for (const url of urls) await cache.delete(url).catch(() => {});
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
  if (!weightsName(files)) {
    const names = Object.keys(files).join(", ") || "nothing";
    throw new Error(
      `not a checkpoint: ${FILES.weights.join(" or ")} is missing (got ${names}). Pick the folder's ` +
        `${FILES.required.join(", ")}, ${FILES.weights[0]} and ${FILES.preprocessor[0]} together.`,
    );
  }
  return { files, sizes, fromCache: false };
}

/** The weights file among `files` the engine reads (the first of FILES.weights present). */
function weightsName(files) {
  return FILES.weights.find((name) => files[name]);
}

/** Bytes of the weights: the weights file's, or for a sharded checkpoint its shards' and index's. */
function weightsBytes(files) {
  const name = weightsName(files);
  if (name !== FILES.shardedIndex) return files[name].length;
  const shards = new Set(blipq.shardNames(files[name]));
  return Object.entries(files)
    .filter(([n]) => n === name || shards.has(n))
    .reduce((sum, [, bytes]) => sum + bytes.length, 0);
}

/**
 * A made checkpoint kept in this browser (www/store.js), read with progress events like a
 * download from the cache. No network.
 */
async function readKept(id, emit) {
  const done = new Set();
  const got = await readMade(id, (file, loaded, total) => {
    emit({ type: "progress", file, loaded, total, fromCache: true, done: loaded === total && !done.has(file) });
    if (loaded === total) done.add(file);
  });
  return { files: got.files, sizes: got.sizes, fromCache: true };
}

/**
 * A checkpoint's files from where `source` says: {kind: "url", base} (downloaded, or from the
 * Cache), {kind: "files", files} (picked by the user) or {kind: "made", id} (made in this
 * browser). `options` go to downloadCheckpoint.
 */
function checkpointFiles(source, emit, options) {
  switch (source?.kind) {
    case "url":
      return downloadCheckpoint(source.base, emit, options);
    case "files":
      return readLocalFiles(source.files, emit);
    case "made":
      return readKept(source.id, emit);
    default:
      throw new Error(`unknown model source ${JSON.stringify(source?.kind)}`);
  }
}

async function loadModel(source, emit) {
  const got = await checkpointFiles(source, emit);
  const weights = weightsName(got.files);
  const weightBytes = weightsBytes(got.files);
  const totalBytes = Object.values(got.sizes).reduce((a, b) => a + b, 0);
  emit({ type: "progress", stage: "building", file: weights, loaded: weightBytes, total: weightBytes });
  // Into the Cache before the model is built, while only the download is in memory: storing
  // copies each file once more, which next to the built model would put the file twice on top
  // of it (the renderer's peak). A checkpoint that then fails to build is deleted again.
  await got.store?.();
  const memBefore = wasmMemoryBytes();
  let captioner;
  try {
    // The weights stay in this JS Uint8Array; the constructor copies one tensor at a time.
    captioner = new Captioner(got.files);
  } catch (e) {
    // The files did not make a model: a cached one may be corrupt (the right size, the wrong
    // bytes), so drop them all and download afresh next time. Not when memory was short, which
    // says nothing about the files.
    const memory = e instanceof WebAssembly.RuntimeError || /too large for wasm memory/.test(errorMessage(e));
    if (!memory) await got.forget?.();
    throw e;
  }
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
  if (image && typeof image.arrayBuffer === "function") {
    // A picked file over the engine's image cap is refused before it is read into memory.
    blipq.checkFileSize("image", image.name ?? "the image", image.size);
    return new Uint8Array(await image.arrayBuffer());
  }
  throw new Error("no image given");
}

const handlers = {
  hello: async () => {
    const started = await ready;
    return { version: version(), wasmMemoryBytes: wasmMemoryBytes(), ...started };
  },

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

  quantize: async ({ source, label, title, from, scheme = "q8_0", options = null }, emit) => {
    const kind = SCHEMES[scheme];
    if (!kind) throw new Error(`unknown scheme "${scheme}" (expected ${Object.keys(SCHEMES).join(", ")})`);
    // Sent to a fresh worker (like bench): the source's files and the INT8 result occupy its
    // wasm memory only, which is given back when the page ends that worker.
    const memBefore = wasmMemoryBytes();
    const got = await checkpointFiles(source, emit, { fitCheck: false, extras: true });
    const weights = weightsName(got.files);
    emit({ type: "quantize-progress", stage: "start", done: 0, total: 1 });
    const started = performance.now();
    const out = blipq.quantizeCheckpoint(
      got.files,
      (stage, done, total) => emit({ type: "quantize-progress", stage, done, total }),
      scheme,
      options,
    );
    const seconds = (performance.now() - started) / 1000;
    const peakMemoryBytes = wasmMemoryBytes();
    // The source made a model: keep what was downloaded for it, as a load would.
    await got.store?.();
    const slug = fileLabel(label);
    const suffix = madeSuffix(scheme, options);
    const manifest = {
      id: `${slug}-${suffix}-${out.sourceSha256.slice(0, 12)}`,
      label: `${slug}-${suffix}`,
      title:
        (scheme === "mixed" ? `${title} ${kind.name} ${(100 * out.plan.size_budget).toFixed(0)}%` : `${title} ${kind.name}`) +
        (options?.calibrate ? " calibrated" : ""),
      calibrated: Boolean(options?.calibrate),
      from,
      scheme,
      format: kind.format,
      createdAt: new Date().toISOString(),
      sha256: out.sha256,
      sourceSha256: out.sourceSha256,
      sourceWeights: weights,
      sourceBytes: weightsBytes(got.files),
      summary: out.summary,
      plan: out.plan,
      seconds,
    };
    const kept = (await listMade()).find((m) => m.id === manifest.id);
    if (kept) return { manifest: kept, alreadyKept: true, peakMemoryBytes, memBefore };
    emit({ type: "quantize-progress", stage: "store", done: 0, total: 1 });
    try {
      const stored = await putMade(manifest, out.files);
      return { manifest: stored, peakMemoryBytes, memBefore };
    } catch (e) {
      // Nothing lost: the files go to the page, which offers them for download.
      const files = {};
      for (const [name, bytes] of Object.entries(out.files)) files[name] = bytes;
      return { manifest, files, storeError: errorMessage(e), peakMemoryBytes, memBefore };
    }
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

  bench: async ({ source, items, imagesBase, images: given, options, warmup }, emit) => {
    const memBefore = wasmMemoryBytes();
    const m = await loadModel(source, () => {});
    const memAfterLoad = wasmMemoryBytes();
    // The user's own images come as files (one per item); the eval set's are fetched.
    const fetchImage = async (item, i) => {
      if (given) return imageBytes(given[i]);
      const url = new URL(item.file, imagesBase).href;
      const res = await fetch(url);
      if (!res.ok) throw new HttpError(url, res.status, res.statusText);
      return new Uint8Array(await res.arrayBuffer());
    };
    // The images first, a few at a time, with progress (a failed fetch becomes that item's
    // failure message), then the library's benchmark loop, the one `blipq bench` runs: warm-up
    // captions, samples, failures.
    const images = new Array(items.length);
    let fetched = 0;
    let next = 0;
    const fetcher = async () => {
      while (next < items.length) {
        const i = next++;
        images[i] = await fetchImage(items[i], i).catch((e) => errorMessage(e));
        fetched += 1;
        emit({ type: "bench-fetch", done: fetched, total: items.length });
      }
    };
    await Promise.all(Array.from({ length: Math.min(BENCH_FETCHES, items.length) }, fetcher));
    if (warmup) emit({ type: "bench-warmup", warmup });
    const { samples, failures } = m.captioner.bench(items, images, options ?? null, warmup ?? 0, (done, outcome) =>
      emit({ type: "bench-progress", done, total: items.length, ...outcome }),
    );
    const info = m.info;
    m.captioner.free();
    return {
      samples,
      failures,
      info,
      weightBytes: m.weightBytes,
      // Linear memory never shrinks: its size now is the peak of this worker's run.
      peakMemoryBytes: wasmMemoryBytes(),
      // This worker's build and threads (the page's own module is neither).
      device: blipq.browserDevice(),
      memBefore,
      memAfterLoad,
    };
  },
};

/** Image downloads in flight at once while a benchmark fetches its images. */
const BENCH_FETCHES = 6;

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
