//! Browser test inside a dedicated Web Worker (where the page runs the model): load the tiny
//! fixture through the JS-facing API, caption one image, compare with `transformers`' ids, and
//! check that loading does not copy the whole weight file into wasm memory at once.
#![cfg(target_arch = "wasm32")]

use blipq::web::{wasm_memory_bytes, WasmCaptioner};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

mod web_fixture;
use web_fixture::{files_object, TINY};

const IMAGE: &[u8] = include_bytes!("fixtures/images/coffee.jpg");
const EXPECTED: &str = include_str!("fixtures/expected.json");

#[wasm_bindgen_test]
fn captions_in_a_dedicated_worker() {
    assert!(
        js_sys::global().is_instance_of::<web_sys::WorkerGlobalScope>(),
        "not running in a worker"
    );
    let files = files_object(None);
    let before = wasm_memory_bytes();
    let model = WasmCaptioner::new(files).expect("tiny fixture loads");
    let grown = wasm_memory_bytes() - before;
    // Linear memory never shrinks, so this bounds everything loading allocated (tokenizer
    // included). The weights themselves stayed in the JS Uint8Array until copied tensor by tensor.
    let weights = TINY[2].1.len() as f64;
    web_sys::console::log_1(
        &format!(
            "wasm memory grew by {:.1} MB loading {:.1} MB of weights",
            grown / blipq::MB,
            weights / blipq::MB
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
