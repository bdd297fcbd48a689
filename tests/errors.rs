//! Every kind of bad input gives an error naming the file, tensor or image and the problem; the
//! CLI exits non-zero; nothing panics.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;
use std::process::Command;

use blipq::{CaptionOptions, Captioner};
use common::*;

fn load_err(dir: &Path) -> String {
    match Captioner::load_dir(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} does not mention {p:?}");
    }
}

#[test]
fn missing_files_are_named() {
    for (file, expect) in [
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("model.safetensors", "model.safetensors"),
        ("processor_config.json", "preprocessor_config.json"),
    ] {
        let dir = copy_dir(&tiny_dir(), &format!("missing-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        assert_mentions(&load_err(&dir), &[expect]);
    }
    assert_mentions(
        &load_err(Path::new("/nonexistent/model")),
        &["/nonexistent/model"],
    );
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let dir = copy_dir(&tiny_dir(), "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_mentions(&load_err(&dir), &["model.safetensors", "truncated"]);

    std::fs::write(&path, &bytes[..4]).unwrap();
    assert_mentions(&load_err(&dir), &["model.safetensors", "too short"]);

    let mut garbage = bytes.clone();
    garbage[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&path, &garbage).unwrap();
    assert_mentions(&load_err(&dir), &["model.safetensors", "not valid JSON"]);

    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    assert_mentions(&load_err(&dir), &["model.safetensors"]);
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_dir(&tiny_dir(), "missing-tensor");
    let victim = "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight";
    rewrite_weights(&dir, |n, raw| (n != victim).then_some(raw), vec![]);
    assert_mentions(&load_err(&dir), &[victim, "missing"]);
}

#[test]
fn shape_disagreeing_with_config_is_named() {
    let dir = copy_dir(&tiny_dir(), "bad-shape");
    edit_json(&dir, "config.json", |cfg| {
        cfg["vision_config"]["intermediate_size"] = 96.into()
    });
    assert_mentions(
        &load_err(&dir),
        &["fc1.weight", "shape", "[128, 64]", "[96, 64]"],
    );
}

#[test]
fn unknown_dtype_is_named() {
    let dir = copy_dir(&tiny_dir(), "bad-dtype");
    let victim = "vision_model.post_layernorm.weight";
    rewrite_weights(
        &dir,
        |n, mut raw| {
            if n == victim {
                raw.dtype = safetensors::Dtype::I32;
            }
            Some(raw)
        },
        vec![],
    );
    assert_mentions(&load_err(&dir), &[victim, "unsupported dtype I32"]);
}

#[test]
fn config_missing_a_field_is_named() {
    for (section, field) in [
        ("vision_config", "hidden_size"),
        ("text_config", "vocab_size"),
    ] {
        let dir = copy_dir(&tiny_dir(), &format!("no-{field}"));
        edit_json(&dir, "config.json", |cfg| {
            cfg[section].as_object_mut().unwrap().remove(field);
        });
        assert_mentions(
            &load_err(&dir),
            &["config.json", &format!("{section}.{field}"), "missing"],
        );
    }
    let dir = copy_dir(&tiny_dir(), "bad-json");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert_mentions(&load_err(&dir), &["config.json", "not valid JSON"]);
}

#[test]
fn bad_images_are_named() {
    let model = Captioner::load_dir(&tiny_dir()).unwrap();
    let opts = CaptionOptions::default();
    let err = model
        .caption(b"definitely not an image", "notes.txt", &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["notes.txt"]);

    let png = image_bytes("camera.png");
    let err = model
        .caption(&png[..png.len() / 3], "cut.png", &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["cut.png"]);

    let mut small_budget = Captioner::load_dir(&tiny_dir()).unwrap();
    small_budget.max_pixels = 100;
    let err = small_budget
        .caption(&png, "big.png", &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["big.png", "pixel"]);
}

#[test]
fn bad_generation_arguments_are_errors() {
    let model = Captioner::load_dir(&tiny_dir()).unwrap();
    let opts = CaptionOptions {
        num_beams: Some(0),
        ..Default::default()
    };
    let err = model
        .caption(&image_bytes("camera.png"), "camera.png", &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["num_beams"]);
}

#[test]
fn cli_reports_errors_and_exits_nonzero() {
    let exe = env!("CARGO_BIN_EXE_blipq");
    let out = Command::new(exe)
        .args(["caption", "--model", "/nonexistent/model", "x.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["/nonexistent/model"],
    );

    let tiny = tiny_dir();
    let good = fixtures().join("images/camera.png");
    let out = Command::new(exe)
        .args(["caption", "--model"])
        .arg(&tiny)
        .arg("--json")
        .arg(&good)
        .arg("/nonexistent/photo.png")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed image must fail the run");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows[0]["caption"].is_string(),
        "the good image is still captioned"
    );
    assert_mentions(
        rows[1]["error"].as_str().unwrap(),
        &["/nonexistent/photo.png"],
    );
}
