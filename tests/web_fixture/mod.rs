//! The tiny fixture checkpoint as the browser tests hand it to the JS-facing API (`tests/wasm.rs`
//! on the main thread, `tests/wasm_worker.rs` in a dedicated worker).
#![allow(dead_code)]

use wasm_bindgen::JsValue;

/// The tiny checkpoint's files, by name.
pub const TINY: [(&str, &[u8]); 6] = [
    (
        "config.json",
        include_bytes!("../fixtures/tiny/config.json"),
    ),
    (
        "generation_config.json",
        include_bytes!("../fixtures/tiny/generation_config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../fixtures/tiny/model.safetensors"),
    ),
    (
        "processor_config.json",
        include_bytes!("../fixtures/tiny/processor_config.json"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../fixtures/tiny/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../fixtures/tiny/tokenizer_config.json"),
    ),
];

/// The JS object `{fileName: Uint8Array}` that `new Captioner(files)` takes.
pub fn files_object(skip: Option<&str>) -> JsValue {
    let obj = js_sys::Object::new();
    for (name, bytes) in TINY {
        if Some(name) != skip {
            js_sys::Reflect::set(&obj, &name.into(), &js_sys::Uint8Array::from(bytes)).unwrap();
        }
    }
    obj.into()
}
