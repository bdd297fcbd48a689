//! The bodies of the fuzz targets, one function per parser family, shared by the cargo-fuzz
//! binaries (`fuzz/fuzz_targets/*.rs`) and the corpus replay test (`tests/fuzz_corpus.rs`), which
//! both include this file with `#[path]`. Each function feeds its bytes to blipq's public API the
//! way a user's file reaches it and must never panic; errors are the expected outcome for most
//! inputs and are ignored. Work is bounded per input (tensor sizes, caption lengths) so that every
//! execution stays fast; the bounds are the fuzz harness's, not the library's.

use blipq::checkpoint::{Checkpoint, Safetensors, StoredDType};
use candle_core::Device;

/// Tensors with more elements than this are not loaded (the fuzzer would spend its time copying).
pub const MAX_TENSOR_ELEMS: usize = 1 << 20;

/// One target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` name them.
pub const TARGETS: [(&str, Target); 7] = [
    ("safetensors", safetensors),
    ("pth", pth),
    ("config", config),
    ("tokenizer", tokenizer),
    ("image", image),
    ("coco", coco),
    ("files", files),
];

/// Loads every tensor of a checkpoint with its stored shape, as the model loader would: 2-D INT8
/// weights through `load_matrix` (with their `<name>_scale`), everything else through `load_f32`.
fn load_all(ckpt: &Checkpoint) {
    let _ = ckpt.metadata();
    let _ = blipq::quantize::is_blipq_int8(ckpt);
    let device = Device::Cpu;
    for name in ckpt.names() {
        let _ = ckpt.contains(&name);
        let Some((dtype, shape)) = ckpt.info(&name) else {
            // Present but not a float/int8 tensor: the loaders must refuse it cleanly.
            let _ = ckpt.load_f32(&name, &[], &device);
            continue;
        };
        let elems = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX);
        if elems > MAX_TENSOR_ELEMS {
            continue;
        }
        if let [rows, cols] = shape[..] {
            let _ = ckpt.load_matrix(&name, rows, cols, &device);
        }
        if dtype != StoredDType::I8 || shape.len() != 2 {
            let _ = ckpt.load_f32(&name, &shape, &device);
        }
    }
}

/// `model.safetensors` bytes (F32/F16/BF16/F64, blipq INT8), as the page hands them over.
pub fn safetensors(data: &[u8]) {
    if let Ok(st) = Safetensors::new(Box::new(data.to_vec()), "model.safetensors") {
        load_all(&Checkpoint::Safetensors(st));
    }
}

/// A `pytorch_model.bin` (zip + pickle) on disk, opened by path as the CLI does.
pub fn pth(data: &[u8]) {
    thread_local! {
        // One file per thread (the replay test runs targets on several threads), reused.
        static PATH: std::path::PathBuf = {
            let dir = std::env::temp_dir().join(format!(
                "blipq-fuzz-pth-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::create_dir_all(&dir);
            dir.join("pytorch_model.bin")
        };
    }
    PATH.with(|path| {
        if std::fs::write(path, data).is_err() {
            return;
        }
        if let Ok(ckpt) = Checkpoint::open(path) {
            load_all(&ckpt);
        }
    });
}

/// `config.json`, `generation_config.json` and `preprocessor_config.json` /
/// `processor_config.json`: the same text through each parser.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = blipq::config::BlipConfig::from_json(text, "config.json") {
        let _ = cfg.vision.num_positions();
    }
    if let Ok(gen) = blipq::config::GenerationDefaults::from_json(text, "generation_config.json") {
        let _ = gen.max_length_for(usize::MAX / 2);
    }
    let _ = blipq::preprocess::ImageProcessorConfig::from_json(text, "preprocessor_config.json");
}

/// `tokenizer.json`: load, then prepare a prompt and decode a few ids as captioning does.
pub fn tokenizer(data: &[u8]) {
    let Ok(tok) = blipq::tokenizer::CaptionTokenizer::new(data, None, "tokenizer.json") else {
        return;
    };
    let vocab = u32::try_from(tok.vocab_size()).unwrap_or(u32::MAX);
    let _ = tok.prefix(Some("a photo of"), 0);
    let _ = tok.prefix(None, vocab);
    let _ = tok.decode(&[0, 1, 2, 3, 100, 101, 102, 1000]);
    let _ = tok.decode(&[vocab.saturating_sub(1), vocab, u32::MAX]);
}

/// An encoded image (PNG, JPEG, WebP, GIF, BMP) through the whole preprocessing, to a small size
/// and under a small pixel budget so that executions stay fast. The filter rotates with the
/// input's length so that every resampler sees inputs.
pub fn image(data: &[u8]) {
    use blipq::preprocess::{Filter, ImageProcessorConfig};
    const FILTERS: [Filter; 5] = [
        Filter::Bicubic,
        Filter::Bilinear,
        Filter::Lanczos,
        Filter::Box,
        Filter::Hamming,
    ];
    let cfg = ImageProcessorConfig {
        height: 32,
        width: 24,
        resample: FILTERS[data.len() % FILTERS.len()],
        ..ImageProcessorConfig::default()
    };
    let _ = blipq::preprocess::preprocess(data, "img", &cfg, 1 << 20);
}

/// Captions are evaluated only while their total text stays under this (ROUGE-L is quadratic in
/// caption length, as in `pycocoevalcap`), and the raw input goes through the PTB tokenizer up to
/// [`MAX_RAW_TOKENIZE`] characters: the evaluation tokenizes whatever parses anyway.
const MAX_EVAL_TEXT: usize = 16 << 10;
const MAX_RAW_TOKENIZE: usize = 1 << 10;

/// COCO files: `annotations NUL results` is evaluated as `blipq eval` does (plus per-result
/// BLEU-4, as the page shows it); without a NUL byte the input is tried as either file, and
/// annotations are evaluated against themselves (each image's first reference as its result).
pub fn coco(data: &[u8]) {
    use blipq::eval::metrics::{self, CocoCaption};
    let text = String::from_utf8_lossy(data);
    let head: String = text.chars().take(MAX_RAW_TOKENIZE).collect();
    let _ = metrics::tokenize::ptb_tokenize(&head);
    let caption_text = |c: &[CocoCaption]| c.iter().map(|c| c.caption.len() + 1).sum::<usize>();
    if let Some((ann_text, res_text)) = text.split_once('\0') {
        let (Ok(ann), Ok(res)) = (
            metrics::parse_annotations(ann_text, "annotations.json"),
            metrics::parse_results(res_text, "results.json"),
        ) else {
            return;
        };
        if caption_text(&ann.captions) + caption_text(&res) > MAX_EVAL_TEXT {
            return;
        }
        let _ = metrics::evaluate_coco_detailed(ann_text, res_text);
        let refs = ann.references();
        for r in res.iter().take(8) {
            let r_refs = refs.get(&r.image_id).map(Vec::as_slice).unwrap_or(&[]);
            let _ = metrics::bleu4(&r.caption, r_refs);
        }
        return;
    }
    let _ = metrics::parse_results(&text, "results.json");
    let Ok(ann) = metrics::parse_annotations(&text, "annotations.json") else {
        return;
    };
    let refs = ann.references();
    let order = ann.image_order();
    if caption_text(&ann.captions) > MAX_EVAL_TEXT {
        return;
    }
    let own: Vec<CocoCaption> = order
        .iter()
        .filter_map(|id| {
            Some(CocoCaption {
                image_id: (*id).clone(),
                caption: refs.get(id)?.first()?.to_string(),
            })
        })
        .collect();
    if let Ok(images) = metrics::pair_results(&ann, &own, "self") {
        let _ = metrics::evaluate(&images);
    }
}

/// Entries of the files target's input: `[name_len: u8][name][data_len: u32 LE][data]`, repeated
/// (a data length past the end takes the rest). Names are lossy UTF-8. At most 32 entries.
pub fn split_entries(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut entries = Vec::new();
    while !data.is_empty() && entries.len() < 32 {
        let name_len = usize::from(data[0]).min(data.len() - 1);
        let name = String::from_utf8_lossy(&data[1..1 + name_len]).into_owned();
        data = &data[1 + name_len..];
        let mut len_bytes = [0u8; 4];
        let n = data.len().min(4);
        len_bytes[..n].copy_from_slice(&data[..n]);
        data = &data[n..];
        let len = usize::try_from(u32::from_le_bytes(len_bytes))
            .unwrap_or(usize::MAX)
            .min(data.len());
        entries.push((name, data[..len].to_vec()));
        data = &data[len..];
    }
    entries
}

/// The inverse of [`split_entries`] (seed corpora are written with it).
pub fn join_entries(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let name = &name.as_bytes()[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The page's checkpoint file resolution: a picked or dropped folder (names, bytes) to the model's
/// files, then the model built from them as the page does next.
pub fn files(data: &[u8]) {
    let entries = split_entries(data);
    if let Ok(files) = blipq::checkpoint::files::model_files_from_entries(entries) {
        let _ = files.weights.names();
        let _ = blipq::Captioner::load(files);
    }
}
