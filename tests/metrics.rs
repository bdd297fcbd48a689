//! Caption metrics against values recorded from the real `pycocoevalcap`
//! (`tools/record_metrics.py` -> `tests/fixtures/metrics/cases.json`): tokenizer output must be
//! equal, BLEU within 1e-6, ROUGE-L and CIDEr within 1e-4. Run with `--nocapture` to see the
//! largest deviations measured.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

use blipq::eval::metrics::{
    self, bleu4, evaluate, evaluate_coco, evaluate_coco_detailed, score_tokenized, tokenize,
    CaptionScores, Evaluation, ImageCaptions, ImageId,
};
use blipq::Error;
use serde_json::Value;

const BLEU_TOL: f64 = 1e-6;
const OTHER_TOL: f64 = 1e-4;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metrics/cases.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture missing: run tools/record_metrics.py");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn id_of(v: &Value) -> ImageId {
    match v {
        Value::String(s) => ImageId::Str(s.clone()),
        v => ImageId::Int(v.as_i64().expect("integer id")),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn expected_scores(v: &Value) -> CaptionScores {
    let g = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("missing {k}"));
    CaptionScores {
        bleu_1: g("Bleu_1"),
        bleu_2: g("Bleu_2"),
        bleu_3: g("Bleu_3"),
        bleu_4: g("Bleu_4"),
        rouge_l: g("ROUGE_L"),
        cider: g("CIDEr"),
    }
}

fn images_of(case: &Value) -> Vec<ImageCaptions> {
    case["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|img| ImageCaptions {
            image_id: id_of(&img["image_id"]),
            hypothesis: img["hypothesis"].as_str().expect("hypothesis").to_string(),
            references: strings(&img["references"]),
        })
        .collect()
}

/// Largest |deviation| seen per metric: [BLEU, ROUGE-L, CIDEr].
#[derive(Default)]
struct Deviation([f64; 3]);

impl Deviation {
    fn check(&mut self, what: &str, got: &CaptionScores, want: &CaptionScores) {
        // (metric, slot in self.0, tolerance, got, want)
        let metrics = [
            ("Bleu_1", 0, BLEU_TOL, got.bleu_1, want.bleu_1),
            ("Bleu_2", 0, BLEU_TOL, got.bleu_2, want.bleu_2),
            ("Bleu_3", 0, BLEU_TOL, got.bleu_3, want.bleu_3),
            ("Bleu_4", 0, BLEU_TOL, got.bleu_4, want.bleu_4),
            ("ROUGE_L", 1, OTHER_TOL, got.rouge_l, want.rouge_l),
            ("CIDEr", 2, OTHER_TOL, got.cider, want.cider),
        ];
        for (name, slot, tol, g, w) in metrics {
            let d = (g - w).abs();
            self.0[slot] = self.0[slot].max(d);
            assert!(d <= tol, "{what}: {name} {g} vs pycocoevalcap {w}");
        }
    }

    /// Checks `eval`'s corpus scores against `want`, then each image's, in order, against
    /// `per_image` (objects with an `image_id`, whose recorded scores `scores_of` picks).
    fn check_evaluation(
        &mut self,
        what: &str,
        eval: &Evaluation,
        want: &Value,
        per_image: &Value,
        scores_of: impl Fn(&Value) -> &Value,
    ) {
        self.check(what, &eval.scores, &expected_scores(want));
        for (got, img) in eval
            .per_image
            .iter()
            .zip(per_image.as_array().expect("per-image array"))
        {
            assert_eq!(got.image_id, id_of(&img["image_id"]));
            self.check(
                &format!("{what} image {}", got.image_id),
                &got.scores,
                &expected_scores(scores_of(img)),
            );
        }
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: max |dev| BLEU {:.3e}, ROUGE_L {:.3e}, CIDEr {:.3e}",
            self.0[0], self.0[1], self.0[2]
        );
    }
}

#[test]
fn tokenizer_matches_ptbtokenizer_batches() {
    let f = fixture();
    for batch in f["tokenizer"].as_array().expect("tokenizer") {
        let captions = strings(&batch["captions"]);
        let want = strings(&batch["tokenized"]);
        assert_eq!(tokenize::tokenize_batch(&captions), want);
    }
}

#[test]
fn tokenizer_matches_ptbtokenizer_on_every_case() {
    let f = fixture();
    for case in f["cases"].as_array().expect("cases") {
        let imgs = case["images"].as_array().expect("images");
        let refs: Vec<String> = imgs
            .iter()
            .flat_map(|i| strings(&i["references"]))
            .collect();
        let want_refs: Vec<String> = imgs
            .iter()
            .flat_map(|i| strings(&i["tokenized_references"]))
            .collect();
        assert_eq!(
            tokenize::tokenize_batch(&refs),
            want_refs,
            "case {}",
            case["name"]
        );
        let hyps: Vec<&str> = imgs
            .iter()
            .map(|i| i["hypothesis"].as_str().unwrap_or_default())
            .collect();
        let want_hyps: Vec<&str> = imgs
            .iter()
            .map(|i| i["tokenized_hypothesis"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            tokenize::tokenize_batch(&hyps),
            want_hyps,
            "case {}",
            case["name"]
        );
    }
}

#[test]
fn case_scores_match_pycocoevalcap() {
    let f = fixture();
    let mut dev = Deviation::default();
    for case in f["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or_default();
        let eval = evaluate(&images_of(case)).expect("evaluate");
        dev.check_evaluation(name, &eval, &case["scores"], &case["images"], |img| {
            &img["scores"]
        });
    }
    dev.report("cases (raw captions)");
}

#[test]
fn scores_from_recorded_tokens_match_pycocoevalcap() {
    // Isolates the metric code from the tokenizer: score pycocoevalcap's own tokenized captions.
    let f = fixture();
    let mut dev = Deviation::default();
    for case in f["cases"].as_array().expect("cases") {
        let imgs = case["images"].as_array().expect("images");
        let ids: Vec<ImageId> = imgs.iter().map(|i| id_of(&i["image_id"])).collect();
        let hyps: Vec<String> = imgs
            .iter()
            .map(|i| {
                i["tokenized_hypothesis"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let refs: Vec<Vec<String>> = imgs
            .iter()
            .map(|i| strings(&i["tokenized_references"]))
            .collect();
        let eval = score_tokenized(&ids, &hyps, &refs);
        dev.check(
            case["name"].as_str().unwrap_or_default(),
            &eval.scores,
            &expected_scores(&case["scores"]),
        );
    }
    dev.report("cases (recorded tokens)");
}

#[test]
fn whole_corpus_matches_pycocoevalcap() {
    let f = fixture();
    let images: Vec<ImageCaptions> = f["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .flat_map(images_of)
        .collect();
    assert!(
        images.len() >= 40,
        "fixture should cover at least 40 images"
    );
    let eval = evaluate(&images).expect("evaluate");
    let mut dev = Deviation::default();
    let corpus = &f["corpus"];
    dev.check_evaluation(
        "corpus",
        &eval,
        &corpus["scores"],
        &corpus["per_image"],
        |img| img,
    );
    dev.report("whole corpus");
}

#[test]
fn coco_files_match_cocoevalcap() {
    let f = fixture();
    let coco = &f["coco"];
    let annotations = coco["annotations"].to_string();
    let results = coco["results"].to_string();
    let eval = evaluate_coco_detailed(&annotations, &results).expect("evaluate_coco");
    let order: Vec<ImageId> = coco["image_order"]
        .as_array()
        .expect("order")
        .iter()
        .map(id_of)
        .collect();
    let got_order: Vec<ImageId> = eval.per_image.iter().map(|i| i.image_id.clone()).collect();
    assert_eq!(
        got_order, order,
        "images are evaluated in the annotations' order, without the one lacking a result"
    );
    let mut dev = Deviation::default();
    dev.check("coco", &eval.scores, &expected_scores(&coco["scores"]));
    for (got, want) in eval
        .per_image
        .iter()
        .zip(coco["per_image"].as_array().expect("per_image"))
    {
        dev.check(
            &format!("coco image {}", got.image_id),
            &got.scores,
            &expected_scores(want),
        );
    }
    dev.report("COCO files");
    let scores = evaluate_coco(&annotations, &results).expect("evaluate_coco");
    let json = serde_json::to_value(scores).expect("serialize");
    let mut keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr", "ROUGE_L"]
    );
}

#[test]
fn single_image_bleu4_matches_per_image_bleu() {
    let f = fixture();
    for case in f["cases"].as_array().expect("cases") {
        for img in case["images"].as_array().expect("images") {
            let refs = strings(&img["references"]);
            let got = bleu4(img["hypothesis"].as_str().unwrap_or_default(), &refs);
            let want = img["scores"]["Bleu_4"].as_f64().expect("Bleu_4");
            assert!(
                (got - want).abs() <= BLEU_TOL,
                "image {}: {got} vs {want}",
                img["image_id"]
            );
        }
    }
    assert_eq!(bleu4("a dog", &[] as &[&str]), 0.0);
}

fn metrics_error(annotations: &str, results: &str) -> String {
    match evaluate_coco(annotations, results) {
        Err(e @ Error::Metrics { .. }) => e.to_string(),
        other => panic!("expected a metrics error, got {other:?}"),
    }
}

const ANN: &str = r#"{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": "b", "file_name": "b.jpg"}],
    "annotations": [{"image_id": 1, "caption": "A dog."}, {"image_id": "b", "caption": "A cat."}]}"#;

#[test]
fn not_json_is_an_error() {
    let e = metrics_error("{oops", "[]");
    assert!(e.starts_with("annotations: not valid JSON"), "{e}");
    let e = metrics_error(ANN, "nope");
    assert!(e.starts_with("results: not valid JSON"), "{e}");
}

#[test]
fn annotations_without_annotations_key_is_an_error() {
    let e = metrics_error(r#"{"images": []}"#, "[]");
    assert!(e.contains("missing \"annotations\""), "{e}");
    let e = metrics_error(r#"[{"image_id": 1, "caption": "x"}]"#, "[]");
    assert!(e.contains("looks like a results file"), "{e}");
}

#[test]
fn malformed_entries_are_errors() {
    let e = metrics_error(r#"{"annotations": [{"image_id": 1}]}"#, "[]");
    assert!(e.contains("annotations[0]: missing \"caption\""), "{e}");
    let e = metrics_error(r#"{"annotations": [{"image_id": 1, "caption": 5}]}"#, "[]");
    assert!(e.contains("\"caption\" must be a string"), "{e}");
    let e = metrics_error(
        r#"{"annotations": [{"image_id": true, "caption": "x"}]}"#,
        "[]",
    );
    assert!(e.contains("image id must be an integer or a string"), "{e}");
    let e = metrics_error(
        r#"{"annotations": [{"image_id": 1.5, "caption": "x"}]}"#,
        "[]",
    );
    assert!(e.contains("not an integer"), "{e}");
    let e = metrics_error(r#"{"annotations": {"image_id": 1}}"#, "[]");
    assert!(e.contains("\"annotations\" must be a list"), "{e}");
    let e = metrics_error(ANN, r#"[{"caption": "x"}]"#);
    assert!(e.contains("results[0]: missing \"image_id\""), "{e}");
    let e = metrics_error(ANN, r#"{"images": [], "annotations": []}"#);
    assert!(e.contains("found an annotations file"), "{e}");
}

#[test]
fn result_without_references_is_an_error() {
    let e = metrics_error(ANN, r#"[{"image_id": 7, "caption": "a dog"}]"#);
    assert!(e.contains("image 7 has no reference captions"), "{e}");
    // Ids keep their JSON type, as in Python: "1" is not 1.
    let e = metrics_error(ANN, r#"[{"image_id": "1", "caption": "a dog"}]"#);
    assert!(e.contains("image \"1\" has no reference captions"), "{e}");
}

#[test]
fn duplicate_results_are_an_error() {
    let e = metrics_error(
        ANN,
        r#"[{"image_id": 1, "caption": "a dog"}, {"image_id": 1, "caption": "a cat"}]"#,
    );
    assert!(e.contains("more than one result for image 1"), "{e}");
}

#[test]
fn empty_results_are_an_error() {
    let e = metrics_error(ANN, "[]");
    assert!(e.contains("no results"), "{e}");
}

#[test]
fn only_images_with_results_are_evaluated() {
    let eval = evaluate_coco_detailed(
        ANN,
        r#"[{"image_id": "b", "caption": "a cat", "score": 0.5}]"#,
    )
    .expect("evaluate");
    assert_eq!(eval.per_image.len(), 1);
    assert_eq!(eval.per_image[0].image_id, ImageId::Str("b".into()));
    assert!((eval.scores.bleu_1 - 1.0).abs() < 1e-6);
}

#[test]
fn image_without_references_is_an_error_in_evaluate() {
    let images = [ImageCaptions {
        image_id: ImageId::Int(3),
        hypothesis: "a dog".into(),
        references: vec![],
    }];
    assert!(matches!(evaluate(&images), Err(Error::Metrics { .. })));
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn missing_file_is_an_io_error_naming_it() {
    let missing = std::path::Path::new("/nonexistent/annotations.json");
    let e = metrics::evaluate_coco_files(missing, missing).expect_err("missing file");
    assert!(matches!(e, Error::Io { .. }));
    assert!(
        e.to_string().contains("/nonexistent/annotations.json"),
        "{e}"
    );
}
