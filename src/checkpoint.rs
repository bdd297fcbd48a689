//! Weight files: safetensors (F32, F16, BF16, F64 and blipq's INT8 layout) read from a path
//! (memory-mapped) or from bytes, and PyTorch `pytorch_model.bin` pickles (native only).
//!
//! The safetensors header is parsed here rather than by the `safetensors` crate so that every
//! problem (truncation, bad offsets, unknown dtypes) is reported with the file and tensor it is in,
//! and so that tensor bytes can come from any [`ByteSource`] — a memory map, an owned buffer, or a
//! buffer living outside wasm memory that is copied in one tensor at a time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::model::q8::Q8Matrix;
use crate::{Error, Result};

/// Width of one INT8 quantization block along a weight's input dimension (candle's `Q8_0`).
pub const BLOCK: usize = 32;

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

/// Element types a checkpoint may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    F64,
    I8,
}

impl StoredDType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F64" => Self::F64,
            "I8" => Self::I8,
            _ => return None,
        })
    }
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F64 => 8,
            Self::I8 => 1,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F64 => "F64",
            Self::I8 => "I8",
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
}

/// A parsed safetensors header: tensor locations and the free-form `__metadata__`.
#[derive(Debug, Clone, Default)]
pub struct SafetensorsHeader {
    pub tensors: HashMap<String, TensorEntry>,
    pub metadata: HashMap<String, String>,
    /// Total file size the header implies (8 + header + data).
    pub file_len: usize,
}

impl SafetensorsHeader {
    /// Length of the header that starts a safetensors file, from its first 8 bytes.
    pub fn header_len(first8: &[u8], file: &str) -> Result<usize> {
        let arr: [u8; 8] = first8
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::checkpoint(file, "too short to be a safetensors file"))?;
        let n = u64::from_le_bytes(arr);
        // The format caps headers at 100 MB; anything larger is not a safetensors file.
        if n > 100_000_000 {
            return Err(Error::checkpoint(
                file,
                format!("not a safetensors file (header length {n} is implausible)"),
            ));
        }
        Ok(n as usize)
    }

    /// Parses the JSON header; `file_len` is the real file size, checked against the offsets.
    pub fn parse(header: &[u8], file_len: usize, file: &str) -> Result<Self> {
        let text = std::str::from_utf8(header)
            .map_err(|_| Error::checkpoint(file, "safetensors header is not UTF-8"))?;
        let root: HashMap<String, Value> = serde_json::from_str(text).map_err(|e| {
            Error::checkpoint(file, format!("safetensors header is not valid JSON: {e}"))
        })?;
        let data_start = 8 + header.len();
        let mut out = SafetensorsHeader::default();
        let mut data_len = 0usize;
        for (name, v) in root {
            if name == "__metadata__" {
                if let Value::Object(m) = v {
                    for (k, v) in m {
                        let v = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        out.metadata.insert(k, v);
                    }
                }
                continue;
            }
            let entry = parse_entry(&name, &v, data_start, file)?;
            data_len = data_len.max(entry.end - data_start);
            out.tensors.insert(name, entry);
        }
        out.file_len = data_start + data_len;
        if file_len < out.file_len {
            return Err(Error::checkpoint(
                file,
                format!(
                    "truncated: the header describes {} bytes but the file has {file_len}",
                    out.file_len
                ),
            ));
        }
        Ok(out)
    }
}

fn parse_entry(name: &str, v: &Value, data_start: usize, file: &str) -> Result<TensorEntry> {
    let bad = |msg: String| Error::checkpoint(file, format!("tensor `{name}`: {msg}"));
    let dtype_str = v
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing dtype".into()))?;
    let dtype = StoredDType::parse(dtype_str).ok_or_else(|| {
        bad(format!(
            "unsupported dtype {dtype_str} (expected F32, F16, BF16, F64 or I8)"
        ))
    })?;
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad("missing or invalid shape".into()))?;
    let offsets = v
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| match a.as_slice() {
            [s, e] => Some((s.as_u64()? as usize, e.as_u64()? as usize)),
            _ => None,
        })
        .ok_or_else(|| bad("missing or invalid data_offsets".into()))?;
    let elems = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("shape overflows".into()))?;
    let expected = elems
        .checked_mul(dtype.size_in_bytes())
        .ok_or_else(|| bad("shape overflows".into()))?;
    if offsets.1 < offsets.0 || offsets.1 - offsets.0 != expected {
        return Err(bad(format!(
            "data_offsets {:?} hold {} bytes but shape {shape:?} of {dtype_str} needs {expected}",
            offsets,
            offsets.1.saturating_sub(offsets.0)
        )));
    }
    Ok(TensorEntry {
        dtype,
        shape,
        start: data_start + offsets.0,
        end: data_start + offsets.1,
    })
}

/// A safetensors file: its header plus a source for the tensor bytes.
pub struct Safetensors {
    pub file: String,
    pub header: SafetensorsHeader,
    bytes: Box<dyn ByteSource>,
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
            bytes,
        })
    }

    /// Memory-maps a file from disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
        // SAFETY: the map is read-only; a file modified while mapped is the user's problem, as
        // with every mmap-based loader (candle, safetensors).
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path.display(), e))?;
        Self::new(Box::new(mmap), &path.display().to_string())
    }

    pub fn raw(&self, entry: &TensorEntry) -> Result<Cow<'_, [u8]>> {
        self.bytes.read(entry.start, entry.end)
    }
}

/// The weights of a model, from whichever file format held them.
pub enum Checkpoint {
    Safetensors(Safetensors),
    #[cfg(not(target_arch = "wasm32"))]
    Pth {
        file: String,
        tensors: candle_core::pickle::PthTensors,
    },
}

/// A weight matrix as stored: full precision, or INT8 `Q8_0` blocks packed for blipq's GEMM
/// kernels ([`Q8Matrix`], one copy shared by a tied embedding and LM head).
#[derive(Clone, Debug)]
pub enum Matrix {
    F32(Tensor),
    Q8(Arc<Q8Matrix>),
}

impl Matrix {
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Matrix::F32(t) => t.dims2()?,
            Matrix::Q8(q) => (q.n(), q.k()),
        })
    }
    /// Bytes the matrix occupies in memory.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Matrix::F32(t) => t.elem_count() * 4,
            Matrix::Q8(q) => q.size_in_bytes(),
        }
    }
}

impl Checkpoint {
    /// Opens `model.safetensors` or `pytorch_model.bin` by extension.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        if path
            .extension()
            .is_some_and(|e| e == "bin" || e == "pt" || e == "pth")
        {
            let file = path.display().to_string();
            if !path.exists() {
                return Err(Error::io(
                    &file,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                ));
            }
            let tensors = candle_core::pickle::PthTensors::new(path, None).map_err(|e| {
                Error::checkpoint(&file, format!("not a readable PyTorch checkpoint: {e}"))
            })?;
            return Ok(Checkpoint::Pth { file, tensors });
        }
        Ok(Checkpoint::Safetensors(Safetensors::open(path)?))
    }

    pub fn file(&self) -> &str {
        match self {
            Checkpoint::Safetensors(s) => &s.file,
            #[cfg(not(target_arch = "wasm32"))]
            Checkpoint::Pth { file, .. } => file,
        }
    }

    /// The `__metadata__` of a safetensors file (empty for pickles).
    pub fn metadata(&self) -> HashMap<String, String> {
        match self {
            Checkpoint::Safetensors(s) => s.header.metadata.clone(),
            #[cfg(not(target_arch = "wasm32"))]
            Checkpoint::Pth { .. } => HashMap::new(),
        }
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Checkpoint::Safetensors(s) => s.header.tensors.keys().cloned().collect(),
            #[cfg(not(target_arch = "wasm32"))]
            Checkpoint::Pth { tensors, .. } => tensors.tensor_infos().keys().cloned().collect(),
        };
        v.sort();
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Checkpoint::Safetensors(s) => s.header.tensors.contains_key(name),
            #[cfg(not(target_arch = "wasm32"))]
            Checkpoint::Pth { tensors, .. } => tensors.tensor_infos().contains_key(name),
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
            #[cfg(not(target_arch = "wasm32"))]
            Checkpoint::Pth { tensors, .. } => tensors.tensor_infos().get(name).and_then(|i| {
                let dtype = match i.dtype {
                    DType::F32 => StoredDType::F32,
                    DType::F16 => StoredDType::F16,
                    DType::BF16 => StoredDType::BF16,
                    DType::F64 => StoredDType::F64,
                    _ => return None,
                };
                Some((dtype, i.layout.shape().dims().to_vec()))
            }),
        }
    }

    fn missing(&self, name: &str) -> Error {
        Error::tensor(name, format!("missing from {}", self.file()))
    }

    /// Loads a floating-point tensor as f32 and checks its shape.
    pub fn load_f32(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let (dtype, stored_shape) = self.info(name).ok_or_else(|| self.missing(name))?;
        check_shape(name, &stored_shape, shape, self.file())?;
        let t = match self {
            Checkpoint::Safetensors(s) => {
                let entry = &s.header.tensors[name];
                let raw = s.raw(entry)?;
                let dt = match dtype {
                    StoredDType::F32 => DType::F32,
                    StoredDType::F16 => DType::F16,
                    StoredDType::BF16 => DType::BF16,
                    StoredDType::F64 => DType::F64,
                    StoredDType::I8 => {
                        return Err(Error::tensor(
                            name,
                            format!(
                                "is int8 in {}, but this tensor must be floating point",
                                s.file
                            ),
                        ))
                    }
                };
                Tensor::from_raw_buffer(&raw, dt, shape, device)?
            }
            #[cfg(not(target_arch = "wasm32"))]
            Checkpoint::Pth { tensors, file } => tensors
                .get(name)
                .map_err(|e| Error::tensor(name, format!("unreadable in {file}: {e}")))?
                .ok_or_else(|| self.missing(name))?,
        };
        Ok(t.to_dtype(DType::F32)?)
    }

    /// Loads a 2-D weight `[rows, cols]`: INT8 (with its `<name>_scale`) as `Q8_0` blocks, anything
    /// else as an f32 tensor.
    pub fn load_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        device: &Device,
    ) -> Result<Matrix> {
        let (dtype, _) = self.info(name).ok_or_else(|| self.missing(name))?;
        if dtype != StoredDType::I8 {
            return Ok(Matrix::F32(self.load_f32(name, &[rows, cols], device)?));
        }
        // On wasm32 safetensors is the only variant, so the pattern is irrefutable there.
        #[cfg_attr(target_arch = "wasm32", allow(irrefutable_let_patterns))]
        let Checkpoint::Safetensors(s) = self
        else {
            return Err(Error::tensor(
                name,
                "int8 weights are only read from safetensors",
            ));
        };
        let entry = &s.header.tensors[name];
        check_shape(name, &entry.shape, &[rows, cols], &s.file)?;
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::tensor(
                name,
                format!("is int8 but its input size {cols} is not a multiple of {BLOCK}"),
            ));
        }
        let scale_name = format!("{name}_scale");
        let scale_entry = s.header.tensors.get(&scale_name).ok_or_else(|| {
            Error::tensor(
                &scale_name,
                format!("missing from {} (int8 weight `{name}` needs it)", s.file),
            )
        })?;
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
        // Packed straight from the file's bytes: no intermediate `Q8_0` copy.
        let packed = Q8Matrix::from_int8(&q, &scales, rows, cols, per_row)
            .map_err(|e| Error::tensor(name, e))?;
        Ok(Matrix::Q8(Arc::new(packed)))
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

/// A view into a checkpoint under a name prefix, in the manner of candle's `VarBuilder`.
#[derive(Clone)]
pub struct Weights<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
    device: Device,
}

impl<'a> Weights<'a> {
    pub fn new(ckpt: &'a Checkpoint, device: &Device) -> Self {
        Self {
            ckpt,
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// The view one level down, e.g. `vb.pp("encoder").pp(3)`.
    pub fn pp(&self, s: impl ToString) -> Self {
        Self {
            ckpt: self.ckpt,
            prefix: self.path(&s.to_string()),
            device: self.device.clone(),
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

    /// An f32 tensor of the given shape.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.ckpt.load_f32(&self.path(name), shape, &self.device)
    }

    /// A 2-D weight, INT8 or f32 as stored.
    pub fn matrix(&self, rows: usize, cols: usize, name: &str) -> Result<Matrix> {
        self.ckpt
            .load_matrix(&self.path(name), rows, cols, &self.device)
    }
}
