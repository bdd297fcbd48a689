//! INT8 GEMM: candle's `QMatMul` (Q8_0) against blipq's packed kernels (`kernels::q8`) at BLIP-base
//! sizes, then the per-channel (`int8-channel`) and 4-bit (`q4_0`) vision products per kernel
//! with their GOP/s.
//! `cargo bench --bench q8` (set RAYON_NUM_THREADS to pin the thread count). The machine is
//! shared and noisy, so candle and blipq are timed interleaved, repetition by repetition, and the
//! ratio of medians is reported.

mod common;

use common::{median, secs, VISION_SHAPES};

use blipq::kernels::q8::{Kernel, Q8Matrix};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let kernels = Kernel::available();
    println!("kernels available: {kernels:?}; best {:?}", Kernel::best());
    println!(
        "{:<18} {:>10} {:>10} {:>8}  per kernel (ms)",
        "(m, k, n)", "candle ms", "ours ms", "speedup"
    );
    // Then decoding: one or three rows (beams) through the text decoder's layers and LM head.
    for (m, k, n) in VISION_SHAPES.into_iter().chain([
        (1, 768, 768),
        (3, 768, 3072),
        (1, 768, 30524),
        (3, 768, 30524),
    ]) {
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let q = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        let ours = Q8Matrix::from_qtensor(&q)?;
        let candle = QMatMul::from_qtensor(q)?;
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut y = vec![0f32; m * n];
        let reps = if m > 4 { 15 } else { 60 };
        let (mut tc, mut to) = (vec![], vec![]);
        let mut per_kernel = vec![vec![]; kernels.len()];
        let mut c = || {
            std::hint::black_box(candle.forward(&x).unwrap());
        };
        let mut o = || {
            std::hint::black_box(ours.forward(&x).unwrap());
        };
        c();
        o();
        for _ in 0..reps {
            tc.push(secs(&mut c));
            to.push(secs(&mut o));
            for (i, &kern) in kernels.iter().enumerate() {
                if kern != Kernel::Scalar || m * n * k < 200_000_000 {
                    per_kernel[i].push(secs(&mut || {
                        ours.matmul_with(kern, &xs, m, &mut y).unwrap()
                    }));
                }
            }
        }
        let (tc, to) = (median(tc), median(to));
        let pk: Vec<String> = kernels
            .iter()
            .zip(per_kernel)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k:?} {:.3}", median(v) * 1e3))
            .collect();
        println!(
            "{:<18} {:>10.3} {:>10.3} {:>7.2}x  {}",
            format!("({m},{k},{n})"),
            tc * 1e3,
            to * 1e3,
            tc / to,
            pk.join(", ")
        );
    }
    // Per channel (`int8-channel`) and 4-bit (`q4_0`): the vision products per kernel, with
    // the integer rate.
    let per_channel = |w: &Tensor, n, k| -> blipq::Result<Q8Matrix> {
        let (q, scales) = blipq::quantize::quantize_channels(w)?;
        Q8Matrix::from_int8_channel(&q, &scales, n, k)
    };
    let four_bit = |w: &Tensor, n, k| -> blipq::Result<Q8Matrix> {
        let (q, scales) = blipq::quantize::quantize_int4(w, 32)?;
        Q8Matrix::from_int4(&q, &scales, n, k, 32)
    };
    type Make<'a> = &'a dyn Fn(&Tensor, usize, usize) -> blipq::Result<Q8Matrix>;
    let schemes: [(&str, Make); 2] = [
        ("per channel (int8-channel)", &per_channel),
        ("4-bit (q4_0)", &four_bit),
    ];
    for (name, make) in schemes {
        println!("{name}, vision shapes: ms per kernel (GOP/s)");
        for (m, k, n) in VISION_SHAPES {
            let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
            let ours = make(&w, n, k)?;
            let xs = Tensor::randn(0f32, 1.0, (m, k), &dev)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut y = vec![0f32; m * n];
            let mut per_kernel = vec![vec![]; kernels.len()];
            for _ in 0..15 {
                for (i, &kern) in kernels.iter().enumerate() {
                    if kern != Kernel::Scalar {
                        per_kernel[i].push(secs(&mut || {
                            ours.matmul_with(kern, &xs, m, &mut y).unwrap()
                        }));
                    }
                }
            }
            let ops = 2.0 * (m * k * n) as f64;
            let pk: Vec<String> = kernels
                .iter()
                .zip(per_kernel)
                .filter(|(_, v)| !v.is_empty())
                .map(|(kern, v)| {
                    let t = median(v);
                    format!("{kern:?} {:.3} ({:.0})", t * 1e3, ops / t / 1e9)
                })
                .collect();
            println!("{:<18} {}", format!("({m},{k},{n})"), pk.join(", "));
        }
    }
    Ok(())
}
