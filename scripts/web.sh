#!/usr/bin/env bash
# Builds or serves the page with trunk (Trunkfile.toml), by default as the THREADED wasm build:
#
#   scripts/web.sh build --release          # dist/: a static site (multi-threaded wasm; the
#                                           # relaxed-SIMD build in dist/relaxed/)
#   scripts/web.sh serve                    # http://127.0.0.1:8080, with the COOP/COEP headers
#                                           # (the simd128 build only: rebuilt as you edit)
#   scripts/web.sh build --release --single-thread   # the stable single-threaded build instead
#   scripts/web.sh clippy                   # clippy -D warnings on the lib, as the threaded build
#
# Any other argument goes to `trunk build|serve` (e.g. --dist DIR, --port N) or to `cargo clippy`.
# The CI (scripts/test.sh), the README and tools/browser_bench.mjs users all build through this
# script.
#
# The threaded build needs what trunk cannot set per config, so it is set here, for trunk's
# `cargo build` only:
#   - the nightly toolchain (RUSTUP_TOOLCHAIN), with its rust-src component: std is rebuilt with
#     atomics (-Z build-std=std,panic_abort, via CARGO_UNSTABLE_BUILD_STD);
#   - RUSTFLAGS (they replace .cargo/config.toml's wasm32 rustflags): simd128 as usual, plus
#     atomics / bulk-memory / mutable-globals, and linker arguments for a shared, imported memory
#     whose maximum is wasm32's 4 GiB (the base FP32 model alone needs about 1 GB). The `atomics` target feature also switches on the
#     `initThreadPool` export (src/web/pool.rs) and rayon's `web_spin_lock` (Cargo.toml).
# wasm-opt gets --enable-threads from index.html (harmless for the single-threaded build).
#
# Env: BLIPQ_NIGHTLY (toolchain name, default "nightly").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
  echo "usage: scripts/web.sh build|serve|clippy [--single-thread] [trunk or cargo clippy args...]" >&2
  exit 2
}
(($# >= 1)) || usage
cmd="$1"
shift
[[ "$cmd" == build || "$cmd" == serve || "$cmd" == clippy ]] || usage

threads=true
args=()
for a in "$@"; do
  if [[ "$a" == --single-thread ]]; then threads=false; else args+=("$a"); fi
done

# wasm-opt from npm's binaryen (see Trunkfile.toml [tools]); `.ci/run` installs it.
export PATH="$PWD/target/tools/node_modules/.bin:$PATH"
export TRUNK_SKIP_VERSION_CHECK=true

if $threads; then
  toolchain="${BLIPQ_NIGHTLY:-nightly}"
  if ! sysroot="$(rustc "+$toolchain" --print sysroot 2>/dev/null)"; then
    echo "scripts/web.sh: the threaded build needs the $toolchain toolchain: rustup toolchain install $toolchain --component rust-src" >&2
    exit 1
  fi
  if [[ ! -d "$sysroot/lib/rustlib/src/rust/library" ]]; then
    echo "scripts/web.sh: the threaded build rebuilds std: rustup component add rust-src --toolchain $toolchain" >&2
    exit 1
  fi
  export RUSTUP_TOOLCHAIN="$toolchain"
  export CARGO_UNSTABLE_BUILD_STD=std,panic_abort
  flags=(
    -C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals
    # Since nightly-2025-10 (rust-lang/rust#147225) `+atomics` no longer implies a shared memory:
    # ask wasm-ld for one, imported (wasm-bindgen's JS creates it and hands it to each thread),
    # with the TLS symbols wasm-bindgen's thread start-up needs.
    -C link-arg=--shared-memory
    -C link-arg=--import-memory
    -C link-arg=--max-memory=4294967296
    -C link-arg=--export=__wasm_init_tls
    -C link-arg=--export=__tls_size
    -C link-arg=--export=__tls_align
    -C link-arg=--export=__tls_base
    --cfg 'getrandom_backend="wasm_js"'
  )
  export RUSTFLAGS="${flags[*]}"
  echo "scripts/web.sh: threaded wasm build ($(rustc --version))" >&2
  # trunk builds --offline (Trunkfile.toml): make sure std's own dependencies are in cargo's
  # cache too (no network access when they are).
  cargo fetch --target wasm32-unknown-unknown --quiet
else
  echo "scripts/web.sh: single-threaded wasm build ($(rustc --version))" >&2
fi

if [[ "$cmd" == clippy ]]; then
  exec cargo clippy --target wasm32-unknown-unknown --no-default-features --lib "${args[@]}" -- -D warnings
fi
# wasm-bindgen leaves an earlier build's JS snippets (e.g. the pool's worker script) in
# trunk's staging dir, and trunk copies whatever is there: start clean (before each build).
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
rm -rf "$target_dir"/wasm-bindgen/*/snippets

# The second build: the same crate with the cargo feature `relaxed-simd` (relaxed-simd.html), for
# engines with relaxed SIMD. Built first, into its own folder; Trunkfile.toml's post_build hook
# copies it into the page's relaxed/ folder, where www/worker.js finds it. Only blipq itself is compiled again for it: the feature
# changes no dependency and no flag.
# `serve` leaves it out: trunk's rebuilds would keep copying the first, stale one; the page then
# runs the simd128 build and says there is no relaxed one.
unset BLIPQ_RELAXED_DIST
if [[ "$cmd" == build ]]; then
  relaxed_dist="$target_dir/relaxed-dist"
  release=()
  for a in "${args[@]}"; do
    [[ "$a" == --release ]] && release=(--release)
  done
  echo "scripts/web.sh: the relaxed-SIMD module (relaxed-simd.html) into $relaxed_dist" >&2
  trunk build --config Trunkfile.toml "${release[@]}" --dist "$relaxed_dist" relaxed-simd.html
  for f in blipq.js blipq_bg.wasm; do
    [[ -s "$relaxed_dist/$f" ]] || { echo "scripts/web.sh: trunk produced no $relaxed_dist/$f" >&2; exit 1; }
  done
  rm -rf "$target_dir"/wasm-bindgen/*/snippets
  export BLIPQ_RELAXED_DIST="$relaxed_dist"
fi

# `trunk serve` refuses to start when a path in Trunkfile.toml's [watch] ignore list is missing
# (as bench-out/ and dist/ are in a fresh clone; both are git-ignored).
if [[ "$cmd" == serve ]]; then
  mkdir -p bench-out dist
fi
exec trunk "$cmd" --config Trunkfile.toml "${args[@]}"
