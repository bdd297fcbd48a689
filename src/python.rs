//! The Python extension module `blipq._blipq` (feature `python`, native only), the engine under
//! the Python package in `python/blipq/`: a loaded model that captions images, the quantizer,
//! the caption metrics, and the benchmark's pieces (items, runs, results, the report folder) that
//! `python -m blipq.ray` spreads over a Ray cluster. The Python side turns images (paths, bytes,
//! PIL images, numpy arrays) into encoded bytes or RGB pixels and wraps the plain values returned
//! here in dataclasses; everything else is the same library code the CLI runs.
//!
//! The GIL is released while the engine works, and the engine's parallel kernels run on a rayon
//! pool of this module's own ([`pool`]): each call hands its work to the pool once, and from
//! there every kernel runs inside the pool, whichever Python thread made the call.
//! Every library error arrives in Python as `blipq.BlipqError` with the library's message.
//!
//! May use: everything of the crate (it is a front end, like the CLI).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::eval::bench::{self, Item, ModelInfoReport, ModelResults, RunOptions};
use crate::eval::report::{self, Piece};
use crate::preprocess::ImageData;
use crate::quantize::{job, Scheme};
use crate::{CaptionOptions, Error};

pyo3::create_exception!(
    blipq,
    BlipqError,
    PyException,
    "An error of the blipq engine: a bad file, image, checkpoint or argument, named in the message."
);

/// The library's error as a Python exception.
fn py_err(e: Error) -> PyErr {
    BlipqError::new_err(e.to_string())
}

fn json_err(what: &str, e: serde_json::Error) -> PyErr {
    BlipqError::new_err(format!("{what}: {e}"))
}

/// The module's thread pool, built once per process with `threads` workers (default:
/// `RAYON_NUM_THREADS`, else one per core).
static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

fn pool(threads: Option<usize>) -> PyResult<&'static rayon::ThreadPool> {
    let fixed = |p: &rayon::ThreadPool, n: usize| {
        BlipqError::new_err(format!(
            "threads={n}: this process already computes on {} threads, and the count is set \
             once per process, before blipq first computes anything (set_threads, or \
             Captioner.load(threads=...) of the first model)",
            p.current_num_threads()
        ))
    };
    if let Some(p) = POOL.get() {
        return match threads {
            Some(n) if n != p.current_num_threads() => Err(fixed(p, n)),
            _ => Ok(p),
        };
    }
    if let Some(n) = threads {
        if n == 0 || n > 4096 {
            return Err(BlipqError::new_err(format!(
                "threads is {n}; give 1 to 4096"
            )));
        }
    }
    let mut builder = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("blipq-{i}"));
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    let built = builder
        .build()
        .map_err(|e| py_err(Error::ThreadPool(e.to_string())))?;
    // Another thread may have built one meanwhile: the first one stays.
    let p = POOL.get_or_init(|| built);
    match threads {
        Some(n) if n != p.current_num_threads() => Err(fixed(p, n)),
        _ => Ok(p),
    }
}

/// The thread count the pool has, or would get if built now (without building it).
fn thread_count() -> usize {
    if let Some(p) = POOL.get() {
        return p.current_num_threads();
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `f` on the pool with the GIL released.
fn on_pool<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    let p = pool(None)?;
    Ok(py.detach(|| p.install(f)))
}

/// An image as the Python side passes it: encoded file bytes, or `(width, height, rgb_bytes)`
/// (rows top to bottom, 3 bytes a pixel).
enum PyImage<'py> {
    Encoded(Bound<'py, PyBytes>),
    Rgb(u32, u32, Bound<'py, PyBytes>),
}

impl<'py> PyImage<'py> {
    fn new(image: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = image.cast::<PyBytes>() {
            return Ok(PyImage::Encoded(b.clone()));
        }
        let (width, height, pixels): (u32, u32, Bound<'py, PyBytes>) =
            image.extract().map_err(|_| {
                BlipqError::new_err("an image is encoded file bytes, or (width, height, RGB bytes)")
            })?;
        Ok(PyImage::Rgb(width, height, pixels))
    }

    fn data(&self) -> ImageData<'_> {
        match self {
            PyImage::Encoded(b) => ImageData::Encoded(b.as_bytes()),
            PyImage::Rgb(width, height, pixels) => ImageData::Rgb {
                width: *width,
                height: *height,
                pixels: pixels.as_bytes(),
            },
        }
    }
}

/// A caption as plain values: `(caption, token_ids, new_tokens, (preprocess_s, vision_s,
/// decode_s, total_s))`.
type CaptionTuple = (String, Vec<u32>, usize, (f64, f64, f64, f64));

fn caption_tuple(c: crate::Caption) -> CaptionTuple {
    let t = c.timings;
    (
        c.caption,
        c.token_ids,
        c.new_tokens,
        (t.preprocess_s, t.vision_s, t.decode_s, t.total_s),
    )
}

/// Caption options as the Python side passes them: a dict with every key of
/// [`CaptionOptions`] (None for the checkpoint's defaults).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct CaptionArgs {
    prompt: Option<String>,
    max_length: Option<usize>,
    max_new_tokens: Option<usize>,
    min_length: Option<usize>,
    num_beams: Option<usize>,
    fixed_new_tokens: Option<usize>,
}

fn caption_options(args: Option<CaptionArgs>) -> CaptionOptions {
    let Some(a) = args else {
        return CaptionOptions::default();
    };
    CaptionOptions {
        prompt: a.prompt,
        max_length: a.max_length,
        max_new_tokens: a.max_new_tokens,
        min_length: a.min_length,
        num_beams: a.num_beams,
        fixed_new_tokens: a.fixed_new_tokens,
    }
}

/// A loaded BLIP checkpoint (FP32, F16/BF16 or any blipq quantized scheme).
#[pyclass(name = "Captioner", module = "blipq._blipq", frozen)]
struct PyCaptioner {
    inner: crate::Captioner,
    /// As given.
    path: PathBuf,
    /// Resolved at load, for the weight file's size whatever the working folder becomes.
    resolved: PathBuf,
}

#[pymethods]
impl PyCaptioner {
    /// Loads the checkpoint folder `path`; `threads` sets the process's thread count the first
    /// time a model loads (later loads must leave it out or give the same count).
    #[staticmethod]
    #[pyo3(signature = (path, threads=None))]
    fn load(py: Python<'_>, path: PathBuf, threads: Option<usize>) -> PyResult<Self> {
        let p = pool(threads)?;
        let inner = py
            .detach(|| p.install(|| crate::Captioner::load_dir(&path)))
            .map_err(py_err)?;
        let resolved = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        Ok(Self {
            inner,
            path,
            resolved,
        })
    }

    /// The checkpoint folder this model was loaded from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// `(total_parameters, is_quantized, dtype, weights_bytes)` from the checkpoint.
    fn info(&self) -> (usize, bool, String, usize) {
        let i = self.inner.info();
        (
            i.total_parameters,
            i.is_quantized,
            i.dtype.clone(),
            i.weights_bytes,
        )
    }

    /// Captions one image (see `PyImage`); `name` names it in errors.
    #[pyo3(signature = (image, name, options=None))]
    fn caption(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        name: &str,
        options: Option<CaptionArgs>,
    ) -> PyResult<CaptionTuple> {
        let image = PyImage::new(image)?;
        let data = image.data();
        let opts = caption_options(options);
        let c = on_pool(py, || self.inner.caption(data, name, &opts, &mut |_| {}))?;
        c.map(caption_tuple).map_err(py_err)
    }

    /// Captions several `(name, image)` pairs at once with the same options: one result per
    /// image, in order, each a caption tuple or, for an image that could not be captioned, a
    /// `BlipqError` instance (not raised). Bad options or too many images raise.
    #[pyo3(signature = (images, options=None))]
    fn caption_batch(
        &self,
        py: Python<'_>,
        images: Vec<(String, Bound<'_, PyAny>)>,
        options: Option<CaptionArgs>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let held: Vec<(String, PyImage<'_>)> = images
            .iter()
            .map(|(n, i)| Ok((n.clone(), PyImage::new(i)?)))
            .collect::<PyResult<_>>()?;
        let batch: Vec<crate::BatchImage<'_>> = held
            .iter()
            .map(|(name, i)| crate::BatchImage {
                image: i.data(),
                name,
            })
            .collect();
        let opts = caption_options(options);
        let results = on_pool(py, || self.inner.caption_batch(&batch, &opts))?.map_err(py_err)?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(c) => Ok(caption_tuple(c).into_pyobject(py)?.into_any().unbind()),
                Err(e) => Ok(py_err(e).into_value(py).into_any()),
            })
            .collect()
    }

    /// Checks caption options against this model without captioning anything.
    #[pyo3(signature = (options=None))]
    fn check_options(&self, options: Option<CaptionArgs>) -> PyResult<()> {
        self.inner
            .check_options(&caption_options(options))
            .map_err(py_err)
    }

    /// The benchmark loop of `blipq bench` over `items` (JSON of the benchmark's items, which
    /// are items `indices` of the whole list): images read from `images_dir`, or
    /// given as `image_bytes` (one per item: its file's bytes, or a `str` saying why it could
    /// not be read, which becomes the item's failure). Returns JSON of the pieces (`[{"index", "sample"|"failure"}]`).
    #[pyo3(signature = (items, indices, images_dir=None, image_bytes=None, warmup=0,
        batch_size=1, options=None))]
    #[allow(clippy::too_many_arguments)]
    fn bench_run(
        &self,
        py: Python<'_>,
        items: &str,
        indices: Vec<usize>,
        images_dir: Option<PathBuf>,
        image_bytes: Option<Vec<Bound<'_, PyAny>>>,
        warmup: usize,
        batch_size: usize,
        options: Option<CaptionArgs>,
    ) -> PyResult<String> {
        let items: Vec<Item> = serde_json::from_str(items).map_err(|e| json_err("items", e))?;
        if indices.len() != items.len() {
            return Err(BlipqError::new_err(format!(
                "{} indices for {} items",
                indices.len(),
                items.len()
            )));
        }
        if batch_size == 0 || batch_size > crate::MAX_BATCH {
            return Err(BlipqError::new_err(format!(
                "batch_size {batch_size}: give 1 to {} images per batch",
                crate::MAX_BATCH
            )));
        }
        let mut shipped = match (images_dir.as_ref(), image_bytes) {
            (Some(_), None) => None,
            (None, Some(b)) if b.len() == items.len() => Some(
                b.iter()
                    .map(|x| {
                        if let Ok(bytes) = x.cast::<PyBytes>() {
                            Ok(Ok(bytes.as_bytes().to_vec()))
                        } else if let Ok(reason) = x.extract::<String>() {
                            Ok(Err(reason))
                        } else {
                            Err(BlipqError::new_err(
                                "image_bytes holds bytes, or a str saying why an image is missing",
                            ))
                        }
                    })
                    .collect::<PyResult<Vec<Result<Vec<u8>, String>>>>()?
                    .into_iter(),
            ),
            (None, Some(b)) => {
                return Err(BlipqError::new_err(format!(
                    "image_bytes has {} entries for {} items",
                    b.len(),
                    items.len()
                )))
            }
            _ => {
                return Err(BlipqError::new_err(
                    "give images_dir or image_bytes (exactly one)",
                ))
            }
        };
        let opts = RunOptions {
            caption: caption_options(options),
            warmup,
            batch_size,
        };
        self.inner.check_options(&opts.caption).map_err(py_err)?;
        let pieces = on_pool(py, || {
            // `bench::run` reads the items in order, once each.
            let mut read = |item: &Item| -> Result<Vec<u8>, String> {
                match (&mut shipped, &images_dir) {
                    (Some(it), _) => it
                        .next()
                        .unwrap_or_else(|| Err(format!("{}: no image given", item.file))),
                    (None, Some(dir)) => crate::fsio::read_file(
                        &dir.join(&item.file),
                        crate::limits::MAX_IMAGE_BYTES,
                    )
                    .map_err(|e| e.to_string()),
                    (None, None) => Err("no image source".into()),
                }
            };
            let mut pieces: Vec<Piece> = Vec::with_capacity(items.len());
            bench::run(
                &self.inner,
                &items,
                &mut read,
                &opts,
                &mut |done, outcome| pieces.push(Piece::new(indices[done - 1], outcome)),
            );
            pieces
        })?;
        serde_json::to_string(&pieces).map_err(|e| json_err("pieces", e))
    }

    /// The results JSON's `model_info` for this model (`device` "cpu").
    fn report_info(&self) -> PyResult<String> {
        let info = ModelInfoReport::new(
            self.inner.info(),
            report::weights_file_mb(&self.resolved),
            "cpu".into(),
            self.path.display().to_string(),
        );
        serde_json::to_string(&info).map_err(|e| json_err("model_info", e))
    }
}

/// Sets the number of threads blipq computes on in this process (before any model loads; once).
#[pyfunction]
fn set_threads(threads: usize) -> PyResult<usize> {
    Ok(pool(Some(threads))?.current_num_threads())
}

/// The number of threads blipq computes on in this process (or will, if it has not started:
/// asking does not fix the count).
#[pyfunction]
fn threads() -> usize {
    thread_count()
}

/// `blipq quantize`: quantizes the checkpoint folder `model` into the new folder `out` and
/// validates it; returns `quantized_results.json` as JSON text. `progress(stage, done, total,
/// what)` and `message(line)` follow the work when given.
#[pyfunction]
#[pyo3(signature = (model, out, scheme="q8_0", validate=true, validation_images=None,
    size_budget=None, quality_floor=None, calibrate=false, force=false, progress=None,
    message=None))]
#[allow(clippy::too_many_arguments)]
fn quantize(
    py: Python<'_>,
    model: PathBuf,
    out: PathBuf,
    scheme: &str,
    validate: bool,
    validation_images: Option<PathBuf>,
    size_budget: Option<f64>,
    quality_floor: Option<f64>,
    calibrate: bool,
    force: bool,
    progress: Option<Py<PyAny>>,
    message: Option<Py<PyAny>>,
) -> PyResult<String> {
    let scheme: Scheme = scheme.parse().map_err(py_err)?;
    let req = job::Request {
        model,
        out,
        force,
        scheme,
        validate,
        validation_images,
        size_budget,
        quality_floor,
        calibrate,
        images: None,
    };
    let mut callback_error: Option<PyErr> = None;
    let done = on_pool(py, || {
        job::run(req, &mut |event| {
            if callback_error.is_some() {
                return ControlFlow::Break(());
            }
            let called = Python::attach(|py| match (event, &progress, &message) {
                (
                    job::Event::Progress {
                        stage,
                        done,
                        total,
                        what,
                    },
                    Some(f),
                    _,
                ) => f.call1(py, (stage, done, total, what)).map(drop),
                (job::Event::Message(line), _, Some(f)) => f.call1(py, (line,)).map(drop),
                _ => Ok(()),
            });
            match called {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    // Stop: the job ends at its next stage and writes nothing.
                    callback_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
    })?;
    if let Some(e) = callback_error {
        // The callback's own exception, whatever the job ended with.
        return Err(e);
    }
    let done = done.map_err(py_err)?;
    serde_json::to_string(&done.report).map_err(|e| json_err("quantized_results.json", e))
}

/// `blipq eval`: the caption metrics of a COCO results file against a COCO annotations file, as
/// JSON text of the scores.
#[pyfunction]
fn evaluate(py: Python<'_>, annotations: PathBuf, results: PathBuf) -> PyResult<String> {
    let eval = on_pool(py, || {
        crate::eval::metrics::evaluate_coco_files(&annotations, &results)
    })?
    .map_err(py_err)?;
    serde_json::to_string(&eval.scores).map_err(|e| json_err("scores", e))
}

/// The benchmark's items and image folder (JSON of the items, folder), as `blipq bench` reads
/// them: from a COCO annotations file and/or an image folder, the first `limit` only.
#[pyfunction]
#[pyo3(signature = (annotations=None, images=None, limit=None))]
fn bench_items(
    annotations: Option<PathBuf>,
    images: Option<PathBuf>,
    limit: Option<usize>,
) -> PyResult<(String, PathBuf)> {
    let (items, dir) =
        report::load_items(annotations.as_deref(), images.as_deref(), limit).map_err(py_err)?;
    let json = serde_json::to_string(&items).map_err(|e| json_err("items", e))?;
    Ok((json, dir))
}

/// `blipq bench`'s label of each model folder.
#[pyfunction]
fn bench_labels(models: Vec<PathBuf>) -> Vec<String> {
    report::labels(&models)
}

/// One model's results JSON, as `blipq bench` writes it, from the pieces of its run (JSON lists
/// from `Captioner.bench_run`, in any order, together covering every item once).
#[pyfunction]
#[pyo3(signature = (label, items, pieces, batch_size, peak_memory_mb, model_info))]
fn bench_results(
    label: &str,
    items: &str,
    pieces: Vec<String>,
    batch_size: usize,
    peak_memory_mb: Option<f64>,
    model_info: &str,
) -> PyResult<String> {
    let items: Vec<Item> = serde_json::from_str(items).map_err(|e| json_err("items", e))?;
    let mut all: Vec<Piece> = Vec::with_capacity(items.len());
    for p in &pieces {
        let mut some: Vec<Piece> = serde_json::from_str(p).map_err(|e| json_err("pieces", e))?;
        all.append(&mut some);
    }
    let info: ModelInfoReport =
        serde_json::from_str(model_info).map_err(|e| json_err("model_info", e))?;
    let run = report::assemble(&items, all).map_err(py_err)?;
    let results = bench::model_results(label, &items, run, batch_size, peak_memory_mb, info)
        .map_err(py_err)?;
    serde_json::to_string(&results).map_err(|e| json_err("results", e))
}

/// Writes `blipq bench`'s report folder `out`: each of `own` (results JSON texts, the reference
/// first) as `<label>_results.json` and `<label>_captions.json`, then the comparison of `own`
/// and the `baselines` (results JSON files of other runtimes) as `comparison.md`,
/// `comparison.json` and the charts. Returns the Markdown table.
#[pyfunction]
#[pyo3(signature = (out, own, baselines=Vec::new()))]
fn bench_reports(out: PathBuf, own: Vec<String>, baselines: Vec<PathBuf>) -> PyResult<String> {
    let own: Vec<ModelResults> = own
        .iter()
        .map(|t| serde_json::from_str(t).map_err(|e| json_err("results", e)))
        .collect::<PyResult<_>>()?;
    let baselines: Vec<ModelResults> = baselines
        .iter()
        .map(|b| report::read_results(b))
        .collect::<crate::Result<_>>()
        .map_err(py_err)?;
    std::fs::create_dir_all(&out).map_err(|e| py_err(Error::io(out.display(), e)))?;
    for r in &own {
        report::write_model_results(&out, r).map_err(py_err)?;
    }
    report::write_reports(&out, &own, &baselines).map_err(py_err)
}

/// The bytes of an image file (a regular file of at most 256 MiB), for captioning by path.
#[pyfunction]
fn read_image<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = py
        .detach(|| crate::fsio::read_file(&path, crate::limits::MAX_IMAGE_BYTES))
        .map_err(py_err)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Peak resident memory of this process in MB (2^20 bytes), where the OS tells it.
#[pyfunction]
fn peak_rss_mb() -> Option<f64> {
    report::peak_rss_mb()
}

#[pymodule]
#[pyo3(name = "_blipq")]
mod native {
    #[pymodule_export]
    use super::{
        bench_items, bench_labels, bench_reports, bench_results, evaluate, peak_rss_mb, quantize,
        read_image, set_threads, threads, BlipqError, PyCaptioner,
    };

    /// The version of the blipq crate this module was built from.
    #[pymodule_export]
    const VERSION: &str = env!("CARGO_PKG_VERSION");

    /// Most images one `caption_batch` call takes.
    #[pymodule_export]
    const MAX_BATCH: usize = crate::MAX_BATCH;

    /// Largest image, in pixels (width x height), the engine accepts.
    #[pymodule_export]
    const MAX_PIXELS: u64 = crate::preprocess::DEFAULT_MAX_PIXELS;
}
