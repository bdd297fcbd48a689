// Placeholder worker: loads the wasm module trunk built (dist/blipq.js, stable name because
// filehash = false) and reports its version. The real worker will fetch a checkpoint, build a
// `Captioner` from its files and answer caption requests.
import init, { version } from "../blipq.js";

try {
  await init({ module_or_path: new URL("../blipq_bg.wasm", import.meta.url) });
  postMessage({ ok: true, version: version() });
} catch (e) {
  postMessage({ ok: false, error: String(e) });
}
