//! Recovery fine-tuning: train a compressed sequential network so it wins back what
//! compression cost, while staying exactly what the recipe describes.
//!
//! - **Masks stay fixed.** The recipe's pruning mask is computed once from the
//!   original weights; after every optimizer step the pruned weights are set to
//!   exactly zero again.
//! - **Quantization-aware.** Each step's forward pass uses the recipe's quantized
//!   values of the current weights (fake quantization, through the same code that
//!   exports them); the backward pass treats the rounding as identity (the
//!   straight-through estimator, `w + stop_gradient(q(w) − w)`).
//! - **Gradual pruning** (optional): magnitude masks grow from an initial sparsity to
//!   the recipe's along TF-MOT's polynomial decay over the first two thirds of the
//!   steps, recomputed from the current weights ([`super::schedule`]).
//! - **The result is the recipe re-applied** to the best epoch's weights, so every
//!   value is exactly representable in the recipe's formats.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::schedule::PolynomialDecay;
use super::trainable::{TrainNet, candle};
use super::{EpochRecord, Hooks, TrainEvent, TrainOptions, fit, split};
use crate::compress::apply::{AppliedTensor, apply};
use crate::compress::prune;
use crate::compress::recipe::{PruneSpec, QuantSpec, Scope, TensorPlan};
use crate::error::{Error, Result};
use crate::eval::data::Dataset;
use crate::eval::{DEFAULT_BATCH, Metrics, evaluate};
use crate::model::Model;
use crate::net::sequential_runner;
use crate::net::spec::ArchSpec;
use crate::net::weights::ModelWeights;

/// Share of the steps over which gradual pruning raises the sparsity; the rest lets
/// the network settle at the target.
pub const GRADUAL_SHARE: f64 = 2.0 / 3.0;
/// Mask updates during the ramp.
pub const GRADUAL_UPDATES: usize = 10;

/// What recovery produced.
pub struct Recovered {
    /// The model with the best epoch's trained weights, before the recipe.
    pub trained: Model,
    /// The recipe applied to the trained weights: what is exported and measured.
    pub applied: Vec<(usize, AppliedTensor)>,
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    /// Cancelled before the last epoch: the best finished one is kept.
    pub interrupted: bool,
    /// Pruned positions whose exported value is not exactly zero (0 unless a block
    /// type with a minimum, such as Q4_1, stores zeros as small values).
    pub mask_violations: usize,
}

/// Figures on held-out data: the model as it was, compressed in one shot, and
/// compressed after recovery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: Metrics,
    pub one_shot: Metrics,
    pub recovered: Metrics,
}

/// [`recover`] on `train`, then the three figures on `test`.
#[allow(
    clippy::too_many_arguments,
    reason = "the inputs of one run, no natural grouping"
)]
pub fn recover_and_compare(
    model: &Model,
    spec: &ArchSpec,
    plans: &[TensorPlan],
    train: &Dataset,
    test: &Dataset,
    options: &TrainOptions,
    gradual: Option<f64>,
    progress: &mut dyn FnMut(TrainEvent) -> bool,
) -> Result<(Recovered, Comparison)> {
    let measure = |model: &Model, applied: &[(usize, AppliedTensor)]| -> Result<Metrics> {
        let runner = sequential_runner(spec, &ModelWeights::new(model, applied), &model.path)?;
        evaluate(runner.as_ref(), test, DEFAULT_BATCH, |_, _| true)
    };
    let baseline = measure(model, &[])?;
    let one_shot = measure(model, &apply(model, plans)?)?;
    let recovered = recover(model, spec, plans, train, options, gradual, progress)?;
    let after = measure(&recovered.trained, &recovered.applied)?;
    Ok((
        recovered,
        Comparison {
            baseline,
            one_shot,
            recovered: after,
        },
    ))
}

/// A summary fit for JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub interrupted: bool,
    pub mask_violations: usize,
}

impl Recovered {
    pub fn report(&self) -> RecoveryReport {
        RecoveryReport {
            history: self.history.clone(),
            best_epoch: self.best_epoch,
            interrupted: self.interrupted,
            mask_violations: self.mask_violations,
        }
    }
}

/// One pruning rule's tensors and how their sparsity rises (gradual pruning).
struct Ramp {
    names: Vec<String>,
    global: bool,
    schedule: PolynomialDecay,
}

/// Masks and fake quantization around the shared training loop.
struct Recovery<'a> {
    model: &'a Model,
    spec: &'a ArchSpec,
    plans: &'a [TensorPlan],
    /// The plans without pruning: quantization of already-masked weights.
    quant_plans: Vec<TensorPlan>,
    /// Trainable tensors the recipe quantizes.
    quantized: Vec<String>,
    /// Whether each weight is kept, and the same as a u8 tensor.
    masks: HashMap<String, (Vec<bool>, Tensor)>,
    ramps: Vec<Ramp>,
}

fn mask_tensor(keep: &[bool], shape: &[usize]) -> Result<Tensor> {
    let values: Vec<u8> = keep.iter().map(|&k| u8::from(k)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(candle)
}

impl Recovery<'_> {
    /// Set every pruned weight to exactly +0.0 (a product with 0 would leave −0.0).
    fn enforce(&self, net: &TrainNet) -> Result<()> {
        for (name, (_, mask)) in &self.masks {
            if let Some(v) = net.var(name) {
                let w = v.as_tensor();
                let masked = w
                    .zeros_like()
                    .and_then(|zero| mask.where_cond(w, &zero))
                    .map_err(candle)?;
                v.set(&masked).map_err(candle)?;
            }
        }
        Ok(())
    }

    /// Recompute the ramps' magnitude masks at `step` from the current weights.
    fn grow_masks(&mut self, net: &TrainNet, step: usize) -> Result<()> {
        for ramp in &self.ramps {
            if !ramp.schedule.updates_at(step) {
                continue;
            }
            let s = ramp.schedule.sparsity(step);
            let values = ramp
                .names
                .iter()
                .map(|n| net.values_of(n))
                .collect::<Result<Vec<_>>>()?;
            let slices: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            let masks = if ramp.global {
                prune::magnitude_global(&slices, s)
            } else {
                slices.iter().map(|w| prune::magnitude(w, s)).collect()
            }?;
            for (name, m) in ramp.names.iter().zip(masks) {
                let keep: Vec<bool> = (0..m.len()).map(|i| m.keeps(i)).collect();
                let shape = net.var(name).map(|v| v.dims().to_vec()).unwrap_or_default();
                let t = mask_tensor(&keep, &shape)?;
                self.masks.insert(name.clone(), (keep, t));
            }
        }
        self.enforce(net)
    }

    /// The model with `net`'s current weights.
    fn current(&self, net: &TrainNet, names: &[String]) -> Result<Model> {
        let values = names
            .iter()
            .map(|n| Ok((n.clone(), net.values_of(n)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        self.model.with_values(&values)
    }

    fn trained_names(net: &TrainNet) -> Vec<String> {
        net.vars().iter().map(|(n, _)| n.clone()).collect()
    }
}

impl Hooks for Recovery<'_> {
    fn replace(&mut self, net: &TrainNet, _step: usize) -> Result<HashMap<String, Tensor>> {
        if self.quantized.is_empty() {
            return Ok(HashMap::new());
        }
        let model = self.current(net, &self.quantized)?;
        let mut out = HashMap::new();
        for (_, t) in apply(&model, &self.quant_plans)? {
            let Some(v) = net.var(&t.name) else {
                continue;
            };
            let mut q = t.values;
            // As `apply` does: pruned weights stay zero through an int or float grid.
            if let (Some((keep, _)), None) = (self.masks.get(&t.name), &t.packed) {
                for (x, &k) in q.iter_mut().zip(keep) {
                    if !k {
                        *x = 0.0;
                    }
                }
            }
            let w = v.as_tensor();
            let q = Tensor::from_vec(q, w.dims(), &Device::Cpu).map_err(candle)?;
            let ste = (q - w)
                .map(|d| d.detach())
                .and_then(|d| w + d)
                .map_err(candle)?;
            out.insert(t.name, ste);
        }
        Ok(out)
    }

    fn after_step(&mut self, net: &TrainNet, step: usize) -> Result<()> {
        if self.ramps.iter().any(|r| r.schedule.updates_at(step)) {
            self.grow_masks(net, step)
        } else {
            self.enforce(net)
        }
    }

    fn validate(
        &mut self,
        net: &TrainNet,
        validation: &Dataset,
        step: usize,
    ) -> Result<(Metrics, bool)> {
        let model = self.current(net, &Self::trained_names(net))?;
        let applied = apply(&model, self.plans)?;
        let runner =
            sequential_runner(self.spec, &ModelWeights::new(&model, &applied), &model.path)?;
        let metrics = evaluate(runner.as_ref(), validation, DEFAULT_BATCH, |_, _| true)?;
        let settled = self.ramps.iter().all(|r| r.schedule.finished(step));
        Ok((metrics, settled))
    }
}

/// Fine-tune `model` (run by `spec`) on `train` under the recipe's `plans` (resolved
/// against `model`'s tensors). `gradual`: the sparsity magnitude masks start from,
/// rising to the recipe's. `progress` returns false to cancel.
pub fn recover(
    model: &Model,
    spec: &ArchSpec,
    plans: &[TensorPlan],
    train: &Dataset,
    options: &TrainOptions,
    gradual: Option<f64>,
    progress: &mut dyn FnMut(TrainEvent) -> bool,
) -> Result<Recovered> {
    options.check()?;
    if plans.len() != model.tensors.len() {
        return Err(Error::Internal(format!(
            "{}: the recipe was resolved against another model",
            model.path.display()
        )));
    }
    let (fit_set, validation) = split(train, options.validation, options.seed)?;
    let net =
        TrainNet::new(spec, &ModelWeights::new(model, &[])).map_err(|e| Error::Architecture {
            model: model.path.clone(),
            cause: Box::new(e),
        })?;
    let trainable: Vec<String> = Recovery::trained_names(&net);
    let name_of = |i: usize| model.tensors[i].name.as_str();
    let quantized: Vec<String> = plans
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            matches!(&p.quant, Some(q) if *q != QuantSpec::None)
                && trainable.iter().any(|n| n == name_of(*i))
        })
        .map(|(i, _)| name_of(i).to_owned())
        .collect();
    let quant_plans: Vec<TensorPlan> = plans
        .iter()
        .map(|p| TensorPlan {
            prune: None,
            quant: p.quant.clone(),
        })
        .collect();
    let mut recovery = Recovery {
        model,
        spec,
        plans,
        quant_plans,
        quantized,
        masks: HashMap::new(),
        ramps: Vec::new(),
    };
    let steps = fit_set.len().div_ceil(options.batch) * options.epochs;
    match gradual {
        None => {
            recovery.masks = recipe_masks(model, plans, &trainable)?;
            recovery.enforce(&net)?;
        }
        Some(initial) => {
            let end = ((steps as f64 * GRADUAL_SHARE).round() as usize).max(1);
            recovery.ramps = ramps(model, plans, &trainable, initial, end)?;
            recovery.grow_masks(&net, 0)?;
        }
    }
    let fitted = fit(
        &net,
        &fit_set,
        &validation,
        None,
        options,
        &mut recovery,
        progress,
    )?;
    let trained_values: HashMap<String, Vec<f32>> = trainable
        .iter()
        .filter_map(|n| fitted.weights.get(n).map(|(v, _)| (n.clone(), v.clone())))
        .collect();
    let trained = model.with_values(&trained_values)?;
    let applied = apply(&trained, plans)?;
    let mask_violations = applied
        .iter()
        .filter(|(_, t)| t.packed.is_none())
        .filter_map(|(_, t)| recovery.masks.get(&t.name).map(|(keep, _)| (t, keep)))
        .map(|(t, keep)| {
            t.values
                .iter()
                .zip(keep)
                .filter(|(v, k)| !**k && **v != 0.0)
                .count()
        })
        .sum();
    Ok(Recovered {
        trained,
        applied,
        history: fitted.history,
        best_epoch: fitted.best_epoch,
        interrupted: fitted.interrupted,
        mask_violations,
    })
}

/// The recipe's own masks of the trainable tensors it prunes, from the original
/// weights.
fn recipe_masks(
    model: &Model,
    plans: &[TensorPlan],
    trainable: &[String],
) -> Result<HashMap<String, (Vec<bool>, Tensor)>> {
    let prune_plans: Vec<TensorPlan> = plans
        .iter()
        .map(|p| TensorPlan {
            prune: p.prune.clone(),
            quant: None,
        })
        .collect();
    let mut masks = HashMap::new();
    for (_, t) in apply(model, &prune_plans)? {
        if t.pruned && trainable.contains(&t.name) {
            let keep: Vec<bool> = t.values.iter().map(|&v| v != 0.0).collect();
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let mask = mask_tensor(&keep, &shape)?;
            masks.insert(t.name.clone(), (keep, mask));
        }
    }
    Ok(masks)
}

/// Gradual pruning: one ramp from `initial` sparsity to the recipe's, over the first
/// `end` steps, per magnitude rule (global) or per tensor.
fn ramps(
    model: &Model,
    plans: &[TensorPlan],
    trainable: &[String],
    initial: f64,
    end: usize,
) -> Result<Vec<Ramp>> {
    let name_of = |i: usize| model.tensors[i].name.as_str();
    let mut rules: Vec<(usize, Ramp)> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let Some((spec, rule)) = &plan.prune else {
            continue;
        };
        let (target, global) = match spec {
            PruneSpec::None => continue,
            PruneSpec::Magnitude {
                sparsity, scope, ..
            } => (sparsity.get(), *scope == Scope::Global),
            other => {
                return Err(Error::InvalidSetting(format!(
                    "gradual pruning ramps magnitude pruning; tensor `{}` uses {}",
                    name_of(i),
                    serde_json::to_string(other).unwrap_or_default()
                )));
            }
        };
        if !trainable.iter().any(|n| n == name_of(i)) {
            continue;
        }
        let schedule = PolynomialDecay {
            initial: initial.min(target),
            target,
            begin_step: 0,
            end_step: end,
            power: 3.0,
            frequency: (end / GRADUAL_UPDATES).max(1),
        };
        schedule.check()?;
        let key = if global { *rule } else { usize::MAX - i };
        match rules.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ramp)) => ramp.names.push(name_of(i).to_owned()),
            None => rules.push((
                key,
                Ramp {
                    names: vec![name_of(i).to_owned()],
                    global,
                    schedule,
                },
            )),
        }
    }
    if rules.is_empty() {
        return Err(Error::InvalidSetting(
            "gradual pruning needs a recipe that prunes by magnitude".into(),
        ));
    }
    Ok(rules.into_iter().map(|(_, r)| r).collect())
}
