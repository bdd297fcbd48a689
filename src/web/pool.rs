//! rayon's global pool on Web Workers, for the threaded page build (`+atomics`, shared memory;
//! scripts/web.sh).
//!
//! `initThreadPool(n)` makes the worker that calls it thread 0 of the pool (rayon's
//! `use_current_thread`) and starts `n - 1` more Web Workers that share this module's memory.
//! Every parallel kernel then starts on the calling thread, which works on it and steals its
//! pieces back while it waits. A pool of `n` separate threads would have the calling worker hand
//! each operation over and sleep until it is done: two cross-thread wake-ups per operation, a
//! few hundred operations per decoded token, with the caller idle beside the pool (natively the
//! same hand-off cost a third of the one-thread decoding time; `blipq::threads` there).
//!
//! Start-up: [`init_thread_pool`] asks `pool.js` (the same file is the Workers' script) to start
//! the Workers; each loads blipq.js with the shared module and memory and calls
//! [`pool_worker_run`], which waits for a rayon thread to run. When all are ready, `pool.js` calls
//! [`PoolStart::build`], which builds the global pool and hands each Worker its thread.

use std::sync::{Condvar, Mutex};

use js_sys::{JsString, Promise};
use rayon::{ThreadBuilder, ThreadPoolBuilder};
use wasm_bindgen::prelude::*;

/// Most threads a page may ask for (the page itself asks for at most 8).
pub const MAX_THREADS: usize = 64;

/// rayon threads built by [`PoolStart::build`], waiting for a Worker to run them.
static THREADS: Mutex<Vec<ThreadBuilder>> = Mutex::new(Vec::new());
/// Signalled when a thread is added to [`THREADS`].
static THREAD_ADDED: Condvar = Condvar::new();

#[wasm_bindgen(module = "/src/web/pool.js")]
extern "C" {
    /// Starts `start.workers()` Web Workers running blipq.js on `module` and `memory`, then
    /// calls `start.build()`; resolves when the pool runs.
    #[wasm_bindgen(js_name = startWorkers)]
    fn start_workers(module: JsValue, memory: JsValue, start: PoolStart) -> Promise;
}

#[wasm_bindgen]
extern "C" {
    /// blipq.js's own URL, which the Workers import.
    #[wasm_bindgen(thread_local_v2, js_namespace = ["import", "meta"], js_name = url)]
    static MAIN_JS: JsString;
}

/// `initThreadPool(n)` → `Promise<void>`: rayon's global pool on `n` threads, this worker and
/// `n - 1` new Web Workers. Call it once, right after `init()` and before anything runs in
/// parallel (rayon's global pool can be set only once), from a worker that may block
/// (`Atomics.wait`), on a cross-origin isolated page (the memory is posted to the new Workers).
#[wasm_bindgen(js_name = initThreadPool)]
pub fn init_thread_pool(n: usize) -> std::result::Result<Promise, JsError> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(JsError::new(&format!(
            "initThreadPool({n}): give 1 to {MAX_THREADS} threads"
        )));
    }
    Ok(start_workers(
        wasm_bindgen::module(),
        wasm_bindgen::memory(),
        PoolStart { threads: n },
    ))
}

/// The pool being started: handed to `pool.js`, which calls [`PoolStart::build`] once its
/// Workers wait in [`pool_worker_run`].
#[wasm_bindgen]
pub struct PoolStart {
    threads: usize,
}

#[wasm_bindgen]
impl PoolStart {
    /// Web Workers to start: every thread but the calling one.
    pub fn workers(&self) -> usize {
        self.threads - 1
    }

    /// The URL the Workers import blipq.js from.
    #[wasm_bindgen(js_name = mainJS)]
    pub fn main_js(&self) -> JsString {
        MAIN_JS.with(Clone::clone)
    }

    /// Builds rayon's global pool with the calling thread as thread 0; each other thread is
    /// queued for a waiting Worker.
    pub fn build(&self) -> std::result::Result<(), JsError> {
        ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .use_current_thread()
            .spawn_handler(|thread| {
                THREADS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(thread);
                THREAD_ADDED.notify_one();
                Ok(())
            })
            .build_global()
            .map_err(|e| JsError::new(&format!("starting the thread pool: {e}")))?;
        // This worker runs the model: the decode may keep the pool's workers polling.
        crate::threads::claim_pool();
        Ok(())
    }
}

/// Run by each pool Worker once it has loaded the module: waits for a rayon thread from
/// [`PoolStart::build`] and runs it (this call never returns while the pool lives).
#[wasm_bindgen(js_name = poolWorkerRun)]
#[doc(hidden)]
pub fn pool_worker_run() {
    let thread = {
        let mut queue = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(t) = queue.pop() {
                break t;
            }
            queue = THREAD_ADDED.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    };
    thread.run();
}
