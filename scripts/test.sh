#!/usr/bin/env bash
# The full test suite: formatting, lints, native tests, browser tests (headless Chromium), the
# threaded page build (scripts/web.sh) and an end-to-end test of the built page. Run from
# anywhere; needs the tools `.ci/run` installs (wasm32 target, the nightly toolchain with
# rust-src, wasm-bindgen-cli matching Cargo.lock, chromium + chromedriver, trunk 0.21,
# Node.js, binaryen 132 from npm in target/tools, and tests/e2e/node_modules from
# `npm ci --prefix tests/e2e`, cargo-fuzz, wasm-pack, and the Python virtual environment
# target/pyenv with python/requirements-test.txt).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS=0
# Each section shows the time so far and the disk left (a full disk fails at link time).
section() {
  printf '\n==== [%4ds, %s free] %s ====\n' "$SECONDS" \
    "$(df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' ')" "$*"
}

# BLIPQ_PRUNE_BUILDS=1 (.ci/run sets it): delete each build once no later step reads it, so that
# the run's peak disk use is about half of all its builds together (a full disk fails a link).
# Off by default: a developer's builds stay for the next run.
prune() {
  [[ "${BLIPQ_PRUNE_BUILDS:-0}" == 1 ]] || return 0
  local dir
  for dir in "$@"; do
    [[ -e "$dir" ]] || continue
    echo "freeing $(du -sh "$dir" | cut -f1) of $dir (no later step reads it)"
    rm -rf "$dir"
  done
}

# wasm-bindgen-test-runner drives headless Chromium through chromedriver (webdriver.json adds
# the Chrome flags needed as root / in containers).
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver || echo /usr/bin/chromedriver)}"
export TRUNK_SKIP_VERSION_CHECK=true
# wasm-opt from npm's binaryen (Debian's binaryen 108 corrupts wasm-bindgen's externref table
# export; see Trunkfile.toml).
export PATH="$PWD/target/tools/node_modules/.bin:$PATH"

section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy (native, all targets, with the Python bindings)"
cargo clippy --all-targets --features python -- -D warnings

section "cargo clippy (wasm32: lib and browser tests, with the relaxed-SIMD kernel)"
# The `blipq` CLI is native-only (required-features = ["cli"]), hence --no-default-features.
cargo clippy --target wasm32-unknown-unknown --no-default-features --features relaxed-simd --lib --test wasm --test wasm_worker --test q8_kernel --test f32_kernel -- -D warnings

section "cargo test (native)"
cargo test

# The Python package: `pip install .` (maturin, the PEP 517 build) into target/pyenv, in the dev
# profile so that it reuses the dependencies `cargo test` just built; then its tests, which
# compare it with target/debug/blipq and start a two-node Ray cluster of their own.
section "Python package: pip install . (maturin, abi3 wheel), pytest (python/tests, a local Ray cluster)"
PY_BIN="$PWD/target/pyenv/bin"
if [[ ! -x "$PY_BIN/python" ]]; then
  echo "no target/pyenv: .ci/run makes it (python3 -m venv target/pyenv && target/pyenv/bin/pip install -r python/requirements-test.txt)" >&2
  exit 1
fi
PATH="$PY_BIN:$PATH" MATURIN_PEP517_ARGS="--profile dev" \
  "$PY_BIN/python" -m pip install --no-build-isolation --force-reinstall --no-deps \
  --disable-pip-version-check .
BLIPQ_BIN="$PWD/target/debug/blipq" "$PY_BIN/python" -m pytest -q python/tests

# The wasm-bindgen unit tests stay single-threaded, on stable (.cargo/config.toml's flags). One
# wasm test build, with the `relaxed-simd` feature: it holds both wasm INT8 kernels (simd128 and
# relaxed SIMD, each tested against the scalar one) and captions with the relaxed one; the
# simd128 build's captions are checked in the page by the end-to-end test.
section "wasm-pack test (wasm32, relaxed-simd feature: headless Chromium main thread and dedicated worker)"
# wasm-pack builds every test target for wasm32 (the native-only ones compile to nothing) and
# runs them with the installed wasm-bindgen-test-runner (`--mode no-install`: it downloads
# nothing; the runner must match Cargo.lock's wasm-bindgen, which .ci/run installs).
wasm-pack test --headless --chrome --chromedriver "$CHROMEDRIVER" --mode no-install . \
  --no-default-features --features relaxed-simd
prune target/wasm32-unknown-unknown/debug

section "scripts/web.sh build --release (the page: threaded simd128 and relaxed-SIMD wasm, nightly, wasm-opt)"
scripts/web.sh build --release
for wasm in dist/blipq_bg.wasm dist/relaxed/blipq_bg.wasm; do
  [[ -s "$wasm" ]] || { echo "the build produced no $wasm" >&2; exit 1; }
  echo "$wasm: $(stat -c %s "$wasm") bytes"
done
echo "dist: $(du -sh dist | cut -f1)"

section "end-to-end test of the page (dist/ in /usr/bin/chromium via playwright-core)"
# Captions in the page (run on several threads) must equal `blipq caption --json`
# (target/debug/blipq, built by cargo test above); screenshots go to tests/e2e/artifacts/.
if [[ ! -d tests/e2e/node_modules/playwright-core ]]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi
node tests/e2e/run.mjs
# Fuzzing builds its own tree (fuzz/target, AddressSanitizer): nothing below reads these.
prune target/debug target/wasm32-unknown-unknown target/release

# The corpora are replayed by `cargo test` above (tests/fuzz_corpus.rs); here every cargo-fuzz
# target also runs briefly (nightly, libFuzzer, AddressSanitizer), time-boxed.
section "fuzzing: every target for ${FUZZ_SECONDS:-15}s (scripts/fuzz.sh run)"
FUZZ_NICE=0 scripts/fuzz.sh run "${FUZZ_SECONDS:-15}"

section "all passed in ${SECONDS}s"
