//! `blipq synth`: tensor names and shapes are Hugging Face's, and the base preset has the real size.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blipq::config::BlipConfig;
use blipq::synth::{self, Preset};
use common::*;

#[test]
fn tensor_names_and_shapes_match_a_transformers_checkpoint() {
    // The tiny fixture was saved by transformers itself: synth's layout for its config must be
    // exactly the file's.
    let cfg_text = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    let cfg = BlipConfig::from_json(&cfg_text, "config.json").unwrap();
    let mut ours = synth::tensor_shapes(&cfg);
    ours.sort();
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut theirs: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn base_preset_has_the_real_dimensions_and_size() {
    let cfg = BlipConfig::from_json(&synth::config_json(Preset::Base).to_string(), "config.json")
        .unwrap();
    assert_eq!(cfg.vision.hidden_size, 768);
    assert_eq!(cfg.vision.image_size, 384);
    assert_eq!(cfg.text.vocab_size, 30524);
    let params = synth::parameter_count(&cfg);
    assert!((223_900_000..224_100_000).contains(&params), "{params}");
    let large = BlipConfig::from_json(
        &synth::config_json(Preset::Large).to_string(),
        "config.json",
    )
    .unwrap();
    assert_eq!(large.text.encoder_hidden_size, 1024);
}
