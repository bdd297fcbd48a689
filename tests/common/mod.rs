//! Shared helpers for the integration tests: the Hugging Face fixture written by
//! `tools/make_fixtures.py` and small tensor comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

// Shared with the browser tests (tests/wasm.rs), which include the file by path.
mod case;
#[allow(unused_imports)] // Not every test crate uses both.
pub use case::{case_options, ids};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tiny_dir() -> PathBuf {
    fixtures().join("tiny")
}

/// `expected.json`.
pub fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Fixture image names, sorted.
pub fn image_names() -> Vec<String> {
    let mut v: Vec<String> = expected()["images"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    v.sort();
    v
}

pub fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("images").join(name)).unwrap()
}

/// Tensors of `expected.safetensors` named `<image>/<field>`, as f32 (uint8 ones converted).
pub fn expected_tensor(image: &str, field: &str) -> Tensor {
    let bytes = std::fs::read(fixtures().join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = format!("{image}/{field}");
    let view = st.tensor(&name).unwrap_or_else(|_| panic!("no {name}"));
    let dtype = match view.dtype() {
        safetensors::Dtype::U8 => candle_core::DType::U8,
        safetensors::Dtype::F32 => candle_core::DType::F32,
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    blipq::quantize::cosine(a, b).unwrap()
}

/// Copies a checkpoint directory's files into a fresh temp dir and returns it.
pub fn copy_dir(src: &Path, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("blipq-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

pub type Json = HashMap<String, Value>;

/// A tensor as raw safetensors parts.
pub struct Raw {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Rewrites `dir/model.safetensors` through `edit`, which may change or drop (None) each tensor,
/// and may return extra tensors to add via `extra`.
pub fn rewrite_weights(
    dir: &Path,
    mut edit: impl FnMut(&str, Raw) -> Option<Raw>,
    extra: Vec<(String, Raw)>,
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone();
    let mut out: Vec<(String, Raw)> = Vec::new();
    for (name, view) in st.tensors() {
        let raw = Raw {
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        };
        if let Some(r) = edit(&name, raw) {
            out.push((name, r));
        }
    }
    out.extend(extra);
    let views: Vec<(String, safetensors::tensor::TensorView)> = out
        .iter()
        .map(|(n, r)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(r.dtype, r.shape.clone(), &r.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, meta, &path).unwrap();
}

/// Rewrites the JSON file `dir/file` through `edit`.
pub fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut Value)) {
    let p = dir.join(file);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Converts little-endian f32 bytes with `f`.
pub fn map_f32<T>(data: &[u8], f: impl Fn(f32) -> T) -> Vec<T> {
    data.chunks_exact(4)
        .map(|c| f(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// First-step logits of `model` on the fixture image's recorded pixel values.
pub fn first_logits(model: &blipq::Captioner, image: &str) -> Tensor {
    let pixels = expected_tensor(image, "pixel_values").unsqueeze(0).unwrap();
    let hidden = model.encode_image(&pixels).unwrap();
    let mut state = model.model().start_decoding(&hidden).unwrap();
    let bos = model.config().text.bos_token_id;
    let ids = Tensor::new(&[[bos]], &Device::Cpu).unwrap();
    model
        .model()
        .decode_step(&ids, &mut state)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

/// Asserts that `model` stays close to `fp32` on every fixture image: the cosine of the first
/// decoding step's logits at least `logits_min`, of the vision embeddings at least
/// `vision_min`. `what` names the model in failures.
pub fn assert_close_to_fp32(
    fp32: &blipq::Captioner,
    model: &blipq::Captioner,
    (logits_min, vision_min): (f64, f64),
    what: &str,
) {
    for image in image_names() {
        let c = cosine(&first_logits(fp32, &image), &first_logits(model, &image));
        assert!(c >= logits_min, "{what} {image}: logits cosine {c}");
        let pixels = expected_tensor(&image, "pixel_values")
            .unsqueeze(0)
            .unwrap();
        let c = cosine(
            &fp32.encode_image(&pixels).unwrap(),
            &model.encode_image(&pixels).unwrap(),
        );
        assert!(c >= vision_min, "{what} {image}: vision cosine {c}");
    }
}
