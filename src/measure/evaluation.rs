//! A configuration measured in detail, for looking at it tensor by tensor: on top of
//! [`super::measure`]'s totals and task metrics, each compressed tensor's zeroed
//! weights, effective pruning threshold, value range, quantization grid and overlay
//! histograms on the original's ranges (what the app draws over a tensor's
//! histogram), and the model's non-zero count.

use std::path::Path;

use rayon::prelude::*;

use crate::compress::apply::{AppliedTensor, TensorCache};
use crate::compress::config::Config;
use crate::error::Result;
use crate::eval::Metrics;
use crate::eval::evaluator::Evaluator;
use crate::inspect::TensorReport;
use crate::model::Model;

/// Where the recipe of a configuration set interactively says it comes from, in
/// error messages.
pub const SETTINGS_ORIGIN: &str = "(app settings)";
/// Grids with at most this many distinct values are drawn on the histogram.
const MAX_GRID_LINES: usize = 64;

/// One compressed tensor, in detail.
#[derive(Debug, Clone)]
pub struct TensorResult {
    pub scheme: String,
    pub storage: String,
    pub sparsity: f64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub sqnr_db: f64,
    /// Weights that were non-zero and are zero now.
    pub zeroed: u64,
    /// The largest |w| that became zero, when magnitude pruning was applied (the
    /// effective pruning threshold; other masks have none).
    pub threshold: Option<f64>,
    /// Smallest and largest compressed value (the grid's reach).
    pub range: (f64, f64),
    /// Whether some kept value changed (a quantization grid, not only pruning).
    pub quantized: bool,
    /// The compressed values, when there are few enough distinct ones to draw.
    pub grid: Vec<f64>,
    /// Histograms of the compressed values (newly zeroed ones left out) on the
    /// original's signed and |w| ranges.
    pub signed: Overlay,
    pub abs: Overlay,
}

/// Counts of compressed values in bins over `[min, max]`.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub min: f64,
    pub max: f64,
    pub counts: Vec<u64>,
}

/// What a configuration does to the whole model.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub config: Config,
    pub bins: usize,
    /// By tensor index; `None` for tensors the configuration leaves alone.
    pub tensors: Vec<Option<TensorResult>>,
    /// Bytes, parameters and weight fidelity over the whole model.
    pub totals: crate::measure::Totals,
    /// Non-zero weights of the whole model after compression.
    pub nonzero_after: u64,
    /// The share of zeros over every weight matrix (rank ≥ 2, the tensors pruning
    /// touches), compressed or not: what the configuration effectively prunes, on the
    /// sweeps' sparsity axis, whatever mix of global level and overrides makes it.
    pub matrix_sparsity: f64,
    /// Accuracy of the compressed model on the attached data set, if one is attached
    /// (with the attachment's version, so a newer data set triggers a new evaluation).
    pub accuracy: Option<(u64, Metrics)>,
    /// Static activation quantization calibrates on samples kept apart: how many,
    /// and the original's figures on the rest, which `accuracy` covers too.
    pub kept_apart: Option<(usize, Metrics)>,
}

fn overlay(values: &[f32], min: f64, max: f64, bins: usize, abs: bool) -> Overlay {
    let mut counts = vec![0u64; bins];
    let width = max - min;
    if bins > 0 && width.is_finite() && width > 0.0 {
        for &v in values {
            let v = if abs { v.abs() } else { v };
            if v.is_finite() {
                let b = ((f64::from(v) - min) / width * bins as f64).floor();
                counts[(b.max(0.0) as usize).min(bins - 1)] += 1;
            }
        }
    }
    Overlay { min, max, counts }
}

fn tensor_result(
    original: &[f32],
    t: &AppliedTensor,
    report: &TensorReport,
    bins: usize,
) -> TensorResult {
    let (mut zeroed, mut threshold) = (0u64, None::<f64>);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut grid: Vec<f64> = Vec::new();
    let mut grid_ok = true;
    let mut quantized = false;
    let mut kept: Vec<f32> = Vec::with_capacity(t.values.len());
    for (&x, &y) in original.iter().zip(&t.values) {
        if y == 0.0 && x != 0.0 {
            zeroed += 1;
            let a = f64::from(x.abs());
            threshold = Some(threshold.map_or(a, |t: f64| t.max(a)));
        } else {
            kept.push(y);
            quantized |= x != y;
        }
        let y = f64::from(y);
        if y.is_finite() {
            lo = lo.min(y);
            hi = hi.max(y);
        }
        if grid_ok && let Err(at) = grid.binary_search_by(|g| g.total_cmp(&y)) {
            if grid.len() == MAX_GRID_LINES {
                grid_ok = false;
                grid.clear();
            } else {
                grid.insert(at, y);
            }
        }
    }
    let (smin, smax) = report.stats.as_ref().map_or((lo, hi), |s| (s.min, s.max));
    let amax = smin.abs().max(smax.abs());
    TensorResult {
        scheme: t.scheme.clone(),
        storage: t.storage.to_string(),
        sparsity: t.sparsity,
        bytes_before: t.bytes_before,
        bytes_after: t.bytes_after,
        sqnr_db: t.fidelity.sqnr_db,
        zeroed,
        // Only magnitude pruning has a |w| threshold; random, N:M and structured
        // masks zero small and large weights alike.
        threshold: threshold.filter(|_| t.pruned && t.scheme.starts_with("magnitude")),
        range: (lo, hi),
        quantized,
        grid: if quantized { grid } else { Vec::new() },
        // Newly zeroed weights are left out: their spike at 0 would flatten the rest.
        signed: overlay(&kept, smin, smax, bins, false),
        abs: overlay(&kept, 0.0, amax, bins, true),
    }
}

/// What [`evaluate`] tells its caller on the way.
pub struct Hooks<'a> {
    /// Asked between the steps: stop when it says so.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    /// Given the sizes, fidelity and per-tensor details as soon as they are known,
    /// before the slower task figures (no `accuracy` yet).
    pub sizes: &'a mut dyn FnMut(&Evaluation),
    /// Samples (or windows, or pairs) of the task measured so far, and in all;
    /// returns false to stop.
    pub progress: &'a mut dyn FnMut(usize, usize) -> bool,
}

/// Compress `model` as `config` says and measure the result (run on a worker): sizes
/// and fidelity always (told to `hooks.sizes` at once), accuracy when a data set is
/// attached (`accuracy`: its version and evaluator). Tensors and accuracy already
/// computed for another configuration are reused, so returning to a level is
/// instant.
pub fn evaluate(
    model: &Model,
    reports: &[TensorReport],
    config: &Config,
    bins: usize,
    cache: &TensorCache,
    accuracy: Option<(u64, &Evaluator)>,
    hooks: Hooks,
) -> Result<Evaluation> {
    let Hooks {
        cancelled,
        sizes,
        progress,
    } = hooks;
    let recipe = config.to_recipe(Path::new(SETTINGS_ORIGIN))?;
    // Calibration (static activations, data-aware methods) keeps samples apart:
    // every figure then covers the rest, the original's too.
    let calibration = recipe.kept_apart();
    let split = match (calibration, accuracy) {
        (1.., Some((_, base))) => Some(base.keeping_apart(calibration)?),
        _ => None,
    };
    let stats = match (recipe.statistics_request(model)?, &split) {
        (Some(need), Some(e)) => Some(e.statistics(model, need, |_, _| !cancelled())?),
        _ => None,
    };
    let (applied, totals) =
        crate::measure::measure_weights(model, &recipe, Some(cache), stats.as_deref(), cancelled)?;
    let results: Vec<(usize, TensorResult)> = applied
        .par_iter()
        .map(|(i, t)| {
            let original = model.tensor_f32(*i)?;
            Ok((*i, tensor_result(&original, t, &reports[*i], bins)))
        })
        .collect::<Result<_>>()?;
    let nonzero = |r: &TensorReport| r.info.numel - r.stats.as_ref().map_or(0, |s| s.zeros);
    let mut nonzero_after: u64 = reports.iter().map(nonzero).sum();
    let matrix = |r: &TensorReport| r.info.shape.len() >= 2;
    let mut matrix_nonzero: u64 = reports.iter().filter(|r| matrix(r)).map(nonzero).sum();
    for (i, t) in &applied {
        let after = ((1.0 - t.sparsity) * t.values.len() as f64).round() as u64;
        nonzero_after = nonzero_after - nonzero(&reports[*i]) + after;
        if matrix(&reports[*i]) {
            matrix_nonzero = matrix_nonzero - nonzero(&reports[*i]) + after;
        }
    }
    let matrix_params: u64 = reports
        .iter()
        .filter(|r| matrix(r))
        .map(|r| r.info.numel)
        .sum();
    let matrix_sparsity = 1.0 - matrix_nonzero as f64 / matrix_params.max(1) as f64;
    let mut tensors: Vec<Option<TensorResult>> = vec![None; model.tensors.len()];
    for (i, r) in results {
        tensors[i] = Some(r);
    }
    let mut evaluation = Evaluation {
        config: config.clone(),
        bins,
        tensors,
        totals,
        nonzero_after,
        matrix_sparsity,
        accuracy: None,
        kept_apart: None,
    };
    let Some((version, base)) = accuracy else {
        return Ok(evaluation);
    };
    sizes(&evaluation);
    if cancelled() {
        return Err(crate::Error::Cancelled);
    }
    let evaluator = split.as_deref().unwrap_or(base);
    let batch = crate::eval::DEFAULT_BATCH;
    let metrics =
        crate::measure::measure_task(model, &recipe, &applied, evaluator, batch, progress)?;
    if let Some(e) = &split {
        let original = e.measure(model, &[], batch, |_, _| !cancelled())?;
        evaluation.kept_apart = Some((calibration, original));
    }
    evaluation.accuracy = Some((version, metrics));
    Ok(evaluation)
}
