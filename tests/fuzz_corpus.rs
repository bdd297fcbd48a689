//! Replays the fuzz corpora as ordinary tests: every file of `fuzz/corpus/<target>/` (the seeds
//! and what fuzzing added) and of `fuzz/regressions/<target>/` (minimized crash reproducers) goes
//! through the same function the cargo-fuzz target calls (`fuzz/targets.rs`). A panic or an input
//! that takes more than [`PER_FILE_LIMIT`] fails the test. Fuzzing itself is `scripts/fuzz.sh`.
#![cfg(not(target_arch = "wasm32"))]

#[path = "../fuzz/targets.rs"]
mod targets;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

/// Much more than any input needs (the slowest seed takes well under a second in the test
/// profile); an input hitting it has unbounded or pathological cost.
const PER_FILE_LIMIT: Duration = Duration::from_secs(20);

thread_local! {
    /// Panics on this thread so far, caught or not.
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts every panic, also those the library catches itself (`catch_unwind` around the
/// tokenizers crate): libFuzzer reports those as crashes too, and a wasm32 build aborts on them.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (a missing directory has none).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

enum Event {
    Start(PathBuf),
    Done {
        path: PathBuf,
        panicked: bool,
        took: Duration,
    },
}

fn replay(target: &str) {
    let (_, body) = targets::TARGETS
        .iter()
        .copied()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target named {target} in fuzz/targets.rs"));
    let corpus = files_in(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is empty: the seeds are missing"
    );
    let files: Vec<PathBuf> = corpus
        .into_iter()
        .chain(files_in(&fuzz_dir().join("regressions").join(target)))
        .collect();
    let count = files.len();

    count_panics();
    let (tx, rx) = mpsc::channel();
    // The worker runs detached: if an input hangs, the test fails on the timeout below and the
    // process exits with the thread still running.
    std::thread::spawn(move || {
        for path in files {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) => panic!("cannot read {}: {e}", path.display()),
            };
            let _ = tx.send(Event::Start(path.clone()));
            let start = Instant::now();
            let before = PANICS.with(Cell::get);
            let unwound = std::panic::catch_unwind(|| body(&data)).is_err();
            let panicked = unwound || PANICS.with(Cell::get) > before;
            let took = start.elapsed();
            let _ = tx.send(Event::Done {
                path,
                panicked,
                took,
            });
        }
    });

    let started = Instant::now();
    let mut current: Option<PathBuf> = None;
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, PathBuf::new());
    loop {
        match rx.recv_timeout(PER_FILE_LIMIT) {
            Ok(Event::Start(path)) => current = Some(path),
            Ok(Event::Done {
                path,
                panicked,
                took,
            }) => {
                if panicked {
                    failures.push(format!("{} panicked", path.display()));
                }
                if took > PER_FILE_LIMIT {
                    failures.push(format!("{} took {took:?}", path.display()));
                }
                if took > slowest.0 {
                    slowest = (took, path);
                }
                current = None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let what = current
                    .as_deref()
                    .map_or_else(|| "the worker".to_string(), |p| p.display().to_string());
                panic!("{target}: {what} takes more than {PER_FILE_LIMIT:?}");
            }
            // The worker finished, or panicked outside of a target call (unreadable file).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    assert!(
        current.is_none(),
        "{target}: the replay stopped at {:?}",
        current
    );
    eprintln!(
        "{target}: {count} inputs in {:?} (slowest {:?}: {})",
        started.elapsed(),
        slowest.0,
        slowest.1.display()
    );
    assert!(
        failures.is_empty(),
        "{target}: {} of {count} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fuzz_target_is_replayed() {
    let mut binaries: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    binaries.sort();
    let mut names: Vec<String> = targets::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(binaries, names, "fuzz/fuzz_targets/ and fuzz/targets.rs");
}

#[test]
fn files_entries_round_trip() {
    let entries = vec![
        ("dir/config.json".to_string(), b"{}".to_vec()),
        (String::new(), Vec::new()),
        ("model.safetensors".to_string(), vec![7; 300]),
    ];
    assert_eq!(
        targets::split_entries(&targets::join_entries(&entries)),
        entries
    );
}

#[test]
fn safetensors() {
    replay("safetensors");
}

#[test]
fn pth() {
    replay("pth");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn tokenizer() {
    replay("tokenizer");
}

#[test]
fn image() {
    replay("image");
}

#[test]
fn coco() {
    replay("coco");
}

#[test]
fn files() {
    replay("files");
}

/// The files seeds include a complete one-layer checkpoint, so that fuzzing starts from inputs
/// that get through model construction.
#[test]
fn files_seed_builds_a_model() {
    let path = fuzz_dir().join("corpus/files/demo-int8-1layer.bin");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let files = blipq::checkpoint::files::model_files_from_entries(targets::split_entries(&data))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Err(e) = blipq::Captioner::load(files) {
        panic!("{}: {e}", path.display());
    }
}
