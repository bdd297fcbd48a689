//! INT8: quantizing the tiny fixture, the file layout, the exact quantize -> load round trip, and
//! logits close to FP32.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blipq::checkpoint::{Checkpoint, Matrix};
use blipq::fsio::OutputDir;
use blipq::quantize;
use blipq::Captioner;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use common::*;

fn quantized_tiny(tag: &str) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("blipq-int8-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = OutputDir::create(&out, &[&tiny_dir()], false).unwrap();
    quantize::quantize_dir(
        &tiny_dir(),
        &dir,
        quantize::Scheme::Q8_0,
        None,
        &mut |_, _, _| {},
    )
    .unwrap();
    dir.commit().unwrap()
}

/// The same FP32 file gives the same INT8 bytes every time (the page's "Make INT8" is checked
/// against the CLI by SHA-256, so the header, metadata included, must not depend on hashing
/// order); every tensor's data is aligned to its element size.
#[test]
fn quantizing_is_reproducible_byte_for_byte() {
    let a = std::fs::read(quantized_tiny("again-a").join("model.safetensors")).unwrap();
    let b = std::fs::read(quantized_tiny("again-b").join("model.safetensors")).unwrap();
    assert!(a == b, "two runs wrote different files");
    let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data starts 8-byte aligned");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&a).unwrap();
    for (name, info) in meta.tensors() {
        let size = info.dtype.bitsize() / 8;
        assert_eq!(info.data_offsets.0 % size, 0, "{name} is aligned");
    }
}

#[test]
fn int8_file_follows_the_documented_layout() {
    let out = quantized_tiny("layout");
    let ckpt = Checkpoint::open(&out.join("model.safetensors")).unwrap();
    let meta = ckpt.metadata();
    assert_eq!(meta["format"], "blipq-int8");
    assert_eq!(meta["version"], "1");
    assert_eq!(meta["block_size"], "32");
    let src = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    assert_eq!(meta["source"], quantize::sha256_hex(&src));
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let mut quantized = 0;
    for name in fp32.names() {
        let (_, shape) = fp32.info(&name).unwrap();
        let (dtype, out_shape) = ckpt.info(&name).unwrap();
        assert_eq!(shape, out_shape, "{name}");
        if quantize::is_quantizable(&name, &shape) {
            quantized += 1;
            assert_eq!(dtype.as_str(), "I8", "{name}");
            let (sdt, sshape) = ckpt.info(&format!("{name}_scale")).unwrap();
            assert_eq!(sdt.as_str(), "F16");
            assert_eq!(sshape, vec![shape[0], shape[1] / 32]);
        } else {
            assert_eq!(dtype.as_str(), "F32", "{name}");
        }
    }
    // Text linears (in = 32 or 64), vision linears (in = 64 or 128) and the word embeddings.
    assert!(quantized >= 20, "only {quantized} tensors quantized");
    assert!(
        ckpt.info("text_decoder.bert.embeddings.word_embeddings.weight")
            .unwrap()
            .0
            .as_str()
            == "I8"
    );
    assert!(
        ckpt.info("text_decoder.bert.embeddings.position_embeddings.weight")
            .unwrap()
            .0
            .as_str()
            == "F32"
    );
    for f in [
        "config.json",
        "tokenizer.json",
        "processor_config.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(tiny_dir().join(f)).unwrap(),
            "{f} copied unchanged"
        );
    }
}

#[test]
fn quantize_then_load_reproduces_q8_0_exactly() {
    let out = quantized_tiny("roundtrip");
    let ckpt = Checkpoint::open(&out.join("model.safetensors")).unwrap();
    let fp32 = Checkpoint::open(&tiny_dir().join("model.safetensors")).unwrap();
    let mut checked = 0;
    for name in fp32.names() {
        let (_, shape) = fp32.info(&name).unwrap();
        if !quantize::is_quantizable(&name, &shape) {
            continue;
        }
        let w = fp32.load_f32(&name, &shape, &Device::Cpu).unwrap();
        let want = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let Matrix::Q8(got) = ckpt
            .load_matrix(&name, shape[0], shape[1], &Device::Cpu)
            .unwrap()
        else {
            panic!("{name} did not load as Q8_0");
        };
        // The packed matrix converts back to exactly candle's `Q8_0` blocks.
        assert_eq!((got.n(), got.k()), (shape[0], shape[1]));
        assert_eq!(
            got.to_q8_0_bytes(),
            want.data().unwrap().to_vec(),
            "{name}: blocks differ"
        );
        checked += 1;
    }
    assert!(checked >= 20);
}

#[test]
fn per_row_scales_are_accepted() {
    // A per-row scale [out, 1] broadcasts to every block: build one by hand from a uniform row.
    let out = quantized_tiny("perrow");
    let name = "text_decoder.bert.encoder.layer.0.intermediate.dense.weight";
    rewrite_weights(
        &out,
        |n, mut raw| {
            if n == format!("{name}_scale") {
                let rows = raw.shape[0];
                let blocks = raw.shape[1];
                // Keep the first block's scale per row.
                let mut data = Vec::with_capacity(rows * 2);
                for r in 0..rows {
                    data.extend_from_slice(&raw.data[r * blocks * 2..r * blocks * 2 + 2]);
                }
                raw.shape = vec![rows, 1];
                raw.data = data;
            }
            Some(raw)
        },
        vec![],
    );
    let ckpt = Checkpoint::open(&out.join("model.safetensors")).unwrap();
    let (_, shape) = ckpt.info(name).unwrap();
    let Matrix::Q8(q) = ckpt
        .load_matrix(name, shape[0], shape[1], &Device::Cpu)
        .unwrap()
    else {
        panic!("not Q8");
    };
    let blocks = q.to_q8_0_bytes();
    // Every block of a row carries that row's single scale.
    let per_row = shape[1] / 32;
    for r in 0..shape[0] {
        let first = &blocks[r * per_row * 34..r * per_row * 34 + 2];
        for b in 0..per_row {
            let at = (r * per_row + b) * 34;
            assert_eq!(&blocks[at..at + 2], first);
        }
    }
    Captioner::load_dir(&out).expect("per-row checkpoint loads");
}

#[test]
fn int8_logits_stay_close_to_fp32() {
    let fp32 = Captioner::load_dir(&tiny_dir()).unwrap();
    let int8 = Captioner::load_dir(&quantized_tiny("cosine")).unwrap();
    assert!(int8.info().is_quantized);
    assert!(!fp32.info().is_quantized);
    assert_close_to_fp32(&fp32, &int8, (0.99, 0.999), "INT8");
}

#[test]
fn quantizing_an_int8_checkpoint_is_refused() {
    let out = quantized_tiny("twice");
    let again = OutputDir::create(&out.with_extension("again"), &[&out], false).unwrap();
    let err = quantize::quantize_dir(
        &out,
        &again,
        quantize::Scheme::Q8_0,
        None,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    drop(again);
    assert!(!out.with_extension("again").exists());
}
