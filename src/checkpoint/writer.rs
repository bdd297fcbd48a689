//! Writing safetensors files: the same bytes for the same tensors on every run and platform.
//!
//! (`safetensors::serialize` takes its metadata as a `HashMap` and writes it in the map's random
//! order, so two runs of `blipq quantize` differed in their headers; the page's "Make INT8" is
//! checked against the CLI by SHA-256.) The header's keys are sorted; the data is ordered by
//! element size, then name, so every tensor stays aligned to its element size; the data starts
//! 8-byte aligned, as the format asks.

use std::collections::BTreeMap;

use safetensors::Dtype;

use crate::{Error, Result};

/// One tensor to write: its dtype, shape and little-endian bytes.
pub struct OutTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The safetensors file of `tensors` (by name) with `metadata` as its `__metadata__`; `file`
/// names it in errors. Each tensor's data is dropped once copied, so the peak is about the file
/// plus the largest tensor beyond the tensors themselves.
pub fn serialize(
    mut tensors: Vec<(String, OutTensor)>,
    metadata: BTreeMap<String, String>,
    file: &str,
) -> Result<Vec<u8>> {
    for (name, t) in &tensors {
        let want = t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        if t.data.len() != want {
            return Err(Error::tensor(
                name,
                format!(
                    "cannot serialize: {} bytes for shape {:?} of {:?}",
                    t.data.len(),
                    t.shape,
                    t.dtype
                ),
            ));
        }
    }
    let size = |d: Dtype| d.bitsize() / 8;
    tensors.sort_by(|(a, x), (b, y)| size(y.dtype).cmp(&size(x.dtype)).then(a.cmp(b)));
    let mut header = BTreeMap::new();
    header.insert("__metadata__".to_string(), serde_json::json!(metadata));
    let mut offset = 0usize;
    for (name, t) in &tensors {
        let end = offset + t.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": format!("{:?}", t.dtype),
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header)
        .map_err(|e| Error::checkpoint(file, format!("cannot serialize the header: {e}")))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, t) in tensors {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}
