//! This machine's own limits, measured: peak f32 FMA throughput, peak int8 dot-product throughput
//! and memory read bandwidth, on a given number of threads. Benchmarks divide what the model
//! achieves by these to say how close to the machine's limit each stage runs
//! (`cargo bench --bench ceilings`).
//!
//! Each probe runs the widest instructions the CPU has (AVX-512 F / VNNI on x86_64 where
//! present, AVX2 / AVX-VNNI otherwise), many independent accumulator chains so that throughput,
//! not latency, is what is timed, on every thread of a rayon pool at once; throughputs are
//! summed over threads. Elsewhere the portable probes (plain Rust the compiler vectorizes for the
//! target) give a lower bound.

#[cfg(target_arch = "x86_64")]
mod x86;

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::{Error, Result};

/// How long each probe runs per thread.
const PROBE: Duration = Duration::from_millis(300);
/// Bytes per thread the bandwidth probe streams (far beyond any cache).
const STREAM_BYTES: usize = 256 << 20;

/// The measured limits.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ceilings {
    pub threads: usize,
    /// f32 multiply-adds as 2 operations each, per second.
    pub f32_flops: f64,
    /// The instructions behind `f32_flops`.
    pub f32_isa: &'static str,
    /// int8 multiply-adds (u8 × i8 into i32) as 2 operations each, per second.
    pub int8_ops: f64,
    /// The instructions behind `int8_ops`.
    pub int8_isa: &'static str,
    /// Bytes read from memory per second.
    pub read_bytes_per_s: f64,
}

/// Runs `probe` on every thread of the pool at once and returns operations per second summed
/// over threads. A probe gets the time it should run for and returns the operations it did and
/// the time they took (set-up, such as filling a buffer, goes before its timing).
fn on_all_threads(threads: usize, probe: impl Fn(Duration) -> (f64, Duration) + Sync) -> f64 {
    (0..threads)
        .into_par_iter()
        .map(|_| {
            let (ops, elapsed) = probe(PROBE);
            ops / elapsed.as_secs_f64()
        })
        .sum()
}

/// Repeats `round` (which returns the operations it did) for about `time`, at least once.
fn until(time: Duration, mut round: impl FnMut() -> f64) -> (f64, Duration) {
    let start = Instant::now();
    let mut ops = round();
    while start.elapsed() < time {
        ops += round();
    }
    (ops, start.elapsed())
}

/// Measures the limits on `threads` threads (a rayon pool of that size, built for the purpose).
pub fn measure(threads: usize) -> Result<Ceilings> {
    if threads == 0 {
        return Err(Error::InvalidArgument("ceilings on 0 threads".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("a pool of {threads} threads: {e}")))?;
    Ok(pool.install(|| {
        let (f32_isa, f32_round) = fma_round();
        let f32_flops = on_all_threads(threads, |d| until(d, f32_round));
        let (int8_isa, int8_round) = dot_round();
        let int8_ops = on_all_threads(threads, |d| until(d, int8_round));
        let read_bytes_per_s = on_all_threads(threads, |d| {
            let buf = vec![1u64; STREAM_BYTES / 8];
            until(d, || read_round(&buf))
        });
        Ceilings {
            threads,
            f32_flops,
            f32_isa,
            int8_ops,
            int8_isa,
            read_bytes_per_s,
        }
    }))
}

/// A probe: the instructions it runs, and one round of them returning the operations done.
type Probe = (&'static str, fn() -> f64);

/// One round of independent FMA chains: (name, round returning flops).
fn fma_round() -> Probe {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = x86::fma_round() {
        return p;
    }
    ("portable", fma_portable)
}

/// One round of independent int8 dot-product chains: (name, round returning operations).
fn dot_round() -> Probe {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = x86::dot_round() {
        return p;
    }
    ("portable", dot_portable)
}

/// Rounds of the probes: enough work to dwarf the clock reads.
pub(crate) const ROUND: usize = 1 << 16;

fn fma_portable() -> f64 {
    let mut acc = [[1.0f32; 8]; 8];
    let m = std::hint::black_box([0.999_999f32; 8]);
    let a = std::hint::black_box([1e-7f32; 8]);
    for _ in 0..ROUND {
        for acc in acc.iter_mut() {
            for ((x, m), a) in acc.iter_mut().zip(m).zip(a) {
                *x = *x * m + a;
            }
        }
    }
    std::hint::black_box(acc);
    (ROUND * 64 * 2) as f64
}

fn dot_portable() -> f64 {
    let mut acc = [[0i32; 16]; 4];
    let a = std::hint::black_box([3u8; 64]);
    let b = std::hint::black_box([-2i8; 64]);
    for _ in 0..ROUND / 16 {
        for acc in acc.iter_mut() {
            for (j, x) in acc.iter_mut().enumerate() {
                let mut s = 0i32;
                for i in 0..4 {
                    s += a[4 * j + i] as i32 * b[4 * j + i] as i32;
                }
                *x = x.wrapping_add(s);
            }
        }
    }
    std::hint::black_box(acc);
    (ROUND / 16 * 4 * 64 * 2) as f64
}

/// Reads every byte of `buf` once; returns the bytes read.
fn read_round(buf: &[u64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(bytes) = x86::read(buf) {
        return bytes;
    }
    let mut lanes = [0u64; 8];
    for c in buf.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.wrapping_add(*v);
        }
    }
    std::hint::black_box(lanes);
    (buf.len() / 8 * 64) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probes count what they do: a round of each is positive work, and the limits come out
    /// positive and finite on one thread.
    #[test]
    fn probes_report_positive_throughput() -> Result<()> {
        assert!(fma_round().1() > 0.0 && dot_round().1() > 0.0);
        assert_eq!(read_round(&[1u64; 64]), 512.0);
        assert!(measure(0).is_err());
        Ok(())
    }
}
