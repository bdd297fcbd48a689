//! The library's typed error: every variant names the thing (file, tensor, image, field) and the problem.
//!
//! May use: nothing of the crate (every module uses it).

use std::fmt;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in blipq, each naming what it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written. (The cause is part of the message rather than an
    /// error `source`, so that chained reports do not print it twice.)
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    /// A file or folder is not acceptable as given: not a regular file, over a size limit, an
    /// output that would overwrite a source, ...
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// A configuration file (config.json, preprocessor config, ...) is missing a field or is malformed.
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },
    /// A weight file is truncated, corrupt or of an unsupported format.
    #[error("{file}: {msg}")]
    Checkpoint { file: String, msg: String },
    /// One tensor is missing, of the wrong shape or of an unsupported dtype.
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    /// An image could not be decoded, or is too large.
    #[error("image {name}: {msg}")]
    Image { name: String, msg: String },
    /// The tokenizer could not be loaded or failed to encode/decode.
    #[error("tokenizer {file}: {msg}")]
    Tokenizer { file: String, msg: String },
    /// Caption-metrics input (annotations, results) is malformed.
    #[error("{file}: {msg}")]
    Metrics { file: String, msg: String },
    /// An argument is out of range or inconsistent (e.g. `num_beams = 0`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An internal invariant does not hold (shapes the model code itself passes between layers
    /// and kernels): a bug in blipq, never the user's input, which the other variants describe.
    #[error("internal error (a bug in blipq, please report it): {0}")]
    Internal(String),
    /// A long job stopped early because its caller asked it to (nothing was written).
    #[error("stopped: {0}")]
    Stopped(String),
    /// rayon's thread pool could not be set up (e.g. it already exists).
    #[error("thread pool: {0}")]
    ThreadPool(String),
    /// An error raised inside candle while running the model.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn io(path: impl fmt::Display, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            cause,
        }
    }
    pub fn file(path: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::File {
            path: path.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn config(file: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Config {
            file: file.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn checkpoint(file: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Checkpoint {
            file: file.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn tensor(name: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Tensor {
            name: name.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn image(name: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Image {
            name: name.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn tokenizer(file: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Tokenizer {
            file: file.to_string(),
            msg: msg.to_string(),
        }
    }
    pub fn metrics(file: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Metrics {
            file: file.to_string(),
            msg: msg.to_string(),
        }
    }
}
