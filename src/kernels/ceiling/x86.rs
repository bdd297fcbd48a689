//! x86_64 probes: AVX-512 F FMA and AVX-512 VNNI `vpdpbusd` (or AVX2 FMA and AVX-VNNI), 24
//! independent accumulator chains each; AMX-INT8 `tdpbusd` on four independent 16 × 16 tiles
//! where the INT8 kernels can use AMX (it is then the int8 limit); and a streaming read with
//! 512-bit (or 256-bit) loads. Chosen at run time by feature detection. The only `unsafe`
//! operations are calls of the `#[target_feature]` functions after detection, the tile
//! instructions (registers only, plus the 64-byte configuration they load), and the loads of the
//! read probe, all within the slice they are given.

use std::arch::x86_64::*;

use super::{Probe, ROUND};

/// Chains per probe: enough to cover FMA latency × ports on every CPU seen (4 × 2 = 8 at least).
const CHAINS: usize = 24;

pub(super) fn fma_round() -> Option<Probe> {
    if is_x86_feature_detected!("avx512f") {
        Some(("AVX-512 F vfmadd (zmm)", || {
            // SAFETY: AVX-512 F was detected at run time just above, once per process.
            unsafe { fma512() }
        }))
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(("AVX2 vfmadd (ymm)", || {
            // SAFETY: AVX2 and FMA were detected at run time just above.
            unsafe { fma256() }
        }))
    } else {
        None
    }
}

pub(super) fn dot_round() -> Option<Probe> {
    if crate::kernels::q8::Kernel::Amx.is_available() {
        Some(("AMX-INT8 tdpbusd (16 × 16 tiles)", || {
            // SAFETY: AMX-TILE/INT8 were detected and the tile state granted (`is_available`).
            unsafe { dot_amx() }
        }))
    } else if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
        Some(("AVX-512 VNNI vpdpbusd (zmm)", || {
            // SAFETY: AVX-512 F and VNNI were detected at run time just above.
            unsafe { dot512() }
        }))
    } else if is_x86_feature_detected!("avxvnni") {
        Some(("AVX-VNNI vpdpbusd (ymm)", || {
            // SAFETY: AVX-VNNI (and so AVX2) was detected at run time just above.
            unsafe { dot256() }
        }))
    } else {
        None
    }
}

pub(super) fn read(buf: &[u64]) -> Option<f64> {
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512 F was detected at run time just above.
        Some(unsafe { read512(buf) })
    } else {
        None
    }
}

/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
unsafe fn fma512() -> f64 {
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    let m = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let a = _mm512_set1_ps(std::hint::black_box(1e-7));
    for _ in 0..ROUND {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, m, a);
        }
    }
    std::hint::black_box(acc);
    (ROUND * CHAINS * 16 * 2) as f64
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma256() -> f64 {
    let mut acc = [_mm256_set1_ps(1.0); CHAINS / 2];
    let m = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let a = _mm256_set1_ps(std::hint::black_box(1e-7));
    for _ in 0..ROUND {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, m, a);
        }
    }
    std::hint::black_box(acc);
    (ROUND * CHAINS / 2 * 8 * 2) as f64
}

/// # Safety
/// The CPU must support AVX-512 F and VNNI.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dot512() -> f64 {
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    let a = _mm512_set1_epi8(std::hint::black_box(3));
    let b = _mm512_set1_epi8(std::hint::black_box(-2));
    for _ in 0..ROUND {
        for x in acc.iter_mut() {
            *x = _mm512_dpbusd_epi32(*x, a, b);
        }
    }
    std::hint::black_box(acc);
    (ROUND * CHAINS * 64 * 2) as f64
}

/// # Safety
/// The CPU must support AMX-TILE and AMX-INT8, with the tile state granted by the OS.
unsafe fn dot_amx() -> f64 {
    /// Palette 1; tiles 0..6 of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);
    let mut cfg = Config([0; 64]);
    cfg.0[0] = 1;
    for t in 0..6 {
        cfg.0[16 + 2 * t] = 64;
        cfg.0[48 + t] = 16;
    }
    // Each round: four independent `tdpbusd`, 16 × 16 × 64 multiply-adds each.
    let rounds = ROUND / 16;
    // SAFETY: `ldtilecfg` reads the 64 bytes of `cfg`, a valid configuration; the other tile
    // instructions use registers only; `tilerelease` resets the state configured here.
    unsafe {
        std::arch::asm!(
            "ldtilecfg [{}]",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            in(reg) cfg.0.as_ptr(),
            options(nostack, readonly),
        );
        for _ in 0..rounds {
            std::arch::asm!(
                "tdpbusd tmm0, tmm4, tmm5",
                "tdpbusd tmm1, tmm4, tmm5",
                "tdpbusd tmm2, tmm4, tmm5",
                "tdpbusd tmm3, tmm4, tmm5",
                options(nostack, nomem),
            );
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
    (rounds * 4 * 16 * 16 * 64 * 2) as f64
}

/// # Safety
/// The CPU must support AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn dot256() -> f64 {
    let mut acc = [_mm256_setzero_si256(); CHAINS / 2];
    let a = _mm256_set1_epi8(std::hint::black_box(3));
    let b = _mm256_set1_epi8(std::hint::black_box(-2));
    for _ in 0..ROUND {
        for x in acc.iter_mut() {
            *x = _mm256_dpbusd_avx_epi32(*x, a, b);
        }
    }
    std::hint::black_box(acc);
    (ROUND * CHAINS / 2 * 32 * 2) as f64
}

/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
unsafe fn read512(buf: &[u64]) -> f64 {
    let mut acc = [_mm512_setzero_si512(); 4];
    let (chunks, _) = buf.as_chunks::<32>();
    for c in chunks {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `c` is 32 u64 (256 bytes) of `buf`; `8 j .. 8 j + 8` (j < 4) is within
            // it; `loadu` needs no alignment.
            let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(8 * j) as *const _) };
            *acc = _mm512_add_epi64(*acc, v);
        }
    }
    std::hint::black_box(acc);
    (chunks.len() * 256) as f64
}
