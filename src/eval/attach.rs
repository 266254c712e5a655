//! A data set attached to a model: the data loaded and checked against the model's
//! input, the network that runs it (a given or proposed spec, or the model's own
//! graph), and the uncompressed model's figures on it — what every compressed
//! variant is then compared with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::evaluator::Evaluator;
use super::{DEFAULT_BATCH, Metrics, Network};
use crate::error::Result;
use crate::model::Model;

/// A data set attached to the open model, with the uncompressed model's figures.
pub struct Attached {
    pub data_path: PathBuf,
    /// The architecture spec given, if one was (else it was proposed).
    pub arch_path: Option<PathBuf>,
    /// The data and the forward pass (the given or proposed spec, or an ONNX model's
    /// own graph), with every variant measured so far.
    pub evaluator: Arc<Evaluator>,
    /// What was assumed to propose the architecture (empty for a given spec).
    pub notes: Vec<String>,
    /// What is odd about the data (NaN/±inf features), shown under the figures.
    pub warnings: Vec<String>,
    pub baseline: Metrics,
    /// Increases with every attachment, so evaluations know which data they used.
    pub version: u64,
}

/// Load the data, take or propose the architecture (or use an ONNX model's graph),
/// and evaluate the model as it is. `progress(done, total)` counts samples and
/// returns false to stop.
pub fn attach(
    model: &Model,
    data_path: &Path,
    arch_path: Option<&Path>,
    version: u64,
    progress: impl FnMut(usize, usize) -> bool,
) -> Result<Attached> {
    let data = crate::eval::load_data(model, data_path)?;
    let (network, notes) = Network::resolve(model, arch_path, &data)?;
    // NaN/±inf features make every output NaN: say so where the figures are shown.
    let warnings = data.non_finite_warning().into_iter().collect();
    let evaluator = Evaluator::new(Arc::new(network), Arc::new(data));
    let baseline = evaluator.measure(model, &[], DEFAULT_BATCH, progress)?;
    Ok(Attached {
        data_path: data_path.to_owned(),
        arch_path: arch_path.map(Path::to_owned),
        evaluator: Arc::new(evaluator),
        notes,
        warnings,
        baseline,
        version,
    })
}
