//! Weight files: safetensors (F32, F16, BF16, F64 and blipq's INT8 layout) read from a path
//! (memory-mapped) or from bytes, and PyTorch `pytorch_model.bin` archives
//! ([`crate::checkpoint::pth`]).
//!
//! The safetensors header is parsed here rather than by the `safetensors` crate so that every
//! problem (truncation, bad offsets, unknown dtypes) is reported with the file and tensor it is in,
//! and so that tensor bytes can come from any [`ByteSource`] — a memory map, an owned buffer, or a
//! buffer living outside wasm memory that is copied in one tensor at a time.
//!
//! May use: `kernels` (the packed `Q8Matrix` / `F32Matrix` built while reading), `limits`, `fsio`
//! (native reads), `error`; never `model` or anything above.

pub mod files;
pub mod hub;
pub mod int8;
pub mod pth;
pub mod sharded;
pub mod writer;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::kernels::q8::Q8Matrix;
use crate::kernels::sgemm::F32Matrix;
use crate::{Error, Result};

pub use int8::{BLOCK, FORMAT as INT8_FORMAT, FORMAT_VERSION as INT8_FORMAT_VERSION};

/// Random access to the bytes of a weight file.
pub trait ByteSource: Send + Sync {
    fn len(&self) -> usize;
    /// Bytes `start..end`; callers guarantee `start <= end <= len()`.
    fn read(&self, start: usize, end: usize) -> Result<Cow<'_, [u8]>>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn read(&self, start: usize, end: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self[start..end]))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for memmap2::Mmap {
    fn len(&self) -> usize {
        self.as_ref().len()
    }
    fn read(&self, start: usize, end: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self[start..end]))
    }
}

/// Memory-maps a regular file (refusing FIFOs, devices and folders), read-only.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn map_file(path: &std::path::Path) -> Result<memmap2::Mmap> {
    let f = crate::fsio::open_regular(path)?;
    // SAFETY: the map is read-only; a file modified while mapped is the user's problem, as
    // with every mmap-based loader (candle, safetensors).
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path.display(), e))
}

/// Element types a checkpoint may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    /// Two 4-bit weights per byte (blipq's `q4_0` / `q4_g128` files).
    U8,
}

impl StoredDType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F64" => Self::F64,
            "I8" => Self::I8,
            "U8" => Self::U8,
            _ => return None,
        })
    }
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F64 => 8,
            Self::I8 | Self::U8 => 1,
        }
    }

    /// Whether this is a quantized weight's storage (int8, or packed 4-bit), not a float.
    pub fn is_quantized(self) -> bool {
        matches!(self, Self::I8 | Self::U8)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F64 => "F64",
            Self::I8 => "I8",
            Self::U8 => "U8",
        }
    }
}

/// Where one tensor lives in a safetensors file.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
    /// Which file of a sharded checkpoint holds it ([`Safetensors::shards`]; 0 for one file).
    pub shard: usize,
}

/// Largest safetensors header accepted: real BLIP-large INT8 headers are about 0.2 MB.
pub const MAX_HEADER_BYTES: usize = 16 << 20;
/// Most tensors a safetensors file may hold (BLIP-large INT8 has about 1,800).
pub const MAX_TENSORS: usize = 65_536;
/// Highest tensor rank accepted (BLIP's tensors have at most 4 dimensions).
pub const MAX_RANK: usize = 8;

/// A parsed safetensors header: tensor locations and the free-form `__metadata__`.
#[derive(Debug, Clone, Default)]
pub struct SafetensorsHeader {
    pub tensors: HashMap<String, TensorEntry>,
    pub metadata: HashMap<String, String>,
    /// Total file size the header implies (8 + header + data).
    pub file_len: usize,
}

/// One header entry as written, before its offsets are checked.
#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The header's JSON object, read entry by entry so that its size is bounded while parsing and
/// duplicate names are caught (a plain map would keep the last one silently).
struct RawHeader {
    entries: Vec<(String, RawEntry)>,
    metadata: HashMap<String, String>,
}

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawHeader, A::Error> {
                use serde::de::Error as _;
                let mut out = RawHeader {
                    entries: Vec::new(),
                    metadata: HashMap::new(),
                };
                let mut names = std::collections::HashSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !names.insert(name.clone()) {
                        return Err(A::Error::custom(format!(
                            "the name `{}` appears twice",
                            short(&name)
                        )));
                    }
                    if name == "__metadata__" {
                        let m: HashMap<String, Value> = map.next_value()?;
                        out.metadata = m
                            .into_iter()
                            .map(|(k, v)| {
                                let v = v
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| v.to_string());
                                (k, v)
                            })
                            .collect();
                        continue;
                    }
                    if out.entries.len() == MAX_TENSORS {
                        return Err(A::Error::custom(format!("more than {MAX_TENSORS} tensors")));
                    }
                    let entry: RawEntry = map
                        .next_value()
                        .map_err(|e| A::Error::custom(format!("tensor `{}`: {e}", short(&name))))?;
                    out.entries.push((name, entry));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// A name cut to a readable length for messages.
fn short(name: &str) -> Cow<'_, str> {
    const MAX: usize = 120;
    if name.len() <= MAX {
        return Cow::Borrowed(name);
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}... ({} bytes)", &name[..end], name.len()))
}

impl SafetensorsHeader {
    /// Length of the header that starts a safetensors file, from its first 8 bytes.
    pub fn header_len(first8: &[u8], file: &str) -> Result<usize> {
        let arr: [u8; 8] = first8
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::checkpoint(file, "too short to be a safetensors file"))?;
        let n = u64::from_le_bytes(arr);
        if n > MAX_HEADER_BYTES as u64 {
            return Err(Error::checkpoint(
                file,
                format!(
                    "not a safetensors file: its first 8 bytes give a header length of {n} \
                     bytes, over the limit of {MAX_HEADER_BYTES}"
                ),
            ));
        }
        Ok(n as usize)
    }

    /// Parses the JSON header and checks it by the format's rules against the real file size
    /// `file_len`: every tensor's bytes fit its dtype and shape, the tensors lie in the data
    /// section one after the other, without gaps or overlaps, and cover it exactly.
    pub fn parse(header: &[u8], file_len: usize, file: &str) -> Result<Self> {
        let out = Self::parse_layout(header, file)?;
        let at = out.file_len;
        if file_len < at {
            return Err(Error::checkpoint(
                file,
                format!("truncated: the header describes {at} bytes but the file has {file_len}"),
            ));
        }
        if file_len > at {
            return Err(Error::checkpoint(
                file,
                format!(
                    "has {} bytes after the last tensor (the header describes {at} of its \
                     {file_len} bytes)",
                    file_len - at
                ),
            ));
        }
        Ok(out)
    }

    /// [`SafetensorsHeader::parse`] without the file: every rule but the file's length, which
    /// the result's `file_len` gives (e.g. to judge a download from its first bytes).
    pub fn parse_layout(header: &[u8], file: &str) -> Result<Self> {
        let text = std::str::from_utf8(header)
            .map_err(|_| Error::checkpoint(file, "safetensors header is not UTF-8"))?;
        let raw: RawHeader = serde_json::from_str(text).map_err(|e| {
            let what = if e.is_syntax() || e.is_eof() {
                "not valid JSON"
            } else {
                "not a valid safetensors header"
            };
            Error::checkpoint(file, format!("safetensors header is {what}: {e}"))
        })?;
        let data_start = 8 + header.len();
        let mut out = SafetensorsHeader {
            metadata: raw.metadata,
            ..Default::default()
        };
        let mut spans: Vec<(usize, usize, String)> = Vec::with_capacity(raw.entries.len());
        for (name, raw) in raw.entries {
            let entry = parse_entry(&name, raw, data_start, file)?;
            spans.push((entry.start, entry.end, name.clone()));
            out.tensors.insert(name, entry);
        }
        spans.sort();
        let mut at = data_start;
        for (start, end, name) in &spans {
            if *start != at {
                let what = if *start > at { "a gap" } else { "an overlap" };
                return Err(Error::checkpoint(
                    file,
                    format!(
                        "tensor `{}`: data_offsets leave {what} before it (starts at {}, the \
                         previous tensor ends at {})",
                        short(name),
                        start - data_start,
                        at - data_start
                    ),
                ));
            }
            at = *end;
        }
        out.file_len = at;
        Ok(out)
    }
}

fn parse_entry(name: &str, v: RawEntry, data_start: usize, file: &str) -> Result<TensorEntry> {
    let bad = |msg: String| Error::checkpoint(file, format!("tensor `{}`: {msg}", short(name)));
    let dtype = StoredDType::parse(&v.dtype).ok_or_else(|| {
        bad(format!(
            "unsupported dtype {} (expected F32, F16, BF16, F64 or I8)",
            short(&v.dtype)
        ))
    })?;
    if v.shape.len() > MAX_RANK {
        return Err(bad(format!(
            "has {} dimensions, over the limit of {MAX_RANK}",
            v.shape.len()
        )));
    }
    let shape = v
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("shape overflows".into()))?;
    // Sizes that fit u64 but not usize can only occur on a 32-bit build (wasm32).
    let beyond = || {
        bad(format!(
            "model too large for wasm memory: its data lies beyond the {} bytes a 32-bit \
             (wasm32) build can address",
            usize::MAX as u128 + 1
        ))
    };
    let (s, e) = v.data_offsets;
    if s > e {
        return Err(bad(format!("invalid data_offsets [{s}, {e}]")));
    }
    let (Ok(s), Ok(e)) = (usize::try_from(s), usize::try_from(e)) else {
        return Err(beyond());
    };
    let expected = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            if cfg!(target_pointer_width = "32") {
                beyond()
            } else {
                bad("shape overflows".into())
            }
        })?;
    if e - s != expected {
        return Err(bad(format!(
            "data_offsets [{s}, {e}] hold {} bytes but shape {shape:?} of {} needs {expected}",
            e - s,
            dtype.as_str()
        )));
    }
    let (start, end) = match (data_start.checked_add(s), data_start.checked_add(e)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(bad("data_offsets overflow".into())),
    };
    Ok(TensorEntry {
        dtype,
        shape,
        start,
        end,
        shard: 0,
    })
}

/// A safetensors checkpoint: one file, or the shards of a `model.safetensors.index.json`
/// ([`sharded`]) read as one. `header` holds every tensor, each naming its shard.
pub struct Safetensors {
    /// The file errors name: the weights file, or a sharded checkpoint's index.
    pub file: String,
    pub header: SafetensorsHeader,
    /// The files' names and bytes, in shard order.
    shards: Vec<(String, Box<dyn ByteSource>)>,
}

impl Safetensors {
    /// Reads the header from `bytes`, naming `file` in errors.
    pub fn new(bytes: Box<dyn ByteSource>, file: &str) -> Result<Self> {
        let first8 = bytes.read(0, bytes.len().min(8))?;
        let n = SafetensorsHeader::header_len(&first8, file)?;
        if bytes.len() < 8 + n {
            return Err(Error::checkpoint(
                file,
                format!(
                    "truncated: header of {n} bytes but the file has {}",
                    bytes.len()
                ),
            ));
        }
        let header = SafetensorsHeader::parse(&bytes.read(8, 8 + n)?, bytes.len(), file)?;
        Ok(Self {
            file: file.to_string(),
            header,
            shards: vec![(file.to_string(), bytes)],
        })
    }

    /// Memory-maps a file from disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::new(Box::new(map_file(path)?), &path.display().to_string())
    }

    /// The files the tensors are read from, in shard order (one for a single file).
    pub fn shards(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().map(|(f, _)| f.as_str())
    }

    pub fn raw(&self, entry: &TensorEntry) -> Result<Cow<'_, [u8]>> {
        let (file, bytes) = self
            .shards
            .get(entry.shard)
            .ok_or_else(|| Error::Internal(format!("{}: no shard {}", self.file, entry.shard)))?;
        if entry.start > entry.end || entry.end > bytes.len() {
            return Err(Error::Internal(format!(
                "{file}: tensor bytes {}..{} beyond the file ({} bytes)",
                entry.start,
                entry.end,
                bytes.len()
            )));
        }
        bytes.read(entry.start, entry.end)
    }
}

/// transformers' `_tied_weights_keys` of BLIP's captioning model: the names it leaves out of a
/// saved file when they share storage with another tensor (the loader ties them again).
pub const TIED_KEYS: [&str; 2] = [
    "text_decoder.cls.predictions.decoder.weight",
    "text_decoder.cls.predictions.decoder.bias",
];

/// The tensor each name of [`TIED_KEYS`] is tied to, in the same order. transformers 5 ties a
/// name to its source also when the file stores the two apart with equal values (the released
/// base checkpoint's `pytorch_model.bin` holds `decoder.weight` as a separate copy of the word
/// embeddings), and keeps them apart when the values differ.
pub const TIED_SOURCES: [&str; 2] = [
    "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.bias",
];

/// The weights of a model, from whichever file format held them.
pub enum Checkpoint {
    Safetensors(Safetensors),
    Pth(crate::checkpoint::pth::Pth),
}

/// A weight matrix as stored: full precision, or INT8 `Q8_0` blocks packed for blipq's GEMM
/// kernels ([`Q8Matrix`], one copy shared by a tied embedding and LM head).
#[derive(Clone, Debug)]
pub enum Matrix {
    F32(Arc<F32Matrix>),
    Q8(Arc<Q8Matrix>),
}

impl Matrix {
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Matrix::F32(w) => (w.n(), w.k()),
            Matrix::Q8(q) => (q.n(), q.k()),
        })
    }
    /// Bytes the matrix occupies in memory.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Matrix::F32(w) => w.size_in_bytes(),
            Matrix::Q8(q) => q.size_in_bytes(),
        }
    }
}

impl Checkpoint {
    /// Opens `model.safetensors`, `pytorch_model.bin` or a sharded checkpoint's
    /// `model.safetensors.index.json` (with its shards, from the same folder), by name.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
        {
            return Ok(Checkpoint::Safetensors(sharded::open(path)?));
        }
        if path
            .extension()
            .is_some_and(|e| e == "bin" || e == "pt" || e == "pth")
        {
            return Ok(Checkpoint::Pth(crate::checkpoint::pth::Pth::open(path)?));
        }
        Ok(Checkpoint::Safetensors(Safetensors::open(path)?))
    }

    pub fn file(&self) -> &str {
        match self {
            Checkpoint::Safetensors(s) => &s.file,
            Checkpoint::Pth(p) => p.file(),
        }
    }

    /// Bytes of the weight files (every shard of a sharded checkpoint).
    pub fn stored_bytes(&self) -> usize {
        match self {
            Checkpoint::Safetensors(s) => s.shards.iter().map(|(_, b)| b.len()).sum(),
            Checkpoint::Pth(p) => p.file_len(),
        }
    }

    /// Names that repeat another tensor of the file and that a Hugging Face safetensors file
    /// leaves out, as transformers does when it saves: of each group of names `torch.save` stored
    /// once (tied weights), the names in [`TIED_KEYS`] (or, in a group without one, all but the
    /// first name); and a name of [`TIED_KEYS`] stored apart from its [`TIED_SOURCES`] tensor
    /// with the same values (transformers ties those on load).
    pub fn tied_duplicates(&self) -> Result<Vec<String>> {
        let mut drop = Vec::new();
        if let Checkpoint::Pth(p) = self {
            for group in p.tied_groups() {
                let keep = group
                    .iter()
                    .find(|n| !TIED_KEYS.contains(&n.as_str()))
                    .unwrap_or(&group[0]);
                drop.extend(group.iter().filter(|n| *n != keep).cloned());
            }
        }
        for (key, source) in TIED_KEYS.iter().zip(TIED_SOURCES) {
            if !drop.iter().any(|n| n == key) && self.same_values(key, source)? {
                drop.push(key.to_string());
            }
        }
        drop.sort();
        Ok(drop)
    }

    /// Where the bytes of `name` lie when they are stored in row-major order in one piece: the
    /// file's bytes and the absolute range. `None` if absent or a strided pickle view.
    fn span(&self, name: &str) -> Option<(&dyn ByteSource, usize, usize)> {
        match self {
            Checkpoint::Safetensors(s) => {
                let e = s.header.tensors.get(name)?;
                Some((s.shards[e.shard].1.as_ref(), e.start, e.end))
            }
            Checkpoint::Pth(p) => {
                let (start, end) = p.span(p.tensors().get(name)?)?;
                Some((p.bytes(), start, end))
            }
        }
    }

    /// The stored elements of `name` in row-major order, as little-endian bytes of its dtype.
    fn row_major_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        match self {
            Checkpoint::Safetensors(s) => match s.header.tensors.get(name) {
                Some(e) => s.raw(e),
                None => Err(self.missing(name)),
            },
            Checkpoint::Pth(p) => match p.tensors().get(name) {
                Some(t) => p.contiguous_bytes(t),
                None => Err(self.missing(name)),
            },
        }
    }

    /// Whether tensors `a` and `b` both exist and hold the same values: the same stored dtype,
    /// shape and bytes (an INT8 weight's `_scale` too). Stored bytes are compared a megabyte at a
    /// time, so a byte source that copies what it reads (the web page's) never holds two whole
    /// copies of a large tensor.
    pub fn same_values(&self, a: &str, b: &str) -> Result<bool> {
        let info = match (self.info(a), self.info(b)) {
            (Some(x), Some(y)) if x == y => x,
            _ => return Ok(false),
        };
        if !self.same_bytes(a, b)? {
            return Ok(false);
        }
        if !info.0.is_quantized() {
            return Ok(true);
        }
        let (sa, sb) = (int8::scale_name(a), int8::scale_name(b));
        Ok(self.info(&sa).is_some()
            && self.info(&sa) == self.info(&sb)
            && self.same_bytes(&sa, &sb)?)
    }

    fn same_bytes(&self, a: &str, b: &str) -> Result<bool> {
        const CHUNK: usize = 1 << 20;
        let (Some((src_a, a0, a1)), Some((src_b, b0, b1))) = (self.span(a), self.span(b)) else {
            // A strided pickle view: compared whole.
            return Ok(self.row_major_bytes(a)? == self.row_major_bytes(b)?);
        };
        if a1 - a0 != b1 - b0 {
            return Ok(false);
        }
        let mut at = 0;
        while at < a1 - a0 {
            let n = CHUNK.min(a1 - a0 - at);
            if src_a.read(a0 + at, a0 + at + n)? != src_b.read(b0 + at, b0 + at + n)? {
                return Ok(false);
            }
            at += n;
        }
        Ok(true)
    }

    /// The `__metadata__` of a safetensors file (empty for pickles).
    pub fn metadata(&self) -> HashMap<String, String> {
        match self {
            Checkpoint::Safetensors(s) => s.header.metadata.clone(),
            Checkpoint::Pth(_) => HashMap::new(),
        }
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Checkpoint::Safetensors(s) => s.header.tensors.keys().cloned().collect(),
            Checkpoint::Pth(p) => p.tensors().keys().cloned().collect(),
        };
        v.sort();
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Checkpoint::Safetensors(s) => s.header.tensors.contains_key(name),
            Checkpoint::Pth(p) => p.tensors().contains_key(name),
        }
    }

    /// Stored dtype and shape, if the tensor exists.
    pub fn info(&self, name: &str) -> Option<(StoredDType, Vec<usize>)> {
        match self {
            Checkpoint::Safetensors(s) => s
                .header
                .tensors
                .get(name)
                .map(|e| (e.dtype, e.shape.clone())),
            Checkpoint::Pth(p) => p
                .tensors()
                .get(name)
                .and_then(|t| Some((t.dtype.stored()?, t.shape.clone()))),
        }
    }

    fn missing(&self, name: &str) -> Error {
        Error::tensor(name, format!("missing from {}", self.file()))
    }

    /// Stored dtype and shape of `name`, or an error saying that it is missing or of a dtype
    /// blipq cannot use.
    pub fn lookup(&self, name: &str) -> Result<(StoredDType, Vec<usize>)> {
        if let Some(info) = self.info(name) {
            return Ok(info);
        }
        if let Checkpoint::Pth(p) = self {
            if let Some(t) = p.tensors().get(name) {
                return Err(Error::tensor(
                    name,
                    format!(
                        "has dtype {:?} in {}; blipq reads F32, F16, BF16 and F64 weights",
                        t.dtype,
                        p.file()
                    ),
                ));
            }
        }
        Err(self.missing(name))
    }

    /// Checks the metadata of a checkpoint holding INT8 tensors (or claiming to be blipq INT8):
    /// `format`, `version` and `block_size` must be what `blipq quantize` writes.
    pub fn check_format(&self) -> Result<()> {
        let meta = self.metadata();
        let has_i8 = self
            .names()
            .iter()
            .any(|n| matches!(self.info(n), Some((d, _)) if d.is_quantized()));
        if !int8::claims_int8(&meta) && !has_i8 {
            return Ok(());
        }
        int8::check_metadata(&meta, self.file()).map(|_| ())
    }

    /// Loads a floating-point tensor as f32 and checks its shape.
    pub fn load_f32(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        self.load_float(name, shape, device, false)
    }

    /// Loads a floating-point tensor as f32, or F16 and BF16 in their stored precision if
    /// `keep_half`, checking its shape and that every value is finite.
    fn load_float(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
        keep_half: bool,
    ) -> Result<Tensor> {
        let (dtype, stored_shape) = self.lookup(name)?;
        check_shape(name, &stored_shape, shape, self.file())?;
        let dt = match dtype {
            StoredDType::F32 => DType::F32,
            StoredDType::F16 => DType::F16,
            StoredDType::BF16 => DType::BF16,
            StoredDType::F64 => DType::F64,
            StoredDType::I8 | StoredDType::U8 => {
                return Err(Error::tensor(
                    name,
                    format!(
                        "is {} in {}, but this tensor must be floating point",
                        if dtype == StoredDType::I8 {
                            "int8"
                        } else {
                            "4-bit (U8)"
                        },
                        self.file()
                    ),
                ))
            }
        };
        let raw = self.row_major_bytes(name)?;
        let t = Tensor::from_raw_buffer(&raw, dt, shape, device)?;
        let t = if keep_half && matches!(dt, DType::F16 | DType::BF16) {
            t
        } else {
            t.to_dtype(DType::F32)?
        };
        check_finite(name, &t, self.file())?;
        Ok(t)
    }

    /// Loads a 2-D weight `[rows, cols]`: INT8 (with its `<name>_scale`) as `Q8_0` blocks, anything
    /// else as an [`F32Matrix`] (F16 and BF16 kept half precision where its kernel reads them so).
    pub fn load_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        device: &Device,
    ) -> Result<Matrix> {
        let (dtype, _) = self.lookup(name)?;
        if !dtype.is_quantized() {
            // F16/BF16 stay so only for a kernel that holds them (else widened here, once).
            let keep_half = crate::kernels::sgemm::Kernel::best().holds_half();
            let w = self.load_float(name, &[rows, cols], device, keep_half)?;
            let packed = F32Matrix::new(w).map_err(|e| Error::tensor(name, e))?;
            return Ok(Matrix::F32(Arc::new(packed)));
        }
        let Checkpoint::Safetensors(s) = self else {
            return Err(Error::tensor(
                name,
                "quantized weights are only read from safetensors",
            ));
        };
        let entry = &s.header.tensors[name];
        let four_bit = dtype == StoredDType::U8;
        // A 4-bit weight stores two values per byte.
        let stored_cols = if four_bit { cols / 2 } else { cols };
        check_shape(name, &entry.shape, &[rows, stored_cols], &s.file)?;
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::tensor(
                name,
                format!(
                    "is {} but its input size {cols} is not a multiple of {BLOCK}",
                    if four_bit { "4-bit" } else { "int8" }
                ),
            ));
        }
        let scale_name = int8::scale_name(name);
        let scale_entry = s.header.tensors.get(&scale_name).ok_or_else(|| {
            Error::tensor(
                &scale_name,
                format!(
                    "missing from {} (quantized weight `{name}` needs it)",
                    s.file
                ),
            )
        })?;
        let layout = int8::check_metadata(&self.metadata(), &s.file)?;
        if four_bit {
            let int4 = layout.has_int4();
            let group = match scale_entry.shape.as_slice() {
                [r, g] if *r == rows && *g > 0 && cols.is_multiple_of(*g) => cols / g,
                _ => 0,
            };
            if !int4
                || scale_entry.dtype != StoredDType::F16
                || !group.is_multiple_of(BLOCK)
                || group == 0
            {
                return Err(Error::tensor(
                    &scale_name,
                    format!(
                        "must be F16 [{rows}, {cols} / group] with a group that is a multiple \
                         of {BLOCK}, in a file whose blipq_scheme is q4_0, q4_g128 or mixed; found {} \
                         {:?} in a {} file",
                        scale_entry.dtype.as_str(),
                        scale_entry.shape,
                        layout.scheme().unwrap_or("q8_0")
                    ),
                ));
            }
            let scales = s.raw(scale_entry)?;
            check_f16_scales(&scales, &scale_name, &s.file)?;
            let q = s.raw(entry)?;
            let packed = Q8Matrix::from_int4(&q, &scales, rows, cols, group)
                .map_err(|e| Error::tensor(name, e))?;
            return Ok(Matrix::Q8(Arc::new(packed)));
        }
        if layout == int8::Layout::Channel {
            if scale_entry.dtype != StoredDType::F32 || scale_entry.shape != [rows, 1] {
                return Err(Error::tensor(
                    &scale_name,
                    format!(
                        "must be F32 [{rows}, 1] (one scale per output channel of an \
                         int8-channel file), found {} {:?}",
                        scale_entry.dtype.as_str(),
                        scale_entry.shape
                    ),
                ));
            }
            let q = s.raw(entry)?;
            let scales: Vec<f32> = s
                .raw(scale_entry)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = scales.iter().position(|v| !v.is_finite()) {
                return Err(Error::tensor(
                    &scale_name,
                    format!("holds a NaN or infinite scale (row {i}) in {}", s.file),
                ));
            }
            let packed = Q8Matrix::from_int8_channel(&q, &scales, rows, cols)
                .map_err(|e| Error::tensor(name, e))?;
            return Ok(Matrix::Q8(Arc::new(packed)));
        }
        if scale_entry.dtype != StoredDType::F16 {
            return Err(Error::tensor(
                &scale_name,
                format!("must be F16, found {}", scale_entry.dtype.as_str()),
            ));
        }
        let blocks = cols / BLOCK;
        let per_row = match scale_entry.shape.as_slice() {
            [r, b] if *r == rows && *b == blocks => false,
            [r, 1] if *r == rows => true,
            other => {
                return Err(Error::tensor(
                    &scale_name,
                    format!("shape {other:?} does not fit weight [{rows}, {cols}]: expected [{rows}, {blocks}] or [{rows}, 1]"),
                ))
            }
        };
        let q = s.raw(entry)?;
        let scales = s.raw(scale_entry)?;
        check_f16_scales(&scales, &scale_name, &s.file)?;
        // Packed straight from the file's bytes: no intermediate `Q8_0` copy.
        let packed = Q8Matrix::from_int8(&q, &scales, rows, cols, per_row)
            .map_err(|e| Error::tensor(name, e))?;
        Ok(Matrix::Q8(Arc::new(packed)))
    }
}

/// Refuses f16 scales (little-endian bytes) that are NaN or infinite (all exponent bits set).
fn check_f16_scales(scales: &[u8], name: &str, file: &str) -> Result<()> {
    match scales
        .chunks_exact(2)
        .position(|h| u16::from_le_bytes([h[0], h[1]]) & 0x7c00 == 0x7c00)
    {
        Some(i) => Err(Error::tensor(
            name,
            format!("holds NaN or infinite scales (first at index {i}) in {file}"),
        )),
        None => Ok(()),
    }
}

/// Refuses a tensor holding NaN or infinite values: the model would caption garbage silently.
fn check_finite(name: &str, t: &Tensor, file: &str) -> Result<()> {
    let first_bad = |v: &[f32]| v.iter().position(|x| !x.is_finite());
    let (storage, layout) = t.storage_and_layout();
    // F16 and BF16 are checked as stored (no f32 copy of a kept half-precision matrix).
    let bad = match (&*storage, layout.contiguous_offsets(), t.dtype()) {
        (candle_core::Storage::Cpu(cpu), Some((a, b)), DType::F32) => {
            first_bad(&cpu.as_slice::<f32>()?[a..b])
        }
        (candle_core::Storage::Cpu(cpu), Some((a, b)), DType::F16) => cpu
            .as_slice::<half::f16>()?[a..b]
            .iter()
            .position(|x| !x.is_finite()),
        (candle_core::Storage::Cpu(cpu), Some((a, b)), DType::BF16) => cpu
            .as_slice::<half::bf16>()?[a..b]
            .iter()
            .position(|x| !x.is_finite()),
        _ => {
            drop(storage);
            first_bad(&t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
        }
    };
    match bad {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            name,
            format!("holds NaN or infinite values (first at index {i}) in {file}"),
        )),
    }
}

fn check_shape(name: &str, stored: &[usize], expected: &[usize], file: &str) -> Result<()> {
    if stored != expected {
        return Err(Error::tensor(
            name,
            format!("has shape {stored:?} in {file} but the config implies {expected:?}"),
        ));
    }
    Ok(())
}

/// What the linear layers built from a recording [`Weights`] saw while their model ran: per
/// weight name, the sum of squares and the largest magnitude of each input feature and the
/// number of rows seen (the statistics of `blipq quantize --calibrate`). Clones share one table.
#[derive(Clone, Default, Debug)]
pub struct ActivationStats(Arc<Mutex<BTreeMap<String, FeatureSums>>>);

/// One layer's sums of squares and largest magnitudes per input feature, and the rows seen.
#[derive(Debug, Default)]
struct FeatureSums {
    squares: Vec<f64>,
    max_abs: Vec<f32>,
    rows: usize,
}

/// One layer's input features over the rows recorded ([`ActivationStats::summary`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    /// The mean square of each feature.
    pub mean_square: Vec<f32>,
    /// The largest magnitude of each feature.
    pub max_abs: Vec<f32>,
}

impl ActivationStats {
    /// Adds the rows of `xs` (`[..., features]`, f32) to the statistics of `name`.
    pub fn record(&self, name: &str, xs: &Tensor) -> Result<()> {
        let features = xs.dims().last().copied().unwrap_or(0).max(1);
        let values: Vec<f32> = xs.flatten_all()?.to_vec1()?;
        let mut table = self.0.lock().map_err(|_| {
            Error::Internal("activation statistics: a recording thread failed".into())
        })?;
        let sums = table
            .entry(name.to_string())
            .or_insert_with(|| FeatureSums {
                squares: vec![0.0; features],
                max_abs: vec![0.0; features],
                rows: 0,
            });
        if sums.squares.len() != features {
            return Err(Error::Internal(format!(
                "activation statistics of `{name}`: rows of {features} features after rows of {}",
                sums.squares.len()
            )));
        }
        for row in values.chunks_exact(features) {
            for ((s, m), &x) in sums.squares.iter_mut().zip(&mut sums.max_abs).zip(row) {
                *s += f64::from(x) * f64::from(x);
                *m = m.max(x.abs());
            }
            sums.rows += 1;
        }
        Ok(())
    }

    /// Per weight name, each input feature's mean square and largest magnitude over the rows
    /// recorded.
    pub fn summary(&self) -> BTreeMap<String, FeatureStats> {
        let table = match self.0.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        table
            .iter()
            .map(|(name, sums)| {
                let n = sums.rows.max(1) as f64;
                let stats = FeatureStats {
                    mean_square: sums.squares.iter().map(|s| (s / n) as f32).collect(),
                    max_abs: sums.max_abs.clone(),
                };
                (name.clone(), stats)
            })
            .collect()
    }
}

/// Weight matrices by full tensor name, shared between models ([`Weights::with_matrices`]): a
/// model built with an empty table fills it with every matrix it loads; a model built with a
/// filled one takes its matrices from there (the same packed copies, nothing loaded twice) and
/// only the rest (biases, norms, embeddings of positions) from the checkpoint.
#[derive(Clone, Default, Debug)]
pub struct MatrixTable(Arc<Mutex<BTreeMap<String, Matrix>>>);

impl MatrixTable {
    /// A table holding `matrices`.
    pub fn new(matrices: BTreeMap<String, Matrix>) -> Self {
        Self(Arc::new(Mutex::new(matrices)))
    }

    /// A copy of the table's entries (the matrices themselves shared, not copied).
    pub fn entries(&self) -> BTreeMap<String, Matrix> {
        match self.0.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A view into a checkpoint under a name prefix, in the manner of candle's `VarBuilder`.
#[derive(Clone)]
pub struct Weights<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
    device: Device,
    /// Where the layers built from this view record their inputs (calibration), if anywhere.
    stats: Option<ActivationStats>,
    /// Where matrices are taken from, and put once loaded ([`Weights::with_matrices`]).
    matrices: Option<MatrixTable>,
}

impl<'a> Weights<'a> {
    pub fn new(ckpt: &'a Checkpoint, device: &Device) -> Self {
        Self {
            ckpt,
            prefix: String::new(),
            device: device.clone(),
            stats: None,
            matrices: None,
        }
    }

    /// This view, taking each matrix from `table` when it holds the name, else loading it from
    /// the checkpoint and putting it there.
    pub fn with_matrices(self, table: &MatrixTable) -> Self {
        Self {
            matrices: Some(table.clone()),
            ..self
        }
    }

    /// This view, with every linear layer built from it recording its inputs into `stats`.
    pub fn recording(self, stats: &ActivationStats) -> Self {
        Self {
            stats: Some(stats.clone()),
            ..self
        }
    }

    /// The recorder of a recording view ([`Weights::recording`]).
    pub fn stats(&self) -> Option<&ActivationStats> {
        self.stats.as_ref()
    }

    /// The view one level down, e.g. `vb.pp("encoder").pp(3)`.
    pub fn pp(&self, s: impl ToString) -> Self {
        Self {
            ckpt: self.ckpt,
            prefix: self.path(&s.to_string()),
            device: self.device.clone(),
            stats: self.stats.clone(),
            matrices: self.matrices.clone(),
        }
    }

    /// Full tensor name of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ckpt.contains(&self.path(name))
    }

    /// Whether `name` (under this prefix) holds the same values as the tensor whose full name is
    /// `other` ([`Checkpoint::same_values`]).
    pub fn same_values(&self, name: &str, other: &str) -> Result<bool> {
        self.ckpt.same_values(&self.path(name), other)
    }

    /// An f32 tensor of the given shape.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.ckpt.load_f32(&self.path(name), shape, &self.device)
    }

    /// A 2-D weight, INT8 or f32 as stored (or as the matrix table holds it).
    pub fn matrix(&self, rows: usize, cols: usize, name: &str) -> Result<Matrix> {
        let path = self.path(name);
        let Some(MatrixTable(table)) = &self.matrices else {
            return self.ckpt.load_matrix(&path, rows, cols, &self.device);
        };
        let held = table
            .lock()
            .map_err(|_| Error::Internal("matrix table: a loading thread failed".into()))?
            .get(&path)
            .cloned();
        if let Some(m) = held {
            if m.dims2()? != (rows, cols) {
                return Err(Error::tensor(
                    &path,
                    format!(
                        "is {:?} in the matrix table, expected [{rows}, {cols}]",
                        m.dims2()?
                    ),
                ));
            }
            return Ok(m);
        }
        let m = self.ckpt.load_matrix(&path, rows, cols, &self.device)?;
        table
            .lock()
            .map_err(|_| Error::Internal("matrix table: a loading thread failed".into()))?
            .insert(path, m.clone());
        Ok(m)
    }
}
