//! `blipq convert` and sharded safetensors: a `torch.save` checkpoint converts to exactly the
//! `model.safetensors` transformers saved for the same weights (tied duplicates left out); F16 and
//! BF16 round each weight as `half` does; a sharded checkpoint loads (same logits as the single
//! file) and converts back to the single file; an index that disagrees with its shards, or
//! names files outside its folder, is refused by name; nothing is written on failure.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blipq::checkpoint::sharded::INDEX_FILE;
use blipq::checkpoint::Checkpoint;
use blipq::convert::{convert_dir, OutDType};
use blipq::fsio::OutputDir;
use blipq::Captioner;
use common::*;

/// A fresh, not yet existing output folder.
fn out_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("blipq-convert-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Converts `src` into a new folder; returns it and the summary.
fn convert(src: &Path, tag: &str, dtype: OutDType) -> (PathBuf, blipq::convert::ConvertSummary) {
    let out = out_dir(tag);
    let dir = OutputDir::create(&out, &[src], false).unwrap();
    let summary = convert_dir(src, &dir, dtype, &mut |_, _, _| {}).unwrap();
    dir.commit().unwrap();
    (out, summary)
}

/// Every tensor of a safetensors file: name → (dtype, shape, bytes).
fn tensors(path: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// Splits `src`'s `model.safetensors` into two shards plus an index (the tensors alternating
/// between the shards); `edit_index` may change the index before it is written.
fn sharded(src: &Path, tag: &str, edit_index: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = copy_dir(src, tag);
    let all = tensors(&dir.join("model.safetensors"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut map = serde_json::Map::new();
    for (s, name) in names.iter().enumerate() {
        let part: Vec<_> = all.iter().enumerate().filter(|(i, _)| i % 2 == s).collect();
        let views: Vec<_> = part
            .iter()
            .map(|(_, (n, (dt, shape, data)))| {
                map.insert(n.to_string(), serde_json::json!(name));
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(name)).unwrap();
    }
    let mut index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    edit_index(&mut index);
    std::fs::write(dir.join(INDEX_FILE), serde_json::to_vec(&index).unwrap()).unwrap();
    dir
}

#[test]
fn pytorch_bin_converts_to_the_safetensors_transformers_saved() {
    let src = fixtures().join("tiny-bin");
    let (out, summary) = convert(&src, "bin-f32", OutDType::F32);
    // transformers saved `tiny/model.safetensors` from the same weights: same names, same bytes.
    assert_eq!(
        tensors(&out.join("model.safetensors")),
        tensors(&tiny_dir().join("model.safetensors"))
    );
    assert_eq!(
        summary.dropped_tied,
        [
            "text_decoder.cls.predictions.decoder.bias",
            "text_decoder.cls.predictions.decoder.weight"
        ]
    );
    let st = Checkpoint::open(&out.join("model.safetensors")).unwrap();
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    // The other files come along unchanged; the weights file of the source does not.
    for f in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!out.join("pytorch_model.bin").exists());
    let a = Captioner::load_dir(&src).unwrap();
    let b = Captioner::load_dir(&out).unwrap();
    for image in image_names() {
        assert_eq!(
            max_abs_diff(&first_logits(&a, &image), &first_logits(&b, &image)),
            0.0,
            "{image}"
        );
    }
}

#[test]
fn half_precision_rounds_each_weight_like_half() {
    let f32_tensors = tensors(&tiny_dir().join("model.safetensors"));
    for (dtype, st_dtype) in [
        (OutDType::F16, safetensors::Dtype::F16),
        (OutDType::BF16, safetensors::Dtype::BF16),
    ] {
        let (out, summary) = convert(&tiny_dir(), dtype.as_str(), dtype);
        let got = tensors(&out.join("model.safetensors"));
        assert_eq!(got.len(), f32_tensors.len());
        for (name, (dt, shape, data)) in &got {
            let (_, want_shape, want) = &f32_tensors[name];
            assert_eq!((dt, shape), (&st_dtype, want_shape), "{name}");
            let rounded: Vec<u8> = match dtype {
                OutDType::F16 => map_f32(want, half::f16::from_f32)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                _ => map_f32(want, half::bf16::from_f32)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            assert!(*data == rounded, "{dtype:?} {name}");
        }
        // Half the weights' bytes (the header is a few KB either way).
        assert!(summary.output_bytes * 2 < summary.input_bytes + 64 * 1024);
        Captioner::load_dir(&out).unwrap();
    }
}

#[test]
fn f16_refuses_values_beyond_its_range() {
    let src = copy_dir(&tiny_dir(), "f16-range");
    rewrite_weights(
        &src,
        |name, mut raw| {
            if name == "vision_model.post_layernorm.weight" {
                raw.data[..4].copy_from_slice(&1e6f32.to_le_bytes());
            }
            Some(raw)
        },
        vec![],
    );
    let out = out_dir("f16-range");
    let dir = OutputDir::create(&out, &[&src], false).unwrap();
    let err = convert_dir(&src, &dir, OutDType::F16, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vision_model.post_layernorm.weight") && err.contains("F16's range"),
        "{err}"
    );
    drop(dir);
    assert!(!out.exists(), "nothing written on failure");
    // BF16 has f32's range.
    convert(&src, "bf16-range", OutDType::BF16);
}

#[test]
fn sharded_safetensors_load_and_convert_to_one_file() {
    let dir = sharded(&tiny_dir(), "sharded", |_| {});
    let single = Captioner::load_dir(&tiny_dir()).unwrap();
    let shards = Captioner::load_dir(&dir).unwrap();
    for image in image_names() {
        assert_eq!(
            max_abs_diff(
                &first_logits(&single, &image),
                &first_logits(&shards, &image)
            ),
            0.0,
            "{image}"
        );
    }
    let (out, summary) = convert(&dir, "sharded-out", OutDType::F32);
    assert_eq!(
        tensors(&out.join("model.safetensors")),
        tensors(&tiny_dir().join("model.safetensors"))
    );
    // Both shards counted as input; neither they nor the index are copied.
    let shard_bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(summary.input_bytes as u64, shard_bytes);
    assert!(!out.join(INDEX_FILE).exists());
    // A folder with both a single file and an index reads the single file.
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let files = blipq::ModelFiles::from_dir(&dir).unwrap();
    assert!(files.weights.file().ends_with("model.safetensors"));
}

/// The tensor the index cases move around.
const MOVED: &str = "text_decoder.bert.embeddings.word_embeddings.weight";

/// Lists a tensor no shard holds, `ghost.weight`, as in `shard`.
fn ghost(ix: &mut serde_json::Value, shard: serde_json::Value) {
    ix["weight_map"]["ghost.weight"] = shard;
}

type EditIndex = fn(&mut serde_json::Value);

#[test]
fn an_index_that_disagrees_with_its_shards_is_refused_by_name() {
    use serde_json::json;
    let cases: [(&str, EditIndex, &str); 7] = [
        (
            "wrong-shard",
            |ix| {
                let m = &mut ix["weight_map"][MOVED];
                let other = match m.as_str() {
                    Some("model-00001-of-00002.safetensors") => "model-00002-of-00002.safetensors",
                    _ => "model-00001-of-00002.safetensors",
                };
                *m = json!(other);
            },
            MOVED,
        ),
        (
            "unlisted",
            |ix| {
                ix["weight_map"].as_object_mut().unwrap().remove(MOVED);
            },
            "not listed",
        ),
        (
            "extra",
            |ix| ghost(ix, json!("model-00001-of-00002.safetensors")),
            "ghost.weight",
        ),
        (
            "outside",
            |ix| ghost(ix, json!("../model.safetensors")),
            "not a plain file name",
        ),
        (
            "missing-shard",
            |ix| ghost(ix, json!("model-00003-of-00003.safetensors")),
            "model-00003-of-00003.safetensors",
        ),
        (
            "no-map",
            |ix| {
                ix.as_object_mut().unwrap().remove("weight_map");
            },
            "weight_map",
        ),
        ("not-a-name", |ix| ghost(ix, json!(7)), "not to a file name"),
    ];
    for (tag, edit, needle) in cases {
        let dir = sharded(&tiny_dir(), tag, edit);
        let err = match Captioner::load_dir(&dir) {
            Ok(_) => panic!("{tag}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{tag}: {err}");
    }
    let dir = sharded(&tiny_dir(), "not-json", |_| {});
    std::fs::write(dir.join(INDEX_FILE), b"{not json").unwrap();
    let err = Captioner::load_dir(&dir).err().unwrap().to_string();
    assert!(
        err.contains(INDEX_FILE) && err.contains("not valid JSON"),
        "{err}"
    );
}

#[test]
fn int8_input_and_bad_outputs_are_refused() {
    let int8 = out_dir("int8-src");
    let dir = OutputDir::create(&int8, &[&tiny_dir()], false).unwrap();
    blipq::quantize::quantize_dir(
        &tiny_dir(),
        &dir,
        blipq::quantize::Scheme::Q8_0,
        None,
        &mut |_, _, _| {},
    )
    .unwrap();
    dir.commit().unwrap();
    let out = out_dir("from-int8");
    let dir = OutputDir::create(&out, &[&int8], false).unwrap();
    let err = convert_dir(&int8, &dir, OutDType::F32, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("INT8") && err.contains("full-precision"),
        "{err}"
    );
    // The output may not be the source.
    assert!(OutputDir::create(&int8, &[&int8], true).is_err());
    let err = "q4".parse::<OutDType>().unwrap_err().to_string();
    assert!(err.contains("q4") && err.contains("f16"), "{err}");
}
