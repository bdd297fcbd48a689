//! `blipq::threads::use_this_thread`: the calling thread becomes worker 0 of rayon's global pool
//! (so parallel kernels start on it instead of being handed over), and a second call, or a call
//! after the pool exists, is an error naming the thread pool. One test: the global pool is
//! process-wide.
#![cfg(not(target_arch = "wasm32"))]

use rayon::prelude::*;

#[test]
fn the_calling_thread_joins_the_global_pool() {
    // Outside the pool before the call: a parallel operation would be handed to a pool thread.
    assert_eq!(rayon::current_thread_index(), None);
    // Two threads, whatever the machine, so that work is also shared with another thread.
    std::env::set_var("RAYON_NUM_THREADS", "2");
    let threads = blipq::threads::use_this_thread().expect("first call builds the pool");
    assert_eq!(threads, 2);
    assert_eq!(rayon::current_num_threads(), 2);
    assert_eq!(rayon::current_thread_index(), Some(0));
    // Parallel work started here runs, and some of it on this very thread.
    let me = std::thread::current().id();
    let on_caller = (0..64)
        .into_par_iter()
        .map(|i| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            (i, std::thread::current().id() == me)
        })
        .collect::<Vec<_>>();
    assert_eq!(
        on_caller.iter().map(|&(i, _)| i).collect::<Vec<_>>(),
        (0..64).collect::<Vec<_>>()
    );
    assert!(
        on_caller.iter().any(|&(_, here)| here),
        "no work ran on the calling thread"
    );
    // The pool is set: a second call fails with an error about the thread pool.
    let err = blipq::threads::use_this_thread().unwrap_err();
    assert!(matches!(err, blipq::Error::ThreadPool(_)), "{err:?}");
    assert!(err.to_string().starts_with("thread pool: "), "{err}");
}
