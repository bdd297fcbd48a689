//! `blipq quantize --scheme`: the half-precision schemes (f16, bf16) next to the default q8_0.
//! Their files hold every weight rounded to the half type (the loader upcasts them exactly), the
//! scheme and the source's SHA-256 in the metadata, and they caption; the default scheme is
//! unchanged; an unknown scheme is refused by name.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blipq::checkpoint::Checkpoint;
use blipq::fsio::OutputDir;
use blipq::quantize::{self, Scheme};
use blipq::Captioner;
use candle_core::{DType, Device};
use common::*;

fn made(scheme: Scheme) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!(
        "blipq-scheme-{}-{}",
        scheme.as_str(),
        std::process::id()
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
        err.contains("q3") && err.contains("q8_0, f16 or bf16"),
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
