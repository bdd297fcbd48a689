//! `blipq quantize --scheme`: the half-precision schemes (f16, bf16) and per-channel INT8
//! (`int8-channel`) next to the default q8_0. Half-precision files hold every weight rounded to
//! the half type (the loader upcasts them exactly); per-channel files hold int8 weights with one
//! f32 scale per output channel, which load back exactly; each has the scheme and the source's
//! SHA-256 in the metadata, and captions. The default scheme is unchanged; an unknown scheme is
//! refused by name, and so are per-channel files with the wrong scales or an unknown scheme.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blipq::checkpoint::{Checkpoint, Matrix};
use blipq::fsio::OutputDir;
use blipq::quantize::{self, Scheme};
use blipq::Captioner;
use candle_core::{DType, Device, Tensor};
use common::*;

fn made(scheme: Scheme) -> std::path::PathBuf {
    // Tests run in parallel: each made checkpoint gets its own directory.
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let out = std::env::temp_dir().join(format!(
        "blipq-scheme-{}-{}-{}",
        scheme.as_str(),
        std::process::id(),
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&out);
    let dir = OutputDir::create(&out, &[&tiny_dir()], false).unwrap();
    quantize::quantize_dir(&tiny_dir(), &dir, scheme, None, &mut |_, _, _| {}).unwrap();
    dir.commit().unwrap()
}

#[test]
fn half_schemes_round_every_weight_and_caption() {
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let src = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    for (scheme, dtype, want) in [
        (Scheme::F16, DType::F16, "F16"),
        (Scheme::Bf16, DType::BF16, "BF16"),
    ] {
        let dir = made(scheme);
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = meta.metadata().as_ref().unwrap();
        assert_eq!(m[quantize::SCHEME_KEY], scheme.as_str());
        assert_eq!(m["source"], quantize::sha256_hex(&src));
        assert_eq!(m["format"], "pt");
        let half = Checkpoint::open(&dir.join("model.safetensors")).unwrap();
        assert_eq!(half.names(), fp32.names(), "{want}: the same tensors");
        for name in fp32.names() {
            let (d, shape) = half.info(&name).unwrap();
            assert_eq!(format!("{d:?}").to_uppercase(), want, "{name}");
            let a = fp32.load_f32(&name, &shape, &Device::Cpu).unwrap();
            let rounded = a.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let b = half.load_f32(&name, &shape, &Device::Cpu).unwrap();
            assert_eq!(
                max_abs_diff(&rounded, &b),
                0.0,
                "{want} {name}: exact round trip"
            );
        }
        // Half the size (within the header), and it captions.
        let full = std::fs::metadata(tiny_dir().join("model.safetensors"))
            .unwrap()
            .len();
        assert!(
            (bytes.len() as f64) < 0.55 * full as f64,
            "{want}: {} of {full}",
            bytes.len()
        );
        let model = Captioner::load_dir(&dir).unwrap();
        assert!(!model.info().is_quantized);
        let out = model
            .caption(
                &image_bytes("coffee.jpg"),
                "coffee.jpg",
                &Default::default(),
                &mut |_| {},
            )
            .unwrap();
        assert!(out.new_tokens > 0);
    }
}

/// Rewrites the `__metadata__` of `dir/model.safetensors` through `edit`.
fn edit_metadata(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, String>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap_or_default();
    edit(&mut meta);
    safetensors::serialize_to_file(st.tensors(), Some(meta), &path).unwrap();
}

#[test]
fn int8_channel_loads_back_exactly_and_stays_close_to_fp32() {
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let src = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let dir = made(Scheme::Int8Channel);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = meta.metadata().as_ref().unwrap();
    assert_eq!(m[quantize::SCHEME_KEY], "int8-channel");
    assert_eq!(m["format"], quantize::FORMAT);
    assert_eq!(m["source"], quantize::sha256_hex(&src));
    assert!(!m.contains_key("block_size"), "no blocks: {m:?}");
    let ckpt = Checkpoint::open(&dir.join("model.safetensors")).unwrap();
    let mut checked = 0;
    for name in fp32.names() {
        let (_, shape) = fp32.info(&name).unwrap();
        if !quantize::is_quantizable(&name, &shape) {
            continue;
        }
        let (dtype, scale_shape) = ckpt.info(&format!("{name}_scale")).unwrap();
        assert_eq!(format!("{dtype:?}").to_uppercase(), "F32", "{name}_scale");
        assert_eq!(scale_shape, [shape[0], 1], "{name}_scale");
        let w = fp32.load_f32(&name, &shape, &Device::Cpu).unwrap();
        let (want_q, want_d) = quantize::quantize_channels(&w).unwrap();
        let Matrix::Q8(got) = ckpt
            .load_matrix(&name, shape[0], shape[1], &Device::Cpu)
            .unwrap()
        else {
            panic!("{name} did not load as int8");
        };
        assert!(got.is_channel(), "{name}");
        let (q, d) = got.to_int8_channel().unwrap();
        let q: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        assert_eq!(
            (q, d),
            (want_q, want_d),
            "{name}: quantize -> load is exact"
        );
        checked += 1;
    }
    assert!(checked >= 20);
    // Within 8 bits of FP32: the first logits and the vision embeddings.
    let fp32_model = Captioner::load_dir(&tiny_dir()).unwrap();
    let model = Captioner::load_dir(&dir).unwrap();
    assert!(model.info().is_quantized);
    assert_close_to_fp32(&fp32_model, &model, (0.99, 0.999), "int8-channel");
}

fn load_err(dir: &std::path::Path) -> String {
    match Captioner::load_dir(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// `q4_0` and `q4_g128`: every linear weight 4-bit (U8 nibbles in candle's `Q4_0` order, F16
/// scales per group), the word embeddings `Q8_0`; loading gives back exactly what the quantizer
/// wrote (for `q4_0`, candle's own `Q4_0` blocks); parameters are counted per weight, not per
/// byte; the model stays close to FP32 and captions.
/// That a loaded 4-bit matrix holds exactly `want`'s nibbles and f16 group scales (as the
/// quantizer wrote them; in memory one scale per block of 32, each group's repeated); returns
/// the nibbles.
fn assert_int4_holds(
    got: &blipq::kernels::q8::Q8Matrix,
    (want_q, want_d): (&[u8], &[u8]),
    group: usize,
    name: &str,
) -> Vec<u8> {
    let (q, d) = got.to_int4().unwrap();
    assert_eq!(q, want_q, "{name}: nibbles");
    let want_d: Vec<f32> = want_d
        .chunks_exact(2)
        .flat_map(|h| {
            std::iter::repeat_n(half::f16::from_le_bytes([h[0], h[1]]).to_f32(), group / 32)
        })
        .collect();
    assert_eq!(d, want_d, "{name}: scales");
    q
}

#[test]
fn four_bit_schemes_load_back_exactly_and_stay_close_to_fp32() {
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let fp32_model = Captioner::load_dir(&tiny_dir()).unwrap();
    for (scheme, group) in [(Scheme::Q4_0, 32), (Scheme::Q4G128, 128)] {
        let dir = made(scheme);
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = meta.metadata().as_ref().unwrap();
        assert_eq!(m[quantize::SCHEME_KEY], scheme.as_str());
        let ckpt = Checkpoint::open(&dir.join("model.safetensors")).unwrap();
        let (mut four, mut eight, mut grouped) = (0, 0, 0);
        for name in fp32.names() {
            let (_, shape) = fp32.info(&name).unwrap();
            if !quantize::is_quantizable(&name, &shape) {
                continue;
            }
            let (dtype, stored) = ckpt.info(&name).unwrap();
            let w = fp32.load_f32(&name, &shape, &Device::Cpu).unwrap();
            let Matrix::Q8(got) = ckpt
                .load_matrix(&name, shape[0], shape[1], &Device::Cpu)
                .unwrap()
            else {
                panic!("{name} did not load as a quantized matrix");
            };
            if name.contains("word_embeddings") {
                assert_eq!(format!("{dtype:?}"), "I8", "{name}: embeddings stay Q8_0");
                assert!(!got.is_int4());
                eight += 1;
                continue;
            }
            assert_eq!(format!("{dtype:?}"), "U8", "{name}");
            assert_eq!(stored, [shape[0], shape[1] / 2], "{name}");
            let g = if shape[1] % group == 0 { group } else { 32 };
            grouped += usize::from(g == 128);
            let (_, scale_shape) = ckpt.info(&format!("{name}_scale")).unwrap();
            assert_eq!(scale_shape, [shape[0], shape[1] / g], "{name}_scale");
            let (want_q, want_d) = quantize::quantize_int4(&w, g).unwrap();
            let q = assert_int4_holds(&got, (&want_q, &want_d), g, &name);
            if g == 32 {
                // candle's own Q4_0 of the same weights: the same bytes.
                let c = candle_core::quantized::QTensor::quantize(
                    &w,
                    candle_core::quantized::GgmlDType::Q4_0,
                )
                .unwrap();
                let data = c.data().unwrap();
                let nibbles: Vec<u8> = data
                    .chunks_exact(18)
                    .flat_map(|b| b[2..].to_vec())
                    .collect();
                assert_eq!(q, nibbles, "{name}: candle's Q4_0");
            }
            four += 1;
        }
        assert!(four >= 20 && eight >= 1, "{four} 4-bit, {eight} Q8_0");
        if scheme == Scheme::Q4G128 {
            assert!(grouped > 0, "some weights in groups of 128");
        }
        let model = Captioner::load_dir(&dir).unwrap();
        assert!(model.info().is_quantized);
        // Two 4-bit weights per stored byte: the parameter count is FP32's.
        assert_eq!(
            model.info().total_parameters,
            fp32_model.info().total_parameters,
            "{scheme:?}"
        );
        assert_close_to_fp32(&fp32_model, &model, (0.95, 0.99), &format!("{scheme:?}"));
    }
}

#[test]
fn bad_four_bit_files_are_refused_by_name() {
    let name = "text_decoder.bert.encoder.layer.0.intermediate.dense.weight";
    // 4-bit data in a file that does not say it is 4-bit.
    let dir = copy_dir(&made(Scheme::Q4_0), "q4-unmarked");
    edit_metadata(&dir, |m| {
        m.remove(quantize::SCHEME_KEY);
        m.insert("block_size".into(), "32".into());
    });
    let err = load_err(&dir);
    assert!(err.contains("_scale") && err.contains("q4_0"), "{err}");
    // Scales whose group is not whole blocks of 32.
    let dir = copy_dir(&made(Scheme::Q4_0), "q4-bad-group");
    rewrite_weights(
        &dir,
        |n, mut raw| {
            if n == format!("{name}_scale") {
                // [rows, cols / 32] -> [rows, cols / 16]: groups of 16.
                raw.shape[1] *= 2;
                raw.data = [raw.data.clone(), raw.data].concat();
            }
            Some(raw)
        },
        vec![],
    );
    let err = load_err(&dir);
    assert!(
        err.contains(&format!("{name}_scale")) && err.contains("multiple"),
        "{err}"
    );
    // A 4-bit weight of the wrong shape.
    let dir = copy_dir(&made(Scheme::Q4_0), "q4-bad-shape");
    rewrite_weights(
        &dir,
        |n, mut raw| {
            if n == name {
                raw.shape[1] *= 2;
                raw.data = [raw.data.clone(), raw.data].concat();
            }
            Some(raw)
        },
        vec![],
    );
    let err = load_err(&dir);
    assert!(err.contains(name), "{err}");
}

#[test]
fn bad_int8_channel_files_are_refused_by_name() {
    let name = "text_decoder.bert.encoder.layer.0.intermediate.dense.weight";
    // Scales of the Q8_0 kind (F16) in a file that says int8-channel.
    let dir = copy_dir(&made(Scheme::Int8Channel), "channel-f16-scales");
    rewrite_weights(
        &dir,
        |n, mut raw| {
            if n == format!("{name}_scale") {
                raw.dtype = safetensors::Dtype::F16;
                raw.data = raw.data[..raw.data.len() / 2].to_vec();
            }
            Some(raw)
        },
        vec![],
    );
    let err = load_err(&dir);
    assert!(
        err.contains(&format!("{name}_scale")) && err.contains("F32"),
        "{err}"
    );
    // A NaN scale.
    let dir = copy_dir(&made(Scheme::Int8Channel), "channel-nan-scale");
    rewrite_weights(
        &dir,
        |n, mut raw| {
            if n == format!("{name}_scale") {
                raw.data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            Some(raw)
        },
        vec![],
    );
    let err = load_err(&dir);
    assert!(
        err.contains(&format!("{name}_scale")) && err.contains("NaN"),
        "{err}"
    );
    // An unknown scheme.
    let dir = copy_dir(&made(Scheme::Int8Channel), "channel-unknown");
    edit_metadata(&dir, |m| {
        m.insert(quantize::SCHEME_KEY.into(), "int4-magic".into());
    });
    let err = load_err(&dir);
    assert!(
        err.contains("int4-magic") && err.contains("int8-channel"),
        "{err}"
    );
    // Per-channel data without the scheme: read as Q8_0, whose scales must be F16.
    let dir = copy_dir(&made(Scheme::Int8Channel), "channel-unmarked");
    edit_metadata(&dir, |m| {
        m.remove(quantize::SCHEME_KEY);
        m.insert("block_size".into(), "32".into());
    });
    let err = load_err(&dir);
    assert!(err.contains("_scale") && err.contains("F16"), "{err}");
}

#[test]
fn the_cli_takes_a_scheme_and_refuses_an_unknown_one() {
    let bin = env!("CARGO_BIN_EXE_blipq");
    let out = std::env::temp_dir().join(format!("blipq-scheme-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = |scheme: &str| {
        std::process::Command::new(bin)
            .args(["quantize", "--no-validate", "--scheme", scheme, "--model"])
            .arg(tiny_dir())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let bad = run("q3");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("q3") && err.contains("q8_0, int8-channel, q4_0, q4_g128, mixed, f16 or bf16"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    let ok = run("bf16");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("quantized_results.json")).unwrap())
            .unwrap();
    assert_eq!(report["model_metrics"]["scheme"], "bf16");
    let _ = std::fs::remove_dir_all(&out);
}

/// F16 / BF16 files caption exactly as transformers does with the same half-precision weights
/// upcast to f32 (`tools/make_half_fixtures.py` → `tests/fixtures/half/expected.json`), greedy
/// and with 3 beams, from the fixtures' recorded pixel values.
#[test]
fn half_schemes_match_transformers_on_the_same_weights_upcast() {
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("half").join("expected.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (scheme, key) in [(Scheme::F16, "f16"), (Scheme::Bf16, "bf16")] {
        let model = Captioner::load_dir(&made(scheme)).unwrap();
        for (image, cases) in fixture["dtypes"][key].as_object().unwrap() {
            let pixels = expected_tensor(image, "pixel_values").unsqueeze(0).unwrap();
            let embeds = model.encode_image(&pixels).unwrap();
            for (case, want) in cases.as_object().unwrap() {
                let opts = case_options(want);
                let (got, _) = model.generate_ids(&embeds, &opts, &mut |_| {}).unwrap();
                assert_eq!(got, ids(&want["ids"]), "{key} {image} {case}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * 2 * 5, "only {checked} cases");
}

/// Makes the mixed checkpoint of the tiny model with `opts`, sweeping on three fixture images.
fn made_mixed(
    opts: quantize::mixed::MixedOptions,
) -> blipq::Result<(std::path::PathBuf, quantize::mixed::MixedPlan)> {
    made_mixed_with(opts, false)
}

/// [`made_mixed`], calibrated on the same images when `calibrate`.
fn made_mixed_with(
    opts: quantize::mixed::MixedOptions,
    calibrate: bool,
) -> blipq::Result<(std::path::PathBuf, quantize::mixed::MixedPlan)> {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let out = std::env::temp_dir().join(format!(
        "blipq-scheme-mixed-{}-{}",
        std::process::id(),
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&out);
    let images: Vec<(String, Vec<u8>)> = image_names()
        .into_iter()
        .take(3)
        .map(|n| (n.clone(), image_bytes(&n)))
        .collect();
    let dir = OutputDir::create(&out, &[&tiny_dir()], false).unwrap();
    let importance = match calibrate {
        true => {
            let files = blipq::ModelFiles::from_dir(&tiny_dir())?;
            Some(quantize::calibrate::activation_importance(
                &files,
                &images,
                &mut |_, _| {},
            )?)
        }
        false => None,
    };
    let (_, plan) = quantize::quantize_dir_mixed(
        &tiny_dir(),
        &dir,
        &images,
        opts,
        importance.as_ref(),
        &mut |_, _, _| {},
    )?;
    Ok((dir.commit().unwrap(), plan))
}

/// `mixed`: the sweep ranks every layer group, the plan raises the most sensitive ones to
/// `Q8_0` within the size budget, the file stores each group as the plan (in its metadata)
/// says, stays within the budget, and captions; a quality floor stops the raising early.
#[test]
fn mixed_plan_follows_the_sweep_within_the_budget() {
    let budget = 0.327;
    let (dir, plan) = made_mixed(quantize::mixed::MixedOptions {
        size_budget: Some(budget),
        quality_floor: None,
    })
    .unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let source = std::fs::metadata(tiny_dir().join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        bytes.len() as f64 <= budget * source as f64,
        "{} of {source}",
        bytes.len()
    );
    assert!((plan.size_fraction - bytes.len() as f64 / source as f64).abs() < 1e-9);
    // Most sensitive first; some groups raised, some not.
    let cos: Vec<f64> = plan.groups.iter().map(|g| g.logits_cosine).collect();
    assert!(cos.windows(2).all(|w| w[0] <= w[1]), "{cos:?}");
    assert!(plan
        .groups
        .iter()
        .all(|g| g.logits_cosine > 0.9 && g.vision_cosine > 0.9));
    let high = plan
        .groups
        .iter()
        .filter(|g| g.precision == plan.high)
        .count();
    assert!(
        high > 0 && high < plan.groups.len(),
        "{high} of {} raised",
        plan.groups.len()
    );
    // The metadata's plan is the report's, and every weight is stored as it says.
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = meta.metadata().as_ref().unwrap();
    assert_eq!(m[quantize::SCHEME_KEY], "mixed");
    let stored: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&m["blipq_plan"]).unwrap();
    assert_eq!(stored.len(), plan.groups.len());
    let ckpt = Checkpoint::open(&dir.join("model.safetensors")).unwrap();
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    for name in fp32.names() {
        let (_, shape) = fp32.info(&name).unwrap();
        if !quantize::is_quantizable(&name, &shape) {
            continue;
        }
        let (dtype, _) = ckpt.info(&name).unwrap();
        let want = if name.contains("word_embeddings") {
            "I8"
        } else {
            match stored[&quantize::mixed::group_of(&name)].as_str() {
                "q8_0" => "I8",
                "q4_0" => "U8",
                other => panic!("{name}: {other}"),
            }
        };
        assert_eq!(format!("{dtype:?}"), want, "{name}");
    }
    let model = Captioner::load_dir(&dir).unwrap();
    assert!(model.info().is_quantized);
    let fp32_model = Captioner::load_dir(&tiny_dir()).unwrap();
    assert_close_to_fp32(&fp32_model, &model, (0.95, 0.99), "mixed");
    // With a floor, every step is measured on a trial model (the FP32 model's matrices with the
    // quantized ones swapped in); the last step's plan is the final file's, measured after
    // loading the file whole: the two give the same figures to the last bit, and so do
    // calibrated plans.
    for importance in [false, true] {
        let (dir, plan) = made_mixed_with(
            quantize::mixed::MixedOptions {
                size_budget: Some(0.4),
                quality_floor: Some(1.0),
            },
            importance,
        )
        .unwrap();
        let last = plan.steps.last().unwrap();
        assert!(plan.steps.len() > 2, "{:?}", plan.steps);
        assert_eq!(last.token_agreement, Some(plan.token_agreement));
        assert_eq!(last.logits_cosine, Some(plan.logits_cosine));
        std::fs::remove_dir_all(dir).unwrap();
    }
    // A floor already met by the all-4-bit start raises nothing.
    let (_, plan) = made_mixed(quantize::mixed::MixedOptions {
        size_budget: Some(1.0),
        quality_floor: Some(0.0),
    })
    .unwrap();
    assert_eq!(plan.steps.len(), 1);
    assert!(plan.groups.iter().all(|g| g.precision == plan.low));
    // Bounds out of range are refused by name.
    for (budget, floor, word) in [
        (Some(0.0), None, "budget"),
        (None, Some(1.5), "floor"),
        // Below the all-4-bit file (the tiny model keeps much in f32).
        (Some(0.2), None, "smallest mixed file"),
    ] {
        let err = made_mixed(quantize::mixed::MixedOptions {
            size_budget: budget,
            quality_floor: floor,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(word), "{err}");
    }
}

#[test]
fn mixed_options_need_the_mixed_scheme() {
    let out = std::env::temp_dir().join(format!("blipq-mixed-cli-{}", std::process::id()));
    let err = cli_quantize_refuses(&["--scheme", "q4_0", "--size-budget", "0.2"], &out);
    assert!(err.contains("--scheme mixed"), "{err}");
}

/// `blipq quantize ARGS --model <tiny> --out OUT` fails, writes nothing at `out`, and says why
/// (returned).
fn cli_quantize_refuses(args: &[&str], out: &std::path::Path) -> String {
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_blipq"))
        .arg("quantize")
        .args(args)
        .arg("--model")
        .arg(tiny_dir())
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(!out.exists());
    String::from_utf8_lossy(&res.stderr).into_owned()
}

/// `--calibrate`: the FP32 model records every linear layer's input features on the built-in
/// validation images (recording changes no caption), and a calibrated `q4_0` / `q4_g128` file
/// holds exactly the activation-weighted nibbles and scales of those statistics, says so in its
/// metadata and report, differs from plain rounding, loads and stays close to FP32; other
/// schemes refuse the flag and write nothing.
#[test]
fn calibrated_four_bit_files_hold_the_activation_weighted_scales() {
    use blipq::quantize::{calibrate, job};
    let files = blipq::ModelFiles::from_dir(&tiny_dir()).unwrap();
    let images = quantize::builtin_validation_images().unwrap();
    let imp = calibrate::activation_importance(&files, &images, &mut |_, _| {}).unwrap();
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let fp32_model = Captioner::load_dir(&tiny_dir()).unwrap();
    let stats = blipq::checkpoint::ActivationStats::default();
    let recording = Captioner::recording(&files, &stats).unwrap();
    let (name, bytes) = &images[0];
    let caption =
        |m: &Captioner| m.caption(bytes.as_slice(), name, &Default::default(), &mut |_| {});
    assert_eq!(
        caption(&recording).unwrap().token_ids,
        caption(&fp32_model).unwrap().token_ids
    );
    let mut linear = 0;
    for name in fp32.names() {
        let (_, shape) = fp32.info(&name).unwrap();
        if !quantize::is_quantizable(&name, &shape) || name.contains("word_embeddings") {
            continue;
        }
        let v = imp
            .get(&name)
            .unwrap_or_else(|| panic!("no statistics for {name}"));
        assert_eq!(v.mean_square.len(), shape[1], "{name}");
        assert_eq!(v.max_abs.len(), shape[1], "{name}");
        assert!(
            v.mean_square.iter().all(|x| x.is_finite() && *x >= 0.0),
            "{name}"
        );
        assert!(v.mean_square.iter().any(|x| *x > 0.0), "{name}");
        // A feature's largest magnitude is at least its root mean square.
        for (j, (ms, max)) in v.mean_square.iter().zip(&v.max_abs).enumerate() {
            assert!(
                *max >= ms.sqrt() * (1.0 - 1e-5),
                "{name} feature {j}: {max} < √{ms}"
            );
        }
        linear += 1;
    }
    assert!(linear >= 20, "{linear} layers");
    for (scheme, group) in [(Scheme::Q4_0, 32), (Scheme::Q4G128, 128)] {
        let out = std::env::temp_dir().join(format!(
            "blipq-calibrated-{}-{}",
            scheme.as_str(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&out);
        let done = job::run(
            job::Request {
                model: tiny_dir(),
                out: out.clone(),
                scheme,
                calibrate: true,
                ..Default::default()
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(
            done.report["quantization_info"]["calibration"]["images"],
            images.len()
        );
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = meta.metadata().as_ref().unwrap();
        assert_eq!(m[quantize::CALIBRATION_KEY], quantize::CALIBRATION_METHOD);
        let plain = std::fs::read(made(scheme).join("model.safetensors")).unwrap();
        assert_ne!(bytes, plain, "{scheme:?}: calibration changed nothing");
        let ckpt = Checkpoint::open(&out.join("model.safetensors")).unwrap();
        for name in imp.keys() {
            let (_, shape) = fp32.info(name).unwrap();
            let g = if shape[1] % group == 0 { group } else { 32 };
            let w = fp32.load_f32(name, &shape, &Device::Cpu).unwrap();
            let (want_q, want_d) =
                calibrate::quantize_int4_weighted(&w, g, &imp[name].mean_square).unwrap();
            let Matrix::Q8(got) = ckpt
                .load_matrix(name, shape[0], shape[1], &Device::Cpu)
                .unwrap()
            else {
                panic!("{name} did not load as a quantized matrix");
            };
            assert_int4_holds(&got, (&want_q, &want_d), g, name);
        }
        let model = Captioner::load_dir(&out).unwrap();
        assert_close_to_fp32(&fp32_model, &model, (0.95, 0.99), &format!("{scheme:?}"));
        std::fs::remove_dir_all(&out).unwrap();
    }
    // Schemes calibration does nothing for refuse the flag, in the CLI too, and write nothing.
    let out = std::env::temp_dir().join(format!("blipq-calibrated-q8-{}", std::process::id()));
    let err = job::run(
        job::Request {
            model: tiny_dir(),
            out: out.clone(),
            scheme: Scheme::Q8_0,
            calibrate: true,
            ..Default::default()
        },
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("it does nothing for q8_0"), "{err}");
    let err = cli_quantize_refuses(&["--scheme", "f16", "--calibrate"], &out);
    assert!(
        err.contains("--calibrate") && err.contains("it does nothing for f16"),
        "{err}"
    );
}

/// `--calibrate` with `int8-channel`: SmoothQuant-style smoothing. Each vision layer's
/// `layer_norm1` / `layer_norm2` weight and bias are divided by the factors of the FP32
/// activations' and the weight's largest magnitudes, the `qkv` / `fc1` weight's columns
/// multiplied by them before quantizing (exactly these values in the file); nothing else
/// changes; the metadata and report say so, and the model stays as close to FP32 as plain
/// per-channel.
#[test]
fn calibrated_int8_channel_files_are_smoothed() {
    use blipq::quantize::{calibrate, job};
    let files = blipq::ModelFiles::from_dir(&tiny_dir()).unwrap();
    let images = quantize::builtin_validation_images().unwrap();
    let imp = calibrate::activation_importance(&files, &images, &mut |_, _| {}).unwrap();
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let out = std::env::temp_dir().join(format!("blipq-smoothed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let done = job::run(
        job::Request {
            model: tiny_dir(),
            out: out.clone(),
            scheme: Scheme::Int8Channel,
            calibrate: true,
            ..Default::default()
        },
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap();
    let info = &done.report["quantization_info"]["calibration"];
    assert_eq!(info["method"], quantize::SMOOTHING_METHOD);
    assert_eq!(info["images"], images.len());
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata().as_ref().unwrap()[quantize::CALIBRATION_KEY],
        quantize::SMOOTHING_METHOD
    );
    let ckpt = Checkpoint::open(&out.join("model.safetensors")).unwrap();
    let load = |c: &Checkpoint, name: &str| {
        let (_, shape) = c.lookup(name).unwrap();
        c.load_f32(name, &shape, &Device::Cpu).unwrap()
    };
    let vec1 = |t: Tensor| t.to_vec1::<f32>().unwrap();
    let (mut pairs, mut moved) = (0, 0);
    let mut smoothed_norms = std::collections::BTreeSet::new();
    for name in fp32.names() {
        let Some(prefix) = name.strip_prefix("vision_model.encoder.layers.") else {
            continue;
        };
        let (layer, rest) = prefix.split_once('.').unwrap();
        let norm = match rest {
            "self_attn.qkv.weight" => "layer_norm1",
            "mlp.fc1.weight" => "layer_norm2",
            _ => continue,
        };
        let w = load(&fp32, &name);
        let max_w = vec1(w.abs().unwrap().max(0).unwrap());
        let s = calibrate::smoothing_factors(&imp[&name].max_abs, &max_w);
        moved += s.iter().filter(|s| (**s - 1.0).abs() > 0.1).count();
        for part in ["weight", "bias"] {
            let n = format!("vision_model.encoder.layers.{layer}.{norm}.{part}");
            let want: Vec<f32> = vec1(load(&fp32, &n))
                .iter()
                .zip(&s)
                .map(|(v, s)| v * (1.0 / s))
                .collect();
            assert_eq!(vec1(load(&ckpt, &n)), want, "{n}");
            smoothed_norms.insert(n);
        }
        let (rows, cols) = w.dims2().unwrap();
        let (want_q, want_d) =
            quantize::quantize_channels(&calibrate::scale_last_dim(&w, &s).unwrap()).unwrap();
        let Matrix::Q8(got) = ckpt.load_matrix(&name, rows, cols, &Device::Cpu).unwrap() else {
            panic!("{name} did not load as a quantized matrix");
        };
        let (got_q, got_d) = got.to_int8_channel().unwrap();
        assert_eq!(got_d, want_d, "{name} scales");
        assert!(
            got_q.iter().zip(&want_q).all(|(g, w)| *g as u8 == *w),
            "{name} values"
        );
        pairs += 1;
    }
    assert!(pairs >= 2, "{pairs} smoothed pairs");
    assert!(moved > 0, "every smoothing factor is about 1");
    // Every other f32 tensor is the FP32 file's.
    let values = |c: &Checkpoint, name: &str| vec1(load(c, name).flatten_all().unwrap());
    for name in ckpt.names() {
        let (dtype, _) = ckpt.lookup(&name).unwrap();
        let kept = !dtype.is_quantized() && !name.ends_with("_scale");
        if kept && !smoothed_norms.contains(&name) {
            assert_eq!(values(&ckpt, &name), values(&fp32, &name), "{name}");
        }
    }
    let fp32_model = Captioner::load_dir(&tiny_dir()).unwrap();
    let model = Captioner::load_dir(&out).unwrap();
    assert_close_to_fp32(&fp32_model, &model, (0.99, 0.999), "smoothed int8-channel");
    std::fs::remove_dir_all(&out).unwrap();
    // Statistics without a smoothable pair (here: none of the vision qkv / fc1 weights) are
    // refused rather than written as a "smoothed" file that is the plain one.
    let others: quantize::Importance = imp
        .into_iter()
        .filter(|(name, _)| !name.starts_with("vision_model."))
        .collect();
    assert!(!others.is_empty());
    let err = quantize::quantize_checkpoint(
        &fp32,
        blipq::checkpoint::int8::Layout::Channel,
        "",
        Some(&others),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("there is nothing to smooth"), "{err}");
}
