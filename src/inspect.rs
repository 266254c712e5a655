//! Inspecting a whole model: statistics for every tensor, one tensor at a time (each
//! on all cores), so peak memory stays near one chunk buffer per thread on top of the
//! memory-mapped file. Used alike by `slimscope inspect` and the app's loading job.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Model, TensorInfo, Totals};
use crate::stats::{self, StatsError, StatsOptions, TensorStats};

/// One tensor with its statistics, or the reason it has none.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub info: TensorInfo,
    /// `None` when the values cannot be decoded (see `note`).
    pub stats: Option<TensorStats>,
    /// Why `stats` is missing, or a warning about the values (NaN/Inf).
    pub note: Option<String>,
}

/// JSON shape of a report: the tensor's fields, `stats`, then `histogram` beside them.
impl Serialize for TensorReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            info: &'a TensorInfo,
            stats: Option<&'a TensorStats>,
            histogram: Option<&'a crate::stats::Histogram>,
            #[serde(skip_serializing_if = "Option::is_none")]
            note: Option<&'a String>,
        }
        Out {
            info: &self.info,
            stats: self.stats.as_ref(),
            histogram: self.stats.as_ref().and_then(|st| st.histogram.as_ref()),
            note: self.note.as_ref(),
        }
        .serialize(s)
    }
}

impl Model {
    /// Statistics of tensor `index`. Errors name the file and the tensor.
    pub fn tensor_stats(&self, index: usize, options: &StatsOptions) -> Result<TensorStats> {
        let info = self
            .tensors
            .get(index)
            .ok_or_else(|| Error::Internal(format!("tensor index {index} out of range")))?;
        let computed = match self.deflated_stream(index) {
            // A compressed npz member: streamed in bounded memory, read once a pass.
            Some(first) => {
                let mut first = Some(first?);
                stats::compute_streamed(info.dtype, info.numel, options, || match first.take() {
                    Some(stream) => Ok(stream),
                    None => match self.deflated_stream(index) {
                        Some(Ok(stream)) => Ok(stream),
                        Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                        None => Err(std::io::Error::other("the data is no longer a stream")),
                    },
                })
            }
            None => {
                let bytes = self.tensor_bytes(index)?;
                stats::compute(info.dtype, &bytes, info.numel, options)
            }
        };
        computed.map_err(|e| match e {
            StatsError::Read(problem) => Error::Corrupt {
                path: self.path.clone(),
                format: self.format.name(),
                problem: format!("tensor `{}`: {problem}", info.name),
            },
            StatsError::BadBins(_) => Error::InvalidSetting(e.to_string()),
            other => Error::Unsupported {
                path: self.path.clone(),
                what: format!("tensor `{}`: {other}", info.name),
            },
        })
    }
}

/// Statistics for every tensor, in file order. `progress(done, total)` is called
/// after each tensor and returns `false` to stop (then [`Error::Cancelled`]).
/// Tensors whose values cannot be decoded get a note instead of statistics; I/O or
/// corruption errors abort.
pub fn inspect_model(
    model: &Model,
    options: &StatsOptions,
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<Vec<TensorReport>> {
    if options.bins == 0 || options.bins > stats::MAX_BINS {
        return Err(Error::InvalidSetting(
            StatsError::BadBins(options.bins).to_string(),
        ));
    }
    let total = model.tensors.len();
    let mut reports = Vec::with_capacity(total);
    for (i, info) in model.tensors.iter().enumerate() {
        let (stats, note) = if info.dtype.can_decode() {
            let s = model.tensor_stats(i, options)?;
            let note = (s.nan + s.inf > 0).then(|| {
                format!(
                    "{} NaN and {} infinite values (left out of the statistics)",
                    s.nan, s.inf
                )
            });
            (Some(s), note)
        } else {
            (
                None,
                Some(format!(
                    "no decoder for {} values; statistics unavailable",
                    info.dtype
                )),
            )
        };
        reports.push(TensorReport {
            info: info.clone(),
            stats,
            note,
        });
        if !progress(i + 1, total) {
            return Err(Error::Cancelled);
        }
    }
    Ok(reports)
}

/// The JSON document `slimscope inspect --json` prints.
#[derive(Debug, Serialize)]
pub struct InspectReport<'a> {
    pub file: &'a std::path::Path,
    pub format: crate::model::Format,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub totals: Totals,
    pub layers: &'a [crate::model::Layer],
    pub tensors: &'a [TensorReport],
}

impl<'a> InspectReport<'a> {
    pub fn new(model: &'a Model, tensors: &'a [TensorReport]) -> Self {
        InspectReport {
            file: &model.path,
            format: model.format,
            metadata: model.metadata.iter().cloned().collect(),
            totals: model.totals(),
            layers: &model.layers,
            tensors,
        }
    }
}
