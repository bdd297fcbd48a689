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
//! [`keep_awake`] keeps the pool's other workers polling for work instead of sleeping while a
//! caption decodes (see [`Awake`]).
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
    Ok(rayon::current_num_threads())
}

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
/// [`keep_awake`] gives every other worker of the caller's pool a task that polls for rayon work
/// (`rayon::yield_now`, which runs what it finds) until the guard is dropped, so the work of
/// each parallel operation is picked up at once. It does nothing unless the caller is itself a
/// worker of a pool of 2 or more threads no larger than the machine's core count (spinning
/// beside a caller outside the pool, or on an oversubscribed machine, would take cores from the
/// threads doing the work).
#[must_use = "the workers stay awake only while the guard lives"]
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
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Pause instructions between two polls of [`keep_awake`]'s workers.
const POLL_BACKOFF: usize = 16;

/// Keeps the caller's pool awake until the returned guard is dropped (see [`Awake`]); `None`
/// where that would not help.
pub fn keep_awake() -> Option<Awake> {
    use std::sync::atomic::Ordering;
    let me = rayon::current_thread_index()?;
    let threads = rayon::current_num_threads();
    // Unknown core count (wasm32: the page sizes its pool from the browser's count): trust the
    // pool's size.
    let cores = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
    if threads < 2 || threads > cores {
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
    use std::time::{Duration, Instant};

    use rayon::prelude::*;

    use super::*;

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

    /// In a pool of two, the other worker polls while the guard lives (the caller does not: it
    /// goes on with its own work), parallel work under the guard completes with the same result,
    /// and the polling stops once the guard is dropped; outside a pool, or with one thread,
    /// there is nothing to keep awake.
    #[test]
    fn keep_awake_polls_on_the_other_workers_until_dropped() {
        assert!(keep_awake().is_none(), "the test thread is in no pool");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        assert!(one.install(keep_awake).is_none());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return;
        }
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        two.install(|| {
            let want: u64 = (0..100_000u64).map(|i| i * i % 7).sum();
            let guard = keep_awake().expect("a worker of a pool of two");
            let state = guard.state.clone();
            assert!(eventually(|| state.polling.load(Ordering::Acquire) == 1));
            for _ in 0..50 {
                let got: u64 = (0..100_000u64).into_par_iter().map(|i| i * i % 7).sum();
                assert_eq!(got, want);
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
}
