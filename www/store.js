// Files kept in the browser's Cache Storage, read and written with their sizes checked: the
// download cache (checkpoints fetched by URL, CACHE_NAME) and the checkpoints made in this
// browser ("Make INT8", MADE_CACHE), which are shared by the worker (it writes and loads them)
// and the page (it lists, downloads and deletes them). Also the streaming body reader both
// downloads and cache reads go through.
import { MADE_CACHE } from "./common.js";

/** Header of every Cache entry: the body's size in bytes, checked whenever the entry is read. */
export const SIZE_HEADER = "X-Blipq-Size";

export const fmtBytes = (n) => n.toLocaleString("en-US");

/** The file name at the end of a URL, for messages. */
export const fileName = (url) => decodeURIComponent(new URL(url).pathname.split("/").at(-1) || url);

/** A body that ended before its Content-Length, or whose stream broke off. */
export function cutOff(name, loaded, total) {
  const got = total ? `got ${fmtBytes(loaded)} of ${fmtBytes(total)} bytes` : `got ${fmtBytes(loaded)} bytes`;
  return new Error(
    `the download of ${name} was cut off: ${got} (the server or the network closed the ` +
      `connection early, or the server announced a wrong size). Nothing was cached; try again.`,
  );
}

/** The Content-Length header as a number, or null when it is missing or not a number. */
export function contentLength(response) {
  const v = response.headers.get("Content-Length");
  return v !== null && /^\s*\d+\s*$/.test(v) ? Number(v) : null;
}

/**
 * Reads a response body with progress; one buffer when Content-Length is known and honest.
 *
 * A body that breaks off, or that ends short of its Content-Length, is an error naming the file
 * (`name`) and the byte counts, never a short file. A body longer than Content-Length is
 * accepted: that is a compressed response, whose Content-Length counts the compressed bytes (its
 * Content-Encoding is not always visible: cross-origin responses hide it unless exposed). For
 * the same reason a visibly compressed body is not held to its Content-Length at all.
 *
 * `inspect(prefix, total)`, if given, sees the start of the body before the one big buffer is
 * allocated: it returns how many bytes it needs to see (more than `prefix.length`), or 0 once it
 * is satisfied; if it throws, the download stops there and the error is passed on.
 */
export async function readBody(response, name, onProgress, inspect = null) {
  const total = contentLength(response) ?? 0;
  const encoding = response.headers.get("Content-Encoding");
  const exact = total > 0 && (!encoding || /^\s*identity\s*$/i.test(encoding));
  const reader = response.body.getReader();
  let buffer = null;
  let chunks = [];
  let loaded = 0;
  let need = inspect ? 1 : 0;
  const concat = () => {
    const out = new Uint8Array(loaded);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  };
  const allocate = () => {
    if (!total || loaded > total) return;
    try {
      buffer = new Uint8Array(total);
    } catch {
      return; // a Content-Length too large to allocate (or a lie): keep collecting chunks
    }
    buffer.set(concat());
    chunks = null;
  };
  if (!need) allocate();
  onProgress(0, total);
  for (;;) {
    let step;
    try {
      step = await reader.read();
    } catch (e) {
      console.warn(`blipq: reading ${name} failed after ${loaded} bytes: ${e?.message ?? e}`);
      throw cutOff(name, loaded, total);
    }
    const { done, value } = step;
    if (done) break;
    if (buffer && loaded + value.length > total) {
      // Content-Length was the compressed size: fall back to collecting chunks.
      chunks = [buffer.subarray(0, loaded)];
      buffer = null;
    }
    if (buffer) buffer.set(value, loaded);
    else chunks.push(value);
    loaded += value.length;
    if (need && loaded >= need) {
      chunks = [concat()];
      try {
        need = inspect(chunks[0], total);
      } catch (e) {
        reader.cancel().catch(() => {});
        throw e;
      }
      if (!need) allocate();
    }
    onProgress(loaded, total);
  }
  if (exact && loaded < total) throw cutOff(name, loaded, total);
  if (buffer) return loaded === total ? buffer : buffer.slice(0, loaded);
  return concat();
}

/**
 * A file from the Cache, or null. The entry's body must have the size recorded when it was
 * stored (SIZE_HEADER, or Content-Length for entries of older versions of this page); an entry
 * that does not, or cannot be read, is deleted (so the caller downloads the file again) and
 * `onDamaged` says why.
 */
export async function cachedFile(cache, url, onProgress, onDamaged) {
  let response;
  try {
    response = await cache.match(url);
  } catch {
    return null;
  }
  if (!response) return null;
  const name = fileName(url);
  const recorded = response.headers.get(SIZE_HEADER) ?? response.headers.get("Content-Length");
  const want = recorded !== null && /^\d+$/.test(recorded.trim()) ? Number(recorded) : null;
  let problem;
  try {
    const blob = await response.blob();
    if (want === null) problem = "it has no recorded size";
    else if (blob.size !== want) problem = `it holds ${fmtBytes(blob.size)} of ${fmtBytes(want)} bytes`;
    else {
      // Streamed for progress, and held to the recorded size once more.
      const bytes = await readBody(new Response(blob, { headers: { "Content-Length": String(want) } }), name, onProgress);
      if (bytes.length === want) return bytes;
      problem = `reading it gave ${fmtBytes(bytes.length)} of ${fmtBytes(want)} bytes`;
    }
  } catch (e) {
    problem = "it could not be read completely";
    console.warn(`blipq: reading the cached ${name} failed: ${errorMessage(e)}`);
  }
  await cache.delete(url).catch(() => {});
  onDamaged(`The cached copy of ${name} was damaged (${problem}); it was deleted and is downloaded again.`);
  return null;
}

/**
 * Stores a complete, verified download in the Cache: the entry records its size (SIZE_HEADER),
 * and is read back and deleted unless its body has that size. Best effort: a full quota only
 * means the file is not cached; with `strict`, it is an error instead.
 */
export async function storeInCache(cache, url, bytes, contentType, { strict = false } = {}) {
  const size = String(bytes.length);
  const headers = {
    "Content-Type": contentType || "application/octet-stream",
    "Content-Length": size,
    [SIZE_HEADER]: size,
  };
  try {
    await cache.put(url, new Response(bytes, { headers }));
    const back = await cache.match(url);
    const stored = back ? (await back.blob()).size : -1;
    if (stored !== bytes.length || back.headers.get(SIZE_HEADER) !== size) {
      throw new Error(`the cache kept ${stored} of ${size} bytes`);
    }
  } catch (e) {
    console.warn(`blipq: ${fileName(url)} was not cached: ${errorMessage(e)}`);
    await cache.delete(url).catch(() => {});
    if (strict) throw new Error(`${fileName(url)} was not kept (${errorMessage(e)})`);
  }
}

export function errorMessage(e) {
  if (e instanceof Error) return e.message || String(e);
  return String(e);
}

// ---------------------------------------------------------------- checkpoints made in this browser

/**
 * Where a made checkpoint's files live: Cache keys (never fetched from a server) under
 * `<origin>/.blipq-made/<id>/`, one per file plus MANIFEST, which is written last: a model
 * without it is incomplete and is neither listed nor loaded.
 */
const MADE_ROOT = "/.blipq-made/";
const MANIFEST = "blipq-made.json";

export const madeUrl = (id, file) => new URL(`${MADE_ROOT}${encodeURIComponent(id)}/${file}`, self.location.origin).href;

async function openMade() {
  if (!self.caches) throw new Error("this browser keeps no files for this page (Cache Storage needs https or localhost)");
  return self.caches.open(MADE_CACHE);
}

/** The manifests of the complete made checkpoints, oldest first; [] where storage is unavailable. */
export async function listMade() {
  let cache;
  try {
    if (!self.caches || !(await self.caches.has(MADE_CACHE))) return [];
    cache = await openMade();
  } catch {
    return [];
  }
  const out = [];
  for (const req of await cache.keys()) {
    if (!req.url.endsWith(`/${MANIFEST}`)) continue;
    try {
      out.push(await (await cache.match(req)).json());
    } catch (e) {
      console.warn(`blipq: unreadable manifest ${req.url}: ${errorMessage(e)}`);
    }
  }
  return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** A made checkpoint's manifest, or null. */
export async function madeManifest(id) {
  const cache = await openMade();
  const res = await cache.match(madeUrl(id, MANIFEST));
  return res ? res.json() : null;
}

/**
 * Keeps a made checkpoint: `files` ({name: Uint8Array}) first, each read back and checked, then
 * its manifest (`manifest.files` is set to the names and sizes). A file the Cache does not keep
 * (a full quota) deletes what was written and throws, so nothing half-kept is ever listed.
 */
export async function putMade(manifest, files, onFile = () => {}) {
  const cache = await openMade();
  const sizes = {};
  const written = [];
  try {
    for (const [name, bytes] of Object.entries(files)) {
      onFile(name, bytes.length);
      const url = madeUrl(manifest.id, name);
      written.push(url);
      await storeInCache(cache, url, bytes, "application/octet-stream", { strict: true });
      sizes[name] = bytes.length;
    }
    const full = { ...manifest, files: sizes };
    const body = new TextEncoder().encode(JSON.stringify(full, null, 2));
    written.push(madeUrl(manifest.id, MANIFEST));
    await storeInCache(cache, madeUrl(manifest.id, MANIFEST), body, "application/json", { strict: true });
    return full;
  } catch (e) {
    for (const url of written) await cache.delete(url).catch(() => {});
    throw new Error(`the browser did not keep ${manifest.title}: ${errorMessage(e)}`);
  }
}

/**
 * A made checkpoint's files, each held to the size its manifest records: {files, sizes}. A
 * missing or damaged file is an error naming it (the checkpoint must be made again).
 */
export async function readMade(id, onProgress = () => {}) {
  const cache = await openMade();
  const manifest = await madeManifest(id);
  if (!manifest) throw new Error(`no checkpoint "${id}" is kept in this browser (it was deleted, or the site's storage was cleared)`);
  const files = {};
  for (const [name, size] of Object.entries(manifest.files)) {
    const bytes = await cachedFile(cache, madeUrl(id, name), (loaded, total) => onProgress(name, loaded, total), () => {});
    if (!bytes || bytes.length !== size) {
      throw new Error(`${manifest.title}: the kept ${name} is missing or damaged; delete it and make it again`);
    }
    files[name] = bytes;
  }
  return { manifest, files, sizes: { ...manifest.files } };
}

/** One file of a made checkpoint as a Blob (for a download link), held to its recorded size. */
export async function madeFileBlob(id, name) {
  const cache = await openMade();
  const res = await cache.match(madeUrl(id, name));
  const blob = res ? await res.blob() : null;
  if (!blob || String(blob.size) !== res.headers.get(SIZE_HEADER)) {
    throw new Error(`the kept ${name} is missing or damaged`);
  }
  return blob;
}

/** Deletes a made checkpoint: its manifest first (so it is never listed half-deleted), then its files. */
export async function deleteMade(id) {
  const cache = await openMade();
  const manifest = await madeManifest(id);
  await cache.delete(madeUrl(id, MANIFEST));
  for (const name of Object.keys(manifest?.files ?? {})) await cache.delete(madeUrl(id, name));
}
