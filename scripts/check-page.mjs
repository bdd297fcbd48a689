// Smoke test of the built page (dist/): serves it, opens it in headless Chromium through
// chromedriver and waits until the page shows the wasm module's version and the worker reports
// ready. Catches broken wasm-opt output and loader problems that unit tests cannot see.
// Usage: node scripts/check-page.mjs [dist-dir]   (needs Node >= 18 and chromedriver on PATH
// or in $CHROMEDRIVER). Only Node's standard library is used.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, resolve } from "node:path";

const dist = resolve(process.argv[2] ?? "dist");
const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css" };

const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  const file = join(dist, path.endsWith("/") ? path + "index.html" : path);
  try {
    const body = await readFile(file);
    res.writeHead(200, { "Content-Type": types[extname(file)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const driverPort = 9500 + Math.floor(Math.random() * 400);
const driver = spawn(process.env.CHROMEDRIVER || "chromedriver", [`--port=${driverPort}`], { stdio: "ignore" });
const base = `http://127.0.0.1:${driverPort}`;
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function call(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json.value)}`);
  return json.value;
}

let session;
let failed = true;
try {
  for (let i = 0; ; i++) {
    try {
      await call("GET", "/status");
      break;
    } catch (e) {
      if (i > 50) throw new Error(`chromedriver did not start: ${e.message}`);
      await sleep(200);
    }
  }
  const args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
  session = (
    await call("POST", "/session", {
      capabilities: { alwaysMatch: { "goog:chromeOptions": { args }, "goog:loggingPrefs": { browser: "ALL" } } },
    })
  ).sessionId;
  await call("POST", `/session/${session}/url`, { url: pageUrl });
  const script =
    "return ['version', 'memory', 'worker-status'].map((id) => document.getElementById(id).textContent)";
  let state = [];
  for (let i = 0; i < 120; i++) {
    state = await call("POST", `/session/${session}/execute/sync`, { script, args: [] });
    if (!state[2].startsWith("Starting")) break;
    await sleep(250);
  }
  console.log(`page: version=${state[0]} memory=${state[1]} worker="${state[2]}"`);
  const logs = await call("POST", `/session/${session}/se/log`, { type: "browser" }).catch(() => []);
  const errors = logs.filter((l) => l.level === "SEVERE");
  for (const l of errors) console.log(`browser error: ${l.message}`);
  failed = !/^\d+\.\d+\.\d+/.test(state[0]) || !state[2].startsWith("Worker ready") || errors.length > 0;
} finally {
  if (session) await call("DELETE", `/session/${session}`).catch(() => {});
  driver.kill();
  server.close();
}
if (failed) {
  console.error("page check FAILED");
  process.exit(1);
}
console.log("page check passed");
