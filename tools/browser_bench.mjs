#!/usr/bin/env node
// browser_bench.mjs: time blipq's wasm build in headless Chromium (issue 4's browser targets).
//
// A measurement tool, not part of CI. Usage:
//
//   node tools/browser_bench.mjs --dist dist --model /work/cache/base --model /work/cache/base-int8 \
//       --image data/validation/coffee.jpg [--tokens 20] [--warmup 1] [--runs 3] [--threads 1,auto] \
//       [--builds simd128,relaxed-simd] [--native-int8-1t S] [--json out.json]
//
// Options:
//   --dist DIR        wasm-bindgen `web` output holding blipq.js + blipq_bg.wasm (trunk's dist/, or
//                     `wasm-bindgen --target web --out-name blipq` output). Default: dist
//   --model DIR       checkpoint directory (config.json, model.safetensors, tokenizer.json,
//                     preprocessor_config.json or processor_config.json, optionally
//                     tokenizer_config.json and generation_config.json). Repeatable; required.
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
//   --json FILE       also write every measurement as JSON
//   --chromium PATH   browser binary. Default: /usr/bin/chromium
//   --timeout-min N   give up on one model after N minutes. Default: 30
//   --port N          port on 127.0.0.1 (0 = any free one). Default: 0
//   --headed          show the browser (debugging)
//
// What it does: serves --dist, each --model directory and the image over node's http on
// 127.0.0.1 with the COOP/COEP headers (so the page is cross-origin isolated and may share wasm
// memory with threads), plus a generated harness (/__bench__/index.html + worker.js, placed inside the dist
// tree so the worker imports "../blipq.js"), and drives the system Chromium through
// playwright-core (Playwright's launch gives it a fresh temporary profile). For each thread count
// and model, in a fresh browser context and page with a fresh
// dedicated module worker (one model per wasm instance, so memory figures don't mix), the worker
//   1. init()s the wasm module from ../blipq_bg.wasm and, for more than one thread, starts the
//      rayon pool (initThreadPool), as www/worker.js does,
//   2. fetches the checkpoint's files into Uint8Arrays,
//   3. reads wasmMemoryBytes() before and after `new Captioner(files)`; wasm memory only grows,
//      so "after" is the peak while loading (the weight file itself stays in JS memory),
//   4. captions the image --warmup times, then --runs times with `{fixedNewTokens: N}`,
// and posts the results back. Prints one Markdown table (a row per model, build and thread count)
// and checks issue 10's browser targets (meant for the `blipq synth --preset base` checkpoints):
// INT8 <= 2.0 s per caption on 2 threads and <= 3.5 s on one, INT8 at least 2x faster than FP32
// (same build and threads), one-thread INT8 <= 2.5x native one-thread INT8 (with
// --native-int8-1t), and wasm memory after loading <= 1.3x the size of model.safetensors.
//
// playwright-core is imported from tests/e2e/node_modules when present, else from
// tools/node_modules:   npm install --no-save --prefix tools playwright-core
// No browser is downloaded: the system Chromium is driven (never run `npx playwright install`).

import { createServer } from "node:http";
import { createReadStream, existsSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { CHROMIUM_ARGS } from "../tests/e2e/chromium.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..");

// Checkpoint files the worker fetches when the model directory has them.
const MODEL_FILES = [
  "config.json",
  "model.safetensors",
  "tokenizer.json",
  "preprocessor_config.json",
  "processor_config.json",
  "tokenizer_config.json",
  "generation_config.json",
];
const REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json"];
/** Each wasm build's folder in the dist tree (scripts/web.sh puts the relaxed one in relaxed/). */
const BUILDS = { simd128: "", "relaxed-simd": "relaxed" };


const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".ts": "text/plain; charset=utf-8",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".webp": "image/webp",
  ".gif": "image/gif",
  ".bmp": "image/bmp",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
};

const USAGE = `usage: node tools/browser_bench.mjs --dist DIR --model DIR [--model DIR]... --image FILE
       [--tokens 20] [--warmup 1] [--runs 3] [--threads auto] [--builds simd128,relaxed-simd]
       [--native-int8-1t S] [--json FILE] [--chromium /usr/bin/chromium]
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
// The harness served at /__bench__/ and /relaxed/__bench__/ (inside the dist tree, so
// "../blipq.js" is dist/blipq.js or dist/relaxed/blipq.js: the build under test).

const HARNESS_HTML = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>blipq browser bench</title><link rel="icon" href="data:,"></head>
<body>
<pre id="log"></pre>
<script type="module">
const params = new URLSearchParams(location.search);
const job = JSON.parse(params.get("job"));
const log = (text) => {
  document.getElementById("log").textContent += text + "\\n";
  console.log("[bench] " + text);
};
window.benchResult = new Promise((resolve) => {
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = (event) => {
    const msg = event.data;
    if (msg.type === "progress") log(msg.text);
    else resolve(msg);
  };
  worker.onerror = (event) => {
    resolve({ type: "result", ok: false, error: "worker error: " + (event.message || "failed to start (module load error?)") });
  };
  worker.postMessage(job);
});
</script>
</body>
</html>
`;

const HARNESS_WORKER = `// Generated by tools/browser_bench.mjs.
import init, * as blipq from "../blipq.js";

const { Captioner, version, wasmMemoryBytes } = blipq;

const now = () => performance.now() / 1000;
const progress = (text) => postMessage({ type: "progress", text });

async function fetchBytes(url) {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error("GET " + url + ": HTTP " + res.status);
  return new Uint8Array(await res.arrayBuffer());
}

async function run(job) {
  const out = { type: "result", ok: false, stage: "init" };
  try {
    let t = now();
    await init({ module_or_path: new URL("../blipq_bg.wasm", import.meta.url) });
    out.init_s = now() - t;
    out.version = version();
    out.wasm_build = blipq.wasmBuild();
    out.wasm_bytes_after_init = wasmMemoryBytes();
    out.stage = "threads";
    out.cross_origin_isolated = !!self.crossOriginIsolated;
    out.hardware_concurrency = navigator.hardwareConcurrency || 1;
    const wanted = job.threads || Math.max(1, Math.min(out.hardware_concurrency, 8));
    if (wanted > 1) {
      if (typeof blipq.initThreadPool !== "function") throw new Error("this build has no initThreadPool: build it with scripts/web.sh build --release");
      if (!self.crossOriginIsolated) throw new Error("the harness is not cross-origin isolated");
      t = now();
      await blipq.initThreadPool(wanted);
      out.pool_s = now() - t;
    }
    out.threads = blipq.rayonThreads ? blipq.rayonThreads() : 1;
    progress("wasm ready (blipq " + out.version + ", " + (out.wasm_bytes_after_init / 2 ** 20).toFixed(1) + " MiB, " + out.threads + " thread(s)) in " + out.init_s.toFixed(2) + " s");

    out.stage = "fetch";
    t = now();
    let files = {};
    let fetched = 0;
    for (const name of job.files) {
      files[name] = await fetchBytes(job.modelUrl + name);
      fetched += files[name].byteLength;
    }
    out.fetch_s = now() - t;
    out.fetched_bytes = fetched;
    out.safetensors_bytes = files["model.safetensors"].byteLength;
    progress("fetched " + job.files.length + " files, " + (fetched / 1e6).toFixed(1) + " MB in " + out.fetch_s.toFixed(2) + " s");

    out.stage = "load";
    out.wasm_bytes_before_load = wasmMemoryBytes();
    t = now();
    let captioner = new Captioner(files);
    out.load_s = now() - t;
    out.wasm_bytes_after_load = wasmMemoryBytes();
    files = null; // the weight file lives in JS memory; let it go
    out.info = captioner.info();
    progress("loaded in " + out.load_s.toFixed(2) + " s; wasm memory " + (out.wasm_bytes_after_load / 2 ** 20).toFixed(1) + " MiB");

    out.stage = "caption";
    const image = await fetchBytes(job.imageUrl);
    const options = { fixedNewTokens: job.tokens };
    const one = (label) => {
      let callbacks = 0;
      const t0 = now();
      const r = captioner.caption(image, options, () => { callbacks++; });
      const wall = now() - t0;
      progress(label + ": " + r.timings.total_s.toFixed(2) + " s (vision " + r.timings.vision_s.toFixed(2) + ", decode " + r.timings.decode_s.toFixed(2) + "), " + r.newTokens + " tokens: " + JSON.stringify(r.caption));
      return { caption: r.caption, tokenIds: r.tokenIds, newTokens: r.newTokens, timings: r.timings, wall_s: wall, callbacks };
    };
    out.warmup = [];
    for (let i = 0; i < job.warmup; i++) out.warmup.push(one("warm-up " + (i + 1) + "/" + job.warmup));
    out.runs = [];
    for (let i = 0; i < job.runs; i++) out.runs.push(one("run " + (i + 1) + "/" + job.runs));
    out.wasm_bytes_after_caption = wasmMemoryBytes();
    captioner.free();
    captioner = null;
    out.stage = "done";
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.message ? e.message : e);
    try { out.wasm_bytes_at_error = wasmMemoryBytes(); } catch (_) {}
  }
  postMessage(out);
}

onmessage = (event) => run(event.data);
`;

// ---------------------------------------------------------------------------------------------
// Static server on 127.0.0.1.

/** Cross-origin isolation (SharedArrayBuffer, hence wasm threads), as Trunkfile.toml serves. */
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

function startServer(opts) {
  const modelDirs = opts.models;
  const server = createServer((req, res) => {
    const send = (status, body, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store", "Content-Length": Buffer.byteLength(body), ...ISOLATION });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "method not allowed\n");
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, "http://127.0.0.1").pathname);
    } catch {
      return send(400, "bad path\n");
    }
    const harness = path.replace(/^\/relaxed\/__bench__\//, "/__bench__/");
    if (harness === "/__bench__/index.html" || harness === "/__bench__/") return send(200, HARNESS_HTML, CONTENT_TYPES[".html"]);
    if (harness === "/__bench__/worker.js") return send(200, HARNESS_WORKER, CONTENT_TYPES[".js"]);

    let root;
    let rel;
    let m;
    if ((m = /^\/__models__\/(\d+)\/(.*)$/.exec(path))) {
      root = modelDirs[Number(m[1])];
      rel = m[2];
    } else if (path === "/__image__/" + basename(opts.image)) {
      root = dirname(opts.image);
      rel = basename(opts.image);
    } else {
      root = opts.dist;
      rel = path.slice(1) || "index.html";
    }
    if (!root) return send(404, "not found\n");
    const file = resolve(root, rel);
    if (file !== root && !file.startsWith(root + sep)) return send(403, "forbidden\n");
    let st;
    try {
      st = statSync(file);
    } catch {
      return send(404, "not found\n");
    }
    if (!st.isFile()) return send(404, "not found\n");
    res.writeHead(200, {
      "Content-Type": CONTENT_TYPES[extname(file).toLowerCase()] || "application/octet-stream",
      "Content-Length": st.size,
      "Cache-Control": "no-store",
      ...ISOLATION,
    });
    if (req.method === "HEAD") return res.end();
    const stream = createReadStream(file);
    stream.on("error", () => res.destroy());
    stream.pipe(res);
  });
  return new Promise((resolveListen, reject) => {
    server.once("error", reject);
    server.listen(opts.port, "127.0.0.1", () => resolveListen(server));
  });
}

// ---------------------------------------------------------------------------------------------

const MB = 1e6;
const MiB = 2 ** 20;
const fmt = (x, digits = 2) => (x === undefined || x === null || Number.isNaN(x) ? "–" : x.toFixed(digits));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const stamp = (t0) => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s]`;

async function benchModel(browser, baseUrl, opts, index, threads, build, t0) {
  const dir = opts.models[index];
  const files = MODEL_FILES.filter((f) => existsSync(join(dir, f)));
  const result = { model: dir, label: basename(dir), requested_threads: threads || "auto", build, files, ok: false };
  const missing = REQUIRED_FILES.filter((f) => !files.includes(f));
  if (!files.includes("preprocessor_config.json") && !files.includes("processor_config.json")) {
    missing.push("preprocessor_config.json (or processor_config.json)");
  }
  if (missing.length) {
    result.error = `missing ${missing.join(", ")}`;
    return result;
  }
  result.file_bytes = statSync(join(dir, "model.safetensors")).size;

  const job = {
    files,
    modelUrl: `${baseUrl}/__models__/${index}/`,
    imageUrl: `${baseUrl}/__image__/${encodeURIComponent(basename(opts.image))}`,
    tokens: opts.tokens,
    warmup: opts.warmup,
    runs: opts.runs,
    threads,
  };
  const page = await browser.newPage();
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
    const folder = BUILDS[build] ? `/${BUILDS[build]}` : "";
    const url = `${baseUrl}${folder}/__bench__/index.html?job=${encodeURIComponent(JSON.stringify(job))}`;
    await page.goto(url, { waitUntil: "load" });
    const wall0 = Date.now();
    const out = await Promise.race([page.evaluate(() => window.benchResult), crash, timeout]);
    result.page_wall_s = (Date.now() - wall0) / 1000;
    Object.assign(result, out, { label: result.label, model: dir, files, file_bytes: result.file_bytes, requested_threads: result.requested_threads, build });
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
    await page.close().catch(() => {});
  }
  if (result.ok) {
    const runs = result.runs;
    const tokens = runs.reduce((a, r) => a + r.newTokens, 0);
    const total = runs.reduce((a, r) => a + r.timings.total_s, 0);
    result.summary = {
      file_mb: result.file_bytes / MB,
      wasm_mib_before_load: result.wasm_bytes_before_load / MiB,
      wasm_mib_after_load: result.wasm_bytes_after_load / MiB,
      wasm_mib_after_caption: result.wasm_bytes_after_caption / MiB,
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
    "| model | dtype | build | threads | file MB | wasm MiB after load | wasm / file | load s | caption s (preprocess / vision / decode / total) | tokens/s | caption |",
  );
  lines.push("|---|---|---|---|---|---|---|---|---|---|---|");
  const dtypeOf = (r) => (r.info ? (r.info.is_quantized ? "INT8" : r.info.dtype || "FP32") : "?");
  for (const r of results) {
    if (!r.ok) {
      const file = r.file_bytes ? fmt(r.file_bytes / MB, 1) : "–";
      lines.push(`| ${r.label} | – | ${r.build} | ${r.threads ?? r.requested_threads} | ${file} | ${r.wasm_bytes_at_error ? fmt(r.wasm_bytes_at_error / MiB, 1) + " (at error)" : "–"} | – | – | FAILED at ${r.stage || "?"}: ${String(r.error).replace(/\|/g, "\\|")} | – | – |`);
      continue;
    }
    const s = r.summary;
    const range = opts.runs > 1 ? ` (${fmt(s.total_range[0])}–${fmt(s.total_range[1])})` : "";
    lines.push(
      `| ${r.label} | ${dtypeOf(r)} | ${r.build} | ${r.threads} | ${fmt(s.file_mb, 1)} | ${fmt(s.wasm_mib_after_load, 1)} | ${fmt(s.ratio_after_load_to_file, 2)} | ` +
        `${fmt(s.load_s)} | ${fmt(s.preprocess_s, 3)} / ${fmt(s.vision_s)} / ${fmt(s.decode_s)} / **${fmt(s.total_s)}**${range} | ` +
        `${fmt(s.tokens_per_s, 1)} | ${s.caption.replace(/\|/g, "\\|")} |`,
    );
  }
  lines.push("");
  lines.push(
    "Issue 10 browser targets (for the `synth --preset base` checkpoints): INT8 ≤ 2.0 s per caption on 2 threads and ≤ 3.5 s on one; " +
      "INT8 ≥ 2× faster than FP32; one-thread INT8 ≤ 2.5× native one-thread INT8; wasm memory after loading ≤ 1.3× model.safetensors.",
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
      const fp32 = ok.find((o) => !o.info?.is_quantized && o.build === r.build && o.threads === r.threads);
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
        `(wasm ${fmt(s.wasm_mib_before_load, 1)} MiB before load, ${fmt(s.wasm_mib_after_caption, 1)} MiB after captioning; ` +
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
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: opts.chromium,
      headless: !opts.headed,
      args: opts.headed ? CHROMIUM_ARGS.filter((a) => a !== "--headless") : CHROMIUM_ARGS,
      timeout: 120_000,
    });
    console.error(`${stamp(t0)} ${opts.chromium} ${browser.version()}`);
    for (const threads of opts.threads) {
      for (let i = 0; i < opts.models.length; i++) {
        // The builds of one model and thread count run back to back, so they see the same machine.
        for (const build of opts.builds) {
          console.error(`${stamp(t0)} ${basename(opts.models[i])}: loading ${opts.models[i]} (${build}, threads: ${threads || "auto"})`);
          // A fresh context (own profile state, own renderer) and page per model, build and thread count.
          const context = await browser.newContext();
          let r;
          try {
            r = await benchModel(context, baseUrl, opts, i, threads, build, t0);
          } finally {
            await context.close().catch(() => {});
          }
          if (!r.ok) console.error(`${stamp(t0)} ${r.label}: FAILED: ${r.error}`);
          results.push(r);
        }
      }
    }
  } finally {
    if (browser) await browser.close().catch(() => {});
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
