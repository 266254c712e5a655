//! Applying a recipe to a model's tensors: prune, then quantize, then re-apply the
//! mask (so pruned weights stay exactly zero after an int or float grid), producing
//! f32 "fake-quant" values and a per-tensor report. GGUF block types are the
//! exception: their values are exactly what the blocks decode to, because the blocks
//! are what a GGUF export stores (a block's min, as in Q4_1 or Q4_K, can turn a pruned
//! zero into a small value; the reported sparsity says so). A pruned tensor with no
//! quant rule keeps a block-quantized source's type. Tensors no rule touches are left
//! as they are. Deterministic for any thread count.

use std::collections::HashMap;

use serde::Serialize;

use super::calibration::{Provenance, Statistics, WeightLayout};
use super::float::{FloatFormat, fake_quant_float};
use super::gguf_blocks;
use super::prune::{self, Mask, Norm, Pattern};
use super::quant::{self, Fidelity, IntScheme, fidelity};
use super::recipe::{NormName, PruneSpec, QuantSpec, Recipe, Scope, TensorPlan};
use super::size::{self, Layout, Storage};
use crate::dtype::{DType, GgmlQuant, decode};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::imatrix::Imatrix;
use rayon::prelude::*;

/// One compressed tensor.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedTensor {
    pub name: String,
    pub shape: Vec<u64>,
    /// The compressed values (dequantized to f32).
    #[serde(skip)]
    pub values: Vec<f32>,
    /// Fraction of exact zeros after compression.
    pub sparsity: f64,
    /// Whether a pruning mask was applied (zeros can also come from rounding).
    pub pruned: bool,
    /// The recipe's words for what was done, e.g. `magnitude 50% (global) + int8 channel`.
    pub scheme: String,
    pub bytes_before: u64,
    /// Bytes in the smallest storage that holds the result (see [`size`]).
    pub bytes_after: u64,
    pub storage: Storage,
    /// Weight fidelity (not accuracy).
    pub fidelity: Fidelity,
    /// The physically smaller shape structured pruning allows (rows or columns gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape_after: Option<Vec<u64>>,
    /// FLOPs per sample (linear) or per output position (conv), dense and after what
    /// structured or N:M pruning really removes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<(u64, u64)>,
    /// The element type that holds `values` exactly and that exports store: a GGUF
    /// block type, F16 or BF16 for those grids, F32 otherwise.
    #[serde(serialize_with = "display")]
    pub stored: DType,
    /// The ggml blocks when `stored` is a block type.
    #[serde(skip)]
    pub packed: Option<Vec<u8>>,
    /// The integer grid of an `int` quant rule: the scales and zero points that
    /// exports storing integer codes (ONNX QDQ) write beside them.
    #[serde(skip)]
    pub grid: Option<quant::IntGrid>,
    /// What a data-aware method learnt from (recorded in every export's summary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Provenance>,
}

fn display<S: serde::Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(d)
}

/// What quantizing one tensor produced.
struct Quantized {
    values: Vec<f32>,
    storage: Storage,
    words: Option<String>,
    stored: DType,
    packed: Option<Vec<u8>>,
    grid: Option<quant::IntGrid>,
}

/// Calibration statistics, and the recipe's settings for them, for data-aware
/// methods (Wanda, SparseGPT).
#[derive(Clone, Copy)]
pub struct Calibrated<'a> {
    /// Layer-input statistics (Wanda, SparseGPT, GPTQ, AWQ).
    pub stats: Option<&'a Statistics>,
    pub dampening: f64,
    /// An importance matrix (GGUF `method = "imatrix"`).
    pub importance: Option<&'a Imatrix>,
}

impl Calibrated<'_> {
    /// What results computed with these statistics depend on, for cache keys.
    fn key(&self) -> (u64, usize, u64, u64) {
        (
            self.stats.map_or(0, |s| s.data_key),
            self.stats.map_or(0, |s| s.samples),
            self.dampening.to_bits(),
            self.importance.map_or(0, Imatrix::key),
        )
    }
}

/// Resolve `recipe` against `model`'s tensors and apply it: what `slimscope apply`,
/// `eval` and the app all do with a recipe. A data-aware method needs `stats`.
pub fn apply_recipe(model: &Model, recipe: &Recipe) -> Result<Vec<(usize, AppliedTensor)>> {
    apply_recipe_cached(model, recipe, None, None)
}

/// [`apply_recipe`], reusing (and filling) `cache`: sweeps and sliders come back to
/// the same (tensor, method, level) again and again; data-aware methods read
/// `stats`.
pub fn apply_recipe_cached(
    model: &Model,
    recipe: &Recipe,
    cache: Option<&TensorCache>,
    stats: Option<&Statistics>,
) -> Result<Vec<(usize, AppliedTensor)>> {
    apply_recipe_with(model, recipe, cache, stats, None)
}

/// [`apply_recipe_cached`] with an importance matrix for GGUF rules whose method is
/// `imatrix`.
pub fn apply_recipe_with(
    model: &Model,
    recipe: &Recipe,
    cache: Option<&TensorCache>,
    stats: Option<&Statistics>,
    importance: Option<&Imatrix>,
) -> Result<Vec<(usize, AppliedTensor)>> {
    let plans = recipe.plan(model)?;
    let calibrated = (stats.is_some() || importance.is_some()).then(|| Calibrated {
        stats,
        dampening: recipe.dampening(),
        importance,
    });
    apply_cached(model, &plans, cache, calibrated)
}

/// The compressed tensors (in model order), by index into `model.tensors`.
pub fn apply(model: &Model, plans: &[TensorPlan]) -> Result<Vec<(usize, AppliedTensor)>> {
    apply_cached(model, plans, None, None)
}

/// What a tensor's result depends on: its index, its plan and, for a global
/// magnitude rule, which tensors share the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    index: usize,
    prune: Option<PruneSpec>,
    quant: Option<QuantSpec>,
    group: Vec<usize>,
    /// The statistics a data-aware method's result depends on.
    calibration: Option<(u64, usize, u64, u64)>,
}

/// The rule index of a global magnitude plan (its tensors share one threshold).
pub(crate) fn global_rule(plan: &TensorPlan) -> Option<usize> {
    match &plan.prune {
        Some((
            PruneSpec::Magnitude {
                scope: Scope::Global,
                ..
            },
            rule,
        )) => Some(*rule),
        _ => None,
    }
}

fn cache_key(
    i: usize,
    plans: &[TensorPlan],
    touched: &[usize],
    calibrated: Option<Calibrated>,
) -> CacheKey {
    let plan = &plans[i];
    let group = match global_rule(plan) {
        Some(rule) => touched
            .iter()
            .copied()
            .filter(|&j| matches!(&plans[j].prune, Some((_, r)) if *r == rule))
            .collect(),
        None => Vec::new(),
    };
    CacheKey {
        index: i,
        prune: plan.prune.as_ref().map(|p| p.0.clone()),
        quant: plan.quant.clone(),
        group,
        calibration: plan
            .prune
            .as_ref()
            .and_then(|(p, _)| p.needs())
            .or(plan.quant.as_ref().and_then(QuantSpec::needs))
            .map(|_| ())
            .or(plan
                .quant
                .as_ref()
                .is_some_and(QuantSpec::uses_imatrix)
                .then_some(()))
            .and(calibrated.map(|c| c.key())),
    }
}

fn bad(name: &str, what: String) -> Error {
    Error::InvalidSetting(format!("tensor `{name}`: {what}"))
}

/// The tensors `plans` change: float tensors with a prune or quant spec that does
/// something (integer ids, masks and shapes are never weights to compress).
fn touched_tensors(model: &Model, plans: &[TensorPlan]) -> Result<Vec<usize>> {
    let mut touched = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let changes = matches!(&plan.prune, Some((p, _)) if *p != PruneSpec::None)
            || matches!(&plan.quant, Some(q) if *q != QuantSpec::None);
        if !changes {
            continue;
        }
        let info = &model.tensors[i];
        if !info.dtype.is_float() {
            continue; // integer ids, masks, shapes: never weights to compress
        }
        if !info.dtype.can_decode() {
            return Err(bad(
                &info.name,
                format!("{} values cannot be compressed", info.dtype),
            ));
        }
        touched.push(i);
    }
    Ok(touched)
}

/// One touched tensor on its way through [`apply_cached`].
struct Work {
    /// Index into the model's tensors.
    index: usize,
    key: CacheKey,
    /// The result, when cached or once computed.
    done: Option<AppliedTensor>,
    /// The original values, read when the tensor is computed or its global group
    /// needs it.
    original: Option<Vec<f32>>,
    /// What pruning decided.
    pruned: Pruned,
}

/// What pruning decided for one tensor.
#[derive(Default)]
struct Pruned {
    mask: Option<Mask>,
    /// The physically smaller shape structured pruning allows.
    shape_after: Option<Vec<u64>>,
    /// Why an N:M rule left the tensor dense.
    skipped: Option<String>,
    /// Weights a method updated besides masking them (SparseGPT).
    updated: Option<Vec<f32>>,
}

/// Prune `values` (of tensor `info`) as `spec` says; a global magnitude spec is
/// decided for the whole group elsewhere and gives no mask here.
fn prune_one(
    values: &[f32],
    info: &crate::model::TensorInfo,
    spec: &PruneSpec,
    calibrated: Option<Calibrated>,
) -> Result<Pruned> {
    let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
    let err = |e: prune::PruneError| bad(&info.name, e.to_string());
    let mut pruned = Pruned::default();
    pruned.mask = match spec {
        PruneSpec::Magnitude {
            scope: Scope::Global,
            ..
        }
        | PruneSpec::None => None,
        PruneSpec::Magnitude { sparsity, .. } => {
            Some(prune::magnitude(values, sparsity.get()).map_err(err)?)
        }
        PruneSpec::Random { sparsity, seed, .. } => {
            Some(prune::random(values.len(), sparsity.get(), *seed).map_err(err)?)
        }
        PruneSpec::Nm { n, m } => {
            // Groups of m consecutive weights within each output channel's row (a
            // linear layer's input features, a conv filter's C×kh×kw); rows that are
            // not whole groups stay dense, as NVIDIA's ASP does.
            let row = values.len() / shape.first().copied().unwrap_or(1).max(1);
            if *m > 0 && row.is_multiple_of(*m) {
                Some(prune::n_m(values, row, *n, *m).map_err(err)?)
            } else {
                pruned.skipped = Some(format!(
                    "{n}:{m} skipped (rows of {row} are not whole groups of {m})"
                ));
                None
            }
        }
        PruneSpec::Structured {
            sparsity,
            axis,
            norm,
        } => {
            let norm = if *norm == NormName::L1 {
                Norm::L1
            } else {
                Norm::L2
            };
            let s = prune::structured(values, &shape, *axis, sparsity.get(), norm).map_err(err)?;
            pruned.shape_after = Some(s.shape.iter().map(|&d| d as u64).collect());
            Some(s.mask)
        }
        PruneSpec::Wanda { .. } | PruneSpec::SparseGpt { .. } => {
            return prune_with_data(values, info, spec, calibrated);
        }
    };
    Ok(pruned)
}

/// Wanda's or SparseGPT's mask (and SparseGPT's updated weights) for one tensor,
/// from the calibration statistics of the layer it is the weight of.
fn prune_with_data(
    values: &[f32],
    info: &crate::model::TensorInfo,
    spec: &PruneSpec,
    calibrated: Option<Calibrated>,
) -> Result<Pruned> {
    let method = match spec {
        PruneSpec::SparseGpt { .. } => "SparseGPT",
        _ => "Wanda",
    };
    let pattern = match spec.pattern() {
        Some(Ok(p)) => p,
        Some(Err(problem)) => return Err(bad(&info.name, problem)),
        None => unreachable!("only data-aware specs come here"),
    };
    let (calibrated, layer) = layer_statistics(info, calibrated, method)?;
    let n = values.len();
    let (outputs, columns) = match layer.layout {
        WeightLayout::OutIn => {
            let rows = info.shape.first().copied().unwrap_or(1).max(1) as usize;
            (rows, n / rows)
        }
        WeightLayout::InOut => {
            let cols = info.shape.last().copied().unwrap_or(1).max(1) as usize;
            (cols, n / cols)
        }
    };
    if columns != layer.columns || outputs * columns != n {
        return Err(Error::Internal(format!(
            "tensor `{}`: {columns} inputs per output, its layer's statistics have {}",
            info.name, layer.columns
        )));
    }
    // The methods work on outputs × inputs.
    let out_in: std::borrow::Cow<[f32]> = match layer.layout {
        WeightLayout::OutIn => values.into(),
        WeightLayout::InOut => transpose(values, columns, outputs).into(),
    };
    if let Pattern::NOfM { n, m } = pattern
        && !columns.is_multiple_of(m)
    {
        return Ok(Pruned {
            skipped: Some(format!(
                "{n}:{m} skipped (rows of {columns} are not whole groups of {m})"
            )),
            ..Pruned::default()
        });
    }
    let fail = |e: String| bad(&info.name, format!("{method}: {e}"));
    let (updated, kept) = match spec {
        PruneSpec::SparseGpt { .. } => {
            let (w, kept) =
                super::sparsegpt::prune(&out_in, outputs, layer, pattern, calibrated.dampening)
                    .map_err(|e| fail(e.to_string()))?;
            (Some(w), kept)
        }
        _ => (
            None,
            super::wanda::keep(&out_in, outputs, layer, pattern)
                .map_err(|e| fail(e.to_string()))?,
        ),
    };
    let back = |v: Vec<bool>| match layer.layout {
        WeightLayout::OutIn => v,
        WeightLayout::InOut => transpose(&v, outputs, columns),
    };
    Ok(Pruned {
        mask: Some(Mask::from_kept(&back(kept))),
        updated: updated.map(|w| match layer.layout {
            WeightLayout::OutIn => w,
            WeightLayout::InOut => transpose(&w, outputs, columns),
        }),
        ..Pruned::default()
    })
}

/// The calibration settings and the statistics of the layer `info` is the weight
/// of, which `method` learns from, or why there are none.
fn layer_statistics<'a>(
    info: &crate::model::TensorInfo,
    calibrated: Option<Calibrated<'a>>,
    method: &str,
) -> Result<(Calibrated<'a>, &'a super::calibration::LayerStatistics)> {
    let Some(calibrated) = calibrated else {
        return Err(bad(
            &info.name,
            format!(
                "{method} learns from calibration data: attach a data set the model runs \
                 on (`--data` on the command line)"
            ),
        ));
    };
    let Some(layer) = calibrated.stats.and_then(|s| s.layer(&info.name)) else {
        return Err(bad(
            &info.name,
            format!(
                "{method} needs the inputs of the layer a weight belongs to, and this tensor \
                 is not the weight of a convolution, Gemm or MatMul the data runs through \
                 (of a llama GGUF: a block's attention or feed-forward projection)"
            ),
        ));
    };
    Ok((calibrated, layer))
}

/// `rows × cols` row-major, transposed.
fn transpose<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| v[r * cols + c]));
    }
    out
}

/// Why `model` cannot take AWQ: only a llama GGUF's blocks have the norms and
/// projections its scales fold into (see `eval::llama_inputs`).
pub fn awq_unsupported(model: &Model) -> Error {
    Error::InvalidSetting(format!(
        "{}: AWQ folds its per-input scales into the norm or projection before each \
         weight, which slimscope does for the blocks of llama-family GGUFs; for this model \
         use method = \"gptq\"",
        model.path.display()
    ))
}

/// [`apply`] with a cache of finished tensors.
pub fn apply_cached(
    model: &Model,
    plans: &[TensorPlan],
    cache: Option<&TensorCache>,
    calibrated: Option<Calibrated>,
) -> Result<Vec<(usize, AppliedTensor)>> {
    apply_to(model, plans, &HashMap::new(), cache, calibrated)
}

/// [`apply`] with some tensors' values replaced before compression (`sources`, by
/// tensor index: weights an equivalent rescaling changed); those tensors are
/// compressed as their plans say, or kept in their stored type when they have none.
pub fn apply_to_values(
    model: &Model,
    plans: &[TensorPlan],
    sources: &HashMap<usize, Vec<f32>>,
    calibrated: Option<Calibrated>,
) -> Result<Vec<(usize, AppliedTensor)>> {
    apply_to(model, plans, sources, None, calibrated)
}

/// Tensor `info`'s output rows, values per output row (integer grids work per row)
/// and values per innermost dimension (ggml blocks lie along it), each at least 1.
fn extent(info: &crate::model::TensorInfo) -> (u64, u64, u64) {
    let rows = info.shape.first().copied().unwrap_or(1).max(1);
    let last_dim = info.shape.last().copied().unwrap_or(1).max(1);
    (rows, (info.numel / rows).max(1), last_dim)
}

/// Tensor `info`'s `values` fake-quantized as `spec` says, rounded to nearest.
pub fn fake_quantize(
    values: &[f32],
    spec: &QuantSpec,
    info: &crate::model::TensorInfo,
) -> Result<Vec<f32>> {
    let (_, row_len, last_dim) = extent(info);
    let spec = spec.rounded();
    let q = quantize(
        values,
        Some(&spec),
        info.dtype,
        (row_len, last_dim),
        &info.name,
    )?;
    Ok(q.values)
}

fn apply_to(
    model: &Model,
    plans: &[TensorPlan],
    sources: &HashMap<usize, Vec<f32>>,
    cache: Option<&TensorCache>,
    calibrated: Option<Calibrated>,
) -> Result<Vec<(usize, AppliedTensor)>> {
    let mut touched = touched_tensors(model, plans)?;
    touched.extend(sources.keys());
    touched.sort_unstable();
    touched.dedup();
    let mut work: Vec<Work> = touched
        .iter()
        .map(|&i| {
            let key = cache_key(i, plans, &touched, calibrated);
            Work {
                index: i,
                done: cache.and_then(|c| c.get(&key)),
                key,
                original: None,
                pruned: Pruned::default(),
            }
        })
        .collect();
    // A global threshold needs every member of its group, cached or not.
    let uncached_groups: std::collections::BTreeSet<usize> = work
        .iter()
        .filter(|w| w.done.is_none())
        .filter_map(|w| global_rule(&plans[w.index]))
        .collect();
    for w in &mut work {
        let in_group = global_rule(&plans[w.index]).is_some_and(|r| uncached_groups.contains(&r));
        if let Some(values) = sources.get(&w.index) {
            w.original = Some(values.clone());
        } else if w.done.is_none() || in_group {
            w.original = Some(model.tensor_f32(w.index)?);
        }
    }
    for w in &mut work {
        if let (Some(values), Some((spec, _))) = (&w.original, &plans[w.index].prune) {
            w.pruned = prune_one(values, &model.tensors[w.index], spec, calibrated)?;
        }
    }
    prune_global_groups(&mut work, plans)?;
    for w in &mut work {
        if w.done.is_some() {
            continue; // cached; only read for its group's threshold
        }
        let original = w.original.take().unwrap_or_default();
        let pruned = std::mem::take(&mut w.pruned);
        let tensor = compress_one(
            model,
            w.index,
            &plans[w.index],
            original,
            pruned,
            calibrated,
        )?;
        if let Some(c) = cache {
            c.insert(w.key.clone(), &tensor);
        }
        w.done = Some(tensor);
    }
    Ok(work
        .into_iter()
        .map(|w| {
            let t = w
                .done
                .unwrap_or_else(|| unreachable!("every tensor computed or cached"));
            (w.index, t)
        })
        .collect())
}

/// Masks for global magnitude rules: each rule's tensors are pruned together, with
/// one threshold.
fn prune_global_groups(work: &mut [Work], plans: &[TensorPlan]) -> Result<()> {
    let mut rules: Vec<(usize, f64)> = Vec::new();
    for w in work.iter() {
        if let (Some(rule), Some((PruneSpec::Magnitude { sparsity, .. }, _))) =
            (global_rule(&plans[w.index]), &plans[w.index].prune)
            && w.original.is_some()
            && !rules.iter().any(|(r, _)| *r == rule)
        {
            rules.push((rule, sparsity.get()));
        }
    }
    for (rule, sparsity) in rules {
        let members: Vec<usize> = (0..work.len())
            .filter(|&k| {
                global_rule(&plans[work[k].index]) == Some(rule) && work[k].original.is_some()
            })
            .collect();
        let slices: Vec<&[f32]> = members
            .iter()
            .filter_map(|&k| work[k].original.as_deref())
            .collect();
        let masks = prune::magnitude_global(&slices, sparsity)?;
        for (&k, mask) in members.iter().zip(masks) {
            work[k].pruned.mask = Some(mask);
        }
    }
    Ok(())
}

/// Tensor `i` pruned as `pruned` says, then quantized, sized and described.
fn compress_one(
    model: &Model,
    i: usize,
    plan: &TensorPlan,
    original: Vec<f32>,
    pruned: Pruned,
    calibrated: Option<Calibrated>,
) -> Result<AppliedTensor> {
    let info = &model.tensors[i];
    let Pruned {
        mask,
        shape_after,
        skipped,
        updated,
    } = pruned;
    let (rows, row_len, last_dim) = extent(info);
    let mut values = updated.unwrap_or_else(|| original.clone());
    if let Some(m) = &mask {
        m.apply(&mut values);
    }
    let Quantized {
        mut values,
        storage,
        words: quant_words,
        stored,
        packed,
        grid,
    } = match &plan.quant {
        Some(q) if q.is_gptq() => gptq_grid(&values, info, q, calibrated, mask.as_ref())?,
        Some(q) if q.is_awq() => {
            return Err(bad(
                &info.name,
                "AWQ learns its scales from calibration data in the block-by-block pass of a \
                 llama-family GGUF (`--calibration TEXT`); other models cannot take it: use \
                 method = \"gptq\""
                    .into(),
            ));
        }
        Some(q) if q.uses_imatrix() => {
            importance_grid(&values, info, q, calibrated.and_then(|c| c.importance))?
        }
        q => quantize(
            &values,
            q.as_ref(),
            info.dtype,
            (row_len, last_dim),
            &info.name,
        )?,
    };
    if let (Some(m), None) = (&mask, &packed) {
        m.apply(&mut values);
    }
    let nnz = values.iter().filter(|&&x| x != 0.0).count() as u64;
    let layout = Layout { rows, row_len, nnz };
    let mut candidates = vec![storage];
    if let (Some(_), Storage::Dense { bits }) = (&mask, storage) {
        candidates.push(Storage::SparseBitmask { value_bits: bits });
        candidates.push(Storage::Csr { value_bits: bits });
    }
    let (mut storage, mut bytes_after) = size::smallest(&candidates, layout)
        .ok_or_else(|| bad(&info.name, "no storage format holds it".into()))?;
    // Structured pruning removes whole rows (or columns): the rest is a smaller dense
    // matrix in the quantized storage, as a shrunk export writes it (the next layer's
    // inputs, which a shrunk network loses too, are not counted here).
    if let Some(after) = shape_after.as_deref().filter(|s| !s.is_empty()) {
        let kept_rows = after[0].max(1);
        let kept: u64 = after.iter().product();
        let kept_layout = Layout {
            rows: kept_rows,
            row_len: kept / kept_rows,
            nnz: nnz.min(kept),
        };
        if kept < info.numel
            && let Ok(bytes) = size::size_bytes(candidates[0], kept_layout)
            && bytes < bytes_after
        {
            (storage, bytes_after) = (candidates[0], bytes);
        }
    }
    let prune_words = skipped
        .or_else(|| plan.prune.as_ref().map(|(p, _)| describe_prune(p)))
        .filter(|w| !w.is_empty());
    let scheme = [prune_words, quant_words]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + ");
    let nm = match &plan.prune {
        Some((PruneSpec::Nm { n, m }, _)) if mask.is_some() => Some((*n, *m)),
        // Data-aware N:M masks are whole groups in every row (or an error).
        Some((p, _)) if mask.is_some() => match p.pattern() {
            Some(Ok(super::prune::Pattern::NOfM { n, m })) => Some((n, m)),
            _ => None,
        },
        _ => None,
    };
    let data_aware = plan.prune.as_ref().and_then(|(p, _)| p.needs()).is_some()
        || plan.quant.as_ref().and_then(QuantSpec::needs).is_some();
    Ok(AppliedTensor {
        name: info.name.clone(),
        shape: info.shape.clone(),
        sparsity: 1.0 - nnz as f64 / values.len().max(1) as f64,
        pruned: mask.is_some(),
        scheme,
        bytes_before: info.size_bytes,
        bytes_after,
        storage,
        fidelity: fidelity(&original, &values),
        flops: size::weight_flops(&info.shape, shape_after.as_deref(), nm),
        shape_after,
        values,
        stored,
        packed,
        grid,
        calibration: data_aware.then_some(calibrated).flatten().and_then(|c| {
            c.stats.map(|s| Provenance {
                samples: s.samples,
                data_sha256: s.data_sha256.clone(),
                dampening: c.dampening,
            })
        }),
    })
}

/// Finished tensors by (tensor, prune spec, quant spec, global group), bounded in
/// bytes: when full it starts over (sweeps revisit recent settings, not old ones).
pub struct TensorCache {
    map: std::sync::Mutex<(
        std::collections::HashMap<CacheKey, std::sync::Arc<AppliedTensor>>,
        usize,
    )>,
    budget: usize,
}

impl TensorCache {
    /// A cache holding up to `budget` bytes of compressed values.
    pub fn new(budget: usize) -> Self {
        TensorCache {
            map: Default::default(),
            budget,
        }
    }

    fn get(&self, key: &CacheKey) -> Option<AppliedTensor> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.0.get(key).map(|t| (**t).clone())
    }

    fn insert(&self, key: CacheKey, t: &AppliedTensor) {
        let bytes = t.values.len() * 4 + t.packed.as_ref().map_or(0, Vec::len);
        if bytes > self.budget {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.1 + bytes > self.budget {
            *map = Default::default();
        }
        map.1 += bytes;
        map.0.insert(key, std::sync::Arc::new(t.clone()));
    }

    /// Tensors held now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// ggml's fallback when rows are not whole 256-value super-blocks (llama.cpp's
/// `llama_tensor_get_type`): Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0. For Q2_K and
/// Q3_K llama.cpp falls back to IQ4_NL, which slimscope does not write; Q4_0 is the
/// nearest type it does.
pub fn k_quant_fallback(t: GgmlQuant) -> Option<GgmlQuant> {
    Some(match t {
        GgmlQuant::Q2_K | GgmlQuant::Q3_K => GgmlQuant::Q4_0,
        GgmlQuant::Q4_K => GgmlQuant::Q5_0,
        GgmlQuant::Q5_K => GgmlQuant::Q5_1,
        GgmlQuant::Q6_K => GgmlQuant::Q8_0,
        _ => return None,
    })
}

/// Fake-quantize per the spec. `rows` is (values per output row, values per
/// innermost dimension): integer grids work per output row, ggml blocks along the
/// innermost dimension.
fn quantize(
    values: &[f32],
    spec: Option<&QuantSpec>,
    dtype: DType,
    (row_len, last_dim): (u64, u64),
    name: &str,
) -> Result<Quantized> {
    match spec {
        None | Some(QuantSpec::None) => keep_stored(values, dtype, last_dim, name),
        Some(
            q @ QuantSpec::Int {
                bits,
                symmetric,
                clip,
                ..
            },
        ) => {
            let scheme = IntScheme {
                bits: bits.get(),
                symmetric: *symmetric,
                granularity: q.granularity().unwrap_or(quant::Granularity::PerTensor),
                clip: *clip,
            };
            int_grid(values, &scheme, row_len, name)
        }
        Some(q @ QuantSpec::Gguf { block_type, .. }) => {
            let t = q
                .gguf_type()
                .ok_or_else(|| bad(name, format!("unknown GGUF type {block_type}")))?;
            gguf_grid(values, t, last_dim, name)
        }
        Some(QuantSpec::F32) => Ok(Quantized::plain(
            values.to_vec(),
            Storage::Dense { bits: 32 },
            Some("f32".into()),
            DType::F32,
        )),
        Some(other) => {
            let format = match other {
                QuantSpec::F16 => FloatFormat::F16,
                QuantSpec::Bf16 => FloatFormat::BF16,
                QuantSpec::Fp8E4m3 => FloatFormat::F8E4M3,
                _ => FloatFormat::F8E5M2,
            };
            let stored = match format {
                FloatFormat::F16 => DType::F16,
                FloatFormat::BF16 => DType::BF16,
                _ => DType::F32,
            };
            Ok(Quantized::plain(
                fake_quant_float(values, format),
                Storage::Dense {
                    bits: format.bits(),
                },
                Some(format!("{format:?}").to_lowercase()),
                stored,
            ))
        }
    }
}

impl Quantized {
    /// Values held element by element (no ggml blocks).
    fn plain(values: Vec<f32>, storage: Storage, words: Option<String>, stored: DType) -> Self {
        Quantized {
            values,
            storage,
            words,
            stored,
            packed: None,
            grid: None,
        }
    }
}

/// `values` in ggml blocks of the spec's type, each row weighted by the importance
/// of its columns as `llama-quantize --imatrix` does. A tensor the matrix has no
/// entry for is quantized as without one (llama.cpp does the same), and says so.
fn importance_grid(
    values: &[f32],
    info: &crate::model::TensorInfo,
    q: &QuantSpec,
    importance: Option<&Imatrix>,
) -> Result<Quantized> {
    let name = &info.name;
    let Some(t) = q.gguf_type() else {
        return Err(bad(name, "not a GGUF type".into()));
    };
    let Some(importance) = importance else {
        return Err(bad(
            name,
            "method = \"imatrix\" weighs blocks by an importance matrix: give one \
             (`--imatrix FILE`, llama.cpp's GGUF or legacy .dat)"
                .into(),
        ));
    };
    let last_dim = info.shape.last().copied().unwrap_or(1).max(1) as usize;
    let Some(weights) = importance.get(name) else {
        let mut plain = gguf_grid(values, t, last_dim as u64, name)?;
        plain.words = plain
            .words
            .map(|w| format!("{w} (no importance entry in {})", importance.path.display()));
        return Ok(plain);
    };
    // llama.cpp's fallback type where rows are not whole blocks (weighted too), or
    // f16 where none fits.
    let (t, words) = if last_dim.is_multiple_of(t.block_len() as usize) {
        (t, format!("{} (imatrix)", t.name()))
    } else {
        match k_quant_fallback(t).filter(|f| last_dim.is_multiple_of(f.block_len() as usize)) {
            Some(f) => (
                f,
                format!(
                    "{} (imatrix; {} needs rows of {})",
                    f.name(),
                    t.name(),
                    t.block_len()
                ),
            ),
            None => return gguf_grid(values, t, last_dim as u64, name),
        }
    };
    // One importance per column of every row; a 3-D expert tensor has one row of
    // importance per matrix.
    let rows_per_matrix = if weights.len() == last_dim {
        values.len() / last_dim
    } else if info.shape.len() == 3 && weights.len() == last_dim * info.shape[0] as usize {
        info.shape[1] as usize
    } else {
        return Err(bad(
            name,
            format!(
                "its importance entry in {} has {} values for rows of {last_dim}",
                importance.path.display(),
                weights.len()
            ),
        ));
    };
    let row_bytes = last_dim / t.block_len() as usize * t.block_bytes() as usize;
    let mut bytes = vec![0u8; values.len() / last_dim * row_bytes];
    bytes
        .par_chunks_mut(row_bytes)
        .zip(values.par_chunks(last_dim))
        .enumerate()
        .for_each(|(r, (out, row))| {
            let m = r / rows_per_matrix.max(1);
            let w = &weights[m * last_dim..(m + 1) * last_dim];
            super::importance::quantize_row(t, row, w, out);
        });
    Ok(Quantized::blocks(bytes, t, words, values.len()))
}

/// `values` in ggml blocks of type `t`, and what the blocks decode to.
fn blocks(values: &[f32], t: GgmlQuant, words: String, name: &str) -> Result<Quantized> {
    let bytes = gguf_blocks::quantize(t, values).map_err(|e| bad(name, e.to_string()))?;
    Ok(Quantized::blocks(bytes, t, words, values.len()))
}

impl Quantized {
    /// ggml blocks of type `t` (`len` values) and what they decode to.
    fn blocks(bytes: Vec<u8>, t: GgmlQuant, words: String, len: usize) -> Self {
        let mut y = vec![0f32; len];
        decode(DType::Quant(t), &bytes, &mut y);
        Quantized {
            values: y,
            storage: Storage::Gguf { quant: t },
            words: Some(words),
            stored: DType::Quant(t),
            packed: Some(bytes),
            grid: None,
        }
    }
}

/// No quant rule: the stored type is kept (a block-quantized source's blocks, a
/// half-precision source's grid).
fn keep_stored(values: &[f32], dtype: DType, last_dim: u64, name: &str) -> Result<Quantized> {
    Ok(match dtype {
        DType::Quant(t) if gguf_blocks::supports(t) && last_dim.is_multiple_of(t.block_len()) => {
            blocks(values, t, format!("{} (kept)", t.name()), name)?
        }
        DType::F16 | DType::BF16 => Quantized::plain(
            fake_quant_float(
                values,
                if dtype == DType::F16 {
                    FloatFormat::F16
                } else {
                    FloatFormat::BF16
                },
            ),
            Storage::Dense { bits: 16 },
            None,
            dtype,
        ),
        _ => Quantized::plain(
            values.to_vec(),
            Storage::Dense { bits: 32 },
            None,
            DType::F32,
        ),
    })
}

/// An integer grid with scales per tensor, output row or group.
fn int_grid(values: &[f32], scheme: &IntScheme, row_len: u64, name: &str) -> Result<Quantized> {
    let IntScheme {
        bits,
        symmetric,
        granularity,
        clip,
    } = *scheme;
    let mut y = vec![0f32; values.len()];
    let grid = quant::fake_quant_int_grid(values, row_len as usize, scheme, &mut y)
        .map_err(|e| bad(name, e.to_string()))?;
    let storage = Storage::Int {
        bits: u32::from(bits),
        granularity,
        asymmetric: !symmetric,
        scale_bits: 16,
    };
    let scope = match granularity {
        quant::Granularity::PerTensor => "per-tensor".to_owned(),
        quant::Granularity::PerChannel => "per-channel".to_owned(),
        quant::Granularity::Group(g) => format!("group {g}"),
    };
    let words = format!(
        "int{bits} {}{scope}{}",
        if symmetric { "" } else { "asym " },
        if clip == quant::Clip::Mse {
            ", MSE clip"
        } else {
            ""
        }
    );
    Ok(Quantized {
        grid: Some(grid),
        ..Quantized::plain(y, storage, Some(words), DType::F32)
    })
}

/// GPTQ's codes for one tensor (see [`super::gptq`]) on the grid `spec` names, from
/// the calibration statistics of the layer it is the weight of; pruned weights
/// (`mask`) stay zero.
fn gptq_grid(
    values: &[f32],
    info: &crate::model::TensorInfo,
    spec: &QuantSpec,
    calibrated: Option<Calibrated>,
    mask: Option<&Mask>,
) -> Result<Quantized> {
    if let Some(t) = spec.gguf_type() {
        return gptq_blocks(values, info, t, calibrated, mask);
    }
    let QuantSpec::Int {
        bits,
        symmetric,
        clip,
        act_order,
        ..
    } = spec
    else {
        unreachable!("only integer and GGUF specs take GPTQ");
    };
    let scheme = IntScheme {
        bits: bits.get(),
        symmetric: *symmetric,
        granularity: spec.granularity().unwrap_or(quant::Granularity::PerTensor),
        clip: *clip,
    };
    let outputs = info.shape.first().copied().unwrap_or(1).max(1) as usize;
    if info.shape.len() < 2 {
        // Biases and norms feed no layer input: rounded to nearest, and said so.
        let mut q = int_grid(
            values,
            &scheme,
            outputs_row_len(values, outputs),
            &info.name,
        )?;
        q.words = q
            .words
            .map(|w| format!("{w} (nearest: GPTQ is for layer weights)"));
        return Ok(q);
    }
    let (calibrated, layer) = layer_statistics(info, calibrated, "GPTQ")?;
    // GPTQ works on outputs × inputs; a weight stored [in, out] is transposed.
    let inputs_first = layer.layout == WeightLayout::InOut;
    let stored_rows = outputs;
    let outputs = if inputs_first {
        info.shape.last().copied().unwrap_or(1).max(1) as usize
    } else {
        stored_rows
    };
    if outputs * layer.columns != values.len() {
        return Err(Error::Internal(format!(
            "tensor `{}`: {} values, its layer's statistics have {} inputs per output",
            info.name,
            values.len(),
            layer.columns
        )));
    }
    let kept: Option<Vec<bool>> = mask.map(|m| (0..m.len()).map(|i| m.keeps(i)).collect());
    let (w, kept) = if inputs_first {
        (
            std::borrow::Cow::Owned(transpose(values, layer.columns, outputs)),
            kept.map(|k| transpose(&k, layer.columns, outputs)),
        )
    } else {
        (std::borrow::Cow::Borrowed(values), kept)
    };
    let settings = super::gptq::GptqSettings {
        act_order: *act_order,
        dampening: calibrated.dampening,
    };
    let (y, grid) = super::gptq::quantize(
        &w,
        outputs,
        layer,
        &scheme,
        settings,
        kept.as_deref(),
        inputs_first,
    )
    .map_err(|e| bad(&info.name, format!("GPTQ: {e}")))?;
    let y = if inputs_first {
        transpose(&y, outputs, layer.columns)
    } else {
        y
    };
    // The storage and words of the same grid rounded to nearest, GPTQ's values in.
    let mut quantized = int_grid(
        values,
        &scheme,
        outputs_row_len(values, stored_rows),
        &info.name,
    )?;
    quantized.values = y;
    quantized.grid = Some(grid);
    quantized.words = quantized
        .words
        .map(|w| format!("{w} GPTQ{}", if *act_order { " (act order)" } else { "" }));
    Ok(quantized)
}

/// GPTQ onto ggml blocks of type `t` along each row (see [`super::gptq::quantize_blocks`]):
/// the blocks packed from GPTQ's codes, and the values they decode to.
fn gptq_blocks(
    values: &[f32],
    info: &crate::model::TensorInfo,
    t: GgmlQuant,
    calibrated: Option<Calibrated>,
    mask: Option<&Mask>,
) -> Result<Quantized> {
    let (calibrated, layer) = layer_statistics(info, calibrated, "GPTQ")?;
    let outputs = info.shape.first().copied().unwrap_or(1).max(1) as usize;
    if info.shape.len() < 2 || layer.layout == WeightLayout::InOut {
        return Err(bad(
            &info.name,
            "GPTQ onto ggml blocks needs a weight stored [outputs, inputs], its blocks \
             along the inputs, as GGUF stores them"
                .into(),
        ));
    }
    let kept: Option<Vec<bool>> = mask.map(|m| (0..m.len()).map(|i| m.keeps(i)).collect());
    let (mut y, fits) = super::gptq::quantize_blocks(
        values,
        outputs,
        layer,
        t,
        calibrated.dampening,
        kept.as_deref(),
    )
    .map_err(|e| bad(&info.name, format!("GPTQ: {e}")))?;
    let per = t.block_bytes() as usize;
    let mut packed = vec![0u8; y.len() / gguf_blocks::BLOCK * per];
    // The values are what the packed blocks decode to (a pruned zero that a block's
    // minimum cannot hold included).
    for ((block, &(d, min)), out) in y
        .chunks_exact_mut(gguf_blocks::BLOCK)
        .zip(&fits)
        .zip(packed.chunks_exact_mut(per))
    {
        let fit = gguf_blocks::BlockFit::refit(t, d, min);
        let codes: [u8; gguf_blocks::BLOCK] = std::array::from_fn(|j| fit.code_of(block[j]));
        fit.pack(&codes, out);
        for (v, &c) in block.iter_mut().zip(&codes) {
            *v = fit.value(c);
        }
    }
    // The storage and words of the same type rounded to nearest, GPTQ's blocks in.
    let mut quantized = blocks(values, t, format!("{} GPTQ", t.name()), &info.name)?;
    quantized.values = y;
    quantized.packed = Some(packed);
    Ok(quantized)
}

fn outputs_row_len(values: &[f32], outputs: usize) -> u64 {
    (values.len() / outputs.max(1)) as u64
}

/// ggml blocks of type `t`, or llama.cpp's fallbacks when rows are not whole blocks.
fn gguf_grid(values: &[f32], t: GgmlQuant, last_dim: u64, name: &str) -> Result<Quantized> {
    if last_dim.is_multiple_of(t.block_len()) {
        return blocks(values, t, t.name().to_owned(), name);
    }
    if let Some(f) = k_quant_fallback(t).filter(|f| last_dim.is_multiple_of(f.block_len())) {
        let words = format!(
            "{} ({} needs rows of {})",
            f.name(),
            t.name(),
            t.block_len()
        );
        return blocks(values, f, words, name);
    }
    // llama.cpp's last resort for rows no block type fits: F16.
    Ok(Quantized::plain(
        fake_quant_float(values, FloatFormat::F16),
        Storage::Dense { bits: 16 },
        Some(format!(
            "f16 ({} needs rows of {}, these have {last_dim})",
            t.name(),
            t.block_len()
        )),
        DType::F16,
    ))
}

fn describe_prune(p: &PruneSpec) -> String {
    match p {
        PruneSpec::None => String::new(),
        PruneSpec::Magnitude {
            sparsity, scope, ..
        } => format!(
            "magnitude {:.0}%{}",
            100.0 * sparsity.get(),
            if *scope == Scope::Global {
                " (global)"
            } else {
                ""
            }
        ),
        PruneSpec::Random { sparsity, seed, .. } => {
            format!("random {:.0}% (seed {seed})", 100.0 * sparsity.get())
        }
        PruneSpec::Nm { n, m } => format!("{n}:{m}"),
        PruneSpec::Structured { sparsity, axis, .. } => {
            format!("structured {:.0}% (axis {axis})", 100.0 * sparsity.get())
        }
        PruneSpec::Wanda { .. } | PruneSpec::SparseGpt { .. } => {
            let method = if matches!(p, PruneSpec::Wanda { .. }) {
                "Wanda"
            } else {
                "SparseGPT"
            };
            match p.pattern() {
                Some(Ok(Pattern::Unstructured(s))) => format!("{method} {:.0}%", 100.0 * s),
                Some(Ok(Pattern::NOfM { n, m })) => format!("{method} {n}:{m}"),
                _ => method.to_owned(),
            }
        }
    }
}
