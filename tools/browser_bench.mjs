#!/usr/bin/env node
// browser_bench.mjs: time blipq's wasm build in headless Chromium (issue 4's browser targets).
//
// A measurement tool, not part of CI. Usage:
//
//   node tools/browser_bench.mjs --dist dist --model /work/cache/base --model /work/cache/base-int8 \
//       --image data/validation/coffee.jpg [--tokens 20] [--warmup 1] [--runs 3] [--threads 1,auto] \
//       [--builds simd128,relaxed-simd] [--native-int8-1t S] [--no-cache-storage] [--json out.json]
//
// Options:
//   --dist DIR        wasm-bindgen `web` output holding blipq.js + blipq_bg.wasm (trunk's dist/, or
//                     `wasm-bindgen --target web --out-name blipq` output). Default: dist
//   --model DIR       checkpoint directory (config.json, tokenizer.json, preprocessor_config.json
//                     or processor_config.json, optionally tokenizer_config.json and
//                     generation_config.json, and the weights: model.safetensors, else a sharded
//                     model.safetensors.index.json and its shards, else pytorch_model.bin — the
//                     worker's own order). Repeatable; required.
//   --image FILE      image to caption (PNG/JPEG/WebP/GIF/BMP). Required.
//   --tokens N        exact number of new tokens per caption (`fixedNewTokens`). Default: 20
//   --warmup N        untimed captions before the timed ones. Default: 1
//   --runs N          timed captions (the table shows their median). Default: 3
//   --threads LIST    comma-separated rayon pool sizes to run every model with: a number, or
//                     "auto" (navigator.hardwareConcurrency, at most 8, as the page does). 1 =
//                     no pool, the single-threaded path. More than 1 needs the threaded build
//                     (scripts/web.sh build). Default: auto
//   --builds LIST     the wasm builds to run, side by side for every model and thread count:
//                     "simd128" (DIST/blipq.js, what every engine loads) and "relaxed-simd"
//                     (DIST/relaxed/blipq.js, scripts/web.sh's second build, the page's choice
//                     where the engine has relaxed SIMD). Default: both when DIST/relaxed exists
//   --native-int8-1t S  native one-thread INT8 s/caption of the same model and image (e.g. from
//                     tools/peer_compare.py), for the "browser ≤ 2.5× native" target line
//   --no-cache-storage  hide Cache Storage (`self.caches`) from the inference worker, set through
//                     the DevTools protocol before its script runs, so the page's Cache store of the
//                     download after loading is left out, as on a host without Cache Storage
//   --json FILE       also write every measurement as JSON
//   --chromium PATH   browser binary. Default: /usr/bin/chromium
//   --timeout-min N   give up on one model after N minutes. Default: 30
//   --port N          port on 127.0.0.1 (0 = any free one). Default: 0
//   --headed          show the browser (debugging)
//
// What it does: serves --dist, each --model directory and the image over node's http on
// 127.0.0.1 with the COOP/COEP headers (so the page is cross-origin isolated and may share wasm
// memory with threads), plus a small harness page (/__bench__/index.html) that drives the
// page's own inference worker (www/worker.js through www/worker-client.js, the page's client),
// and drives the system Chromium through playwright-core. For each thread count, model and
// build, in a freshly launched browser (empty Cache, new processes, so the process peaks below
// belong to that one model) with a fresh worker (one model per wasm instance), the harness sends
// the page's requests:
//   1. hello: the worker loads its build (relaxed SIMD where the engine has it, or simd128 with
//      `?simd=simd128`) and starts its thread pool (`?threads=N`), exactly as for the page,
//   2. load: the worker downloads the checkpoint by the engine's file names and builds the model;
//      "fetch s" runs to the end of the download, "load s" from there until the model is ready
//      (including the page's Cache store); wasm memory before and after building (it only grows,
//      so "after" is the peak while loading; the weight file itself stays in JS memory),
//   3. caption, --warmup times untimed, then --runs times with `{fixedNewTokens: N}`,
// and posts the results back. Prints two Markdown tables (a row per model, build and thread
// count: timings, then memory) and checks issue 10's browser targets (meant for the
// `blipq synth --preset base` checkpoints): INT8 <= 2.0 s per caption on 2 threads and <= 3.5 s
// on one, INT8 at least 2x faster than FP32 (same build and threads), one-thread INT8 <= 2.5x
// native one-thread INT8 (with --native-int8-1t), and wasm memory after loading <= 1.3x the size
// of the weights file.
//
// Memory (every figure in MB of 2^20 bytes):
//   - weights in JS: the weights file's bytes, which the worker holds in one JS buffer (allocated
//     at its Content-Length) from the download until the model is built;
//   - peak JS: the most the harness page and its inference worker held in JS at once, V8 heap
//     plus ArrayBuffer backing stores (the weights buffer among them; the wasm memory, a shared
//     buffer, is not), sampled every SAMPLE_MS through the DevTools protocol
//     (Runtime.getHeapUsage; the pool's workers, which only run wasm, are not sampled). A busy
//     worker answers when it next checks for interrupts, so a short spike can fall between samples;
//   - JS after load: what the page and its worker still hold once the model is built, read while
//     the harness pauses (the worker idle) right after the load reply, after a forced GC
//     (HeapProfiler.collectGarbage), so garbage is not counted (a GC a real page would run
//     later, or not at all before its captions; the captions are timed after the pause);
//   - wasm after load, and peak wasm (after the last caption: wasm memory never shrinks);
//   - renderer peak RSS: VmHWM in /proc/PID/status of the renderer process (the page, its
//     worker and the pool's workers are threads of that one process), read after the captions
//     and while sampling, so a renderer that crashes still has its last reading; Linux only.
//     It includes the page's Cache store of the download after the build (measured: up to twice
//     the weights file more, while the worker still holds the file and wasm the loaded model;
//     compare --no-cache-storage). Also its RSS (VmRSS) at the pause after loading;
//   - browser peak RSS: VmHWM of the browser's main process, which also keeps the Cache Storage
//     (the page stores the downloaded files there once the model is built; in-memory here, as
//     the bench's browser context is off the record).
//
// playwright-core is imported from tests/e2e/node_modules when present, else from
// tools/node_modules:   npm install --no-save --prefix tools playwright-core
// No browser is downloaded: the system Chromium is driven (never run `npx playwright install`).

import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { CHROMIUM_ARGS } from "../tests/e2e/chromium.mjs";
import { serveStatic } from "../tests/e2e/server.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..");

/** Each wasm build's folder in the dist tree (scripts/web.sh puts the relaxed one in relaxed/). */
const BUILDS = { simd128: "", "relaxed-simd": "relaxed" };

/** The weights files the worker looks for, in its order (www/worker.js, FILES.weights). */
const WEIGHTS_FILES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];

/** How often the JS heap and the processes' memory are sampled while a model runs. */
const SAMPLE_MS = 200;


const USAGE = `usage: node tools/browser_bench.mjs --dist DIR --model DIR [--model DIR]... --image FILE
       [--tokens 20] [--warmup 1] [--runs 3] [--threads auto] [--builds simd128,relaxed-simd]
       [--native-int8-1t S] [--no-cache-storage] [--json FILE] [--chromium /usr/bin/chromium]
       [--timeout-min 30] [--port 0] [--headed]`;

function fail(msg) {
  console.error(`browser_bench: ${msg}`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    dist: "dist",
    models: [],
    image: null,
    tokens: 20,
    warmup: 1,
    runs: 3,
    builds: null,
    nativeInt8OneThread: null,
    json: null,
    chromium: "/usr/bin/chromium",
    timeoutMin: 30,
    port: 0,
    headed: false,
    noCacheStorage: false,
    threads: [0],
  };
  const ints = { "--tokens": "tokens", "--warmup": "warmup", "--runs": "runs", "--port": "port" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value\n${USAGE}`);
      return argv[++i];
    };
    if (a === "-h" || a === "--help") {
      console.log(USAGE);
      process.exit(0);
    } else if (a === "--dist") opts.dist = value();
    else if (a === "--model") opts.models.push(value());
    else if (a === "--image") opts.image = value();
    else if (a === "--json") opts.json = value();
    else if (a === "--chromium") opts.chromium = value();
    else if (a === "--headed") opts.headed = true;
    else if (a === "--no-cache-storage") opts.noCacheStorage = true;
    else if (a === "--builds") {
      opts.builds = value().split(",");
      for (const b of opts.builds) if (!(b in BUILDS)) fail(`--builds takes ${Object.keys(BUILDS).join(", ")}, got ${b}`);
    } else if (a === "--native-int8-1t") {
      opts.nativeInt8OneThread = Number(value());
      if (!(opts.nativeInt8OneThread > 0)) fail("--native-int8-1t must be a positive number of seconds");
    } else if (a === "--threads") {
      opts.threads = value()
        .split(",")
        .map((t) => {
          if (t === "auto") return 0;
          if (!/^\d+$/.test(t) || Number(t) < 1) fail(`--threads takes positive integers or "auto", got ${t}`);
          return Number(t);
        });
    }
    else if (a === "--timeout-min") {
      opts.timeoutMin = Number(value());
      if (!(opts.timeoutMin > 0)) fail("--timeout-min must be a positive number");
    } else if (a in ints) {
      const v = value();
      if (!/^\d+$/.test(v)) fail(`${a} expects a non-negative integer, got ${v}`);
      opts[ints[a]] = Number(v);
    } else fail(`unknown argument ${a}\n${USAGE}`);
  }
  if (opts.models.length === 0) fail(`at least one --model is required\n${USAGE}`);
  if (!opts.image) fail(`--image is required\n${USAGE}`);
  if (opts.runs < 1) fail("--runs must be at least 1");
  if (opts.tokens < 1) fail("--tokens must be at least 1");
  opts.dist = resolve(opts.dist);
  opts.image = resolve(opts.image);
  opts.models = opts.models.map((m) => resolve(m));
  opts.builds ??= existsSync(join(opts.dist, BUILDS["relaxed-simd"], "blipq_bg.wasm")) ? ["simd128", "relaxed-simd"] : ["simd128"];
  for (const b of opts.builds) {
    for (const f of ["blipq.js", "blipq_bg.wasm"]) {
      const path = join(opts.dist, BUILDS[b], f);
      if (!existsSync(path)) fail(`${path} not found (build the wasm first: scripts/web.sh build --release)`);
    }
  }
  for (const m of opts.models) {
    if (!weightsFile(m)) fail(`${m} has none of ${WEIGHTS_FILES.join(", ")}`);
  }
  if (!existsSync(opts.image)) fail(`image ${opts.image} not found`);
  if (!existsSync(opts.chromium)) fail(`browser ${opts.chromium} not found (--chromium PATH)`);
  return opts;
}

async function loadPlaywright() {
  const candidates = [
    join(REPO, "tests", "e2e", "node_modules", "playwright-core", "index.mjs"),
    join(REPO, "tools", "node_modules", "playwright-core", "index.mjs"),
  ];
  for (const c of candidates) {
    if (existsSync(c)) return import(pathToFileURL(c).href);
  }
  fail(
    "playwright-core not found in tests/e2e/node_modules or tools/node_modules; install it with\n" +
      "  npm install --no-save --prefix tools playwright-core",
  );
}

// ---------------------------------------------------------------------------------------------
// The harness page served at /__bench__/index.html: it drives the page's own inference worker
// (www/worker.js, through www/worker-client.js) with the page's requests — hello, load, caption —
// so what is timed is exactly what a user of the page gets: the worker picks the build (relaxed
// SIMD where the engine has it; `?simd=simd128` forces simd128) and starts the thread pool
// (`?threads=N`) as it does for the page, and downloads the checkpoint with the page's rules.

const HARNESS_HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>blipq browser bench</title><link rel="icon" href="data:,"></head>
<body>
<pre id="log"></pre>
<script type="module">
import { WorkerClient } from "../www/worker-client.js";

const job = JSON.parse(new URLSearchParams(location.search).get("job"));
const now = () => performance.now() / 1000;
const log = (text) => {
  document.getElementById("log").textContent += text + "\\n";
  console.log("[bench] " + text);
};
window.benchResult = (async () => {
  const out = { ok: false, stage: "init" };
  try {
    let fatal = null;
    const client = new WorkerClient((message) => { fatal = message; });
    let t = now();
    const hello = await client.request("hello");
    out.init_s = now() - t;
    out.version = hello.version;
    out.wasm_build = hello.wasmBuild;
    out.threads = hello.threads;
    out.threads_note = hello.threadsNote;
    out.cross_origin_isolated = hello.crossOriginIsolated;
    out.wasm_bytes_after_init = hello.wasmMemoryBytes;
    if (job.threads && out.threads !== job.threads) {
      throw new Error("asked for " + job.threads + " thread(s), the worker runs " + out.threads + (hello.threadsNote ? " (" + hello.threadsNote + ")" : ""));
    }
    log("worker ready (blipq " + out.version + ", " + out.wasm_build + ", " + out.threads + " thread(s)) in " + out.init_s.toFixed(2) + " s");

    out.stage = "load";
    t = now();
    let building = null;
    const loaded = await client.request("load", { key: "m", source: { kind: "url", base: job.modelUrl } }, (ev) => {
      if (ev.type === "progress" && ev.stage === "building" && building === null) building = now();
    });
    const done = now();
    out.fetch_s = (building ?? done) - t;
    out.load_s = done - (building ?? t);
    out.weights_bytes = loaded.weightBytes;
    out.fetched_bytes = loaded.totalBytes;
    out.wasm_bytes_before_load = loaded.memBefore;
    out.wasm_bytes_after_load = loaded.memAfter;
    out.info = loaded.info;
    // The bench's own pause (the worker is idle): a forced GC, then the memory still held.
    if (window.benchAfterLoad) out.after_load = await window.benchAfterLoad();
    log("downloaded in " + out.fetch_s.toFixed(2) + " s, built in " + out.load_s.toFixed(2) + " s; wasm memory " + (out.wasm_bytes_after_load / 2 ** 20).toFixed(1) + " MB (2^20 bytes)");

    out.stage = "caption";
    const res = await fetch(job.imageUrl, { cache: "no-store" });
    if (!res.ok) throw new Error("GET " + job.imageUrl + ": HTTP " + res.status);
    const image = await res.arrayBuffer();
    const one = async (label) => {
      let callbacks = 0;
      const t0 = now();
      const r = await client.request("caption", { key: "m", image: image.slice(0), options: { fixedNewTokens: job.tokens } }, (ev) => {
        if (ev.type === "token") callbacks++;
      });
      const wall = now() - t0;
      out.wasm_bytes_after_caption = r.wasmMemoryBytes;
      log(label + ": " + r.timings.total_s.toFixed(2) + " s (vision " + r.timings.vision_s.toFixed(2) + ", decode " + r.timings.decode_s.toFixed(2) + "), " + r.newTokens + " tokens: " + JSON.stringify(r.caption));
      return { caption: r.caption, tokenIds: r.tokenIds, newTokens: r.newTokens, timings: r.timings, wall_s: wall, callbacks };
    };
    out.warmup = [];
    for (let i = 0; i < job.warmup; i++) out.warmup.push(await one("warm-up " + (i + 1) + "/" + job.warmup));
    out.runs = [];
    for (let i = 0; i < job.runs; i++) out.runs.push(await one("run " + (i + 1) + "/" + job.runs));
    client.terminate();
    out.stage = "done";
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.message ? e.message : e);
  }
  return out;
})();
</script>
</body>
</html>
`;

// ---------------------------------------------------------------------------------------------
// The loopback host (tests/e2e/server.mjs, the e2e test's): dist/ at the root, each model folder
// at /__models__/<i>/, the image's folder at /__image__/, the harness at /__bench__/.

function startServer(opts) {
  const mounts = Object.fromEntries(opts.models.map((dir, i) => [`/__models__/${i}/`, dir]));
  mounts["/__image__/"] = dirname(opts.image);
  const pages = { "/__bench__/index.html": HARNESS_HTML, "/__bench__/": HARNESS_HTML };
  return serveStatic(opts.dist, { mounts, pages, port: opts.port });
}

// ---------------------------------------------------------------------------------------------
// Memory figures beyond the worker's own (see the header): the weights file the worker will
// take, the renderer's and the browser's peak RSS from /proc, and the page's and worker's JS
// memory through the DevTools protocol.

/** The weights file of `dir` the worker takes ({name, bytes}; a sharded index counts its shards), or null. */
function weightsFile(dir) {
  for (const name of WEIGHTS_FILES) {
    const path = join(dir, name);
    if (!existsSync(path)) continue;
    if (name.endsWith(".index.json")) {
      const shards = new Set(Object.values(JSON.parse(readFileSync(path, "utf8")).weight_map ?? {}));
      let bytes = 0;
      for (const shard of shards) bytes += existsSync(join(dir, shard)) ? statSync(join(dir, shard)).size : 0;
      return { name, bytes };
    }
    return { name, bytes: statSync(path).size };
  }
  return null;
}

/**
 * The Chromium processes this node process started (the browser and everything under it:
 * zygotes, renderers, utility processes), as [{pid, type, hwm, rss}] with `type` Chromium's
 * --type= ("browser" for the main process) and the peak and current RSS in bytes. Chromium
 * rewrites its command line into one space-separated string, hence the split on spaces too.
 */
function chromiumProcesses() {
  const parent = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // The parent pid is the 2nd field after the parenthesized command name.
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const ours = (pid) => {
    for (let p = parent.get(pid), hops = 0; p && hops < 16; p = parent.get(p), hops++) if (p === process.pid) return true;
    return false;
  };
  const out = [];
  for (const pid of parent.keys()) {
    if (!ours(pid)) continue;
    try {
      if (!/chrom/i.test(basename(readlinkSync(`/proc/${pid}/exe`)))) continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split(/[\0 ]/);
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = (key) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN) * 1024;
      const type = args.find((a) => a.startsWith("--type="))?.slice(7) ?? "browser";
      out.push({ pid, type, hwm: kb("VmHWM"), rss: kb("VmRSS") });
    } catch {
      // gone meanwhile, or not readable
    }
  }
  return out;
}

/**
 * Peak RSS of the renderer (the largest renderer: the browser runs one page, any other renderer
 * is a spare) and of the browser's main process, in bytes; `into` keeps the highest readings
 * (a renderer that crashed keeps its last one), and the renderer's current RSS.
 */
function readProcessPeaks(into) {
  const procs = chromiumProcesses();
  const max = (type, key) => Math.max(0, ...procs.filter((p) => p.type === type && p[key] > 0).map((p) => p[key]));
  into.renderer_peak_rss_bytes = Math.max(into.renderer_peak_rss_bytes ?? 0, max("renderer", "hwm")) || null;
  into.browser_peak_rss_bytes = Math.max(into.browser_peak_rss_bytes ?? 0, max("browser", "hwm")) || null;
  into.renderer_rss_bytes = max("renderer", "rss") || into.renderer_rss_bytes || null;
  return into;
}

/**
 * Samples, every SAMPLE_MS until stop(), the JS memory of `page` and of the workers it starts
 * (DevTools protocol: auto-attach to them, Runtime.getHeapUsage; V8 heap used + ArrayBuffer
 * backing stores), and the processes' peaks. Start it before the page loads, so the worker is
 * attached from its start; with `hideCaches`, the workers start without `self.caches` (they wait
 * for the debugger at their start, see --no-cache-storage). Returns {afterLoad, stop}:
 * afterLoad() (with the worker idle) forces a GC in the workers (HeapProfiler.collectGarbage)
 * and → {js_bytes, renderer_rss_bytes}, what they and the renderer still hold; stop() →
 * {js_peak_bytes, js_peak_worker_bytes, js_samples, memory_trace, ...peaks}.
 */
async function startMemorySampler(context, page, hideCaches) {
  const cdp = await context.newCDPSession(page);
  const workers = new Set(); // session ids of attached workers
  const pending = new Map(); // message id → {session, resolve}
  let nextId = 0;
  cdp.on("Target.attachedToTarget", (ev) => {
    if (/worker/.test(ev.targetInfo.type)) workers.add(ev.sessionId);
    if (!hideCaches) return;
    // The target waits: hide the Cache API, then let its script run (replies are not needed:
    // messages to one target are handled in order).
    const send = (method, params) =>
      cdp.send("Target.sendMessageToTarget", { sessionId: ev.sessionId, message: JSON.stringify({ id: ++nextId, method, params }) }).catch(() => {});
    send("Runtime.evaluate", { expression: "Object.defineProperty(self, 'caches', { value: undefined, configurable: true })" });
    send("Runtime.runIfWaitingForDebugger", {});
  });
  cdp.on("Target.detachedFromTarget", (ev) => {
    workers.delete(ev.sessionId);
    for (const [id, p] of pending) {
      if (p.session !== ev.sessionId) continue;
      pending.delete(id);
      p.resolve(null);
    }
  });
  cdp.on("Target.receivedMessageFromTarget", (ev) => {
    const msg = JSON.parse(ev.message);
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    p.resolve(msg.result ?? null);
  });
  // Not flattened: playwright's CDPSession talks to a child target through the page's session.
  await cdp.send("Target.setAutoAttach", { autoAttach: true, waitForDebuggerOnStart: hideCaches, flatten: false });
  const inWorker = (session, method) =>
    new Promise((resolve) => {
      const id = ++nextId;
      pending.set(id, { session, resolve });
      cdp.send("Target.sendMessageToTarget", { sessionId: session, message: JSON.stringify({ id, method }) }).catch(() => {
        pending.delete(id);
        resolve(null);
      });
    });
  const js = (u) => (u ? u.usedSize + (u.backingStorageSize ?? 0) : 0);
  // memory_trace (in the --json report): [s since start, page JS, workers' JS, renderer RSS] per sample.
  const out = { js_peak_bytes: 0, js_peak_worker_bytes: 0, js_samples: 0, memory_trace: [] };
  const start = Date.now();
  let running = true;
  let wake;
  const stopped = new Promise((resolve) => (wake = resolve));
  const loop = (async () => {
    while (running) {
      readProcessPeaks(out);
      const pageUsage = await Promise.race([cdp.send("Runtime.getHeapUsage").catch(() => null), stopped]);
      // A worker busy in wasm answers late: the next round waits for it (or for stop()).
      const workerUsage = await Promise.race([Promise.all([...workers].map((w) => inWorker(w, "Runtime.getHeapUsage"))), stopped]);
      if (!running) break;
      const inWorkers = (workerUsage ?? []).reduce((a, u) => a + js(u), 0);
      out.js_peak_worker_bytes = Math.max(out.js_peak_worker_bytes, inWorkers);
      out.js_peak_bytes = Math.max(out.js_peak_bytes, js(pageUsage) + inWorkers);
      out.js_samples++;
      out.memory_trace.push([(Date.now() - start) / 1000, js(pageUsage), inWorkers, readProcessPeaks(out).renderer_rss_bytes]);
      await Promise.race([new Promise((r) => setTimeout(r, SAMPLE_MS)), stopped]);
    }
  })();
  const afterLoad = async () => {
    await Promise.all([...workers].map((w) => inWorker(w, "HeapProfiler.collectGarbage")));
    const usage = await Promise.all([...workers].map((w) => inWorker(w, "Runtime.getHeapUsage")));
    const page = await cdp.send("Runtime.getHeapUsage").catch(() => null);
    return { js_bytes: js(page) + usage.reduce((a, u) => a + js(u), 0), renderer_rss_bytes: readProcessPeaks(out).renderer_rss_bytes };
  };
  const stop = async () => {
    readProcessPeaks(out);
    running = false;
    wake();
    await loop;
    await cdp.detach().catch(() => {});
    return out;
  };
  return { afterLoad, stop };
}

// ---------------------------------------------------------------------------------------------

// blipq's one size unit (`blipq::MB`): every size this tool reports is in MB of 2^20 bytes.
const MB = 2 ** 20;
const fmt = (x, digits = 2) => (x === undefined || x === null || Number.isNaN(x) ? "–" : x.toFixed(digits));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const stamp = (t0) => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s]`;

async function benchModel(context, baseUrl, opts, index, threads, build, t0) {
  const dir = opts.models[index];
  const result = { model: dir, label: basename(dir), requested_threads: threads || "auto", build, ok: false };
  // The worker fetches the files it needs by the engine's own names (a missing one is its error).
  const weights = weightsFile(dir);
  result.weights_file = weights.name;
  result.file_bytes = weights.bytes;

  const job = {
    modelUrl: `${baseUrl}/__models__/${index}/`,
    imageUrl: `${baseUrl}/__image__/${encodeURIComponent(basename(opts.image))}`,
    tokens: opts.tokens,
    warmup: opts.warmup,
    runs: opts.runs,
    threads,
  };
  const page = await context.newPage();
  const sampler = await startMemorySampler(context, page, opts.noCacheStorage);
  await page.exposeFunction("benchAfterLoad", sampler.afterLoad);
  const timeoutMs = opts.timeoutMin * 60_000;
  page.setDefaultTimeout(timeoutMs);
  page.on("console", (msg) => {
    const text = msg.text();
    if (text.startsWith("[bench] ")) console.error(`${stamp(t0)} ${result.label}: ${text.slice(8)}`);
    else if (msg.type() === "error" || msg.type() === "warning") console.error(`${stamp(t0)} ${result.label} console.${msg.type()}: ${text}`);
  });
  page.on("pageerror", (err) => console.error(`${stamp(t0)} ${result.label} page error: ${err.message}`));
  let crashed = null;
  const crash = new Promise((resolveCrash) =>
    page.on("crash", () => {
      crashed = "the page crashed (out of memory?)";
      resolveCrash({ ok: false, error: crashed });
    }),
  );
  let timer;
  const timeout = new Promise((resolveTimeout) => {
    timer = setTimeout(() => resolveTimeout({ ok: false, error: `timed out after ${opts.timeoutMin} min` }), timeoutMs);
  });
  try {
    // The page's own parameters: `threads` sizes the worker's pool, `simd=simd128` forces that
    // build (else the worker takes relaxed SIMD where the engine validates it).
    const params = new URLSearchParams({ job: JSON.stringify(job) });
    if (threads) params.set("threads", String(threads));
    if (build === "simd128") params.set("simd", "simd128");
    const url = `${baseUrl}/__bench__/index.html?${params}`;
    await page.goto(url, { waitUntil: "load" });
    const wall0 = Date.now();
    const out = await Promise.race([page.evaluate(() => window.benchResult), crash, timeout]);
    result.page_wall_s = (Date.now() - wall0) / 1000;
    Object.assign(result, out, { label: result.label, model: dir, requested_threads: result.requested_threads, build });
    if (result.ok && result.wasm_build !== build) {
      result.ok = false;
      result.error = `asked for the ${build} build, the module says it is ${result.wasm_build}`;
    }
    delete result.type;
  } catch (e) {
    result.ok = false;
    result.error = crashed || String(e && e.message ? e.message : e);
  } finally {
    clearTimeout(timer);
    // Read before the page closes: its renderer's peak RSS is gone with it.
    Object.assign(result, await sampler.stop());
    await page.close().catch(() => {});
  }
  result.memory = {
    weights_in_js_mb: result.file_bytes / MB,
    js_peak_mb: result.js_samples ? result.js_peak_bytes / MB : null,
    js_mb_after_load_gc: result.after_load ? result.after_load.js_bytes / MB : null,
    wasm_mb_after_load: result.wasm_bytes_after_load ? result.wasm_bytes_after_load / MB : null,
    // wasm memory never shrinks: its size after the last caption is its peak.
    wasm_peak_mb: result.wasm_bytes_after_caption ? result.wasm_bytes_after_caption / MB : null,
    renderer_peak_rss_mb: result.renderer_peak_rss_bytes ? result.renderer_peak_rss_bytes / MB : null,
    renderer_rss_mb_after_load: result.after_load?.renderer_rss_bytes ? result.after_load.renderer_rss_bytes / MB : null,
    browser_peak_rss_mb: result.browser_peak_rss_bytes ? result.browser_peak_rss_bytes / MB : null,
  };
  if (result.ok) {
    const runs = result.runs;
    const tokens = runs.reduce((a, r) => a + r.newTokens, 0);
    const total = runs.reduce((a, r) => a + r.timings.total_s, 0);
    result.summary = {
      file_mb: result.file_bytes / MB,
      wasm_mb_before_load: result.wasm_bytes_before_load / MB,
      wasm_mb_after_load: result.wasm_bytes_after_load / MB,
      wasm_mb_after_caption: result.wasm_bytes_after_caption / MB,
      ratio_after_load_to_file: result.wasm_bytes_after_load / result.file_bytes,
      load_s: result.load_s,
      fetch_s: result.fetch_s,
      preprocess_s: median(runs.map((r) => r.timings.preprocess_s)),
      vision_s: median(runs.map((r) => r.timings.vision_s)),
      decode_s: median(runs.map((r) => r.timings.decode_s)),
      total_s: median(runs.map((r) => r.timings.total_s)),
      total_range: [Math.min(...runs.map((r) => r.timings.total_s)), Math.max(...runs.map((r) => r.timings.total_s))],
      wall_s: median(runs.map((r) => r.wall_s)),
      new_tokens: median(runs.map((r) => r.newTokens)),
      tokens_per_s: total > 0 ? tokens / total : 0,
      caption: runs[runs.length - 1].caption,
    };
  }
  return result;
}

function markdown(results, opts) {
  const lines = [];
  lines.push(
    `blipq in headless Chromium (one dedicated worker per model, build and thread count): ` +
      `${basename(opts.image)}, exactly ${opts.tokens} new tokens, ${opts.warmup} warm-up + ${opts.runs} timed caption(s)` +
      (opts.runs > 1 ? " (medians; total range in brackets)" : "") +
      ".",
  );
  lines.push("");
  lines.push(
    "| model | dtype | build | threads | file MB | wasm MB after load | wasm / file | load s | caption s (preprocess / vision / decode / total) | tokens/s | caption |",
  );
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|");
  const dtypeOf = (r) => (r.info ? (r.info.is_quantized ? "INT8" : r.info.dtype || "FP32") : "?");
  for (const r of results) {
    if (!r.ok) {
      const file = r.file_bytes ? fmt(r.file_bytes / MB, 1) : "–";
      lines.push(`| ${r.label} | – | ${r.build} | ${r.threads ?? r.requested_threads} | ${file} | ${r.wasm_bytes_at_error ? fmt(r.wasm_bytes_at_error / MB, 1) + " (at error)" : "–"} | – | – | FAILED at ${r.stage || "?"}: ${String(r.error).replace(/\|/g, "\\|")} | – | – |`);
      continue;
    }
    const s = r.summary;
    const range = opts.runs > 1 ? ` (${fmt(s.total_range[0])}–${fmt(s.total_range[1])})` : "";
    lines.push(
      `| ${r.label} | ${dtypeOf(r)} | ${r.build} | ${r.threads} | ${fmt(s.file_mb, 1)} | ${fmt(s.wasm_mb_after_load, 1)} | ${fmt(s.ratio_after_load_to_file, 2)} | ` +
        `${fmt(s.load_s)} | ${fmt(s.preprocess_s, 3)} / ${fmt(s.vision_s)} / ${fmt(s.decode_s)} / **${fmt(s.total_s)}**${range} | ` +
        `${fmt(s.tokens_per_s, 1)} | ${s.caption.replace(/\|/g, "\\|")} |`,
    );
  }
  lines.push("");
  lines.push(
    "Memory (MB = 2^20 bytes; see tools/browser_bench.mjs's header for how each is measured): the weights file, which the worker " +
      "holds in JS until the model is built; peak JS of the page and its worker (V8 heap + ArrayBuffers, sampled every " +
      `${SAMPLE_MS} ms) and what they still hold after loading, after a forced GC; wasm memory after loading and its peak ` +
      "(after the last caption); peak RSS (VmHWM) of the renderer process (page, worker and thread pool), its RSS after " +
      "loading (at the same pause), and the peak RSS of the browser's main process (which keeps the Cache Storage)." +
      (opts.noCacheStorage ? " Cache Storage hidden from the worker (--no-cache-storage): nothing is stored after loading." : ""),
  );
  lines.push("");
  lines.push(
    "| model | dtype | build | threads | weights file (MB, held in JS while loading) | peak JS MB | JS MB after load (after GC) | wasm MB after load | peak wasm MB | renderer peak RSS MB | renderer RSS MB after load | browser peak RSS MB | result |",
  );
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of results) {
    const m = r.memory;
    const outcome = r.ok ? "loaded and captioned" : `FAILED at ${r.stage || "?"}: ${String(r.error).replace(/\|/g, "\\|")}`;
    lines.push(
      `| ${r.label} | ${dtypeOf(r)} | ${r.build} | ${r.threads ?? r.requested_threads} | ${r.weights_file} ${fmt(m.weights_in_js_mb, 1)} | ` +
        `${fmt(m.js_peak_mb, 1)} | ${fmt(m.js_mb_after_load_gc, 1)} | ${fmt(m.wasm_mb_after_load, 1)} | ${fmt(m.wasm_peak_mb, 1)} | ` +
        `${fmt(m.renderer_peak_rss_mb, 0)} | ${fmt(m.renderer_rss_mb_after_load, 0)} | ` +
        `${fmt(m.browser_peak_rss_mb, 0)} | ${outcome} |`,
    );
  }
  lines.push("");
  lines.push(
    "Issue 10 browser targets (for the `synth --preset base` checkpoints): INT8 ≤ 2.0 s per caption on 2 threads and ≤ 3.5 s on one; " +
      "INT8 ≥ 2× faster than FP32; one-thread INT8 ≤ 2.5× native one-thread INT8; wasm memory after loading ≤ 1.3× the weights file.",
  );
  lines.push("");
  const ok = results.filter((r) => r.ok);
  for (const r of results) {
    if (!r.ok) {
      lines.push(`- ${r.label} (${r.build}, ${r.threads ?? r.requested_threads} thread(s)): FAILED (${r.error})`);
      continue;
    }
    const s = r.summary;
    const verdict = (good) => (good ? "meets" : "MISSES");
    const parts = [`${fmt(s.total_s)} s/caption`];
    if (r.info?.is_quantized) {
      const limit = r.threads === 1 ? 3.5 : r.threads === 2 ? 2.0 : null;
      if (limit) parts.push(`${verdict(s.total_s <= limit)} the ≤ ${limit} s target`);
      // The FP32 model of the same size (parameter count), build and threads.
      const fp32 = ok.find(
        (o) => !o.info?.is_quantized && o.info?.total_parameters === r.info.total_parameters && o.build === r.build && o.threads === r.threads,
      );
      if (fp32) {
        const speedup = fp32.summary.total_s / s.total_s;
        parts.push(`${fmt(speedup)}× faster than ${fp32.label} (${verdict(speedup >= 2)} ≥ 2×)`);
      }
      if (r.threads === 1 && opts.nativeInt8OneThread) {
        const ratio = s.total_s / opts.nativeInt8OneThread;
        parts.push(`${fmt(ratio)}× native one-thread INT8 (${verdict(ratio <= 2.5)} ≤ 2.5×)`);
      }
    }
    parts.push(`wasm ${fmt(s.ratio_after_load_to_file, 2)}× file (${verdict(s.ratio_after_load_to_file <= 1.3)} ≤ 1.3×)`);
    lines.push(
      `- ${r.label} (${r.build}, ${r.threads} thread(s)): ${parts.join("; ")} ` +
        `(wasm ${fmt(s.wasm_mb_before_load, 1)} MB before load, ${fmt(s.wasm_mb_after_caption, 1)} MB after captioning; ` +
        `fetch ${fmt(s.fetch_s)} s; ${fmt(s.new_tokens, 0)} new tokens; JS wall ${fmt(s.wall_s)} s/caption)`,
    );
  }
  return lines.join("\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { chromium } = await loadPlaywright();
  const t0 = Date.now();
  const server = await startServer(opts);
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  console.error(`${stamp(t0)} serving ${opts.dist} (+ ${opts.models.length} model dir(s)) at ${baseUrl}`);
  const results = [];
  // A freshly launched browser per model, build and thread count: its processes' peak RSS
  // (VmHWM) then belong to that one run, and its Cache Storage is empty.
  const launch = () =>
    chromium.launch({
      executablePath: opts.chromium,
      headless: !opts.headed,
      args: opts.headed ? CHROMIUM_ARGS.filter((a) => a !== "--headless") : CHROMIUM_ARGS,
      timeout: 120_000,
    });
  try {
    for (const threads of opts.threads) {
      for (let i = 0; i < opts.models.length; i++) {
        // The builds of one model and thread count run back to back, so they see the same machine.
        for (const build of opts.builds) {
          console.error(`${stamp(t0)} ${basename(opts.models[i])}: loading ${opts.models[i]} (${build}, threads: ${threads || "auto"})`);
          const browser = await launch();
          if (results.length === 0) console.error(`${stamp(t0)} ${opts.chromium} ${browser.version()}`);
          let r;
          try {
            r = await benchModel(await browser.newContext(), baseUrl, opts, i, threads, build, t0);
          } finally {
            await browser.close().catch(() => {});
          }
          if (!r.ok) console.error(`${stamp(t0)} ${r.label}: FAILED: ${r.error}`);
          results.push(r);
        }
      }
    }
  } finally {
    server.close();
  }
  const md = markdown(results, opts);
  console.log(md);
  if (opts.json) {
    const report = {
      date: new Date().toISOString(),
      dist: opts.dist,
      image: opts.image,
      tokens: opts.tokens,
      warmup: opts.warmup,
      runs: opts.runs,
      threads: opts.threads.map((t) => t || "auto"),
      builds: opts.builds,
      no_cache_storage: opts.noCacheStorage,
      chromium: opts.chromium,
      wasm_bytes: Object.fromEntries(opts.builds.map((b) => [b, statSync(join(opts.dist, BUILDS[b], "blipq_bg.wasm")).size])),
      results,
    };
    writeFileSync(opts.json, JSON.stringify(report, null, 2) + "\n");
    console.error(`wrote ${opts.json}`);
  }
  process.exitCode = results.every((r) => r.ok) ? 0 : 1;
}

main().catch((e) => {
  console.error(`browser_bench: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
