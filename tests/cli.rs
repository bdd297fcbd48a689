//! The `blipq` command line end to end: caption --json, quantize's report, eval, bench.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn blipq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blipq"))
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("blipq-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A fixture image (`tests/fixtures/images/<name>`).
fn image(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

/// `blipq caption --json <flags> --model <model>` of the fixture images `names`.
fn caption_json(model: &Path, flags: &[&str], names: &[&str]) -> Command {
    let mut cmd = blipq();
    cmd.args(["caption", "--json"])
        .args(flags)
        .arg("--model")
        .arg(model)
        .args(names.iter().map(|n| image(n)));
    cmd
}

/// Runs `cmd` and checks that it succeeds (`what` and its stderr otherwise).
fn succeeds(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The token ids of each row of `blipq caption --json`'s output.
fn rows_ids(stdout: &[u8]) -> Vec<Vec<u32>> {
    let rows: Value = serde_json::from_slice(stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| ids(&r["token_ids"]))
        .collect()
}

/// `blipq bench <flags> --model <each of models> --annotations <ann> --images <images> --out <out>`.
fn bench(flags: &[&str], models: &[&Path], ann: &Path, images: &Path, out: &Path) -> Command {
    let mut cmd = blipq();
    cmd.arg("bench").args(flags);
    for model in models {
        cmd.arg("--model").arg(model);
    }
    cmd.arg("--annotations")
        .arg(ann)
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(out);
    cmd
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn caption_json_gives_generate_token_ids() {
    let expected = expected();
    let names = ["camera.png", "rocket_rgba.png"];
    let out = succeeds(&mut caption_json(&tiny_dir(), &[], &names), "caption");
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (row, name) in rows.as_array().unwrap().iter().zip(names) {
        let want = &expected["images"][name]["default"];
        assert_eq!(ids(&row["token_ids"]), ids(&want["ids"]), "{name}");
        assert_eq!(row["caption"], want["caption"], "{name}");
        assert!(row["image"].as_str().unwrap().ends_with(name));
    }
}

#[test]
fn caption_with_prompt_and_beams() {
    let expected = expected();
    for (flags, case) in [
        (["--num-beams", "3"], "beam3"),
        (["--prompt", "a picture of"], "prompt"),
    ] {
        let mut cmd = caption_json(
            &tiny_dir(),
            &[flags[0], flags[1], "--max-length", "20"],
            &["camera.png"],
        );
        let out = succeeds(&mut cmd, case);
        assert_eq!(
            rows_ids(&out.stdout)[0],
            ids(&expected["images"]["camera.png"][case]["ids"]),
            "{case}"
        );
    }
}

/// `blipq quantize` of the tiny fixture model into a fresh temporary folder.
fn quantize_tiny(tag: &str) -> PathBuf {
    let out_dir = temp(tag);
    succeeds(
        blipq()
            .args(["quantize", "--model"])
            .arg(tiny_dir())
            .arg("--out")
            .arg(&out_dir),
        "quantize",
    );
    out_dir
}

#[test]
fn quantize_writes_checkpoint_and_report() {
    let out_dir = quantize_tiny("quantize");
    let report = read_json(&out_dir.join("quantized_results.json"));
    for key in ["method", "timestamp", "device", "model_path"] {
        assert!(
            report["quantization_info"][key].is_string(),
            "quantization_info.{key}"
        );
    }
    let m = &report["model_metrics"];
    let ratio = m["size_reduction_ratio"].as_f64().unwrap();
    assert!(ratio > 2.5, "size reduction {ratio}");
    assert!(m["quantized_size_mb"].as_f64().unwrap() < m["original_size_mb"].as_f64().unwrap());
    let v = &report["validation"];
    assert_eq!(
        v["successful_samples"], 6,
        "3 built-in photos + 3 synthetic images"
    );
    assert_eq!(v["success_rate"], 1.0);
    assert!(v["embedding_cosine"].as_f64().unwrap() > 0.999);
    let agreement = v["token_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement));
    assert!(v["avg_inference_time"].as_f64().unwrap() > 0.0);
    // The INT8 checkpoint captions through the same CLI.
    let out = blipq()
        .args(["caption", "--model"])
        .arg(&out_dir)
        .arg(image("camera.png"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn eval_prints_the_six_metrics() {
    let dir = temp("eval");
    std::fs::create_dir_all(&dir).unwrap();
    let ann = dir.join("ann.json");
    let res = dir.join("res.json");
    std::fs::write(
        &ann,
        r#"{"images":[{"id":1,"file_name":"a.png"}],"annotations":[{"image_id":1,"caption":"a red circle on the left"},{"image_id":1,"caption":"a red circle at left"}]}"#,
    )
    .unwrap();
    std::fs::write(
        &res,
        r#"[{"image_id":1,"caption":"a red circle on the left"}]"#,
    )
    .unwrap();
    let out = succeeds(
        blipq()
            .args(["eval", "--annotations"])
            .arg(&ann)
            .arg("--results")
            .arg(&res),
        "eval",
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
        assert!(v[key].is_number(), "{key}");
    }
    assert!(
        (v["Bleu_4"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "identical caption scores BLEU-4 1"
    );
    // A results file given as annotations is refused with its name.
    let out = blipq()
        .args(["eval", "--annotations"])
        .arg(&res)
        .arg("--results")
        .arg(&res)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("res.json"));
}

#[test]
fn bench_reports_failures_and_keeps_going() {
    // Two models (FP32 tiny and its INT8 copy would need quantizing; compare tiny with itself),
    // a COCO file with one image that has no file: counted as a failure, the rest measured.
    let dir = temp("bench");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["camera.png", "chelsea.png"] {
        std::fs::copy(image(name), images.join(name)).unwrap();
    }
    let ann = dir.join("captions.json");
    std::fs::write(
        &ann,
        r#"{"images":[{"id":1,"file_name":"camera.png"},{"id":2,"file_name":"chelsea.png"},{"id":3,"file_name":"missing.png"}],
           "annotations":[{"image_id":1,"caption":"a man with a camera"},{"image_id":2,"caption":"a cat"},{"image_id":3,"caption":"nothing"}]}"#,
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = bench(
        &["--warmup", "1", "--fixed-new-tokens", "5"],
        &[&tiny_dir(), &fixtures().join("tiny-bin")],
        &ann,
        &images,
        &out_dir,
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A failed image makes the exit code non-zero, after the reports are written.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("missing.png") && stderr.contains("2 of 6 image runs failed"),
        "the failure is reported: {stderr}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "Inference speed (s/image)",
        "Throughput (img/s)",
        "Memory (MB)",
        "Model size (MB)",
        "Bytes / parameter",
        "BLEU-4",
        "CIDEr",
        "Token agreement with the first",
        "Vision embedding cosine with the first",
        "Tokens/s",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }
    // The same weights (safetensors and torch.save): the same vision embeddings.
    let cosine = table
        .lines()
        .find(|l| l.starts_with("| Vision embedding cosine"))
        .unwrap();
    assert!(
        cosine.starts_with("| Vision embedding cosine with the first | 1.000000 | 1.000000 |"),
        "{cosine}"
    );
    // The trade-off charts, a labelled point per model.
    for file in ["size_vs_quality.svg", "speed_vs_quality.svg"] {
        let svg = std::fs::read_to_string(out_dir.join(file)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>\n"),
            "{file}"
        );
        for label in ["tiny", "tiny-bin"] {
            assert!(
                svg.contains(&format!("data-label=\"{label}\"")),
                "{file}: {label}"
            );
        }
        assert!(
            svg.contains("BLEU-4"),
            "{file}: quality is BLEU-4 with references"
        );
    }
    let r = read_json(&out_dir.join("tiny_results.json"));
    let p = &r["performance_metrics"];
    assert_eq!(p["total_samples"], 2);
    assert_eq!(p["failed_samples"], 1);
    assert_eq!(p["individual_times"].as_array().unwrap().len(), 2);
    assert!(p["memory_usage_mb"].as_f64().unwrap() > 1.0);
    assert!(
        (p["tokens_per_second"].as_f64().unwrap() * p["avg_inference_time"].as_f64().unwrap()
            - 5.0)
            .abs()
            < 1e-6,
        "exactly 5 new tokens per image"
    );
    assert!(r["quality_metrics"]["bleu_score"].is_number());
    assert!(r["model_info"]["total_parameters"].as_u64().unwrap() > 1_000_000);
    let caps = read_json(&out_dir.join("tiny_captions.json"));
    assert_eq!(caps.as_array().unwrap().len(), 2);
    // Each sample keeps its image's class-token embedding (base64 of f32: hidden size × 4 bytes).
    let hidden = read_json(&tiny_dir().join("config.json"))["vision_config"]["hidden_size"]
        .as_u64()
        .unwrap() as usize;
    for s in r["samples"].as_array().unwrap() {
        let b64 = s["image_embedding_cls"].as_str().unwrap();
        assert_eq!(b64.len(), (hidden * 4).div_ceil(3) * 4, "{b64}");
    }
    assert!(out_dir.join("comparison.md").exists() && out_dir.join("comparison.json").exists());
}

/// Runs `blipq bench` on the demo INT8 model over the first `limit` demo eval images (plus a
/// missing one) with `extra` options, and returns the results JSON.
fn bench_demo(tag: &str, limit: usize, extra: &[&str]) -> Value {
    let dir = temp(tag);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let eval = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo-eval");
    let mut entries = Vec::new();
    for i in 0..limit {
        let name = format!("scene_{:06}.png", i * 5);
        std::fs::copy(eval.join(&name), images.join(&name)).unwrap();
        entries.push(format!(r#"{{"id":{i},"file_name":"{name}"}}"#));
        if i == 2 {
            entries.push(r#"{"id":99,"file_name":"missing.png"}"#.to_string());
        }
    }
    let ann = dir.join("captions.json");
    std::fs::write(
        &ann,
        format!(
            r#"{{"images":[{}],"annotations":[{{"image_id":0,"caption":"a scene"}}]}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
    let out_dir = dir.join("out");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo-int8");
    let out = bench(&["--warmup", "1"], &[&model], &ann, &images, &out_dir)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The missing image fails alone (exit code 1 after the reports).
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.png"), "{stderr}");
    read_json(&out_dir.join("demo-int8_results.json"))
}

#[test]
fn bench_batch_size_gives_the_one_at_a_time_captions() {
    for extra in [
        &[][..],
        &["--num-beams", "3", "--prompt", "a picture of"][..],
    ] {
        let one = bench_demo("batch1", 7, extra);
        let mut args = vec!["--batch-size", "3"];
        args.extend_from_slice(extra);
        let three = bench_demo("batch3", 7, &args);
        assert_eq!(one["performance_metrics"]["batch_size"], 1);
        assert_eq!(three["performance_metrics"]["batch_size"], 3);
        let samples = |r: &Value| -> Vec<(String, Vec<u32>)> {
            r["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["image"].as_str().unwrap().to_string(),
                        ids(&s["token_ids"]),
                    )
                })
                .collect()
        };
        assert_eq!(samples(&one).len(), 7);
        assert_eq!(samples(&three), samples(&one), "{extra:?}");
        let lengths: Vec<usize> = samples(&one).iter().map(|s| s.1.len()).collect();
        assert!(
            lengths.iter().min() < lengths.iter().max(),
            "captions of different lengths: {lengths:?}"
        );
        for r in [&one, &three] {
            let p = &r["performance_metrics"];
            assert_eq!(p["failed_samples"], 1);
            assert_eq!(r["failures"][0]["image"], "missing.png");
            // images/s is the images over the summed per-image times, which for batches add up
            // to the batches' wall time.
            let times: Vec<f64> = p["individual_times"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_f64().unwrap())
                .collect();
            assert_eq!(times.len(), 7);
            let ips = p["throughput_images_per_sec"].as_f64().unwrap();
            assert!(ips > 0.0);
            assert!((ips - 7.0 / times.iter().sum::<f64>()).abs() < 1e-6 * ips);
        }
        // Within a batch, the vision and decoding shares are equal.
        let s = three["samples"].as_array().unwrap();
        assert_eq!(s[0]["timings"]["vision_s"], s[1]["timings"]["vision_s"]);
        assert_eq!(s[0]["timings"]["decode_s"], s[2]["timings"]["decode_s"]);
    }
}

#[test]
fn bench_refuses_bad_batch_sizes() {
    for bad in ["0", "33", "1000000000000"] {
        let out = blipq()
            .args(["bench", "--batch-size", bad, "--out"])
            .arg(temp("badbatch"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("--batch-size {bad}")) && stderr.contains("1 to 32"),
            "{bad}: {stderr}"
        );
    }
    for bad in ["--batch-size=-1", "--batch-size=abc"] {
        let out = blipq().args(["bench", bad]).output().unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid value"),
            "{bad}"
        );
    }
    // `caption` checks its batch size too, before reading any image.
    let out = blipq()
        .args(["caption", "--batch-size", "0", "--model"])
        .arg(tiny_dir())
        .arg(image("camera.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch-size 0: give 1 to 32"));
}

#[test]
fn caption_batch_size_gives_the_same_json() {
    let names = [
        "camera.png",
        "rocket_rgba.png",
        "chelsea.png",
        "coffee.jpg",
        "astronaut.jpg",
        "missing.png",
    ];
    let run = |batch: &str| -> Value {
        let out = caption_json(
            &tiny_dir(),
            &["--num-beams", "2", "--batch-size", batch],
            &names,
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(1), "one image is missing");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let one = run("1");
    assert_eq!(one.as_array().unwrap().len(), 6);
    assert!(one[5]["error"].as_str().unwrap().contains("missing.png"));
    assert!(one[0]["token_ids"].is_array());
    assert_eq!(run("4"), one);
}

/// A binary built here runs as on an older CPU (`BLIPQ_ISA`, `blipq::kernels::isa`): the fixture
/// captions are Hugging Face's token ids at every x86-64 level, in FP32 and INT8, and a bad
/// level is refused.
#[test]
fn captions_are_the_same_at_every_instruction_set_level() {
    let expected = expected();
    let names = ["camera.png", "rocket_rgba.png"];
    let int8 = quantize_tiny("isa-int8");
    let caption = |model: &Path, level: Option<&str>| -> Vec<Vec<u32>> {
        let mut cmd = caption_json(model, &[], &names);
        match level {
            Some(level) => cmd.env("BLIPQ_ISA", level),
            None => cmd.env_remove("BLIPQ_ISA"),
        };
        rows_ids(&succeeds(&mut cmd, &format!("{level:?}")).stdout)
    };
    let want: Vec<Vec<u32>> = names
        .iter()
        .map(|n| ids(&expected["images"][n]["default"]["ids"]))
        .collect();
    let int8_default = caption(&int8, None);
    for level in ["base", "v3", "V4"] {
        assert_eq!(caption(&tiny_dir(), Some(level)), want, "FP32 at {level}");
        assert_eq!(caption(&int8, Some(level)), int8_default, "INT8 at {level}");
    }
    let out = blipq()
        .args(["caption", "--model"])
        .arg(tiny_dir())
        .arg(image("camera.png"))
        .env("BLIPQ_ISA", "avx9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("BLIPQ_ISA=avx9: give base, v3 or v4"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&int8);
}

#[test]
fn convert_writes_a_checkpoint_that_captions_like_its_source() {
    let out = temp("convert");
    let src = fixtures().join("tiny-bin");
    let run = succeeds(
        blipq()
            .args(["convert", "--dtype", "f32", "--model"])
            .arg(&src)
            .arg("--out")
            .arg(&out),
        "convert",
    );
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains("tied duplicates left out"), "{said}");
    let names = ["astronaut.jpg", "coffee.jpg"];
    let want = succeeds(&mut caption_json(&src, &[], &names), "caption source");
    let got = succeeds(&mut caption_json(&out, &[], &names), "caption converted");
    assert_eq!(rows_ids(&got.stdout), rows_ids(&want.stdout));
    // Never over a non-empty folder without --force, and a bad dtype is named.
    let again = blipq()
        .args(["convert", "--model"])
        .arg(&src)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let bad = blipq()
        .args(["convert", "--dtype", "int4", "--model"])
        .arg(&src)
        .arg("--out")
        .arg(temp("convert-bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"int4\""));
}

#[test]
fn eval_gives_the_same_bits_in_every_process() {
    // CIDEr sums floating-point terms over n-grams. Summed in a hash map's order, which changes
    // with the process's random hash seed, the last digit of the score changed between runs
    // (half of them here); in first-occurrence order it is the same every time. Each image's
    // first reference of the bundled eval set is scored against all of them.
    let dir = temp("eval-bits");
    std::fs::create_dir_all(&dir).unwrap();
    let annotations = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo-eval/captions.json");
    let ann: Value = serde_json::from_str(&std::fs::read_to_string(&annotations).unwrap()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for a in ann["annotations"].as_array().unwrap() {
        seen.entry(a["image_id"].to_string()).or_insert_with(
            || serde_json::json!({"image_id": a["image_id"], "caption": a["caption"]}),
        );
    }
    let results = dir.join("results.json");
    let rows: Vec<Value> = seen.into_values().collect();
    std::fs::write(&results, serde_json::to_string(&rows).unwrap()).unwrap();
    let outputs: Vec<String> = (0..12)
        .map(|_| {
            let o = blipq()
                .args(["eval", "--annotations"])
                .arg(&annotations)
                .arg("--results")
                .arg(&results)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(outputs.iter().all(|o| *o == outputs[0]), "{outputs:#?}");
}
