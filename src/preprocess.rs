//! Image preprocessing, bit-exact with `transformers`' `BlipImageProcessor` (PIL backend).
//!
//! The pipeline is the one `BlipImageProcessorPil` runs on an image file:
//!
//! 1. decode (PNG, JPEG, WebP, GIF first frame, BMP), refusing images over a pixel budget before
//!    their pixels are decoded;
//! 2. convert to 8-bit RGB the way transformers 5's `convert_to_rgb` does with PIL: an image with
//!    an alpha channel (or a transparency key) is alpha-composited onto white with Pillow's integer
//!    `alpha_composite`, anything else goes through PIL's `convert("RGB")` rules;
//! 3. resize to exactly `(height, width)` with Pillow's resampling, ported from `ImagingResample`
//!    in Pillow 13's `libImaging/Resample.c`: two separable passes, each rounding to 8 bits
//!    (horizontal first unless the height shrinks by more than twice as many pixels as the
//!    width), the filter support widened by the downscale factor (antialiasing), coefficients
//!    normalized to sum 1 and quantized to 22-bit fixed point, so the uint8 result is PIL's;
//! 4. rescale by `rescale_factor` (in f64, then rounded to f32, as numpy does) and normalize
//!    `(x - mean) / std` in f32, giving CHW f32 `pixel_values`.
//!
//! There is no crop. The result is bit-identical to transformers' PIL backend for every
//! format except JPEG, where the `image` crate's decoder (zune-jpeg) and libjpeg-turbo round
//! the IDCT / chroma upsampling slightly differently (a few levels on some pixels).
//!
//! May use: `limits` and `error` only.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Largest image (width x height) [`decode_rgb`] accepts by default: 64 Mi pixels, e.g.
/// 8192 x 8192. Decoded RGBA8 that is 256 MiB, which still fits a wasm32 heap; anything bigger is
/// far more than a 384 x 384 model input needs and most likely a decompression bomb.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 26;

// The per-channel constants are written as the Python floats (f64) and rounded to f32 as
// `np.array(mean, dtype=np.float32)` does; a direct f32 literal could round differently.

/// File name extensions of the image formats blipq decodes.
pub const IMAGE_EXTENSIONS: [&str; 6] = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"];

/// Whether a file name ends with one of [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(name: &str) -> bool {
    let name = name.to_lowercase();
    IMAGE_EXTENSIONS.iter().any(|x| name.ends_with(x))
}

/// `OPENAI_CLIP_MEAN`, BLIP's default `image_mean`.
pub const BLIP_IMAGE_MEAN: [f32; 3] = [
    0.481_454_66_f64 as f32,
    0.457_827_5_f64 as f32,
    0.408_210_73_f64 as f32,
];
/// `OPENAI_CLIP_STD`, BLIP's default `image_std`.
pub const BLIP_IMAGE_STD: [f32; 3] = [
    0.268_629_54_f64 as f32,
    0.261_302_58_f64 as f32,
    0.275_777_11_f64 as f32,
];

/// A Pillow resampling filter (the `resample` field of an image-processor config).
///
/// All of them run through the same convolution resampler as PIL's; `NEAREST` (0) is a
/// different code path in Pillow and is not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.LANCZOS` (1): 3-lobed windowed sinc.
    Lanczos,
    /// `Image.BILINEAR` (2): triangle filter.
    Bilinear,
    /// `Image.BICUBIC` (3): cubic convolution with a = -0.5. BLIP's filter.
    Bicubic,
    /// `Image.BOX` (4): box filter.
    Box,
    /// `Image.HAMMING` (5): Hamming-windowed sinc.
    Hamming,
}

impl Filter {
    /// The filter with PIL's integer code (`PILImageResampling`), if supported.
    pub fn from_pil(code: u32) -> Option<Self> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }

    /// PIL's integer code for this filter.
    pub fn pil_code(self) -> u32 {
        match self {
            Filter::Lanczos => 1,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
            Filter::Box => 4,
            Filter::Hamming => 5,
        }
    }

    /// Half-width of the filter at scale 1, in source pixels.
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The filter kernel, written with the same operations in the same order as Pillow's C so
    /// that the f64 weights, and hence the quantized coefficients, are identical.
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes these constants as C `float` literals (0.54f, 0.46f).
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Settings of `BlipImageProcessor`, read from `preprocessor_config.json` or from the
/// `"image_processor"` object of transformers 5's `processor_config.json`. Missing fields take
/// `BlipImageProcessor`'s defaults ([`Default`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessorConfig {
    /// Output height in pixels (`size.height`).
    pub height: u32,
    /// Output width in pixels (`size.width`).
    pub width: u32,
    pub do_resize: bool,
    /// Resampling filter (`resample`, a PIL filter code in the JSON).
    pub resample: Filter,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Kept for completeness: the model needs three channels, so images are always converted to
    /// RGB (with `false`, transformers itself only works on images that already are RGB).
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    /// `BlipImageProcessor`'s class defaults (those of `Salesforce/blip-image-captioning-base`).
    fn default() -> Self {
        Self {
            height: 384,
            width: 384,
            do_resize: true,
            resample: Filter::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: BLIP_IMAGE_MEAN,
            image_std: BLIP_IMAGE_STD,
            do_convert_rgb: true,
        }
    }
}

impl ImageProcessorConfig {
    /// Parses `preprocessor_config.json` (the image-processor fields at the top level) or
    /// transformers 5's `processor_config.json` (the same fields under `"image_processor"`).
    /// `file` names the file in errors.
    ///
    /// `size` may be `{"height", "width"}`, a single integer (square) or `[height, width]`.
    /// `{"shortest_edge": n}` is read as n x n: transformers would keep the aspect ratio there,
    /// which BLIP's fixed position embeddings cannot take.
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(file, format!("not valid JSON: {e}")))?;
        let obj = match root.get("image_processor") {
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                return Err(Error::config(
                    file,
                    format!("field `image_processor` must be an object, got {other}"),
                ))
            }
            None => root
                .as_object()
                .ok_or_else(|| Error::config(file, "expected a JSON object at the top level"))?,
        };
        let fields = Fields { obj, file };
        let defaults = Self::default();

        let (height, width) = match fields.get("size") {
            None => (defaults.height, defaults.width),
            Some(v) => parse_size(v).ok_or_else(|| {
                fields.error(
                    "size",
                    "expected {\"height\": int, \"width\": int}, an integer or {\"shortest_edge\": int}",
                    v,
                )
            })?,
        };
        if height == 0 || width == 0 || u64::from(height) * u64::from(width) > DEFAULT_MAX_PIXELS {
            return Err(Error::config(
                file,
                format!(
                    "field `size`: {height}x{width} is out of range (1 to {DEFAULT_MAX_PIXELS} pixels)"
                ),
            ));
        }

        let resample = match fields.get("resample") {
            None => defaults.resample,
            Some(v) => {
                let code = v
                    .as_u64()
                    .ok_or_else(|| fields.error("resample", "expected a PIL filter code", v))?;
                u32::try_from(code).ok().and_then(Filter::from_pil).ok_or_else(|| {
                    fields.error(
                        "resample",
                        "unsupported PIL filter (supported: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)",
                        v,
                    )
                })?
            }
        };

        let rescale_factor = match fields.get("rescale_factor") {
            None => defaults.rescale_factor,
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| fields.error("rescale_factor", "expected a finite number", v))?,
        };

        let image_mean = fields.triple("image_mean", defaults.image_mean)?;
        let image_std = fields.triple("image_std", defaults.image_std)?;
        if image_std.contains(&0.0) {
            return Err(Error::config(file, "field `image_std`: must not contain 0"));
        }

        Ok(Self {
            height,
            width,
            do_resize: fields.flag("do_resize", defaults.do_resize)?,
            resample,
            do_rescale: fields.flag("do_rescale", defaults.do_rescale)?,
            rescale_factor,
            do_normalize: fields.flag("do_normalize", defaults.do_normalize)?,
            image_mean,
            image_std,
            do_convert_rgb: fields.flag("do_convert_rgb", defaults.do_convert_rgb)?,
        })
    }
}

/// The image-processor object of a config file, with typed getters whose errors name the field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    file: &'a str,
}

impl Fields<'_> {
    /// The field's value; `null` counts as absent, as transformers treats it.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn error(&self, key: &str, expected: &str, got: &Value) -> Error {
        Error::config(self.file, format!("field `{key}`: {expected}, got {got}"))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(key, "expected true or false", v)),
        }
    }

    /// A per-channel value: a list of 3 numbers, or one number for all channels.
    fn triple(&self, key: &str, default: [f32; 3]) -> Result<[f32; 3]> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        // f64 -> f32 rounding, as `np.array(mean, dtype=np.float32)` does.
        let num = |v: &Value| v.as_f64().filter(|f| f.is_finite()).map(|f| f as f32);
        let parsed = match v {
            Value::Array(items) if items.len() == 3 => {
                match (num(&items[0]), num(&items[1]), num(&items[2])) {
                    (Some(r), Some(g), Some(b)) => Some([r, g, b]),
                    _ => None,
                }
            }
            Value::Number(_) => num(v).map(|x| [x; 3]),
            _ => None,
        };
        parsed.ok_or_else(|| self.error(key, "expected 3 numbers (R, G, B) or one number", v))
    }
}

/// `(height, width)` from the accepted `size` layouts.
fn parse_size(v: &Value) -> Option<(u32, u32)> {
    let int = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    match v {
        Value::Number(_) => int(v).map(|n| (n, n)),
        Value::Array(items) if items.len() == 2 => Some((int(&items[0])?, int(&items[1])?)),
        Value::Object(obj) => match (
            obj.get("height"),
            obj.get("width"),
            obj.get("shortest_edge"),
        ) {
            (Some(h), Some(w), _) => Some((int(h)?, int(w)?)),
            (None, None, Some(s)) => int(s).map(|n| (n, n)),
            _ => None,
        },
        _ => None,
    }
}

/// A short name of a format for messages.
fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Png => "PNG".into(),
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::Bmp => "BMP".into(),
        other => format!("{other:?}"),
    }
}

/// Turns an `image` crate error into one naming the image and saying what is wrong with it.
fn decode_error(name: &str, format: ImageFormat, err: ImageError) -> Error {
    let fmt = format_name(format);
    let msg = match err {
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated {fmt} data ({e})")
        }
        ImageError::Decoding(e) => format!("corrupt or truncated {fmt} data: {e}"),
        ImageError::Unsupported(e) => format!("unsupported {fmt} image: {e}"),
        ImageError::Limits(e) => format!("{fmt} image needs too much memory to decode: {e}"),
        other => format!("could not decode {fmt} data: {other}"),
    };
    // Some decoder messages end with a newline.
    Error::image(name, msg.trim_end())
}

/// Width and height from a PNG's IHDR chunk, if `bytes` start with one.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR";
    let head = bytes.get(..24)?;
    if !head.starts_with(SIGNATURE) {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    Some((be(16), be(20)))
}

/// The pixel count of a `width` x `height` image: an error for a zero side or more than
/// `max_pixels` pixels.
fn check_size(width: u32, height: u32, name: &str, max_pixels: u64) -> Result<u64> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(Error::image(
            name,
            format!("image is {width}x{height}, empty"),
        ));
    }
    if pixels > max_pixels {
        return Err(Error::image(
            name,
            format!("image is {width}x{height} = {pixels} pixels, over the limit of {max_pixels}"),
        ));
    }
    Ok(pixels)
}

/// Decodes any image the `image` crate reads here (PNG, JPEG, WebP, the first frame of a GIF,
/// BMP) and converts it to 8-bit RGB as transformers' `convert_to_rgb` does with PIL.
///
/// The dimensions are read from the header first: an image with more than `max_pixels` pixels
/// (see [`DEFAULT_MAX_PIXELS`]) or with a zero side is refused before any pixel is decoded.
/// `name` identifies the image in errors.
pub fn decode_rgb(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::image(name, "empty file (0 bytes)"));
    }
    let max = crate::limits::MAX_IMAGE_BYTES;
    if bytes.len() as u64 > max {
        return Err(crate::limits::too_large(name, bytes.len() as u64, max));
    }
    // Reading from memory cannot fail with an I/O error, but do not unwrap on principle.
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image(name, e))?;
    let format = reader.format().ok_or_else(|| {
        Error::image(
            name,
            "not a recognised image (expected PNG, JPEG, WebP, GIF or BMP)",
        )
    })?;
    if !format.reading_enabled() {
        return Err(Error::image(
            name,
            format!(
                "unsupported image format {} (supported: PNG, JPEG, WebP, GIF, BMP)",
                format_name(format)
            ),
        ));
    }

    // A PNG states its size in its first chunk: judge the budget from there, before the
    // decoder sizes any buffer (which, on wasm32, can fail first with a vaguer message).
    let (width, height) = match png_dimensions(bytes) {
        Some(dims) if format == ImageFormat::Png => dims,
        _ => reader
            .into_dimensions()
            .map_err(|e| decode_error(name, format, e))?,
    };
    let pixels = check_size(width, height, name, max_pixels)?;

    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // zune-jpeg fills a cut-off scan with gray and succeeds; PIL (libjpeg) refuses it with
        // "image file is truncated". Refuse it too rather than caption half an image.
        return Err(Error::image(
            name,
            "truncated JPEG data (no end-of-image marker after the last scan)",
        ));
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // The pixel budget is the real guard; let the allocation limit follow it so that an image
    // within budget (up to 16-bit RGBA, 8 bytes a pixel, plus decoder scratch) always decodes.
    let needed = pixels.saturating_mul(16);
    limits.max_alloc = Some(limits.max_alloc.unwrap_or(0).max(needed));
    // And hold the decoder to the size its header announced.
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| decode_error(name, format, e))?;
    if format == ImageFormat::Png && is_png_gray16(bytes) {
        if let DynamicImage::ImageLumaA16(gray_alpha) = img {
            // 16-bit gray with a tRNS key, which the decoder expanded to an alpha channel. PIL
            // opens it as `I;16` and its RGB(A) conversion ignores the key: clip, no compositing.
            let (w, h) = gray_alpha.dimensions();
            return Ok(rgb_from_fn(w, h, |x, y| {
                [gray_alpha.get_pixel(x, y).0[0].min(255) as u8; 3]
            }));
        }
    }
    Ok(convert_rgb(img))
}

/// Whether a JPEG has an end-of-image marker (FF D9) after its last start-of-scan (FF DA).
/// Inside entropy-coded data every FF byte is followed by 00 or a restart marker, so the first
/// FF D9 after the last scan is the real end; embedded thumbnails all come before it.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|i| bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// Whether a PNG's header (IHDR, always the first chunk) says 16-bit grayscale without alpha.
fn is_png_gray16(bytes: &[u8]) -> bool {
    // 8-byte signature, 4-byte length, "IHDR", width, height, then bit depth and colour type.
    bytes.len() > 25 && &bytes[12..16] == b"IHDR" && bytes[24] == 16 && bytes[25] == 0
}

/// `alpha_composite(white, src)` for one channel, as Pillow computes it (`AlphaComposite.c`,
/// 7 extra bits of precision and a rounded division by 255). Over an opaque white background
/// `outa255` is exactly 255 * 255, and an opaque source pixel comes out unchanged.
fn over_white(v: u8, alpha: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return 255;
    }
    let (v, a) = (u32::from(v), u32::from(alpha));
    let dst_a = 255u32;
    let blend = dst_a * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = v * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    // SHIFTFORDIV255: a rounded division by 255 for values below 255 * 256.
    (((tmp >> 8) + tmp) >> 8 >> PRECISION_BITS) as u8
}

fn rgb_from_fn(width: u32, height: u32, mut f: impl FnMut(u32, u32) -> [u8; 3]) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| image::Rgb(f(x, y)))
}

/// Converts a decoded image to RGB8 with the result PIL + transformers 5 give for the same file:
///
/// * gray: replicated to R, G, B;
/// * 16-bit gray: PIL opens it as mode `I;16`, whose conversion to RGB *clips* to 255 (it is not
///   `>> 8`: 1000 becomes 255, 200 stays 200; Pillow's `I16_RGB`);
/// * 16-bit RGB / RGBA / gray+alpha: PIL's PNG reader keeps the high byte (`>> 8`);
/// * any alpha (including a PNG/GIF transparency key, which the decoders expand to alpha):
///   composited onto white, as transformers 5's `convert_to_rgb` does (PIL's own
///   `convert("RGB")` would just drop the alpha).
pub fn convert_rgb(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(g) => rgb_from_fn(w, h, |x, y| [g.get_pixel(x, y).0[0]; 3]),
        DynamicImage::ImageLumaA8(ga) => rgb_from_fn(w, h, |x, y| {
            let [l, a] = ga.get_pixel(x, y).0;
            [over_white(l, a); 3]
        }),
        DynamicImage::ImageRgba8(rgba) => rgb_from_fn(w, h, |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            [over_white(r, a), over_white(g, a), over_white(b, a)]
        }),
        DynamicImage::ImageLuma16(g) => {
            rgb_from_fn(w, h, |x, y| [g.get_pixel(x, y).0[0].min(255) as u8; 3])
        }
        DynamicImage::ImageLumaA16(ga) => rgb_from_fn(w, h, |x, y| {
            let [l, a] = ga.get_pixel(x, y).0.map(|v| (v >> 8) as u8);
            [over_white(l, a); 3]
        }),
        DynamicImage::ImageRgb16(rgb) => {
            rgb_from_fn(w, h, |x, y| rgb.get_pixel(x, y).0.map(|v| (v >> 8) as u8))
        }
        DynamicImage::ImageRgba16(rgba) => rgb_from_fn(w, h, |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0.map(|v| (v >> 8) as u8);
            [over_white(r, a), over_white(g, a), over_white(b, a)]
        }),
        // Float images come only from HDR/EXR decoders, which are not enabled.
        other => other.to_rgb8(),
    }
}

/// Fixed-point fraction bits of the 8-bit resampler: 32 bits minus 8 for the value and 2 for
/// the overshoot of negative lobes (`PRECISION_BITS` in Pillow).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling coefficients for one axis (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    /// Stride of `weights`: the most taps any output pixel can have.
    ksize: usize,
    /// Per output pixel: first source pixel and number of taps.
    bounds: Vec<(usize, usize)>,
    /// Per output pixel, `ksize` fixed-point weights (only the first `taps` are used).
    weights: Vec<i32>,
}

impl Coeffs {
    fn new(in_size: u32, out_size: u32, filter: Filter) -> Self {
        // Pillow passes the source box as C floats: (0, in_size).
        let (in0, in1) = (0f32, in_size as f32);
        let scale = f64::from(in1 - in0) / f64::from(out_size);
        // Downscaling widens the filter by the scale (antialiasing); upscaling does not narrow it.
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;

        let out_len = out_size as usize;
        let mut bounds = Vec::with_capacity(out_len);
        let mut weights = vec![0i32; out_len * ksize];
        let mut k = vec![0f64; ksize];
        for (xx, kw) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // `(int)` in C truncates toward zero; `as i64` does the same.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let taps = (xmax - xmin).max(0) as usize;
            // The tap count can never exceed ksize; the min() only keeps indexing obviously safe.
            let taps = taps.min(ksize);
            let mut ww = 0.0;
            for (x, w) in k.iter_mut().take(taps).enumerate() {
                *w = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                ww += *w;
            }
            for (w, q) in k.iter().take(taps).zip(kw.iter_mut()) {
                let w = if ww != 0.0 { w / ww } else { *w };
                // Round half away from zero, then truncate, as `normalize_coeffs_8bpc` does.
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *q = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            bounds.push((xmin as usize, taps));
        }
        Self {
            ksize,
            bounds,
            weights,
        }
    }

    fn taps(&self, out: usize) -> (usize, &[i32]) {
        let (min, n) = self.bounds[out];
        (min, &self.weights[out * self.ksize..][..n])
    }
}

/// Pillow's `clip8`: drop the fraction bits and saturate to 0..=255.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Rounding offset every accumulator starts from (one half in fixed point).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over `rows` rows of an RGB buffer `src` (`in_w` pixels wide), starting at
/// row `first_row`: Pillow's `ImagingResampleHorizontal_8bpc`.
fn horizontal_pass(src: &[u8], in_w: usize, first_row: usize, rows: usize, c: &Coeffs) -> Vec<u8> {
    let in_stride = in_w * 3;
    let out_stride = c.bounds.len() * 3;
    let mut out = vec![0u8; rows * out_stride];
    for (y, out_row) in out.chunks_exact_mut(out_stride).enumerate() {
        let row = &src[(first_row + y) * in_stride..][..in_stride];
        for (xx, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let (xmin, k) = c.taps(xx);
            let pixels = &row[xmin * 3..][..k.len() * 3];
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (px, &w) in pixels.chunks_exact(3).zip(k) {
                r += i32::from(px[0]) * w;
                g += i32::from(px[1]) * w;
                b += i32::from(px[2]) * w;
            }
            out_px.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Vertical pass over an RGB buffer `src` (`width` pixels wide) whose row 0 is source row
/// `row_offset`: Pillow's `ImagingResampleVertical_8bpc`. Channels are independent, so a row is
/// a flat run of bytes; accumulating whole rows (integer sums, the same result as Pillow's
/// per-pixel loop) keeps memory access sequential.
fn vertical_pass(src: &[u8], width: usize, row_offset: usize, c: &Coeffs) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; c.bounds.len() * stride];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, k) = c.taps(yy);
        acc.fill(HALF);
        for (i, &w) in k.iter().enumerate() {
            let row = &src[(ymin - row_offset + i) * stride..][..stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Resizes an 8-bit RGB image to `width` x `height` with a Pillow filter, giving exactly the
/// pixels of PIL's `Image.resize((width, height), filter)` (Pillow 13's `ImagingResampleInner`).
/// A zero-sized input gives black, a zero-sized output an empty image.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if width == 0 || height == 0 {
        return RgbImage::new(width, height);
    }
    if (in_w, in_h) == (width, height) {
        // PIL returns a copy for an identity resize.
        return img.clone();
    }
    let src: &[u8] = img.as_raw();
    let need_horizontal = width != in_w;
    let need_vertical = height != in_h;
    // Each pass rounds to 8 bits, so the order changes the result. Pillow 13 runs the
    // vertical pass first when the height loses more than twice as many pixels as the width
    // (a negative width change, i.e. upscaling, counts as such), horizontal first otherwise.
    let (dh, dw) = (
        i64::from(in_h) - i64::from(height),
        i64::from(in_w) - i64::from(width),
    );
    let horizontal_first = !(dh > 0 && dh > dw * 2);

    let vert = Coeffs::new(in_h, height, filter);
    let horiz = Coeffs::new(in_w, width, filter);
    let (w, h) = (in_w as usize, in_h as usize);
    let out = if horizontal_first {
        // The horizontal pass only produces the source rows the vertical pass reads.
        let (first, last) = match (vert.bounds.first(), vert.bounds.last()) {
            (Some(&(first, _)), Some(&(min, n))) => (first, min + n),
            _ => (0, 0),
        };
        match (need_horizontal, need_vertical) {
            (true, true) => {
                let tmp = horizontal_pass(src, w, first, last - first, &horiz);
                vertical_pass(&tmp, width as usize, first, &vert)
            }
            (true, false) => horizontal_pass(src, w, 0, h, &horiz),
            _ => vertical_pass(src, w, 0, &vert),
        }
    } else {
        // Only reached when the height shrinks, so the vertical pass is always needed.
        let tmp = vertical_pass(src, w, 0, &vert);
        if need_horizontal {
            horizontal_pass(&tmp, w, 0, height as usize, &horiz)
        } else {
            tmp
        }
    };
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

/// PIL-identical `BICUBIC` resize of an 8-bit RGB image (BLIP's resampling).
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize(img, width, height, Filter::Bicubic)
}

/// Rescales and normalizes an RGB image into CHW f32 `pixel_values` of shape
/// `[3, height, width]`, with the same float operations as transformers' numpy code: `x * factor`
/// in f64 rounded to f32, then `(x - mean) / std` in f32.
pub fn normalize(img: &RgbImage, cfg: &ImageProcessorConfig) -> Vec<f32> {
    // Each output depends only on the byte and the channel: a 3 x 256 table computes every
    // distinct value once with exactly the per-pixel arithmetic.
    let mut table = [[0f32; 256]; 3];
    for (c, lut) in table.iter_mut().enumerate() {
        for (v, out) in lut.iter_mut().enumerate() {
            let mut x = if cfg.do_rescale {
                (v as f64 * cfg.rescale_factor) as f32
            } else {
                v as f32
            };
            if cfg.do_normalize {
                x = (x - cfg.image_mean[c]) / cfg.image_std[c];
            }
            *out = x;
        }
    }
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = table[0][px[0] as usize];
        g[i] = table[1][px[1] as usize];
        b[i] = table[2][px[2] as usize];
    }
    out
}

/// An image to caption: an encoded file (any format [`decode_rgb`] reads), or 8-bit RGB pixels
/// the caller already decoded (rows top to bottom, 3 bytes a pixel: what the Python package
/// passes for a numpy array or an RGB PIL image).
#[derive(Debug, Clone, Copy)]
pub enum ImageData<'a> {
    Encoded(&'a [u8]),
    Rgb {
        width: u32,
        height: u32,
        pixels: &'a [u8],
    },
}

impl<'a> From<&'a [u8]> for ImageData<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        ImageData::Encoded(bytes)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for ImageData<'a> {
    fn from(bytes: &'a [u8; N]) -> Self {
        ImageData::Encoded(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for ImageData<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        ImageData::Encoded(bytes)
    }
}

/// Decoded 8-bit RGB pixels as an image, checked as [`decode_rgb`] checks a file's header: no
/// zero side, at most `max_pixels` pixels, and exactly `width * height * 3` bytes.
pub fn rgb_image(
    width: u32,
    height: u32,
    pixels: &[u8],
    name: &str,
    max_pixels: u64,
) -> Result<RgbImage> {
    let count = check_size(width, height, name, max_pixels)?;
    if pixels.len() as u64 != count * 3 {
        return Err(Error::image(
            name,
            format!(
                "{} bytes of pixels for a {width}x{height} RGB image, which needs {} (3 bytes a \
                 pixel)",
                pixels.len(),
                count * 3
            ),
        ));
    }
    RgbImage::from_raw(width, height, pixels.to_vec())
        .ok_or_else(|| Error::image(name, "RGB pixels do not match the image size"))
}

/// The whole of `BlipImageProcessor` on one image: decode (an encoded file), RGB, resize,
/// rescale, normalize. Returns CHW f32 pixel values of shape `[3, cfg.height, cfg.width]` (the
/// image's own size if `cfg.do_resize` is false).
pub fn preprocess_image(
    image: ImageData,
    name: &str,
    cfg: &ImageProcessorConfig,
    max_pixels: u64,
) -> Result<Vec<f32>> {
    let img = match image {
        ImageData::Encoded(bytes) => decode_rgb(bytes, name, max_pixels)?,
        ImageData::Rgb {
            width,
            height,
            pixels,
        } => rgb_image(width, height, pixels, name, max_pixels)?,
    };
    let img = if cfg.do_resize {
        resize(&img, cfg.width, cfg.height, cfg.resample)
    } else {
        img
    };
    Ok(normalize(&img, cfg))
}

/// [`preprocess_image`] of an encoded image file.
pub fn preprocess(
    bytes: &[u8],
    name: &str,
    cfg: &ImageProcessorConfig,
    max_pixels: u64,
) -> Result<Vec<f32>> {
    preprocess_image(ImageData::Encoded(bytes), name, cfg, max_pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_kernel_values() {
        let f = Filter::Bicubic;
        assert_eq!(f.eval(0.0), 1.0);
        assert_eq!(f.eval(1.0), 0.0);
        assert_eq!(f.eval(-2.0), 0.0);
        assert_eq!(f.eval(0.5), 0.5625);
        assert_eq!(f.eval(1.5), -0.0625);
        assert_eq!(f.eval(-1.5), -0.0625);
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (inp, out) in [(100, 37), (37, 100), (512, 384), (7, 7), (1, 5), (5, 1)] {
            let c = Coeffs::new(inp, out, Filter::Bicubic);
            assert_eq!(c.bounds.len(), out as usize);
            for o in 0..out as usize {
                let (min, k) = c.taps(o);
                assert!(min + k.len() <= inp as usize);
                let sum: i32 = k.iter().sum();
                // Each weight is rounded separately, so the sum is 1 within a few units.
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i32,
                    "{sum}"
                );
            }
        }
    }

    #[test]
    fn downscale_by_two_weights_match_pillow() {
        // 4 -> 2: support 2 * 2 = 4 source pixels, 9 slots; output 0 is centred on 1.0 and
        // reads pixels 0..4 at filter arguments -0.25, 0.25, 0.75, 1.25. Expected values computed
        // independently from Pillow's formulas in Python.
        let c = Coeffs::new(4, 2, Filter::Bicubic);
        assert_eq!(c.ksize, 9);
        assert_eq!(c.taps(0), (0, &[1923834, 1923834, 502623, -155987][..]));
        assert_eq!(c.taps(1), (0, &[-155987, 502623, 1923834, 1923834][..]));
    }

    #[test]
    fn one_by_one_and_identity() {
        let one = RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 255]));
        let big = resize_bicubic(&one, 5, 3);
        assert!(big.pixels().all(|p| p.0 == [10, 200, 255]));
        let back = resize_bicubic(&big, 1, 1);
        assert_eq!(back.get_pixel(0, 0).0, [10, 200, 255]);
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 90, 7]));
        assert_eq!(resize_bicubic(&img, 4, 3), img);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        assert_eq!(resize_bicubic(&img, 0, 5).dimensions(), (0, 5));
        assert_eq!(resize_bicubic(&img, 5, 0).dimensions(), (5, 0));
        let empty = RgbImage::new(0, 0);
        let out = resize_bicubic(&empty, 4, 4);
        assert!(out.pixels().all(|p| p.0 == [0, 0, 0]));
        assert!(normalize(&empty, &ImageProcessorConfig::default()).is_empty());
    }

    #[test]
    fn constant_image_stays_constant() {
        // Coefficients sum to one (within rounding), so a flat image stays flat at any scale.
        for v in [0u8, 1, 128, 254, 255] {
            let img = RgbImage::from_pixel(37, 23, image::Rgb([v; 3]));
            for (w, h) in [(11, 5), (80, 61), (37, 9), (5, 23)] {
                let out = resize_bicubic(&img, w, h);
                assert!(out.pixels().all(|p| p.0 == [v; 3]), "{v} {w}x{h}");
            }
        }
    }

    #[test]
    fn alpha_composite_matches_pillow() {
        // Values from PIL: Image.alpha_composite(white, (v, v, v, a)).
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(0, 255), 0);
        assert_eq!(over_white(77, 255), 77);
        assert_eq!(over_white(0, 128), 127);
        assert_eq!(over_white(100, 1), 254);
        assert_eq!(over_white(200, 64), 241);
    }

    #[test]
    fn normalize_is_chw_with_numpy_rounding() {
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([0, 128, 255 * x as u8]));
        let cfg = ImageProcessorConfig::default();
        let v = normalize(&img, &cfg);
        assert_eq!(v.len(), 6);
        let expect = |x: u8, c: usize| {
            ((f64::from(x) / 255.0) as f32 - cfg.image_mean[c]) / cfg.image_std[c]
        };
        assert_eq!(
            v,
            [
                expect(0, 0),
                expect(0, 0),
                expect(128, 1),
                expect(128, 1),
                expect(0, 2),
                expect(255, 2)
            ]
        );
    }

    #[test]
    fn config_layouts() {
        let pre = r#"{"do_normalize": true, "do_resize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "BlipImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
            "processor_class": "BlipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"height": 384, "width": 384}}"#;
        let cfg = ImageProcessorConfig::from_json(pre, "preprocessor_config.json").unwrap();
        assert_eq!(cfg, ImageProcessorConfig::default());

        let proc = r#"{"image_processor": {"size": {"height": 224, "width": 160}, "do_convert_rgb": false},
            "processor_class": "BlipProcessor"}"#;
        let cfg = ImageProcessorConfig::from_json(proc, "processor_config.json").unwrap();
        assert_eq!(
            (cfg.height, cfg.width, cfg.do_convert_rgb),
            (224, 160, false)
        );

        for (size, hw) in [
            ("384", (384, 384)),
            ("{\"shortest_edge\": 64}", (64, 64)),
            ("[32, 48]", (32, 48)),
        ] {
            let cfg = ImageProcessorConfig::from_json(&format!("{{\"size\": {size}}}"), "p.json")
                .unwrap();
            assert_eq!((cfg.height, cfg.width), hw);
        }
        assert_eq!(
            ImageProcessorConfig::from_json("{}", "p.json").unwrap(),
            ImageProcessorConfig::default()
        );
    }

    #[test]
    fn config_errors_name_file_and_field() {
        for (json, field) in [
            (r#"{"size": "big"}"#, "size"),
            (r#"{"size": {"height": 0, "width": 3}}"#, "size"),
            (r#"{"resample": 0}"#, "resample"),
            (r#"{"do_resize": "yes"}"#, "do_resize"),
            (r#"{"image_mean": [1, 2]}"#, "image_mean"),
            (r#"{"image_std": [1, 0, 1]}"#, "image_std"),
            (r#"{"image_processor": 3}"#, "image_processor"),
        ] {
            let err = ImageProcessorConfig::from_json(json, "cfg.json")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("cfg.json: ") && err.contains(field),
                "{err}"
            );
        }
        let err = ImageProcessorConfig::from_json("{", "cfg.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cfg.json") && err.contains("JSON"), "{err}");
    }
}
