//! A checkpoint folder's files: their names, their size caps, and the one rule that picks the
//! files to load from what is present — shared by the native loader (a directory on disk) and the
//! page (files keyed by name, [`model_files_from_entries`]).
//!
//! Depends on [`crate::checkpoint`] and [`crate::checkpoint::pth`] (weights from bytes) and, natively, on
//! [`crate::fsio`] (bounded reads).

use crate::limits::{too_large, MAX_CONFIG_BYTES, MAX_TOKENIZER_BYTES};
use std::collections::{HashMap, HashSet};

use crate::checkpoint::sharded::Index;
use crate::checkpoint::{ByteSource, Checkpoint, Safetensors};
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const PTH_FILE: &str = "pytorch_model.bin";
/// The index of a sharded safetensors checkpoint ([`crate::checkpoint::sharded`]).
pub const SAFETENSORS_INDEX_FILE: &str = crate::checkpoint::sharded::INDEX_FILE;
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// `preprocessor_config.json` wins over transformers 5's `processor_config.json`.
pub const PREPROCESSOR_FILES: [&str; 2] = ["preprocessor_config.json", "processor_config.json"];
pub const GENERATION_FILE: &str = "generation_config.json";
/// Files every checkpoint needs besides its weights and preprocessor config.
pub const REQUIRED_FILES: [&str; 2] = [CONFIG_FILE, TOKENIZER_FILE];
/// Files a checkpoint may have; defaults apply without them.
pub const OPTIONAL_FILES: [&str; 2] = [TOKENIZER_CONFIG_FILE, GENERATION_FILE];
/// Files a checkpoint folder may carry that blipq copies along but does not read.
pub const EXTRA_FILES: [&str; 2] = ["special_tokens_map.json", "vocab.txt"];
/// Every file blipq may read from a checkpoint folder.
pub const CHECKPOINT_FILES: [&str; 9] = [
    CONFIG_FILE,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX_FILE,
    PTH_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    PREPROCESSOR_FILES[0],
    PREPROCESSOR_FILES[1],
    GENERATION_FILE,
];

/// The files a derived checkpoint (INT8, converted) copies unchanged from its source: all but
/// the weights.
pub fn copied_files() -> impl Iterator<Item = &'static str> {
    CHECKPOINT_FILES
        .into_iter()
        .filter(|f| ![SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, PTH_FILE].contains(f))
        .chain(EXTRA_FILES)
}

/// The text files of a checkpoint directory, by role, plus its weights.
pub struct ModelFiles {
    /// `config.json`.
    pub config: String,
    pub weights: Checkpoint,
    /// `tokenizer.json` bytes.
    pub tokenizer: Vec<u8>,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config: Option<String>,
    /// `preprocessor_config.json`, or transformers 5's `processor_config.json`.
    pub preprocessor: (String, String),
    /// `generation_config.json`, if present.
    pub generation: Option<String>,
}

#[cfg(not(target_arch = "wasm32"))]
impl ModelFiles {
    /// Reads a Hugging Face checkpoint directory (weights memory-mapped; text files bounded by
    /// [`crate::checkpoint::files::max_bytes`]).
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        use crate::fsio::{exists, read_file, read_text};
        let folder = dir.display().to_string();
        if !dir.is_dir() {
            return Err(Error::file(&folder, "is not a checkpoint directory"));
        }
        let present = CHECKPOINT_FILES
            .into_iter()
            .filter(|f| exists(&dir.join(f)))
            .collect();
        let plan = plan(&present, &folder)?;
        let text = |name: &str| read_text(&dir.join(name), max_bytes(name));
        let weights = Checkpoint::open(&dir.join(plan.weights.0))?;
        Ok(Self {
            config: text(CONFIG_FILE)?,
            weights,
            tokenizer: read_file(&dir.join(TOKENIZER_FILE), max_bytes(TOKENIZER_FILE))?,
            tokenizer_config: plan.tokenizer_config.map(text).transpose()?,
            preprocessor: (
                dir.join(plan.preprocessor).display().to_string(),
                text(plan.preprocessor)?,
            ),
            generation: plan.generation.map(text).transpose()?,
        })
    }
}

/// Writes a checkpoint derived from the one in `model_dir` (INT8, converted) into `out`:
/// `weights` as `model.safetensors`, and unchanged copies of the other files present
/// ([`copied_files`]). Nothing appears at the output before `out` is committed.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_derived(
    model_dir: &std::path::Path,
    out: &crate::fsio::OutputDir,
    weights: &[u8],
) -> Result<()> {
    out.write(SAFETENSORS_FILE, weights)?;
    for name in copied_files() {
        let from = model_dir.join(name);
        if crate::fsio::exists(&from) {
            out.copy(&from, name)?;
        }
    }
    Ok(())
}

/// The cap of a text file of a checkpoint, by name.
pub fn max_bytes(name: &str) -> u64 {
    if name == TOKENIZER_FILE {
        MAX_TOKENIZER_BYTES
    } else {
        MAX_CONFIG_BYTES
    }
}

/// How the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Safetensors,
    /// `model.safetensors.index.json` and the shards it names.
    ShardedSafetensors,
    Pth,
}

/// Which file of a checkpoint plays each role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub weights: (&'static str, WeightsFormat),
    pub preprocessor: &'static str,
    pub tokenizer_config: Option<&'static str>,
    pub generation: Option<&'static str>,
}

/// Chooses the files to load from the base names present: `model.safetensors` over
/// `model.safetensors.index.json` (sharded) over `pytorch_model.bin`, `preprocessor_config.json`
/// over `processor_config.json`; `config.json` and
/// `tokenizer.json` are required.
pub fn plan(present: &HashSet<&str>, folder: &str) -> Result<Plan> {
    let missing = |what: String| Error::file(folder, format!("missing checkpoint file {what}"));
    let weights = if present.contains(SAFETENSORS_FILE) {
        (SAFETENSORS_FILE, WeightsFormat::Safetensors)
    } else if present.contains(SAFETENSORS_INDEX_FILE) {
        (SAFETENSORS_INDEX_FILE, WeightsFormat::ShardedSafetensors)
    } else if present.contains(PTH_FILE) {
        (PTH_FILE, WeightsFormat::Pth)
    } else {
        return Err(missing(format!(
            "{SAFETENSORS_FILE} (or {SAFETENSORS_INDEX_FILE} and its shards, or {PTH_FILE})"
        )));
    };
    for required in REQUIRED_FILES {
        if !present.contains(required) {
            return Err(missing(required.to_string()));
        }
    }
    let preprocessor = PREPROCESSOR_FILES
        .into_iter()
        .find(|f| present.contains(f))
        .ok_or_else(|| {
            missing(format!(
                "{} (or {})",
                PREPROCESSOR_FILES[0], PREPROCESSOR_FILES[1]
            ))
        })?;
    let optional = |f: &'static str| present.contains(f).then_some(f);
    Ok(Plan {
        weights,
        preprocessor,
        tokenizer_config: optional(OPTIONAL_FILES[0]),
        generation: optional(OPTIONAL_FILES[1]),
    })
}

/// The base name of an entry key: `"some/dir/config.json"` → `"config.json"`.
pub fn base_name(key: &str) -> &str {
    key.rsplit(['/', '\\']).next().unwrap_or(key)
}

/// The bytes of one file handed over by name (an owned buffer natively, a JS array in the page).
pub trait FileData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn into_bytes(self) -> Vec<u8>;
    fn into_source(self) -> Box<dyn ByteSource>;
}

impl FileData for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn into_bytes(self) -> Vec<u8> {
        self
    }
    fn into_source(self) -> Box<dyn ByteSource> {
        Box::new(self)
    }
}

/// Collects a checkpoint from files keyed by name (a leading directory is ignored; unknown names
/// are skipped, but for the `.safetensors` shards of a sharded checkpoint), as the page hands
/// them over. Text files are checked against their caps before
/// they are copied; two files with the same base name are an error.
pub fn model_files_from_entries<D: FileData>(entries: Vec<(String, D)>) -> Result<ModelFiles> {
    const FOLDER: &str = "model folder";
    let mut seen = HashSet::new();
    for (key, _) in &entries {
        if !seen.insert(base_name(key).to_string()) {
            return Err(Error::file(
                FOLDER,
                format!("two files named {}", base_name(key)),
            ));
        }
    }
    let present: HashSet<&str> = seen.iter().map(String::as_str).collect();
    let plan = plan(&present, FOLDER)?;
    let mut texts: Vec<(&'static str, String)> = Vec::new();
    let mut tokenizer = None;
    let mut weights = None;
    // A sharded checkpoint's shards, by name (kept only for an index; checked against it).
    let mut shards: HashMap<String, D> = HashMap::new();
    for (key, data) in entries {
        let name = base_name(&key);
        if name == plan.weights.0 {
            weights = Some(data);
            continue;
        }
        if plan.weights.1 == WeightsFormat::ShardedSafetensors && name.ends_with(".safetensors") {
            shards.insert(name.to_string(), data);
            continue;
        }
        let wanted = [CONFIG_FILE, TOKENIZER_FILE, plan.preprocessor]
            .into_iter()
            .chain(plan.tokenizer_config)
            .chain(plan.generation)
            .find(|f| *f == name);
        let Some(name) = wanted else { continue };
        let max = max_bytes(name);
        if data.len() as u64 > max {
            return Err(too_large(name, data.len() as u64, max));
        }
        let bytes = data.into_bytes();
        if name == TOKENIZER_FILE {
            tokenizer = Some(bytes);
        } else {
            let text =
                String::from_utf8(bytes).map_err(|_| Error::config(name, "is not UTF-8 text"))?;
            texts.push((name, text));
        }
    }
    let mut take = |name: &str| {
        texts
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| texts.swap_remove(i).1)
    };
    let config = take(CONFIG_FILE).unwrap_or_default();
    let preprocessor = (
        plan.preprocessor.to_string(),
        take(plan.preprocessor).unwrap_or_default(),
    );
    let tokenizer_config = plan.tokenizer_config.and_then(&mut take);
    let generation = plan.generation.and_then(&mut take);
    let weights = weights.ok_or_else(|| Error::file(FOLDER, "missing weights"))?;
    let weights = match plan.weights.1 {
        WeightsFormat::Safetensors => {
            Checkpoint::Safetensors(Safetensors::new(weights.into_source(), SAFETENSORS_FILE)?)
        }
        // Read from its bytes like a file on disk: the zip's directory and the pickle first,
        // then one tensor at a time.
        WeightsFormat::Pth => Checkpoint::Pth(crate::checkpoint::pth::Pth::new(
            weights.into_source(),
            PTH_FILE,
        )?),
        WeightsFormat::ShardedSafetensors => {
            let index = weights.into_bytes();
            if index.len() as u64 > MAX_CONFIG_BYTES {
                return Err(too_large(
                    SAFETENSORS_INDEX_FILE,
                    index.len() as u64,
                    MAX_CONFIG_BYTES,
                ));
            }
            let text = String::from_utf8(index)
                .map_err(|_| Error::checkpoint(SAFETENSORS_INDEX_FILE, "is not UTF-8 text"))?;
            let index = Index::parse(&text, SAFETENSORS_INDEX_FILE)?;
            let parts = index
                .shards
                .iter()
                .map(|name| {
                    let data = shards.remove(name).ok_or_else(|| {
                        Error::file(
                            name,
                            format!("is missing (a shard named by {SAFETENSORS_INDEX_FILE})"),
                        )
                    })?;
                    Safetensors::new(data.into_source(), name)
                })
                .collect::<Result<Vec<_>>>()?;
            Checkpoint::Safetensors(index.merge(SAFETENSORS_INDEX_FILE, parts)?)
        }
    };
    Ok(ModelFiles {
        config,
        weights,
        tokenizer: tokenizer.unwrap_or_default(),
        tokenizer_config,
        preprocessor,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&'static str]) -> HashSet<&'static str> {
        v.iter().copied().collect()
    }

    #[test]
    fn plan_prefers_safetensors_and_preprocessor_config() {
        let p = plan(
            &names(&[
                CONFIG_FILE,
                TOKENIZER_FILE,
                SAFETENSORS_FILE,
                PTH_FILE,
                "processor_config.json",
                "preprocessor_config.json",
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(p.weights, (SAFETENSORS_FILE, WeightsFormat::Safetensors));
        assert_eq!(p.preprocessor, "preprocessor_config.json");
        assert_eq!((p.tokenizer_config, p.generation), (None, None));
        let p = plan(
            &names(&[
                CONFIG_FILE,
                TOKENIZER_FILE,
                PTH_FILE,
                "processor_config.json",
                GENERATION_FILE,
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(p.weights, (PTH_FILE, WeightsFormat::Pth));
        assert_eq!(p.preprocessor, "processor_config.json");
        assert_eq!(p.generation, Some(GENERATION_FILE));
        let e = plan(&names(&[CONFIG_FILE, SAFETENSORS_FILE]), "dir").unwrap_err();
        assert_eq!(e.to_string(), "dir: missing checkpoint file tokenizer.json");
    }

    #[test]
    fn entries_are_checked_before_they_are_copied() {
        let e = model_files_from_entries(vec![
            ("a/config.json".to_string(), b"{}".to_vec()),
            ("b/config.json".to_string(), b"{}".to_vec()),
        ])
        .err()
        .unwrap();
        assert_eq!(e.to_string(), "model folder: two files named config.json");
        let big = vec![b' '; MAX_CONFIG_BYTES as usize + 1];
        let e = model_files_from_entries(vec![
            (CONFIG_FILE.to_string(), big),
            (TOKENIZER_FILE.to_string(), vec![]),
            (SAFETENSORS_FILE.to_string(), vec![]),
            (PREPROCESSOR_FILES[1].to_string(), vec![]),
        ])
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("config.json: is 16777217 bytes, over the limit of 16777216 bytes"),
            "{e}"
        );
    }
}
