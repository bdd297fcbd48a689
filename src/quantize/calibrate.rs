//! Activation-aware quantization (`blipq quantize --calibrate`), from statistics of the inputs
//! of every linear layer while the FP32 model captions the validation images
//! ([`crate::checkpoint::ActivationStats`]: each input feature's mean square and largest
//! magnitude).
//!
//! - **4-bit** (`q4_0`, `q4_g128`, `mixed`): each group's scale is chosen to minimise the rounding
//!   error weighted by the features' mean squares — the error the group adds to the layer's
//!   output when the input features are uncorrelated — over a set of candidate scales, each
//!   refined to its least-squares value, instead of mapping the group's largest weight to -8.
//! - **`int8-channel`**: SmoothQuant-style smoothing. Activations are quantized per token, so a
//!   few features with large values cost every other feature of the token its precision. Where a
//!   LayerNorm feeds a linear layer and nothing else (the vision encoder's pre-norm blocks:
//!   `layer_norm1` → `self_attn.qkv`, `layer_norm2` → `mlp.fc1`), feature `j` is divided by
//!   `s_j`, the power of two nearest `max|x_j|^α / max|W[:, j]|^(1-α)` (α = [`SMOOTH_ALPHA`];
//!   [`smoothing_factors`]), in the LayerNorm's weight and bias and multiplied by `s_j` in the
//!   weight's column `j`: the same function, with the activations' range moved into the
//!   weights, which have one scale per row. The text decoder's LayerNorms also feed the residual stream (post-norm), so there is
//!   nothing to fold into there.
//!
//! Either way the stored format is unchanged (the same tensors, dtypes and scales), so every
//! loader and kernel reads a calibrated file as it reads any other; its metadata says how it
//! was calibrated ([`super::CALIBRATION_KEY`]).
//!
//! May use: `captioner` (the FP32 model that records), `checkpoint` (the recorder, the source
//! tensors), `quantize` (the 4-bit layout), `error`.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use crate::checkpoint::int8::BLOCK;
use crate::checkpoint::{ActivationStats, Checkpoint, FeatureStats};
use crate::{CaptionOptions, Captioner, Error, ModelFiles, Result};

/// Per weight name, its layer's input features over the validation images.
pub type Importance = BTreeMap<String, FeatureStats>;

/// The statistics of every linear layer's input features while the FP32 model of `files`
/// encodes each image and captions it greedily (the decoder's layers see every generated token);
/// `on_image(done, total)` follows the work.
pub fn activation_importance(
    files: &ModelFiles,
    images: &[(String, Vec<u8>)],
    on_image: &mut dyn FnMut(usize, usize),
) -> Result<Importance> {
    if images.is_empty() {
        return Err(Error::InvalidArgument(
            "calibration needs validation images".into(),
        ));
    }
    let stats = ActivationStats::default();
    let model = Captioner::recording(files, &stats)?;
    for (i, (name, bytes)) in images.iter().enumerate() {
        on_image(i, images.len());
        let pixels = model.pixel_values(bytes.as_slice(), name)?;
        let embeds = model.encode_image(&pixels)?;
        model.generate_ids(&embeds, &CaptionOptions::default(), &mut |_| {})?;
    }
    on_image(images.len(), images.len());
    Ok(stats.summary())
}

/// SmoothQuant's migration strength: how much of the activations' range moves into the
/// weights (0.5 splits it evenly). Of 0.3, 0.5 and 0.75, 0.75 gave the highest token agreement
/// with FP32 on the validation images, at demo and at base size (README, *Schemes side by
/// side*).
pub const SMOOTH_ALPHA: f32 = 0.75;

/// The largest power of two a smoothing factor moves a feature by, either way (a feature that is
/// always zero, or a weight column of zeros, gets 1).
const SMOOTH_MAX_EXP: i32 = 13;

/// The LayerNorm (its name without `.weight`) whose output weight `name` alone reads: the
/// vision encoder's pre-norm blocks.
fn feeding_norm(name: &str) -> Option<String> {
    let layer = name.strip_prefix("vision_model.encoder.layers.")?;
    let (index, rest) = layer.split_once('.')?;
    index.parse::<usize>().ok()?;
    let norm = match rest {
        "self_attn.qkv.weight" => "layer_norm1",
        "mlp.fc1.weight" => "layer_norm2",
        _ => return None,
    };
    Some(format!("vision_model.encoder.layers.{index}.{norm}"))
}

/// The smoothing factors of feature `j` from the activations' and the weight column's largest
/// magnitudes: `max|x_j|^α / max|W[:, j]|^(1-α)` rounded to the nearest power of two (within
/// `2^±`[`SMOOTH_MAX_EXP`]), 1 where either is zero. Powers of two scale f32 values exactly, so
/// the smoothed LayerNorm and weight multiply to the very products of the original ones; and a
/// factor only moves with the last bits of the statistics (native and wasm builds round some
/// activations differently) where it lies that close to the midpoint between two powers of two,
/// so the page's file is the CLI's (the end-to-end test compares them).
pub fn smoothing_factors(max_x: &[f32], max_w: &[f32]) -> Vec<f32> {
    max_x
        .iter()
        .zip(max_w)
        .map(|(&x, &w)| {
            if x > 0.0 && w > 0.0 && x.is_finite() && w.is_finite() {
                let (x, w, alpha) = (f64::from(x), f64::from(w), f64::from(SMOOTH_ALPHA));
                let e = (alpha * x.log2() - (1.0 - alpha) * w.log2()).round();
                2f32.powi(e.clamp(-f64::from(SMOOTH_MAX_EXP), f64::from(SMOOTH_MAX_EXP)) as i32)
            } else {
                1.0
            }
        })
        .collect()
}

/// Per tensor name, the factors its last dimension is multiplied by before it is stored: for
/// every weight a LayerNorm alone feeds ([`feeding_norm`]) and that has statistics, `s` on the
/// weight's columns and `1 / s` on the LayerNorm's weight and bias.
pub fn smoothing(ckpt: &Checkpoint, importance: &Importance) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut factors = BTreeMap::new();
    for (name, stats) in importance {
        let Some(norm) = feeding_norm(name) else {
            continue;
        };
        let (gamma, beta) = (format!("{norm}.weight"), format!("{norm}.bias"));
        let (_, shape) = ckpt.lookup(name)?;
        let [_, cols] = shape[..] else {
            return Err(Error::tensor(name, format!("is {shape:?}, not a matrix")));
        };
        if stats.max_abs.len() != cols {
            return Err(Error::Internal(format!(
                "calibration statistics of `{name}`: {} features for {cols} columns",
                stats.max_abs.len()
            )));
        }
        for norm_tensor in [&gamma, &beta] {
            let (_, norm_shape) = ckpt.lookup(norm_tensor)?;
            if norm_shape != [cols] {
                return Err(Error::tensor(
                    norm_tensor,
                    format!("is {norm_shape:?}, but `{name}` has {cols} columns"),
                ));
            }
        }
        // The weight is read again when it is stored (`stored_tensors`): keeping the smoothed
        // copies instead would hold every qkv and fc1 weight in f32 at once (about 200 MB at
        // base size, 700 MB at large), too much for the page; a second read costs milliseconds.
        let w = ckpt.load_f32(name, &shape, &Device::Cpu)?;
        let max_w: Vec<f32> = w.abs()?.max(0)?.to_vec1()?;
        let s = smoothing_factors(&stats.max_abs, &max_w);
        let inverse: Vec<f32> = s.iter().map(|s| 1.0 / s).collect();
        factors.insert(gamma, inverse.clone());
        factors.insert(beta, inverse);
        factors.insert(name.clone(), s);
    }
    Ok(factors)
}

/// `t` with its last dimension multiplied by `factors`.
pub fn scale_last_dim(t: &Tensor, factors: &[f32]) -> Result<Tensor> {
    let f = Tensor::new(factors, t.device())?;
    Ok(t.broadcast_mul(&f)?)
}

/// The candidate scales tried per group: the largest weight mapped to -8 or to +7, each
/// stretched by up to ±1 level in steps of a tenth.
const STEPS: i32 = 10;

/// One group's 4-bit values (`-8..=7`, into `levels`) and scale minimising
/// `sum(weight[j] * (x[j] - scale * level[j])^2)`: for each candidate scale the values are
/// rounded, then the scale is the least-squares one for those values; the best pair is kept.
fn weighted_group(x: &[f32], weight: &[f32], levels: &mut [i8], trial: &mut [i8]) -> f32 {
    let max = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if max == 0.0 {
        levels.fill(0);
        return 0.0;
    }
    let mut best = (f64::NEG_INFINITY, 0f32);
    for anchor in [-8f32, 7.0] {
        for step in -STEPS..=STEPS {
            let reach = anchor.abs() + step as f32 / STEPS as f32;
            let iscale = anchor.signum() * reach / max;
            let (mut sumlx, mut suml2) = (0f64, 0f64);
            for ((&v, &w), l) in x.iter().zip(weight).zip(trial.iter_mut()) {
                let q = (v * iscale).round().clamp(-8.0, 7.0);
                *l = q as i8;
                sumlx += f64::from(w) * f64::from(v) * f64::from(q);
                suml2 += f64::from(w) * f64::from(q) * f64::from(q);
            }
            // The error at the least-squares scale is sum(w x^2) - sumlx^2 / suml2.
            if suml2 > 0.0 && sumlx * sumlx / suml2 > best.0 {
                best = (sumlx * sumlx / suml2, (sumlx / suml2) as f32);
                levels.copy_from_slice(trial);
            }
        }
    }
    best.1
}

/// A `[rows, cols]` matrix in 4-bit groups of `group` values, as [`super::quantize_int4`] lays
/// them out (candle's `Q4_0` nibble order, f16 scales), each group's scale chosen by
/// [`weighted_group`] with the input features' mean squares `importance` (`[cols]`) as weights.
pub fn quantize_int4_weighted(
    t: &Tensor,
    group: usize,
    importance: &[f32],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (_, cols) = t.dims2()?;
    super::check_int4_group(group, cols)?;
    if importance.len() != cols {
        return Err(Error::Internal(format!(
            "{} activation statistics for a weight of {cols} columns",
            importance.len()
        )));
    }
    // A feature never seen active still counts a little, so its weights are not left to chance.
    let mean = importance.iter().map(|&v| f64::from(v)).sum::<f64>() / cols.max(1) as f64;
    let floor = (1e-3 * mean).max(f64::from(f32::MIN_POSITIVE)) as f32;
    let weight: Vec<f32> = importance.iter().map(|&v| v.max(0.0) + floor).collect();
    let w: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let mut q = Vec::with_capacity(w.len() / 2);
    let mut scales = Vec::with_capacity(2 * w.len() / group);
    let (mut levels, mut trial) = (vec![0i8; group], vec![0i8; group]);
    for row in w.chunks_exact(cols) {
        for (g, x) in row.chunks_exact(group).enumerate() {
            let d = weighted_group(x, &weight[g * group..][..group], &mut levels, &mut trial);
            scales.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
            let u = |l: i8| (l + 8) as u8;
            for b in levels.chunks_exact(BLOCK) {
                q.extend((0..BLOCK / 2).map(|i| u(b[i]) | u(b[i + BLOCK / 2]) << 4));
            }
        }
    }
    Ok((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded values in `-1..1`, with a few outliers.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                if i % 29 == 0 {
                    4.0 * v
                } else {
                    v
                }
            })
            .collect()
    }

    fn weighted_error(x: &[f32], w: &[f32], d: f32, levels: &[i8]) -> f64 {
        x.iter()
            .zip(w)
            .zip(levels)
            .map(|((&v, &w), &l)| f64::from(w) * (f64::from(v) - f64::from(d * l as f32)).powi(2))
            .sum()
    }

    /// Candle's `Q4_0` rounding of one group (`quantize_int4`'s rule).
    fn nearest(x: &[f32]) -> (f32, Vec<i8>) {
        let m = x
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = m / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let l = x
            .iter()
            .map(|&v| ((v * id + 8.5) as u8).min(15) as i8 - 8)
            .collect();
        (d, l)
    }

    /// The chosen scale and values never do worse than candle's rounding under the same
    /// weights, values stay in `-8..=7`, and weighting a feature heavily shrinks its error.
    #[test]
    fn weighted_groups_beat_nearest_rounding() {
        let (mut levels, mut trial) = (vec![0i8; 32], vec![0i8; 32]);
        let (mut better, mut total) = (0, (0f64, 0f64));
        for seed in 1..200u64 {
            let x = values(32, seed);
            let w: Vec<f32> = values(32, seed * 7919)
                .iter()
                .map(|v| v * v + 0.01)
                .collect();
            let d = weighted_group(&x, &w, &mut levels, &mut trial);
            assert!(levels.iter().all(|l| (-8..=7).contains(l)));
            let (dn, ln) = nearest(&x);
            let (ours, theirs) = (
                weighted_error(&x, &w, d, &levels),
                weighted_error(&x, &w, dn, &ln),
            );
            assert!(
                ours <= theirs * (1.0 + 1e-9),
                "seed {seed}: {ours} > {theirs}"
            );
            better += usize::from(ours < 0.99 * theirs);
            total = (total.0 + ours, total.1 + theirs);
        }
        assert!(
            better > 50 && total.0 < 0.9 * total.1,
            "{better} of 199 groups improved by 1%; weighted error {} vs {}",
            total.0,
            total.1
        );
        // One feature weighted a thousand times the others is rounded almost exactly.
        let x = values(32, 5);
        let mut w = vec![1f32; 32];
        w[3] = 1000.0;
        let d = weighted_group(&x, &w, &mut levels, &mut trial);
        let (dn, ln) = nearest(&x);
        let err = |d: f32, l: &[i8]| (x[3] - d * l[3] as f32).abs();
        assert!(
            err(d, &levels) <= err(dn, &ln),
            "{} vs {}",
            err(d, &levels),
            err(dn, &ln)
        );
        // A zero group stays zero.
        assert_eq!(weighted_group(&[0.0; 32], &w, &mut levels, &mut trial), 0.0);
        assert!(levels.iter().all(|&l| l == 0));
    }

    /// Which weights are smoothed through which LayerNorm, and the factors' formula and limits.
    #[test]
    fn smoothing_pairs_and_factors() {
        assert_eq!(
            feeding_norm("vision_model.encoder.layers.3.self_attn.qkv.weight").as_deref(),
            Some("vision_model.encoder.layers.3.layer_norm1")
        );
        assert_eq!(
            feeding_norm("vision_model.encoder.layers.11.mlp.fc1.weight").as_deref(),
            Some("vision_model.encoder.layers.11.layer_norm2")
        );
        for other in [
            "vision_model.encoder.layers.3.mlp.fc2.weight",
            "vision_model.encoder.layers.3.self_attn.projection.weight",
            "vision_model.encoder.layers.x.mlp.fc1.weight",
            "text_decoder.bert.encoder.layer.0.intermediate.dense.weight",
        ] {
            assert_eq!(feeding_norm(other), None, "{other}");
        }
        // max|x|^0.75 / max|w|^0.25 to the nearest power of two; 1 where either is zero or not
        // finite; clamped.
        let s = smoothing_factors(
            &[16.0, 0.0, 1.0, 1.0, f32::INFINITY, 1e30, 5.0, 1.0],
            &[1.0, 1.0, 0.0, 16.0, 1.0, 1e-30, 1.0, 1e6],
        );
        // 5^0.75 = 3.34 → 4; 1e6^-0.25 = 0.0316 → 1/32.
        assert_eq!(s, [8.0, 1.0, 1.0, 0.5, 1.0, 8192.0, 4.0, 1.0 / 32.0]);
    }

    /// The weighted quantizer writes `quantize_int4`'s layout: every byte decodes (by the
    /// `Q4_0` nibble order and f16 scales) to the values the group search chose, for groups of
    /// 32 and 128; a wrong statistics length is refused.
    #[test]
    fn weighted_layout_is_the_int4_layout() {
        let (rows, cols) = (3, 256);
        let x = values(rows * cols, 11);
        let imp: Vec<f32> = values(cols, 13).iter().map(|v| v * v).collect();
        let t = Tensor::from_vec(x.clone(), (rows, cols), &candle_core::Device::Cpu).unwrap();
        for group in [32, 128] {
            let (q, scales) = quantize_int4_weighted(&t, group, &imp).unwrap();
            assert_eq!(q.len(), rows * cols / 2);
            assert_eq!(scales.len(), 2 * rows * cols / group);
            let (mut levels, mut trial) = (vec![0i8; group], vec![0i8; group]);
            let mean = imp.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
            let w: Vec<f32> = imp.iter().map(|&v| v + (1e-3 * mean) as f32).collect();
            for (g, chunk) in x.chunks_exact(group).enumerate() {
                let col = g * group % cols;
                let d = weighted_group(chunk, &w[col..][..group], &mut levels, &mut trial);
                let stored = half::f16::from_le_bytes([scales[2 * g], scales[2 * g + 1]]);
                assert_eq!(stored, half::f16::from_f32(d));
                for (b, block) in levels.chunks_exact(BLOCK).enumerate() {
                    let bytes = &q[(g * group + b * BLOCK) / 2..][..BLOCK / 2];
                    for i in 0..BLOCK / 2 {
                        assert_eq!(bytes[i] & 15, (block[i] + 8) as u8);
                        assert_eq!(bytes[i] >> 4, (block[i + BLOCK / 2] + 8) as u8);
                    }
                }
            }
        }
        assert!(quantize_int4_weighted(&t, 32, &imp[..10]).is_err());
        assert!(quantize_int4_weighted(&t, 96, &imp).is_err());
    }
}
