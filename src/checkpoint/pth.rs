//! PyTorch `torch.save` checkpoints (`pytorch_model.bin`): the zip archive, the pickle
//! (`data.pkl`) that lists the state dict's tensors, and the tensors' bytes, read from any
//! [`ByteSource`] — a memory map natively, an in-memory buffer in the browser.
//!
//! Only what `torch.save(state_dict)` writes is understood: a zip archive of uncompressed entries
//! (`<prefix>/data.pkl`, `<prefix>/data/<key>` per storage, `<prefix>/byteorder`) and a pickle
//! (protocol 2 to 5) of a dict mapping names to `torch._utils._rebuild_tensor_v2(...)` calls
//! whose storages are persistent ids `('storage', torch.<Type>Storage, key, location, numel)`.
//! The pickle is interpreted, never executed: globals are only names, and the only calls given a
//! meaning are `OrderedDict()`, `_rebuild_tensor_v2` and `_rebuild_parameter`.
//!
//! Everything is bounded: the pickle is at most [`MAX_PICKLE_BYTES`] and creates at most
//! [`MAX_VALUES`] values (each costing at least one of its bytes), strings and byte strings are checked against the
//! bytes left before anything is allocated, memo references are indices into one arena (no
//! copies, no reference cycles), and a tensor's shape, strides and offset are checked against
//! its storage, whose zip entry must lie inside the file and hold exactly `numel` elements.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::checkpoint::{ByteSource, StoredDType, MAX_RANK, MAX_TENSORS};
use crate::{Error, Result};

/// Largest pickle (`data.pkl`) read: BLIP-large's is about 0.1 MB.
pub const MAX_PICKLE_BYTES: usize = 16 << 20;
/// Most values, stack slots and memo entries a pickle may create (BLIP-large's creates about
/// 30,000): with [`MAX_PICKLE_BYTES`], this bounds the reader's memory to about 100 MB whatever
/// the opcodes.
pub const MAX_VALUES: usize = 1 << 20;
/// Most entries the zip archive may hold: one per storage, plus a few bookkeeping files.
pub const MAX_ENTRIES: usize = MAX_TENSORS + 64;

/// Element types of PyTorch storages (`torch.<Name>Storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PthDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl PthDType {
    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
    /// The floating-point types blipq loads weights from.
    pub fn stored(self) -> Option<StoredDType> {
        match self {
            Self::F64 => Some(StoredDType::F64),
            Self::F32 => Some(StoredDType::F32),
            Self::F16 => Some(StoredDType::F16),
            Self::BF16 => Some(StoredDType::BF16),
            _ => None,
        }
    }
}

/// One tensor of the state dict: a strided view into a storage.
#[derive(Debug, Clone)]
pub struct PthTensor {
    pub dtype: PthDType,
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// The storage's absolute byte range in the file.
    start: usize,
    end: usize,
}

impl PthTensor {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
    fn is_contiguous(&self) -> bool {
        let mut expect = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect *= d;
        }
        true
    }
}

/// A `torch.save` checkpoint: its tensors and the bytes they live in.
pub struct Pth {
    file: String,
    bytes: Box<dyn ByteSource>,
    tensors: HashMap<String, PthTensor>,
}

impl Pth {
    /// Reads the archive's directory and pickle; tensor bytes are read later, one at a time.
    pub fn new(bytes: Box<dyn ByteSource>, file: &str) -> Result<Self> {
        let err = |msg: String| Error::checkpoint(file, msg);
        let magic = bytes.read(0, bytes.len().min(4))?;
        match &magic[..] {
            b"PK\x03\x04" => {}
            [0x80, 2..=5, ..] => {
                return Err(err(
                    "is a legacy (pre-zip, PyTorch < 1.6) torch.save file, which blipq does not \
                     read: re-save it with a current PyTorch, or save it as model.safetensors"
                        .into(),
                ))
            }
            _ => {
                return Err(err(
                    "not a PyTorch checkpoint (a torch.save file is a zip archive)".into(),
                ))
            }
        }
        let zip = Zip::parse(bytes.as_ref()).map_err(|e| err(e.msg()))?;
        let pkl = zip
            .entries
            .iter()
            .filter(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"))
            .collect::<Vec<_>>();
        let pkl = match pkl[..] {
            [one] => one,
            [] => return Err(err("has no data.pkl: not a torch.save archive".into())),
            _ => return Err(err("has more than one data.pkl".into())),
        };
        let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];
        if let Some(order) = zip
            .entries
            .iter()
            .find(|e| e.name == format!("{prefix}byteorder"))
        {
            if order.size > 16 {
                return Err(err(format!(
                    "its {} is {} bytes long",
                    order.name, order.size
                )));
            }
            let (s, e) = zip.data(bytes.as_ref(), order).map_err(|e| err(e.msg()))?;
            let text = bytes.read(s, e)?;
            if &text[..] != b"little" {
                return Err(err(format!(
                    "stores its tensors in byte order {:?}; blipq reads little-endian ones",
                    String::from_utf8_lossy(&text[..text.len().min(16)])
                )));
            }
        }
        if pkl.size > MAX_PICKLE_BYTES {
            return Err(err(format!(
                "its pickle {} is {}, over the limit of {}",
                pkl.name,
                crate::limits::mb(pkl.size as u64),
                crate::limits::mb(MAX_PICKLE_BYTES as u64)
            )));
        }
        let (s, e) = zip.data(bytes.as_ref(), pkl).map_err(|e| err(e.msg()))?;
        let pickle = bytes.read(s, e)?;
        let found = Unpickler::run(&pickle).map_err(|e| {
            err(format!(
                "its pickle {} is unreadable: {}",
                pkl.name,
                e.msg()
            ))
        })?;
        let by_name: HashMap<&str, &Entry> =
            zip.entries.iter().map(|e| (e.name.as_str(), e)).collect();
        let mut tensors = HashMap::with_capacity(found.len());
        for (name, t) in found {
            let entry_name = format!("{prefix}data/{}", t.key);
            let entry = by_name.get(entry_name.as_str()).ok_or_else(|| {
                Error::tensor(
                    &name,
                    format!("its storage {entry_name} is missing from {file}"),
                )
            })?;
            let (start, end) = zip.data(bytes.as_ref(), entry).map_err(|e| err(e.msg()))?;
            let esize = t.dtype.size_in_bytes();
            if t.numel.checked_mul(esize) != Some(end - start) {
                return Err(Error::tensor(
                    &name,
                    format!(
                        "its storage {entry_name} in {file} is {} bytes, not the {} elements of \
                         {esize} bytes its pickle declares",
                        end - start,
                        t.numel
                    ),
                ));
            }
            let tensor = PthTensor {
                dtype: t.dtype,
                shape: t.shape,
                stride: t.stride,
                offset: t.offset,
                start,
                end,
            };
            if tensors.insert(name.clone(), tensor).is_some() {
                return Err(Error::tensor(&name, format!("appears twice in {file}")));
            }
        }
        Ok(Self {
            file: file.to_string(),
            bytes,
            tensors,
        })
    }

    /// Memory-maps a file from disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let map = crate::checkpoint::map_file(path)?;
        Self::new(Box::new(map), &path.display().to_string())
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn tensors(&self) -> &HashMap<String, PthTensor> {
        &self.tensors
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.bytes.len()
    }

    /// Groups of two or more names that are the same tensor (one storage, same offset, shape,
    /// strides and dtype): how `torch.save` stores tied weights. Each group sorted, groups sorted.
    pub fn tied_groups(&self) -> Vec<Vec<String>> {
        let mut by_view: HashMap<_, Vec<String>> = HashMap::new();
        for (name, t) in &self.tensors {
            let key = (t.start, t.end, t.offset, &t.shape, &t.stride, t.dtype);
            by_view.entry(key).or_default().push(name.clone());
        }
        let mut groups: Vec<Vec<String>> = by_view
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
        groups.sort();
        groups
    }

    /// The bytes the file stores, for reading a tensor's bytes in pieces ([`Pth::span`]).
    pub fn bytes(&self) -> &dyn ByteSource {
        self.bytes.as_ref()
    }

    /// Where the tensor's elements lie in the file when they are stored in row-major order, one
    /// after the other (what `torch.save` writes for a tensor that is not a strided view): the
    /// absolute byte range. `None` for a strided view.
    pub fn span(&self, t: &PthTensor) -> Option<(usize, usize)> {
        let esize = t.dtype.size_in_bytes();
        let n = t.elem_count();
        if n == 0 {
            // Its offset is unchecked (nothing is read).
            return Some((t.start, t.start));
        }
        // In range: `Unpickler` checked offset + extent <= numel, and `new` checked that the
        // storage holds numel elements.
        let s = t.start + t.offset * esize;
        t.is_contiguous().then_some((s, s + n * esize))
    }

    /// The tensor's elements in row-major order, as little-endian bytes of its dtype.
    pub fn contiguous_bytes(&self, t: &PthTensor) -> Result<Cow<'_, [u8]>> {
        let esize = t.dtype.size_in_bytes();
        let n = t.elem_count();
        if n == 0 {
            return Ok(Cow::Owned(Vec::new()));
        }
        if let Some((s, e)) = self.span(t) {
            return self.bytes.read(s, e);
        }
        let storage = self.bytes.read(t.start, t.end)?;
        let mut out = Vec::with_capacity(n * esize);
        let mut index = vec![0usize; t.shape.len()];
        let mut at = t.offset;
        loop {
            out.extend_from_slice(&storage[at * esize..(at + 1) * esize]);
            // Odometer step: the last dimension fastest.
            let mut d = t.shape.len();
            loop {
                if d == 0 {
                    return Ok(Cow::Owned(out));
                }
                d -= 1;
                // Wrapping: a dimension of size 1 may have any stride; every index actually
                // read lies inside the storage (checked by `Unpickler::call`).
                index[d] += 1;
                at = at.wrapping_add(t.stride[d]);
                if index[d] < t.shape[d] {
                    break;
                }
                at = at.wrapping_sub(t.stride[d].wrapping_mul(t.shape[d]));
                index[d] = 0;
            }
        }
    }
}

/// A parse error before it is given the file's name.
struct Bad(String);

impl Bad {
    fn msg(self) -> String {
        self.0
    }
}

fn bad<T>(msg: impl Into<String>) -> std::result::Result<T, Bad> {
    Err(Bad(msg.into()))
}

impl From<Error> for Bad {
    fn from(e: Error) -> Self {
        Bad(e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Zip: the central directory of an archive of stored (uncompressed) entries.

/// One archive member.
struct Entry {
    name: String,
    method: u16,
    flags: u16,
    size: usize,
    compressed: usize,
    header: usize,
}

struct Zip {
    entries: Vec<Entry>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes `start..start + len` of `src`, or an error naming `what` if they are not all there.
fn read_at<'a>(
    src: &'a dyn ByteSource,
    start: u64,
    len: u64,
    what: &str,
) -> std::result::Result<Cow<'a, [u8]>, Bad> {
    match start.checked_add(len) {
        Some(end) if end <= src.len() as u64 => Ok(src.read(start as usize, end as usize)?),
        _ => bad(format!(
            "truncated zip archive: its {what} lies beyond the end of the file"
        )),
    }
}

impl Zip {
    const EOCD: u32 = 0x0605_4b50;
    const EOCD64: u32 = 0x0606_4b50;
    const LOCATOR64: u32 = 0x0706_4b50;
    const CENTRAL: u32 = 0x0201_4b50;
    const LOCAL: u32 = 0x0403_4b50;

    fn parse(src: &dyn ByteSource) -> std::result::Result<Self, Bad> {
        let len = src.len();
        // The end-of-central-directory record (22 bytes) is followed by a comment of < 64 KiB.
        let tail_start = len.saturating_sub(22 + 0xFFFF);
        let tail = src.read(tail_start, len)?;
        let eocd = (0..tail.len().saturating_sub(21))
            .rev()
            .find(|&i| u32_at(&tail, i) == Self::EOCD)
            .ok_or_else(
                || Bad("not a readable zip archive (no end of central directory)".into()),
            )?;
        let e = &tail[eocd..];
        let mut count = u64::from(u16_at(e, 10));
        let mut cd_size = u64::from(u32_at(e, 12));
        let mut cd_start = u64::from(u32_at(e, 16));
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_start == 0xFFFF_FFFF {
            let at = (tail_start + eocd)
                .checked_sub(20)
                .ok_or_else(|| Bad("truncated zip64 archive (no zip64 locator)".into()))?;
            let loc = read_at(src, at as u64, 20, "zip64 locator")?;
            if u32_at(&loc, 0) != Self::LOCATOR64 {
                return bad("damaged zip64 archive (bad zip64 locator)");
            }
            let rec = read_at(src, u64_at(&loc, 8), 56, "zip64 directory record")?;
            if u32_at(&rec, 0) != Self::EOCD64 {
                return bad("damaged zip64 archive (bad zip64 directory record)");
            }
            count = u64_at(&rec, 32);
            cd_size = u64_at(&rec, 40);
            cd_start = u64_at(&rec, 48);
        }
        if count > MAX_ENTRIES as u64 {
            return bad(format!(
                "holds {count} files, over the limit of {MAX_ENTRIES}"
            ));
        }
        let cd = read_at(src, cd_start, cd_size, "central directory")?;
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = 0usize;
        for _ in 0..count {
            if cd.len() - at < 46 || u32_at(&cd, at) != Self::CENTRAL {
                return bad("damaged zip archive (bad central directory entry)");
            }
            let h = &cd[at..];
            let flags = u16_at(h, 8);
            let method = u16_at(h, 10);
            let mut compressed = u64::from(u32_at(h, 20));
            let mut size = u64::from(u32_at(h, 24));
            let (n, x, c) = (
                usize::from(u16_at(h, 28)),
                usize::from(u16_at(h, 30)),
                usize::from(u16_at(h, 32)),
            );
            let mut header = u64::from(u32_at(h, 42));
            if h.len() < 46 + n + x + c {
                return bad("damaged zip archive (central directory entry overruns it)");
            }
            let name = std::str::from_utf8(&h[46..46 + n])
                .map_err(|_| Bad("damaged zip archive (a file name is not UTF-8)".into()))?
                .to_string();
            // Zip64 extended information: 64-bit values for the fields that are all ones.
            let mut extra = &h[46 + n..46 + n + x];
            while extra.len() >= 4 {
                let (id, sz) = (u16_at(extra, 0), usize::from(u16_at(extra, 2)));
                let body = extra.get(4..4 + sz).ok_or_else(|| {
                    Bad(format!(
                        "damaged zip archive (extra field of {name} overruns it)"
                    ))
                })?;
                if id == 1 {
                    let mut fields = body.chunks_exact(8).map(|c| u64_at(c, 0));
                    for v in [&mut size, &mut compressed, &mut header] {
                        if *v == 0xFFFF_FFFF {
                            *v = fields.next().ok_or_else(|| {
                                Bad(format!(
                                    "damaged zip64 archive (short zip64 field of {name})"
                                ))
                            })?;
                        }
                    }
                }
                extra = &extra[4 + sz..];
            }
            let fits = |v: u64| usize::try_from(v).ok().filter(|&v| v <= src.len());
            let (Some(size), Some(compressed), Some(header)) =
                (fits(size), fits(compressed), fits(header))
            else {
                return bad(format!(
                    "damaged zip archive ({name} is declared larger than the file)"
                ));
            };
            entries.push(Entry {
                name,
                method,
                flags,
                size,
                compressed,
                header,
            });
            at += 46 + n + x + c;
        }
        Ok(Zip { entries })
    }

    /// The absolute byte range of an entry's data, which must be stored uncompressed.
    fn data(&self, src: &dyn ByteSource, e: &Entry) -> std::result::Result<(usize, usize), Bad> {
        if e.flags & 1 != 0 {
            return bad(format!("{} is encrypted", e.name));
        }
        if e.method != 0 || e.size != e.compressed {
            return bad(format!(
                "{} is compressed (method {}); torch.save stores its entries uncompressed",
                e.name, e.method
            ));
        }
        let local = read_at(src, e.header as u64, 30, "local header")?;
        if u32_at(&local, 0) != Self::LOCAL {
            return bad(format!(
                "damaged zip archive (bad local header of {})",
                e.name
            ));
        }
        let names = usize::from(u16_at(&local, 26)) + usize::from(u16_at(&local, 28));
        match (e.header + 30)
            .checked_add(names)
            .and_then(|start| Some((start, start.checked_add(e.size)?)))
        {
            Some((start, end)) if end <= src.len() => Ok((start, end)),
            _ => bad(format!(
                "truncated zip archive: {} lies beyond the end of the file",
                e.name
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pickle: a stack machine over an arena of values.

/// Index of a value in the arena.
type Id = usize;

enum Value {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(String, String),
    /// `('storage', torch.<Type>Storage, key, location, numel)`.
    Storage {
        dtype: PthDType,
        key: String,
        numel: usize,
    },
    Tensor(Box<Found>),
    /// Any other call's result: kept, never interpreted.
    Opaque,
}

/// A tensor as the pickle describes it.
#[derive(Clone)]
struct Found {
    dtype: PthDType,
    key: String,
    numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl<'a> Unpickler<'a> {
    /// The `(name, tensor)` pairs of the state dict the pickle holds, in its order.
    fn run(data: &'a [u8]) -> std::result::Result<Vec<(String, Found)>, Bad> {
        let mut u = Unpickler {
            data,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        };
        let top = u.execute()?;
        u.state_dict(top)
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Bad> {
        if self.data.len() - self.pos < n {
            return bad(format!("truncated at byte {}", self.pos));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, Bad> {
        Ok(u16_at(self.take(2)?, 0))
    }
    fn u32(&mut self) -> std::result::Result<u32, Bad> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> std::result::Result<u64, Bad> {
        Ok(u64_at(self.take(8)?, 0))
    }
    fn len64(&mut self) -> std::result::Result<usize, Bad> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| bad(format!("truncated at byte {}", self.pos)))
    }
    /// A newline-terminated line (GLOBAL's operands).
    fn line(&mut self) -> std::result::Result<&'a str, Bad> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Bad(format!("truncated at byte {}", self.pos)))?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| bad("a global's name is not UTF-8"))
    }
    fn text(&mut self, n: usize) -> std::result::Result<String, Bad> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .or_else(|_| bad(format!("the string at byte {at} is not UTF-8")))
    }

    fn push(&mut self, v: Value) -> std::result::Result<(), Bad> {
        if self.arena.len() == MAX_VALUES {
            return self.too_many();
        }
        self.arena.push(v);
        self.push_id(self.arena.len() - 1)
    }
    fn push_id(&mut self, id: Id) -> std::result::Result<(), Bad> {
        if self.stack.len() == MAX_VALUES {
            return self.too_many();
        }
        self.stack.push(id);
        Ok(())
    }
    fn too_many<T>(&self) -> std::result::Result<T, Bad> {
        bad(format!(
            "it creates more than {MAX_VALUES} values (at byte {}); a state dict needs far fewer",
            self.pos
        ))
    }
    fn pop(&mut self) -> std::result::Result<Id, Bad> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return bad(format!("stack underflow at byte {}", self.pos));
        }
        Ok(self.stack.pop().expect("checked non-empty"))
    }
    fn top(&self) -> std::result::Result<Id, Bad> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return bad(format!("stack underflow at byte {}", self.pos));
        }
        Ok(*self.stack.last().expect("checked non-empty"))
    }
    /// The items pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> std::result::Result<Vec<Id>, Bad> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| Bad(format!("no MARK before byte {}", self.pos)))?;
        Ok(self.stack.split_off(m))
    }
    fn memo_put(&mut self, key: u32) -> std::result::Result<(), Bad> {
        let top = self.top()?;
        if self.memo.len() == MAX_VALUES && !self.memo.contains_key(&key) {
            return self.too_many();
        }
        self.memo.insert(key, top);
        Ok(())
    }
    fn memo_get(&mut self, key: u32) -> std::result::Result<(), Bad> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| Bad(format!("memo entry {key} used before it is set")))?;
        self.push_id(id)
    }
    fn tuple(&mut self, n: usize) -> std::result::Result<(), Bad> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.pop()?);
        }
        items.reverse();
        self.push(Value::Tuple(items))
    }
    fn append(&mut self, items: Vec<Id>) -> std::result::Result<(), Bad> {
        let list = self.top()?;
        match &mut self.arena[list] {
            Value::List(v) => v.extend(items),
            _ => return bad(format!("APPEND to a non-list at byte {}", self.pos)),
        }
        Ok(())
    }
    fn set_items(&mut self, items: Vec<Id>) -> std::result::Result<(), Bad> {
        if !items.len().is_multiple_of(2) {
            return bad(format!(
                "SETITEMS with an odd number of items at byte {}",
                self.pos
            ));
        }
        let dict = self.top()?;
        match &mut self.arena[dict] {
            Value::Dict(v) => v.extend(items.chunks_exact(2).map(|p| (p[0], p[1]))),
            _ => return bad(format!("SETITEM on a non-dict at byte {}", self.pos)),
        }
        Ok(())
    }

    /// Runs the opcodes up to STOP and returns the value left on the stack.
    fn execute(&mut self) -> std::result::Result<Id, Bad> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return bad(format!("pickle protocol {proto} (blipq reads 2 to 5)"));
                    }
                }
                b'.' => return self.pop(),
                0x95 => {
                    // FRAME: a length hint only.
                    self.u64()?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.push_id(t)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool)?,
                0x89 => self.push(Value::Bool)?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    if n > 8 {
                        return bad(format!("integer of {n} bytes at byte {at}"));
                    }
                    let v = if n == 0 {
                        0
                    } else {
                        let mut buf = if b[n - 1] & 0x80 != 0 {
                            [0xFF; 8]
                        } else {
                            [0; 8]
                        };
                        buf[..n].copy_from_slice(b);
                        i64::from_le_bytes(buf)
                    };
                    self.push(Value::Int(v))?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?;
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?;
                }
                0x8d => {
                    let n = self.len64()?;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?;
                }
                b'U' | b'C' => {
                    let n = usize::from(self.u8()?);
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                0x8e => {
                    let n = self.len64()?;
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                0x85 => self.tuple(1)?,
                0x86 => self.tuple(2)?,
                0x87 => self.tuple(3)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?;
                }
                b']' => self.push(Value::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()))?;
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).or_else(|_| bad("memo is full"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global(module, name))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.arena[module], &self.arena[name]) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = Value::Global(m.clone(), n.clone());
                            self.push(g)?;
                        }
                        _ => return bad(format!("STACK_GLOBAL of non-strings at byte {at}")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.storage(pid)?;
                    self.push(v)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args)?;
                    self.push(v)?;
                }
                0x81 => {
                    // NEWOBJ cls args: an object never interpreted.
                    self.pop()?;
                    self.pop()?;
                    self.push(Value::Opaque)?;
                }
                b'b' => {
                    // BUILD: the state (e.g. an OrderedDict's `_metadata`) is not needed.
                    self.pop()?;
                    self.top()?;
                }
                _ => {
                    return bad(format!(
                        "opcode 0x{op:02x} at byte {at} is not one torch.save writes"
                    ))
                }
            }
        }
    }

    fn int(&self, id: Id, what: &str) -> std::result::Result<usize, Bad> {
        match self.arena[id] {
            Value::Int(v) => usize::try_from(v).or_else(|_| bad(format!("negative {what} {v}"))),
            _ => bad(format!("{what} is not an integer")),
        }
    }
    fn ints(&self, id: Id, what: &str) -> std::result::Result<Vec<usize>, Bad> {
        match &self.arena[id] {
            Value::Tuple(items) if items.len() <= MAX_RANK => {
                items.iter().map(|&i| self.int(i, what)).collect()
            }
            Value::Tuple(items) => bad(format!(
                "a tensor of {} dimensions, over the limit of {MAX_RANK}",
                items.len()
            )),
            _ => bad(format!("a tensor's {what} is not a tuple")),
        }
    }

    /// BINPERSID: `('storage', torch.<Type>Storage, key, location, numel)`.
    fn storage(&self, pid: Id) -> std::result::Result<Value, Bad> {
        let Value::Tuple(items) = &self.arena[pid] else {
            return bad("a persistent id is not a tuple");
        };
        let [tag, ty, key, _location, numel] = items[..] else {
            return bad(format!(
                "a persistent id of {} items (expected 5)",
                items.len()
            ));
        };
        if !matches!(&self.arena[tag], Value::Str(s) if s == "storage") {
            return bad("a persistent id that is not a storage");
        }
        let dtype = match &self.arena[ty] {
            Value::Global(m, n) if m == "torch" => PthDType::from_storage(n)
                .ok_or_else(|| Bad(format!("unknown storage type torch.{n}")))?,
            Value::Global(m, n) => return bad(format!("unknown storage type {m}.{n}")),
            _ => return bad("a storage type that is not a global"),
        };
        let Value::Str(key) = &self.arena[key] else {
            return bad("a storage key that is not a string");
        };
        let numel = self.int(numel, "storage size")?;
        Ok(Value::Storage {
            dtype,
            key: key.clone(),
            numel,
        })
    }

    /// REDUCE: the few calls torch.save's pickles make; anything else stays opaque.
    fn call(&self, func: Id, args: Id) -> std::result::Result<Value, Bad> {
        let Value::Global(module, name) = &self.arena[func] else {
            return Ok(Value::Opaque);
        };
        let Value::Tuple(args) = &self.arena[args] else {
            return bad(format!(
                "{module}.{name} called with arguments that are not a tuple"
            ));
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
            ("torch._utils", "_rebuild_parameter") => match args.first().map(|&a| &self.arena[a]) {
                Some(Value::Tensor(t)) => Ok(Value::Tensor(t.clone())),
                _ => bad("_rebuild_parameter of something that is not a tensor"),
            },
            ("torch._utils", "_rebuild_tensor_v2") => {
                if args.len() < 4 {
                    return bad(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
                }
                let Value::Storage { dtype, key, numel } = &self.arena[args[0]] else {
                    return bad("_rebuild_tensor_v2 of something that is not a storage");
                };
                let offset = self.int(args[1], "storage offset")?;
                let shape = self.ints(args[2], "size")?;
                let stride = self.ints(args[3], "stride")?;
                if shape.len() != stride.len() {
                    return bad(format!(
                        "a tensor with {} sizes but {} strides",
                        shape.len(),
                        stride.len()
                    ));
                }
                // The last element's index, which must lie inside the storage.
                let mut last = Some(offset);
                let mut empty = false;
                for (&d, &s) in shape.iter().zip(&stride) {
                    if d == 0 {
                        empty = true;
                    } else {
                        last = last.and_then(|l| l.checked_add((d - 1).checked_mul(s)?));
                    }
                }
                let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                match (last, elems) {
                    (Some(l), Some(_)) if empty || l < *numel => {}
                    _ => {
                        return bad(format!(
                            "a tensor of shape {shape:?}, strides {stride:?} and offset {offset} \
                             reaches beyond its storage of {numel} elements"
                        ))
                    }
                }
                Ok(Value::Tensor(Box::new(Found {
                    dtype: *dtype,
                    key: key.clone(),
                    numel: *numel,
                    offset,
                    shape,
                    stride,
                })))
            }
            _ => Ok(Value::Opaque),
        }
    }

    /// The top-level dict's `(name, tensor)` pairs.
    fn state_dict(mut self, top: Id) -> std::result::Result<Vec<(String, Found)>, Bad> {
        let Value::Dict(items) = std::mem::replace(&mut self.arena[top], Value::None) else {
            return bad("the pickle does not hold a dict of tensors (a state dict)");
        };
        if items.len() > MAX_TENSORS {
            return bad(format!(
                "holds {} tensors, over the limit of {MAX_TENSORS}",
                items.len()
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let Value::Str(name) = &self.arena[k] else {
                return bad("a state dict key that is not a string");
            };
            let name = name.clone();
            match &self.arena[v] {
                // A tensor object stored under two names (memoized) is two entries.
                Value::Tensor(t) => out.push((name, (**t).clone())),
                // Non-tensor entries (rare extra state) are not weights.
                _ => continue,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_tensors_are_gathered_in_row_major_order() {
        // A 2x3 view with strides (1, 2) of a 6-element storage: the transpose of [[0,1],[2,3],[4,5]].
        let t = PthTensor {
            dtype: PthDType::U8,
            shape: vec![2, 3],
            stride: vec![1, 2],
            offset: 0,
            start: 0,
            end: 6,
        };
        let pth = Pth {
            file: "x".into(),
            bytes: Box::new(vec![0u8, 1, 2, 3, 4, 5]),
            tensors: HashMap::new(),
        };
        assert!(!t.is_contiguous());
        assert_eq!(&pth.contiguous_bytes(&t).unwrap()[..], &[0, 2, 4, 1, 3, 5]);
    }
}
