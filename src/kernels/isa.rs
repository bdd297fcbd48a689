//! Run-time choice of instruction set for the element-wise loops (softmax, GELU, activation
//! quantization, single-token attention), so one x86-64 binary runs everywhere and still uses
//! AVX-512 or AVX2 + FMA where the CPU it runs on has them.
//!
//! The GEMM kernels ([`crate::kernels::q8`], [`crate::kernels::sgemm`]) pick their instructions
//! explicitly. The element-wise loops are portable Rust that the compiler vectorizes; compiled for
//! baseline x86-64 (SSE2) they lose a third of a vision layer's time (no vector rounding
//! instruction, so `round` becomes a library call per value). `multiversion!` compiles such a
//! function's body once per [`Level`] with `#[target_feature]` and calls the best one the CPU
//! supports, detected once.
//!
//! The versions give bit-identical results: the loops fix their own order of operations (explicit
//! partial sums), Rust never reassociates or contracts float arithmetic, and the one fused
//! operation (`mul_add`, see [`crate::kernels::ops`]) is an exact FMA at every level. So captions do
//! not depend on the CPU's vector width, and tests compare every level with [`Level::Base`]
//! ([`with_level`]). `BLIPQ_ISA=base|v3` ([`ENV_CAP`]) runs blipq's own loops and GEMM kernels as
//! on a CPU of that level (the `gemm` crate, blipq's f32 fallback, and the machine-limit probes
//! detect the CPU for themselves).

use std::cell::Cell;
use std::sync::OnceLock;

/// An x86-64 feature level (the psABI's names); on other targets only [`Level::Base`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// What the build targets (x86-64: SSE2; wasm32: simd128, as compiled).
    Base,
    /// x86-64-v3: AVX2, FMA, F16C, BMI1/2.
    V3,
    /// x86-64-v4: v3 plus AVX-512 F, BW, CD, DQ, VL.
    V4,
}

thread_local! {
    /// A per-thread cap on [`level`], set by [`with_level`].
    static CAP: Cell<Level> = const { Cell::new(Level::V4) };
}

/// The environment variable that caps [`detected`] for the whole process: `base`, `v3` or `v4`
/// (run blipq's loops and kernels as on an older CPU). It caps the GEMM kernels' choice too.
pub const ENV_CAP: &str = "BLIPQ_ISA";

/// The highest level this CPU supports, detected once, capped by [`cap`].
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(|| detect().min(cap()))
}

/// The level [`ENV_CAP`] allows ([`Level::V4`] when unset or invalid: an invalid value is ignored
/// here, [`env_cap`] reports it). The GEMM kernels check it next to their own CPU features, so a
/// kernel needing only part of a level (AVX2 + FMA) still runs where the CPU lacks the rest.
pub fn cap() -> Level {
    static CAP_LEVEL: OnceLock<Level> = OnceLock::new();
    *CAP_LEVEL.get_or_init(|| env_cap().ok().flatten().unwrap_or(Level::V4))
}

/// The cap [`ENV_CAP`] sets, if any; an error names a value that is not a level.
pub fn env_cap() -> crate::Result<Option<Level>> {
    let Some(value) = std::env::var_os(ENV_CAP) else {
        return Ok(None);
    };
    match value.to_str().map(str::to_ascii_lowercase).as_deref() {
        Some("base") => Ok(Some(Level::Base)),
        Some("v3") => Ok(Some(Level::V3)),
        Some("v4") => Ok(Some(Level::V4)),
        _ => Err(crate::Error::InvalidArgument(format!(
            "{ENV_CAP}={}: give base, v3 or v4",
            value.to_string_lossy()
        ))),
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    let v3 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("bmi1")
        && is_x86_feature_detected!("bmi2")
        && is_x86_feature_detected!("lzcnt")
        && is_x86_feature_detected!("movbe")
        && is_x86_feature_detected!("popcnt");
    let v4 = v3
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512cd")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl");
    match (v4, v3) {
        (true, _) => Level::V4,
        (false, true) => Level::V3,
        _ => Level::Base,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Base
}

/// The level `multiversion!` functions run at on this thread: [`detected`], or lower inside
/// [`with_level`].
#[inline]
pub fn level() -> Level {
    detected().min(CAP.with(Cell::get))
}

/// Runs `f` with this thread's `multiversion!` functions capped at `cap` (work `f` hands to other
/// threads is not capped): for tests that compare the levels.
pub fn with_level<R>(cap: Level, f: impl FnOnce() -> R) -> R {
    /// Puts the previous cap back, also when `f` panics.
    struct Restore(Level);
    impl Drop for Restore {
        fn drop(&mut self) {
            CAP.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CAP.with(|c| c.replace(cap)));
    f()
}

/// `fn name(args) -> ret = body;` defines `name`, which runs `body` (an `#[inline(always)]`
/// function with the same signature) compiled for the best [`Level`] of the running CPU.
/// Arguments must be plain identifiers; lifetimes must be elided.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c,bmi1,bmi2,lzcnt,movbe,popcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl")]
                fn v4($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c,bmi1,bmi2,lzcnt,movbe,popcnt")]
                fn v3($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::kernels::isa::level() {
                    // SAFETY: `level()` is V4 only where `detected()` found every feature
                    // `v4` enables on this CPU.
                    $crate::kernels::isa::Level::V4 => return unsafe { v4($($arg),*) },
                    // SAFETY: likewise, every feature `v3` enables.
                    $crate::kernels::isa::Level::V3 => return unsafe { v3($($arg),*) },
                    $crate::kernels::isa::Level::Base => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_level_caps_this_thread_and_restores() {
        let top = detected();
        assert_eq!(level(), top);
        with_level(Level::Base, || {
            assert_eq!(level(), Level::Base);
            with_level(Level::V4, || assert_eq!(level(), top));
            assert_eq!(level(), Level::Base);
        });
        assert_eq!(level(), top);
    }

    #[inline(always)]
    fn sum_of_squares_body(xs: &[f32]) -> f32 {
        xs.iter().map(|x| x * x).sum()
    }

    multiversion! {
        fn sum_of_squares(xs: &[f32]) -> f32 = sum_of_squares_body;
    }

    #[test]
    fn every_level_runs_the_same_body() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let base = with_level(Level::Base, || sum_of_squares(&xs));
        for cap in [Level::V3, Level::V4] {
            let got = with_level(cap, || sum_of_squares(&xs));
            assert_eq!(got.to_bits(), base.to_bits(), "{cap:?}");
        }
        assert_eq!(base.to_bits(), sum_of_squares_body(&xs).to_bits());
    }
}
