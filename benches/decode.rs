//! Decode-step products per weight scheme: one token (m = 1, greedy) or three (beams) through the
//! matrices of BLIP-base's 12 text-decoder layers (self-attention q, k, v, o; cross-attention q, o;
//! the MLP's two layers: 99 M weights, more than the caches hold, as in a real decode step), in
//! f32, `Q8_0`, `int8-channel`, `q4_0`, `q4_g128`, F16 and BF16 (held as stored where the f32
//! kernel widens as it loads: `sgemm::Kernel::holds_half`), timed interleaved pass by pass (medians), with
//! the weight bytes each pass streams and the bandwidth that makes; then one token's
//! cross-attention over the image's keys and values in every layer, in the two key layouts.
//! `cargo bench --bench decode` (RAYON_NUM_THREADS pins the thread count; DECODE_KERNEL names
//! a kernel other than this CPU's best, e.g. `Avx2`, as `Kernel`'s `Debug` spells it).

mod common;

use common::{median, secs};

use blipq::kernels::q8::{Kernel, Q8Matrix};
use blipq::kernels::sgemm::F32Matrix;
use blipq::quantize::{quantize_channels, quantize_int4};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

/// One decoder layer's per-token products `(k, n)`.
const LAYER: [(usize, usize); 8] = [
    (768, 768),
    (768, 768),
    (768, 768),
    (768, 768),
    (768, 768),
    (768, 768),
    (768, 3072),
    (3072, 768),
];
const LAYERS: usize = 12;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the CLI runs the model: this thread is one of the pool's workers (no hand-off per
    // product, `blipq::threads`).
    let threads = blipq::threads::use_this_thread()?;
    let dev = Device::Cpu;
    let kernel = match std::env::var("DECODE_KERNEL") {
        Ok(name) => *Kernel::available()
            .iter()
            .find(|k| format!("{k:?}").eq_ignore_ascii_case(&name))
            .ok_or_else(|| {
                format!(
                    "DECODE_KERNEL={name}: this CPU has {:?}",
                    Kernel::available()
                )
            })?,
        Err(_) => Kernel::best(),
    };
    println!("kernel {kernel:?}, {threads} threads");
    let names = [
        "q8_0",
        "int8-channel",
        "q4_0",
        "q4_g128",
        "f32",
        "f16",
        "bf16",
    ];
    let mut sets: Vec<Vec<Matrix>> = (0..names.len()).map(|_| vec![]).collect();
    for _ in 0..LAYERS {
        for &(k, n) in &LAYER {
            let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
            let q8 = Q8Matrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
            sets[0].push(Matrix::Int(q8));
            let (q, s) = quantize_channels(&w)?;
            sets[1].push(Matrix::Int(Q8Matrix::from_int8_channel(&q, &s, n, k)?));
            for (set, group) in [(2, 32), (3, 128)] {
                let (q, s) = quantize_int4(&w, group)?;
                sets[set].push(Matrix::Int(Q8Matrix::from_int4(&q, &s, n, k, group)?));
            }
            sets[5].push(Matrix::F32(F32Matrix::new(w.to_dtype(DType::F16)?)?));
            sets[6].push(Matrix::F32(F32Matrix::new(w.to_dtype(DType::BF16)?)?));
            sets[4].push(Matrix::F32(F32Matrix::new(w)?));
        }
    }
    let bytes: Vec<usize> = sets
        .iter()
        .map(|s| s.iter().map(Matrix::bytes).sum())
        .collect();
    for m in [1usize, 3] {
        let x: Vec<f32> = (0..m * 3072)
            .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
            .collect();
        let mut y = vec![0f32; m * 3072];
        let mut pass = |set: &[Matrix]| {
            for w in set {
                w.run(kernel, &x, m, &mut y);
            }
            std::hint::black_box(&y);
        };
        let mut times = vec![vec![]; names.len()];
        for _ in 0..40 {
            for (set, t) in sets.iter().zip(&mut times) {
                t.push(secs(&mut || pass(set)));
            }
        }
        report(
            &format!("m = {m}: {LAYERS} layers' products per decode step"),
            &names,
            times,
            &bytes,
        );
        // The same number of products, all by one 768 × 768 matrix (in cache): the kernels'
        // own speed, without the memory's limit.
        let mut times = vec![vec![]; names.len()];
        for _ in 0..40 {
            for (set, t) in sets.iter().zip(&mut times) {
                t.push(secs(&mut || {
                    for _ in 0..set.len() {
                        set[0].run(kernel, &x, m, &mut y);
                    }
                    std::hint::black_box(&y);
                }));
            }
        }
        let cached: Vec<usize> = sets.iter().map(|s| s[0].bytes() * s.len()).collect();
        report(
            &format!("m = {m}: as many products by one 768 x 768 matrix (in cache)"),
            &names,
            times,
            &cached,
        );
    }
    cross_attention()?;
    Ok(())
}

/// The decode step's other big read: one token's cross-attention in each of the 12 layers over
/// the image's 577 keys and values (12 heads × 64, f32: 42 MB a step), with the keys as they
/// come from the projection (a dot product per key, `attention_few_queries`) and transposed
/// (the decoder's layout, `attention_keys_transposed`), interleaved, medians.
fn cross_attention() -> Result<(), Box<dyn std::error::Error>> {
    use blipq::kernels::attention::{attention_few_queries, attention_keys_transposed};
    let (heads, tokens, d) = (12, 577, 64);
    let dev = Device::Cpu;
    let mut layers = vec![];
    for _ in 0..LAYERS {
        let k = Tensor::randn(0f32, 1.0, (heads, tokens, d), &dev)?;
        let kt = k.transpose(1, 2)?.contiguous()?;
        let v = Tensor::randn(0f32, 1.0, (heads, tokens, d), &dev)?;
        layers.push((k, kt, v));
    }
    let q = Tensor::randn(0f32, 0.125, (heads, 1, d), &dev)?;
    let (mut dots, mut transposed) = (vec![], vec![]);
    for _ in 0..40 {
        dots.push(secs(&mut || {
            for (k, _, v) in &layers {
                std::hint::black_box(attention_few_queries(&q, k, v).unwrap());
            }
        }));
        transposed.push(secs(&mut || {
            for (_, kt, v) in &layers {
                std::hint::black_box(attention_keys_transposed(&q, kt, v).unwrap());
            }
        }));
    }
    let bytes = (LAYERS * 2 * heads * tokens * d * 4) as f64;
    println!("cross-attention of one token, {LAYERS} layers x {tokens} image tokens");
    for (name, t) in [
        ("dot per key", median(dots)),
        ("keys transposed", median(transposed)),
    ] {
        println!(
            "  {name:<16} {:>7.2} ms  {:>6.1} MB  {:>6.1} GB/s",
            t * 1e3,
            bytes / 1e6,
            bytes / t / 1e9
        );
    }
    Ok(())
}

/// One decoder matrix, in a quantized scheme or f32 (the FP32 model's decode products).
enum Matrix {
    Int(Q8Matrix),
    F32(F32Matrix),
}

impl Matrix {
    /// `y[..m n] = x[..m k] · Wᵀ` (f32 accumulates onto `y`: the time is the same).
    fn run(&self, kernel: Kernel, x: &[f32], m: usize, y: &mut [f32]) {
        match self {
            Matrix::Int(w) => w.matmul_with(kernel, &x[..m * w.k()], m, &mut y[..m * w.n()]),
            Matrix::F32(w) => w.matmul_acc(&x[..m * w.k()], m, &mut y[..m * w.n()]),
        }
        .unwrap()
    }

    /// The bytes its kernel streams.
    fn bytes(&self) -> usize {
        match self {
            Matrix::Int(w) => w.size_in_bytes(),
            Matrix::F32(w) => w.size_in_bytes(),
        }
    }
}

/// Prints each scheme's median pass time, the bytes a pass reads and the rate, against `Q8_0`.
fn report(title: &str, names: &[&str], times: Vec<Vec<f64>>, bytes: &[usize]) {
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    println!("{title}");
    for ((name, t), b) in names.iter().zip(&medians).zip(bytes) {
        println!(
            "  {name:<13} {:>7.2} ms  {:>6.1} MB  {:>6.1} GB/s  {:.2}x q8_0",
            t * 1e3,
            *b as f64 / 1e6,
            *b as f64 / t / 1e9,
            t / medians[0]
        );
    }
}
