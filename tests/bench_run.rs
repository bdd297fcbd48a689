//! The benchmark core in the library (`blipq::eval::bench::run`, `model_results`), which `blipq bench`
//! and the page's benchmark worker both call: samples in item order with the captions of
//! `Captioner::caption`, unreadable images recorded as failures with their message while the run
//! goes on, the same outcome one at a time and in batches, progress per item, and the results
//! assembled from the run.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use blipq::eval::bench::{self, Item, ModelInfoReport, Outcome, RunOptions};
use blipq::{CaptionOptions, Captioner};
use common::*;

fn item(file: &str, id: i64, references: &[&str]) -> Item {
    Item {
        file: file.into(),
        image_id: Some(blipq::eval::metrics::ImageId::Int(id)),
        references: references.iter().map(|r| r.to_string()).collect(),
    }
}

#[test]
fn run_records_every_item_in_order_at_every_batch_size() {
    let model = Captioner::load_dir(&tiny_dir()).unwrap();
    let items = [
        item("camera.png", 1, &["a camera on a tripod"]),
        item("missing.png", 2, &["nothing"]),
        item("coffee.jpg", 3, &["a cup of coffee"]),
        item("rocket_rgba.png", 4, &[]),
        item("chelsea.png", 5, &["a cat"]),
    ];
    let read = &mut |item: &Item| -> Result<Vec<u8>, String> {
        if item.file == "missing.png" {
            Err("missing.png: no such file".into())
        } else {
            Ok(image_bytes(&item.file))
        }
    };
    let opts = CaptionOptions::default();
    let mut reference = None;
    for batch_size in [1, 2, 3, 5] {
        let mut progress = Vec::new();
        let run = bench::run(
            &model,
            &items,
            read,
            &RunOptions {
                caption: opts.clone(),
                warmup: 2,
                batch_size,
            },
            &mut |done, outcome| {
                progress.push(match outcome {
                    Outcome::Captioned(s) => (done, s.image.clone()),
                    Outcome::Failed(f) => (done, format!("failed {}", f.image)),
                })
            },
        );
        assert_eq!(
            progress,
            [
                (1, "camera.png".to_string()),
                (2, "failed missing.png".into()),
                (3, "coffee.jpg".into()),
                (4, "rocket_rgba.png".into()),
                (5, "chelsea.png".into()),
            ],
            "batch {batch_size}"
        );
        assert_eq!(run.failures.len(), 1);
        assert_eq!(run.failures[0].error, "missing.png: no such file");
        let ids: Vec<(String, Vec<u32>)> = run
            .samples
            .iter()
            .map(|s| (s.image.clone(), s.token_ids.clone()))
            .collect();
        for (sample, item) in run
            .samples
            .iter()
            .zip(items.iter().filter(|i| i.file != "missing.png"))
        {
            assert_eq!(sample.image_id, item.image_id);
            let alone = model
                .caption(&image_bytes(&item.file), &item.file, &opts, &mut |_| {})
                .unwrap();
            assert_eq!(
                sample.token_ids, alone.token_ids,
                "batch {batch_size}: {}",
                item.file
            );
            assert_eq!(sample.caption, alone.caption);
            assert_eq!(sample.new_tokens, alone.new_tokens);
        }
        match &reference {
            None => reference = Some(ids),
            Some(r) => assert_eq!(&ids, r, "batch {batch_size}"),
        }

        let info = ModelInfoReport {
            total_parameters: 7,
            model_size_mb: 1.5,
            device: "cpu".into(),
            is_quantized: false,
            dtype: "float32".into(),
            model_path: "tiny".into(),
        };
        let samples = run.samples.clone();
        let results =
            bench::model_results("tiny", &items, run, batch_size, Some(12.0), info.clone())
                .unwrap();
        let perf = &results.performance_metrics;
        assert_eq!((perf.total_samples, perf.failed_samples), (4, 1));
        assert_eq!(perf.batch_size, batch_size);
        assert_eq!(perf.memory_usage_mb, Some(12.0));
        assert_eq!(perf.individual_times.len(), 4);
        // Quality over the captioned images that have references (3 of the 4).
        let quality = results.quality_metrics.as_ref().unwrap();
        assert_eq!(
            quality,
            &bench::quality(&samples, &items).unwrap().unwrap(),
            "batch {batch_size}"
        );
        assert_eq!(results.model_info, info);
        assert_eq!(results.label, "tiny");
        assert_eq!(results.samples, samples);
    }
}

#[test]
fn a_run_with_nothing_readable_records_only_failures() {
    let model = Captioner::load_dir(&tiny_dir()).unwrap();
    let items = [item("a.png", 1, &[]), item("b.png", 2, &[])];
    let run = bench::run(
        &model,
        &items,
        &mut |i: &Item| Err(format!("{}: unreadable", i.file)),
        &RunOptions {
            warmup: 3,
            ..Default::default()
        },
        &mut |_, _| {},
    );
    assert!(run.samples.is_empty());
    let errors: Vec<&str> = run.failures.iter().map(|f| f.error.as_str()).collect();
    assert_eq!(errors, ["a.png: unreadable", "b.png: unreadable"]);
    let results = bench::model_results("none", &items, run, 1, None, Default::default()).unwrap();
    assert_eq!(results.performance_metrics.total_samples, 0);
    assert_eq!(results.performance_metrics.failed_samples, 2);
    assert!(results.quality_metrics.is_none());
}

/// The comparison's rows against the first model: bytes per parameter, CIDEr retention, the
/// token agreement of each model's captions with the first's and the cosine of their vision
/// embeddings (over the images both captioned), which the first shows as 1 and have no
/// improvement column; and the trade-off charts, whose quality axis is the token agreement
/// when there are no references.
#[test]
fn comparison_reports_bytes_per_parameter_and_token_agreement() {
    let sample = |image: &str, ids: &[u32], emb: &[f32]| bench::Sample {
        image: image.into(),
        image_id: None,
        caption: String::new(),
        token_ids: ids.to_vec(),
        new_tokens: ids.len(),
        timings: Default::default(),
        image_embedding_cls: emb.to_vec(),
    };
    let results = |label: &str, mb: f64, samples: Vec<bench::Sample>| bench::ModelResults {
        label: label.into(),
        performance_metrics: Default::default(),
        quality_metrics: None,
        model_info: ModelInfoReport {
            total_parameters: 1 << 20,
            model_size_mb: mb,
            ..Default::default()
        },
        failures: vec![],
        samples,
    };
    let a = results(
        "a",
        4.0,
        vec![
            sample("x", &[1, 2, 3, 4], &[1.0, 0.0]),
            sample("y", &[1, 2], &[0.0, 2.0]),
        ],
    );
    // x: 3 of 4 positions agree; y: 1 of 2 (over the longer); z is not in `a`. Embedding
    // cosines: x 1, y 1/√2.
    let b = results(
        "b",
        1.0,
        vec![
            sample("x", &[1, 2, 3, 9], &[3.0, 0.0]),
            sample("y", &[1], &[1.0, 1.0]),
            sample("z", &[5], &[1.0, 0.0]),
        ],
    );
    // The embeddings survive the results JSON exactly (base64 of f32).
    let json = serde_json::to_string_pretty(&b).unwrap();
    let back: bench::ModelResults = serde_json::from_str(&json).unwrap();
    assert_eq!(back.samples, b.samples);
    let charts = blipq::eval::chart::tradeoff_charts(&[a.clone(), b.clone()]);
    let files: Vec<&str> = charts.iter().map(|(f, _)| *f).collect();
    assert_eq!(files, ["size_vs_quality.svg", "speed_vs_quality.svg"]);
    for (_, svg) in &charts {
        assert!(
            svg.contains("token agreement with the first model"),
            "{svg}"
        );
        assert!(svg.contains("data-label=\"a\"") && svg.contains("data-label=\"b\""));
    }
    let md = bench::comparison_markdown(&[a, b]);
    assert!(
        md.contains("| Vision embedding cosine with the first | 1.000000 | 0.853553 | — |"),
        "{md}"
    );
    assert!(
        md.contains("| Bytes / parameter | 4.00 | 1.00 | -75.0% |"),
        "{md}"
    );
    assert!(
        md.contains("| Token agreement with the first | 1.0000 | 0.6250 | — |"),
        "{md}"
    );
    assert!(md.contains("| CIDEr | n/a | n/a | n/a |"), "{md}");
}
