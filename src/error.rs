//! The library's one error type. Every variant that concerns a file names it, so a
//! message printed on its own ("…/model.gguf: tensor `x` lies outside the file") tells
//! the user which file and what is wrong. Front ends add context; they never re-word.

use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused (missing file, permissions, …). The OS error is
    /// part of the message (not a `source`), so front ends print it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A directory was given where a model file was expected.
    #[error("{}: is a directory; open a model file (or a sharded model's .index.json) inside it", path.display())]
    IsDirectory { path: PathBuf },
    /// A device, pipe or socket where a file was expected (reading one could block
    /// forever or never end).
    #[error("{}: not a regular file (a device, pipe or socket); give a file", path.display())]
    NotAFile { path: PathBuf },
    /// A zero-length file.
    #[error("{}: the file is empty (0 bytes)", path.display())]
    EmptyFile { path: PathBuf },
    /// No loader recognised the content.
    #[error("{}: unknown model format ({hint}); slimscope reads safetensors, GGUF, PyTorch .pth/.pt, NumPy .npz/.npy and ONNX", path.display())]
    UnknownFormat { path: PathBuf, hint: String },
    /// A loader recognised the format but the content is broken or hostile.
    #[error("{}: not a valid {format} file: {problem}", path.display())]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        problem: String,
    },
    /// A tensor's data does not lie inside the file.
    #[error("{}: tensor `{name}` claims bytes {offset}..{end} but the file holds {file_len} bytes (truncated or corrupt)", path.display())]
    TensorOutOfBounds {
        path: PathBuf,
        name: String,
        offset: u64,
        end: u64,
        file_len: u64,
    },
    /// Something valid that slimscope cannot read (yet), e.g. an IQ-quant's values.
    #[error("{}: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    /// A recipe that cannot be read or does not fit the model (file, line, problem).
    #[error(transparent)]
    Recipe(#[from] crate::compress::recipe::RecipeError),
    /// A pruning request that is impossible for its tensor.
    #[error(transparent)]
    Prune(#[from] crate::compress::prune::PruneError),
    /// A numeric engine (candle, tract, the tokenizer) failed on a request that
    /// passed every check before it: what was being done, then the engine's own
    /// words (kept in the message, not as a `source`, so the one line holds it once).
    #[error("{context}: {cause}")]
    Engine { context: String, cause: String },
    /// A caller asked for something impossible (bad option values).
    #[error("{0}")]
    InvalidSetting(String),
    /// A worker panicked: a bug in slimscope, reported with what the panic said.
    #[error("internal error (please report): {0}")]
    Internal(String),
    /// The system would not start worker threads.
    #[error("could not start {0}")]
    NoWorker(String),
    /// A tensor an architecture, recipe or caller names that the model does not have.
    #[error("{}: no tensor named `{name}`", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// A data set (labelled samples, a text, sentence pairs) that cannot be used.
    #[error("{}: {problem}", path.display())]
    Data { path: PathBuf, problem: String },
    /// A layer of an architecture that does not fit what it receives or the weights
    /// it names (1-based `layer`, its kind in words when known).
    #[error("layer {layer}{}: {problem}", kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Layer {
        layer: usize,
        kind: Option<String>,
        problem: String,
    },
    /// An architecture that does not fit a model's weights: the model, then what
    /// does not fit (kept whole, so callers can match on it).
    #[error("{}: the architecture does not fit the weights: {cause}", model.display())]
    Architecture { model: PathBuf, cause: Box<Error> },
    /// A background job was cancelled before it finished.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// `path`'s metadata if it is a regular file (following links), else the error
    /// saying what it is: inputs are read only from files, never from a pipe or a
    /// device that could block or never end.
    pub fn regular_file(path: &std::path::Path) -> Result<std::fs::Metadata> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::IsDirectory {
                path: path.to_owned(),
            });
        }
        if !meta.is_file() {
            return Err(Error::NotAFile {
                path: path.to_owned(),
            });
        }
        Ok(meta)
    }

    /// Build an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}
