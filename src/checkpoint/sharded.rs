//! Sharded safetensors checkpoints, as transformers writes large models:
//! `model.safetensors.index.json` (`{"metadata": {...}, "weight_map": {tensor: shard file}}`) next
//! to its shard files (`model-00001-of-00002.safetensors`, ...), read as one [`Safetensors`] whose
//! tensors each name their shard.
//!
//! Everything the index says is checked against the shards: shard names are plain file names of
//! the same folder ending in `.safetensors` (no path separators, nothing hidden), at most
//! [`MAX_SHARDS`] of them; every tensor the index lists is in the shard it names; every tensor of
//! a shard is listed, and for that shard; the shards' `__metadata__` agree. A checkpoint that
//! disagrees with its index is an error naming the tensor or the file, not a silent guess.
//!
//! May use: the rest of `checkpoint`, `limits`, `fsio` (native reads), `error`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Safetensors, SafetensorsHeader};
use crate::{Error, Result};

/// The index file of a sharded safetensors checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Most shard files an index may name (BLIP-large in 2 GB shards has one or two).
pub const MAX_SHARDS: usize = 1024;

/// A parsed index: which shard holds each tensor, and the shard files in order.
#[derive(Debug, Clone)]
pub struct Index {
    /// Tensor name → position in [`Index::shards`].
    pub weight_map: BTreeMap<String, usize>,
    /// The shard file names, sorted.
    pub shards: Vec<String>,
}

impl Index {
    /// Parses the index's JSON text, naming `file` in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let bad = |why: String| Error::checkpoint(file, why);
        let json: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("has no \"weight_map\" object".into()))?;
        if map.is_empty() {
            return Err(bad("its \"weight_map\" lists no tensors".into()));
        }
        let mut by_tensor = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                bad(format!(
                    "maps tensor `{tensor}` to {shard}, not to a file name"
                ))
            })?;
            check_shard_name(shard).map_err(|why| bad(format!("shard \"{shard}\" {why}")))?;
            by_tensor.insert(tensor.clone(), shard.to_string());
        }
        let mut shards: Vec<String> = by_tensor.values().cloned().collect();
        shards.sort();
        shards.dedup();
        if shards.len() > MAX_SHARDS {
            return Err(bad(format!(
                "names {} shard files, more than the {MAX_SHARDS} blipq reads",
                shards.len()
            )));
        }
        let weight_map = by_tensor
            .into_iter()
            .map(|(t, s)| {
                let i = shards.binary_search(&s).unwrap_or_default();
                (t, i)
            })
            .collect();
        Ok(Self { weight_map, shards })
    }

    /// Joins the shards (in [`Index::shards`] order) into one checkpoint named `file`, checking
    /// each against the index.
    pub fn merge(&self, file: &str, shards: Vec<Safetensors>) -> Result<Safetensors> {
        if shards.len() != self.shards.len() {
            return Err(Error::Internal(format!(
                "{file}: {} shards given for {} in the index",
                shards.len(),
                self.shards.len()
            )));
        }
        let mut header = SafetensorsHeader::default();
        let mut sources = Vec::with_capacity(shards.len());
        for (i, shard) in shards.into_iter().enumerate() {
            let name = &self.shards[i];
            let path = shard.file;
            for (tensor, mut entry) in shard.header.tensors {
                match self.weight_map.get(&tensor) {
                    Some(&j) if j == i => {}
                    Some(&j) => {
                        return Err(Error::tensor(
                            &tensor,
                            format!("is in {name}, but {file} says it is in {}", self.shards[j]),
                        ))
                    }
                    None => {
                        return Err(Error::tensor(
                            &tensor,
                            format!("is in {name} but not listed in {file}"),
                        ))
                    }
                }
                entry.shard = i;
                header.tensors.insert(tensor, entry);
            }
            for (key, value) in shard.header.metadata {
                match header.metadata.get(&key) {
                    Some(v) if *v != value => {
                        return Err(Error::checkpoint(
                            name,
                            format!(
                                "its metadata \"{key}\" = \"{value}\" differs from another \
                                 shard's \"{v}\""
                            ),
                        ))
                    }
                    _ => {
                        header.metadata.insert(key, value);
                    }
                }
            }
            header.file_len += shard.header.file_len;
            let (_, bytes) = shard
                .shards
                .into_iter()
                .next()
                .ok_or_else(|| Error::Internal(format!("{name}: a shard without bytes")))?;
            sources.push((path, bytes));
        }
        if let Some((tensor, &i)) = self
            .weight_map
            .iter()
            .find(|(t, _)| !header.tensors.contains_key(*t))
        {
            return Err(Error::tensor(
                tensor,
                format!("is listed in {file} but missing from {}", self.shards[i]),
            ));
        }
        Ok(Safetensors {
            file: file.to_string(),
            header,
            shards: sources,
        })
    }
}

/// A shard name must be a plain file name of the index's folder: `Err` says why not.
fn check_shard_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.contains(['/', '\\', '\0', ':']) {
        return Err("is not a plain file name in the index's folder");
    }
    if name.is_empty() || name.starts_with('.') {
        return Err("is not a file name (empty or hidden)");
    }
    if !name.ends_with(".safetensors") {
        return Err("is not a .safetensors file");
    }
    Ok(())
}

/// Opens a sharded checkpoint from its index file on disk; the shards are memory-mapped from the
/// index's folder.
#[cfg(not(target_arch = "wasm32"))]
pub fn open(index_path: &std::path::Path) -> Result<Safetensors> {
    let file = index_path.display().to_string();
    let text = crate::fsio::read_text(index_path, crate::limits::MAX_CONFIG_BYTES)?;
    let index = Index::parse(&text, &file)?;
    let dir = index_path.parent().unwrap_or(std::path::Path::new("."));
    let shards = index
        .shards
        .iter()
        .map(|name| {
            let path = dir.join(name);
            if !crate::fsio::exists(&path) {
                return Err(Error::file(
                    path.display(),
                    format!("is missing (a shard named by {file})"),
                ));
            }
            Safetensors::open(&path)
        })
        .collect::<Result<Vec<_>>>()?;
    index.merge(&file, shards)
}
