#!/usr/bin/env bash
# Fuzzing blipq's parsers with cargo-fuzz (libFuzzer, nightly, AddressSanitizer, debug
# assertions and overflow checks on). The targets are fuzz/fuzz_targets/*.rs; their bodies are
# fuzz/targets.rs, which tests/fuzz_corpus.rs also replays the corpora through on every
# `cargo test`.
#
#   scripts/fuzz.sh build                        build every target
#   scripts/fuzz.sh run [SECONDS_PER_TARGET]     every target briefly (default 20 s each; CI)
#   scripts/fuzz.sh long TARGET EXECS [ARGS...]  one long run (-runs=EXECS), stats at the end
#   scripts/fuzz.sh cmin TARGET                  minimize fuzz/corpus/TARGET in place
#   scripts/fuzz.sh tmin TARGET CRASH_FILE       minimize a crash input
#   scripts/fuzz.sh repro TARGET FILE...         run the target on the given inputs once
#
# Runs read the committed seeds in fuzz/corpus/TARGET and fuzz/regressions/TARGET but write
# what they find to fuzz/target/corpus/TARGET (not committed); crashes go to
# fuzz/artifacts/TARGET/. Minimize a crash with `tmin` and commit it to fuzz/regressions/TARGET/
# so that the replay test keeps it fixed. Runs are `nice`d (FUZZ_NICE, default 10): the machine
# is shared. FUZZ_NO_BUILD=1 skips building.
set -euo pipefail

caller="$PWD"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../fuzz"
# A path given relative to where the script was started.
abspath() {
  case "$1" in
    /*) echo "$1" ;;
    *) echo "$caller/$1" ;;
  esac
}
export PATH="$HOME/.cargo/bin:$PATH"

TARGETS=(safetensors pth config tokenizer image coco files)
NICE="${FUZZ_NICE:-10}"
# `run` (CI) starts from a fixed seed, so that a given tree explores the same way each time.
SEED="${FUZZ_SEED:-1}"
# libFuzzer limits common to all targets: memory or time beyond these is a finding too.
COMMON=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1)

max_len() {
  case "$1" in
    safetensors | pth | files) echo 1200000 ;; # the demo INT8 checkpoint (1.1 MB) fits
    image) echo 1048576 ;;
    config | tokenizer) echo 65536 ;;
    coco) echo 8192 ;; # the PTB tokenizer costs ~1 us a character (x10 instrumented)
    *) echo "unknown target $1 (targets: ${TARGETS[*]})" >&2; exit 2 ;;
  esac
}

ensure_tools() {
  if ! rustc +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
}

build() {
  # FUZZ_NO_BUILD=1: use the binaries as they are (e.g. while src/ does not build).
  [[ -n "${FUZZ_NO_BUILD:-}" ]] && return 0
  ensure_tools
  local log
  log="$(mktemp)"
  if ! nice -n "$NICE" cargo +nightly fuzz build "$@" 2>&1 | tee "$log"; then
    # A failed link prints the whole linker command first (thousands of characters) and the
    # linker's own message last: repeat the message and the disk left, where a log cut short
    # still shows them.
    echo "---- cargo fuzz build failed; the lines that say why:" >&2
    grep -v '^ *Compiling' "$log" | grep -E 'error|undefined|No space|note: (/usr/bin/ld|rust-lld|collect2)' |
      cut -c1-400 | tail -n 20 >&2 || true
    df -h . >&2 || true
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# The binary `cargo fuzz build` made (run directly: `cargo fuzz run` would rebuild whenever
# src/ changed since, in the middle of a series of runs).
binary() {
  local host
  host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
  echo "target/$host/release/$1"
}

# fuzz TARGET LIBFUZZER_ARGS...: one run on the scratch corpus plus the committed seeds.
fuzz() {
  local t="$1"
  shift
  local work="target/corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  local seeds=("corpus/$t")
  [[ -d "regressions/$t" ]] && seeds+=("regressions/$t")
  nice -n "$NICE" "$(binary "$t")" -artifact_prefix="$PWD/artifacts/$t/" \
    -max_len="$(max_len "$t")" "${COMMON[@]}" "$@" "$work" "${seeds[@]}"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  build)
    build
    ;;
  run)
    secs="${1:-20}"
    build
    failed=()
    for t in "${TARGETS[@]}"; do
      printf '\n==== fuzz %s for %ss ====\n' "$t" "$secs"
      fuzz "$t" -seed="$SEED" -max_total_time="$secs" || failed+=("$t")
    done
    if ((${#failed[@]})); then
      echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
      exit 1
    fi
    echo "all ${#TARGETS[@]} targets ran ${secs}s each without a crash"
    ;;
  long)
    [[ $# -ge 2 ]] || { echo "usage: $0 long TARGET EXECS [LIBFUZZER_ARGS...]" >&2; exit 2; }
    t="$1" execs="$2"
    shift 2
    build "$t"
    start=$SECONDS
    fuzz "$t" -runs="$execs" "$@"
    echo "$t: $execs runs in $((SECONDS - start)) s"
    ;;
  cmin)
    [[ $# -eq 1 ]] || { echo "usage: $0 cmin TARGET" >&2; exit 2; }
    build "$1"
    nice -n "$NICE" cargo +nightly fuzz cmin "$1" "corpus/$1" -- -max_len="$(max_len "$1")" "${COMMON[@]}"
    ;;
  tmin)
    [[ $# -eq 2 ]] || { echo "usage: $0 tmin TARGET CRASH_FILE" >&2; exit 2; }
    build "$1"
    crash="$(abspath "$2")"
    nice -n "$NICE" "$(binary "$1")" -minimize_crash=1 -runs="${FUZZ_TMIN_RUNS:-20000}" \
      -rss_limit_mb=2048 -timeout=10 -exact_artifact_path="$crash.min" "$crash"
    echo "minimized: $crash.min ($(stat -c %s "$crash.min") bytes)"
    ;;
  repro)
    [[ $# -ge 2 ]] || { echo "usage: $0 repro TARGET FILE..." >&2; exit 2; }
    t="$1"
    shift
    build "$t"
    for f in "$@"; do
      nice -n "$NICE" "$(binary "$t")" "${COMMON[@]}" "$(abspath "$f")"
    done
    ;;
  *)
    sed -n '2,18p' "$here/fuzz.sh" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
