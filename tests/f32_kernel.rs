//! The packed f32 kernels (`kernels::sgemm`): every kernel this build can run equals the portable
//! reference within float tolerance on odd shapes (partial panels, one and two row tiles, k not
//! a multiple of anything), accumulating onto the output's starting values. Natively that is
//! AVX-512 (where the CPU has it) and the `gemm` crate; on wasm32, in headless Chromium, the
//! simd128 kernel and, in the `relaxed-simd` build (CI's wasm test build), the relaxed-SIMD one:
//! `cargo test --target wasm32-unknown-unknown --no-default-features --features relaxed-simd --test f32_kernel`.

use blipq::kernels::sgemm::{F32Matrix, Kernel};
use candle_core::{Device, Tensor};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn rand_vec(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32 - 0.5
        })
        .collect()
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn every_kernel_matches_the_reference() {
    let available: Vec<Kernel> = Kernel::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect();
    // The wasm builds run their own packed kernel (the one `Linear` layers and attention use).
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    assert_eq!(Kernel::best(), Kernel::RelaxedSimd);
    #[cfg(all(target_arch = "wasm32", not(feature = "relaxed-simd")))]
    assert_eq!(Kernel::best(), Kernel::Simd128);
    #[cfg(target_arch = "wasm32")]
    assert!(available.contains(&Kernel::Simd128));
    let dev = Device::Cpu;
    for (m, k, n) in [
        (1, 1, 1),
        (1, 7, 15),
        (2, 64, 16),
        (3, 33, 17),
        (5, 300, 40),
        (13, 257, 33),
        (4, 768, 130),
        (12, 64, 160),
        (25, 96, 129),
        (25, 513, 129),
    ] {
        let w = rand_vec(n * k, (m * 7 + k * 13 + n) as u32);
        let x = rand_vec(m * k, (m + k + n) as u32 + 99);
        let start = rand_vec(m * n, 5);
        let wt = Tensor::from_vec(w.clone(), (n, k), &dev).unwrap();
        // The definition, in f64.
        let want: Vec<f64> = (0..m * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                start[i] as f64
                    + (0..k)
                        .map(|kk| x[r * k + kk] as f64 * w[c * k + kk] as f64)
                        .sum::<f64>()
            })
            .collect();
        // The reference sums in k order onto the starting value: exactly the f32 definition.
        let reference = F32Matrix::with_kernel(wt.clone(), Kernel::Scalar).unwrap();
        let mut got = start.clone();
        reference.matmul_acc(&x, m, &mut got).unwrap();
        for (i, g) in got.iter().enumerate() {
            let (r, c) = (i / n, i % n);
            let mut s = start[i];
            for kk in 0..k {
                s += x[r * k + kk] * w[c * k + kk];
            }
            assert_eq!(*g, s, "reference ({m},{k},{n}) at {r},{c}");
        }
        for &kernel in &available {
            let ours = F32Matrix::with_kernel(wt.clone(), kernel).unwrap();
            assert_eq!(ours.kernel(), kernel);
            let mut got = start.clone();
            ours.matmul_acc(&x, m, &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (k as f64).sqrt() * w.abs().max(1.0);
                assert!(
                    (*g as f64 - w).abs() <= tol,
                    "{kernel:?} ({m},{k},{n}) [{i}]: {g} vs {w}"
                );
            }
        }
    }
}

/// F16 and BF16 weights: where a kernel holds them as stored ([`Kernel::holds_half`]: AVX-512 and
/// the reference) the matrix takes half the bytes and every product and embedding row has the
/// same bits as the f32 matrix of the same values (widening is exact and the FMAs are the same,
/// in the same order); elsewhere they are widened at load, with the same results.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn half_precision_weights_equal_their_f32_values() {
    let dev = Device::Cpu;
    for (m, k, n) in [
        (1, 7, 15),
        (3, 33, 17),
        (4, 768, 130),
        (5, 300, 40),
        (13, 257, 33),
        (25, 513, 129),
    ] {
        let w = rand_vec(n * k, (m * 3 + k + n * 5) as u32);
        let x = rand_vec(m * k, (m + k) as u32 + 7);
        let start = rand_vec(m * n, 11);
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        for dtype in [candle_core::DType::F16, candle_core::DType::BF16] {
            let half = wt.to_dtype(dtype).unwrap();
            let wide = half.to_dtype(candle_core::DType::F32).unwrap();
            for kernel in Kernel::ALL
                .into_iter()
                .filter(|k| k.is_available() && k.is_packed())
            {
                let a = F32Matrix::with_kernel(half.clone(), kernel).unwrap();
                let b = F32Matrix::with_kernel(wide.clone(), kernel).unwrap();
                let bytes = if kernel.holds_half() {
                    b.size_in_bytes() / 2
                } else {
                    b.size_in_bytes()
                };
                assert_eq!(a.size_in_bytes(), bytes, "{kernel:?} {dtype:?}");
                let (mut ya, mut yb) = (start.clone(), start.clone());
                a.matmul_acc(&x, m, &mut ya).unwrap();
                b.matmul_acc(&x, m, &mut yb).unwrap();
                for (i, (ga, gb)) in ya.iter().zip(&yb).enumerate() {
                    assert_eq!(
                        ga.to_bits(),
                        gb.to_bits(),
                        "{kernel:?} {dtype:?} ({m},{k},{n}) [{i}]: {ga} vs {gb}"
                    );
                }
                let ids = Tensor::new(&[0u32, (n - 1) as u32, (n / 2) as u32], &dev).unwrap();
                let (ea, eb) = (a.embedding(&ids).unwrap(), b.embedding(&ids).unwrap());
                assert_eq!(
                    ea.to_vec2::<f32>().unwrap(),
                    eb.to_vec2::<f32>().unwrap(),
                    "{kernel:?} {dtype:?} embedding"
                );
            }
        }
    }
}
