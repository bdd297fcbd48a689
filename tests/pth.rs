//! blipq's own `torch.save` reader (`src/checkpoint/pth.rs`) on archives built here byte by byte: strided
//! and shared storages read as PyTorch lays them out, zip64 archives, and hostile archives and
//! pickles refused with a message (never a panic or an allocation the file does not justify).
//! Real `torch.save` files are covered by `tests/loading.rs` (the `tiny-bin` fixture).

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

use std::io::Write;

use blipq::checkpoint::pth::Pth;
use blipq::checkpoint::{Checkpoint, StoredDType};
use candle_core::Device;

/// A pickle written opcode by opcode.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(&mut self, v: u16) -> &mut Self {
        self.0.push(b'M');
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn ints(&mut self, v: &[u16]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
    /// `name: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`, the
    /// storage's persistent id spelled out (`ty`, `key`, `numel`).
    fn tensor(
        &mut self,
        name: &str,
        (ty, key, numel): (&str, &str, u16),
        offset: u16,
        size: &[u16],
        stride: &[u16],
    ) -> &mut Self {
        self.str(name)
            .op(b"ctorch._utils\n_rebuild_tensor_v2\n(")
            .op(b"(")
            .str("storage")
            .op(format!("ctorch\n{ty}\n").as_bytes())
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[0x89])
            .op(b"ccollections\nOrderedDict\n)R")
            .op(b"tR")
    }
    /// `OrderedDict` with the items written by `items`, then STOP.
    fn state_dict(items: impl FnOnce(&mut Pickle)) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(&[0x80, 2]).op(b"ccollections\nOrderedDict\n)R(");
        items(&mut p);
        p.op(b"u.");
        p.0
    }
}

/// A zip of stored entries under `archive/`, as torch.save writes them.
fn archive(pickle: &[u8], storages: &[(&str, Vec<u8>)], large: bool) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(large);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/byteorder", opts).unwrap();
    z.write_all(b"little").unwrap();
    for (key, data) in storages {
        z.start_file(format!("archive/data/{key}"), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn open(bytes: Vec<u8>) -> blipq::Result<Checkpoint> {
    Ok(Checkpoint::Pth(Pth::new(
        Box::new(bytes),
        "pytorch_model.bin",
    )?))
}

fn err(bytes: Vec<u8>) -> String {
    match open(bytes) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

/// Six floats 0..6: `t` is their 2x3 transpose view (strides 1, 2), `tail` the last four as a
/// vector (offset 2), both on storage "0".
fn strided_checkpoint(large: bool) -> Vec<u8> {
    let pickle = Pickle::state_dict(|p| {
        p.tensor("t", ("FloatStorage", "0", 6), 0, &[2, 3], &[1, 2]);
        p.tensor("tail", ("FloatStorage", "0", 6), 2, &[4], &[1]);
    });
    let data = f32_bytes(&[0., 1., 2., 3., 4., 5.]);
    archive(&pickle, &[("0", data)], large)
}

#[test]
fn strided_and_shared_storages_read_as_pytorch_lays_them_out() {
    for large in [false, true] {
        let ckpt = open(strided_checkpoint(large)).unwrap();
        assert_eq!(ckpt.names(), ["t", "tail"]);
        assert_eq!(ckpt.info("t"), Some((StoredDType::F32, vec![2, 3])));
        let t = ckpt.load_f32("t", &[2, 3], &Device::Cpu).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), [[0., 2., 4.], [1., 3., 5.]]);
        let tail = ckpt.load_f32("tail", &[4], &Device::Cpu).unwrap();
        assert_eq!(tail.to_vec1::<f32>().unwrap(), [2., 3., 4., 5.]);
    }
}

#[test]
fn same_values_compares_elements_in_row_major_order() {
    // `t` is the 2x3 transpose view of storage "0"; `c` holds the same elements stored
    // contiguously, `d` differs in the last one, `ids` has the same shape but another dtype.
    let pickle = Pickle::state_dict(|p| {
        p.tensor("t", ("FloatStorage", "0", 6), 0, &[2, 3], &[1, 2]);
        p.tensor("c", ("FloatStorage", "1", 6), 0, &[2, 3], &[3, 1]);
        p.tensor("d", ("FloatStorage", "2", 6), 0, &[2, 3], &[3, 1]);
        p.tensor("ids", ("LongStorage", "3", 6), 0, &[2, 3], &[3, 1]);
    });
    let ids: Vec<u8> = [0i64, 2, 4, 1, 3, 5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let storages = [
        ("0", f32_bytes(&[0., 1., 2., 3., 4., 5.])),
        ("1", f32_bytes(&[0., 2., 4., 1., 3., 5.])),
        ("2", f32_bytes(&[0., 2., 4., 1., 3., 6.])),
        ("3", ids),
    ];
    let ckpt = open(archive(&pickle, &storages, false)).unwrap();
    assert!(ckpt.same_values("t", "c").unwrap());
    assert!(ckpt.same_values("c", "t").unwrap());
    assert!(!ckpt.same_values("c", "d").unwrap());
    assert!(!ckpt.same_values("t", "d").unwrap());
    assert!(!ckpt.same_values("ids", "ids").unwrap(), "not a weight");
    assert!(!ckpt.same_values("c", "missing").unwrap());
    assert!(
        ckpt.tied_duplicates().unwrap().is_empty(),
        "not BLIP's tied names"
    );
}

#[test]
fn half_precision_and_integer_storages() {
    let pickle = Pickle::state_dict(|p| {
        p.tensor("h", ("HalfStorage", "0", 2), 0, &[2], &[1]);
        p.tensor("ids", ("LongStorage", "1", 2), 0, &[1, 2], &[2, 1]);
    });
    let half: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let ids: Vec<u8> = [7i64, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
    let ckpt = open(archive(&pickle, &[("0", half), ("1", ids)], false)).unwrap();
    let h = ckpt.load_f32("h", &[2], &Device::Cpu).unwrap();
    assert_eq!(h.to_vec1::<f32>().unwrap(), [1.5, -2.0]);
    let e = ckpt.lookup("ids").unwrap_err().to_string();
    assert!(e.contains("ids") && e.contains("has dtype I64"), "{e}");
}

#[test]
fn tensors_reaching_beyond_their_storage_are_refused() {
    // Offset 4 + 3 elements of a 6-element storage.
    let pickle = Pickle::state_dict(|p| {
        p.tensor("w", ("FloatStorage", "0", 6), 4, &[3], &[1]);
    });
    let e = err(archive(&pickle, &[("0", f32_bytes(&[0.; 6]))], false));
    assert!(
        e.contains("reaches beyond its storage of 6 elements"),
        "{e}"
    );
    // A storage entry shorter than the numel its pickle declares.
    let pickle = Pickle::state_dict(|p| {
        p.tensor("w", ("FloatStorage", "0", 6), 0, &[6], &[1]);
    });
    let e = err(archive(&pickle, &[("0", f32_bytes(&[0.; 5]))], false));
    assert!(
        e.contains("w") && e.contains("is 20 bytes, not the 6 elements"),
        "{e}"
    );
    // A storage that is not in the archive.
    let e = err(archive(&pickle, &[], false));
    assert!(e.contains("archive/data/0 is missing"), "{e}");
}

#[test]
fn hostile_pickles_are_refused_without_allocating() {
    let data = vec![("0", f32_bytes(&[0.; 6]))];
    // A string claiming 4 GB in a pickle of a few bytes (candle's reader allocated it).
    let mut p = vec![0x80, 2, b'X'];
    p.extend_from_slice(&u32::MAX.to_le_bytes());
    p.extend_from_slice(b"abc");
    let e = err(archive(&p, &data, false));
    assert!(e.contains("unreadable") && e.contains("truncated"), "{e}");
    // An opcode torch.save never writes (INST, which would call an arbitrary class).
    let e = err(archive(b"\x80\x02i__builtin__\nlist\n.", &data, false));
    assert!(e.contains("opcode 0x69"), "{e}");
    // Stack underflow, a memo read before it is written, a missing STOP.
    for (p, want) in [
        (&b"\x80\x02R."[..], "stack underflow"),
        (b"\x80\x02h\x05.", "memo entry 5"),
        (b"\x80\x02}", "truncated"),
        (b"\x80\x02K\x01.", "not hold a dict of tensors"),
        (b"\x80\x09.", "protocol 9"),
    ] {
        let e = err(archive(p, &data, false));
        assert!(e.contains(want), "{want}: {e}");
    }
    // Two million values from a 2 MB pickle: refused at the limit, not built.
    let mut p = vec![0x80, 2];
    p.resize(2 + 2_000_000, b'N');
    p.push(b'.');
    let e = err(archive(&p, &data, false));
    assert!(e.contains("creates more than 1048576 values"), "{e}");
    // A storage of an unknown type.
    let pickle = Pickle::state_dict(|p| {
        p.tensor("w", ("ComplexStorage", "0", 6), 0, &[6], &[1]);
    });
    let e = err(archive(&pickle, &data, false));
    assert!(
        e.contains("unknown storage type torch.ComplexStorage"),
        "{e}"
    );
}

#[test]
fn hostile_archives_are_refused() {
    let good = strided_checkpoint(false);
    // Truncated anywhere: a message, never a panic.
    for cut in [10, good.len() / 2, good.len() - 30, good.len() - 1] {
        let e = err(good[..cut].to_vec());
        assert!(e.contains("pytorch_model.bin"), "{cut}: {e}");
    }
    // A compressed entry (the method field of data.pkl's central directory entry set to 8).
    let mut bytes = good.clone();
    let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 10] = 8;
    let e = err(bytes);
    assert!(
        e.contains("archive/data.pkl is compressed (method 8)"),
        "{e}"
    );
    // Big-endian tensors.
    let mut bytes = good.clone();
    let at = bytes.windows(6).position(|w| w == b"little").unwrap();
    bytes[at..at + 6].copy_from_slice(b"bigxxx");
    let e = err(bytes);
    assert!(e.contains("byte order \"bigxxx\""), "{e}");
}
