// End-to-end test of the built page (dist/, from `scripts/web.sh build --release`, the threaded
// build): serves it on 127.0.0.1 with node's http module and the COOP/COEP headers, drives
// Debian's /usr/bin/chromium through playwright-core (never `npx playwright install`), and checks
// that
//   - the page is cross-origin isolated and the worker runs a rayon pool of more than one thread
//     (navigator.hardwareConcurrency of them, at most 8);
//   - the worker loads the relaxed-SIMD build (Chromium has relaxed SIMD) and the page says so;
//     `?simd=simd128` loads the simd128 build, whose captions equal the CLI's too;
//   - the bundled demo FP32 and INT8 models load, with wasm memory growth ≤ 1.3× the weight file;
//   - captions and token ids of bundled eval images equal `blipq caption --json` (native);
//   - timing, memory and BLEU-4 fields are present and plausible, and captions stream;
//   - faults (tests/e2e/faults.mjs, from a fault-injecting loopback host in server.mjs: 404s, a
//     CORS refusal, a download cut mid-file, a Content-Length that lies either way, corrupt and
//     truncated weights, weights too large for wasm memory, a file that is not a checkpoint, a
//     non-image upload, undecodable image bytes, a huge image, short and corrupt Cache entries)
//     are shown in plain words, the Cache never keeps a partial or corrupt file, and the next
//     action still works;
//   - a folder with pytorch_model.bin and no model.safetensors loads by URL and captions as the
//     CLI does; a Hub name (owner/name@refs/pr/1, and a sharded safetensors repository) loads
//     from a loopback mock of the Hub's URL scheme (302 to a CORS origin, 404s), captions as the
//     CLI does, and a malformed name is refused saying why;
//   - the benchmark view runs on a few images (with fetch and warm-up progress), shows the
//     comparison table and chart, and its
//     downloaded results JSON has `blipq bench`'s format, the native token ids, and a device
//     string naming the build and its threads;
//   - the benchmark view runs over the user's own images, with reference captions typed next to
//     one and from a COCO captions file for the other: BLEU-4 shows, samples = the CLI's;
//   - Make INT8: Hub repositories with the released base checkpoint's layout
//     (tests/fixtures/real-bin: pytorch_model.bin with the real key set; and a sharded
//     safetensors conversion) load by name, caption as the CLI does, and quantize in the page
//     to the bytes `blipq quantize` writes (sha256; INT8, and F16 for one), with progress; the INT8 captions as the
//     CLI's INT8 does, is benchmarked against its source (the pair is pre-selected), its files
//     download; with the Hub stopped, a new page loads it from the browser's storage and
//     captions; Delete removes it;
//   - a second load comes from the Cache API, and "clear cache" empties it;
//   - served WITHOUT the headers (a plain static host), the page isolates itself through its
//     service worker (www/coi-sw.js, one reload) and still captions with several threads;
//   - without the headers and with service workers blocked, it runs on one thread, says so, and
//     captions the same.
// Screenshots go to tests/e2e/artifacts/.
//
// Usage: node tests/e2e/run.mjs   (after `npm ci --prefix tests/e2e` and scripts/web.sh build)
// Env: BLIPQ_E2E_ONLY (comma-separated scenario names, see main(); default all), BLIPQ_BIN (native binary; default target/debug/blipq, built with `cargo build` if
// missing), BLIPQ_DIST (default dist), CHROMIUM (default /usr/bin/chromium), BLIPQ_E2E_VERBOSE=1
// (print the page's console).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { CHROMIUM_ARGS } from "./chromium.mjs";
import { runFaultScenarios } from "./faults.mjs";
import { serveStatic as serve, startMockHub } from "./server.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const dist = resolve(root, process.env.BLIPQ_DIST ?? "dist");
const artifacts = join(root, "tests/e2e/artifacts");
const IMAGES = ["scene_000000.png", "scene_000001.png", "scene_000002.png"];
const BENCH_IMAGES = 3;
const MODELS = ["demo", "demo-int8"];
const MAX_LOAD_RATIO = 1.3;
const PROMPT = "four small";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** A tiny checkpoint with the real base layout (see tests/fixtures/README.md). */
const REAL_FIXTURE = process.env.BLIPQ_REAL_FIXTURE ?? "tests/fixtures/real-bin";

let failures = 0;
function check(ok, what, detail = "") {
  if (ok) console.log(`  ok   ${what}`);
  else {
    failures += 1;
    console.log(`  FAIL ${what}${detail ? `: ${detail}` : ""}`);
  }
}
const log = (s) => console.log(`\n== ${s}`);

// ------------------------------------------------------------------ native reference

function nativeBinary() {
  const bin = resolve(root, process.env.BLIPQ_BIN ?? "target/debug/blipq");
  if (!existsSync(bin)) {
    console.log(`${bin} is missing: cargo build`);
    execFileSync("cargo", ["build", "--bin", "blipq"], { cwd: root, stdio: "inherit" });
  }
  return bin;
}

function nativeCaptions(bin, model, images, extra = []) {
  const out = execFileSync(
    bin,
    ["caption", "--json", "--model", `models/${model}`, ...extra, ...images.map((i) => `data/demo-eval/${i}`)],
    { cwd: root, encoding: "utf8" },
  );
  const byImage = {};
  for (const r of JSON.parse(out)) byImage[r.image.split("/").at(-1)] = r;
  return byImage;
}

// ------------------------------------------------------------------ page helpers

/** The newest result card for (model, image) once there are `count` of them and it is finished. */
async function resultFor(page, model, image, count = 1) {
  const sel = `#results .result[data-model="${model}"][data-image="${image}"]`;
  await page.waitForFunction(
    ([s, n]) => {
      const cards = document.querySelectorAll(s); // newest first
      return cards.length >= n && cards[0].dataset.status !== "running";
    },
    [sel, count],
    { timeout: 120_000 },
  );
  return page.evaluate((s) => {
    const c = document.querySelector(s);
    return { ...c.dataset, text: c.querySelector(".caption").textContent };
  }, sel);
}

/** Clicks a gallery image and returns its new result card. */
async function captionGallery(page, model, image) {
  const sel = `#results .result[data-model="${model}"][data-image="${image}"]`;
  const before = await page.$$eval(sel, (cards) => cards.length);
  await page.click(`#gallery [data-file="${image}"]`);
  return resultFor(page, model, image, before + 1);
}

async function loadBundled(page, key) {
  await page.click(`[data-model="${key}"]`);
  await page.waitForSelector(`.model-item[data-key="${key}"]`, { timeout: 120_000 });
  return page.evaluate((k) => ({ ...document.querySelector(`.model-item[data-key="${k}"]`).dataset }), key);
}


/** The page is cross-origin isolated and its worker runs rayon on several threads. */
async function checkThreads(page, what) {
  const t = await page.evaluate(() => ({
    isolated: self.crossOriginIsolated,
    cores: navigator.hardwareConcurrency,
    threads: Number(document.body.dataset.threads),
    shown: document.getElementById("threads").textContent,
  }));
  console.log(`  ${what}: crossOriginIsolated ${t.isolated}, hardwareConcurrency ${t.cores}, worker threads ${t.threads}`);
  check(t.isolated === true, `${what}: crossOriginIsolated`);
  const want = Math.max(1, Math.min(t.cores, 8));
  check(t.threads === want && t.threads > 1, `${what}: worker runs ${want} threads (> 1)`, `${t.threads} threads`);
  check(t.shown === String(t.threads), `${what}: thread count shown`, t.shown);
}

/** The worker loaded the wanted wasm build, and the page says which. */
async function checkBuild(page, want, what) {
  const b = await page.evaluate(() => ({
    build: document.body.dataset.wasmBuild,
    shown: document.getElementById("wasm-build").textContent,
    note: document.getElementById("wasm-build-note").textContent,
  }));
  console.log(`  ${what}: wasm build ${b.build} (shown "${b.shown}" ${b.note})`);
  check(b.build === want, `${what}: the worker runs the ${want} build`, JSON.stringify(b));
  check(b.shown === (want === "relaxed-simd" ? "relaxed SIMD" : "simd128"), `${what}: the build is shown`, b.shown);
}

/**
 * The simd128 build (`?simd=simd128`, what browsers without relaxed SIMD load) gives the CLI's
 * captions too, for every model and image, on several threads.
 */
async function simd128BuildScenario(context, base, native, pageErrors) {
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`page error (simd128 build): ${e.message}`));
  await page.goto(`${base}?simd=simd128`);
  await page.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
  await page.waitForSelector(`#gallery [data-file="${IMAGES[0]}"]`, { timeout: 30_000 });
  await checkBuild(page, "simd128", "?simd=simd128");
  await checkThreads(page, "simd128 build");
  for (const model of MODELS) {
    await loadBundled(page, model);
    for (const image of IMAGES) {
      const r = await captionGallery(page, model, image);
      const want = native[model][image];
      check(
        r.status === "done" && r.tokenIds === want.token_ids.join(" ") && r.caption === want.caption,
        `simd128 build: ${model} ${image}: caption and token ids = native`,
        `"${r.caption}" ${r.tokenIds} vs "${want.caption}" ${want.token_ids.join(" ")}`,
      );
    }
  }
  await page.screenshot({ path: join(artifacts, "03-simd128-build.png"), fullPage: true });
  await page.close();
}

function checkTimings(r, what) {
  const n = (k) => Number(r[k]);
  check(n("preprocessS") >= 0 && n("preprocessS") < 10, `${what}: preprocess time`, r.preprocessS);
  check(n("visionS") > 0 && n("visionS") < 30, `${what}: vision encoder time`, r.visionS);
  check(n("decodeS") > 0 && n("decodeS") < 60, `${what}: decoding time`, r.decodeS);
  check(
    n("totalS") >= n("visionS") + n("decodeS") - 1e-6 && n("totalS") < 90,
    `${what}: total ≥ vision + decoding`,
    `${r.totalS} vs ${r.visionS} + ${r.decodeS}`,
  );
  check(Math.abs(n("tokensPerS") - n("newTokens") / n("totalS")) < 1e-6 * n("tokensPerS") + 1e-9, `${what}: tokens/s`, r.tokensPerS);
  check(n("wasmBytes") > 1e6 && n("wasmBytes") < 4 * 2 ** 30, `${what}: wasm memory`, r.wasmBytes);
  check(r.jsHeapBytes === undefined || n("jsHeapBytes") > 0, `${what}: JS heap (when exposed)`, r.jsHeapBytes);
  check(r.bleu4 !== undefined && n("bleu4") >= 0 && n("bleu4") <= 1, `${what}: BLEU-4 in [0, 1]`, r.bleu4);
  check(
    n("streamUpdates") >= Math.min(2, n("newTokens")),
    `${what}: caption streamed token by token`,
    `${r.streamUpdates} updates for ${r.newTokens} tokens`,
  );
}

// ------------------------------------------------------------------ main

// ------------------------------------------------------------------ scenarios
// Each takes the shared state `t`: {context, page, base, native, bin, pageErrors, shot}.

/** The page opens, finds its worker ready, shows its version, threads and build. */
async function openPageScenario({ page, base, shot }) {
  log(`open ${base}`);
  await page.goto(base);
  await page.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
  await page.waitForSelector(`#gallery [data-file="${IMAGES[0]}"]`, { timeout: 30_000 });
  check(/^\d+\.\d+\.\d+/.test(await page.textContent("#version")), "version shown");
  await checkThreads(page, "served with COOP/COEP");
  // Chromium has relaxed SIMD: the page's feature detection picks the relaxed build.
  await checkBuild(page, "relaxed-simd", "served with COOP/COEP");
  await shot("01-start");
}

/** Each bundled model loads within the memory rule and captions the gallery as the CLI does. */
async function captionScenario({ page, native, shot }) {
  const load = {};
  for (const model of MODELS) {
    log(`load ${model}, caption ${IMAGES.length} images`);
    load[model] = await loadBundled(page, model);
    const ratio = Number(load[model].loadRatio);
    console.log(
      `  weights ${load[model].weightBytes} B, wasm memory ${load[model].memBefore} → ${load[model].memAfter} B, growth ${ratio.toFixed(3)}× the file`,
    );
    check(ratio <= MAX_LOAD_RATIO, `${model}: wasm memory growth while loading ≤ ${MAX_LOAD_RATIO}× the weights`, ratio);
    check(load[model].fromCache === "false", `${model}: first load downloads`);
    for (const image of IMAGES) {
      const r = await captionGallery(page, model, image);
      const want = native[model][image];
      check(r.status === "done", `${model} ${image}: captioned`, r.status);
      check(r.caption === want.caption && r.text === want.caption, `${model} ${image}: caption = native`, `"${r.caption}" vs "${want.caption}"`);
      check(r.tokenIds === want.token_ids.join(" "), `${model} ${image}: token ids = native`, `${r.tokenIds} vs ${want.token_ids.join(" ")}`);
      checkTimings(r, `${model} ${image}`);
    }
    await shot(`02-captions-${model}`);
  }
}

/** Faults are shown in plain words, the Cache stays clean, and the worker keeps working. */
async function faultScenario({ page, base, native, shot }) {
  log("faults are shown in plain words, the Cache stays clean, the page keeps working");
  await runFaultScenarios(
    {
      page,
      base,
      image: IMAGES[1],
      native,
      demoFile: (name) => readFileSync(join(root, "models/demo", name)),
      check,
      log,
      resultFor,
      captionGallery,
      loadBundled,
      shot,
    },
    { checkpoint: join(root, "models/demo") },
  );
  // The worker survived: caption again with the active model (INT8).
  const again = await captionGallery(page, "demo-int8", IMAGES[1]);
  check(again.tokenIds === native["demo-int8"][IMAGES[1]].token_ids.join(" "), "captioning works after the errors", again.tokenIds);
}

/** Options reach the model: prompt, max length and beams give what the CLI gives. */
async function optionsScenario({ page, bin }) {
  log("caption options: prompt, max length, beams");
  await page.fill("#opt-prompt", PROMPT);
  await page.fill("#opt-max-length", "12");
  await page.fill("#opt-beams", "3");
  const opted = await captionGallery(page, "demo-int8", IMAGES[2]);
  const wantOpted = nativeCaptions(bin, "demo-int8", [IMAGES[2]], ["--prompt", PROMPT, "--max-length", "12", "--num-beams", "3"])[IMAGES[2]];
  check(
    opted.status === "done" && opted.tokenIds === wantOpted.token_ids.join(" ") && opted.caption === wantOpted.caption,
    "prompt, max length and beams = native",
    `"${opted.caption}" ${opted.tokenIds} vs "${wantOpted.caption}" ${wantOpted.token_ids.join(" ")}`,
  );
  await page.fill("#opt-prompt", "");
  await page.fill("#opt-max-length", "");
  await page.fill("#opt-beams", "1");
}

/**
 * A folder with pytorch_model.bin and no model.safetensors (`tests/fixtures/tiny-bin`, mounted at
 * /fixtures/tiny-bin/): loaded by URL, the page skips the 404 on model.safetensors without an
 * error message, reads the pickle in the worker and captions as `blipq caption` does.
 */
async function pytorchBinScenario({ page, base, bin }) {
  log("pytorch_model.bin by URL (no model.safetensors in the folder)");
  const folder = `${base}fixtures/tiny-bin/`;
  const image = IMAGES[0];
  const want = JSON.parse(
    execFileSync(bin, ["caption", "--json", "--model", "tests/fixtures/tiny-bin", `data/demo-eval/${image}`], {
      cwd: root,
      encoding: "utf8",
    }),
  )[0];
  const errorsBefore = await page.$$eval("#messages .msg.error", (m) => m.length);
  await page.fill("#model-url", folder);
  await page.click("#load-url");
  const key = `url:${folder}`;
  await page.waitForSelector(`.model-item[data-key="${key}"]`, { timeout: 120_000 });
  const errorsAfter = await page.$$eval("#messages .msg.error", (m) => m.length);
  check(errorsAfter === errorsBefore, "pytorch_model.bin by URL: the 404 on model.safetensors is no error", `${errorsAfter - errorsBefore} new`);
  const r = await captionGallery(page, key, image);
  check(r.tokenIds === want.token_ids.join(" "), "pytorch_model.bin by URL: caption = native", `${r.tokenIds} vs ${want.token_ids.join(" ")}`);
}

/**
 * A Hub name in the model field: the page (opened with `?hub=` pointing at a loopback mock of the
 * Hub's URL scheme, which redirects to a second origin with CORS) resolves
 * `blipq-test/tiny-bin@refs/pr/1` to `.../resolve/refs%2Fpr%2F1/`, finds that the repository has
 * pytorch_model.bin and no model.safetensors, and captions as `blipq caption` does; a malformed
 * name gets a message saying what is wrong.
 */
async function hubNameScenario({ context, base, bin }) {
  log("a Hub name (owner/name@refs/pr/1) against a loopback Hub");
  const shardedDir = await mkdtemp(join(tmpdir(), "blipq-e2e-sharded-"));
  await shardedCopy(join(root, "tests/fixtures/tiny"), shardedDir);
  const hub = await startMockHub({
    "blipq-test/tiny-bin": { dir: join(root, "tests/fixtures/tiny-bin"), revisions: ["main", "refs%2Fpr%2F1"] },
    "blipq-test/tiny-sharded": { dir: shardedDir, revisions: ["main"] },
  });
  const page = await context.newPage();
  try {
    await page.goto(`${base}?hub=${encodeURIComponent(hub.endpoint)}`);
    await page.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
    await page.waitForSelector(`#gallery [data-file="${IMAGES[0]}"]`, { timeout: 30_000 });
    await page.fill("#model-url", "blipq-test/tiny-bin@refs/pr/1");
    await page.click("#load-url");
    const key = `url:${hub.endpoint}/blipq-test/tiny-bin/resolve/refs%2Fpr%2F1/`;
    await page.waitForSelector(`.model-item[data-key="${key}"]`, { timeout: 120_000 });
    const shown = await page.textContent(`.model-item[data-key="${key}"]`);
    check(shown.includes("blipq-test/tiny-bin@refs/pr/1"), "Hub name: the model is shown by its name", shown);
    check(
      hub.requests.includes("/blipq-test/tiny-bin/resolve/refs%2Fpr%2F1/model.safetensors") &&
        hub.requests.includes("/blipq-test/tiny-bin/resolve/refs%2Fpr%2F1/pytorch_model.bin"),
      "Hub name: the revision is one encoded path segment; model.safetensors (404), then pytorch_model.bin",
      hub.requests.join(" "),
    );
    const image = IMAGES[0];
    const want = JSON.parse(
      execFileSync(bin, ["caption", "--json", "--model", "tests/fixtures/tiny-bin", `data/demo-eval/${image}`], { cwd: root, encoding: "utf8" }),
    )[0];
    const r = await captionGallery(page, key, image);
    check(r.tokenIds === want.token_ids.join(" "), "Hub name: caption = native", `${r.tokenIds} vs ${want.token_ids.join(" ")}`);
    // A sharded checkpoint: model.safetensors is a 404, the index names two shards.
    const shardedKey = `url:${hub.endpoint}/blipq-test/tiny-sharded/resolve/main/`;
    await page.fill("#model-url", "blipq-test/tiny-sharded");
    await page.click("#load-url");
    await page.waitForSelector(`.model-item[data-key="${shardedKey}"]`, { timeout: 120_000 });
    check(
      ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"].every((f) =>
        hub.requests.includes(`/blipq-test/tiny-sharded/resolve/main/${f}`),
      ),
      "Hub name: a sharded checkpoint's index, then each shard",
      hub.requests.join(" "),
    );
    const s = await captionGallery(page, shardedKey, image);
    check(s.tokenIds === want.token_ids.join(" "), "Hub name, sharded safetensors: caption = native", s.tokenIds);
    await page.fill("#model-url", "blipq-test/tiny--bin");
    await page.click("#load-url");
    await page.waitForFunction(() => [...document.querySelectorAll("#messages .msg")].some((m) => m.textContent.includes("tiny--bin")), null, {
      timeout: 10_000,
    });
    const said = await page.$$eval("#messages .msg", (m) => m.map((e) => e.textContent).join(" / "));
    check(/Hub model "blipq-test\/tiny--bin"/.test(said) && /'--'/.test(said), "Hub name: a malformed one is refused, saying why", said);
  } finally {
    await page.close();
    hub.close();
    await rm(shardedDir, { recursive: true, force: true });
  }
}

/** `blipq quantize --scheme` of a checkpoint folder into a new temporary folder; returns it and its sha256. */
async function cliQuantize(bin, dir, scheme = "q8_0", extra = []) {
  const out = join(await mkdtemp(join(tmpdir(), "blipq-e2e-int8-")), "int8");
  execFileSync(bin, ["quantize", "--no-validate", "--scheme", scheme, "--model", dir, "--out", out, ...extra], { cwd: root, stdio: "ignore" });
  const bytes = await readFile(join(out, "model.safetensors"));
  return { dir: out, sha256: createHash("sha256").update(bytes).digest("hex") };
}

function cliCaption(bin, dir, image) {
  return JSON.parse(execFileSync(bin, ["caption", "--json", "--model", dir, `data/demo-eval/${image}`], { cwd: root, encoding: "utf8" }))[0];
}

/** Waits for a loaded-model item and returns its data attributes. */
async function loadedItem(page, key) {
  await page.waitForSelector(`.model-item[data-key="${key}"]`, { timeout: 300_000 });
  return page.evaluate((k) => ({ ...document.querySelector(`.model-item[data-key="${k}"]`).dataset }), key);
}

/**
 * "Make INT8" on Hub checkpoints with the real base layout (tests/fixtures/real-bin: the real
 * metadata files, a torch.save pytorch_model.bin with the real key set; and its sharded
 * safetensors conversion): loaded by name from the loopback Hub, captioned (= CLI), quantized
 * in the page (sha256 = `blipq quantize`, with progress), captioned as INT8 (= CLI), benchmarked
 * FP32 vs the INT8 it made (results = CLI captions), its files downloaded (same bytes), and,
 * with the Hub stopped, loaded again from the browser's storage on a new page and captioned.
 */
async function makeInt8Scenario({ context, base, bin, pageErrors }) {
  log("Make INT8 in the page from Hub checkpoints with the real layout; reload it with the Hub stopped");
  const image = IMAGES[1];
  const binDir = join(root, REAL_FIXTURE);
  const work = await mkdtemp(join(tmpdir(), "blipq-e2e-real-"));
  const converted = join(work, "converted");
  execFileSync(bin, ["convert", "--model", binDir, "--out", converted], { cwd: root, stdio: "ignore" });
  const shardedDir = join(work, "sharded");
  await mkdir(shardedDir);
  await shardedCopy(converted, shardedDir);
  const repos = {
    bin: { name: "blipq-test/blip-real-bin", dir: binDir },
    sharded: { name: "blipq-test/blip-real-sharded", dir: shardedDir },
  };
  const hub = await startMockHub(Object.fromEntries(Object.values(repos).map((r) => [r.name, { dir: r.dir, revisions: ["main"] }])));
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`page error (make INT8): ${e.message}`));
  const made = {};
  try {
    await page.goto(`${base}?hub=${encodeURIComponent(hub.endpoint)}`);
    await page.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
    await page.waitForSelector(`#gallery [data-file="${image}"]`, { timeout: 30_000 });
    for (const [kind, repo] of Object.entries(repos)) {
      const key = `url:${hub.endpoint}/${repo.name}/resolve/main/`;
      await page.fill("#model-url", repo.name);
      await page.click("#load-url");
      await loadedItem(page, key);
      const want = cliCaption(bin, repo.dir, image);
      const r = await captionGallery(page, key, image);
      check(r.tokenIds === want.token_ids.join(" "), `${kind}: FP32 caption by Hub name = CLI`, `${r.tokenIds} vs ${want.token_ids.join(" ")}`);
      const cli = await cliQuantize(bin, repo.dir);
      const stages = [];
      await page.evaluate(() => {
        window.__progress = [];
        new MutationObserver(() => window.__progress.push(document.getElementById("progress").textContent)).observe(
          document.getElementById("progress"),
          { childList: true, characterData: true, subtree: true },
        );
      });
      // The other schemes too, on the .bin (before Q8_0, so the benchmark's suggested pair stays
      // FP32 vs INT8): F16, per-channel INT8, Q4_0, mixed (its sweep on the built-in validation
      // images, within a 60% budget typed into the page: this small model's all-4-bit file is
      // half its FP32 one), calibrated Q4_0 and smoothed per-channel INT8 ("calibrate" ticked:
      // --calibrate), each = the CLI's bytes and captions.
      const others = [
        ["f16", "f16", "F16"],
        ["int8-channel", "int8ch", "INT8 per channel"],
        ["q4_0", "q4-0", "Q4_0"],
        ["mixed", "mixed-b60", "mixed", ["--size-budget", "0.6"]],
        ["q4_0", "q4-0-cal", "calibrated Q4_0", ["--calibrate"]],
        ["int8-channel", "int8ch-cal", "smoothed INT8 per channel", ["--calibrate"]],
      ];
      for (const [scheme, suffix, name, extra = []] of kind === "bin" ? others : []) {
        const cliMade = await cliQuantize(bin, repo.dir, scheme, extra);
        if (scheme === "mixed") await page.fill(`.mixed-budget-input[data-key="${key}"]`, "60");
        if (extra.includes("--calibrate")) await page.check(`.calibrate-input[data-key="${key}"]`);
        await page.click(`.make-scheme[data-scheme="${scheme}"][data-key="${key}"]`);
        const h = await (
          await page.waitForFunction(
            (n) => [...document.querySelectorAll(".made-item")].find((e) => e.dataset.id.startsWith(n))?.dataset ?? null,
            `${repo.name.replace("/", "-")}-${suffix}-`,
            { timeout: 300_000 },
          )
        ).jsonValue();
        check(h.sha256 === cliMade.sha256, `bin: the ${name} made in the page = blipq quantize --scheme ${scheme} (sha256)`, `${h.sha256} vs ${cliMade.sha256}`);
        if (scheme === "mixed") {
          const plan = await page.$eval(`.made-item[data-id="${h.id}"]`, (e) => e.textContent);
          check(/\d+ of \d+ layer groups q8_0, the rest q4_0; [\d.]+% of the source \(budget 60\.0%\)/.test(plan), "bin: the mixed model's plan is shown", plan);
        }
        const hKey = `made:${h.id}`;
        await loadedItem(page, hKey);
        const wantMade = cliCaption(bin, cliMade.dir, image);
        const c = await captionGallery(page, hKey, image);
        check(c.tokenIds === wantMade.token_ids.join(" "), `bin: ${name} caption = CLI on the CLI's ${name}`, `${c.tokenIds} vs ${wantMade.token_ids.join(" ")}`);
        await rm(dirname(cliMade.dir), { recursive: true, force: true });
      }
      await page.click(`.make-scheme[data-scheme="q8_0"][data-key="${key}"]`);
      const item = await page.waitForFunction(
        (n) => [...document.querySelectorAll(".made-item")].find((e) => e.dataset.id.startsWith(n))?.dataset ?? null,
        `${repo.name.replace("/", "-")}-int8-`,
        { timeout: 300_000 },
      );
      const m = await item.jsonValue();
      stages.push(...(await page.evaluate(() => window.__progress)));
      check(m.sha256 === cli.sha256, `${kind}: the INT8 made in the page = blipq quantize, byte for byte (sha256)`, `${m.sha256} vs ${cli.sha256}`);
      check(
        ["SHA-256 of the source weights", "quantizing tensors", "tensors"].every((s) => stages.some((t) => t.includes(s))),
        `${kind}: Make INT8 shows its progress (hashing, tensors)`,
        stages.at(-1),
      );
      const madeKey = `made:${m.id}`;
      await loadedItem(page, madeKey);
      const wantInt8 = cliCaption(bin, cli.dir, image);
      const q = await captionGallery(page, madeKey, image);
      check(q.tokenIds === wantInt8.token_ids.join(" "), `${kind}: INT8 caption = CLI on the CLI's INT8`, `${q.tokenIds} vs ${wantInt8.token_ids.join(" ")}`);
      made[kind] = { id: m.id, key, madeKey, sha256: m.sha256, cli, want, wantInt8 };
    }

    // The benchmark view: the source and the INT8 made from it are checked after Make INT8.
    const { key, madeKey } = made.sharded;
    const checked = await page.$$eval("#bench-models input:checked", (els) => els.map((e) => e.dataset.key));
    check(JSON.stringify(checked) === JSON.stringify([key, madeKey]), "bench view: FP32 and the INT8 made from it are chosen", JSON.stringify(checked));
    await page.fill("#bench-count", "2");
    await page.fill("#bench-warmup", "0");
    await page.click("#bench-run");
    await page.waitForSelector("#bench-section[data-status=done], #bench-section[data-status=error]", { timeout: 300_000 });
    check((await page.getAttribute("#bench-section", "data-status")) === "done", "bench view: FP32 vs the page's INT8 finished");
    const report = await page.evaluate(() => window.blipqLastReport.models.map((r) => JSON.parse(r.resultsJson)));
    const header = await page.$$eval("#bench-table thead th", (c) => c.map((e) => e.textContent));
    check(header.length === 4 && header[0] === "Metric" && header[1] === "blipq-test-blip-real-sharded" && header[2] === "blipq-test-blip-real-sharded-int8", "bench view: table of FP32 vs INT8", header.join("|"));
    const evalFirst = JSON.parse(await readFile(join(root, "data/demo-eval/captions.json"), "utf8")).images.slice(0, 2).map((i) => i.file_name);
    for (const [k, r] of report.entries()) {
      const ok = r.samples.every((s) => {
        const dir = k === 0 ? repos.sharded.dir : made.sharded.cli.dir;
        return s.token_ids.join(" ") === cliCaption(bin, dir, s.image).token_ids.join(" ");
      });
      check(ok && r.samples.length === 2 && evalFirst.includes(r.samples[0].image), `bench view: ${r.label} samples = CLI captions`);
    }

    // The files can be downloaded, and are the INT8 checkpoint's.
    const itemSel = `.made-item[data-id="${made.sharded.id}"]`;
    await page.click(`${itemSel} summary`);
    await page.waitForSelector(`${itemSel} a[data-file="model.safetensors"]`, { timeout: 30_000 });
    const names = await page.$$eval(`${itemSel} a[data-file]`, (a) => a.map((e) => e.dataset.file).sort());
    // blipq quantize also writes its validation report, which the page does not make.
    const cliNames = (await readdir(made.sharded.cli.dir)).filter((f) => f !== "quantized_results.json").sort();
    check(JSON.stringify(names) === JSON.stringify(cliNames), "downloads: the same files as blipq quantize writes", `${names} vs ${cliNames}`);
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click(`${itemSel} a[data-file="model.safetensors"]`)]);
    const got = createHash("sha256").update(await readFile(await dl.path())).digest("hex");
    check(got === made.sharded.sha256, "downloads: model.safetensors has the sha256 shown", got);
    await page.locator("#model-section").scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(artifacts, "08-made-int8.png"), fullPage: true });
  } finally {
    await page.close();
    hub.close();
  }

  // The Hub is gone: a new visit lists the kept INT8 checkpoints and loads one with no network.
  const again = await context.newPage();
  again.on("pageerror", (e) => pageErrors.push(`page error (made, reload): ${e.message}`));
  try {
    const before = hub.requests.length;
    await again.goto(base);
    await again.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
    await again.waitForSelector(`#gallery [data-file="${image}"]`, { timeout: 30_000 });
    const m = made.bin;
    await again.waitForSelector(`.made-item[data-id="${m.id}"] .load-made`, { timeout: 30_000 });
    await again.click(`.made-item[data-id="${m.id}"] .load-made`);
    const item = await loadedItem(again, m.madeKey);
    check(item.fromCache === "true", "kept INT8: loaded from the browser's storage", item.fromCache);
    const r = await captionGallery(again, m.madeKey, image);
    check(r.tokenIds === m.wantInt8.token_ids.join(" "), "kept INT8, Hub stopped: caption = CLI", r.tokenIds);
    check(hub.requests.length === before, "kept INT8: nothing was requested from the (stopped) Hub");
    // Deleting removes it from the list and the storage.
    await again.click(`.made-item[data-id="${made.sharded.id}"] .delete-made`);
    await again.waitForFunction((id) => !document.querySelector(`.made-item[data-id="${id}"]`), made.sharded.id, { timeout: 10_000 });
    check(true, "kept INT8: Delete removes it");
  } finally {
    await again.close();
    await rm(work, { recursive: true, force: true });
    for (const m of Object.values(made)) await rm(dirname(m.cli.dir), { recursive: true, force: true });
  }
}

/**
 * The benchmark over the user's own images: two uploaded images, one with captions typed next
 * to it and one with them from a COCO captions file; BLEU-4 shows, and the samples are the CLI's.
 */
async function ownImagesBenchScenario({ page, native }) {
  log("benchmark over your own images, references typed and from a COCO file; files over the caps refused unread");
  const files = IMAGES.slice(0, 2).map((i) => join(root, "data/demo-eval", i));
  await page.check("#bench-set-own");
  // Files over the engine's caps (sparse: their size is all that is real) are refused by name
  // before the page reads them: an image over 256 MB, a captions file over 512 MB.
  const big = await mkdtemp(join(tmpdir(), "blipq-e2e-big-"));
  const huge = { image: join(big, "huge.png"), captions: join(big, "huge.json") };
  for (const [f, size] of [[huge.image, 300 * 2 ** 20], [huge.captions, 600 * 2 ** 20]]) {
    const h = await open(f, "w");
    await h.truncate(size);
    await h.close();
  }
  const refusal = (name) =>
    page
      .waitForFunction((n) => [...document.querySelectorAll("#messages .msg")].some((m) => m.textContent.includes(n) && m.textContent.includes("over the limit")), name, { timeout: 30_000 })
      .then(() => true, () => false);
  await page.setInputFiles("#bench-images", huge.image);
  check(await refusal("huge.png"), "own images: an image over the cap is refused by name");
  check((await page.$$("#bench-own-list .own-item")).length === 0, "own images: the refused image is not listed");
  await page.setInputFiles("#bench-captions", huge.captions);
  check(await refusal("huge.json"), "own images: a captions file over the cap is refused by name");
  await rm(big, { recursive: true, force: true });
  await page.setInputFiles("#bench-images", files);
  await page.waitForSelector(`#bench-own-list textarea[data-image="${IMAGES[1]}"]`);
  await page.fill(`#bench-own-list textarea[data-image="${IMAGES[0]}"]`, "four small shapes on a plain background\na few shapes");
  const coco = {
    images: [{ id: 7, file_name: IMAGES[1] }],
    annotations: [{ image_id: 7, caption: "three shapes on a background" }],
  };
  await page.setInputFiles("#bench-captions", { name: "mine.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(coco)) });
  await page.waitForFunction((n) => document.querySelector(`#bench-own-list textarea[data-image="${n}"]`).value.includes("three shapes"), IMAGES[1]);
  await page.fill("#bench-warmup", "0");
  await page.click("#bench-run");
  await page.waitForSelector("#bench-section[data-status=done], #bench-section[data-status=error]", { timeout: 300_000 });
  check((await page.getAttribute("#bench-section", "data-status")) === "done", "own images: benchmark finished");
  const report = await page.evaluate(() => window.blipqLastReport.models.map((r) => JSON.parse(r.resultsJson)));
  for (const r of report) {
    const same = r.samples.every((s) => s.token_ids.join(" ") === native[r.label][s.image].token_ids.join(" "));
    check(r.samples.length === 2 && same, `own images: ${r.label} samples = CLI captions`);
    check(r.quality_metrics && r.quality_metrics.bleu_score >= 0, `own images: ${r.label} has BLEU-4 from the user's references`);
  }
  const caption = await page.textContent("#bench-table caption");
  check(/2 images of yours \(2 with reference captions\)/.test(caption), "own images: the table says which images", caption);
  await page.check("#bench-set-eval");
}

/**
 * Writes the checkpoint folder `src` into `dst` with its `model.safetensors` split into two
 * shards (tensors alternating, by name) plus `model.safetensors.index.json`, as transformers
 * saves a large model.
 */
async function shardedCopy(src, dst) {
  for (const f of await readdir(src)) if (f !== "model.safetensors") await copyFile(join(src, f), join(dst, f));
  const buf = await readFile(join(src, "model.safetensors"));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const data = buf.subarray(8 + n);
  const names = Object.keys(header)
    .filter((k) => k !== "__metadata__")
    .sort();
  const shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  const weightMap = {};
  for (const [s, shard] of shards.entries()) {
    const h = {};
    const parts = [];
    let at = 0;
    for (const name of names.filter((_, i) => i % 2 === s)) {
      const t = header[name];
      const bytes = data.subarray(t.data_offsets[0], t.data_offsets[1]);
      h[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + bytes.length] };
      parts.push(bytes);
      at += bytes.length;
      weightMap[name] = shard;
    }
    const json = Buffer.from(JSON.stringify(h).padEnd(Math.ceil(JSON.stringify(h).length / 8) * 8, " "));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await writeFile(join(dst, shard), Buffer.concat([len, json, ...parts]));
  }
  await writeFile(join(dst, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}

/** The benchmark view: table, chart, downloads, and samples equal to the CLI's captions. */
async function benchmarkScenario({ page, native, shot }) {
  log(`benchmark view on ${BENCH_IMAGES} images`);
  await page.fill("#bench-count", String(BENCH_IMAGES));
  await page.fill("#bench-warmup", "1");
  // Every status line the run shows, to check that fetching and warm-up report progress too.
  await page.evaluate(() => {
    window.__benchStatus = [];
    const status = document.getElementById("bench-status");
    new MutationObserver(() => window.__benchStatus.push(status.textContent)).observe(status, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  await page.click("#bench-run");
  await page.waitForSelector("#bench-section[data-status=done], #bench-section[data-status=error]", { timeout: 300_000 });
  check((await page.getAttribute("#bench-section", "data-status")) === "done", "benchmark finished");
  const statuses = await page.evaluate(() => window.__benchStatus);
  for (const stage of [`fetching images, ${BENCH_IMAGES} of ${BENCH_IMAGES}`, "warm-up (1 caption", `${BENCH_IMAGES} of ${BENCH_IMAGES} images`]) {
    check(statuses.some((s) => s.includes(stage)), `benchmark status showed "${stage}"`);
  }
  const table = await page.$$eval("#bench-table tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  console.log(table.map((r) => `  | ${r.join(" | ")} |`).join("\n"));
  check(table[0]?.join("|") === "Metric|demo|demo-int8|Improvement (demo-int8 vs demo)", "comparison header", table[0]);
  check(
    JSON.stringify(table.slice(1).map((r) => r[0])) ===
      JSON.stringify([
        "Inference speed (s/image)",
        "Throughput (img/s)",
        "Memory (MB)",
        "Model size (MB)",
        "Bytes / parameter",
        "BLEU-4",
        "CIDEr",
        "Token agreement with the first",
        "Vision embedding cosine with the first",
        "Tokens/s",
      ]),
    "comparison rows",
  );
  check(table.slice(1).every((r) => r.length === 4 && r[3] !== "n/a"), "every row has an improvement", JSON.stringify(table));
  check((await page.$$("#bench-chart svg polyline")).length === 2, "chart with two series");
  // The engine's trade-off charts: shown as images and downloadable, one point per model.
  for (const file of ["size_vs_quality.svg", "speed_vs_quality.svg"]) {
    const shown = await page.$eval(`#bench-tradeoffs img[data-file="${file}"]`, (img) => img.complete && img.naturalWidth > 0).catch(() => false);
    check(shown, `${file} shown in the page`);
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click(`#bench-downloads [data-file="${file}"]`)]);
    const svg = await readFile(await dl.path(), "utf8");
    check(MODELS.every((m) => svg.includes(`data-label="${m}"`)) && svg.startsWith("<svg"), `${file} download has a point per model`);
  }
  const results = {};
  for (const m of MODELS) {
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click(`#bench-downloads [data-file="${m}_results.json"]`)]);
    const text = await readFile(await dl.path(), "utf8");
    await writeFile(join(artifacts, `${m}_results.json`), text);
    results[m] = JSON.parse(text);
  }
  for (const m of MODELS) {
    const r = results[m];
    const p = r.performance_metrics;
    check(r.label === m && r.model_info.model_path === `models/${m}`, `${m}_results.json: label and model_path`);
    check(p.total_samples === BENCH_IMAGES && p.individual_times.length === BENCH_IMAGES, `${m}: ${BENCH_IMAGES} samples`);
    check(p.avg_inference_time > 0 && p.throughput_images_per_sec > 0 && p.tokens_per_second > 0, `${m}: speed fields`);
    check(p.memory_usage_mb > 0 && p.memory_usage_mb < 4096, `${m}: memory_usage_mb`, p.memory_usage_mb);
    check(["preprocess_s", "vision_s", "decode_s"].every((k) => p.breakdown[k] >= 0), `${m}: breakdown`);
    const q = r.quality_metrics;
    check(q && q.bleu_score >= 0 && q.bleu_score <= 1 && q.Bleu_4 === q.bleu_score && "CIDEr" in q && "ROUGE_L" in q, `${m}: quality_metrics`);
    const mi = r.model_info;
    const size = (await stat(join(root, `models/${m}/model.safetensors`))).size / 2 ** 20;
    check(Math.abs(mi.model_size_mb - size) < 1e-9 && mi.total_parameters > 0 && mi.is_quantized === (m === "demo-int8"), `${m}: model_info`);
    check(/^wasm32 relaxed-simd \(browser, [2-8] threads\)$/.test(mi.device), `${m}: device names the build and its threads`, mi.device);
    const same = r.samples.every((s) => s.token_ids.join(" ") === native[m][s.image].token_ids.join(" ") && s.caption === native[m][s.image].caption);
    check(same && r.samples.length === BENCH_IMAGES, `${m}: benchmark captions and token ids = native`);
  }
  const md = await page.textContent("#bench-markdown");
  check(md.startsWith("| Metric | demo | demo-int8 | Improvement (demo-int8 vs demo) |\n|---|---|---|---|\n"), "comparison.md format");
  await page.locator("#bench-section").scrollIntoViewIfNeeded();
  await shot("04-benchmark");
}

/** A second visit loads from the Cache API; "clear cache" empties it. */
async function cacheScenario({ page, shot }) {
  log("cache: a second visit does not download again; clear cache empties it");
  await page.reload();
  await page.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
  const cached = await loadBundled(page, "demo");
  check(cached.fromCache === "true", "second load comes from the Cache API", cached.fromCache);
  await page.waitForFunction(() => /\d+ files/.test(document.getElementById("cache-status").textContent));
  await page.click("#clear-cache");
  await page.waitForFunction(() => /empty/.test(document.getElementById("cache-status").textContent));
  check(true, "clear cache empties the cache");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("05-mobile");
}

/** Without COOP/COEP headers: isolated through the service worker, else one thread, said so. */
async function noHeadersScenarios({ context, native, pageErrors }) {
  log("a static host without COOP/COEP: the service worker isolates the page");
  const plain = await serve(dist, { isolate: false });
  try {
    const plainBase = `http://127.0.0.1:${plain.address().port}/`;
    const p2 = await context.newPage();
    p2.on("pageerror", (e) => pageErrors.push(`page error (no headers): ${e.message}`));
    await p2.goto(plainBase);
    // The page registers www/coi-sw.js and reloads once; waitForSelector spans the reload.
    await p2.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
    const sw = await p2.evaluate(() => navigator.serviceWorker.controller?.scriptURL ?? null);
    check(sw !== null && sw.endsWith("/coi-sw.js"), "the page is controlled by coi-sw.js", sw);
    await checkThreads(p2, "without headers, through the service worker");
    await loadBundled(p2, "demo-int8");
    await p2.waitForSelector(`#gallery [data-file="${IMAGES[0]}"]`, { timeout: 30_000 });
    const r = await captionGallery(p2, "demo-int8", IMAGES[0]);
    check(r.tokenIds === native["demo-int8"][IMAGES[0]].token_ids.join(" "), "without headers: caption = native", r.tokenIds);
    await p2.screenshot({ path: join(artifacts, "06-service-worker.png"), fullPage: true });
    await p2.close();

    log("no headers and no service worker: one thread, said so, same captions");
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    try {
      const p3 = await (await browser.newContext({ serviceWorkers: "block" })).newPage();
      p3.on("pageerror", (e) => pageErrors.push(`page error (single thread): ${e.message}`));
      await p3.goto(plainBase);
      await p3.waitForSelector("body[data-worker-ready]", { timeout: 60_000 });
      const t = await p3.evaluate(() => ({
        isolated: self.crossOriginIsolated,
        threads: document.body.dataset.threads,
        note: document.getElementById("threads-note").textContent,
        notices: [...document.querySelectorAll("#messages .msg.notice")].map((m) => m.textContent),
      }));
      console.log(`  crossOriginIsolated ${t.isolated}, threads ${t.threads} ${t.note}; notice: ${t.notices.join(" / ")}`);
      check(t.isolated === false && t.threads === "1", "not isolated: the worker runs on one thread", JSON.stringify(t));
      check(/not cross-origin isolated/.test(t.note), "the thread count says why", t.note);
      check(t.notices.some((m) => /one thread/.test(m) && /Cross-Origin-Embedder-Policy/.test(m)), "a notice explains the headers", t.notices.join(" / "));
      await loadBundled(p3, "demo-int8");
      await p3.waitForSelector(`#gallery [data-file="${IMAGES[1]}"]`, { timeout: 30_000 });
      const r = await captionGallery(p3, "demo-int8", IMAGES[1]);
      check(r.tokenIds === native["demo-int8"][IMAGES[1]].token_ids.join(" "), "one thread: caption = native", r.tokenIds);
      await p3.screenshot({ path: join(artifacts, "07-single-thread.png"), fullPage: true });
    } finally {
      await browser.close();
    }
  } finally {
    plain.close();
  }
}

async function main() {
  if (!existsSync(join(dist, "index.html")) || !existsSync(join(dist, "blipq_bg.wasm"))) {
    throw new Error(`${dist} has no built page: run scripts/web.sh build --release first`);
  }
  for (const p of ["models/demo/model.safetensors", "models/demo-int8/model.safetensors", "data/demo-eval/captions.json", "www/worker.js"]) {
    check(existsSync(join(dist, p)), `dist/${p} exists`);
  }
  await rm(artifacts, { recursive: true, force: true });
  await mkdir(artifacts, { recursive: true });

  log("native reference (blipq caption --json)");
  const bin = nativeBinary();
  const evalImages = JSON.parse(await readFile(join(root, "data/demo-eval/captions.json"), "utf8"))
    .images.slice(0, BENCH_IMAGES)
    .map((i) => i.file_name);
  const wanted = [...new Set([...IMAGES, ...evalImages])];
  const native = {};
  for (const m of MODELS) {
    native[m] = nativeCaptions(bin, m, wanted);
    for (const i of IMAGES) console.log(`  ${m} ${i}: "${native[m][i].caption}" ${JSON.stringify(native[m][i].token_ids)}`);
  }

  const server = await serve(dist, { mounts: { "/fixtures/tiny-bin/": join(root, "tests/fixtures/tiny-bin") } });
  const base = `http://127.0.0.1:${server.address().port}/`;
  const userDataDir = await mkdtemp(join(tmpdir(), "blipq-e2e-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  const pageErrors = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (process.env.BLIPQ_E2E_VERBOSE) console.log(`  [console ${m.type()}] ${m.text()}`);
      // The deliberate faults (tests/e2e/faults.mjs) show up as "Failed to load resource",
      // CORS refusals and net::ERR_* lines; anything else is a bug.
      if (m.type() === "error" && !/Failed to load resource|blocked by CORS policy|net::ERR_/.test(m.text())) {
        pageErrors.push(`console error: ${m.text()}`);
      }
    });
    const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

    const t = { context, page, base, native, bin, pageErrors, shot };
    // BLIPQ_E2E_ONLY=name,name runs only those scenarios (for development; CI runs them all).
    const only = process.env.BLIPQ_E2E_ONLY?.split(",");
    const scenarios = {
      openPage: () => openPageScenario(t),
      caption: () => captionScenario(t),
      simd128: () => {
        log("the simd128 build (?simd=simd128): same captions");
        return simd128BuildScenario(context, base, native, pageErrors);
      },
      faults: () => faultScenario(t),
      options: () => optionsScenario(t),
      pytorchBin: () => pytorchBinScenario(t),
      hubName: () => hubNameScenario(t),
      benchmark: () => benchmarkScenario(t),
      ownImages: () => ownImagesBenchScenario(t),
      makeInt8: () => makeInt8Scenario(t),
      cache: () => cacheScenario(t),
      noHeaders: () => noHeadersScenarios(t),
    };
    for (const [name, run] of Object.entries(scenarios)) if (!only || only.includes(name)) await run();

    check(pageErrors.length === 0, "no uncaught errors in the page", pageErrors.join("\n"));
  } finally {
    await context.close();
    server.close();
    await rm(userDataDir, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (e) {
  failures += 1;
  console.error(`\nFAIL: ${e.stack ?? e}`);
}
console.log(failures ? `\ne2e: ${failures} check(s) FAILED (screenshots in ${artifacts})` : `\ne2e: all checks passed (screenshots in ${artifacts})`);
process.exit(failures ? 1 : 0);
