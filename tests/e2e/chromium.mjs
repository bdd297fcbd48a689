// Flags for Debian's /usr/bin/chromium as root in a container with a closed network, shared by
// the end-to-end test and tools/browser_bench.mjs. Without the background-networking flags
// Chromium keeps retrying Google's hosts, which this machine refuses.
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-quic",
  "--no-first-run",
  "--disable-sync",
];
