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
use candle_core::{DType, Device};
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
    quantize::quantize_dir(&tiny_dir(), &dir, scheme, &mut |_, _, _| {}).unwrap();
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
    for image in image_names() {
        let c = cosine(
            &first_logits(&fp32_model, &image),
            &first_logits(&model, &image),
        );
        assert!(c >= 0.99, "{image}: int8-channel logits cosine {c}");
        let pixels = expected_tensor(&image, "pixel_values")
            .unsqueeze(0)
            .unwrap();
        let c = cosine(
            &fp32_model.encode_image(&pixels).unwrap(),
            &model.encode_image(&pixels).unwrap(),
        );
        assert!(c >= 0.999, "{image}: int8-channel vision cosine {c}");
    }
}

fn load_err(dir: &std::path::Path) -> String {
    match Captioner::load_dir(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
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
        err.contains("q3") && err.contains("q8_0, int8-channel, f16 or bf16"),
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
