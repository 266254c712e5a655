//! What compression does to a GGUF llama-family language model, measured on a text:
//! perplexity and next-token top-1 against the text itself, and how far the
//! compressed model's next-token distributions move from the original's — the mean
//! KL divergence (as llama.cpp's `perplexity --kl-divergence` reports it) and the
//! share of positions whose most likely token is unchanged.
//!
//! The forward pass is candle-transformers' quantized llama. A compressed model
//! reaches it as the GGUF `slimscope apply` would export, encoded in memory, so what
//! is measured is exactly what would be shipped (ggml blocks stay blocks). The
//! tokenizer is built from the GGUF's own metadata.
//!
//! The text is cut into windows of [`WINDOW`] tokens, each scored from its own
//! start (no context carried over), run side by side as one batch, one position at
//! a time through the KV cache: candle's model returns only the last position's
//! logits, so every position is fed as a step of its own.

use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::Metrics;
use super::data::Dataset;
use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::{Format, Model};

/// Tokens per window. Short windows score higher perplexities than long contexts
/// would; they are for comparing compressed variants with the original.
pub const WINDOW: usize = 128;

/// Tokens of a text scored at most. The original's next-token distributions at every
/// scored position are kept for the KL divergence (4 B × vocabulary per position:
/// 100 MB for SmolLM2's 49,152 tokens).
pub const MAX_TOKENS: usize = 4 * WINDOW;

/// Next-token figures that only a language model has, beside [`Metrics`]' top-1,
/// top-5 and loss (nats per token) of the text's own next tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LanguageMetrics {
    /// exp(mean negative log-likelihood per token) of the text.
    pub perplexity: f64,
    /// Mean KL(original ‖ this) of the next-token distributions, nats per token
    /// (0 for the original itself).
    pub kl_divergence: f64,
    /// The largest per-position KL divergence, nats.
    pub kl_max: f64,
    /// Share of positions whose most likely next token is the original's.
    pub top1_agreement: f64,
}

/// Whether `model` is a GGUF of the llama family (what this runner reads).
pub fn is_causal_lm(model: &Model) -> bool {
    model.format == Format::Gguf
        && model
            .metadata
            .iter()
            .any(|(k, v)| k == "general.architecture" && v.as_str() == Some("llama"))
}

fn candle_error(model: &Model, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine {
        context: format!("{}: {what}", model.path.display()),
        cause: e.to_string(),
    }
}

/// The GGUF header of `model`'s own file (metadata and tensor table).
fn header(model: &Model) -> Result<gguf_file::Content> {
    let file = std::fs::File::open(&model.path).map_err(|e| Error::io(&model.path, e))?;
    gguf_file::Content::read(&mut std::io::BufReader::new(file)).map_err(|e| Error::Corrupt {
        path: model.path.clone(),
        format: "GGUF",
        problem: e.to_string(),
    })
}

/// The tokenizer the GGUF's metadata describes (`tokenizer.ggml.*`).
pub fn tokenizer(model: &Model) -> Result<Tokenizer> {
    let content = header(model)?;
    let mut tokenizer = Tokenizer::from_gguf(&content)
        .map_err(|e| candle_error(model, "cannot build the tokenizer from its metadata", e))?;
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned();
    if pre.as_deref() == Some("smollm") {
        // llama.cpp's `smollm` pre-tokenizer (SmolLM's tokenizer.json): every digit
        // on its own, then GPT-2's byte-level split. candle knows only the latter.
        use tokenizers::pre_tokenizers::{
            byte_level::ByteLevel, digits::Digits, sequence::Sequence,
        };
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
    }
    Ok(tokenizer)
}

/// Token ids of `text` (no BOS: SmolLM2's GGUF says `add_bos_token = false`).
pub fn encode(model: &Model, tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| candle_error(model, "cannot tokenize the text", e))?;
    Ok(encoding.get_ids().to_vec())
}

/// A UTF-8 text tokenized for `model` and cut into windows of [`WINDOW`] tokens (at
/// most [`MAX_TOKENS`] in all): each sample is one window of token ids. A window has
/// no label of its own (its tokens are their own targets); `labels` holds zeros.
pub fn text_dataset(model: &Model, path: &Path) -> Result<Dataset> {
    windows(model, path, MAX_TOKENS)
}

/// A text cut into windows of [`WINDOW`] tokens for data-aware methods to learn
/// from: as [`text_dataset`], without its cap on the tokens scored (the text itself
/// is at most 64 MiB).
pub fn calibration_windows(model: &Model, path: &Path) -> Result<Dataset> {
    windows(model, path, usize::MAX)
}

/// The text at `path` as windows of [`WINDOW`] tokens, at most `max_tokens` of them.
fn windows(model: &Model, path: &Path, max_tokens: usize) -> Result<Dataset> {
    // Scoring stops at MAX_TOKENS tokens; 64 MiB of text is far more than that.
    let text = crate::text::read_text(path, 64 << 20).map_err(|e| match e {
        Error::InvalidSetting(m) => Error::InvalidSetting(format!(
            "{m}; a language model is measured on a UTF-8 text file"
        )),
        other => other,
    })?;
    let ids = encode(model, &tokenizer(model)?, &text)?;
    if ids.len() < 2 {
        return Err(Error::Data {
            path: path.to_owned(),
            problem: format!(
                "the text has {} token(s); at least 2 are needed to predict one",
                ids.len()
            ),
        });
    }
    let window = WINDOW.min(ids.len());
    let windows = (ids.len() / window).min(max_tokens / window).max(1);
    Ok(Dataset {
        source: path.to_owned(),
        x: ids[..windows * window].iter().map(|&t| t as f32).collect(),
        labels: vec![0; windows],
        sample_shape: vec![window],
    })
}

/// `model` with `applied`'s tensors in place, as candle's quantized llama: the GGUF
/// the export would write, read back from memory.
fn load_weights(model: &Model, applied: &[(usize, AppliedTensor)]) -> Result<ModelWeights> {
    let mut bytes = Vec::new();
    crate::export::encode_gguf(model, applied, &[], &mut bytes)?;
    let mut reader = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| candle_error(model, "cannot read the GGUF", e))?;
    ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
        .map_err(|e| candle_error(model, "cannot build the llama model", e))
}

/// Greedy continuation of `prompt` by `n` tokens (the prompt is not repeated).
pub fn generate(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    prompt: &str,
    n: usize,
) -> Result<String> {
    let tokenizer = tokenizer(model)?;
    let prompt_ids = encode(model, &tokenizer, prompt)?;
    if prompt_ids.is_empty() {
        return Err(Error::InvalidSetting("the prompt is empty".into()));
    }
    // candle's quantized llama precomputes rotary tables for this many positions.
    let max = candle_transformers::models::quantized_llama::MAX_SEQ_LEN;
    if prompt_ids.len().saturating_add(n) > max {
        return Err(Error::InvalidSetting(format!(
            "a prompt of {} tokens plus {n} new ones is longer than the {max} positions the model runs",
            prompt_ids.len()
        )));
    }
    let mut weights = load_weights(model, applied)?;
    let fail = |e: candle_core::Error| candle_error(model, "the forward pass failed", e);
    let mut out = Vec::with_capacity(n);
    let mut input = prompt_ids.clone();
    let mut pos = 0;
    for _ in 0..n {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(fail)?;
        let logits = weights
            .forward(&x, pos)
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(fail)?;
        pos += input.len();
        let next = argmax(&logits) as u32;
        out.push(next);
        input = vec![next];
    }
    tokenizer
        .decode(&out, false)
        .map_err(|e| candle_error(model, "cannot decode the tokens", e))
}

/// Tokens per second of a llama GGUF on candle's quantized kernels: prompt
/// processing (`prompt` tokens in one forward pass, as a server ingests a prompt) and
/// greedy generation (`generate` tokens fed one at a time after it), each after a
/// warm-up pass, medians of `runs` (generation: one run's mean per token).
pub fn token_speed(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    prompt: usize,
    generate: usize,
    runs: usize,
) -> Result<(f64, f64)> {
    let max = candle_transformers::models::quantized_llama::MAX_SEQ_LEN;
    if prompt == 0 || prompt.saturating_add(generate) > max {
        return Err(Error::InvalidSetting(format!(
            "a prompt of {prompt} tokens plus {generate} new ones must fit the {max} positions the model runs"
        )));
    }
    let tokenizer = tokenizer(model)?;
    let text = crate::demo::files()?.text;
    let text = std::fs::read_to_string(&text).map_err(|e| Error::io(&text, e))?;
    let mut ids = encode(model, &tokenizer, &text)?;
    if ids.is_empty() {
        return Err(Error::Internal("the bundled text has no tokens".into()));
    }
    while ids.len() < prompt {
        ids.extend_from_within(..);
    }
    ids.truncate(prompt);
    let mut weights = load_weights(model, applied)?;
    let fail = |e: candle_core::Error| candle_error(model, "the forward pass failed", e);
    let mut forward = |tokens: &[u32], pos: usize| -> Result<u32> {
        let x = Tensor::new(tokens, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(fail)?;
        let logits = weights.forward(&x, pos).map_err(fail)?;
        let last = logits
            .squeeze(0)
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(fail)?;
        Ok(argmax(&last) as u32)
    };
    // Warm-up: one pass over a few tokens (position 0 clears the cache).
    forward(&ids[..ids.len().min(8)], 0)?;
    let mut prompt_times = Vec::new();
    let mut token_times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let mut next = forward(&ids, 0)?;
        prompt_times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..generate {
            next = forward(&[next], prompt + i)?;
        }
        token_times.push(t.elapsed().as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let prompt_rate = prompt as f64 / median(prompt_times).max(1e-12);
    let generation_rate = generate as f64 / median(token_times).max(1e-12);
    Ok((prompt_rate, generation_rate))
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// `log_softmax(logits)` in f64 (into `out`).
fn log_softmax(logits: &[f32], out: &mut Vec<f64>) {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)));
    let lse = max
        + logits
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .sum::<f64>()
            .ln();
    out.clear();
    out.extend(logits.iter().map(|&v| f64::from(v) - lse));
}

/// A llama GGUF measured on a text, holding the original's next-token distributions
/// once they have been computed (for the KL divergence of every variant).
pub struct CausalLm {
    /// log p(next token) of the original at every scored position (step-major, then
    /// window), one vocabulary-long row each.
    reference: Mutex<Option<Arc<Vec<f32>>>>,
}

impl CausalLm {
    /// Check that candle can build `model` before anything runs.
    pub fn new(model: &Model) -> Result<CausalLm> {
        if !is_causal_lm(model) {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: "not a GGUF of the llama family (general.architecture = llama)".into(),
            });
        }
        tokenizer(model)?;
        Ok(CausalLm {
            reference: Mutex::new(None),
        })
    }

    fn reference(&self) -> Option<Arc<Vec<f32>>> {
        self.reference
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Metrics of `model` with `applied`'s tensors in place on the windows of `data`
    /// (see [`text_dataset`]); `progress(done, total)` counts scored positions and
    /// returns false to cancel. The first call computes the original's distributions
    /// (a variant measured first costs two passes).
    pub fn measure(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
        changed: bool,
        data: &Dataset,
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Metrics> {
        let reference = match self.reference() {
            Some(r) => r,
            None => {
                let (metrics, kept) = score(model, &[], data, None, &mut progress)?;
                let kept = Arc::new(kept);
                *self.reference.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept.clone());
                if !changed {
                    return Ok(metrics);
                }
                kept
            }
        };
        Ok(score(model, applied, data, Some(&reference), &mut progress)?.0)
    }
}

/// Run every window of `data` through the model; with a `reference`, also the KL
/// divergence and agreement against it. Returns the metrics and, without a
/// reference, the log-probabilities to become one.
fn score(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    data: &Dataset,
    reference: Option<&[f32]>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(Metrics, Vec<f32>)> {
    let (windows, window) = (data.len(), data.sample_len());
    let steps = window.saturating_sub(1);
    let total = windows * steps;
    if total == 0 {
        return Err(Error::Data {
            path: data.source.clone(),
            problem: "no token to predict".into(),
        });
    }
    let ids: Vec<u32> = data.x.iter().map(|&t| t as u32).collect();
    let mut weights = load_weights(model, applied)?;
    let fail = |e: candle_core::Error| candle_error(model, "the forward pass failed", e);
    let start = Instant::now();
    let (mut nll, mut top1, mut top5) = (0f64, 0usize, 0usize);
    let (mut kl_sum, mut kl_max, mut agree) = (0f64, 0f64, 0usize);
    let mut kept = Vec::new();
    let mut logp = Vec::new();
    for t in 0..steps {
        let column: Vec<u32> = (0..windows).map(|w| ids[w * window + t]).collect();
        let x = Tensor::new(column.as_slice(), &Device::Cpu)
            .and_then(|c| c.unsqueeze(1))
            .map_err(fail)?;
        let logits = weights
            .forward(&x, t)
            .and_then(|l| l.to_vec2::<f32>())
            .map_err(fail)?;
        let vocab = logits.first().map_or(0, Vec::len);
        for (w, row) in logits.iter().enumerate() {
            let target = ids[w * window + t + 1] as usize;
            if target >= vocab {
                return Err(Error::Data {
                    path: data.source.clone(),
                    problem: format!("token {target} is outside the model's vocabulary of {vocab}"),
                });
            }
            log_softmax(row, &mut logp);
            nll -= logp[target];
            let rank = logp.iter().filter(|&&v| v > logp[target]).count();
            top1 += usize::from(rank == 0);
            top5 += usize::from(rank < 5);
            let position = t * windows + w;
            match reference {
                Some(r) => {
                    let base =
                        r.get(position * vocab..(position + 1) * vocab)
                            .ok_or_else(|| Error::Unsupported {
                                path: model.path.clone(),
                                what: "the vocabulary changed from the original's".into(),
                            })?;
                    let kl: f64 = base
                        .iter()
                        .zip(&logp)
                        .map(|(&lp, &lq)| {
                            let lp = f64::from(lp);
                            lp.exp() * (lp - lq)
                        })
                        .sum();
                    kl_sum += kl;
                    kl_max = kl_max.max(kl);
                    agree += usize::from(argmax(base) == argmax(row));
                }
                None => {
                    if kept.is_empty() {
                        kept.reserve_exact(total * vocab);
                    }
                    kept.extend(logp.iter().map(|&v| v as f32));
                }
            }
        }
        if !progress((t + 1) * windows, total) {
            return Err(Error::Cancelled);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = total as f64;
    let loss = nll / n;
    let language = match reference {
        Some(_) => LanguageMetrics {
            perplexity: loss.exp(),
            kl_divergence: kl_sum / n,
            kl_max,
            top1_agreement: agree as f64 / n,
        },
        None => LanguageMetrics {
            perplexity: loss.exp(),
            kl_divergence: 0.0,
            kl_max: 0.0,
            top1_agreement: 1.0,
        },
    };
    Ok((
        Metrics {
            samples: total,
            top1: top1 as f64 / n,
            top5: Some(top5 as f64 / n),
            loss,
            samples_per_second: n / seconds.max(1e-9),
            task: super::TaskFigures::Language(language),
        },
        kept,
    ))
}
