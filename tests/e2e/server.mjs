// Loopback HTTP servers for the end-to-end test (tests/e2e/run.mjs) and tools/browser_bench.mjs:
// the static host of dist/ (with extra folders and pages mounted), and a fault-injecting
// checkpoint host. Both listen on 127.0.0.1 only, on a port the system
// picks, and are bounded: GET/HEAD only, a few connections at a time, short time-outs, and
// close() drops every open connection.
import { createReadStream } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, sep } from "node:path";

export const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".css": "text/css",
  ".json": "application/json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".webp": "image/webp",
  ".gif": "image/gif",
  ".bmp": "image/bmp",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".safetensors": "application/octet-stream",
};

/** Cross-origin isolation headers, as Trunkfile.toml's [serve.headers]. */
export const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

/** Limits every server here: loopback only, few connections, nothing hangs for long. */
function bounded(server, port = 0) {
  server.maxConnections = 32;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 2_000;
  const close = server.close.bind(server);
  server.close = (cb) => {
    close(cb);
    server.closeAllConnections?.();
    return server;
  };
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => ok(server));
  });
}

/**
 * Serves `dir` (a folder's `index.html` for the folder); with `isolate`, every response carries
 * the COOP/COEP headers. `mounts` maps URL prefixes (ending in "/") to more folders, `pages` exact
 * URL paths to generated HTML, and `port` 0 lets the system pick. Files are streamed, so a
 * checkpoint of any size is served without holding it in memory.
 */
export function serveStatic(dir, { isolate = true, mounts = {}, pages = {}, port = 0 } = {}) {
  const server = createServer(async (req, res) => {
    const headers = { "Cache-Control": "no-store", ...(isolate ? ISOLATION : {}) };
    const notFound = () => res.writeHead(404, { "Content-Type": "text/plain", ...headers }).end("not found");
    try {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { Allow: "GET, HEAD" }).end();
        return;
      }
      const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
      if (path in pages) {
        const body = Buffer.from(pages[path]);
        res.writeHead(200, { "Content-Type": TYPES[".html"], "Content-Length": body.length, ...headers });
        res.end(req.method === "HEAD" ? undefined : body);
        return;
      }
      const mount = Object.keys(mounts).find((prefix) => path.startsWith(prefix));
      const root = mount ? mounts[mount] : dir;
      let file = join(root, mount ? path.slice(mount.length) : path);
      if (!file.startsWith(root + sep) && file !== root) return notFound();
      let st = await stat(file);
      if (st.isDirectory()) {
        file = join(file, "index.html");
        st = await stat(file);
      }
      res.writeHead(200, {
        "Content-Type": TYPES[extname(file).toLowerCase()] ?? "application/octet-stream",
        "Content-Length": st.size,
        ...headers,
      });
      if (req.method === "HEAD") return res.end();
      const stream = createReadStream(file);
      stream.on("error", () => res.destroy());
      stream.pipe(res);
    } catch {
      if (!res.headersSent) notFound();
      else res.destroy();
    }
  });
  return bounded(server, port);
}

// ------------------------------------------------------------------ faulty files

/** A copy of a safetensors file with `count` bytes of its JSON header inverted (not UTF-8). */
export function flipHeaderBytes(bytes, count = 16) {
  const out = Buffer.from(bytes);
  const headerLen = Number(out.readBigUInt64LE(0));
  const at = 8 + Math.floor(headerLen / 2);
  for (let i = 0; i < count; i++) out[at + i] ^= 0xff;
  return out;
}

/** The first bytes of a safetensors file, cut in the middle of its JSON header. */
export function truncateInHeader(bytes) {
  const headerLen = Number(Buffer.from(bytes).readBigUInt64LE(0));
  return Buffer.from(bytes.subarray(0, 8 + Math.floor(headerLen / 2)));
}

/**
 * The header (8-byte length + JSON) of a well-formed safetensors file of `claimBytes` of F16
 * weights (1 GiB tensors, one after the other), and the length of the data section that follows
 * it: a file wasm32 can address (under 4 GiB) whose weights, converted to F32 on load, need
 * twice that, more than wasm32's 4 GiB memory can hold. The host streams zeros for the data on
 * demand.
 */
export function hugeSafetensorsHeader(claimBytes = 3 * 2 ** 30) {
  const tensorBytes = 2 ** 30;
  const header = { __metadata__: { format: "pt", blipq_e2e: "more weights than wasm32 memory holds" } };
  let at = 0;
  for (let i = 0; at < claimBytes; i++, at += tensorBytes) {
    header[`huge.${i}.weight`] = { dtype: "F16", shape: [16384, 32768], data_offsets: [at, at + tensorBytes] };
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const out = Buffer.alloc(8 + json.length);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  out.write(json, 8, "utf8");
  return { header: out, dataBytes: at };
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/**
 * A 65-byte PNG whose header says `width`×`height` pixels (8-bit RGB) and whose data holds
 * none of them: an image the engine must refuse from its header, before decoding.
 */
export function hugePng(width = 100_000, height = 100_000) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  // An empty zlib stream (no scanlines).
  const idat = Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", idat),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

// ------------------------------------------------------------------ fault-injecting host

/**
 * The faults, by the first path segment of a URL: `/<fault>/<file>` serves file `<file>` of the
 * checkpoint folder, faulty as said for model.safetensors (the other files are served intact).
 * Any segment starting with `ok` serves the intact checkpoint (a fresh URL per test).
 *   send: how the weights go over the wire (raw HTTP on the socket):
 *     "cut"         the real Content-Length, half the body, then the socket is destroyed;
 *     "claim-more"  a Content-Length 1000 bytes larger than the body, then the connection closes;
 *     "claim-less"  a Content-Length 1000 bytes smaller than the body (the browser reads only
 *                   that many, i.e. a truncated file), then the connection closes;
 *     "huge"        a 3 GiB F16 safetensors file (hugeSafetensorsHeader, then zeros) with its true
 *                   Content-Length, streamed as fast as the browser reads; the page must stop
 *                   after the header, and the host cuts the stream HUGE_STREAM_CAP bytes later.
 *   body: a different file, served honestly.
 *   status: an HTTP error instead of the file.
 *   cors: false → no Access-Control-Allow-Origin on any file of the folder (a CORS refusal).
 */
export const FAULTS = {
  "no-cors": { cors: false },
  "missing-weights": { status: 404 },
  "cut-mid-file": { send: "cut" },
  "length-too-long": { send: "claim-more" },
  "length-too-short": { send: "claim-less" },
  "corrupt-header": { body: "corrupt" },
  "truncated-header": { body: "truncated" },
  "too-large-for-wasm": { send: "huge" },
};
/** The most the "huge" weights stream sends past its header before it gives up (and cuts). */
export const HUGE_STREAM_CAP = 64 * 2 ** 20;
export const CLAIM_DELTA = 1000;
const WEIGHTS = "model.safetensors";

/**
 * Starts the fault-injecting checkpoint host for the files of `checkpoint` (a folder such as
 * models/demo). Resolves to {base, url(fault), requests(fault, file), sent(fault, file), huge,
 * weights, close()}: `base` ends with "/", `url(fault)` is the folder URL of a fault, `requests`
 * counts GETs, `sent` the bytes the "huge" stream put out, `huge` is hugeSafetensorsHeader(), and
 * `weights` holds the bytes of the real and the faulty weights files by body name.
 */
export async function startFaultServer({ checkpoint }) {
  const files = new Map();
  for (const name of await readdir(checkpoint)) {
    const p = join(checkpoint, name);
    if ((await stat(p)).isFile()) files.set(name, await readFile(p));
  }
  const real = files.get(WEIGHTS);
  if (!real) throw new Error(`${checkpoint} has no ${WEIGHTS}`);
  const weights = {
    real,
    corrupt: flipHeaderBytes(real),
    truncated: truncateInHeader(real),
  };
  const huge = hugeSafetensorsHeader();
  const counts = new Map();
  const sent = new Map();
  const sockets = new Set();

  const server = createServer((req, res) => {
    let parts;
    try {
      parts = new URL(req.url, "http://x").pathname.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      res.writeHead(400).end();
      return;
    }
    const [fault = "", name = "", ...rest] = parts;
    const key = `${fault}/${name}`;
    if (req.method === "GET") counts.set(key, (counts.get(key) ?? 0) + 1);
    const spec = fault.startsWith("ok") ? {} : FAULTS[fault];
    const cors = spec?.cors === false ? {} : { "Access-Control-Allow-Origin": "*" };
    const common = { "Cache-Control": "no-store", ...cors };
    const body0 = files.get(name);
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD", ...common }).end();
      return;
    }
    if (!spec || !body0 || rest.length) {
      res.writeHead(404, { "Content-Type": "text/plain", ...common }).end("not found");
      return;
    }
    const type = TYPES[extname(name)] ?? "application/octet-stream";
    if (name === WEIGHTS && spec.status) {
      res.writeHead(spec.status, { "Content-Type": "text/plain", ...common }).end("no such file");
      return;
    }
    if (name === WEIGHTS && spec.send === "huge") {
      res.writeHead(200, { "Content-Type": type, "Content-Length": huge.header.length + huge.dataBytes, ...common });
      if (req.method === "HEAD") res.end();
      else streamHuge(res, huge.header, (n) => sent.set(key, n));
      return;
    }
    if (name === WEIGHTS && spec.send && req.method === "GET") {
      rawFaultyResponse(req.socket, spec.send, real, { "Content-Type": type, ...common });
      return;
    }
    const body = name === WEIGHTS && spec.body ? weights[spec.body] : body0;
    res.writeHead(200, { "Content-Type": type, "Content-Length": body.length, ...common });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await bounded(server);
  const base = `http://127.0.0.1:${server.address().port}/`;
  return {
    base,
    url: (fault) => `${base}${fault}/`,
    requests: (fault, file = WEIGHTS) => counts.get(`${fault}/${file}`) ?? 0,
    /** Bytes of the last "huge" response that the socket took. */
    sent: (fault, file = WEIGHTS) => sent.get(`${fault}/${file}`) ?? 0,
    huge,
    weights,
    close: () =>
      new Promise((ok) => {
        for (const s of sockets) s.destroy();
        server.close(() => ok());
      }),
  };
}

/**
 * Streams `header` then zeros into `res`, as fast as the client reads (respecting backpressure),
 * until the client goes away or HUGE_STREAM_CAP bytes of zeros went out, when it destroys the
 * connection. `onSent(n)` is told how many bytes went out.
 */
function streamHuge(res, header, onSent) {
  const zeros = Buffer.alloc(1 << 20);
  let n = 0;
  let stopped = false;
  res.on("close", () => {
    stopped = true;
  });
  const pump = () => {
    while (!stopped) {
      if (n >= header.length + HUGE_STREAM_CAP) {
        res.destroy();
        return;
      }
      const chunk = n === 0 ? header : zeros;
      n += chunk.length;
      onSent(n);
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
  };
  pump();
}

/** Writes a faulty HTTP/1.1 response for `body` straight onto the socket (see FAULTS.send). */
function rawFaultyResponse(socket, mode, body, headers) {
  const length = mode === "claim-more" ? body.length + CLAIM_DELTA : mode === "claim-less" ? body.length - CLAIM_DELTA : body.length;
  const head =
    "HTTP/1.1 200 OK\r\n" +
    Object.entries({ ...headers, "Content-Length": length, Connection: "close" })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("") +
    "\r\n";
  socket.write(head);
  if (mode === "cut") {
    // Let the half reach the browser, then drop the connection without finishing the body.
    socket.write(body.subarray(0, body.length >> 1), () => setTimeout(() => socket.destroy(), 100));
  } else {
    socket.end(body);
  }
}

// ------------------------------------------------------------------ a loopback Hugging Face Hub

/**
 * Mimics how the Hub serves files: `GET /<owner>/<name>/resolve/<revision>/<file>` on the "hub"
 * origin answers with a 302 to the file on a second, "cdn" origin; both send CORS headers, and a
 * missing repository, revision or file is a 404 (with CORS, as the Hub's are). `repos` maps
 * `owner/name` to {dir, revisions}: the checkpoint folder served for each listed revision (as
 * the Hub's URLs carry it, e.g. "main" or "refs%2Fpr%2F1"). Resolves to {endpoint, requests,
 * close()}: `endpoint` is the hub origin, `requests` every hub path asked for.
 */
export async function startMockHub(repos) {
  const cors = { "Access-Control-Allow-Origin": "*", "Cache-Control": "no-store" };
  const requests = [];
  const notFound = (res) => res.writeHead(404, { "Content-Type": "text/plain", ...cors }).end("Entry not found");
  const cdn = await bounded(
    createServer(async (req, res) => {
      // /<owner>/<name>/<file>
      const [owner, name, file, ...rest] = new URL(req.url, "http://x").pathname.split("/").filter(Boolean);
      const repo = repos[`${owner}/${name}`];
      if (!repo || !file || rest.length || file.includes("..")) return notFound(res);
      try {
        const body = await readFile(join(repo.dir, file));
        res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream", "Content-Length": body.length, ...cors });
        res.end(req.method === "HEAD" ? undefined : body);
      } catch {
        notFound(res);
      }
    }),
  );
  const cdnOrigin = `http://127.0.0.1:${cdn.address().port}`;
  const hub = await bounded(
    createServer(async (req, res) => {
      const path = new URL(req.url, "http://x").pathname;
      requests.push(path);
      // Split on "/" before decoding: a revision's "%2F" stays inside its segment.
      const [owner, name, resolve, revision, file, ...rest] = path.split("/").filter(Boolean);
      const repo = repos[`${owner}/${name}`];
      if (!repo || resolve !== "resolve" || !repo.revisions.includes(revision) || !file || rest.length || file.includes("..")) {
        return notFound(res);
      }
      const present = await stat(join(repo.dir, file)).then((s) => s.isFile(), () => false);
      if (!present) return notFound(res);
      res.writeHead(302, { Location: `${cdnOrigin}/${owner}/${name}/${file}`, ...cors }).end();
    }),
  );
  return {
    endpoint: `http://127.0.0.1:${hub.address().port}`,
    requests,
    close() {
      hub.close();
      cdn.close();
    },
  };
}
