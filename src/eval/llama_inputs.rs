//! The inputs of every matrix multiplication of a llama-family GGUF on token chunks,
//! from an f32 llama forward pass of our own over the GGUF's decoded weights
//! (RMSNorm, RoPE on adjacent pairs, grouped-query causal attention, SwiGLU): what
//! llama.cpp's importance matrix sums and what Wanda, SparseGPT and GPTQ learn from.
//!
//! The pass runs layer by layer over all chunks at once, so memory is one layer's
//! weights plus the chunks' activations, whatever the model's depth. Each chunk is
//! scored from its own start (position 0), as `llama-imatrix -c` scores its chunks.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::causal_lm;
use super::data::Dataset;
use crate::compress::apply::{
    AppliedTensor, Calibrated, apply_cached, apply_to_values, fake_quantize, global_rule,
};
use crate::compress::awq;
use crate::compress::calibration::{LayerStatistics, Need, Provenance, Statistics, WeightLayout};
use crate::compress::quant::fidelity;
use crate::compress::recipe::{PruneSpec, QuantSpec, Recipe, TensorPlan};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::imatrix::Imatrix;

/// The weight names of one llama block whose inputs are recorded, in the order the
/// forward pass meets them.
pub const BLOCK_WEIGHTS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// The norms of one llama block, after [`BLOCK_WEIGHTS`] in what
/// [`Hooks::block_done`] sees: the attention's and the feed-forward's input scales.
pub const BLOCK_NORMS: [&str; 2] = ["attn_norm", "ffn_norm"];

fn engine(model: &Model, e: candle_core::Error) -> Error {
    Error::Engine {
        context: format!("{}: the layer-input forward pass", model.path.display()),
        cause: e.to_string(),
    }
}

/// A hyper-parameter from the GGUF's `llama.*` metadata.
fn hyper(model: &Model, key: &str) -> Result<f64> {
    model
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_f64())
        .ok_or_else(|| Error::Corrupt {
            path: model.path.clone(),
            format: "GGUF",
            problem: format!("no numeric `{key}` in the metadata"),
        })
}

/// The index of tensor `name`, which a llama block needs.
fn block_tensor(model: &Model, name: &str) -> Result<usize> {
    model.tensor_index(name).ok_or_else(|| Error::Corrupt {
        path: model.path.clone(),
        format: "GGUF",
        problem: format!("no tensor `{name}` (a llama block needs it)"),
    })
}

/// Tensor `name` decoded to f32 as a candle tensor of its shape.
fn weight(model: &Model, name: &str) -> Result<Tensor> {
    let i = block_tensor(model, name)?;
    let shape: Vec<usize> = model.tensors[i].shape.iter().map(|&d| d as usize).collect();
    let values = model.tensor_f32(i)?;
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| engine(model, e))
}

/// What the pass calls back into.
pub trait Hooks {
    /// One matmul input, tokens × columns, and the weights that multiply it (the
    /// query, key and value projections share theirs; so do gate and up).
    fn observe(&mut self, names: &[String], x: &Tensor) -> Result<()>;

    /// Block `layer` (tensors `names`: [`BLOCK_WEIGHTS`] then [`BLOCK_NORMS`]) has
    /// shown every chunk's inputs: new values for some of its tensors (by position in
    /// `names`), with which the block is run again to give the next block its inputs.
    fn block_done(&mut self, layer: usize, names: &[String]) -> Result<Vec<(usize, Vec<f32>)>> {
        let _ = (layer, names);
        Ok(Vec::new())
    }
}

/// The shapes, norm epsilon, RoPE tables and causal mask every layer shares.
struct Geometry {
    chunk: usize,
    d: usize,
    heads: usize,
    kv_heads: usize,
    eps: f32,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

/// One llama block's weights (`w` in [`BLOCK_WEIGHTS`] order) and their names.
struct Layer<'a> {
    names: &'a [String],
    w: &'a [Tensor],
    attn_norm: &'a Tensor,
    ffn_norm: &'a Tensor,
}

impl<'a> Layer<'a> {
    /// The block of `names` and `w`, [`BLOCK_WEIGHTS`] then [`BLOCK_NORMS`].
    fn of(names: &'a [String], w: &'a [Tensor]) -> Self {
        let n = BLOCK_WEIGHTS.len();
        Layer {
            names: &names[..n],
            w: &w[..n],
            attn_norm: &w[n],
            ffn_norm: &w[n + 1],
        }
    }

    /// The block applied to one chunk's hidden states `x` (tokens × width), every
    /// matmul input shown to `hooks`.
    fn forward(
        &self,
        model: &Model,
        x: &Tensor,
        g: &Geometry,
        hooks: &mut dyn Hooks,
    ) -> Result<Tensor> {
        let fail = |e: candle_core::Error| engine(model, e);
        let (w, names) = (self.w, self.names);
        let hd = g.d / g.heads;
        let h = candle_nn::ops::rms_norm(x, self.attn_norm, g.eps).map_err(fail)?;
        hooks.observe(&names[..3], &h)?;
        let heads_of = |t: Tensor, n: usize| {
            t.reshape((g.chunk, n, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)
        };
        let attention = || -> candle_core::Result<Tensor> {
            let q = heads_of(h.matmul(&w[0].t()?)?, g.heads)?;
            let k = heads_of(h.matmul(&w[1].t()?)?, g.kv_heads)?;
            let v = heads_of(h.matmul(&w[2].t()?)?, g.kv_heads)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &g.cos, &g.sin)?.squeeze(0)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &g.cos, &g.sin)?.squeeze(0)?;
            let v = v.squeeze(0)?;
            // Grouped-query attention: each key/value head serves heads/kv_heads.
            let group = g.heads / g.kv_heads;
            let repeat = |t: Tensor| -> candle_core::Result<Tensor> {
                let (n, s, e) = t.dims3()?;
                t.unsqueeze(1)?
                    .expand((n, group, s, e))?
                    .reshape((n * group, s, e))
            };
            let (k, v) = (repeat(k)?, repeat(v)?);
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&g.mask)?;
            let attn = candle_nn::ops::softmax_last_dim(&scores)?;
            attn.matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((g.chunk, g.d))
        };
        let o = attention().map_err(fail)?;
        hooks.observe(&names[3..4], &o)?;
        let x = o
            .matmul(&w[3].t().map_err(fail)?)
            .and_then(|a| x + a)
            .map_err(fail)?;
        let h = candle_nn::ops::rms_norm(&x, self.ffn_norm, g.eps).map_err(fail)?;
        hooks.observe(&names[4..6], &h)?;
        let a = (|| candle_nn::ops::silu(&h.matmul(&w[4].t()?)?)? * h.matmul(&w[5].t()?)?)()
            .map_err(fail)?;
        hooks.observe(&names[6..7], &a)?;
        a.matmul(&w[6].t().map_err(fail)?)
            .and_then(|a| x + a)
            .map_err(fail)
    }
}

/// The shared geometry of `model`'s blocks for chunks of `chunks`' length, and the
/// chunks' token embeddings.
fn embed_chunks(
    model: &Model,
    source: &Path,
    chunks: &[&[u32]],
) -> Result<(Geometry, Vec<Tensor>)> {
    let chunk = chunks.first().map_or(0, |c| c.len());
    let fail = |e: candle_core::Error| engine(model, e);
    let heads = hyper(model, "llama.attention.head_count")? as usize;
    let kv_heads = hyper(model, "llama.attention.head_count_kv")? as usize;
    let eps = hyper(model, "llama.attention.layer_norm_rms_epsilon")? as f32;
    let base = hyper(model, "llama.rope.freq_base").unwrap_or(10_000.0);
    let embed = weight(model, "token_embd.weight")?;
    let d = embed.dims().get(1).copied().unwrap_or(0);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || !d.is_multiple_of(heads) {
        return Err(Error::Corrupt {
            path: model.path.clone(),
            format: "GGUF",
            problem: format!("{heads} heads, {kv_heads} key/value heads and width {d} do not fit"),
        });
    }
    let hd = d / heads;
    let vocab = embed.dims()[0];
    if let Some(&bad) = chunks
        .iter()
        .flat_map(|c| c.iter())
        .find(|&&t| t as usize >= vocab)
    {
        return Err(Error::Data {
            path: source.to_owned(),
            problem: format!("token {bad} is outside the vocabulary of {vocab}"),
        });
    }
    // RoPE tables for positions 0..chunk (adjacent pairs, θ_i = base^(-2i/hd)).
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..chunk {
        for i in 0..hd / 2 {
            let angle = p as f64 * base.powf(-((2 * i) as f64) / hd as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (chunk, hd / 2), &Device::Cpu).map_err(fail)?;
    let sin = Tensor::from_vec(sin, (chunk, hd / 2), &Device::Cpu).map_err(fail)?;
    let mask: Vec<f32> = (0..chunk * chunk)
        .map(|i| {
            if i % chunk > i / chunk {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (chunk, chunk), &Device::Cpu).map_err(fail)?;
    let geometry = Geometry {
        chunk,
        d,
        heads,
        kv_heads,
        eps,
        cos,
        sin,
        mask,
    };
    let xs: Vec<Tensor> = chunks
        .iter()
        .map(|c| {
            let t = Tensor::new(*c, &Device::Cpu)?;
            embed.index_select(&t, 0)
        })
        .collect::<candle_core::Result<_>>()
        .map_err(fail)?;
    drop(embed);
    Ok((geometry, xs))
}

/// Run `model` (a llama GGUF) over `chunks` (token ids, all of one length, read from
/// `source`), showing every `blk.*` matmul input to `hooks`, block by block.
/// `progress(done, total)` counts layers and returns false to cancel.
pub fn run(
    model: &Model,
    source: &Path,
    chunks: &[&[u32]],
    hooks: &mut dyn Hooks,
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<()> {
    if !causal_lm::is_causal_lm(model) {
        return Err(Error::Unsupported {
            path: model.path.clone(),
            what: "the layer inputs are computed for GGUFs of the llama family".into(),
        });
    }
    let chunk = chunks.first().map_or(0, |c| c.len());
    if chunk < 2 || chunks.iter().any(|c| c.len() != chunk) {
        return Err(Error::Data {
            path: source.to_owned(),
            problem: "token chunks of at least 2 tokens, all of one length, are needed".into(),
        });
    }
    let (geometry, mut xs) = embed_chunks(model, source, chunks)?;
    let fail = |e: candle_core::Error| engine(model, e);
    let layers = hyper(model, "llama.block_count")? as usize;
    for layer in 0..layers {
        let names: Vec<String> = BLOCK_WEIGHTS
            .iter()
            .chain(&BLOCK_NORMS)
            .map(|b| format!("blk.{layer}.{b}.weight"))
            .collect();
        let mut w: Vec<Tensor> = names
            .iter()
            .map(|n| weight(model, n))
            .collect::<Result<_>>()?;
        let block = Layer::of(&names, &w);
        let outputs: Vec<Tensor> = xs
            .iter()
            .map(|x| block.forward(model, x, &geometry, hooks))
            .collect::<Result<_>>()?;
        let replaced = hooks.block_done(layer, &names)?;
        if replaced.is_empty() {
            xs = outputs;
        } else {
            drop(outputs);
            for (k, values) in replaced {
                let shape = w[k].dims().to_vec();
                w[k] = Tensor::from_vec(values, shape, &Device::Cpu).map_err(fail)?;
            }
            let block = Layer::of(&names, &w);
            for x in &mut xs {
                *x = block.forward(model, x, &geometry, &mut Silent)?;
            }
        }
        if !progress(layer + 1, layers) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}

/// The weights of `model`'s blocks whose inputs [`run`] shows: what data-aware
/// methods can learn from.
pub fn calibrated_layers(model: &Model) -> Vec<String> {
    model
        .tensors
        .iter()
        .map(|t| &t.name)
        .filter(|n| {
            n.strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(layer, rest)| {
                    layer.parse::<usize>().is_ok()
                        && BLOCK_WEIGHTS
                            .iter()
                            .any(|b| rest.strip_prefix(b) == Some(".weight"))
                })
        })
        .cloned()
        .collect()
}

/// Hooks that observe nothing.
struct Silent;

impl Hooks for Silent {
    fn observe(&mut self, _: &[String], _: &Tensor) -> Result<()> {
        Ok(())
    }
}

/// Layer-input statistics of the weights `wanted`, one collection per shared input.
struct Collect<'a> {
    model: &'a Model,
    need: Need,
    wanted: HashSet<&'a str>,
    /// By the first weight of each shared input: its sums and the wanted weights.
    collected: HashMap<String, (LayerStatistics, Vec<String>)>,
}

impl Hooks for Collect<'_> {
    fn observe(&mut self, names: &[String], x: &Tensor) -> Result<()> {
        let asked: Vec<String> = names
            .iter()
            .filter(|n| self.wanted.contains(n.as_str()))
            .cloned()
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        let fail = |e: candle_core::Error| engine(self.model, e);
        let (rows, columns) = x.dims2().map_err(fail)?;
        let values: Vec<f64> = x
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(fail)?
            .into_iter()
            .map(f64::from)
            .collect();
        let need = self.need;
        let (stats, _) = self.collected.entry(names[0].clone()).or_insert_with(|| {
            (
                LayerStatistics::new(columns, 1, WeightLayout::OutIn, need),
                asked,
            )
        });
        stats.add_rows(0, &values, rows);
        Ok(())
    }
}

impl<'a> Collect<'a> {
    fn new(model: &'a Model, need: Need, tensors: &'a [String]) -> Self {
        Collect {
            model,
            need,
            wanted: tensors.iter().map(String::as_str).collect(),
            collected: HashMap::new(),
        }
    }

    /// What has been collected, by weight name (weights of one input share it).
    fn take(&mut self) -> HashMap<String, Arc<LayerStatistics>> {
        let mut layers = HashMap::new();
        for (_, (stats, names)) in self.collected.drain() {
            let stats = Arc::new(stats);
            for name in names {
                layers.insert(name, stats.clone());
            }
        }
        layers
    }
}

/// The calibration windows of `calibration` as token chunks.
fn chunks_of(calibration: &Dataset) -> (Vec<u32>, usize) {
    let ids = calibration.x.iter().map(|&t| t as u32).collect();
    (ids, calibration.sample_len().max(1))
}

/// What data-aware methods learn from on a llama GGUF, one-shot: the statistics
/// `need` asks for of the inputs of the weights `tensors`, over the token windows of
/// `calibration` (see [`causal_lm::calibration_windows`]), all from the original
/// weights. Weights that share an input share one collection. With [`Need::Gram`]
/// memory holds one `columns²` matrix per distinct input of every block that asks
/// (27 MB a SmolLM2-135M block in float64); [`apply_block_by_block`] holds one
/// block's.
pub fn statistics(
    model: &Model,
    calibration: &Dataset,
    need: Need,
    tensors: &[String],
    progress: impl FnMut(usize, usize) -> bool,
) -> Result<Statistics> {
    let (ids, window) = chunks_of(calibration);
    let chunks: Vec<&[u32]> = ids.chunks_exact(window).collect();
    let mut collect = Collect::new(model, need, tensors);
    run(model, &calibration.source, &chunks, &mut collect, progress)?;
    Ok(Statistics {
        layers: collect.take(),
        samples: chunks.len(),
        data_key: 0,
        data_sha256: String::new(),
    })
}

/// Applying a recipe block by block: each block's statistics are collected with the
/// blocks before it already compressed, then its weights compressed.
struct BlockByBlock<'a> {
    collect: Collect<'a>,
    recipe: &'a Recipe,
    plans: Vec<TensorPlan>,
    importance: Option<&'a Imatrix>,
    /// The calibration's identity, as [`crate::eval::Network::statistics`] gives it.
    data_key: u64,
    data_sha256: String,
    samples: usize,
    applied: Vec<(usize, AppliedTensor)>,
}

impl Hooks for BlockByBlock<'_> {
    fn observe(&mut self, names: &[String], x: &Tensor) -> Result<()> {
        self.collect.observe(names, x)
    }

    fn block_done(&mut self, _: usize, names: &[String]) -> Result<Vec<(usize, Vec<f32>)>> {
        let model = self.collect.model;
        let stats = Statistics {
            layers: self.collect.take(),
            samples: self.samples,
            data_key: self.data_key,
            data_sha256: self.data_sha256.clone(),
        };
        let rescaled = awq_block(model, &self.plans, names, &stats)?;
        // This block's weights, but those sharing a global threshold with others, and
        // whatever AWQ rescaled; AWQ's weights are then rounded to nearest.
        let mut plans = vec![TensorPlan::default(); self.plans.len()];
        let mut position = HashMap::new();
        for (k, name) in names.iter().enumerate() {
            if let Some(i) = model.tensor_index(name)
                && ((k < BLOCK_WEIGHTS.len() && global_rule(&self.plans[i]).is_none())
                    || rescaled.sources.contains_key(&i))
            {
                plans[i] = std::mem::take(&mut self.plans[i]);
                if let Some(q) = plans[i].quant.as_mut().filter(|q| q.is_awq()) {
                    *q = q.rounded();
                }
                position.insert(i, k);
            }
        }
        let calibrated = Calibrated {
            stats: Some(&stats),
            dampening: self.recipe.dampening(),
            importance: self.importance,
        };
        let mut applied = apply_to_values(model, &plans, &rescaled.sources, Some(calibrated))?;
        let mut replaced = Vec::new();
        for (i, t) in &mut applied {
            if let Some(note) = rescaled.notes.get(i) {
                t.scheme = format!("{}{note}", t.scheme).trim().to_owned();
            }
            if rescaled.sources.contains_key(i) {
                // Fidelity against the original weights, comparable with rounding's.
                let original = model.tensor_f32(*i)?;
                t.fidelity = fidelity(&original, &rescaled.undone(*i, &t.values));
                t.calibration = Some(Provenance {
                    samples: stats.samples,
                    data_sha256: stats.data_sha256.clone(),
                    dampening: calibrated.dampening,
                });
            }
            if t.values.len() as u64 == model.tensors[*i].numel {
                replaced.push((position[i], t.values.clone()));
            }
        }
        self.applied.extend(applied);
        Ok(replaced)
    }
}

/// AWQ's scale groups in a block, by position in [`Hooks::block_done`]'s names: the
/// weights that share an input, and the tensor that makes the input (a norm, or a
/// projection whose output rows are the input's columns), which absorbs `1/s`.
const AWQ_GROUPS: [(&[usize], usize); 4] = [(&[0, 1, 2], 7), (&[3], 2), (&[4, 5], 8), (&[6], 5)];

/// What AWQ changed in one block.
#[derive(Default)]
struct Rescaled {
    /// The rescaled values, by tensor index, still to be compressed as planned.
    sources: HashMap<usize, Vec<f32>>,
    /// What each rescaled weight's description adds, by tensor index.
    notes: HashMap<usize, String>,
    /// The scales each tensor's columns were multiplied by, and its rows divided by.
    columns: HashMap<usize, Vec<f32>>,
    rows: HashMap<usize, Vec<f32>>,
}

impl Rescaled {
    /// `values` of tensor `i` with the rescaling undone: the weights the compressed
    /// model effectively multiplies by, in the original's frame.
    fn undone(&self, i: usize, values: &[f32]) -> Vec<f32> {
        let mut v = values.to_vec();
        if let Some(s) = self.columns.get(&i) {
            let inverse: Vec<f32> = s.iter().map(|k| 1.0 / k).collect();
            awq::scale_columns(&mut v, &inverse);
        }
        if let Some(s) = self.rows.get(&i) {
            let inverse: Vec<f32> = s.iter().map(|k| 1.0 / k).collect();
            awq::divide_rows(&mut v, &inverse);
        }
        v
    }
}

/// AWQ's scales for the block of `names` (see [`awq`]), searched on the original
/// weights and this block's `stats`, for every shared input one of whose weights
/// `plans` quantizes with AWQ, as llm-awq's `auto_scale_block` and `apply_scale` do
/// for a llama block. The output projection's input is rescaled only when the value
/// projection has a row per input (no grouped-query attention), as in llm-awq.
fn awq_block(
    model: &Model,
    plans: &[TensorPlan],
    names: &[String],
    stats: &Statistics,
) -> Result<Rescaled> {
    let mut out = Rescaled::default();
    let index = |k: usize| block_tensor(model, &names[k]);
    for (members, before) in AWQ_GROUPS {
        let idx: Vec<usize> = members.iter().map(|&k| index(k)).collect::<Result<_>>()?;
        let is_awq = |i: &usize| plans[*i].quant.as_ref().is_some_and(QuantSpec::is_awq);
        let Some(&first) = idx.iter().find(|i| is_awq(i)) else {
            continue;
        };
        let maker = index(before)?;
        let together = || {
            let m: Vec<&str> = idx
                .iter()
                .map(|&i| model.tensors[i].name.as_str())
                .collect();
            format!(
                "{} and `{}`, which makes their input",
                m.join(", "),
                names[before]
            )
        };
        let columns = model.tensors[first].shape.get(1).copied().unwrap_or(0);
        let maker_rows = model.tensors[maker].shape.first().copied().unwrap_or(0);
        if maker_rows != columns {
            for i in idx.iter().filter(|i| is_awq(i)) {
                out.notes.insert(
                    *i,
                    format!(
                        " (AWQ: not rescaled, rounded to nearest: `{}` has {maker_rows} rows for these {columns} inputs, as with grouped-query attention)",
                        names[before]
                    ),
                );
            }
            continue;
        }
        for &i in idx.iter().chain([&maker]) {
            let plan = &plans[i];
            if plan
                .prune
                .as_ref()
                .is_some_and(|(p, _)| *p != PruneSpec::None)
                || plan
                    .quant
                    .as_ref()
                    .is_some_and(|q| q.is_gptq() || q.uses_imatrix())
            {
                return Err(Error::InvalidSetting(format!(
                    "{}: tensor `{}`: AWQ rescales {}; pruning, GPTQ or an importance matrix on one of them together with AWQ is not supported",
                    model.path.display(),
                    model.tensors[i].name,
                    together()
                )));
            }
        }
        // A bias after the maker would have to absorb 1/s too; llama blocks have none.
        let bias = names[before].replace(".weight", ".bias");
        if model.tensor_index(&bias).is_some() {
            return Err(Error::InvalidSetting(format!(
                "{}: `{bias}`: AWQ folds its scales into `{}`, and this model's forward pass \
                 has no place for that tensor's bias",
                model.path.display(),
                names[before]
            )));
        }
        let layer = stats.layer(&model.tensors[first].name).ok_or_else(|| {
            Error::Internal(format!("no statistics for {}", model.tensors[first].name))
        })?;
        let (found, originals) = search_group(model, plans, &idx, layer).map_err(|e| match e {
            Error::InvalidSetting(m) => {
                Error::InvalidSetting(format!("{}: {}: {m}", model.path.display(), together()))
            }
            e => e,
        })?;
        for (&i, original) in idx.iter().zip(originals) {
            awq::scale_columns(out.sources.entry(i).or_insert(original), &found.scales);
            out.columns.insert(i, found.scales.clone());
            let note = if is_awq(&i) {
                format!(
                    " AWQ (α = {:.2}; output error {:.3} of rounding's)",
                    found.ratio,
                    found.loss / found.loss_rounded.max(f64::MIN_POSITIVE)
                )
            } else {
                " (inputs rescaled by AWQ)".to_owned()
            };
            out.notes.insert(i, note);
        }
        let v = match out.sources.entry(maker) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(model.tensor_f32(maker)?),
        };
        awq::divide_rows(v, &found.scales);
        out.rows.insert(maker, found.scales.clone());
        out.notes
            .entry(maker)
            .or_insert_with(|| " (absorbs AWQ's input scales)".to_owned());
    }
    Ok(out)
}

/// AWQ's scales for the weights `idx` (tensor indices), which share the input
/// `layer` describes, searched on their original values (returned with them).
fn search_group(
    model: &Model,
    plans: &[TensorPlan],
    idx: &[usize],
    layer: &LayerStatistics,
) -> Result<(awq::Scales, Vec<Vec<f32>>)> {
    let originals: Vec<Vec<f32>> = idx
        .iter()
        .map(|&i| model.tensor_f32(i))
        .collect::<Result<_>>()?;
    // Every weight that stays float32 adds no error; the others are rounded as
    // their plans (or their stored block type) say.
    let specs: Vec<Option<QuantSpec>> = idx
        .iter()
        .map(
            |&i| match plans[i].quant.clone().unwrap_or(QuantSpec::None) {
                QuantSpec::None if model.tensors[i].dtype == DType::F32 => None,
                QuantSpec::F32 => None,
                q => Some(q),
            },
        )
        .collect();
    let quantizers: Vec<Option<Box<awq::Quantizer>>> = idx
        .iter()
        .zip(&specs)
        .map(|(&i, spec)| {
            spec.as_ref().map(|q| {
                let info = &model.tensors[i];
                Box::new(move |v: &[f32]| fake_quantize(v, q, info)) as Box<awq::Quantizer>
            })
        })
        .collect();
    let group: Vec<awq::Member> = idx
        .iter()
        .zip(&originals)
        .zip(&quantizers)
        .map(|((&i, w), q)| awq::Member {
            weights: w,
            outputs: model.tensors[i].shape.first().copied().unwrap_or(1) as usize,
            quantize: q.as_deref(),
        })
        .collect();
    let found = awq::search(&group, layer)?;
    drop(group);
    Ok((found, originals))
}

/// `recipe` applied to a llama GGUF whose data-aware rules (Wanda, SparseGPT, GPTQ, AWQ)
/// learn from the token windows of `calibration` block by block, as the papers'
/// reference code does: a block's inputs (all its projections' at once) come from
/// the blocks before it already compressed, its weights are then compressed and the
/// block run again for the next one. Every other tensor (embeddings, norms, the
/// output, rules sharing a global threshold) is applied after. Memory holds one
/// block's statistics. `progress(done, total)` counts blocks.
pub fn apply_block_by_block(
    model: &Model,
    recipe: &Recipe,
    calibration: &Dataset,
    importance: Option<&Imatrix>,
    progress: impl FnMut(usize, usize) -> bool,
) -> Result<Vec<(usize, AppliedTensor)>> {
    let (need, mut tensors) = recipe
        .statistics_request(model)?
        .unwrap_or((Need::Diagonal, Vec::new()));
    let blocks: HashSet<String> = calibrated_layers(model).into_iter().collect();
    let mut plans = recipe.plan(model)?;
    // GPTQ and AWQ on other tensors (embeddings, norms: what a rule such as `*` also
    // matches) round to nearest and say so; data-aware pruning there is an error.
    let mut fallbacks = HashMap::new();
    for (i, plan) in plans.iter_mut().enumerate() {
        let name = &model.tensors[i].name;
        if blocks.contains(name) {
            continue;
        }
        if plan
            .prune
            .as_ref()
            .is_some_and(|(p, _)| p.needs().is_some())
        {
            return Err(Error::InvalidSetting(format!(
                "{}: `{name}` is not a block's attention or feed-forward projection, the only \
                 layers of a llama GGUF whose inputs data-aware methods learn from",
                model.path.display()
            )));
        }
        if let Some(q) = plan.quant.as_mut().filter(|q| q.needs().is_some()) {
            let method = if q.is_awq() { "AWQ" } else { "GPTQ" };
            *q = q.rounded();
            fallbacks.insert(
                i,
                format!(" (nearest: {method} learns only a block's projections)"),
            );
        }
    }
    tensors.retain(|t| blocks.contains(t));
    let (ids, window) = chunks_of(calibration);
    let chunks: Vec<&[u32]> = ids.chunks_exact(window).collect();
    let sha = crate::checksum::sha256_f32(&calibration.x);
    let mut hooks = BlockByBlock {
        collect: Collect::new(model, need, &tensors),
        recipe,
        plans,
        importance,
        data_key: crate::eval::calibration_key(&sha, None),
        data_sha256: sha,
        samples: chunks.len(),
        applied: Vec::new(),
    };
    run(model, &calibration.source, &chunks, &mut hooks, progress)?;
    // The rest, none of them data-aware.
    let rest = apply_cached(
        model,
        &hooks.plans,
        None,
        Some(Calibrated {
            stats: None,
            dampening: recipe.dampening(),
            importance,
        }),
    )?;
    let mut applied = hooks.applied;
    applied.extend(rest.into_iter().map(|(i, mut t)| {
        if let Some(note) = fallbacks.get(&i) {
            t.scheme.push_str(note);
        }
        (i, t)
    }));
    applied.sort_by_key(|(i, _)| *i);
    Ok(applied)
}
