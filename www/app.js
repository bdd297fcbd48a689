// The blipq page. The model runs in a dedicated worker (worker.js); this script only handles the
// DOM. BLEU-4 is computed in the worker and the benchmark reports by the page's own copy of the
// wasm module (benchItems / benchReport), i.e. by the same Rust code as `blipq bench`.
//
// DOM contract (used by tests/e2e): every result card is an <article class="result"> with
// data-status="running|done|error", data-model, data-image, data-caption, data-token-ids (space
// separated, bos included), data-new-tokens, data-stream-updates, data-preprocess-s,
// data-vision-s, data-decode-s, data-total-s, data-tokens-per-s, data-wasm-bytes,
// data-js-heap-bytes, data-bleu4 (when the image has references). Loaded models are
// .model-item elements with data-key, data-weight-bytes, data-mem-before, data-mem-after,
// data-load-ratio, data-from-cache; a model that is not INT8 has .make-scheme buttons
// (data-key, data-scheme: q8_0, int8-channel, q4_0, q4_g128, mixed, f16, bf16) and a
// .mixed-budget-input (data-key; percent of the file, the mixed scheme's size budget) and a
// .calibrate-input checkbox (data-key; --calibrate of the 4-bit schemes and int8-channel). Checkpoints
// made in this browser are .made-item elements with data-id, data-sha256 (of the made
// model.safetensors) and data-source-sha256, and .load-made / .delete-made buttons and download
// links a[data-file] once "Download files" is open. The benchmark's model checkboxes are
// #bench-models input[data-key]. Errors go to #messages (role="alert"). body[data-wasm-build]
// names the worker's build ("relaxed-simd" or "simd128"), body[data-threads] its threads.
import { ownBenchSet, setupOwnImages, usingOwnImages } from "./bench-images.js";
import { showReport } from "./bench-view.js";
import { CACHE_NAME, CALIBRATED_SCHEMES, fileLabel, MIXED_BUDGET_PERCENT, SCHEMES } from "./common.js";
import { $, el, fmtInt, fmtMB, fmtMs, fmtSize, showMessage } from "./dom.js";
import { ensureIsolation } from "./isolation.js";
import { deleteMade, listMade, madeFileBlob } from "./store.js";
import { WorkerClient } from "./worker-client.js";

/** The page's own wasm module: trunk's loader sets window.wasmBindings and fires
 * TrunkApplicationStarted once init() is done. */
const wasmBindings = new Promise((resolve) => {
  if (window.wasmBindings) resolve(window.wasmBindings);
  else addEventListener("TrunkApplicationStarted", () => resolve(window.wasmBindings), { once: true });
});
const EVAL_BASE = new URL("../data/demo-eval/", import.meta.url);
const BUNDLED = {
  demo: { label: "demo", title: "Demo FP32", modelPath: "models/demo" },
  "demo-int8": { label: "demo-int8", title: "Demo INT8", modelPath: "models/demo-int8" },
};
for (const b of Object.values(BUNDLED)) {
  b.source = { kind: "url", base: new URL(`../${b.modelPath}/`, import.meta.url).href };
}
const GALLERY_PAGE = 12;

let bindings = null; // the page's own wasm module (metrics and reports)
let client = null; // the inference worker
const models = new Map(); // key → {key, label, title, source, modelPath, summary}
let activeKey = null;
let evalItems = [];
let galleryShown = 0;
let resultCount = 0;
let busy = 0;

function setBusy(delta) {
  busy += delta;
  document.body.toggleAttribute("data-busy", busy > 0);
}

// ---------------------------------------------------------------- cross-origin isolation

// Started at once, so a reload for isolation happens as early as possible.
const isolation = ensureIsolation(wasmBindings).catch((e) => `not cross-origin isolated (${e.message})`);

let isolationNoticeShown = false;
function showThreads(hello, isolationNote) {
  const threads = hello.threads ?? 1;
  document.body.dataset.threads = String(threads);
  $("threads").textContent = String(threads);
  $("threads-note").textContent = threads > 1 || !hello.threadsNote ? "" : `(${hello.threadsNote})`;
  document.body.dataset.wasmBuild = hello.wasmBuild;
  $("wasm-build").textContent = hello.wasmBuild === "relaxed-simd" ? "relaxed SIMD" : "simd128";
  $("wasm-build-note").textContent = hello.wasmBuildNote ? `(${hello.wasmBuildNote})` : "";
  if (hello.threadedBuild && !hello.crossOriginIsolated && !isolationNoticeShown) {
    isolationNoticeShown = true;
    showMessage(
      `The model runs on one thread (${isolationNote ?? "not cross-origin isolated"}). Serve the ` +
        "page with the headers Cross-Origin-Opener-Policy: same-origin and " +
        "Cross-Origin-Embedder-Policy: require-corp to use every core.",
      "notice",
    );
  }
}

async function startWorker() {
  client?.terminate();
  const isolationNote = await isolation;
  client = new WorkerClient(onWorkerFatal);
  $("worker-status").textContent = "starting…";
  try {
    const hello = await client.request("hello");
    $("worker-status").textContent = `ready (blipq ${hello.version})`;
    showThreads(hello, isolationNote);
    document.body.dataset.workerReady = "true";
    updateMemory(hello.wasmMemoryBytes);
  } catch (e) {
    $("worker-status").textContent = "failed";
    showMessage(`The worker could not start: ${e.message}`);
  }
}

function onWorkerFatal(message) {
  showMessage(
    `${message}. The worker was restarted and loaded models were dropped; load a model again.`,
  );
  models.clear();
  activeKey = null;
  renderModels();
  startWorker();
}

function updateMemory(bytes) {
  if (typeof bytes === "number") $("memory").textContent = fmtMB(bytes);
}

// ---------------------------------------------------------------- models

function progressRow(key, file) {
  const id = `progress-${key}-${file}`.replace(/[^a-zA-Z0-9_-]/g, "_");
  let row = document.getElementById(id);
  if (!row) {
    const label = el("span", { class: "file", id: `${id}-label`, text: file });
    const bar = el("progress", { max: 1, value: 0, "aria-labelledby": `${id}-label` });
    const text = el("span", { class: "amount", text: "waiting…" });
    row = el("div", { class: "progress-row", id }, label, bar, text);
    $("progress").append(row);
  }
  return row;
}

function showProgress(key, ev) {
  const row = progressRow(key, ev.file);
  const [, bar, text] = row.children;
  if (ev.stage === "building") {
    row.classList.add("building");
    text.textContent = `${fmtSize(ev.total)} · building the model…`;
    return;
  }
  if (ev.total) {
    bar.max = ev.total;
    bar.value = ev.loaded;
    const pct = Math.floor((ev.loaded / ev.total) * 100);
    text.textContent = `${fmtSize(ev.loaded)} of ${fmtSize(ev.total)} (${pct}%)${ev.fromCache ? " · from cache" : ""}`;
  } else {
    bar.removeAttribute("value"); // indeterminate: the server sent no Content-Length
    text.textContent = fmtSize(ev.loaded);
  }
  if (ev.done) row.classList.add("done");
}

async function loadModel(key, def) {
  if (models.has(key)) {
    selectModel(key);
    return models.get(key);
  }
  $("progress").replaceChildren();
  const button = document.querySelector(`[data-model="${key}"]`);
  button?.setAttribute("aria-busy", "true");
  setBusy(1);
  try {
    const summary = await client.request("load", { key, source: def.source }, (ev) => {
      if (ev.type === "notice") showMessage(ev.message, "notice");
      else showProgress(key, ev);
    });
    const entry = { key, ...def, summary };
    models.set(key, entry);
    updateMemory(summary.wasmMemoryBytes);
    for (const row of $("progress").children) {
      row.classList.add("done");
      if (row.classList.contains("building")) {
        row.lastElementChild.textContent = `${fmtSize(summary.weightBytes)} · loaded${summary.fromCache ? " from cache" : ""}`;
      }
    }
    selectModel(key);
    updateCacheStatus();
    if (def.source.kind === "made") renderMade();
    return entry;
  } catch (e) {
    $("progress").replaceChildren();
    showMessage(`Could not load ${def.title}: ${e.message}`);
    return null;
  } finally {
    button?.removeAttribute("aria-busy");
    setBusy(-1);
  }
}

function selectModel(key) {
  activeKey = key;
  renderModels();
}

function renderModels() {
  renderBenchModels();
  const list = $("model-list");
  list.replaceChildren();
  $("no-models").hidden = models.size > 0;
  for (const m of models.values()) {
    const s = m.summary;
    const grown = s.memAfter - s.memBefore;
    const ratio = grown / s.weightBytes;
    const input = el("input", {
      type: "radio",
      name: "active-model",
      value: m.key,
      id: `model-${m.key}`,
      checked: m.key === activeKey,
      onchange: () => selectModel(m.key),
    });
    const info = s.info;
    const item = el(
      "div",
      {
        class: `model-item${m.key === activeKey ? " active" : ""}`,
        "data-key": m.key,
        "data-weight-bytes": s.weightBytes,
        "data-mem-before": s.memBefore,
        "data-mem-after": s.memAfter,
        "data-load-ratio": ratio.toFixed(4),
        "data-from-cache": String(s.fromCache),
      },
      input,
      el(
        "label",
        { for: `model-${m.key}` },
        el("strong", { text: m.title }),
        el("span", { class: "tag", text: m.tag ?? (info.is_quantized ? "INT8" : info.dtype.toUpperCase()) }),
        s.fromCache ? el("span", { class: "tag muted", text: "from cache" }) : null,
      ),
      el(
        "dl",
        { class: "facts" },
        ...fact("Weights file", fmtMB(s.weightBytes)),
        ...fact("All files", fmtMB(s.totalBytes)),
        ...fact("Parameters", fmtInt(info.total_parameters)),
        ...fact("Image size", `${info.image_size[1]}×${info.image_size[0]} px`),
        ...fact("wasm memory", `${fmtMB(s.memBefore)} → ${fmtMB(s.memAfter)}`),
        ...fact("Load growth", `${fmtMB(grown)} = ${ratio.toFixed(2)}× the weights file`),
        ...fact("Source", m.modelPath),
      ),
      info.is_quantized
        ? null
        : el(
            "div",
            { class: "buttons" },
            ...Object.entries(SCHEMES).map(([scheme, kind]) =>
              el("button", {
                type: "button",
                class: "secondary make-scheme",
                "data-key": m.key,
                "data-scheme": scheme,
                text: `Make ${kind.name}`,
                title: `Make the ${kind.format} checkpoint of this model here (as blipq quantize --scheme ${scheme}) and keep it in this browser`,
                disabled: making.has(m.key),
                onclick: () => {
                  const options = makeOptions(m.key, scheme);
                  if (options?.sizeBudget !== undefined && !(options.sizeBudget > 0 && options.sizeBudget <= 1)) {
                    showMessage(`Mixed budget: give a percentage of ${m.title}'s weights file above 0 and at most 100 (20 is the default)`);
                    return;
                  }
                  makeQuantized(m, scheme, options);
                },
              }),
            ),
            el(
              "label",
              { class: "mixed-budget", title: "Mixed: the largest weights file, as a percentage of this model's (blipq quantize --size-budget)" },
              "Mixed budget ",
              el("input", {
                type: "number",
                class: "mixed-budget-input",
                "data-key": m.key,
                min: "1",
                max: "100",
                step: "any",
                value: String(mixedBudgets.get(m.key) ?? MIXED_BUDGET_PERCENT),
                oninput: (e) => mixedBudgets.set(m.key, e.target.value),
              }),
              " %",
            ),
            el(
              "label",
              {
                class: "mixed-budget",
                title:
                  "blipq quantize --calibrate, on the built-in validation images: the 4-bit schemes choose their scales with this model's activations; int8-channel moves the activations' range into the weights (SmoothQuant)",
              },
              el("input", {
                type: "checkbox",
                class: "calibrate-input",
                "data-key": m.key,
                checked: calibrating.get(m.key) ?? false,
                onchange: (e) => calibrating.set(m.key, e.target.checked),
              }),
              " calibrate",
            ),
          ),
    );
    list.append(item);
  }
}

// ---------------------------------------------------------------- INT8 made in the page

const making = new Set(); // keys of models being quantized
const mixedBudgets = new Map(); // key → the mixed size budget typed in (percent)
const calibrating = new Map(); // key → whether "calibrate" is ticked

/**
 * "Make"'s options for `scheme`: mixed's size budget typed in for this model (a fraction of its
 * file), and calibration (4-bit schemes, int8-channel) when ticked.
 */
function makeOptions(key, scheme) {
  const options = {};
  if (scheme === "mixed") options.sizeBudget = Number(mixedBudgets.get(key) ?? MIXED_BUDGET_PERCENT) / 100;
  if (CALIBRATED_SCHEMES.includes(scheme) && calibrating.get(key)) options.calibrate = true;
  return Object.keys(options).length ? options : null;
}

/** A progress row for one stage of "Make INT8" (same look as the download rows). */
function stageRow(key, stage, text, done, total) {
  const row = progressRow(`make-${key}`, stage);
  const [, bar, label] = row.children;
  bar.max = total || 1;
  bar.value = done;
  label.textContent = text;
  if (total && done >= total) row.classList.add("done");
}

const STAGE_NAMES = {
  start: "reading the checkpoint",
  calibrate: "calibration: FP32 activations on the validation images",
  hash: "SHA-256 of the source weights",
  quantize: "quantizing tensors",
  reference: "FP32 captions of the validation images",
  sweep: "sensitivity sweep (each layer group alone at 4 bits)",
  plan: "choosing the plan (raising the most sensitive groups to INT8)",
  write: "writing the mixed checkpoint",
  store: "keeping it in this browser",
};

/**
 * "Make INT8" (or F16, BF16: `scheme`): quantizes a loaded model's checkpoint in a fresh worker
 * with the engine's quantizer (`quantizeCheckpoint`, the code of `blipq quantize --scheme`),
 * keeps the result in this browser (www/store.js) and loads it.
 */
async function makeQuantized(m, scheme, options = null) {
  if (making.has(m.key)) return;
  making.add(m.key);
  renderModels();
  $("progress").replaceChildren();
  setBusy(1);
  const worker = new WorkerClient(null);
  try {
    const out = await worker.request(
      "quantize",
      { source: m.source, label: m.label, title: m.title, from: m.modelPath, scheme, options },
      (ev) => {
        if (ev.type === "notice") showMessage(ev.message, "notice");
        else if (ev.type === "progress") showProgress(`make-${m.key}`, ev);
        else if (ev.type === "quantize-progress") {
          const name = STAGE_NAMES[ev.stage] ?? ev.stage;
          const amount =
            ev.stage === "hash"
              ? `${fmtSize(ev.done)} of ${fmtSize(ev.total)}`
              : ev.stage === "quantize"
                ? `${ev.done} of ${ev.total} tensors`
                : ev.stage === "reference" || ev.stage === "calibrate"
                  ? `${ev.done} of ${ev.total} images`
                  : ev.stage === "sweep" || ev.stage === "plan"
                    ? `${ev.done} of ${ev.total} layer groups`
                    : "…";
          stageRow(m.key, name, `${amount}`, ev.done, ev.total);
        }
      },
    );
    const made = out.manifest;
    if (out.files) {
      // The browser would not keep it: offer the files now, nothing is lost.
      showMessage(`${made.title} was made but not kept in this browser (${out.storeError}); its files are offered for download below.`);
      showUnkeptDownloads(made, out.files);
      return;
    }
    stageRow(m.key, STAGE_NAMES.store, out.alreadyKept ? "already kept" : "kept", 1, 1);
    showMessage(
      `${made.title}: ${made.summary.quantized_tensors} tensors ${SCHEMES[made.scheme ?? "q8_0"].name} in ${made.seconds.toFixed(1)} s, ` +
        `${fmtMB(made.files?.["model.safetensors"] ?? made.summary.output_bytes)} (was ${fmtMB(made.sourceBytes)}); ` +
        `peak wasm memory ${fmtMB(out.peakMemoryBytes)}.${out.alreadyKept ? " It was already kept here." : ""}`,
      "notice",
    );
    await renderMade();
    if (await loadModel(`made:${made.id}`, madeModelDef(made))) suggestBench([m.key, `made:${made.id}`]);
  } catch (e) {
    showMessage(`Could not make ${SCHEMES[scheme].name} of ${m.title}: ${e.message}`);
  } finally {
    worker.terminate();
    making.delete(m.key);
    setBusy(-1);
    renderModels();
  }
}

/** One line on a mixed plan: which layer groups were raised, the size and the agreement. */
function planText(plan) {
  const raised = plan.groups.filter((g) => g.precision === plan.high).map((g) => g.group);
  return (
    `${raised.length} of ${plan.groups.length} layer groups ${plan.high}, the rest ${plan.low}; ` +
    `${(100 * plan.size_fraction).toFixed(1)}% of the source (budget ${(100 * plan.size_budget).toFixed(1)}%); ` +
    `token agreement with FP32 on the validation images ${plan.token_agreement.toFixed(3)}` +
    (raised.length ? ` (raised: ${raised.join(", ")})` : "")
  );
}

function madeModelDef(made) {
  return {
    label: made.label,
    title: made.title,
    tag: SCHEMES[made.scheme ?? "q8_0"].name,
    modelPath: `made in this browser from ${made.from}`,
    source: { kind: "made", id: made.id },
  };
}

/** Download links for files held in memory (a checkpoint the browser would not keep). */
function showUnkeptDownloads(made, files) {
  $("no-made").hidden = true;
  const links = Object.entries(files).map(([name, bytes]) => fileLink(name, new Blob([bytes])));
  $("made-list").append(
    el("div", { class: "model-item unkept" }, el("strong", { text: `${made.title} (not kept)` }), el("div", { class: "buttons" }, ...links)),
  );
}

function fileLink(name, blob) {
  return el("a", { class: "button secondary", href: URL.createObjectURL(blob), download: name, "data-file": name, text: name });
}

/** The list of checkpoints made in this browser: load, download files, delete. */
async function renderMade() {
  const list = $("made-list");
  const all = await listMade();
  list.replaceChildren();
  $("no-made").hidden = all.length > 0;
  for (const made of all) {
    const key = `made:${made.id}`;
    const files = el("div", { class: "buttons made-files" });
    const details = el("details", {}, el("summary", { text: "Download files" }), files);
    let reading = false;
    details.addEventListener("toggle", async () => {
      if (!details.open || files.childElementCount || reading) return;
      // Every file is read (and held to its recorded size) before any link shows, so the list
      // appears whole, once.
      reading = true;
      try {
        const links = [];
        for (const name of Object.keys(made.files)) links.push(fileLink(name, await madeFileBlob(made.id, name)));
        files.replaceChildren(...links);
      } catch (e) {
        showMessage(`${made.title}: ${e.message}`);
      } finally {
        reading = false;
      }
    });
    list.append(
      el(
        "div",
        { class: "model-item made-item", "data-id": made.id, "data-sha256": made.sha256, "data-source-sha256": made.sourceSha256 },
        el("div", { class: "made-head" }, el("strong", { text: made.title }), el("span", { class: "tag", text: SCHEMES[made.scheme ?? "q8_0"].name })),
        el(
          "dl",
          { class: "facts" },
          ...fact("Made from", made.from),
          ...fact("Format", made.format),
          ...fact("Weights file", `${fmtMB(made.files["model.safetensors"])} (source ${fmtMB(made.sourceBytes)})`),
          ...(made.plan ? fact("Plan", planText(made.plan)) : []),
          ...fact("Made", `${made.summary.quantized_tensors} tensors in ${made.seconds.toFixed(1)} s, ${new Date(made.createdAt).toLocaleString()}`),
          ...fact("SHA-256", made.sha256),
        ),
        el(
          "div",
          { class: "buttons" },
          el("button", {
            type: "button",
            class: "load-made",
            text: models.has(key) ? "Loaded" : "Load",
            disabled: models.has(key),
            onclick: async () => {
              await loadModel(key, madeModelDef(made));
              renderMade();
            },
          }),
          el("button", {
            type: "button",
            class: "secondary delete-made",
            text: "Delete",
            onclick: async () => {
              await deleteMade(made.id).catch((e) => showMessage(`Could not delete ${made.title}: ${e.message}`));
              renderMade();
            },
          }),
        ),
        details,
      ),
    );
  }
}

function fact(name, value) {
  return [el("dt", { text: name }), el("dd", { text: value })];
}

async function updateCacheStatus() {
  const out = $("cache-status");
  if (!self.caches) {
    out.textContent = "Download cache: not available here (needs https or localhost).";
    return;
  }
  try {
    if (!(await caches.has(CACHE_NAME))) {
      out.textContent = "Download cache: empty.";
      return;
    }
    const cache = await caches.open(CACHE_NAME);
    const keys = await cache.keys();
    let bytes = 0;
    for (const req of keys) {
      const res = await cache.match(req);
      bytes += Number(res?.headers.get("Content-Length")) || 0;
    }
    out.textContent = `Download cache: ${keys.length} file${keys.length === 1 ? "" : "s"}, ${fmtMB(bytes)}.`;
  } catch (e) {
    out.textContent = `Download cache: unavailable (${e.message}).`;
  }
}

function urlModelDef(url) {
  let base = url.trim();
  if (!base.endsWith("/")) base += "/";
  const u = new URL(base, location.href);
  const parts = u.pathname.split("/").filter(Boolean);
  // Hugging Face: .../<owner>/<repo>/resolve/<rev>/ → "<repo>"
  const r = parts.indexOf("resolve");
  const label = (r >= 1 ? parts[r - 1] : parts.at(-1)) || u.hostname;
  return { label, title: label, modelPath: u.href, source: { kind: "url", base: u.href } };
}

/**
 * Where Hub names resolve: https://huggingface.co, or the `?hub=` page parameter (a mirror, or
 * the end-to-end test's loopback Hub).
 */
const HUB_ENDPOINT = new URLSearchParams(location.search).get("hub") ?? undefined;

/**
 * The model field: a Hub name (`owner/name`, `owner/name@revision`; resolved by the engine's
 * `hubModel`, which throws for a malformed name) or any checkpoint folder URL.
 */
function fieldModelDef(text) {
  const hub = bindings.hubModel(text, HUB_ENDPOINT);
  if (!hub) return urlModelDef(text);
  return { label: hub.label, title: hub.label, modelPath: hub.label, source: { kind: "url", base: hub.url } };
}

function localModelDef(files) {
  const first = files[0];
  const folder = first?.webkitRelativePath?.split("/")[0];
  const label = folder || "local";
  return {
    label,
    title: folder ? `${folder} (local)` : "local checkpoint",
    modelPath: folder ? `${folder} (local)` : "local files",
    source: { kind: "files", files },
  };
}

let localCount = 0;
async function loadLocal(fileList) {
  const files = [...fileList].filter((f) => f.size > 0 || f.name.endsWith(".json"));
  if (!files.length) {
    showMessage("No files were given.");
    return;
  }
  const def = localModelDef(files);
  await loadModel(`local-${++localCount}`, def);
}

// ---------------------------------------------------------------- captioning

function currentOptions() {
  const opts = {};
  const prompt = $("opt-prompt").value.trim();
  if (prompt) opts.prompt = prompt;
  const maxLength = $("opt-max-length").value.trim();
  if (maxLength) opts.maxLength = Number(maxLength);
  const beams = $("opt-beams").value.trim();
  if (beams) opts.numBeams = Number(beams);
  for (const [k, v] of Object.entries(opts)) {
    if (k !== "prompt" && (!Number.isInteger(v) || v < 1)) {
      throw new Error(`${k === "maxLength" ? "Max length" : "Beams"} must be a whole number ≥ 1`);
    }
  }
  return opts;
}

function jsHeap() {
  return performance.memory?.usedJSHeapSize ?? null;
}

/** Captions one image with the active model; `item` = {name, blob, references?}. */
async function captionImage(item) {
  if (!activeKey) {
    showMessage("Load a model first (e.g. the bundled demo FP32).");
    $("load-demo").focus();
    return null;
  }
  let options;
  try {
    options = currentOptions();
  } catch (e) {
    showMessage(e.message);
    return null;
  }
  if (item.blob.type && !item.blob.type.startsWith("image/")) {
    showMessage(`${item.name} is not an image (its type is ${item.blob.type}); choose a PNG, JPEG, WebP, GIF or BMP file.`);
    return null;
  }
  const model = models.get(activeKey);
  const card = resultCard(item, model);
  const captionEl = card.querySelector(".caption");
  let updates = 0;
  setBusy(1);
  try {
    const out = await client.request(
      "caption",
      { key: model.key, image: item.blob, options, references: item.references ?? null },
      (ev) => {
        if (ev.type === "token") {
          updates += 1;
          captionEl.textContent = ev.text || "…";
          card.dataset.streamUpdates = String(updates);
        }
      },
    );
    fillResult(card, out, updates);
    updateMemory(out.wasmMemoryBytes);
    return card;
  } catch (e) {
    // The engine names the image "(input image)"; the page knows its name and says it first.
    const message = e.message.replace(/^image \(input image\): /, "");
    card.dataset.status = "error";
    captionEl.textContent = "failed";
    card.querySelector(".metrics").replaceChildren(el("p", { class: "error-text", text: message }));
    showMessage(`Could not caption ${item.name}: ${message}`);
    return card;
  } finally {
    setBusy(-1);
  }
}

function resultCard(item, model) {
  $("no-results").hidden = true;
  resultCount += 1;
  const url = URL.createObjectURL(item.blob);
  const img = el("img", { src: url, alt: `Image ${item.name}`, width: 96, height: 96 });
  img.addEventListener("error", () => img.replaceWith(el("div", { class: "no-thumb", text: "no preview" })));
  const headingId = `result-${resultCount}-h`;
  const card = el(
    "article",
    {
      class: "result",
      "aria-labelledby": headingId,
      "data-status": "running",
      "data-model": model.key,
      "data-image": item.name,
      "data-stream-updates": "0",
    },
    el("div", { class: "thumb" }, img),
    el(
      "div",
      { class: "body" },
      el("h4", { id: headingId }, el("span", { text: item.name }), el("span", { class: "tag", text: model.title })),
      el("p", { class: "caption", text: "…" }),
      el("div", { class: "metrics" }, el("p", { class: "hint", text: "Running…" })),
    ),
  );
  card._references = item.references ?? null;
  $("results").prepend(card);
  return card;
}

function fillResult(card, out, updates) {
  const t = out.timings;
  const tokensPerS = t.total_s > 0 ? out.newTokens / t.total_s : 0;
  const heap = out.jsHeapBytes ?? jsHeap();
  Object.assign(card.dataset, {
    status: "done",
    caption: out.caption,
    tokenIds: out.tokenIds.join(" "),
    newTokens: String(out.newTokens),
    streamUpdates: String(updates),
    preprocessS: String(t.preprocess_s),
    visionS: String(t.vision_s),
    decodeS: String(t.decode_s),
    totalS: String(t.total_s),
    tokensPerS: String(tokensPerS),
    wasmBytes: String(out.wasmMemoryBytes),
  });
  if (heap !== null) card.dataset.jsHeapBytes = String(heap);
  if (out.bleu4 !== null && out.bleu4 !== undefined) card.dataset.bleu4 = String(out.bleu4);
  card.querySelector(".caption").textContent = out.caption || "(empty caption)";
  const dl = el(
    "dl",
    { class: "facts timing" },
    ...fact("Preprocess", fmtMs(t.preprocess_s)),
    ...fact("Vision encoder", fmtMs(t.vision_s)),
    ...fact("Decoding", fmtMs(t.decode_s)),
    ...fact("Total", fmtMs(t.total_s)),
    ...fact("Tokens/s", `${tokensPerS.toFixed(1)} (${out.newTokens} tokens)`),
    ...fact("wasm memory", fmtMB(out.wasmMemoryBytes)),
    ...(heap !== null ? fact("JS heap", fmtMB(heap)) : fact("JS heap", "not exposed by this browser")),
    ...(out.bleu4 !== null && out.bleu4 !== undefined ? fact("BLEU-4", out.bleu4.toFixed(4)) : []),
  );
  const extra = [];
  const refs = card._references;
  if (refs?.length) {
    extra.push(
      el("details", {}, el("summary", { text: `Reference captions (${refs.length})` }), el("ul", {}, ...refs.map((r) => el("li", { text: r })))),
    );
  }
  extra.push(
    el("details", {}, el("summary", { text: "Token ids" }), el("code", { class: "ids", text: out.tokenIds.join(" ") })),
  );
  card.querySelector(".metrics").replaceChildren(dl, ...extra);
}

async function captionEvalItem(item) {
  try {
    const res = await fetch(new URL(item.file, EVAL_BASE));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const blob = await res.blob();
    return await captionImage({ name: item.file, blob, references: item.references });
  } catch (e) {
    showMessage(`Could not fetch ${item.file}: ${e.message}`);
    return null;
  }
}

// ---------------------------------------------------------------- gallery

async function loadEvalSet() {
  try {
    const res = await fetch(new URL("captions.json", EVAL_BASE));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    evalItems = bindings.benchItems(await res.text(), "data/demo-eval/captions.json");
    $("bench-count").max = String(evalItems.length);
    showMoreGallery();
  } catch (e) {
    showMessage(`Could not load the bundled eval set: ${e.message}`);
  }
}

function showMoreGallery() {
  const gallery = $("gallery");
  const next = evalItems.slice(galleryShown, galleryShown + GALLERY_PAGE);
  for (const item of next) {
    const src = new URL(item.file, EVAL_BASE).href;
    gallery.append(
      el(
        "div",
        { role: "listitem" },
        el(
          "button",
          {
            type: "button",
            class: "thumb-button",
            "data-file": item.file,
            title: item.references[0] ?? item.file,
            "aria-label": `Caption ${item.file}`,
            onclick: () => captionEvalItem(item),
          },
          el("img", { src, alt: "", width: 64, height: 64, loading: "lazy" }),
        ),
      ),
    );
  }
  galleryShown += next.length;
  $("gallery-more").hidden = galleryShown >= evalItems.length;
}

function captionFiles(files) {
  const list = [...files];
  if (!list.length) return;
  (async () => {
    for (const f of list) await captionImage({ name: f.name || "pasted image", blob: f });
  })();
}

// ---------------------------------------------------------------- benchmark

/** Keys checked in the benchmark's model list; the bundled pair until the user chooses. */
const benchChecked = new Set(["demo", "demo-int8"]);
let benchTouched = false;

/** Every model the benchmark can run: the bundled pair (loaded or not), then the loaded ones. */
function benchChoices() {
  const out = Object.entries(BUNDLED).map(([key, def]) => ({ key, ...def }));
  for (const m of models.values()) if (!BUNDLED[m.key]) out.push(m);
  return out;
}

function renderBenchModels() {
  const box = $("bench-models");
  box.replaceChildren(
    ...benchChoices().map((m) => {
      const id = `bench-model-${m.key}`.replace(/[^a-zA-Z0-9_-]/g, "_");
      return el(
        "label",
        { class: "inline", for: id },
        el("input", {
          type: "checkbox",
          id,
          value: m.key,
          "data-key": m.key,
          checked: benchChecked.has(m.key),
          onchange: (e) => {
            benchTouched = true;
            if (e.target.checked) benchChecked.add(m.key);
            else benchChecked.delete(m.key);
          },
        }),
        ` ${m.title}`,
      );
    }),
  );
}

/** Checks exactly `keys` in the benchmark's list, unless the user already chose. */
function suggestBench(keys) {
  if (benchTouched) return;
  benchChecked.clear();
  for (const k of keys) benchChecked.add(k);
  renderBenchModels();
}

/** Report labels name files (fileLabel) and must differ: a repeated one gets -2, -3, ... */
function uniqueLabels(defs) {
  const seen = new Map();
  return defs.map((d) => {
    const label = fileLabel(d.label);
    const n = (seen.get(label) ?? 0) + 1;
    seen.set(label, n);
    return n === 1 ? label : `${label}-${n}`;
  });
}

async function runBenchmark() {
  const n = Number($("bench-count").value);
  const warmup = Number($("bench-warmup").value);
  if (!Number.isInteger(warmup) || warmup < 0) return showMessage("Warm-up runs must be a whole number ≥ 0.");
  const defs = benchChoices().filter((m) => benchChecked.has(m.key));
  if (defs.length < 2) return showMessage("Check at least two models to compare (the first one checked is the reference).");
  let options;
  let set;
  try {
    options = currentOptions();
    if (usingOwnImages()) set = ownBenchSet();
    else {
      if (!Number.isInteger(n) || n < 1) throw new Error("Images must be a whole number ≥ 1.");
      if (!evalItems.length) throw new Error("The eval set is not loaded.");
      const items = evalItems.slice(0, n);
      set = { items, files: null, description: `the bundled eval set (${items.length} images)` };
    }
  } catch (e) {
    return showMessage(e.message);
  }
  const { items } = set;
  const labels = uniqueLabels(defs);
  const bar = $("bench-progress");
  const status = $("bench-status");
  bar.max = items.length * defs.length;
  bar.value = 0;
  $("bench-run").disabled = true;
  $("bench-section").dataset.status = "running";
  setBusy(1);
  const runs = [];
  try {
    for (const [m, def] of defs.entries()) {
      status.textContent = `${def.title}: loading in a fresh worker…`;
      // A fresh worker per model: a new wasm instance, so its peak memory is this model's alone.
      const worker = new WorkerClient(null);
      try {
        const request = { source: def.source, items, imagesBase: EVAL_BASE.href, images: set.files, options, warmup };
        const out = await worker.request("bench", request, (ev) => {
          if (ev.type === "bench-fetch") {
            status.textContent = `${def.title}: fetching images, ${ev.done} of ${ev.total}`;
          } else if (ev.type === "bench-warmup") {
            status.textContent = `${def.title}: warm-up (${ev.warmup} caption${ev.warmup === 1 ? "" : "s"}, not timed)…`;
          } else if (ev.type === "bench-progress") {
            bar.value = m * items.length + ev.done;
            status.textContent = `${def.title}: ${ev.done} of ${ev.total} images`;
          }
        });
        runs.push({
          label: labels[m],
          samples: out.samples,
          failures: out.failures,
          info: out.info,
          modelSizeBytes: out.weightBytes,
          modelPath: def.modelPath,
          peakMemoryBytes: out.peakMemoryBytes,
          device: out.device,
        });
      } finally {
        worker.terminate();
      }
    }
    const report = bindings.benchReport({ items, models: runs });
    showReport(report, `${labels.join(" vs ")} on ${set.description}`);
    status.textContent = `Done: ${items.length} image${items.length === 1 ? "" : "s"} per model.`;
    $("bench-section").dataset.status = "done";
  } catch (e) {
    status.textContent = "Failed.";
    $("bench-section").dataset.status = "error";
    showMessage(`Benchmark failed: ${e.message}`);
  } finally {
    $("bench-run").disabled = false;
    setBusy(-1);
  }
}

// ---------------------------------------------------------------- wiring

function setupDrop(zone, onFiles) {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles(await droppedFiles(e.dataTransfer));
  });
}

/** Files of a drop, reading one level of dropped folders. */
async function droppedFiles(dt) {
  const entries = [...(dt.items ?? [])].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.some((e) => e.isDirectory)) return [...dt.files];
  const out = [];
  for (const entry of entries) {
    if (entry.isFile) out.push(await new Promise((ok, fail) => entry.file(ok, fail)));
    else {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const f of batch) if (f.isFile) out.push(await new Promise((ok, fail) => f.file(ok, fail)));
      }
    }
  }
  return out;
}

function wire() {
  for (const key of Object.keys(BUNDLED)) {
    document.querySelector(`[data-model="${key}"]`).addEventListener("click", () => loadModel(key, BUNDLED[key]));
  }
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    let def;
    const text = $("model-url").value;
    try {
      def = fieldModelDef(text);
    } catch (e) {
      return showMessage(e instanceof TypeError ? `"${text}" is neither a Hub name (owner/name) nor a URL.` : e.message);
    }
    loadModel(`url:${def.source.base}`, def);
  });
  $("model-files").addEventListener("change", (e) => {
    loadLocal(e.target.files);
    e.target.value = "";
  });
  $("model-folder").addEventListener("change", (e) => {
    loadLocal(e.target.files);
    e.target.value = "";
  });
  setupDrop($("model-drop"), loadLocal);
  $("clear-cache").addEventListener("click", async () => {
    if (self.caches) await caches.delete(CACHE_NAME);
    await updateCacheStatus();
    showMessage("Download cache cleared; models already loaded stay loaded.", "notice");
  });
  $("gallery-more").addEventListener("click", showMoreGallery);
  $("image-file").addEventListener("change", (e) => {
    captionFiles(e.target.files);
    e.target.value = "";
  });
  setupDrop($("image-drop"), captionFiles);
  document.addEventListener("paste", (e) => {
    if (e.target instanceof HTMLInputElement && e.target.type === "text") return;
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length) {
      e.preventDefault();
      captionFiles(files);
    }
  });
  $("bench-form").addEventListener("submit", (e) => {
    e.preventDefault();
    runBenchmark();
  });
}

function onReady(b) {
  bindings = b;
  $("version").textContent = b.version();
  wire();
  setupOwnImages(b);
  renderBenchModels();
  startWorker();
  loadEvalSet();
  updateCacheStatus();
  renderMade();
}

wasmBindings.then(onReady);
