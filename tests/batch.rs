//! Batched captioning: `Captioner::caption_batch` gives every image the token ids it gets alone,
//! for greedy and beam search, FP32 and INT8, with images that finish at different steps, a bad
//! image failing alone, and batch sizes out of range refused.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use blipq::fsio::OutputDir;
use blipq::{BatchImage, CaptionOptions, Captioner, Error, MAX_BATCH};
use common::*;

fn demo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

/// Demo eval images (different scenes, so different captions) and the fixture photos.
fn images(count: usize, fixtures_too: bool) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo-eval");
    let mut out: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let name = format!("scene_{:06}.png", i * 7);
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    if fixtures_too {
        for name in image_names() {
            out.push((name.clone(), image_bytes(&name)));
        }
    }
    out
}

fn quantized(src: &Path, tag: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("blipq-batch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = OutputDir::create(&out, &[src], false).unwrap();
    blipq::quantize::quantize_dir(
        src,
        &dir,
        blipq::quantize::Scheme::Q8_0,
        None,
        &mut |_, _, _| {},
    )
    .unwrap();
    dir.commit().unwrap()
}

fn batch<'a>(items: &'a [(String, Vec<u8>)]) -> Vec<BatchImage<'a>> {
    items
        .iter()
        .map(|(name, bytes)| BatchImage::encoded(bytes, name))
        .collect()
}

/// The option sets every model is checked with: greedy, greedy with a prompt and a minimum
/// length, beam search (3 beams) with and without a prompt and length limits.
fn option_sets() -> Vec<CaptionOptions> {
    let prompted = |num_beams, min_length, max_length| CaptionOptions {
        num_beams,
        prompt: Some("a picture of".into()),
        min_length: Some(min_length),
        max_length: Some(max_length),
        ..Default::default()
    };
    vec![
        CaptionOptions::default(),
        prompted(None, 8, 18),
        CaptionOptions {
            num_beams: Some(3),
            ..Default::default()
        },
        prompted(Some(3), 9, 16),
        CaptionOptions {
            num_beams: Some(2),
            max_new_tokens: Some(6),
            ..Default::default()
        },
    ]
}

/// Captions `items` one at a time, then in batches of 1, 2, 3 and all of them, and asserts equal
/// token ids (and captions) everywhere. Returns the caption lengths per option set.
fn assert_batches_match_singles(model: &Captioner, items: &[(String, Vec<u8>)], what: &str) {
    for opts in option_sets() {
        let single: Vec<blipq::Caption> = items
            .iter()
            .map(|(name, bytes)| model.caption(bytes, name, &opts, &mut |_| {}).unwrap())
            .collect();
        for size in [1, 2, 3, items.len()] {
            let mut got = Vec::new();
            for chunk in items.chunks(size) {
                let results = model.caption_batch(&batch(chunk), &opts).unwrap();
                assert_eq!(results.len(), chunk.len());
                got.extend(results.into_iter().map(Result::unwrap));
            }
            for ((want, got), (name, _)) in single.iter().zip(&got).zip(items) {
                assert_eq!(
                    got.token_ids, want.token_ids,
                    "{what}, {opts:?}, batch size {size}, {name}"
                );
                assert_eq!(got.caption, want.caption);
                assert_eq!(got.new_tokens, want.new_tokens);
                let t = got.timings;
                assert!(t.preprocess_s > 0.0 && t.vision_s > 0.0 && t.decode_s > 0.0);
                assert!((t.total_s - (t.preprocess_s + t.vision_s + t.decode_s)).abs() < 1e-9);
            }
        }
    }
}

/// The demo model's greedy captions end at different steps: the batches above really drop
/// finished images while others go on.
fn assert_lengths_differ(model: &Captioner, items: &[(String, Vec<u8>)]) {
    let opts = CaptionOptions::default();
    let lengths: Vec<usize> = items
        .iter()
        .map(|(n, b)| {
            model
                .caption(b, n, &opts, &mut |_| {})
                .unwrap()
                .token_ids
                .len()
        })
        .collect();
    let max = *lengths.iter().max().unwrap();
    let min = *lengths.iter().min().unwrap();
    assert!(min < max, "all captions have {max} tokens: {lengths:?}");
    let eos = model.config().text.sep_token_id;
    let ended = items
        .iter()
        .filter(|(n, b)| {
            let ids = model.caption(b, n, &opts, &mut |_| {}).unwrap().token_ids;
            ids.last() == Some(&eos)
        })
        .count();
    assert!(ended > 0, "no caption ends with the end token: {lengths:?}");
}

#[test]
fn demo_fp32_batches_equal_one_at_a_time() {
    let model = Captioner::load_dir(&demo("demo")).unwrap();
    let items = images(6, true);
    assert_lengths_differ(&model, &items);
    assert_batches_match_singles(&model, &items, "demo fp32");
}

#[test]
fn demo_int8_batches_equal_one_at_a_time() {
    let model = Captioner::load_dir(&demo("demo-int8")).unwrap();
    assert!(model.info().is_quantized);
    let items = images(6, true);
    assert_lengths_differ(&model, &items);
    assert_batches_match_singles(&model, &items, "demo int8");
}

#[test]
fn tiny_fixture_batches_equal_one_at_a_time_fp32_and_int8() {
    let items = images(2, true);
    let fp32 = Captioner::load_dir(&tiny_dir()).unwrap();
    assert_batches_match_singles(&fp32, &items, "tiny fp32");
    let int8 = Captioner::load_dir(&quantized(&tiny_dir(), "tiny")).unwrap();
    assert!(int8.info().is_quantized);
    assert_batches_match_singles(&int8, &items, "tiny int8");
}

#[test]
fn fixed_new_tokens_batches_equal_one_at_a_time() {
    let model = Captioner::load_dir(&demo("demo-int8")).unwrap();
    let items = images(5, false);
    let opts = CaptionOptions {
        fixed_new_tokens: Some(12),
        ..Default::default()
    };
    let got = model.caption_batch(&batch(&items), &opts).unwrap();
    for ((name, bytes), got) in items.iter().zip(got) {
        let want = model.caption(bytes, name, &opts, &mut |_| {}).unwrap();
        let got = got.unwrap();
        assert_eq!(got.token_ids, want.token_ids, "{name}");
        assert_eq!(got.new_tokens, 12);
    }
}

/// An image that cannot be decoded fails alone; the others keep their captions.
#[test]
fn a_bad_image_fails_only_itself() {
    let model = Captioner::load_dir(&demo("demo")).unwrap();
    let mut items = images(4, false);
    items.insert(2, ("broken.png".into(), b"not an image at all".to_vec()));
    for opts in [
        CaptionOptions::default(),
        CaptionOptions {
            num_beams: Some(3),
            ..Default::default()
        },
    ] {
        let results = model.caption_batch(&batch(&items), &opts).unwrap();
        assert_eq!(results.len(), 5);
        for (i, ((name, bytes), r)) in items.iter().zip(&results).enumerate() {
            if i == 2 {
                let e = r.as_ref().unwrap_err().to_string();
                assert!(e.contains("broken.png"), "{e}");
            } else {
                let want = model.caption(bytes, name, &opts, &mut |_| {}).unwrap();
                assert_eq!(r.as_ref().unwrap().token_ids, want.token_ids, "{name}");
            }
        }
        // Only bad images: every result is an error, the call itself succeeds.
        let bad = vec![("a.png".to_string(), vec![0u8; 10]); 2];
        let results = model.caption_batch(&batch(&bad), &opts).unwrap();
        assert!(results.iter().all(Result::is_err));
    }
}

#[test]
fn batch_sizes_and_options_out_of_range_are_refused() {
    let model = Captioner::load_dir(&demo("demo")).unwrap();
    assert!(model
        .caption_batch(&[], &CaptionOptions::default())
        .unwrap()
        .is_empty());
    let one = images(1, false);
    let many = vec![one[0].clone(); MAX_BATCH + 1];
    let e = model
        .caption_batch(&batch(&many), &CaptionOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(e.to_string().contains("batch size"), "{e}");
    assert!(e.to_string().contains(&MAX_BATCH.to_string()), "{e}");
    // Options are checked before any image is read.
    let e = model
        .caption_batch(
            &batch(&one),
            &CaptionOptions {
                num_beams: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("num_beams"), "{e}");
}

/// The batched vision encoder gives every image the hidden states it gets alone, bit for bit.
#[test]
fn batched_vision_encoder_is_row_independent() {
    for dir in [demo("demo"), demo("demo-int8"), tiny_dir()] {
        let model = Captioner::load_dir(&dir).unwrap();
        let items = images(3, false);
        let pixels: Vec<candle_core::Tensor> = items
            .iter()
            .map(|(n, b)| model.pixel_values(b, n).unwrap())
            .collect();
        let all = model
            .encode_image(&candle_core::Tensor::cat(&pixels, 0).unwrap())
            .unwrap();
        for (i, p) in pixels.iter().enumerate() {
            let alone = model.encode_image(p).unwrap().flatten_all().unwrap();
            let batched = all.get(i).unwrap().flatten_all().unwrap();
            assert_eq!(
                alone.to_vec1::<f32>().unwrap(),
                batched.to_vec1::<f32>().unwrap(),
                "{}: image {i}",
                dir.display()
            );
        }
    }
}
