//! PLACEHOLDER written by the lead so the crate compiles while the real PIL-exact module is being
//! written; replace this whole file.

use crate::{Error, Result};

pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub height: u32,
    pub width: u32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
}

impl ImageProcessorConfig {
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::config(file, e.to_string()))?;
        let v = v.get("image_processor").unwrap_or(&v);
        let h = v["size"]["height"].as_u64().unwrap_or(384) as u32;
        let w = v["size"]["width"].as_u64().unwrap_or(384) as u32;
        Ok(Self {
            height: h,
            width: w,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_1],
            rescale_factor: 1.0 / 255.0,
        })
    }
}

pub fn preprocess(bytes: &[u8], name: &str, cfg: &ImageProcessorConfig, _max: u64) -> Result<Vec<f32>> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::image(name, e.to_string()))?;
    let img = img
        .resize_exact(cfg.width, cfg.height, image::imageops::FilterType::CatmullRom)
        .to_rgb8();
    let (w, h) = (cfg.width as usize, cfg.height as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = p[c] as f64 * cfg.rescale_factor;
            out[c * w * h + y as usize * w + x as usize] =
                ((v as f32) - cfg.image_mean[c]) / cfg.image_std[c];
        }
    }
    Ok(out)
}
