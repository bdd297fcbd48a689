//! glibc allocator settings for inference.
//!
//! By default glibc serves every allocation above 128 KiB (most activations: a BLIP-base vision
//! layer allocates 1.8–16 MB tensors dozens of times per image) with a fresh `mmap` and returns
//! it on free, so each new tensor pays page faults and page zeroing again: about 10% of an INT8
//! caption in `perf`. Raising the thresholds keeps freed blocks in the heap for reuse.

/// Largest `M_MMAP_THRESHOLD` glibc accepts on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;

/// Serve allocations up to 32 MiB from the heap and keep up to 256 MiB of freed memory there.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers and only changes allocator parameters (glibc takes its
    // arena lock); it is called first thing in `main`, before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// For batches: serve every allocation from the heap (`M_MMAP_MAX` 0). A batch of N images
/// allocates N times larger activations (a BLIP-base vision MLP output is 57 MB at N = 8), above
/// the largest mmap threshold glibc accepts, so without this each one is a fresh `mmap` whose
/// page faults and zeroing cost the batched vision encoder about a fifth of its time. Only set
/// for `--batch-size` > 1, so one-at-a-time runs (and their peak memory) are unchanged.
pub fn keep_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers and only changes allocator parameters (glibc takes its
    // arena lock); it is called before any image is captioned.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
