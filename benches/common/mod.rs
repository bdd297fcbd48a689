//! Timing helpers shared by the benches.

#![allow(dead_code)]

use std::time::Instant;

/// Seconds `f` takes, once.
pub fn secs(f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// BLIP-base's vision-encoder products `(m, k, n)`: 577 tokens through the fused QKV
/// projection, the output projection, and the MLP's two layers.
pub const VISION_SHAPES: [(usize, usize, usize); 4] = [
    (577, 768, 2304),
    (577, 768, 768),
    (577, 768, 3072),
    (577, 3072, 768),
];
