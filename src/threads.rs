//! The thread pool: rayon's global pool with the calling thread as one of its workers.
//!
//! Every parallel kernel (INT8 and f32 GEMM, attention, element-wise ops) is a rayon parallel
//! iterator. Called from a thread outside the pool, each one is *injected*: the caller wakes a
//! worker and sleeps until the work is done, two futex round trips per operation. A decoding
//! step runs a few hundred such operations on small matrices, so on one thread this hand-off
//! cost a third of the decoding time (measured: INT8 base, 20 tokens, 0.60 s against 0.38 s),
//! and on two threads the caller sat idle beside the workers.
//!
//! [`use_this_thread`] makes the calling thread worker 0 of the global pool (rayon's
//! `use_current_thread`): its parallel operations start on that thread, which works on them
//! and steals their pieces back while it waits, and with one thread no other thread exists.
//! Call it once, early, from the thread that will run the model (the CLI's `main` does).
//!
//! [`keep_awake`] keeps the pool's other workers polling for work instead of sleeping while the
//! pool's owner decodes a caption (see [`Awake`]).
//!
//! May use: nothing of the crate.

use crate::{Error, Result};

/// Builds rayon's global pool with the calling thread as one of its workers; the thread count is
/// `RAYON_NUM_THREADS` if set, else the number of cores (rayon's default). Returns the pool's
/// thread count.
///
/// Fails if the global pool already exists (built explicitly, or implicitly by an earlier
/// parallel operation): call it before anything else runs in parallel.
pub fn use_this_thread() -> Result<usize> {
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    claim_pool();
    Ok(rayon::current_num_threads())
}

/// The thread that made itself worker 0 of the global pool ([`use_this_thread`], or the page's
/// pool start-up through [`claim_pool`]): the only thread [`keep_awake`] acts for.
static POOL_OWNER: std::sync::OnceLock<std::thread::ThreadId> = std::sync::OnceLock::new();

/// Records the calling thread as the one that runs the model on the global pool it made itself
/// worker 0 of (the page's pool start-up calls this; [`use_this_thread`] does it itself).
pub fn claim_pool() {
    let _ = POOL_OWNER.set(std::thread::current().id());
}

/// Whether an [`Awake`] guard lives (at most one at a time, see [`keep_awake`]).
static AWAKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// While alive, keeps the pool's other workers looking for work instead of going to sleep.
///
/// A rayon worker that finds nothing to do for a few dozen polls (tens of µs) goes to sleep, and
/// the next parallel operation must wake it: a futex call by the caller and a wake-up of the
/// sleeping core (slow in virtual machines) before the worker takes its share. A decoding step
/// alternates about a hundred parallel products with short serial pieces (layer norms, small
/// copies) that outlast that polling, so on two threads the second worker slept about 20 times
/// per token and the caller spent a tenth of its time waking it (measured with `perf sched`:
/// INT8 base, 2 threads). OpenMP runtimes spin for milliseconds for the same reason.
///
/// [`keep_awake`] gives every other worker of the pool a task that polls for rayon work
/// (`rayon::yield_now`, which runs what it finds) until the guard is dropped, so the work of
/// each parallel operation is picked up at once.
///
/// A worker can pick its polling task up while it waits inside other work (a join whose other
/// half was stolen), and then returns to that work only once the guard is dropped. So the guard
/// is only for the one thread that runs the model on a pool of its own making, one guard at a
/// time: two guards alive in one pool, each parked under the other's polling, would never be
/// dropped; and a second caller's work parked under the polling would wait for the whole
/// decode. [`keep_awake`] therefore does nothing unless the caller is the pool's owner
/// ([`use_this_thread`], [`claim_pool`]: the CLI's main thread, the page's worker), no other
/// guard lives, the pool has 2 or more threads, and no more than the machine's cores (spinning
/// beside the threads doing the work would take cores from them). The Python module, whose
/// pool serves whichever Python thread calls it, runs without it.
pub struct Awake {
    state: std::sync::Arc<AwakeState>,
}

/// What an [`Awake`] shares with its polling tasks.
#[derive(Default)]
struct AwakeState {
    stop: std::sync::atomic::AtomicBool,
    /// Tasks polling now (they leave soon after `stop`).
    polling: std::sync::atomic::AtomicUsize,
}

impl Drop for Awake {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.state.stop.store(true, Ordering::Release);
        AWAKE.store(false, Ordering::Release);
    }
}

/// Pause instructions between two polls of [`keep_awake`]'s workers (a no-op in wasm32, where
/// the polling is a tight loop).
const POLL_BACKOFF: usize = 16;

/// Keeps the caller's pool awake until the returned guard is dropped (see [`Awake`] for when
/// it does, and why only then); `None` where it does not.
#[must_use = "the workers stay awake only while the guard lives"]
pub fn keep_awake() -> Option<Awake> {
    if POOL_OWNER.get() != Some(&std::thread::current().id()) {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
    awake_in_pool(cores)
}

/// [`keep_awake`] for whatever pool the caller is a worker of, on a machine of `cores` cores
/// (wasm32, where the count is unknown: the page sizes its pool from the browser's count).
fn awake_in_pool(cores: usize) -> Option<Awake> {
    use std::sync::atomic::Ordering;
    let me = rayon::current_thread_index()?;
    let threads = rayon::current_num_threads();
    if threads < 2 || threads > cores || AWAKE.swap(true, Ordering::AcqRel) {
        return None;
    }
    let state = std::sync::Arc::new(AwakeState::default());
    let shared = state.clone();
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() == me {
            return;
        }
        shared.polling.fetch_add(1, Ordering::AcqRel);
        while !shared.stop.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                // Back off between polls (about a microsecond): polling other workers' queues
                // in a tight loop would take their cache lines from them as they push work.
                for _ in 0..POLL_BACKOFF {
                    std::hint::spin_loop();
                }
            }
        }
        shared.polling.fetch_sub(1, Ordering::AcqRel);
    });
    Some(Awake { state })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{mpsc, Barrier, Mutex};
    use std::time::{Duration, Instant};

    use rayon::prelude::*;

    use super::*;

    /// The tests below share the process-wide guard flag: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Waits up to 10 s for `done`.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// A sum with parallel pieces, and its value.
    fn work() -> u64 {
        (0..100_000u64).into_par_iter().map(|i| i * i % 7).sum()
    }
    const WORK: u64 = 199_999;

    /// In a pool of two, the other worker polls while the guard lives (the caller does not: it
    /// goes on with its own work), parallel work under the guard completes with the same result,
    /// a second guard is refused while the first lives, and the polling stops once the guard is
    /// dropped; outside a pool, with one thread, or on a thread that does not own its pool,
    /// there is nothing to keep awake.
    #[test]
    fn keep_awake_polls_on_the_other_workers_until_dropped() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!((0..100_000u64).map(|i| i * i % 7).sum::<u64>(), WORK);
        assert!(awake_in_pool(2).is_none(), "the test thread is in no pool");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        assert!(one.install(|| awake_in_pool(2)).is_none());
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        assert!(
            two.install(|| awake_in_pool(1)).is_none(),
            "more threads than cores"
        );
        assert!(two.install(keep_awake).is_none(), "not the pool's owner");
        two.install(|| {
            let guard = awake_in_pool(2).expect("a worker of a pool of two");
            assert!(awake_in_pool(2).is_none(), "one guard at a time");
            let state = guard.state.clone();
            assert!(eventually(|| state.polling.load(Ordering::Acquire) == 1));
            for _ in 0..50 {
                assert_eq!(work(), WORK);
            }
            assert_eq!(
                state.polling.load(Ordering::Acquire),
                1,
                "one poller, not the caller"
            );
            drop(guard);
            assert!(eventually(|| state.polling.load(Ordering::Acquire) == 0));
        });
    }

    /// Two decodes at once in a pool of three, each asking for a guard (as two Python threads
    /// on one pool would): only one gets it, and both finish (with two guards, each decode could
    /// be parked under the other's polling for ever).
    #[test]
    fn concurrent_callers_in_one_pool_both_finish() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let three = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .expect("a pool");
            let barrier = Barrier::new(2);
            let decode = || {
                barrier.wait();
                let guard = awake_in_pool(3);
                for _ in 0..2000 {
                    assert_eq!(work(), WORK);
                }
                guard.is_some()
            };
            let (a, b) = three.install(|| rayon::join(decode, decode));
            let _ = done.send(usize::from(a) + usize::from(b));
        });
        let guards = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("both decodes finish");
        assert_eq!(guards, 1);
    }
}
