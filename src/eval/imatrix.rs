//! Computing llama.cpp's importance matrix of a llama-family GGUF on a text, as
//! `llama-imatrix` does: for every matrix multiplication with a `blk.*` weight, the
//! sum of `x_j²` over all tokens for each input column `j`, and the number of tokens.
//!
//! The forward pass is an f32 llama of our own over the GGUF's decoded weights
//! (RMSNorm, RoPE on adjacent pairs, grouped-query causal attention, SwiGLU), so the
//! inputs of every matmul can be observed. It runs layer by layer over all chunks of
//! the text at once: memory is one layer's weights plus the chunks' activations,
//! whatever the model's depth. The text is cut into chunks of `chunk` tokens, each
//! scored from its own start, as `llama-imatrix -c` does.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};

use super::causal_lm;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::imatrix::Sums;

/// The weight names of one llama block whose inputs are recorded, in the order the
/// forward pass meets them.
const BLOCK_WEIGHTS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

fn engine(model: &Model, e: candle_core::Error) -> Error {
    Error::Engine {
        context: format!("{}: the importance forward pass", model.path.display()),
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

/// Tensor `name` decoded to f32 as a candle tensor of its shape.
fn weight(model: &Model, name: &str) -> Result<Tensor> {
    let i = model.tensor_index(name).ok_or_else(|| Error::Corrupt {
        path: model.path.clone(),
        format: "GGUF",
        problem: format!("no tensor `{name}` (a llama block needs it)"),
    })?;
    let shape: Vec<usize> = model.tensors[i].shape.iter().map(|&d| d as usize).collect();
    let values = model.tensor_f32(i)?;
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| engine(model, e))
}

/// Σx² per column of `x` (tokens × columns) added into `sums`.
fn record(
    sums: &mut HashMap<String, (Vec<f64>, u64)>,
    name: String,
    x: &Tensor,
) -> candle_core::Result<()> {
    let rows = x.dims()[0] as u64;
    let sq: Vec<f32> = x.sqr()?.sum(0)?.to_vec1()?;
    let entry = sums.entry(name).or_insert_with(|| (vec![0.0; sq.len()], 0));
    for (s, v) in entry.0.iter_mut().zip(&sq) {
        *s += f64::from(*v);
    }
    entry.1 += rows;
    Ok(())
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

/// One llama block's weights (`w` in [`BLOCK_WEIGHTS`] order) and its names.
struct Layer<'a> {
    name: &'a dyn Fn(&str) -> String,
    w: &'a [Tensor],
    attn_norm: &'a Tensor,
    ffn_norm: &'a Tensor,
}

impl Layer<'_> {
    /// The block applied to one chunk's hidden states `x` (tokens × width), every
    /// matmul input's Σx² recorded into `sums`.
    fn forward(
        &self,
        x: &Tensor,
        g: &Geometry,
        sums: &mut HashMap<String, (Vec<f64>, u64)>,
    ) -> candle_core::Result<Tensor> {
        let (w, name) = (self.w, self.name);
        let hd = g.d / g.heads;
        let h = candle_nn::ops::rms_norm(x, self.attn_norm, g.eps)?;
        for b in &BLOCK_WEIGHTS[..3] {
            record(sums, name(b), &h)?;
        }
        let heads_of = |t: Tensor, n: usize| {
            t.reshape((g.chunk, n, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)
        };
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
        let o = attn
            .matmul(&v)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((g.chunk, g.d))?;
        record(sums, name(BLOCK_WEIGHTS[3]), &o)?;
        let x = (x + o.matmul(&w[3].t()?)?)?;
        let h = candle_nn::ops::rms_norm(&x, self.ffn_norm, g.eps)?;
        for b in &BLOCK_WEIGHTS[4..6] {
            record(sums, name(b), &h)?;
        }
        let a = (candle_nn::ops::silu(&h.matmul(&w[4].t()?)?)? * h.matmul(&w[5].t()?)?)?;
        record(sums, name(BLOCK_WEIGHTS[6]), &a)?;
        x + a.matmul(&w[6].t()?)?
    }
}

/// The importance matrix of `model` (a llama GGUF) over the UTF-8 text at `text`,
/// in chunks of `chunk` tokens (the last, shorter chunk is dropped as llama.cpp
/// does). `progress(done, total)` counts layers and returns false to cancel.
pub fn compute(
    model: &Model,
    text: &std::path::Path,
    chunk: usize,
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<Sums> {
    if !causal_lm::is_causal_lm(model) {
        return Err(Error::Unsupported {
            path: model.path.clone(),
            what: "an importance matrix is computed for GGUFs of the llama family".into(),
        });
    }
    let body = crate::text::read_text(text, 64 << 20)?;
    let ids = causal_lm::encode(model, &causal_lm::tokenizer(model)?, &body)?;
    if chunk < 2 {
        return Err(Error::InvalidSetting(format!(
            "chunks of {chunk} tokens: at least 2 are needed"
        )));
    }
    let chunks = ids.len() / chunk;
    if chunks == 0 {
        return Err(Error::Data {
            path: text.to_owned(),
            problem: format!(
                "the text has {} tokens, fewer than one chunk of {chunk}",
                ids.len()
            ),
        });
    }
    let fail = |e: candle_core::Error| engine(model, e);
    let layers = hyper(model, "llama.block_count")? as usize;
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
    if let Some(&bad) = ids[..chunks * chunk].iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Data {
            path: text.to_owned(),
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
    let mut xs: Vec<Tensor> = ids[..chunks * chunk]
        .chunks(chunk)
        .map(|c| {
            let t = Tensor::new(c, &Device::Cpu)?;
            embed.index_select(&t, 0)
        })
        .collect::<candle_core::Result<_>>()
        .map_err(fail)?;
    drop(embed);
    let mut sums: HashMap<String, (Vec<f64>, u64)> = HashMap::new();
    for layer in 0..layers {
        let name = |w: &str| format!("blk.{layer}.{w}.weight");
        let w: Vec<Tensor> = BLOCK_WEIGHTS
            .iter()
            .map(|b| weight(model, &name(b)))
            .collect::<Result<_>>()?;
        let attn_norm = weight(model, &name("attn_norm"))?;
        let ffn_norm = weight(model, &name("ffn_norm"))?;
        for x in &mut xs {
            let layer = Layer {
                name: &name,
                w: &w,
                attn_norm: &attn_norm,
                ffn_norm: &ffn_norm,
            };
            *x = layer.forward(x, &geometry, &mut sums).map_err(fail)?;
        }
        if !progress(layer + 1, layers) {
            return Err(Error::Cancelled);
        }
    }
    let entries: BTreeMap<String, (Vec<f32>, f32)> = sums
        .into_iter()
        .map(|(name, (s, n))| (name, (s.iter().map(|&v| v as f32).collect(), n as f32)))
        .collect();
    Ok(Sums {
        entries,
        dataset: text
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        chunks: chunks as u32,
        chunk_size: chunk as u32,
    })
}
