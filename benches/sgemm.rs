//! f32 GEMM at BLIP-base sizes: blipq's packed kernel (`kernels::sgemm`) against the `gemm` crate
//! (what candle uses), and the same kernel on BF16 weights held as stored (widened as it loads:
//! F16 costs the same), timed interleaved, with the machine's f32 peak measured in the same run.
//! `cargo bench --bench sgemm` (set RAYON_NUM_THREADS to pin the thread count).

mod common;

use common::{median, secs, VISION_SHAPES};

use blipq::kernels::ceiling;
use blipq::kernels::sgemm::{F32Matrix, Kernel};
use candle_core::{DType, Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let threads = rayon::current_num_threads();
    let peak = ceiling::measure(threads)?;
    println!(
        "{threads} threads; f32 peak {:.0} GFLOP/s ({}), read {:.1} GB/s",
        peak.f32_flops / 1e9,
        peak.f32_isa,
        peak.read_bytes_per_s / 1e9
    );
    println!(
        "| (m, k, n) | gemm crate ms | blipq ms | blipq GFLOP/s | % of peak | blipq GB/s | blipq on BF16 ms |\n|---|---|---|---|---|---|---|"
    );
    // Then decoding: one or three rows (beams) through the text decoder's layers and LM head.
    for (m, k, n) in VISION_SHAPES.into_iter().chain([
        (1, 768, 768),
        (1, 768, 3072),
        (1, 3072, 768),
        (3, 768, 3072),
        (1, 768, 30524),
    ]) {
        let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
        let ours = F32Matrix::new(w.clone())?;
        let half = F32Matrix::new(w.to_dtype(DType::BF16)?)?;
        let theirs = F32Matrix::with_kernel(w, Kernel::Gemm)?;
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut y = vec![0f32; m * n];
        let reps = if m > 4 { 15 } else { 100 };
        let (mut to, mut tt, mut th) = (vec![], vec![], vec![]);
        for _ in 0..reps {
            to.push(secs(&mut || ours.matmul_acc(&x, m, &mut y).unwrap()));
            tt.push(secs(&mut || theirs.matmul_acc(&x, m, &mut y).unwrap()));
            th.push(secs(&mut || half.matmul_acc(&x, m, &mut y).unwrap()));
        }
        let (to, tt, th) = (median(to), median(tt), median(th));
        let flops = 2.0 * (m * k * n) as f64 / to;
        println!(
            "| ({m},{k},{n}) | {:.3} | {:.3} | {:.0} | {:.0}% | {:.1} | {:.3} |",
            tt * 1e3,
            to * 1e3,
            flops / 1e9,
            100.0 * flops / peak.f32_flops,
            (n * k * 4) as f64 / to / 1e9,
            th * 1e3
        );
    }
    Ok(())
}
