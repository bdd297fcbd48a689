//! Loading variants: PyTorch pickles, F16/BF16 safetensors, a config without
//! `encoder_hidden_size`, an explicit (untied) LM head, transformers 4's preprocessor file,
//! a tokenizer.json that saves fixed padding.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blipq::Captioner;
use common::*;

#[test]
fn pytorch_bin_checkpoint_gives_the_same_logits() {
    let st = Captioner::load_dir(&tiny_dir()).unwrap();
    let bin = Captioner::load_dir(&fixtures().join("tiny-bin")).unwrap();
    // The .bin's `decoder.weight` shares the embeddings' storage: one table, as in safetensors.
    assert!(st.model().lm_head_is_tied() && bin.model().lm_head_is_tied());
    for image in image_names() {
        let d = max_abs_diff(&first_logits(&st, &image), &first_logits(&bin, &image));
        assert!(d < 1e-6, "{image}: {d}");
    }
}

fn converted(tag: &str, dtype: safetensors::Dtype) -> std::path::PathBuf {
    let dir = copy_dir(&tiny_dir(), tag);
    rewrite_weights(
        &dir,
        |_, raw| {
            let data: Vec<u8> = match dtype {
                safetensors::Dtype::F16 => map_f32(&raw.data, half::f16::from_f32)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                safetensors::Dtype::BF16 => map_f32(&raw.data, half::bf16::from_f32)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            Some(Raw {
                dtype,
                shape: raw.shape,
                data,
            })
        },
        vec![],
    );
    dir
}

#[test]
fn f16_and_bf16_checkpoints_load_and_stay_close() {
    let f32m = Captioner::load_dir(&tiny_dir()).unwrap();
    for (tag, dtype, min_cos) in [
        ("f16", safetensors::Dtype::F16, 0.9999),
        ("bf16", safetensors::Dtype::BF16, 0.999),
    ] {
        let m = Captioner::load_dir(&converted(tag, dtype)).unwrap();
        for image in image_names() {
            let c = cosine(&first_logits(&f32m, &image), &first_logits(&m, &image));
            assert!(c > min_cos, "{tag} {image}: cosine {c}");
        }
    }
}

#[test]
fn missing_encoder_hidden_size_means_the_vision_hidden_size() {
    let dir = copy_dir(&tiny_dir(), "no-ehs");
    edit_json(&dir, "config.json", |cfg| {
        cfg["text_config"]
            .as_object_mut()
            .unwrap()
            .remove("encoder_hidden_size");
    });
    let m = Captioner::load_dir(&dir).unwrap();
    assert_eq!(
        m.config().text.encoder_hidden_size,
        m.config().vision.hidden_size
    );
    let base = Captioner::load_dir(&tiny_dir()).unwrap();
    let image = &image_names()[0];
    assert!(max_abs_diff(&first_logits(&m, image), &first_logits(&base, image)) == 0.0);
}

#[test]
fn an_explicit_lm_head_weight_is_used_instead_of_the_embeddings() {
    // Scaling an explicit decoder weight must change the logits: proves it is read, not tied.
    let dir = copy_dir(&tiny_dir(), "untied");
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let emb = st
        .tensor("text_decoder.bert.embeddings.word_embeddings.weight")
        .unwrap();
    let doubled: Vec<u8> = map_f32(emb.data(), |x| x * 2.0)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    rewrite_weights(
        &dir,
        |_, raw| Some(raw),
        vec![(
            "text_decoder.cls.predictions.decoder.weight".into(),
            Raw {
                dtype: safetensors::Dtype::F32,
                shape: emb.shape().to_vec(),
                data: doubled,
            },
        )],
    );
    let base = Captioner::load_dir(&tiny_dir()).unwrap();
    let untied = Captioner::load_dir(&dir).unwrap();
    let image = &image_names()[0];
    let d = max_abs_diff(&first_logits(&base, image), &first_logits(&untied, image));
    assert!(d > 1e-3, "explicit LM head ignored (diff {d})");
    assert!(!untied.model().lm_head_is_tied());
}

#[test]
fn transformers4_preprocessor_config_is_read() {
    // tiny-bin ships `preprocessor_config.json`, tiny ships transformers 5's `processor_config.json`.
    let a = Captioner::load_dir(&tiny_dir()).unwrap();
    let b = Captioner::load_dir(&fixtures().join("tiny-bin")).unwrap();
    assert_eq!(a.image_processor(), b.image_processor());
    assert_eq!(a.image_processor().height, 80);
}

/// The demo model's tokenizer.json saves `padding: Fixed(32)`; `BlipProcessor` ignores it, so a
/// prompt must not be padded with [PAD] up to the caption budget. Expected ids recorded with
/// transformers 5.24: `model.generate(**BlipProcessor(images=img, text="four small"))`.
#[test]
fn saved_tokenizer_padding_is_ignored_for_prompts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = Captioner::load_dir(&root.join("models/demo")).unwrap();
    let image = std::fs::read(root.join("data/demo-eval/scene_000000.png")).unwrap();
    let opts = blipq::CaptionOptions {
        prompt: Some("four small".into()),
        ..Default::default()
    };
    let out = m
        .caption(&image, "scene_000000.png", &opts, &mut |_| {})
        .unwrap();
    assert_eq!(out.token_ids, [159, 43, 7, 22, 44, 9, 5, 40, 10, 3]);
}

/// A `torch.save` file's tied duplicates (the LM-head weight and bias stored under a second
/// name) are not parameters of their own: the counts equal the safetensors copy's, which
/// leaves them out.
#[test]
fn tied_duplicates_are_counted_once() {
    let st = blipq::Captioner::load_dir(&tiny_dir()).unwrap();
    let bin = blipq::Captioner::load_dir(&fixtures().join("tiny-bin")).unwrap();
    assert_eq!(bin.info().total_parameters, st.info().total_parameters);
    assert_eq!(bin.info().weights_bytes, st.info().weights_bytes);
}
