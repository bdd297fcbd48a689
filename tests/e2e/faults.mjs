// The page under faults (part of tests/e2e/run.mjs): every scenario provokes one fault, from a
// URL of the fault-injecting host (server.mjs) or an upload, and checks that
//   - a message in plain words appears in the alert region (#messages .msg.error), naming the
//     file and the problem (no stack, no raw exception text);
//   - the worker survived with its models, and the next action works: selecting the bundled
//     demo INT8 and captioning an eval image gives the native token ids;
//   - the Cache (blipq-models-v1) holds no entry for the faulty folder, and every entry it holds
//     has the size it recorded (X-Blipq-Size).
// Two more scenarios damage the Cache itself (a short entry, a corrupt one) and check that the
// page notices, deletes the entry and downloads the file again.
//
// run.mjs calls runFaultScenarios(t) with its page and helpers (see the `t` fields used below).
import { CLAIM_DELTA, HUGE_STREAM_CAP, hugePng, startFaultServer } from "./server.mjs";

const CACHE_NAME = "blipq-models-v1";
const SIZE_HEADER = "X-Blipq-Size";
/** Signs of a message that is not in plain words: stack frames, raw exception names or texts. */
const RAW = /\n\s*at |\S+\.(m?js|wasm):\d+|\b(TypeError|RangeError|RuntimeError|SyntaxError)\b|Failed to fetch|network error|\[object |\bundefined\b|\bNaN\b/;

// ------------------------------------------------------------------ helpers

/** Marks the messages now in the alert region, so that new ones can be told apart. */
function markMessagesSeen(page) {
  return page.evaluate(() => {
    for (const m of document.querySelectorAll("#messages .msg")) m.dataset.seen = "true";
  });
}

/**
 * Runs `action` and returns the text (without the "Error: " label) of the first error message it
 * adds to the alert region. Messages already there are marked first: the region keeps only the
 * last few, so counting them would not do.
 */
async function errorAfter(t, action) {
  await markMessagesSeen(t.page);
  await action();
  const sel = "#messages .msg.error:not([data-seen])";
  await t.page.waitForSelector(sel, { timeout: 60_000 });
  return t.page.evaluate((s) => document.querySelector(s).querySelector("span").textContent.replace(/^Error: /, ""), sel);
}

/** The message names the problem (every pattern matches) and reads as plain words. */
function checkMessage(t, what, msg, patterns) {
  console.log(`  message: ${msg}`);
  t.check(patterns.every((p) => p.test(msg)), `${what}: the message names the file and the problem`, msg);
  t.check(!RAW.test(msg), `${what}: the message is in plain words`, msg);
}

/** Loads the checkpoint folder at `url` through the URL form. */
async function submitUrl(t, url) {
  await t.page.fill("#model-url", url);
  await t.page.click("#load-url");
}

/** Every Cache entry (under `prefix`, if given) with its body size and recorded sizes. */
function cacheEntries(page, prefix = "") {
  return page.evaluate(
    async ([name, header, prefix]) => {
      const cache = await caches.open(name);
      const out = [];
      for (const req of await cache.keys()) {
        if (!req.url.startsWith(prefix)) continue;
        const res = await cache.match(req);
        out.push({
          url: req.url,
          size: (await res.blob()).size,
          recorded: res.headers.get(header),
          length: res.headers.get("Content-Length"),
        });
      }
      return out;
    },
    [CACHE_NAME, SIZE_HEADER, prefix],
  );
}

/** No Cache entry for the faulty folder, and every entry has its recorded size. */
async function checkCacheClean(t, what, folder) {
  const all = await cacheEntries(t.page);
  const mine = all.filter((e) => e.url.startsWith(folder));
  t.check(mine.length === 0, `${what}: nothing of ${folder} is cached`, JSON.stringify(mine));
  const bad = all.filter((e) => String(e.size) !== e.recorded || e.recorded !== e.length);
  t.check(bad.length === 0, `${what}: every cached file has its recorded size`, JSON.stringify(bad));
}

/** The worker kept its models, and selecting demo INT8 and captioning an image works. */
async function checkNextAction(t, what) {
  const kept = await t.page.evaluate(() => ({
    models: [...document.querySelectorAll(".model-item")].map((m) => m.dataset.key),
    status: document.getElementById("worker-status").textContent,
  }));
  t.check(
    kept.models.includes("demo") && kept.models.includes("demo-int8") && /^ready/.test(kept.status),
    `${what}: the worker survived with its models`,
    JSON.stringify(kept),
  );
  await t.loadBundled(t.page, "demo-int8");
  const r = await t.captionGallery(t.page, "demo-int8", t.image);
  t.check(
    r.status === "done" && r.tokenIds === t.native["demo-int8"][t.image].token_ids.join(" "),
    `${what}: the next caption works (= native)`,
    `${r.status} ${r.tokenIds}`,
  );
}

/** A folder URL whose load must fail: message, clean Cache, next action. Returns the message. */
async function failingLoad(t, faults, fault, what, patterns) {
  const folder = faults.url(fault);
  const msg = await errorAfter(t, () => submitUrl(t, folder));
  checkMessage(t, what, msg, patterns);
  t.check(
    !(await t.page.$(`.model-item[data-key="url:${folder}"]`)),
    `${what}: no model was added`,
  );
  await checkCacheClean(t, what, folder);
  await checkNextAction(t, what);
  return msg;
}

/** Puts an entry into the Cache as a damaged earlier download would have left it. */
function plantCacheEntry(page, url, source, damage) {
  return page.evaluate(
    async ([name, header, url, source, damage]) => {
      const real = new Uint8Array(await (await fetch(source)).arrayBuffer());
      let body;
      if (damage === "short") body = real.slice(0, real.length >> 1);
      else {
        body = real.slice();
        const headerLen = Number(new DataView(body.buffer).getBigUint64(0, true));
        for (let i = 0; i < 16; i++) body[8 + (headerLen >> 1) + i] ^= 0xff;
      }
      const size = String(real.length); // as recorded for the whole file
      const cache = await caches.open(name);
      await cache.put(
        url,
        new Response(body, { headers: { "Content-Type": "application/octet-stream", "Content-Length": size, [header]: size } }),
      );
      const back = await cache.match(url);
      return { size: (await back.blob()).size, recorded: back.headers.get(header) };
    },
    [CACHE_NAME, SIZE_HEADER, url, source, damage],
  );
}

/** Loads the folder at `folder` (served intact) and returns its .model-item dataset. */
async function loadUrlModel(t, folder) {
  await submitUrl(t, folder);
  const sel = `.model-item[data-key="url:${folder}"]`;
  await t.page.waitForSelector(sel, { timeout: 120_000 });
  return t.page.evaluate((s) => ({ ...document.querySelector(s).dataset }), sel);
}

// ------------------------------------------------------------------ scenarios

/** A folder URL that does not exist on the page's own host (404 on config.json). */
async function missingFolder(t) {
  const folder = `${t.base}no-such-model/`;
  const msg = await errorAfter(t, () => submitUrl(t, folder));
  checkMessage(t, "404 model URL", msg, [/404/, /config\.json/, /not found/]);
  await checkCacheClean(t, "404 model URL", folder);
}

/** A cross-origin folder whose weights file is missing (404 after config.json downloaded). */
async function missingWeights(t, faults) {
  await failingLoad(t, faults, "missing-weights", "404 on model.safetensors", [/model\.safetensors/, /404/, /not found/]);
}

/** A second origin that sends no Access-Control-Allow-Origin: fetch() fails with a TypeError. */
async function corsRefused(t, faults) {
  await failingLoad(t, faults, "no-cors", "CORS refusal", [/config\.json/, /CORS/, /unreachable/, /Access-Control-Allow-Origin/]);
}

/** The real Content-Length, half the body, then the socket is destroyed. */
async function downloadCutMidFile(t, faults) {
  const size = faults.weights.real.length;
  const msg = await failingLoad(t, faults, "cut-mid-file", "download cut mid-file", [
    /model\.safetensors/,
    /cut off/,
    new RegExp(`got [\\d,]+ of ${size.toLocaleString("en-US")} bytes`),
  ]);
  const got = Number(/got ([\d,]+) of/.exec(msg)?.[1].replaceAll(",", ""));
  t.check(got < size, "download cut mid-file: fewer bytes than announced", `${got} of ${size}`);
}

/** Content-Length claims more bytes than the body has; the connection then closes. */
async function contentLengthTooLong(t, faults) {
  const claimed = faults.weights.real.length + CLAIM_DELTA;
  await failingLoad(t, faults, "length-too-long", "Content-Length larger than the body", [
    /model\.safetensors/,
    /cut off/,
    new RegExp(`of ${claimed.toLocaleString("en-US")} bytes`),
  ]);
}

/** Content-Length claims fewer bytes than sent: the browser keeps that many, a truncated file. */
async function contentLengthTooShort(t, faults) {
  await failingLoad(t, faults, "length-too-short", "Content-Length smaller than the body", [/model\.safetensors/, /truncated/]);
}

/** model.safetensors with 16 bytes of its JSON header inverted. */
async function corruptHeader(t, faults) {
  await failingLoad(t, faults, "corrupt-header", "corrupt checkpoint (bytes flipped)", [
    /model\.safetensors/,
    /header is not (UTF-8|valid JSON)/,
  ]);
}

/** model.safetensors that ends in the middle of its header, served with an honest length. */
async function truncatedHeader(t, faults) {
  await failingLoad(t, faults, "truncated-header", "corrupt checkpoint (truncated header)", [/model\.safetensors/, /truncated/]);
}

/**
 * A 3 GiB F16 checkpoint, streamed honestly: the page must refuse it once its header has arrived
 * (6 GiB once converted to F32, more than wasm32's 4 GiB) instead of downloading all of it.
 */
async function tooLargeForWasm(t, faults) {
  await failingLoad(t, faults, "too-large-for-wasm", "checkpoint too large for wasm memory", [
    /model\.safetensors/,
    /too large for wasm memory/,
    /6144 MB/,
    /4096 MB/,
  ]);
  const sent = faults.sent("too-large-for-wasm");
  const size = faults.huge.header.length + faults.huge.dataBytes;
  console.log(`  the host sent ${sent.toLocaleString("en-US")} of ${size.toLocaleString("en-US")} bytes`);
  t.check(sent < faults.huge.header.length + HUGE_STREAM_CAP, "checkpoint too large for wasm memory: refused after its header, not downloaded", sent);
}

/**
 * PNGs of 65 bytes whose headers say 10 000 × 10 000 and 100 000 × 100 000 pixels: refused from
 * the header, before decoding, as over the engine's pixel budget (2^26).
 */
async function hugeImage(t) {
  for (const [side, patterns] of [
    [10_000, [/10000x10000/, /over the limit of 67108864/]],
    [100_000, [/100000x100000 = 10000000000 pixels, over the limit of 67108864/]],
  ]) {
    const name = `huge-${side}.png`;
    const what = `huge image (${side}×${side})`;
    const msg = await errorAfter(t, () => t.page.setInputFiles("#image-file", { name, mimeType: "image/png", buffer: hugePng(side, side) }));
    const card = await t.resultFor(t.page, "demo-int8", name, 1);
    checkMessage(t, what, msg, [new RegExp(name.replace(".", "\\.")), ...patterns]);
    t.check(card.status === "error", `${what}: its result card says failed`, card.status);
    await checkNextAction(t, what);
  }
}

/** Files picked from the computer: too few for a checkpoint, then a complete set with junk weights. */
async function notACheckpoint(t) {
  let msg = await errorAfter(t, () =>
    t.page.setInputFiles("#model-files", [
      { name: "model.safetensors", mimeType: "application/octet-stream", buffer: Buffer.from("this is not a checkpoint") },
      { name: "config.json", mimeType: "application/json", buffer: Buffer.from("{}") },
    ]),
  );
  checkMessage(t, "incomplete checkpoint files", msg, [/missing/, /tokenizer\.json/]);
  const real = (name, mimeType = "application/json") => ({ name, mimeType, buffer: t.demoFile(name) });
  msg = await errorAfter(t, () =>
    t.page.setInputFiles("#model-files", [
      { name: "model.safetensors", mimeType: "application/octet-stream", buffer: Buffer.from("this is not a checkpoint") },
      real("config.json"),
      real("tokenizer.json"),
      real("preprocessor_config.json"),
    ]),
  );
  checkMessage(t, "non-checkpoint weights file", msg, [/model\.safetensors/, /safetensors/]);
  await checkNextAction(t, "non-checkpoint weights file");
}

/** A text file given as an image: refused by the page from its type. */
async function nonImageUpload(t) {
  const msg = await errorAfter(t, () =>
    t.page.setInputFiles("#image-file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("hello") }),
  );
  checkMessage(t, "non-image upload", msg, [/notes\.txt/, /not an image/]);
}

/** Bytes that claim to be a PNG and are not: refused by the worker. */
async function undecodableImage(t) {
  const msg = await errorAfter(t, () =>
    t.page.setInputFiles("#image-file", { name: "broken.png", mimeType: "image/png", buffer: Buffer.from("not really a png") }),
  );
  const broken = await t.resultFor(t.page, "demo-int8", "broken.png", 1);
  checkMessage(t, "undecodable image", msg, [/broken\.png/, /image/]);
  t.check(broken.status === "error", "undecodable image reported by the worker", broken.status);
  await checkNextAction(t, "undecodable image");
}

/**
 * A Cache entry shorter than its recorded size (as an interrupted write would leave it): the
 * page says so, deletes it, downloads the file again, and the model loads and captions as the
 * native demo FP32 does; the new entry is whole.
 */
async function shortCacheEntry(t, faults) {
  const what = "short cache entry";
  const folder = faults.url("ok-short-cache");
  const url = `${folder}model.safetensors`;
  const planted = await plantCacheEntry(t.page, url, `${t.base}models/demo/model.safetensors`, "short");
  t.check(planted.size < Number(planted.recorded), `${what}: planted (${planted.size} of ${planted.recorded} bytes)`);
  await markMessagesSeen(t.page);
  const item = await loadUrlModel(t, folder);
  const said = await t.page.$$eval("#messages .msg.notice:not([data-seen]) span", (m) => m.map((e) => e.textContent));
  console.log(`  notice: ${said.join(" / ")}`);
  t.check(said.some((m) => /cached copy of model\.safetensors was damaged/.test(m) && /downloaded again/.test(m)), `${what}: the page says so`, said.join(" / "));
  t.check(item.fromCache === "false" && faults.requests("ok-short-cache") === 1, `${what}: downloaded again, once`, `${item.fromCache} ${faults.requests("ok-short-cache")}`);
  t.check(Number(item.weightBytes) === faults.weights.real.length, `${what}: the whole weights file loaded`, item.weightBytes);
  const entries = await cacheEntries(t.page, folder);
  const weights = entries.find((e) => e.url === url);
  t.check(
    weights?.size === faults.weights.real.length && weights.recorded === String(weights.size) && entries.length >= 5,
    `${what}: the Cache now holds the whole file (and the folder's others)`,
    JSON.stringify(entries),
  );
  const r = await t.captionGallery(t.page, `url:${folder}`, t.image);
  t.check(r.tokenIds === t.native.demo[t.image].token_ids.join(" "), `${what}: the re-downloaded model captions = native demo`, r.tokenIds);
  await checkNextAction(t, what);
}

/**
 * A Cache entry of the right size with corrupt bytes: the load fails with the engine's message,
 * the page deletes the folder's cached files, and the next load downloads and works.
 */
async function corruptCacheEntry(t, faults) {
  const what = "corrupt cache entry";
  const folder = faults.url("ok-corrupt-cache");
  const url = `${folder}model.safetensors`;
  const planted = await plantCacheEntry(t.page, url, `${t.base}models/demo/model.safetensors`, "flip");
  t.check(String(planted.size) === planted.recorded, `${what}: planted (right size, flipped bytes)`);
  const msg = await errorAfter(t, () => submitUrl(t, folder));
  checkMessage(t, what, msg, [/model\.safetensors/, /header is not (UTF-8|valid JSON)/]);
  t.check(faults.requests("ok-corrupt-cache") === 0, `${what}: the weights came from the Cache`, faults.requests("ok-corrupt-cache"));
  await checkCacheClean(t, what, folder);
  const item = await loadUrlModel(t, folder);
  t.check(item.fromCache === "false" && faults.requests("ok-corrupt-cache") === 1, `${what}: the next load downloads afresh and works`);
  await checkNextAction(t, what);
}

/** Every scenario, in order. The bundled demo FP32 and INT8 models must be loaded (INT8 active). */
export const SCENARIOS = [
  missingFolder,
  missingWeights,
  corsRefused,
  downloadCutMidFile,
  contentLengthTooLong,
  contentLengthTooShort,
  corruptHeader,
  truncatedHeader,
  tooLargeForWasm,
  notACheckpoint,
  nonImageUpload,
  undecodableImage,
  hugeImage,
  shortCacheEntry,
  corruptCacheEntry,
];

/**
 * Runs SCENARIOS against `t` = {page, base (the page's URL), image (an eval image file name),
 * native ({model: {image: native result}}), demoFile(name) (a file of models/demo), check, log,
 * resultFor, captionGallery, loadBundled, shot}, with its own fault-injecting host for the demo checkpoint at `checkpoint`.
 */
export async function runFaultScenarios(t, { checkpoint }) {
  const faults = await startFaultServer({ checkpoint });
  console.log(`  fault-injecting host at ${faults.base}`);
  try {
    for (const scenario of SCENARIOS) {
      t.log(`fault: ${scenario.name}`);
      await scenario(t, faults);
    }
    await t.shot("03-errors");
  } finally {
    await faults.close();
  }
}
