//! The released `Salesforce/blip-image-captioning-base` layout, on `tests/fixtures/real-bin/`
//! (tiny random weights, written by `tools/make_real_layout.py`): its metadata files byte for
//! byte (2022 `config.json` without `encoder_hidden_size`, `"size": 384`, a tokenizer without
//! `[DEC]`/`[ENC]`) and a `pytorch_model.bin` with the real key set — the `position_ids` buffer,
//! both LM-head biases on one storage, the LM-head weight stored apart from the word embeddings
//! with the same values. It loads, lists the real tensor names, captions as transformers does,
//! decodes the bos id (which the tokenizer lacks) to nothing, ties the LM head as transformers
//! does (one table in memory), converts to what transformers' `save_pretrained` writes, and
//! quantizes.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use blipq::checkpoint::pth::Pth;
use blipq::checkpoint::Checkpoint;
use blipq::convert::{convert_dir, OutDType};
use blipq::fsio::OutputDir;
use blipq::Captioner;
use common::*;
use serde_json::Value;

const HEAD_WEIGHT: &str = "text_decoder.cls.predictions.decoder.weight";
const HEAD_BIAS: &str = "text_decoder.cls.predictions.decoder.bias";
const WORD_EMBEDDINGS: &str = "text_decoder.bert.embeddings.word_embeddings.weight";
const POSITION_IDS: &str = "text_decoder.bert.embeddings.position_ids";

fn real_dir() -> PathBuf {
    fixtures().join("real-bin")
}

/// `real-bin/expected.json`: transformers' ids and captions.
fn real_expected() -> Value {
    serde_json::from_slice(&std::fs::read(real_dir().join("expected.json")).unwrap()).unwrap()
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `expected_tensors.tsv`: (name, dtype, shape) per tensor of the file, in the real file's order.
fn expected_tensors() -> Vec<(String, String, Vec<usize>)> {
    let text = std::fs::read_to_string(real_dir().join("expected_tensors.tsv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("name\tdtype\tshape\treal_shape"));
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let shape: Vec<usize> = serde_json::from_str(cols[2]).unwrap();
            (cols[0].to_string(), cols[1].to_string(), shape)
        })
        .collect()
}

/// Every (image, case) of `expected.json` checked against `model`: token ids and caption text.
fn assert_captions_match_transformers(model: &Captioner, what: &str) {
    let expected = real_expected();
    let images = expected["images"].as_object().unwrap();
    assert!(images.len() >= 3);
    for (name, entry) in images {
        let bytes = std::fs::read(repo_file(entry["file"].as_str().unwrap())).unwrap();
        for (case, want) in entry.as_object().unwrap() {
            if !want.is_object() {
                continue;
            }
            let out = model
                .caption(&bytes, name, &case_options(want), &mut |_| {})
                .unwrap();
            assert_eq!(out.token_ids, ids(&want["ids"]), "{what}: {name} {case}");
            assert_eq!(out.caption, want["caption"], "{what}: {name} {case}");
        }
    }
}

#[test]
fn the_bin_holds_the_real_tensor_names_dtypes_and_ties() {
    let rows = expected_tensors();
    assert_eq!(rows.len(), 474, "473 F32 weights + position_ids");
    let pth = Pth::open(&real_dir().join("pytorch_model.bin")).unwrap();
    let mut listed: Vec<(String, String, Vec<usize>)> = pth
        .tensors()
        .iter()
        .map(|(n, t)| (n.clone(), format!("{:?}", t.dtype), t.shape.clone()))
        .collect();
    listed.sort();
    let mut want = rows.clone();
    want.sort();
    // Name for name (and dtype and shape) what blipq's torch.save reader lists.
    for (got, want) in listed.iter().zip(&want) {
        assert_eq!(got, want);
    }
    assert_eq!(listed.len(), want.len());
    // `torch.save` stored the two biases once; the LM-head weight has its own storage.
    assert_eq!(
        pth.tied_groups(),
        [vec![
            "text_decoder.cls.predictions.bias".to_string(),
            HEAD_BIAS.to_string()
        ]]
    );
    let ckpt = Checkpoint::Pth(pth);
    // The integer buffer is listed but is no weight.
    assert!(ckpt.contains(POSITION_IDS) && ckpt.info(POSITION_IDS).is_none());
    assert!(ckpt.same_values(HEAD_WEIGHT, WORD_EMBEDDINGS).unwrap());
    assert!(!ckpt.same_values(HEAD_WEIGHT, POSITION_IDS).unwrap());
    assert!(!ckpt
        .same_values(
            HEAD_BIAS,
            "text_decoder.cls.predictions.transform.dense.bias"
        )
        .unwrap());
    assert_eq!(
        ckpt.tied_duplicates().unwrap(),
        [HEAD_BIAS, HEAD_WEIGHT],
        "the separate copy counts as tied (equal values), as transformers ties it"
    );
}

#[test]
fn the_real_metadata_files_load_as_transformers_reads_them() {
    let m = Captioner::load_dir(&real_dir()).unwrap();
    let cfg = m.config();
    // The 2022 config has no `text_config.encoder_hidden_size`: it is the vision hidden size
    // (32 here), not the text one (16).
    let raw: Value =
        serde_json::from_slice(&std::fs::read(real_dir().join("config.json")).unwrap()).unwrap();
    assert!(raw["text_config"].get("encoder_hidden_size").is_none());
    assert_eq!(cfg.text.encoder_hidden_size, 32);
    assert_eq!(cfg.text.hidden_size, 16);
    assert_eq!(
        (cfg.vision.num_hidden_layers, cfg.text.num_hidden_layers),
        (12, 12)
    );
    assert_eq!(cfg.vision.num_positions(), 577);
    assert_eq!(cfg.text.bos_token_id, 30522);
    // `"size": 384` as a plain integer.
    assert_eq!(
        (m.image_processor().height, m.image_processor().width),
        (384, 384)
    );
    // The tokenizer stops at 30521: no [DEC] (bos 30522) or [ENC] (30523) token.
    assert_eq!(m.tokenizer().max_id(), Some(30521));
    assert_eq!(m.tokenizer().vocab_size(), 30522);
    // The separately stored LM-head weight equals the embeddings: tied, one table in memory.
    assert!(m.model().lm_head_is_tied());
}

#[test]
fn captions_match_transformers() {
    let m = Captioner::load_dir(&real_dir()).unwrap();
    assert_captions_match_transformers(&m, "pytorch_model.bin");
}

#[test]
fn the_bos_id_the_tokenizer_lacks_decodes_to_nothing() {
    let m = Captioner::load_dir(&real_dir()).unwrap();
    let expected = real_expected();
    // Id sequences transformers decoded with these tokenizer files (bos and [ENC] ids it does not
    // have, special tokens, `##` pieces, punctuation without `clean_up_tokenization_spaces`).
    let checks = expected["decode_checks"].as_array().unwrap();
    assert!(checks.len() >= 3);
    for c in checks {
        let got = m.tokenizer().decode(&ids(&c["ids"])).unwrap();
        assert_eq!(got, c["text"], "{}", c["ids"]);
    }
    assert_eq!(m.tokenizer().decode(&[30522, 30523]).unwrap(), "");
    // Every caption starts from bos: none shows it, or [UNK].
    let image = std::fs::read(repo_file("data/demo-eval/scene_000000.png")).unwrap();
    let out = m
        .caption(&image, "scene", &Default::default(), &mut |_| {})
        .unwrap();
    assert_eq!(out.token_ids[0], 30522);
    assert!(!out.caption.is_empty());
    for bad in ["[UNK]", "[DEC]", "[CLS]", "[SEP]", "[PAD]", "30522"] {
        assert!(!out.caption.contains(bad), "{bad} in {:?}", out.caption);
    }
    assert!(!out.caption.starts_with(' '), "{:?}", out.caption);
}

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("blipq-real-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

#[test]
fn convert_writes_what_save_pretrained_writes_and_the_same_captions() {
    let src = real_dir();
    let out = temp("convert");
    let dir = OutputDir::create(&out, &[&src], false).unwrap();
    let summary = convert_dir(&src, &dir, OutDType::F32, &mut |_, _, _| {}).unwrap();
    dir.commit().unwrap();
    // transformers' save_pretrained of this folder leaves out the tied LM head (both names) and
    // the integer buffer; so does convert.
    let expected = real_expected();
    let left_out: Vec<String> = expected["save_pretrained_leaves_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut dropped = [
        summary.dropped_tied.clone(),
        summary.dropped_buffers.clone(),
    ]
    .concat();
    dropped.sort();
    assert_eq!(dropped, left_out);
    let st = Checkpoint::open(&out.join("model.safetensors")).unwrap();
    let mut want: Vec<String> = expected_tensors()
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| !left_out.contains(n))
        .collect();
    want.sort();
    assert_eq!(st.names(), want);
    assert_eq!(st.names().len(), 471);
    // The real metadata files come along unchanged.
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "preprocessor_config.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    let m = Captioner::load_dir(&out).unwrap();
    assert!(m.model().lm_head_is_tied());
    assert_captions_match_transformers(&m, "converted model.safetensors");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn quantize_works_and_its_int8_model_captions() {
    let out = temp("int8");
    let run = Command::new(env!("CARGO_BIN_EXE_blipq"))
        .args(["quantize", "--model"])
        .arg(real_dir())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("quantized_results.json")).unwrap())
            .unwrap();
    assert_eq!(report["validation"]["success_rate"], 1.0);
    let m = Captioner::load_dir(&out).unwrap();
    assert!(m.info().is_quantized);
    // Both tables of the INT8 file hold the same values: still one table in memory.
    assert!(m.model().lm_head_is_tied());
    for name in ["scene_000000.png", "scene_000002.png"] {
        let image = std::fs::read(repo_file(&format!("data/demo-eval/{name}"))).unwrap();
        let c = m
            .caption(&image, name, &Default::default(), &mut |_| {})
            .unwrap();
        assert_eq!(c.token_ids[0], 30522);
        assert!(
            c.token_ids.len() > 1 && !c.caption.contains("[UNK]"),
            "{c:?}"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
