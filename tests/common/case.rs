//! A fixture case of `expected.json` as the engine takes it: its generate kwargs as
//! `CaptionOptions` and its recorded token ids. Shared by the native tests (through
//! `tests/common`) and the browser tests (`tests/wasm.rs` includes this file by path).

use serde_json::Value;

/// Token ids of a JSON array.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Generate kwargs of a fixture case as `CaptionOptions`.
pub fn case_options(case: &Value) -> blipq::CaptionOptions {
    let kw = &case["generate_kwargs"];
    let count = |key: &str| kw.get(key).and_then(Value::as_u64).map(|x| x as usize);
    blipq::CaptionOptions {
        prompt: case.get("text").and_then(Value::as_str).map(str::to_string),
        max_length: count("max_length"),
        max_new_tokens: count("max_new_tokens"),
        min_length: count("min_length"),
        num_beams: count("num_beams"),
        fixed_new_tokens: None,
    }
}
