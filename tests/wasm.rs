//! Browser tests (headless Chromium, main thread): the tiny fixture model loaded through the same
//! JS-facing API the page uses gives the token ids `transformers` recorded in
//! `tests/fixtures/expected.json`, and bad input raises JS errors rather than panics.
//!
//! Run with `cargo test-wasm` (see `.cargo/config.toml`; needs `wasm-bindgen-test-runner` and
//! chromedriver, e.g. `CHROMEDRIVER=/usr/bin/chromedriver`).
#![cfg(target_arch = "wasm32")]

use std::cell::OnceCell;

use blipq::checkpoint::ByteSource;
use blipq::web::{wasm_memory_bytes, JsBytes, WasmCaptioner};
use serde::Deserialize;
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

mod web_fixture;
use web_fixture::{files_object, TINY};
#[path = "common/case.rs"]
mod case;
use case::{case_options, ids};

const IMAGES: [(&str, &[u8]); 7] = [
    (
        "astronaut.jpg",
        include_bytes!("fixtures/images/astronaut.jpg"),
    ),
    ("camera.png", include_bytes!("fixtures/images/camera.png")),
    ("chelsea.png", include_bytes!("fixtures/images/chelsea.png")),
    ("coffee.jpg", include_bytes!("fixtures/images/coffee.jpg")),
    (
        "ihc_palette.png",
        include_bytes!("fixtures/images/ihc_palette.png"),
    ),
    (
        "coins_gray16.png",
        include_bytes!("fixtures/images/coins_gray16.png"),
    ),
    (
        "rocket_rgba.png",
        include_bytes!("fixtures/images/rocket_rgba.png"),
    ),
];

const EXPECTED: &str = include_str!("fixtures/expected.json");
const EXPECTED_TENSORS: &[u8] = include_bytes!("fixtures/expected.safetensors");

/// The cases whose ids must match.
const CASES: [&str; 4] = ["greedy", "beam3", "prompt", "min_length_10"];

thread_local! {
    static MODEL: OnceCell<WasmCaptioner> = const { OnceCell::new() };
}

/// Runs `f` with the tiny model, loaded once per test binary.
fn with_model<R>(f: impl FnOnce(&WasmCaptioner) -> R) -> R {
    MODEL.with(|cell| {
        let model = cell
            .get_or_init(|| WasmCaptioner::new(files_object(None)).expect("tiny fixture loads"));
        f(model)
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaptionOut {
    caption: String,
    token_ids: Vec<u32>,
    new_tokens: usize,
    timings: Timings,
}

#[derive(Debug, Deserialize)]
struct Timings {
    preprocess_s: f64,
    vision_s: f64,
    decode_s: f64,
    total_s: f64,
}

/// JS options object for a fixture case, built from its recorded generate kwargs.
fn js_case_options(case: &Value) -> JsValue {
    let obj = js_sys::Object::new();
    let kw = &case["generate_kwargs"];
    let set = |k: &str, v: JsValue| js_sys::Reflect::set(&obj, &k.into(), &v).unwrap();
    if let Some(text) = case.get("text").and_then(Value::as_str) {
        set("prompt", text.into());
    }
    for (py, js) in [
        ("max_length", "maxLength"),
        ("min_length", "minLength"),
        ("num_beams", "numBeams"),
    ] {
        if let Some(n) = kw.get(py).and_then(Value::as_f64) {
            set(js, n.into());
        }
    }
    obj.into()
}

fn error_message(e: JsValue) -> String {
    e.dyn_into::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|v| format!("(not an Error: {v:?})"))
}

/// End to end from image bytes through the JS API: decode, preprocess, vision, generate, decode
/// text. Lossless images must give transformers' ids exactly; JPEG decoders round differently
/// from libjpeg-turbo (the native preprocessing tests bound that difference rather than pin it),
/// so a JPEG whose ids drift is reported on the console, and its ids are checked exactly from
/// the fixture's `pixel_values` in the next test.
#[wasm_bindgen_test]
fn captions_from_image_bytes_match_transformers() {
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    let mut recorded: Vec<&str> = expected["images"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    recorded.sort();
    let mut ours: Vec<&str> = IMAGES.iter().map(|(n, _)| *n).collect();
    ours.sort();
    assert_eq!(
        ours, recorded,
        "IMAGES must list the images of expected.json"
    );
    let mut mismatches = Vec::new();
    let mut exact = 0;
    with_model(|model| {
        for (name, bytes) in IMAGES {
            let lossy = name.ends_with(".jpg") || name.ends_with(".jpeg");
            for case in CASES {
                let want = &expected["images"][name][case];
                let out = model
                    .caption(bytes, js_case_options(want), None)
                    .unwrap_or_else(|e| panic!("{name}/{case}: {}", error_message(e)));
                let out: CaptionOut = serde_wasm_bindgen::from_value(out).unwrap();
                let want_ids = ids(&want["ids"]);
                let prefix = ids(want
                    .get("decoder_input_ids")
                    .unwrap_or(&Value::from(vec![30522])));
                assert!(
                    out.token_ids.starts_with(&prefix),
                    "{name}/{case}: {:?}",
                    out.token_ids
                );
                assert!(
                    out.token_ids.len() <= 20,
                    "{name}/{case}: {:?}",
                    out.token_ids
                );
                assert_eq!(out.new_tokens, out.token_ids.len() - prefix.len());
                if out.token_ids == want_ids {
                    assert_eq!(
                        out.caption,
                        want["caption"].as_str().unwrap(),
                        "{name}/{case}"
                    );
                    exact += 1;
                } else {
                    let msg = format!("{name}/{case}: got {:?}, want {want_ids:?}", out.token_ids);
                    if lossy {
                        web_sys::console::log_1(
                            &format!("JPEG decode drift (not a failure): {msg}").into(),
                        );
                    } else {
                        mismatches.push(msg);
                    }
                }
            }
        }
    });
    assert!(
        mismatches.is_empty(),
        "token ids differ:\n{}",
        mismatches.join("\n")
    );
    let lossless = IMAGES.iter().filter(|(n, _)| n.ends_with(".png")).count();
    assert!(
        exact >= lossless * CASES.len(),
        "only {exact} cases matched exactly"
    );
}

/// The same ids from the fixture's `pixel_values` (image decoding and resizing taken out), through
/// the engine as compiled for the browser.
#[wasm_bindgen_test]
fn ids_from_fixture_pixel_values_match_transformers() {
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(EXPECTED_TENSORS).unwrap();
    let file = |n: &str| TINY.iter().find(|(k, _)| *k == n).map(|(_, b)| *b).unwrap();
    let text = |n: &str| String::from_utf8(file(n).to_vec()).unwrap();
    let weights = blipq::checkpoint::Safetensors::new(
        Box::new(JsBytes::new(js_sys::Uint8Array::from(file(
            "model.safetensors",
        )))),
        "model.safetensors",
    )
    .unwrap();
    let engine = blipq::Captioner::load(blipq::ModelFiles {
        config: text("config.json"),
        weights: blipq::checkpoint::Checkpoint::Safetensors(weights),
        tokenizer: file("tokenizer.json").to_vec(),
        tokenizer_config: Some(text("tokenizer_config.json")),
        preprocessor: (
            "processor_config.json".into(),
            text("processor_config.json"),
        ),
        generation: Some(text("generation_config.json")),
    })
    .unwrap();
    for (name, _) in IMAGES {
        let view = tensors.tensor(&format!("{name}/pixel_values")).unwrap();
        let pixels = candle_core::Tensor::from_raw_buffer(
            view.data(),
            candle_core::DType::F32,
            view.shape(),
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .unsqueeze(0)
        .unwrap();
        let embeds = engine.encode_image(&pixels).unwrap();
        for case in CASES {
            let want = &expected["images"][name][case];
            let opts = case_options(want);
            let (got, _) = engine.generate_ids(&embeds, &opts, &mut |_| {}).unwrap();
            assert_eq!(got, ids(&want["ids"]), "{name}/{case}");
        }
    }
}

#[wasm_bindgen_test]
fn streams_partial_captions_and_reports_timings() {
    let partials = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let sink = partials.clone();
    let cb = wasm_bindgen::closure::Closure::<dyn FnMut(String)>::new(move |s: String| {
        sink.borrow_mut().push(s)
    });
    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"fixedNewTokens".into(), &5.into()).unwrap();
    let out = with_model(|m| {
        m.caption(
            IMAGES[0].1,
            opts.into(),
            Some(cb.as_ref().unchecked_ref::<js_sys::Function>().clone()),
        )
    })
    .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let out: CaptionOut = serde_wasm_bindgen::from_value(out).unwrap();
    assert_eq!(out.new_tokens, 5);
    assert_eq!(out.token_ids.len(), 6, "bos + 5 tokens");
    let partials = partials.borrow();
    assert!(!partials.is_empty(), "onToken was never called");
    assert_eq!(partials.last().unwrap(), &out.caption);
    let t = &out.timings;
    assert!(t.preprocess_s >= 0.0 && t.vision_s >= 0.0 && t.decode_s >= 0.0);
    assert!(t.total_s >= t.vision_s && t.total_s > 0.0, "{t:?}");
}

#[wasm_bindgen_test]
fn info_reports_model_facts() {
    let info = with_model(|m| m.info()).unwrap();
    let get = |k: &str| js_sys::Reflect::get(&info, &k.into()).unwrap();
    assert_eq!(
        get("version").as_string().unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get("dtype").as_string().unwrap(), "float32");
    assert_eq!(get("is_quantized").as_bool(), Some(false));
    assert!(get("total_parameters").as_f64().unwrap() > 0.0);
    assert_eq!(get("bos_token_id").as_f64(), Some(30522.0));
    assert_eq!(get("sep_token_id").as_f64(), Some(102.0));
    let size: Vec<u32> = serde_wasm_bindgen::from_value(get("image_size")).unwrap();
    assert_eq!(size, vec![80, 80]);
    assert_eq!(blipq::web::version(), env!("CARGO_PKG_VERSION"));
    assert!(wasm_memory_bytes() > 0.0);
}

#[wasm_bindgen_test]
fn js_bytes_copy_only_the_requested_range() {
    let data: Vec<u8> = (0..=255).collect();
    let src = JsBytes::new(js_sys::Uint8Array::from(data.as_slice()));
    assert_eq!(src.len(), 256);
    assert_eq!(&*src.read(10, 14).unwrap(), &[10, 11, 12, 13]);
    assert!(src.read(0, 0).unwrap().is_empty());
    assert!(src.read(250, 257).is_err());
    assert!(src.read(5, 4).is_err());
}

#[wasm_bindgen_test]
fn bad_image_bytes_raise_an_error() {
    let err = with_model(|m| m.caption(b"definitely not an image", JsValue::UNDEFINED, None))
        .unwrap_err();
    let msg = error_message(err);
    assert!(msg.contains("image"), "{msg}");
    let err = with_model(|m| m.caption(&[], JsValue::UNDEFINED, None)).unwrap_err();
    assert!(error_message(err).contains("image"));
    // Truncated PNG: valid header, missing data.
    let err = with_model(|m| m.caption(&IMAGES[1].1[..200], JsValue::UNDEFINED, None)).unwrap_err();
    assert!(error_message(err).contains("image"));
}

#[wasm_bindgen_test]
fn bad_options_raise_errors() {
    let opts = |k: &str, v: JsValue| {
        let o = js_sys::Object::new();
        js_sys::Reflect::set(&o, &k.into(), &v).unwrap();
        JsValue::from(o)
    };
    let image = IMAGES[0].1;
    for (k, v, want) in [
        ("numBeams", JsValue::from(0), "num_beams"),
        ("maxLenght", JsValue::from(5), "maxLenght"),
        ("maxLength", JsValue::from(-3), "caption options"),
        ("prompt", JsValue::from(3), "caption options"),
        ("maxLength", JsValue::from("twenty"), "caption options"),
    ] {
        let err = with_model(|m| m.caption(image, opts(k, v.clone()), None));
        let msg = error_message(err.err().unwrap_or_else(|| panic!("{k} = {v:?} accepted")));
        assert!(msg.contains(want), "{k}: {msg}");
    }
    let err = with_model(|m| m.caption(image, JsValue::from(3), None)).unwrap_err();
    assert!(error_message(err).contains("caption options"));
}

/// `Captioner.bench`: the library's benchmark loop ([`blipq::eval::bench::run`]) behind the page's
/// benchmark worker: samples equal `caption()`'s, a fetch failure is recorded with its message
/// and the run goes on, `onItem` follows every item, and bad input is refused by name.
#[wasm_bindgen_test]
fn bench_runs_the_librarys_loop() {
    let items = js_json(
        r#"[{"file": "camera.png", "image_id": 1, "references": ["a camera"]},
            {"file": "gone.png", "image_id": 2, "references": []},
            {"file": "coffee.jpg", "image_id": "c", "references": []}]"#,
    );
    let images = js_sys::Array::new();
    images.push(&js_sys::Uint8Array::from(IMAGES[1].1));
    images.push(&JsValue::from_str("HTTP 404 for gone.png"));
    images.push(&js_sys::Uint8Array::from(IMAGES[3].1));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<(u32, String)>::new()));
    let sink = seen.clone();
    let cb = wasm_bindgen::closure::Closure::<dyn FnMut(u32, JsValue)>::new(
        move |done: u32, outcome: JsValue| {
            let sample = js_sys::Reflect::get(&outcome, &"sample".into()).unwrap();
            let kind = if sample.is_object() {
                "sample"
            } else {
                "failure"
            };
            sink.borrow_mut().push((done, kind.to_string()));
        },
    );
    let f = cb.as_ref().unchecked_ref::<js_sys::Function>().clone();
    let out = with_model(|m| m.bench(items.clone(), images.clone(), JsValue::NULL, 2, Some(f)))
        .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let out: Value = serde_wasm_bindgen::from_value(out).unwrap();
    let samples = out["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for (sample, (name, bytes)) in samples.iter().zip([IMAGES[1], IMAGES[3]]) {
        let alone: CaptionOut = serde_wasm_bindgen::from_value(
            with_model(|m| m.caption(bytes, JsValue::NULL, None)).unwrap(),
        )
        .unwrap();
        assert_eq!(sample["image"], name);
        assert_eq!(ids(&sample["token_ids"]), alone.token_ids, "{name}");
        assert_eq!(sample["caption"], alone.caption.as_str());
    }
    assert_eq!(samples[1]["image_id"], "c");
    assert_eq!(
        out["failures"],
        serde_json::json!([{"image": "gone.png", "error": "HTTP 404 for gone.png"}])
    );
    assert_eq!(
        *seen.borrow(),
        [
            (1, "sample".to_string()),
            (2, "failure".into()),
            (3, "sample".into())
        ]
    );
    let short = js_sys::Array::new();
    let err = with_model(|m| m.bench(items.clone(), short, JsValue::NULL, 0, None)).unwrap_err();
    assert!(error_message(err).contains("0 images for 3 items"));
    let err = with_model(|m| m.bench(JsValue::from(1), images.clone(), JsValue::NULL, 0, None))
        .unwrap_err();
    assert!(error_message(err).contains("bench: items"));
    let bad_opts = js_json(r#"{"numBeans": 2}"#);
    let err =
        with_model(|m| m.bench(items.clone(), images.clone(), bad_opts, 0, None)).unwrap_err();
    assert!(error_message(err).contains("numBeans"));
}

/// The page fetches the files the engine reads, by the engine's names (`blipq::checkpoint::files`).
#[wasm_bindgen_test]
fn checkpoint_file_names_are_the_engines() {
    let names: Value =
        serde_wasm_bindgen::from_value(blipq::web::checkpoint_file_names().unwrap()).unwrap();
    assert_eq!(
        names,
        serde_json::json!({
            "weights": ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"],
            "shardedIndex": "model.safetensors.index.json",
            "required": ["config.json", "tokenizer.json"],
            "preprocessor": ["preprocessor_config.json", "processor_config.json"],
            "optional": ["tokenizer_config.json", "generation_config.json"],
            "extra": ["special_tokens_map.json", "vocab.txt"],
        })
    );
}

#[wasm_bindgen_test]
fn throwing_callback_is_rethrown() {
    let f = js_sys::Function::new_with_args("text", "throw new TypeError('stop: ' + text.length)");
    let err = with_model(|m| m.caption(IMAGES[0].1, JsValue::UNDEFINED, Some(f))).unwrap_err();
    assert!(err.is_instance_of::<js_sys::TypeError>(), "{err:?}");
}

#[wasm_bindgen_test]
fn missing_or_bad_files_raise_errors() {
    for (skip, want) in [
        ("model.safetensors", "model.safetensors"),
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("processor_config.json", "preprocessor_config.json"),
    ] {
        let err = WasmCaptioner::new(files_object(Some(skip)))
            .err()
            .expect("load fails");
        let msg = error_message(err);
        assert!(msg.contains(want), "without {skip}: {msg}");
    }
    assert!(error_message(WasmCaptioner::new(JsValue::from(7)).err().unwrap()).contains("object"));

    let with = |name: &str, value: JsValue| {
        let files = files_object(None);
        js_sys::Reflect::set(&files, &name.into(), &value).unwrap();
        WasmCaptioner::new(files).err().map(error_message)
    };
    let truncated = js_sys::Uint8Array::from(&TINY[2].1[..TINY[2].1.len() / 2]);
    let msg = with("model.safetensors", truncated.into()).expect("truncated weights fail");
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    let msg = with(
        "config.json",
        js_sys::Uint8Array::from(&b"{not json"[..]).into(),
    )
    .expect("bad config fails");
    assert!(msg.contains("config.json"), "{msg}");
    let msg = with("tokenizer.json", JsValue::from("a string")).expect("non-bytes fail");
    assert!(msg.contains("Uint8Array"), "{msg}");
    // A pytorch_model.bin that is not a torch.save zip is refused by name.
    let files = files_object(Some("model.safetensors"));
    let pth = js_sys::Uint8Array::new_with_length(4);
    js_sys::Reflect::set(&files, &"pytorch_model.bin".into(), &pth).unwrap();
    let msg = error_message(WasmCaptioner::new(files).err().expect("bad pth refused"));
    assert!(msg.contains("pytorch_model.bin"), "{msg}");
    // A sharded checkpoint's index that names no tensors is refused by name.
    let files = files_object(Some("model.safetensors"));
    let index = js_sys::Uint8Array::from(&br#"{"weight_map": {}}"#[..]);
    js_sys::Reflect::set(&files, &"model.safetensors.index.json".into(), &index).unwrap();
    let msg = error_message(WasmCaptioner::new(files).err().expect("index refused"));
    assert!(
        msg.contains("model.safetensors.index.json") && msg.contains("no tensors"),
        "{msg}"
    );
    // A path prefix and an ArrayBuffer are fine.
    let files = files_object(Some("config.json"));
    let buf = js_sys::Uint8Array::from(TINY[0].1).buffer();
    js_sys::Reflect::set(&files, &"tiny/config.json".into(), &buf).unwrap();
    assert!(WasmCaptioner::new(files).is_ok());
}

fn js_json(text: &str) -> JsValue {
    js_sys::JSON::parse(text).expect("valid JSON")
}

#[wasm_bindgen_test]
fn bleu4_export_is_the_metrics_bleu4() {
    let refs = [
        "a red circle above a blue square",
        "a blue square below a red circle",
    ];
    let js_refs = serde_wasm_bindgen::to_value(&refs).unwrap();
    for hyp in [
        "a red circle above a blue square",
        "a red circle",
        "two green triangles",
        "",
    ] {
        let got = blipq::web::bleu4_js(hyp, js_refs.clone()).unwrap();
        assert_eq!(got, blipq::eval::metrics::bleu4(hyp, &refs), "{hyp}");
        assert!((0.0..=1.0).contains(&got), "{hyp}: {got}");
    }
    assert!(
        (blipq::web::bleu4_js(refs[0], js_refs.clone()).unwrap() - 1.0).abs() < 1e-9,
        "an exact match scores 1"
    );
    let empty = serde_wasm_bindgen::to_value::<[&str; 0]>(&[]).unwrap();
    assert_eq!(blipq::web::bleu4_js("a red circle", empty).unwrap(), 0.0);
    let err = blipq::web::bleu4_js("x", JsValue::from(3)).unwrap_err();
    let msg = error_message(err);
    assert!(msg.contains("bleu4") && msg.contains("references"), "{msg}");
}

const ANNOTATIONS: &str = r#"{
  "images": [{"id": 7, "file_name": "b.png"}, {"id": 3, "file_name": "a.png"}],
  "annotations": [
    {"image_id": 3, "caption": "a red circle"},
    {"image_id": 7, "caption": "a blue square"},
    {"image_id": 7, "caption": "one blue square"}
  ]
}"#;

#[wasm_bindgen_test]
fn bench_items_reads_coco_annotations_like_the_cli() {
    let items = blipq::web::bench_items(ANNOTATIONS, None).unwrap();
    let items: Vec<blipq::eval::bench::Item> = serde_wasm_bindgen::from_value(items).unwrap();
    let ann = blipq::eval::metrics::parse_annotations(ANNOTATIONS, "x").unwrap();
    assert_eq!(items, blipq::eval::bench::items_from_annotations(&ann));
    assert_eq!(items[0].file, "b.png");
    assert_eq!(items[0].references.len(), 2);
    let err =
        blipq::web::bench_items("{\"images\": 3}", Some("eval/captions.json".into())).unwrap_err();
    let msg = error_message(err);
    assert!(msg.contains("eval/captions.json"), "{msg}");
}

/// One model's run as the page sends it.
fn run_json(label: &str, quantized: bool, scale: f64) -> String {
    let sample = |image: &str, id: i64, caption: &str, total: f64| {
        serde_json::json!({
            "image": image, "image_id": id, "caption": caption, "token_ids": [30522, 1037, 2417, 102],
            "new_tokens": 3,
            "timings": {"preprocess_s": 0.001, "vision_s": total * 0.5, "decode_s": total * 0.4, "total_s": total}
        })
    };
    serde_json::json!({
        "label": label,
        "samples": [sample("b.png", 7, "a blue square", 0.02 * scale), sample("a.png", 3, "a red circle", 0.03 * scale)],
        "failures": [{"image": "c.png", "error": "image c.png: not found"}],
        "info": {"total_parameters": 1000, "is_quantized": quantized, "dtype": if quantized { "int8" } else { "float32" }, "image_size": [96, 96]},
        "modelSizeBytes": 3.0 * 1048576.0 * scale,
        "modelPath": format!("models/{label}"),
        "peakMemoryBytes": 20.0 * 1048576.0 * scale,
    })
    .to_string()
}

#[wasm_bindgen_test]
fn bench_report_matches_the_cli_report() {
    let input = format!(
        r#"{{"items": {}, "models": [{}, {}]}}"#,
        serde_json::to_string(&blipq::eval::bench::items_from_annotations(
            &blipq::eval::metrics::parse_annotations(ANNOTATIONS, "x").unwrap()
        ))
        .unwrap(),
        run_json("demo", false, 1.0),
        run_json("demo-int8", true, 0.5)
    );
    let out = blipq::web::bench_report(js_json(&input)).unwrap();
    let get = |v: &JsValue, k: &str| js_sys::Reflect::get(v, &k.into()).unwrap();
    let models = js_sys::Array::from(&get(&out, "models"));
    assert_eq!(models.length(), 2);
    let results: Vec<blipq::eval::bench::ModelResults> = models
        .iter()
        .map(|m| serde_json::from_str(&get(&m, "resultsJson").as_string().unwrap()).unwrap())
        .collect();
    let fp32 = &results[0];
    assert_eq!(fp32.label, "demo");
    assert_eq!(fp32.performance_metrics.total_samples, 2);
    assert_eq!(fp32.performance_metrics.failed_samples, 1);
    assert!((fp32.performance_metrics.avg_inference_time - 0.025).abs() < 1e-12);
    assert_eq!(fp32.performance_metrics.memory_usage_mb, Some(20.0));
    assert_eq!(fp32.model_info.model_size_mb, 3.0);
    assert_eq!(fp32.model_info.model_path, "models/demo");
    assert_eq!(fp32.model_info.device, blipq::web::browser_device());
    assert!(results[1].model_info.is_quantized);
    // The files' text is exactly what `blipq bench` would write for the same samples: results
    // assembled with the library's `bench::model_results`, as src/bin/blipq/bench.rs does.
    let items = blipq::eval::bench::items_from_annotations(
        &blipq::eval::metrics::parse_annotations(ANNOTATIONS, "x").unwrap(),
    );
    let run: Value = serde_json::from_str(&run_json("demo", false, 1.0)).unwrap();
    let samples: Vec<blipq::eval::bench::Sample> =
        serde_json::from_value(run["samples"].clone()).unwrap();
    let failures: Vec<blipq::eval::bench::Failure> =
        serde_json::from_value(run["failures"].clone()).unwrap();
    let expected = blipq::eval::bench::model_results(
        "demo",
        &items,
        blipq::eval::bench::Run { samples, failures },
        1,
        Some(20.0),
        blipq::eval::bench::ModelInfoReport {
            total_parameters: 1000,
            model_size_mb: 3.0,
            device: blipq::web::browser_device(),
            is_quantized: false,
            dtype: "float32".into(),
            model_path: "models/demo".into(),
        },
    )
    .unwrap();
    assert!(expected.quality_metrics.as_ref().unwrap().bleu_score > 0.0);
    assert_eq!(
        get(&models.get(0), "resultsJson").as_string().unwrap(),
        serde_json::to_string_pretty(&expected).unwrap()
    );
    assert_eq!(
        get(&models.get(1), "captionsJson").as_string().unwrap(),
        serde_json::to_string_pretty(&blipq::eval::bench::coco_results(&results[1].samples))
            .unwrap()
    );
    let md = get(&out, "comparisonMarkdown").as_string().unwrap();
    assert_eq!(md, blipq::eval::bench::comparison_markdown(&results));
    assert!(
        md.contains("| Inference speed (s/image) | 0.025 | 0.013 | 2.00x faster |"),
        "{md}"
    );
    assert!(
        md.contains("| Memory (MB) | 20.0 | 10.0 | -50.0% |"),
        "{md}"
    );
    assert_eq!(
        get(&out, "comparisonJson").as_string().unwrap(),
        serde_json::to_string_pretty(&blipq::eval::bench::comparison_json(&results)).unwrap()
    );
    // The trade-off charts, the very SVG files `blipq bench` writes.
    let charts = js_sys::Array::from(&get(&out, "charts"));
    let want = blipq::eval::chart::tradeoff_charts(&results);
    assert_eq!(charts.length() as usize, want.len());
    assert_eq!(want.len(), 2);
    for (i, (file, svg)) in want.iter().enumerate() {
        let c = charts.get(i as u32);
        assert_eq!(get(&c, "file").as_string().unwrap(), *file);
        assert_eq!(get(&c, "svg").as_string().unwrap(), *svg);
    }
}

#[wasm_bindgen_test]
fn bench_report_errors_name_the_problem() {
    let msg = |input: &str| error_message(blipq::web::bench_report(js_json(input)).unwrap_err());
    let m = msg(r#"{"items": [], "models": []}"#);
    assert!(m.contains("benchReport") && m.contains("models"), "{m}");
    let m = msg(r#"{"items": []}"#);
    assert!(m.contains("benchReport") && m.contains("models"), "{m}");
    let m = msg(&format!(
        r#"{{"items": [], "models": [{}]}}"#,
        run_json("demo", false, 1.0).replace("modelSizeBytes", "modelSize")
    ));
    assert!(m.contains("modelSize"), "{m}");
    // A sample whose image has no references is fine (no quality metrics for it); but a result
    // for an annotated image without references is the metrics' error, passed through.
    let items = r#"[{"file": "b.png", "image_id": 7, "references": []}]"#;
    let out = blipq::web::bench_report(js_json(&format!(
        r#"{{"items": {items}, "models": [{}]}}"#,
        run_json("demo", false, 1.0)
    )));
    assert!(out.is_ok(), "{:?}", out.err().map(error_message));
}

#[wasm_bindgen_test]
fn too_large_models_are_refused_in_plain_words() {
    use blipq::web::{check_fits_in_wasm_memory, WASM32_MAX_MEMORY_BYTES};
    assert!(check_fits_in_wasm_memory("model.safetensors", 1e9, 1e8).is_ok());
    let err = check_fits_in_wasm_memory("model.safetensors", WASM32_MAX_MEMORY_BYTES, 1e8)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("too large for wasm memory"),
        "{err}"
    );
    // The estimate of the tiny fixture: every tensor as F32, i.e. its data size (it is all F32).
    let ckpt =
        blipq::checkpoint::Safetensors::new(Box::new(TINY[2].1.to_vec()), "model.safetensors")
            .unwrap();
    let est = blipq::web::loaded_bytes_estimate(&ckpt.header);
    let data: usize = ckpt.header.tensors.values().map(|e| e.end - e.start).sum();
    assert_eq!(est, data as f64);
}

#[wasm_bindgen_test]
fn weights_are_judged_from_the_start_of_a_download() {
    use blipq::web::check_weights_prefix;
    let file = TINY[2].1;
    assert_eq!(check_weights_prefix(&file[..4]).unwrap(), 8);
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as u32;
    assert_eq!(check_weights_prefix(&file[..8]).unwrap(), 8 + n);
    assert_eq!(check_weights_prefix(&file[..8 + n as usize]).unwrap(), 0);
    // A header describing 3 GiB of F16 weights (6 GiB once converted to F32) stops the download
    // with the engine's message.
    let header = r#"{"w":{"dtype":"F16","shape":[1610612736],"data_offsets":[0,3221225472]}}"#;
    let mut prefix = (header.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(header.as_bytes());
    let msg = error_message(check_weights_prefix(&prefix).unwrap_err());
    assert!(msg.contains("too large for wasm memory"), "{msg}");
    // A header breaking the format's rules is refused the same way.
    let bad = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut prefix = (bad.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(bad.as_bytes());
    let msg = error_message(check_weights_prefix(&prefix).unwrap_err());
    assert!(msg.contains("a gap"), "{msg}");
}

/// The build under test names itself and its INT8 kernel, and the reports' device string says
/// which build ran on how many threads (this test build is single-threaded).
#[wasm_bindgen_test]
fn build_and_device_name_the_int8_kernel() {
    use blipq::kernels::q8::Kernel;
    let (build, kernel) = if cfg!(feature = "relaxed-simd") {
        // The single-dot kernel where the engine computes it exactly (probed), else the planes.
        let relaxed = if Kernel::RelaxedSimdU8.is_available() {
            Kernel::RelaxedSimdU8
        } else {
            Kernel::RelaxedSimd
        };
        ("relaxed-simd", relaxed)
    } else {
        ("simd128", Kernel::Simd128)
    };
    assert_eq!(blipq::web::wasm_build(), build);
    assert_eq!(Kernel::best(), kernel);
    assert_eq!(
        blipq::web::browser_device(),
        format!("wasm32 {build} (browser, 1 thread)")
    );
}

/// The tiny fixture's weights as `torch.save` wrote them (`tests/fixtures/tiny-bin`, tied tensors
/// sharing storage) load through the JS API from their bytes and caption exactly as the
/// safetensors copy does.
#[wasm_bindgen_test]
fn pytorch_model_bin_loads_from_its_bytes() {
    let files = files_object(Some("model.safetensors"));
    let pth = js_sys::Uint8Array::from(&include_bytes!("fixtures/tiny-bin/pytorch_model.bin")[..]);
    js_sys::Reflect::set(&files, &"pytorch_model.bin".into(), &pth).unwrap();
    let bin = WasmCaptioner::new(files).unwrap_or_else(|e| panic!("{}", error_message(e)));
    captions_like_the_tiny_model(&bin, &IMAGES[..2]);
}

/// `model` gives the tiny model's token ids for each of `images`.
fn captions_like_the_tiny_model(model: &WasmCaptioner, images: &[(&str, &[u8])]) {
    let ids = |m: &WasmCaptioner, bytes: &[u8]| {
        let out: CaptionOut =
            serde_wasm_bindgen::from_value(m.caption(bytes, JsValue::UNDEFINED, None).unwrap())
                .unwrap();
        out.token_ids
    };
    for (name, bytes) in images {
        assert_eq!(ids(model, bytes), with_model(|m| ids(m, bytes)), "{name}");
    }
}

/// The tiny fixture split into two shards plus `model.safetensors.index.json`, handed over by
/// name as the page does: `shardNames` lists the shards to fetch, and the model captions exactly
/// as the single file does; a missing shard is an error naming it.
#[wasm_bindgen_test]
fn sharded_safetensors_load_from_their_files() {
    let st = safetensors::SafeTensors::deserialize(TINY[2].1).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut map = serde_json::Map::new();
    let mut shards = Vec::new();
    for (s, shard) in names.iter().enumerate() {
        let part: Vec<_> = tensors.iter().skip(s).step_by(2).cloned().collect();
        for (n, _) in &part {
            map.insert(n.clone(), serde_json::json!(shard));
        }
        shards.push((*shard, safetensors::serialize(part, None).unwrap()));
    }
    let index = serde_json::to_vec(&serde_json::json!({ "weight_map": map })).unwrap();
    assert_eq!(blipq::web::shard_names(&index).unwrap(), names);
    // The files, with the shards up to `upto`.
    let files = |upto: usize| {
        let files = files_object(Some("model.safetensors"));
        let set = |name: &str, data: &[u8]| {
            js_sys::Reflect::set(&files, &name.into(), &js_sys::Uint8Array::from(data)).unwrap();
        };
        set("model.safetensors.index.json", &index);
        for (name, data) in &shards[..upto] {
            set(name, data);
        }
        files
    };
    let sharded = WasmCaptioner::new(files(2)).unwrap_or_else(|e| panic!("{}", error_message(e)));
    captions_like_the_tiny_model(&sharded, &IMAGES[..1]);
    let msg = error_message(
        WasmCaptioner::new(files(1))
            .err()
            .expect("a shard is missing"),
    );
    assert!(
        msg.contains("model-00002-of-00002.safetensors") && msg.contains("missing"),
        "{msg}"
    );
}

/// "Make INT8" in the page: `quantizeCheckpoint` gives the INT8 `model.safetensors` (its metadata
/// naming the source file's SHA-256), the source's other files (the same objects), progress in
/// two stages, and a checkpoint that loads as INT8 and captions; its own output is refused as a
/// source. (That the bytes equal `blipq quantize`'s is checked by the e2e test against the CLI.)
#[wasm_bindgen_test]
fn quantize_checkpoint_makes_the_int8_files() {
    let files = files_object(None);
    let seen = js_sys::Array::new();
    let on_progress =
        js_sys::Function::new_with_args("stage, done, total", "this.push([stage, done, total])")
            .bind0(&seen);
    let out = blipq::web::quantize_checkpoint_js(files.clone(), Some(on_progress), None, None)
        .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).unwrap();
    let made = get(&out, "files");
    let weights = get(&made, "model.safetensors")
        .dyn_into::<js_sys::Uint8Array>()
        .unwrap()
        .to_vec();
    let source = TINY
        .iter()
        .find(|(n, _)| *n == "model.safetensors")
        .unwrap()
        .1;
    let source_sha = blipq::quantize::sha256_hex(source);
    assert_eq!(get(&out, "sourceSha256").as_string().unwrap(), source_sha);
    assert_eq!(
        get(&out, "sha256").as_string().unwrap(),
        blipq::quantize::sha256_hex(&weights)
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&weights).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["source"], source_sha);
    // The other files are passed through, not copied; the weights are new.
    for name in ["config.json", "tokenizer.json", "processor_config.json"] {
        assert!(
            js_sys::Object::is(&get(&made, name), &get(&files, name)),
            "{name} is the source's own object"
        );
    }
    let stages: Vec<String> = seen
        .iter()
        .map(|e| js_sys::Array::from(&e).get(0).as_string().unwrap())
        .collect();
    let first_quantize = stages.iter().position(|s| s == "quantize").unwrap();
    assert!(stages[..first_quantize].iter().all(|s| s == "hash") && first_quantize > 0);
    let last = js_sys::Array::from(&seen.get(seen.length() - 1));
    assert_eq!(last.get(1).as_f64(), last.get(2).as_f64(), "ends at total");
    // The result loads as INT8 and captions.
    let int8 = WasmCaptioner::new(made.clone()).unwrap_or_else(|e| panic!("{}", error_message(e)));
    let info: Value = serde_wasm_bindgen::from_value(int8.info().unwrap()).unwrap();
    assert_eq!(info["is_quantized"], true, "{info}");
    let out: CaptionOut = serde_wasm_bindgen::from_value(
        int8.caption(IMAGES[0].1, JsValue::UNDEFINED, None).unwrap(),
    )
    .unwrap();
    assert!(out.new_tokens > 0);
    // An INT8 source is refused by name.
    let msg =
        error_message(blipq::web::quantize_checkpoint_js(made, None, None, None).unwrap_err());
    assert!(msg.contains("already a blipq INT8"), "{msg}");
    // A throwing progress callback is rethrown.
    let f = js_sys::Function::new_with_args("", "throw new TypeError('stop')");
    let err = blipq::web::quantize_checkpoint_js(files.clone(), Some(f), None, None).unwrap_err();
    assert!(err.is_instance_of::<js_sys::TypeError>(), "{err:?}");
    // The half-precision schemes: F16 weights (metadata naming the scheme), and an unknown
    // scheme is refused by name.
    let half = blipq::web::quantize_checkpoint_js(files.clone(), None, Some("f16".into()), None)
        .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let weights = get(&get(&half, "files"), "model.safetensors")
        .dyn_into::<js_sys::Uint8Array>()
        .unwrap()
        .to_vec();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&weights).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["blipq_scheme"], "f16");
    assert!(meta
        .tensors()
        .values()
        .all(|t| t.dtype == safetensors::Dtype::F16));
    // Per-channel INT8 (int8 weights with F32 [out, 1] scales) and 4-bit (U8 nibbles, F16 group
    // scales): each loads as quantized (on the kernels checked against the scalar reference in
    // `q8_kernel`) and captions.
    for (scheme, weight_dtype, scale_dtype) in [
        (
            "int8-channel",
            safetensors::Dtype::I8,
            safetensors::Dtype::F32,
        ),
        ("q4_0", safetensors::Dtype::U8, safetensors::Dtype::F16),
        ("q4_g128", safetensors::Dtype::U8, safetensors::Dtype::F16),
    ] {
        let made =
            blipq::web::quantize_checkpoint_js(files.clone(), None, Some(scheme.into()), None)
                .unwrap_or_else(|e| panic!("{}", error_message(e)));
        let weights = get(&get(&made, "files"), "model.safetensors")
            .dyn_into::<js_sys::Uint8Array>()
            .unwrap()
            .to_vec();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&weights).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["blipq_scheme"], scheme);
        let tensors = meta.tensors();
        let layer = "text_decoder.bert.encoder.layer.0.intermediate.dense.weight";
        assert_eq!(tensors[layer].dtype, weight_dtype, "{scheme}");
        assert_eq!(
            tensors[&format!("{layer}_scale")].dtype,
            scale_dtype,
            "{scheme}"
        );
        let model = WasmCaptioner::new(get(&made, "files"))
            .unwrap_or_else(|e| panic!("{}", error_message(e)));
        let info: Value = serde_wasm_bindgen::from_value(model.info().unwrap()).unwrap();
        assert_eq!(info["is_quantized"], true, "{scheme}: {info}");
        let out: CaptionOut = serde_wasm_bindgen::from_value(
            model
                .caption(IMAGES[0].1, JsValue::UNDEFINED, None)
                .unwrap(),
        )
        .unwrap();
        assert!(out.new_tokens > 0, "{scheme}");
    }
    let msg = error_message(
        blipq::web::quantize_checkpoint_js(files, None, Some("q3".into()), None).unwrap_err(),
    );
    assert!(
        msg.contains("q3") && msg.contains("q8_0, int8-channel, q4_0, q4_g128, mixed, f16 or bf16"),
        "{msg}"
    );
}

/// "Make mixed" in the page: `quantizeCheckpoint(files, onProgress, "mixed", options)` runs the
/// sensitivity sweep on the built-in validation images (progress: hash, reference, sweep, plan,
/// write), returns the plan, writes it into the metadata and loads as a quantized model that
/// captions; bad options are refused by name. (That the bytes equal `blipq quantize --scheme
/// mixed`'s is checked by the e2e test against the CLI.)
#[wasm_bindgen_test]
fn quantize_checkpoint_makes_the_mixed_plan() {
    let files = files_object(None);
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).unwrap();
    let seen = js_sys::Array::new();
    let on_progress =
        js_sys::Function::new_with_args("stage, done, total", "this.push([stage, done, total])")
            .bind0(&seen);
    let options = js_sys::JSON::parse(r#"{"sizeBudget": 0.5}"#).unwrap();
    let made = blipq::web::quantize_checkpoint_js(
        files.clone(),
        Some(on_progress),
        Some("mixed".into()),
        Some(options),
    )
    .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let stages: Vec<String> = seen
        .iter()
        .map(|e| js_sys::Array::from(&e).get(0).as_string().unwrap())
        .collect();
    let order: Vec<&str> = stages.iter().fold(Vec::new(), |mut v, s| {
        if v.last() != Some(&s.as_str()) {
            v.push(s.as_str());
        }
        v
    });
    assert_eq!(
        order,
        ["hash", "reference", "sweep", "plan", "write"],
        "{stages:?}"
    );
    let plan: Value = serde_wasm_bindgen::from_value(get(&made, "plan")).unwrap();
    assert_eq!(plan["size_budget"], 0.5, "{plan}");
    let groups = plan["groups"].as_array().unwrap();
    assert!(groups.len() > 3, "{plan}");
    assert!(
        groups.iter().any(|g| g["precision"] == "q8_0")
            && plan["size_fraction"].as_f64() <= Some(0.5),
        "{plan}"
    );
    let weights = get(&get(&made, "files"), "model.safetensors")
        .dyn_into::<js_sys::Uint8Array>()
        .unwrap()
        .to_vec();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&weights).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["blipq_scheme"], "mixed");
    let in_file: Value = serde_json::from_str(&meta[blipq::checkpoint::int8::PLAN_KEY]).unwrap();
    for g in groups {
        assert_eq!(
            in_file[g["group"].as_str().unwrap()],
            g["precision"],
            "{in_file}"
        );
    }
    let model =
        WasmCaptioner::new(get(&made, "files")).unwrap_or_else(|e| panic!("{}", error_message(e)));
    let info: Value = serde_wasm_bindgen::from_value(model.info().unwrap()).unwrap();
    assert_eq!(info["is_quantized"], true, "{info}");
    let out: CaptionOut = serde_wasm_bindgen::from_value(
        model
            .caption(IMAGES[0].1, JsValue::UNDEFINED, None)
            .unwrap(),
    )
    .unwrap();
    assert!(out.new_tokens > 0);
    // Bad options: a budget below the smallest file, an unknown name, a mixed option for
    // another scheme.
    for (scheme, options, want) in [
        ("mixed", r#"{"sizeBudget": 0.001}"#, "size budget"),
        ("mixed", r#"{"qualityFloor": 2}"#, "quality floor 2"),
        ("mixed", r#"{"budget": 0.3}"#, "budget"),
        (
            "q8_0",
            r#"{"sizeBudget": 0.3}"#,
            "options of the mixed scheme",
        ),
        ("q8_0", r#"{"calibrate": true}"#, "it does nothing for q8_0"),
    ] {
        let msg = error_message(
            blipq::web::quantize_checkpoint_js(
                files.clone(),
                None,
                Some(scheme.into()),
                Some(js_sys::JSON::parse(options).unwrap()),
            )
            .unwrap_err(),
        );
        assert!(msg.contains(want), "{options}: {msg}");
    }
    // `calibrate` (4-bit schemes): the FP32 model runs on the built-in images first, and the
    // file says how its scales were chosen, and differs from plain rounding's.
    let seen = js_sys::Array::new();
    let on_progress =
        js_sys::Function::new_with_args("stage, done, total", "this.push([stage, done, total])")
            .bind0(&seen);
    let weights_of = |made: &JsValue| {
        get(&get(made, "files"), "model.safetensors")
            .dyn_into::<js_sys::Uint8Array>()
            .unwrap()
            .to_vec()
    };
    let calibrated = blipq::web::quantize_checkpoint_js(
        files.clone(),
        Some(on_progress),
        Some("q4_0".into()),
        Some(js_sys::JSON::parse(r#"{"calibrate": true}"#).unwrap()),
    )
    .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let first = js_sys::Array::from(&seen.get(0))
        .get(0)
        .as_string()
        .unwrap();
    assert_eq!(first, "calibrate");
    let weights = weights_of(&calibrated);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&weights).unwrap();
    assert_eq!(
        meta.metadata().as_ref().unwrap()[blipq::quantize::CALIBRATION_KEY],
        blipq::quantize::CALIBRATION_METHOD
    );
    let plain = blipq::web::quantize_checkpoint_js(files.clone(), None, Some("q4_0".into()), None)
        .unwrap_or_else(|e| panic!("{}", error_message(e)));
    assert_ne!(weights, weights_of(&plain));
    WasmCaptioner::new(get(&calibrated, "files"))
        .unwrap_or_else(|e| panic!("{}", error_message(e)));
    // `int8-channel` smooths instead, and says so.
    let smoothed = blipq::web::quantize_checkpoint_js(
        files.clone(),
        None,
        Some("int8-channel".into()),
        Some(js_sys::JSON::parse(r#"{"calibrate": true}"#).unwrap()),
    )
    .unwrap_or_else(|e| panic!("{}", error_message(e)));
    let weights = weights_of(&smoothed);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&weights).unwrap();
    assert_eq!(
        meta.metadata().as_ref().unwrap()[blipq::quantize::CALIBRATION_KEY],
        blipq::quantize::SMOOTHING_METHOD
    );
    let plain =
        blipq::web::quantize_checkpoint_js(files.clone(), None, Some("int8-channel".into()), None)
            .unwrap_or_else(|e| panic!("{}", error_message(e)));
    assert_ne!(weights, weights_of(&plain));
    WasmCaptioner::new(get(&smoothed, "files")).unwrap_or_else(|e| panic!("{}", error_message(e)));
}

/// `checkFileSize`: the engine's caps for files the page reads from the user, with the engine's
/// "too large" message naming the file; nonsense arguments throw too.
#[wasm_bindgen_test]
fn check_file_size_applies_the_engines_caps() {
    use blipq::limits::{MAX_ANNOTATIONS_BYTES, MAX_BENCH_IMAGES_BYTES, MAX_IMAGE_BYTES};
    use blipq::web::check_file_size;
    for (kind, max) in [
        ("image", MAX_IMAGE_BYTES),
        ("annotations", MAX_ANNOTATIONS_BYTES),
        ("benchmark images", MAX_BENCH_IMAGES_BYTES),
    ] {
        check_file_size(kind, "a.bin", max as f64).unwrap();
        check_file_size(kind, "a.bin", 0.0).unwrap();
        let msg = error_message(check_file_size(kind, "big.bin", max as f64 + 1.0).unwrap_err());
        assert!(
            msg.contains("big.bin") && msg.contains("over the limit"),
            "{msg}"
        );
    }
    let msg = error_message(check_file_size("video", "a", 1.0).unwrap_err());
    assert!(msg.contains("video"), "{msg}");
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(check_file_size("image", "a", bad).is_err(), "{bad}");
    }
}
