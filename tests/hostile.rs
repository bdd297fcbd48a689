//! Hostile and careless input: nothing the user has is lost, nothing is unbounded, formats are
//! checked strictly, bad values get short errors that name the thing, exit codes tell the truth.

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use blipq::checkpoint::Safetensors;
use blipq::{CaptionOptions, Captioner};
use common::*;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo");
const DEMO_INT8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo-int8");
const EVAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/demo-eval");

fn blipq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blipq"))
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("blipq-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `root/dir`, created, holding one file `name` with `bytes`.
fn folder_with(root: &Path, dir: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let d = root.join(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
    d
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    (out, err)
}

/// Fails unless the command failed cleanly (exit 1, not a crash) with a message naming `parts`.
fn assert_fails(cmd: &mut Command, parts: &[&str]) -> String {
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
    for p in parts {
        assert!(
            err.contains(p),
            "{cmd:?}: error {err:?} does not mention {p:?}"
        );
    }
    assert!(
        err.len() < 4000,
        "error message too long ({} bytes)",
        err.len()
    );
    err
}

/// `blipq quantize <flags> --model <model> --out <out>`.
fn quantize(flags: &[&str], model: impl AsRef<Path>, out: &Path) -> Command {
    let mut cmd = blipq();
    cmd.arg("quantize")
        .args(flags)
        .arg("--model")
        .arg(model.as_ref())
        .arg("--out")
        .arg(out);
    cmd
}

/// Sets every element of the F32 tensors in `model`'s weights whose names `pick` accepts to
/// `value`, then checks that quantizing it into `out` fails naming `parts` and leaves nothing at
/// `out`.
fn assert_quantize_refuses_weights(
    model: &Path,
    pick: impl Fn(&str) -> bool,
    value: f32,
    out: &Path,
    parts: &[&str],
) {
    rewrite_weights(
        model,
        |name, mut raw| {
            if pick(name) {
                raw.data = value.to_le_bytes().repeat(raw.data.len() / 4);
            }
            Some(raw)
        },
        vec![],
    );
    assert_fails(&mut quantize(&[], model, out), parts);
    assert!(!out.exists());
}

/// sha256 of every file under `dir`, by relative name.
fn digests(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (
                name,
                blipq::quantize::sha256_hex(&std::fs::read(&p).unwrap()),
            )
        })
        .collect();
    v.sort();
    v
}

fn demo_copy(tag: &str) -> PathBuf {
    let d = temp(tag).join("x");
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(DEMO).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    d
}

#[test]
fn quantize_never_writes_over_its_source() {
    let src = demo_copy("self");
    let before = digests(&src);
    let root = src.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(root.join("y")).unwrap();
    std::os::unix::fs::symlink(&src, root.join("link")).unwrap();
    let outs = [
        (src.clone(), "is the source"),
        (
            PathBuf::from(format!("{}/", src.display())),
            "is the source",
        ),
        (root.join("y/../x"), "is the source"),
        (root.join("link"), "is the source"),
        (src.join("int8"), "lies inside the source"),
        (root.clone(), "contains the source"),
    ];
    for (out, why) in outs {
        for force in [false, true] {
            let mut cmd = quantize(&["--no-validate"], &src, &out);
            if force {
                cmd.arg("--force");
            }
            assert_fails(&mut cmd, &[why]);
            assert_eq!(
                digests(&src),
                before,
                "source changed by --out {}",
                out.display()
            );
        }
    }
    assert!(!src.join("int8").exists());
}

#[test]
fn writers_refuse_non_empty_outputs_unless_forced() {
    let root = temp("nonempty");
    let out = folder_with(&root, "out", "notes.txt", b"mine");
    for args in [
        vec!["quantize", "--no-validate", "--model", DEMO],
        vec!["synth", "--preset", "base"],
    ] {
        assert_fails(
            blipq().args(&args).arg("--out").arg(&out),
            &["is not empty", "--force"],
        );
        assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    }
    // An existing checkpoint is not replaced by synth either.
    let ckpt = demo_copy("synth-over");
    let before = digests(&ckpt);
    assert_fails(
        blipq()
            .args(["synth", "--preset", "base", "--out"])
            .arg(&ckpt),
        &["is not empty"],
    );
    assert_eq!(digests(&ckpt), before);
    // --force replaces the contents, once the new checkpoint is complete.
    let (o, err) = run(&mut quantize(&["--no-validate", "--force"], DEMO, &out));
    assert!(o.status.success(), "{err}");
    assert!(!out.join("notes.txt").exists());
    assert!(Captioner::load_dir(&out).unwrap().info().is_quantized);
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        ["out"],
        "no temporary folders left beside the output"
    );
}

#[test]
fn quantize_checks_every_input_before_writing() {
    let root = temp("inputs");
    let images = folder_with(&root, "images", "notes.png", b"not an image");
    let out = root.join("out");
    assert_fails(
        quantize(&[], DEMO, &out)
            .arg("--validation-images")
            .arg(&images),
        &["notes.png", "--validation-images"],
    );
    assert!(!out.exists());
    // A broken model: NaN weights are refused before anything is written.
    let nan = demo_copy("nan");
    assert_quantize_refuses_weights(
        &nan,
        |name| name.ends_with("text_decoder.cls.predictions.bias"),
        f32::NAN,
        &out,
        &["text_decoder.cls.predictions.bias", "NaN"],
    );
}

#[test]
fn a_killed_quantize_leaves_nothing_at_out() {
    let root = temp("killed");
    let out = root.join("out");
    // Validation on the 250 eval images keeps the run busy after the weights are written.
    let mut child = quantize(&["--validation-images", EVAL], DEMO, &out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = |root: &Path| {
        std::fs::read_dir(root).unwrap().find_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name.starts_with(".out.blipq-partial-") && p.join("model.safetensors").exists())
                .then_some(p)
        })
    };
    let start = Instant::now();
    let seen = loop {
        if let Some(p) = partial(&root) {
            break Some(p);
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.is_some(),
        "the run finished before the weights were seen"
    );
    assert!(!out.exists(), "a killed run left {}", out.display());
    // The next run cleans up the dead run's temporary folder and completes.
    let (o, err) = run(&mut quantize(&["--no-validate"], DEMO, &out));
    assert!(o.status.success(), "{err}");
    assert!(!seen.unwrap().exists());
}

#[test]
fn only_regular_files_of_bounded_size_are_read() {
    let root = temp("files");
    let fifo = root.join("pipe.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let sparse = root.join("huge.png");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(3_000_000_000).unwrap();
    let start = Instant::now();
    let (_, err) = run(blipq().args(["caption", "--model", DEMO]).args([
        Path::new("/dev/zero"),
        &fifo,
        &sparse,
        &root,
    ]));
    for part in [
        "/dev/zero: is a FIFO, socket or device, not a regular file",
        "pipe.png: is a FIFO, socket or device, not a regular file",
        "huge.png: is 2861.0 MB, over the limit of 256.0 MB",
        "is a directory, not a regular file",
        "4 of 4 images failed",
    ] {
        assert!(err.contains(part), "{err}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    // Checkpoint files linked to devices, FIFOs or oversized files.
    for (file, target) in [
        ("config.json", PathBuf::from("/dev/zero")),
        ("tokenizer.json", fifo.clone()),
        ("preprocessor_config.json", sparse.clone()),
        ("model.safetensors", PathBuf::from("/dev/zero")),
    ] {
        let dir = demo_copy(&format!("link-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        std::os::unix::fs::symlink(&target, dir.join(file)).unwrap();
        let err = match Captioner::load_dir(&dir) {
            Ok(_) => panic!("{file} -> {} loaded", target.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(file), "{err}");
        assert!(
            err.contains("not a regular file") || err.contains("over the limit"),
            "{err}"
        );
    }
    // A directory named like the weights.
    let dir = demo_copy("dir-weights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::create_dir(dir.join("model.safetensors")).unwrap();
    let err = Captioner::load_dir(&dir).err().unwrap().to_string();
    assert!(err.contains("model.safetensors: is a directory"), "{err}");
}

#[test]
fn decoding_options_are_checked_against_the_model() {
    let image = Path::new(EVAL).join("scene_000000.png");
    for (args, expect) in [
        (vec!["--num-beams", "1000000"], "between 1 and 64"),
        (vec!["--num-beams", "4294967297"], "between 1 and 64"),
        (
            vec!["--num-beams", "18446744073709551615"],
            "between 1 and 64",
        ),
        (vec!["--num-beams", "0"], "between 1 and 64"),
        (vec!["--max-length", "0"], "max_length is 0"),
        (vec!["--max-length", "1"], "max_length is 1"),
        (vec!["--max-length", "513"], "max_position_embeddings"),
        (
            vec!["--max-new-tokens", "18446744073709551615"],
            "max_new_tokens is",
        ),
        (vec!["--max-new-tokens", "0"], "max_new_tokens is 0"),
    ] {
        let mut cmd = blipq();
        cmd.args(["caption", "--model", DEMO])
            .args(&args)
            .arg(&image);
        assert_fails(&mut cmd, &[expect]);
    }
    let model = Captioner::load_dir(Path::new(DEMO)).unwrap();
    let max_pos = model.config().text.max_position_embeddings;
    let bytes = std::fs::read(&image).unwrap();
    let long_prompt = vec!["red"; max_pos + 5].join(" ");
    for (opts, expect) in [
        (
            CaptionOptions {
                prompt: Some(long_prompt),
                ..Default::default()
            },
            "leaves no room for new tokens",
        ),
        (
            CaptionOptions {
                fixed_new_tokens: Some(usize::MAX),
                ..Default::default()
            },
            "fixed_new_tokens is",
        ),
    ] {
        let e = model
            .caption(&bytes, "img", &opts, &mut |_| {})
            .unwrap_err();
        assert!(e.to_string().contains(expect), "{e}");
    }
    // --threads is capped by the machine, --warmup by a stated limit.
    assert_fails(
        blipq().args(["bench", "--threads", "10000", "--limit", "1"]),
        &["--threads 10000", "per core"],
    );
    assert_fails(
        blipq().args(["bench", "--warmup", "18446744073709551615"]),
        &["at most 100"],
    );
}

#[test]
fn bench_exits_non_zero_when_images_fail() {
    let root = temp("bench");
    let images = folder_with(&root, "images", "a.png", b"not a png");
    std::fs::copy(
        Path::new(EVAL).join("scene_000000.png"),
        images.join("b.png"),
    )
    .unwrap();
    let out = root.join("out");
    let err = assert_fails(
        blipq()
            .args(["bench", "--warmup", "0", "--model", DEMO, "--images"])
            .arg(&images)
            .arg("--out")
            .arg(&out),
        &["a.png", "1 of 2 image runs failed"],
    );
    assert!(err.contains("reports written"), "{err}");
    assert!(out.join("comparison.md").exists() && out.join("demo_results.json").exists());
    // Every image failing is a failure too, with the reports written.
    std::fs::remove_file(images.join("b.png")).unwrap();
    assert_fails(
        blipq()
            .args(["bench", "--warmup", "1", "--model", DEMO, "--images"])
            .arg(&images)
            .arg("--out")
            .arg(&out),
        &["1 of 1 image runs failed"],
    );
}

/// A safetensors file from a header JSON and a data section.
fn safetensors_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

fn header_err(bytes: Vec<u8>) -> String {
    match Safetensors::new(Box::new(bytes), "model.safetensors") {
        Ok(_) => panic!("header accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn safetensors_follow_the_format_rules() {
    let t = |name: &str, a: usize, b: usize| {
        format!(
            r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{a},{b}]}}"#,
            (b - a) / 4
        )
    };
    let ok = format!("{{{},{}}}", t("a", 0, 8), t("b", 8, 16));
    assert!(Safetensors::new(Box::new(safetensors_bytes(&ok, 16)), "m").is_ok());
    for (header, data, expect) in [
        (
            format!("{{{},{}}}", t("a", 0, 8), t("b", 4, 12)),
            12,
            "an overlap",
        ),
        (
            format!("{{{},{}}}", t("a", 0, 8), t("b", 0, 8)),
            8,
            "an overlap",
        ),
        (
            format!("{{{},{}}}", t("a", 0, 8), t("b", 12, 20)),
            20,
            "a gap",
        ),
        (format!("{{{}}}", t("a", 4, 12)), 12, "a gap"),
        (ok.clone(), 20, "4 bytes after the last tensor"),
        (ok.clone(), 12, "truncated"),
        (
            format!("{{{},{}}}", t("a", 0, 8), t("a", 8, 16)),
            16,
            "`a` appears twice",
        ),
        (
            r#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#.into(),
            4,
            "9 dimensions, over the limit of 8",
        ),
        (
            r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#.into(),
            8,
            "unsupported dtype I64",
        ),
    ] {
        let e = header_err(safetensors_bytes(&header, data));
        assert!(e.contains(expect), "{header}: {e}");
        assert!(e.starts_with("model.safetensors: "), "{e}");
    }
    // A million entries: refused while parsing, without building them all.
    let many: Vec<String> = (0..1_000_000).map(|i| t(&format!("t{i}"), 0, 0)).collect();
    let header = format!("{{{}}}", many.join(","));
    assert!(header.len() > blipq::checkpoint::MAX_HEADER_BYTES);
    let e = header_err(safetensors_bytes(&header, 0));
    assert!(e.contains("over the limit of"), "{e}");
    let many: Vec<String> = (0..70_000).map(|i| t(&format!("t{i}"), 0, 0)).collect();
    let e = header_err(safetensors_bytes(&format!("{{{}}}", many.join(",")), 0));
    assert!(e.contains("more than 65536 tensors"), "{e}");
    // A 5M-dimension shape gives a short message.
    let dims = vec!["1"; 5_000_000].join(",");
    let e = header_err(safetensors_bytes(
        &format!(r#"{{"a":{{"dtype":"F32","shape":[{dims}],"data_offsets":[0,4]}}}}"#),
        4,
    ));
    assert!(e.len() < 300, "{} bytes", e.len());
}

fn load_err(dir: &Path) -> String {
    match Captioner::load_dir(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn int8_metadata_is_checked() {
    for (i, (edit, expect)) in [
        (Some(("version", "99")), r#"version = "1""#),
        (Some(("block_size", "64")), r#"block_size = "32""#),
        (None, r#"format = "blipq-int8""#),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = copy_dir(Path::new(DEMO_INT8), &format!("meta-{i}"));
        let path = dir.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = meta.metadata().clone().unwrap();
        match edit {
            Some((k, v)) => {
                meta.insert(k.into(), v.into());
            }
            None => {
                meta.remove("format");
            }
        }
        let views: Vec<_> = st.tensors();
        safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(expect) && e.contains("model.safetensors"), "{e}");
    }
}

#[test]
fn non_finite_weights_and_scales_are_refused_at_load() {
    let dir = copy_dir(Path::new(DEMO), "inf-weight");
    rewrite_weights(
        &dir,
        |name, mut raw| {
            if name == "vision_model.post_layernorm.weight" {
                raw.data[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
            }
            Some(raw)
        },
        vec![],
    );
    let e = load_err(&dir);
    assert!(
        e.contains("vision_model.post_layernorm.weight") && e.contains("first at index 1"),
        "{e}"
    );
    // A matrix stored in F16 or BF16 (kept so, unwidened, where the f32 kernel reads half
    // precision) is checked as stored.
    let matrix = "vision_model.encoder.layers.0.mlp.fc1.weight";
    for (dtype, tag) in [
        (safetensors::Dtype::F16, "inf-f16"),
        (safetensors::Dtype::BF16, "inf-bf16"),
    ] {
        let dir = copy_dir(Path::new(DEMO), tag);
        rewrite_weights(
            &dir,
            |name, mut raw| {
                if name == matrix {
                    let values = raw.data.chunks_exact(4).enumerate().map(|(i, b)| {
                        let v = if i == 1 {
                            f32::INFINITY
                        } else {
                            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
                        };
                        match dtype {
                            safetensors::Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                            _ => half::bf16::from_f32(v).to_le_bytes(),
                        }
                    });
                    raw.data = values.flatten().collect();
                    raw.dtype = dtype;
                }
                Some(raw)
            },
            vec![],
        );
        let e = load_err(&dir);
        assert!(
            e.contains(matrix) && e.contains("first at index 1"),
            "{tag}: {e}"
        );
    }
    let dir = copy_dir(Path::new(DEMO_INT8), "nan-scale");
    let mut victim = String::new();
    rewrite_weights(
        &dir,
        |name, mut raw| {
            if victim.is_empty() && name.ends_with("_scale") {
                victim = name.to_string();
                raw.data[0..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
            }
            Some(raw)
        },
        vec![],
    );
    let e = load_err(&dir);
    assert!(
        e.contains(&victim) && e.contains("NaN or infinite scales"),
        "{e}"
    );
}

#[test]
fn config_semantics_are_checked_at_load() {
    let dir = copy_dir(Path::new(DEMO), "eps");
    edit_json(&dir, "config.json", |v| {
        v["text_config"]["layer_norm_eps"] = (-1.0).into()
    });
    assert!(load_err(&dir).contains("`text_config.layer_norm_eps` must be a positive number"));

    let dir = copy_dir(Path::new(DEMO), "size");
    for f in ["preprocessor_config.json", "processor_config.json"] {
        edit_json(&dir, f, |v| {
            let size = serde_json::json!({"height": 8192, "width": 8192});
            match v.get_mut("image_processor") {
                Some(obj) => obj["size"] = size,
                None => v["size"] = size,
            }
        });
    }
    let e = load_err(&dir);
    assert!(
        e.contains("preprocessor_config.json") && e.contains("8192x8192"),
        "{e}"
    );

    let dir = copy_dir(Path::new(DEMO), "vocab");
    let vocab = Captioner::load_dir(Path::new(DEMO))
        .unwrap()
        .config()
        .text
        .vocab_size;
    edit_json(&dir, "tokenizer.json", |v| {
        v["model"]["vocab"]["zzzunusedzzz"] = (vocab + 10).into();
    });
    let e = load_err(&dir);
    assert!(
        e.contains("tokenizer.json") && e.contains(&format!("token id {}", vocab + 10)),
        "{e}"
    );

    // A 100 MB config.json is refused by its size, before it is read.
    let dir = copy_dir(Path::new(DEMO), "bigconfig");
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("config.json"))
        .unwrap();
    f.set_len(100_000_000).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json: is 95.4 MB, over the limit"), "{e}");
}

#[test]
fn legacy_and_foreign_pytorch_files_say_what_they_are() {
    let dir = copy_dir(&fixtures().join("tiny-bin"), "legacy");
    let pth = dir.join("pytorch_model.bin");
    // A pickle-protocol-2 stream, as torch.save wrote before PyTorch 1.6.
    std::fs::write(&pth, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
    assert!(load_err(&dir).contains("legacy (pre-zip, PyTorch < 1.6) torch.save file"));
    std::fs::write(&pth, b"GIF89a not a checkpoint").unwrap();
    assert!(load_err(&dir).contains("not a PyTorch checkpoint"));
}

#[test]
fn integer_tensors_in_pytorch_files_are_named_with_their_dtype() {
    use std::io::{Read, Write};
    let dir = copy_dir(&fixtures().join("tiny-bin"), "i64");
    let pth = dir.join("pytorch_model.bin");
    let src = std::fs::File::open(fixtures().join("tiny-bin/pytorch_model.bin")).unwrap();
    let mut zin = zip::ZipArchive::new(src).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(&pth).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut e = zin.by_index(i).unwrap();
        let name = e.name().unwrap().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if name.ends_with("data.pkl") {
            // Every tensor of the fixture shares one memoized storage class: make it int64.
            let text = b"FloatStorage";
            let at = data.windows(text.len()).position(|w| w == text).unwrap();
            data.splice(at..at + text.len(), b"LongStorage".iter().copied());
        } else if name.contains("/data/") {
            // Eight bytes an element now.
            data.resize(data.len() * 2, 0);
        }
        zout.start_file(name, stored).unwrap();
        zout.write_all(&data).unwrap();
    }
    zout.finish().unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("has dtype I64") && e.contains("pytorch_model.bin"),
        "{e}"
    );
}

#[test]
fn a_full_disk_leaves_nothing_at_out() {
    // A 512 KB tmpfs: the demo's INT8 weights (1.1 MB) cannot fit. Mounting needs root, which CI
    // has; elsewhere the test says why it did not run.
    let mnt = temp("full");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    }
    let out = mnt.join("out");
    let result = run(&mut quantize(&["--no-validate"], DEMO, &out));
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let (o, err) = result;
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn quantize_validation_fails_on_non_finite_outputs() {
    // Finite but huge patch weights (kept F32 by the quantizer) overflow the vision encoder to
    // infinity and NaN: validation must refuse the result rather than report agreement.
    let src = demo_copy("overflow");
    assert_quantize_refuses_weights(
        &src,
        |name| name == "vision_model.embeddings.patch_embedding.weight",
        3.0e38,
        &src.parent().unwrap().join("out"),
        &["validation failed on 6 of 6 images", "not finite"],
    );
}

#[test]
fn tokenizer_files_the_tokenizers_crate_would_panic_on_are_refused() {
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(DEMO).join("tokenizer.json")).unwrap())
            .unwrap();
    let mut no_special = good.clone();
    no_special["post_processor"]["special_tokens"] = serde_json::json!({});
    let mut bad_decoder = good.clone();
    bad_decoder["decoder"] = serde_json::json!(7);
    for (bytes, expect) in [
        (br#"{"decoder":"#.to_vec(), "not valid JSON"),
        (
            serde_json::to_vec(&bad_decoder).unwrap(),
            "`decoder` must be null or an object",
        ),
        (
            serde_json::to_vec(&no_special).unwrap(),
            "which its `special_tokens` do not define",
        ),
    ] {
        let e = blipq::tokenizer::CaptionTokenizer::new(&bytes, None, "tokenizer.json")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tokenizer.json") && e.contains(expect), "{e}");
    }
}
