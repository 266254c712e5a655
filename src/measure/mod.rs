//! Measuring one compression configuration: apply its recipe, add up what it does to
//! the whole model (bytes, bits per weight, sparsity, weight fidelity) and, when a
//! network and data are attached, run the task on the compressed weights. The app's
//! live figures, every sweep point, export summaries and `slimscope apply` all come
//! from here, so one configuration gives one set of numbers wherever it is shown.

pub mod evaluation;
pub mod speed;

use crate::compress::apply::{AppliedTensor, TensorCache, apply_recipe_cached};
use crate::compress::calibration::Statistics;
use crate::compress::recipe::Recipe;
use crate::error::{Error, Result};
use crate::eval::Metrics;
use crate::eval::evaluator::Evaluator;
use crate::model::Model;

/// What a set of compressed tensors adds up to over the whole model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Totals {
    /// Every tensor as stored.
    pub bytes_before: u64,
    /// The same with the compressed tensors in their storage formats (an estimate
    /// for a format not written; see each tensor's storage).
    pub bytes_after: u64,
    /// Parameters of the whole model.
    pub params: u64,
    /// Σx² and Σ(x − x̂)² over the compressed tensors (weight fidelity, not accuracy).
    pub signal: f64,
    pub noise: f64,
    /// Exact zeros after compression, and elements, in the compressed tensors.
    pub zeros: f64,
    pub compressed_numel: f64,
}

impl Totals {
    /// The totals of `applied` (by index into `model.tensors`) on `model`.
    pub fn of(model: &Model, applied: &[(usize, AppliedTensor)]) -> Totals {
        let mut totals = Totals {
            bytes_before: model.tensors.iter().map(|t| t.size_bytes).sum(),
            params: model.tensors.iter().map(|t| t.numel).sum(),
            ..Totals::default()
        };
        totals.bytes_after = totals.bytes_before;
        for (_, t) in applied {
            totals.bytes_after = totals.bytes_after - t.bytes_before + t.bytes_after;
            totals.signal += t.fidelity.signal;
            totals.noise += t.fidelity.noise;
            totals.zeros += t.sparsity * t.values.len() as f64;
            totals.compressed_numel += t.values.len() as f64;
        }
        totals
    }

    /// Bits per parameter before and after, over the whole model.
    pub fn bits_per_weight(&self) -> (f64, f64) {
        let p = self.params.max(1) as f64;
        (
            8.0 * self.bytes_before as f64 / p,
            8.0 * self.bytes_after as f64 / p,
        )
    }

    /// Model-wide weight SQNR over the compressed tensors, dB (+∞ if none changed).
    pub fn weight_sqnr_db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }

    /// ‖w − ŵ‖/‖w‖ over the compressed tensors.
    pub fn weight_relative_error(&self) -> f64 {
        if self.signal > 0.0 {
            (self.noise / self.signal).sqrt()
        } else {
            0.0
        }
    }

    /// Fraction of exact zeros in the compressed tensors.
    pub fn sparsity(&self) -> f64 {
        if self.compressed_numel > 0.0 {
            self.zeros / self.compressed_numel
        } else {
            0.0
        }
    }
}

/// What measuring a configuration found.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The compressed tensors, by index into the model's tensors.
    pub applied: Vec<(usize, AppliedTensor)>,
    pub totals: Totals,
    /// The task's figures on the attached data, when an evaluator was given.
    pub metrics: Option<Metrics>,
}

/// What a configuration is measured with besides the model.
#[derive(Clone, Copy, Default)]
pub struct With<'a> {
    /// Compressed tensors already computed for another configuration of this model.
    pub cache: Option<&'a TensorCache>,
    /// A network and data, for task metrics; without one, sizes and fidelity only.
    pub evaluator: Option<&'a Evaluator>,
    /// Samples per forward pass: cancellation is noticed between batches.
    pub batch: usize,
}

/// Apply `recipe` to `model` and measure the result. `cancelled` is asked between
/// the steps and between batches; a cancelled measurement is `Error::Cancelled`.
pub fn measure(
    model: &Model,
    recipe: &Recipe,
    with: With,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Measurement> {
    let (applied, totals) = match with.evaluator {
        Some(e) => {
            let applied = apply_for(model, recipe, with.cache, e, None, cancelled)?;
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let totals = Totals::of(model, &applied);
            (applied, totals)
        }
        None => measure_weights(model, recipe, with.cache, None, cancelled)?,
    };
    let metrics = match with.evaluator {
        Some(evaluator) => Some(measure_task(
            model,
            recipe,
            &applied,
            evaluator,
            with.batch,
            &mut |_, _| !cancelled(),
        )?),
        None => None,
    };
    Ok(Measurement {
        applied,
        totals,
        metrics,
    })
}

/// `recipe` applied for a measurement on `evaluator`: data-aware rules learn from
/// its calibration samples, block by block on a llama GGUF (see
/// [`crate::eval::llama_inputs::apply_block_by_block`]), elsewhere from statistics of
/// the original collected once (and shared through `cache`).
pub fn apply_for(
    model: &Model,
    recipe: &Recipe,
    cache: Option<&TensorCache>,
    evaluator: &Evaluator,
    importance: Option<&crate::model::imatrix::Imatrix>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<(usize, AppliedTensor)>> {
    match recipe.statistics_request(model)? {
        Some(_) if evaluator.network().learns_block_by_block() => {
            crate::eval::llama_inputs::apply_block_by_block(
                model,
                recipe,
                evaluator.calibration_samples(model)?,
                importance,
                |_, _| !cancelled(),
            )
        }
        _ if recipe.uses_awq() => Err(crate::compress::apply::awq_unsupported(model)),
        need => {
            let stats = need
                .map(|need| evaluator.statistics(model, need, |_, _| !cancelled()))
                .transpose()?;
            crate::compress::apply::apply_recipe_with(
                model,
                recipe,
                cache,
                stats.as_deref(),
                importance,
            )
        }
    }
}

/// The first, fast part of [`measure`]: the compressed tensors and what they add up
/// to (exact sizes and weight fidelity; no data needed but the calibration
/// statistics of data-aware methods).
pub fn measure_weights(
    model: &Model,
    recipe: &Recipe,
    cache: Option<&TensorCache>,
    stats: Option<&Statistics>,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<(Vec<(usize, AppliedTensor)>, Totals)> {
    let applied = apply_recipe_cached(model, recipe, cache, stats)?;
    if cancelled() {
        return Err(Error::Cancelled);
    }
    let totals = Totals::of(model, &applied);
    Ok((applied, totals))
}

/// Where the data-aware methods of [`apply_calibrated`] learn from.
#[derive(Clone, Copy)]
pub enum Calibration<'a> {
    None,
    /// The samples `eval` keeps apart from this data set with the recipe.
    KeptApart(&'a crate::eval::data::Dataset),
    /// These samples (see [`crate::eval::load_calibration`]).
    Set(&'a crate::eval::data::Dataset),
}

/// [`crate::compress::apply::apply_recipe`] for a recipe that may hold data-aware
/// methods: those learn from `calibration`, run through `network`. What exports
/// and served variants apply.
pub fn apply_calibrated(
    model: &Model,
    recipe: &Recipe,
    network: Option<&crate::eval::Network>,
    calibration: Calibration,
    importance: Option<&crate::model::imatrix::Imatrix>,
) -> Result<Vec<(usize, AppliedTensor)>> {
    let Some((need, tensors)) = recipe.statistics_request(model)? else {
        return crate::compress::apply::apply_recipe_with(model, recipe, None, None, importance);
    };
    let apart;
    let samples = match calibration {
        Calibration::Set(set) => Some(set),
        Calibration::KeptApart(data) => {
            apart = data.split_apart(recipe.kept_apart())?.1;
            Some(&apart)
        }
        Calibration::None => None,
    };
    let (Some(network), Some(samples)) = (network, samples) else {
        return Err(Error::InvalidSetting(format!(
            "{}: data-aware methods (Wanda, SparseGPT, GPTQ, AWQ) learn from calibration data: \
             give --calibration FILE, or --data (the samples `slimscope eval` keeps apart \
             with this recipe are used)",
            recipe.origin.display()
        )));
    };
    if !network.collects_statistics() {
        return Err(crate::eval::statistics_unsupported(model));
    }
    if recipe.uses_awq() && !network.learns_block_by_block() {
        return Err(crate::compress::apply::awq_unsupported(model));
    }
    if network.learns_block_by_block() {
        return crate::eval::llama_inputs::apply_block_by_block(
            model,
            recipe,
            samples,
            importance,
            |_, _| true,
        );
    }
    let stats = network.statistics(model, samples, need, &tensors, |_, _| true)?;
    crate::compress::apply::apply_recipe_with(model, recipe, None, Some(&stats), importance)
}

/// The second, slower part of [`measure`]: the task's figures with `applied` in
/// place (and the recipe's activation quantization), in batches of `batch`;
/// `progress(done, total)` returns false to cancel.
pub fn measure_task(
    model: &Model,
    recipe: &Recipe,
    applied: &[(usize, AppliedTensor)],
    evaluator: &Evaluator,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Metrics> {
    let activations = recipe.activations.as_ref();
    evaluator.measure_with(model, applied, activations, batch.max(1), progress)
}
