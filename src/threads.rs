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
