//! The caption tokenizer: Hugging Face `tokenizer.json` (BERT WordPiece for BLIP), with prompts
//! prepared and captions decoded exactly as `BlipProcessor` and `generate` do.
//!
//! May use: `error` only.

use crate::{Error, Result};

pub struct CaptionTokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer_config.json`'s `clean_up_tokenization_spaces`, applied after decoding as
    /// transformers does (" ." -> ".", " n't" -> "n't", ...).
    clean_up_spaces: bool,
    file: String,
}

impl CaptionTokenizer {
    /// `tokenizer_json` is `tokenizer.json`'s bytes; `tokenizer_config` the optional
    /// `tokenizer_config.json` text.
    pub fn new(tokenizer_json: &[u8], tokenizer_config: Option<&str>, file: &str) -> Result<Self> {
        check_tokenizer_json(tokenizer_json, file)?;
        let mut inner = guarded(file, "reading tokenizer.json", || {
            tokenizers::Tokenizer::from_bytes(tokenizer_json)
        })?
        .map_err(|e| Error::tokenizer(file, format!("not a valid tokenizer.json: {e}")))?;
        // transformers ignores the padding and truncation saved in tokenizer.json unless the call
        // asks for them (`BlipProcessor` does not): a prompt padded to a fixed length would fill
        // the whole caption budget with [PAD].
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(file, format!("cannot disable truncation: {e}")))?;
        let clean_up_spaces = match tokenizer_config {
            None => false,
            Some(text) => {
                let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    Error::config("tokenizer_config.json", format!("not valid JSON: {e}"))
                })?;
                v.get("clean_up_tokenization_spaces")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            }
        };
        Ok(Self {
            inner,
            clean_up_spaces,
            file: file.to_string(),
        })
    }

    /// The largest token id the tokenizer can produce (added tokens included).
    pub fn max_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Decoder input for `generate`: `[bos]`, or the prompt encoded as `[CLS] prompt [SEP]` with
    /// `[CLS]` replaced by bos and the trailing `[SEP]` dropped — what `BlipForConditionalGeneration`
    /// does to the processor's `input_ids`.
    pub fn prefix(&self, prompt: Option<&str>, bos: u32) -> Result<Vec<u32>> {
        let Some(prompt) = prompt.filter(|p| !p.is_empty()) else {
            return Ok(vec![bos]);
        };
        let enc = guarded(&self.file, "encoding the prompt", || {
            self.inner.encode(prompt, true)
        })?
        .map_err(|e| {
            Error::tokenizer(&self.file, format!("cannot encode prompt {prompt:?}: {e}"))
        })?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() < 2 {
            return Err(Error::tokenizer(
                &self.file,
                format!("prompt {prompt:?} encodes to {ids:?}; expected [CLS] ... [SEP]"),
            ));
        }
        ids[0] = bos;
        ids.pop();
        Ok(ids)
    }

    /// Text of `ids` with special tokens skipped and WordPiece `##` pieces joined.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = guarded(&self.file, "decoding", || self.inner.decode(ids, true))?
            .map_err(|e| Error::tokenizer(&self.file, format!("cannot decode {ids:?}: {e}")))?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// Checks the parts of a `tokenizer.json` that the `tokenizers` crate (0.22) would panic on
/// rather than reject, found by fuzzing: the file must be JSON, its `decoder` null or an object
/// with a string `type`, and every special token a post-processor template (`single`, `pair`) uses
/// must be defined in its `special_tokens`.
fn check_tokenizer_json(bytes: &[u8], file: &str) -> Result<()> {
    use serde_json::Value;
    let bad = |msg: String| {
        Err(Error::tokenizer(
            file,
            format!("not a valid tokenizer.json: {msg}"),
        ))
    };
    let root: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return bad(format!("not valid JSON: {e}")),
    };
    match root.get("decoder") {
        None | Some(Value::Null) => {}
        Some(Value::Object(d)) if d.get("type").is_some_and(Value::is_string) => {}
        Some(_) => return bad("`decoder` must be null or an object with a string `type`".into()),
    }
    if let Some(d) = root.get("decoder") {
        if let Some(stop) = strip_with_stop(d) {
            return bad(format!(
                "its decoder has a `Strip` step with `stop` {stop}, which the tokenizers library \
                 fails on when a decoded text is shorter (only `stop` 0 is accepted)"
            ));
        }
    }
    let mut processors = vec![root.get("post_processor")];
    if let Some(Value::Array(list)) = root.get("post_processor").and_then(|p| p.get("processors")) {
        processors.extend(list.iter().map(Some));
    }
    for p in processors.into_iter().flatten() {
        // Any object with a template: the crate also reads one without (or with another) `type`.
        if p.get("single").is_none() && p.get("pair").is_none() {
            continue;
        }
        let defined = p.get("special_tokens").and_then(Value::as_object);
        for key in ["single", "pair"] {
            let Some(Value::Array(pieces)) = p.get(key) else {
                continue;
            };
            for piece in pieces {
                let Some(id) = piece
                    .get("SpecialToken")
                    .and_then(|t| t.get("id"))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                if !defined.is_some_and(|d| d.contains_key(id)) {
                    return bad(format!(
                        "post_processor template `{key}` uses the special token {id:?}, which its \
                         `special_tokens` do not define"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The `stop` of a `Strip` decoder step (anywhere in a `Sequence`, tagged or not) other than 0:
/// `Strip::decode_chain` underflows on a token shorter than `stop` made of its `content`.
fn strip_with_stop(v: &serde_json::Value) -> Option<&serde_json::Value> {
    match v {
        serde_json::Value::Object(o) => {
            let stop = o.get("stop").filter(|s| s.as_u64() != Some(0));
            let strip = o.get("type").and_then(|t| t.as_str()) == Some("Strip")
                || (o.contains_key("content") && o.contains_key("start"));
            if strip && stop.is_some() {
                return stop;
            }
            o.values().find_map(strip_with_stop)
        }
        serde_json::Value::Array(a) => a.iter().find_map(strip_with_stop),
        _ => None,
    }
}

/// Runs a call into the `tokenizers` crate, turning a panic into an error (natively; a wasm32
/// build aborts on panics, so the checks above are what keeps it safe there).
fn guarded<T>(file: &str, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        Error::tokenizer(
            file,
            format!("the tokenizers library failed while {what}: the file is malformed"),
        )
    })
}

/// transformers' `clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
