//! Image preprocessing against PIL and transformers, using the reference outputs recorded by
//! `tools/make_resize_fixtures.py` in `tests/fixtures/resize/` (see its `manifest.json`).

// Native only: it reads fixtures from disk (or runs the CLI); `wasm-pack test` builds every
// test target for wasm32, where this one compiles to nothing.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;

use blipq::preprocess::{
    decode_rgb, normalize, preprocess, resize, resize_bicubic, Filter, ImageProcessorConfig,
    DEFAULT_MAX_PIXELS,
};
use blipq::Error;
use image::{ImageFormat, RgbImage};
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    sources: Vec<Source>,
    resize: Vec<ResizeCase>,
    pixel_values: Vec<PixelCase>,
}

#[derive(Deserialize)]
struct Source {
    file: String,
    /// PIL's RGB conversion of `file`, as an 8-bit RGB PNG.
    rgb: String,
    pil_mode: String,
    /// JPEG and lossy WebP: decoders may round differently from libjpeg-turbo / libwebp.
    lossy: bool,
}

#[derive(Deserialize)]
struct ResizeCase {
    input: String,
    width: u32,
    height: u32,
    filter: u32,
    expected: String,
}

#[derive(Deserialize)]
struct PixelCase {
    source: String,
    height: u32,
    width: u32,
    image_mean: [f32; 3],
    image_std: [f32; 3],
    rescale_factor: f64,
    file: String,
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resize")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest() -> Manifest {
    serde_json::from_slice(&read("manifest.json")).expect("manifest.json")
}

/// A reference image: always an 8-bit RGB PNG written by PIL, so decoding it is exact.
fn load_rgb_png(name: &str) -> RgbImage {
    let img = image::load_from_memory_with_format(&read(name), ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        matches!(img, image::DynamicImage::ImageRgb8(_)),
        "{name}: not RGB8"
    );
    img.to_rgb8()
}

/// Largest per-channel difference between two images of the same size.
fn max_diff(got: &RgbImage, want: &RgbImage) -> u8 {
    assert_eq!(got.dimensions(), want.dimensions());
    got.as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0)
}

#[test]
fn resize_matches_pil_exactly() {
    let m = manifest();
    assert!(m.resize.len() >= 20);
    let mut failures = Vec::new();
    for case in &m.resize {
        let input = load_rgb_png(&case.input);
        let filter = Filter::from_pil(case.filter).expect("filter");
        let got = resize(&input, case.width, case.height, filter);
        let want = load_rgb_png(&case.expected);
        let diff = max_diff(&got, &want);
        println!(
            "{} {}x{} -> {}x{} {filter:?}: max diff {diff}",
            case.input,
            input.width(),
            input.height(),
            case.width,
            case.height
        );
        if diff != 0 {
            failures.push(format!("{}: max diff {diff}", case.expected));
        }
    }
    assert!(failures.is_empty(), "differs from PIL: {failures:?}");
}

#[test]
fn decode_matches_pil() {
    let m = manifest();
    let mut failures = Vec::new();
    for src in &m.sources {
        let got = decode_rgb(&read(&src.file), &src.file, DEFAULT_MAX_PIXELS)
            .unwrap_or_else(|e| panic!("{e}"));
        let want = load_rgb_png(&src.rgb);
        let diff = max_diff(&got, &want);
        let differing = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{} (PIL mode {}): max diff {diff}, {differing} of {} values differ",
            src.file,
            src.pil_mode,
            want.as_raw().len()
        );
        // Lossless sources must decode and convert to exactly PIL's RGB. Lossy decoders round
        // differently (zune-jpeg vs libjpeg-turbo, image-webp vs libwebp): bound, don't pin.
        let limit = if src.lossy { 8 } else { 0 };
        if diff > limit {
            failures.push(format!("{}: max diff {diff}", src.file));
        }
    }
    assert!(failures.is_empty(), "differs from PIL: {failures:?}");
}

#[test]
fn pixel_values_match_transformers() {
    let m = manifest();
    assert!(!m.pixel_values.is_empty());
    for case in &m.pixel_values {
        let cfg = ImageProcessorConfig {
            height: case.height,
            width: case.width,
            image_mean: case.image_mean,
            image_std: case.image_std,
            rescale_factor: case.rescale_factor,
            ..ImageProcessorConfig::default()
        };
        let got = preprocess(&read(&case.source), &case.source, &cfg, DEFAULT_MAX_PIXELS)
            .unwrap_or_else(|e| panic!("{e}"));
        let want: Vec<f32> = read(&case.file)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), 3 * (case.height * case.width) as usize);
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{}: max |diff| {max_abs}", case.file);
        let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        assert!(got_bits == want_bits, "{}: not bit-identical", case.file);
    }
}

#[test]
fn processor_config_json_gives_blip_defaults() {
    // transformers 5's processor_config.json layout for Salesforce/blip-image-captioning-base.
    let json = r#"{
      "image_processor": {
        "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "BlipImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": 384, "width": 384}
      },
      "processor_class": "BlipProcessor"
    }"#;
    let cfg = ImageProcessorConfig::from_json(json, "processor_config.json").unwrap();
    assert_eq!(cfg, ImageProcessorConfig::default());
    assert_eq!(cfg.resample, Filter::Bicubic);
}

/// Asserts `result` is an `Error::Image` for `name` whose message contains `needle`.
fn assert_image_error<T>(result: blipq::Result<T>, name: &str, needle: &str) {
    match result {
        Err(Error::Image { name: n, msg }) => {
            assert_eq!(n, name);
            assert!(msg.contains(needle), "{name}: `{msg}` lacks `{needle}`");
        }
        Err(other) => panic!("{name}: wrong error kind: {other}"),
        Ok(_) => panic!("{name}: expected an error"),
    }
}

/// Asserts that decoding `bytes` as `name` (default pixel limit) is an `Error::Image` for `name`
/// whose message contains `needle`.
fn assert_decode_error(bytes: &[u8], name: &str, needle: &str) {
    assert_image_error(decode_rgb(bytes, name, DEFAULT_MAX_PIXELS), name, needle);
}

#[test]
fn empty_bytes_is_an_error() {
    assert_decode_error(&[], "empty.png", "empty");
}

#[test]
fn not_an_image_is_an_error() {
    let text = b"a photo of a cat, in words rather than pixels";
    assert_decode_error(text, "cat.txt", "not a recognised image");
    let err = decode_rgb(text, "cat.txt", DEFAULT_MAX_PIXELS)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("image cat.txt: "), "{err}");
}

#[test]
fn unsupported_format_is_an_error() {
    // A TIFF header: recognised by its magic bytes, but no TIFF decoder is built in.
    let tiff = b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0";
    assert_decode_error(tiff, "scan.tif", "unsupported");
}

#[test]
fn truncated_images_are_errors() {
    for name in [
        "astronaut.png",
        "coffee.jpg",
        "chelsea.webp",
        "chelsea.gif",
        "astronaut.bmp",
        "camera_gray16.png",
    ] {
        let bytes = read(name);
        let cut = &bytes[..bytes.len() / 2];
        let err = decode_rgb(cut, name, DEFAULT_MAX_PIXELS).expect_err(name);
        println!("{err}");
        assert!(
            matches!(&err, Error::Image { name: n, .. } if n == name),
            "{err}"
        );
    }
    // Cut inside the PNG header too.
    assert_decode_error(&read("astronaut.png")[..20], "head.png", "PNG");
}

/// A PNG whose header (IHDR) says `width` x `height` RGB, followed by the start of an IDAT
/// chunk with a few bytes of deflate data: what a decompression bomb looks like up front.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |tag: &[u8], body: &[u8]| {
        let mut data = tag.to_vec();
        data.extend_from_slice(body);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc32(&data).to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x01, 0x00, 0x00]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn over_the_pixel_budget_is_refused_from_the_header() {
    let bytes = read("astronaut.png");
    assert_image_error(
        decode_rgb(&bytes, "a.png", 100 * 80 - 1),
        "a.png",
        "over the limit",
    );
    assert!(decode_rgb(&bytes, "a.png", 100 * 80).is_ok());
    // A 100000 x 100000 header with no pixel data behind it: refused by its size, before any
    // attempt to decode (which would fail differently).
    let bomb = png_header_only(100_000, 100_000);
    assert_decode_error(&bomb, "bomb.png", "over the limit");
    let cfg = ImageProcessorConfig::default();
    assert_image_error(
        preprocess(&bomb, "bomb.png", &cfg, DEFAULT_MAX_PIXELS),
        "bomb.png",
        "100000x100000",
    );
}

#[test]
fn jpeg_without_its_end_is_truncated() {
    // PIL refuses a JPEG cut anywhere in its scan data, even just before the final marker;
    // zune-jpeg alone would fill the rest with gray.
    let bytes = read("coffee.jpg");
    for cut in [bytes.len() / 2, bytes.len() - 2] {
        assert_decode_error(&bytes[..cut], "cut.jpg", "truncated");
    }
    // Trailing bytes after the end marker are fine, as in PIL.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 16]);
    assert!(decode_rgb(&padded, "padded.jpg", DEFAULT_MAX_PIXELS).is_ok());
}

#[test]
fn zero_sized_images_are_errors() {
    let bytes = png_header_only(0, 5);
    assert!(matches!(
        decode_rgb(&bytes, "zero.png", DEFAULT_MAX_PIXELS),
        Err(Error::Image { .. })
    ));
    // A GIF whose screen and only frame are 0 x 0: decodable, and refused as empty.
    let mut gif = b"GIF89a\0\0\0\0\0\0\0".to_vec();
    gif.extend_from_slice(&[
        0x2c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
    ]);
    assert_decode_error(&gif, "zero.gif", "empty");
}

#[test]
fn corrupt_inputs_never_panic() {
    // Every truncation point (sampled) and a few thousand deterministic byte flips.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for src in manifest().sources {
        let bytes = read(&src.file);
        let step = (bytes.len() / 64).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let _ = decode_rgb(&bytes[..cut], &src.file, DEFAULT_MAX_PIXELS);
        }
        for _ in 0..40 {
            let mut bad = bytes.clone();
            for _ in 0..4 {
                let i = (next() % bad.len() as u64) as usize;
                bad[i] ^= (next() % 255 + 1) as u8;
            }
            let _ = decode_rgb(&bad, &src.file, DEFAULT_MAX_PIXELS);
        }
    }
}

#[test]
fn tiny_images_end_to_end() {
    let cfg = ImageProcessorConfig {
        height: 7,
        width: 5,
        ..ImageProcessorConfig::default()
    };
    for (w, h) in [(1, 1), (1, 9), (9, 1), (2, 2)] {
        let img = RgbImage::from_pixel(w, h, image::Rgb([30, 140, 250]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let values = preprocess(&png, "tiny.png", &cfg, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(values.len(), 3 * 7 * 5);
        // A flat image stays flat through the resize: each plane is one value.
        let flat = normalize(
            &RgbImage::from_pixel(5, 7, image::Rgb([30, 140, 250])),
            &cfg,
        );
        assert_eq!(values, flat, "{w}x{h}");
    }
    assert_eq!(
        resize_bicubic(&RgbImage::new(1, 1), 1, 1).dimensions(),
        (1, 1)
    );
}
