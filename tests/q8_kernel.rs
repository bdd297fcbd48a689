//! The INT8 GEMM kernels (`kernels::q8`): every kernel this machine can run against the scalar
//! reference (exact integer block sums, odd shapes, saturation extremes), and against candle's
//! own `Q8_0` matmul on the same weights. The same tests run on wasm32 under
//! `wasm-bindgen-test-runner` in headless Chromium: the simd128 kernel against the scalar one,
//! and with the cargo feature `relaxed-simd` the relaxed-SIMD kernel too (CI's wasm test build):
//! `cargo test --target wasm32-unknown-unknown --no-default-features --features relaxed-simd --test q8_kernel`.
//!
//! Under Miri (`cfg(miri)`) the same tests run on small shapes that still take every path
//! (column split and row split, partial panels, several row chunks, several k-blocks), since
//! Miri interprets every instruction. Miri reports only the features the build enables, so with
//! the default (baseline x86-64) build only the portable scalar kernel is available
//! (`RUSTFLAGS="-C target-feature=+avx2,+fma"` adds the AVX2 one; AVX-512 implies F16C, whose
//! conversions `half` uses and Miri does not implement). Tree Borrows
//! because crossbeam-epoch (rayon) trips Stacked Borrows; candle's CPU-topology probe reads
//! `/sys` (refused by isolation); rayon's pool threads are never joined (leak check):
//!
//! ```sh
//! MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-permissive-provenance \
//!   -Zmiri-isolation-error=warn-nobacktrace -Zmiri-ignore-leaks" \
//!   cargo +nightly miri test --test q8_kernel
//! ```

use blipq::kernels::q8::{Kernel, Q8Matrix};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use half::f16;

// Relaxed SIMD needs a current engine (Chromium has it; Node 20 only behind a flag).
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    fn normal(&mut self) -> f32 {
        // Sum of uniforms: close enough to a bell for test data.
        (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0
    }
}

// 16 and more: the AMX kernel's whole and partial 16-row tiles, and row chunks beyond one.
#[cfg(not(miri))]
const MS: [usize; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33, 50];
#[cfg(not(miri))]
const SHAPES: [(usize, usize); 6] = [
    (1, 32),
    (17, 96),
    (40, 64),
    (33, 768),
    (100, 256),
    (19, 3072),
];
// Miri: both sides of `SMALL_M` (4), partial and whole panels, one and several k-blocks.
#[cfg(miri)]
const MS: [usize; 3] = [1, 3, 5];
#[cfg(miri)]
const SHAPES: [(usize, usize); 3] = [(1, 32), (17, 96), (40, 64)];

/// Weights of unit scale with int8 values from `w`, and activations whose every block holds a
/// ±127 (so the activation scale is exactly 1 and `q_x = x`): the products are exact integers.
/// With `channel`, a per-channel matrix (one unit scale per row): a row's maximum is 127, so the
/// per-token activation scale is 1 too.
fn integer_case_of(
    channel: bool,
    rng: &mut Rng,
    (m, n, k): (usize, usize, usize),
    w: impl Fn(&mut Rng) -> i32,
    x: impl Fn(&mut Rng) -> i32,
) -> (Q8Matrix, Vec<f32>, Vec<i64>) {
    let qw: Vec<i8> = (0..n * k).map(|_| w(rng) as i8).collect();
    let one = f16::from_f32(1.0).to_le_bytes();
    let scales: Vec<u8> = (0..n * k / 32).flat_map(|_| one).collect();
    let bytes: Vec<u8> = qw.iter().map(|&q| q as u8).collect();
    let mat = if channel {
        Q8Matrix::from_int8_channel(&bytes, &vec![1.0; n], n, k).unwrap()
    } else {
        Q8Matrix::from_int8(&bytes, &scales, n, k, false).unwrap()
    };
    let mut xs: Vec<f32> = (0..m * k).map(|_| x(rng) as f32).collect();
    for (i, blk) in xs.chunks_exact_mut(32).enumerate() {
        blk[i % 32] = if i % 2 == 0 { 127.0 } else { -127.0 };
    }
    let mut want = vec![0i64; m * n];
    for r in 0..m {
        for c in 0..n {
            want[r * n + c] = (0..k)
                .map(|i| xs[r * k + i] as i64 * qw[c * k + i] as i64)
                .sum();
        }
    }
    (mat, xs, want)
}

fn integer_case(
    rng: &mut Rng,
    m: usize,
    n: usize,
    k: usize,
    w: impl Fn(&mut Rng) -> i32,
    x: impl Fn(&mut Rng) -> i32,
) -> (Q8Matrix, Vec<f32>, Vec<i64>) {
    integer_case_of(false, rng, (m, n, k), w, x)
}

fn run(mat: &Q8Matrix, kernel: Kernel, xs: &[f32], m: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * mat.n()];
    mat.matmul_with(kernel, xs, m, &mut y).unwrap();
    y
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn every_kernel_computes_exact_integer_products() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    println!("kernels: {:?}", Kernel::available());
    // The wasm build is compiled with +simd128 (.cargo/config.toml): its kernel must be among the
    // ones tested, and with the `relaxed-simd` feature the relaxed kernel is the one chosen.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    assert!(Kernel::available().contains(&Kernel::Simd128));
    // The relaxed build: the single-dot kernel where the engine's probe allows it (V8 on
    // AVX-VNNI CPUs), else the 7-bit planes; both are among the kernels tested below.
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    {
        let want = if Kernel::RelaxedSimdU8.is_available() {
            Kernel::RelaxedSimdU8
        } else {
            Kernel::RelaxedSimd
        };
        assert_eq!(Kernel::best(), want);
        assert!(Kernel::available().contains(&Kernel::RelaxedSimd));
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "relaxed-simd")))]
    assert_eq!(Kernel::best(), Kernel::Simd128);
    for &(n, k) in &SHAPES {
        for m in MS {
            let (mat, xs, want) = integer_case(
                &mut rng,
                m,
                n,
                k,
                |r| r.int(-128, 127),
                |r| r.int(-127, 127),
            );
            for kernel in Kernel::available() {
                let y = run(&mat, kernel, &xs, m);
                for (i, (&y, &w)) in y.iter().zip(&want).enumerate() {
                    assert_eq!(y as i64, w, "{kernel:?} m={m} n={n} k={k} at {i}");
                    assert_eq!(y, w as f32, "{kernel:?} m={m} n={n} k={k} at {i}");
                }
            }
        }
    }
}

/// Per-channel matrices (`int8-channel`): every kernel's whole-row i32 sums are the exact
/// integer products, including the extremes (|w| = 128 against |x| = 127 over k = 3072).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn per_channel_kernels_compute_exact_integer_products() {
    let mut rng = Rng(0x51_7cc1_b727_220a);
    let mut cases: Vec<(usize, usize, usize, i32, i32)> = Vec::new();
    for &(n, k) in &SHAPES {
        for m in MS {
            cases.push((m, n, k, 0, 0));
        }
    }
    for (wv, xv) in [(-128, 127), (-128, -127), (127, 127)] {
        let k = if cfg!(miri) { 64 } else { 3072 };
        cases.push((5, 17, k, wv, xv));
    }
    for (m, n, k, wv, xv) in cases {
        let (mat, xs, want) = integer_case_of(
            true,
            &mut rng,
            (m, n, k),
            |r| if wv == 0 { r.int(-128, 127) } else { wv },
            |r| if xv == 0 { r.int(-127, 127) } else { xv },
        );
        assert!(mat.is_channel());
        for kernel in Kernel::available() {
            let y = run(&mat, kernel, &xs, m);
            for (i, (&y, &w)) in y.iter().zip(&want).enumerate() {
                // One rounding of the exact sum to f32 (sums beyond 2^24 round), the same in
                // every kernel.
                assert_eq!(y, w as f32, "{kernel:?} m={m} n={n} k={k} at {i}");
            }
        }
    }
}

/// Random weights quantized per row (`max |w| / 127`), as `blipq quantize --scheme
/// int8-channel` does.
fn channel_matrix(rng: &mut Rng, n: usize, k: usize) -> (Q8Matrix, Vec<i8>, Vec<f32>) {
    let w: Vec<f32> = (0..n * k).map(|_| 0.05 * rng.normal()).collect();
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        let d = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        scales[r] = d;
        for (q, v) in q[r * k..(r + 1) * k].iter_mut().zip(row) {
            *q = (v / d).round().clamp(-127.0, 127.0) as i8;
        }
    }
    let bytes: Vec<u8> = q.iter().map(|&q| q as u8).collect();
    let mat = Q8Matrix::from_int8_channel(&bytes, &scales, n, k).unwrap();
    (mat, q, scales)
}

/// On real-valued data every kernel equals the definition: activations quantized per token
/// (`max |x| / 127`), `y = d_x · d_w · Σ q_x q_w`, onto the starting values; and the matrix gives
/// back its int8 values and scales.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn per_channel_kernels_match_the_definition_on_real_data() {
    let mut rng = Rng(77);
    for &(n, k) in &SHAPES {
        let (mat, qw, dw) = channel_matrix(&mut rng, n, k);
        let (q_back, d_back) = mat.to_int8_channel().unwrap();
        assert_eq!((q_back, d_back), (qw.clone(), dw.clone()));
        for m in MS {
            let xs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let start: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
            let mut want = start.clone();
            for r in 0..m {
                let x = &xs[r * k..(r + 1) * k];
                let dx = x.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                let qx: Vec<i64> = x.iter().map(|v| (v * (1.0 / dx)).round() as i64).collect();
                for c in 0..n {
                    let sum: i64 = (0..k).map(|i| qx[i] * qw[c * k + i] as i64).sum();
                    want[r * n + c] += (dx as f64 * dw[c] as f64 * sum as f64) as f32;
                }
            }
            let scale = max_abs(&want).max(1.0);
            for kernel in Kernel::available() {
                let mut y = start.clone();
                mat.matmul_acc(kernel, &xs, m, &mut y).unwrap();
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{kernel:?} m={m} n={n} k={k}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn extreme_values_do_not_saturate() {
    // |w| = 128 or 127 against |x| = 127 everywhere: the largest pair sums vpmaddubsw can see.
    let mut rng = Rng(7);
    for (wv, xv) in [(-128, 127), (-128, -127), (127, 127), (127, -127)] {
        let shapes: &[(usize, usize)] = if cfg!(miri) {
            &[(17, 64), (32, 64)]
        } else {
            &[(17, 3072), (32, 64)]
        };
        for &(n, k) in shapes {
            for m in [1, 3, 5] {
                let (mat, xs, want) = integer_case(&mut rng, m, n, k, |_| wv, |_| xv);
                // The pinned ±127 entries already equal `xv` up to sign; recompute `want` from `xs`.
                let _ = want;
                // Block sums are exact; summing ~100 of them near 2^26 in f32 may round, the same
                // way in every kernel (unit scales make FMA and mul+add agree).
                let reference = run(&mat, Kernel::Scalar, &xs, m);
                for kernel in Kernel::available() {
                    let y = run(&mat, kernel, &xs, m);
                    assert_eq!(y, reference, "{kernel:?} w={wv} x={xv} m={m} n={n} k={k}");
                    for r in 0..m {
                        let exact: i64 = xs[r * k..(r + 1) * k]
                            .iter()
                            .map(|&x| x as i64 * wv as i64)
                            .sum();
                        for c in 0..n {
                            let got = y[r * n + c] as f64;
                            assert!(
                                (got - exact as f64).abs() <= 1e-6 * (exact as f64).abs(),
                                "{kernel:?} w={wv} x={xv} m={m} n={n} k={k}: {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }
}

fn random_weights(rng: &mut Rng, n: usize, k: usize) -> QTensor {
    let w: Vec<f32> = (0..n * k).map(|_| 0.05 * rng.normal()).collect();
    let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
    QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()
}

/// Random `Q8_0` weights `[n, k]` (candle's), with blipq's packed copy.
fn random_matrix(rng: &mut Rng, n: usize, k: usize) -> (QTensor, Q8Matrix) {
    let q = random_weights(rng, n, k);
    let mat = Q8Matrix::from_qtensor(&q).unwrap();
    (q, mat)
}

/// `t [..]` as a flat f32 vector.
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, &b| a.max(b.abs()))
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn kernels_match_scalar_and_candle_on_real_valued_data() {
    let mut rng = Rng(42);
    for &(n, k) in &SHAPES {
        let (q, mat) = random_matrix(&mut rng, n, k);
        let candle = QMatMul::from_qtensor(q).unwrap();
        for m in MS {
            let xs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let reference = run(&mat, Kernel::Scalar, &xs, m);
            let scale = max_abs(&reference).max(1e-6);
            for kernel in Kernel::available() {
                let y = run(&mat, kernel, &xs, m);
                for (a, b) in y.iter().zip(&reference) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{kernel:?} m={m} n={n} k={k}: {a} vs {b}"
                    );
                }
            }
            let x = Tensor::from_vec(xs.clone(), (m, k), &Device::Cpu).unwrap();
            let want = values(&candle.forward(&x).unwrap());
            for (a, b) in reference.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "candle m={m} n={n} k={k}: {a} vs {b}"
                );
            }
            // The tensor entry point, with a leading batch dimension.
            let got = mat.forward(&x.unsqueeze(0).unwrap()).unwrap();
            assert_eq!(got.dims(), &[1, m, n]);
            let got = values(&got);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "forward m={m} n={n} k={k}: {a} vs {b}"
                );
            }
        }
    }
}

/// `matmul_acc` adds onto what `y` holds (the `Linear` bias), in every kernel and both the
/// column-split (m <= 4) and row-split paths; `forward_with_bias` is `forward` plus the bias.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn products_accumulate_onto_the_output_and_the_bias() {
    let mut rng = Rng(11);
    let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(1, 200, 96), (3, 17, 64), (9, 40, 64)]
    } else {
        &[(1, 200, 96), (3, 17, 64), (60, 40, 768)]
    };
    for &(m, n, k) in shapes {
        let mat = Q8Matrix::from_qtensor(&random_weights(&mut rng, n, k)).unwrap();
        let xs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let start: Vec<f32> = (0..m * n).map(|_| rng.normal() * 10.0).collect();
        for kernel in Kernel::available() {
            let product = run(&mat, kernel, &xs, m);
            let mut y = start.clone();
            mat.matmul_acc(kernel, &xs, m, &mut y).unwrap();
            let scale = max_abs(&product).max(10.0);
            for ((a, p), s) in y.iter().zip(&product).zip(&start) {
                assert!(
                    (a - (p + s)).abs() <= 1e-5 * scale,
                    "{kernel:?} m={m} n={n} k={k}: {a} vs {p} + {s}"
                );
            }
        }
        let bias: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let x = Tensor::from_vec(xs, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(bias.clone(), n, &Device::Cpu).unwrap();
        let plain = mat.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let biased = mat
            .forward_with_bias(&x, Some(&b))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (p, q) in plain.iter().zip(&biased) {
            for ((p, q), b) in p.iter().zip(q).zip(&bias) {
                assert!(
                    (p + b - q).abs() <= 1e-4 * p.abs().max(1.0),
                    "{p} + {b} vs {q}"
                );
            }
        }
        let wrong = Tensor::zeros(n + 1, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(mat.forward_with_bias(&x, Some(&wrong)).is_err());
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn large_m_matches_candle() {
    // The row-parallel path (m > 4, several row chunks, a partial last tile).
    let mut rng = Rng(3);
    let (m, n, k) = if cfg!(miri) {
        (50, 17, 64)
    } else {
        (131, 72, 256)
    };
    let (q, mat) = random_matrix(&mut rng, n, k);
    let candle = QMatMul::from_qtensor(q).unwrap();
    let xs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
    let x = Tensor::from_vec(xs, (m, k), &Device::Cpu).unwrap();
    let want = values(&candle.forward(&x).unwrap());
    let got = values(&mat.forward(&x).unwrap());
    let scale = max_abs(&want);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn repacking_round_trips_and_dequantizes_like_candle() {
    let mut rng = Rng(11);
    for &(n, k) in &SHAPES {
        let (q, mat) = random_matrix(&mut rng, n, k);
        assert_eq!((mat.n(), mat.k()), (n, k));
        assert_eq!(mat.to_q8_0_bytes(), q.data().unwrap().to_vec());
        // One copy, about the size of the Q8_0 blocks (f32 instead of f16 scales, padded panel).
        assert!(mat.size_in_bytes() >= n * k / 32 * 34);
        assert!(mat.size_in_bytes() <= n.div_ceil(16) * 16 * k / 32 * 36);
        let full = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut row = vec![0f32; k];
        for (r, want) in full.iter().enumerate() {
            mat.dequantize_row(r, &mut row).unwrap();
            assert_eq!(&row, want, "row {r}");
        }
        let ids = Tensor::new(&[[0u32, (n - 1) as u32]], &Device::Cpu).unwrap();
        let emb = mat.embedding(&ids).unwrap();
        assert_eq!(emb.dims(), &[1, 2, k]);
        assert_eq!(
            emb.get(0)
                .unwrap()
                .get(1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            full[n - 1]
        );
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn bad_shapes_are_errors() {
    let mut rng = Rng(5);
    let mat = Q8Matrix::from_qtensor(&random_weights(&mut rng, 8, 64)).unwrap();
    let mut y = vec![0f32; 8];
    assert!(mat.matmul(&[0.0; 63], 1, &mut y).is_err());
    assert!(mat.matmul(&[0.0; 64], 1, &mut y[..7]).is_err());
    assert!(mat.dequantize_row(8, &mut [0.0; 64]).is_err());
    assert!(mat
        .forward(&Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap())
        .is_err());
    assert!(Q8Matrix::from_q8_0_bytes(&[0; 33], 1, 32).is_err());
    assert!(Q8Matrix::from_int8(&[0; 48], &[0; 2], 1, 48, true).is_err());
    assert!(Q8Matrix::from_int8_channel(&[0; 64], &[1.0; 2], 1, 64).is_err());
    assert!(Q8Matrix::from_int8_channel(&[0; 64], &[f32::NAN], 1, 64).is_err());
    assert!(Q8Matrix::from_int8_channel(&[0; 48], &[1.0], 1, 48).is_err());
    assert!(mat.to_int8_channel().is_none());
    let ids = Tensor::new(&[8u32], &Device::Cpu).unwrap();
    assert!(mat.embedding(&ids).is_err());
}

/// 4-bit weights `[n, k]` in groups of `group`: random nibbles, random f16 scales.
#[cfg(target_arch = "x86_64")]
fn random_int4(rng: &mut Rng, n: usize, k: usize, group: usize) -> Q8Matrix {
    let nibbles: Vec<u8> = (0..n * k / 2).map(|_| rng.int(0, 255) as u8).collect();
    let scales: Vec<u8> = (0..n * k / group)
        .flat_map(|_| f16::from_f32(0.01 + 0.02 * rng.normal().abs()).to_le_bytes())
        .collect();
    Q8Matrix::from_int4(&nibbles, &scales, n, k, group).unwrap()
}

/// The AMX kernel applies the block scales (and a per-channel matrix's row scales) with the same
/// f32 operations, in the same order, as the AVX-512 VNNI one, and computes a 4-bit matrix on
/// its panels expanded to int8: identical outputs, so INT8 and 4-bit captions do not depend on
/// whether the CPU has AMX. Shapes: whole and partial 16-row tiles and panels, one and several row chunks, k beyond
/// the VNNI kernel's k-chunk (768).
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_equals_avx512_vnni_bit_for_bit() {
    if !Kernel::Amx.is_available() {
        println!("AMX not available here: nothing to compare");
        return;
    }
    let mut rng = Rng(5);
    for &(m, n, k) in &[
        (16, 16, 32),
        (17, 40, 96),
        (33, 33, 768),
        (50, 100, 3072),
        (131, 72, 256),
        (577, 48, 768),
    ] {
        let blocks = Q8Matrix::from_qtensor(&random_weights(&mut rng, n, k)).unwrap();
        let (channel, _, _) = channel_matrix(&mut rng, n, k);
        let mut mats = vec![blocks, channel, random_int4(&mut rng, n, k, 32)];
        if k % 128 == 0 {
            mats.push(random_int4(&mut rng, n, k, 128));
        }
        for mat in mats {
            let xs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let start: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
            let mut vnni = start.clone();
            mat.matmul_acc(Kernel::Avx512Vnni, &xs, m, &mut vnni)
                .unwrap();
            let mut amx = start.clone();
            mat.matmul_acc(Kernel::Amx, &xs, m, &mut amx).unwrap();
            for (i, (a, v)) in amx.iter().zip(&vnni).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    v.to_bits(),
                    "{mat:?} m={m} n={n} k={k} at {i}: {a} vs {v}"
                );
            }
        }
    }
}

/// 4-bit weights `[n, k]` in groups of `group` with unit scales and nibbles from `u` (`q = u - 8`),
/// as candle's `Q4_0` byte order, with activations whose every block holds a ±127 (activation
/// scale exactly 1): the products are exact integers.
fn int4_integer_case(
    rng: &mut Rng,
    (m, n, k): (usize, usize, usize),
    group: usize,
    u: impl Fn(&mut Rng) -> i32,
) -> (Q8Matrix, Vec<f32>, Vec<i64>) {
    let us: Vec<u8> = (0..n * k).map(|_| u(rng) as u8).collect();
    let mut bytes = Vec::with_capacity(n * k / 2);
    for block in us.chunks_exact(32) {
        bytes.extend((0..16).map(|i| block[i] | block[i + 16] << 4));
    }
    let one = f16::from_f32(1.0).to_le_bytes();
    let scales: Vec<u8> = (0..n * k / group).flat_map(|_| one).collect();
    let mat = Q8Matrix::from_int4(&bytes, &scales, n, k, group).unwrap();
    let mut xs: Vec<f32> = (0..m * k).map(|_| rng.int(-127, 127) as f32).collect();
    for (i, blk) in xs.chunks_exact_mut(32).enumerate() {
        blk[i % 32] = if i % 2 == 0 { 127.0 } else { -127.0 };
    }
    let mut want = vec![0i64; m * n];
    for r in 0..m {
        for c in 0..n {
            want[r * n + c] = (0..k)
                .map(|i| xs[r * k + i] as i64 * (us[c * k + i] as i64 - 8))
                .sum();
        }
    }
    (mat, xs, want)
}

/// 4-bit matrices (`q4_0`, `q4_g128`): every kernel's block sums are the exact integer products,
/// on odd shapes and at the extremes (-8 and 7 against ±127).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn int4_kernels_compute_exact_integer_products() {
    let mut rng = Rng(0x4b17);
    for &(n, k) in &SHAPES {
        for m in MS {
            for group in [32, 128] {
                if k % group != 0 {
                    continue;
                }
                let (mat, xs, want) =
                    int4_integer_case(&mut rng, (m, n, k), group, |r| r.int(0, 15));
                assert!(mat.is_int4());
                for kernel in Kernel::available() {
                    let y = run(&mat, kernel, &xs, m);
                    for (i, (&y, &w)) in y.iter().zip(&want).enumerate() {
                        assert_eq!(y, w as f32, "{kernel:?} m={m} n={n} k={k} g={group} at {i}");
                    }
                }
            }
        }
    }
    for u in [0, 15] {
        let k = if cfg!(miri) { 64 } else { 3072 };
        let (mat, xs, want) = int4_integer_case(&mut rng, (5, 17, k), 32, |_| u);
        let reference = run(&mat, Kernel::Scalar, &xs, 5);
        for kernel in Kernel::available() {
            assert_eq!(run(&mat, kernel, &xs, 5), reference, "{kernel:?} u={u}");
        }
        for (y, w) in reference.iter().zip(&want) {
            assert!((*y as f64 - *w as f64).abs() <= 1e-6 * (*w as f64).abs());
        }
    }
}

/// Candle's own `Q4_0`: the same nibbles and scales load, round-trip and dequantize exactly, and
/// every kernel's product equals candle's `Q4_0 × Q8_0` matmul.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn int4_matches_candles_q4_0() {
    let mut rng = Rng(404);
    for &(n, k) in &SHAPES {
        let w: Vec<f32> = (0..n * k).map(|_| 0.05 * rng.normal()).collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_0).unwrap();
        let data = q.data().unwrap().to_vec();
        let (mut nibbles, mut scales) = (Vec::new(), Vec::new());
        for block in data.chunks_exact(18) {
            scales.extend_from_slice(&block[..2]);
            nibbles.extend_from_slice(&block[2..]);
        }
        let mat = Q8Matrix::from_int4(&nibbles, &scales, n, k, 32).unwrap();
        let (back, d) = mat.to_int4().unwrap();
        assert_eq!(back, nibbles);
        let want_d: Vec<f32> = scales
            .chunks_exact(2)
            .map(|h| f16::from_le_bytes([h[0], h[1]]).to_f32())
            .collect();
        assert_eq!(d, want_d);
        let full = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let mut row = vec![0f32; k];
        for (r, want) in full.iter().enumerate() {
            mat.dequantize_row(r, &mut row).unwrap();
            assert_eq!(&row, want, "row {r}");
        }
        let candle = QMatMul::from_qtensor(q).unwrap();
        for m in MS {
            let xs: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let x = Tensor::from_vec(xs.clone(), (m, k), &Device::Cpu).unwrap();
            let want = values(&candle.forward(&x).unwrap());
            let scale = max_abs(&want).max(1e-6);
            for kernel in Kernel::available() {
                let y = run(&mat, kernel, &xs, m);
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{kernel:?} m={m} n={n} k={k}: {a} vs {b}"
                    );
                }
            }
        }
    }
    // Shapes that do not fit.
    assert!(Q8Matrix::from_int4(&[0; 16], &[0; 2], 1, 32, 128).is_err());
    assert!(Q8Matrix::from_int4(&[0; 16], &[0; 4], 1, 32, 32).is_err());
    assert!(Q8Matrix::from_int4(&[0; 16], &[0; 2], 1, 32, 48).is_err());
}
