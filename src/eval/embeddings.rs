//! Sentence embeddings of a BERT-family encoder in Hugging Face's layout (weights
//! with `config.json` and `tokenizer.json` beside them, as all-MiniLM-L6-v2 ships),
//! and what compression does to them: how close each sentence's embedding stays to
//! the original's, how much the similarities between sentences move, and how well
//! the similarities still rank hand-scored sentence pairs (Spearman).
//!
//! The forward pass is candle-transformers' BERT; a sentence embedding is the mean
//! of the last hidden states over the attention mask, L2-normalised (the
//! sentence-transformers recipe). ONNX exports of the same encoder (inputs
//! `input_ids`, `attention_mask`, `token_type_ids`; output `last_hidden_state`) run
//! on tract with the same tokenizer and pooling, for comparison.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType as CandleDType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Serialize;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::Metrics;
use super::data::Dataset;
use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::{Format, Model};
use crate::net::weights::{ModelWeights, WeightSource};

/// Sentences per forward pass.
const BATCH: usize = 32;

/// One row of token ids (or mask values) per sentence.
type Rows = Vec<Vec<u32>>;

/// Sentences, and pairs of them scored by hand for similarity of meaning.
#[derive(Debug, Clone)]
pub struct SentenceSet {
    pub source: PathBuf,
    pub sentences: Vec<String>,
    /// (index, index, score): higher scores mean closer meanings.
    pub pairs: Vec<(usize, usize, f64)>,
}

/// A tab-separated file of `sentence<TAB>sentence<TAB>score` lines (`#` starts a
/// comment line). A line with one sentence and no score adds only the sentence.
pub fn load_sentences(path: &Path) -> Result<SentenceSet> {
    let text = crate::text::read_settings(path)?;
    let mut set = SentenceSet {
        source: path.to_owned(),
        sentences: Vec::new(),
        pairs: Vec::new(),
    };
    let mut index = HashMap::new();
    let mut add = |s: &str, set: &mut SentenceSet| -> usize {
        *index.entry(s.to_owned()).or_insert_with(|| {
            set.sentences.push(s.to_owned());
            set.sentences.len() - 1
        })
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: String| Error::Data {
            path: path.to_owned(),
            problem: format!("line {}: {what}", n + 1),
        };
        match line
            .split('\t')
            .map(str::trim)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [s] => {
                add(s, &mut set);
            }
            [a, b, score] => {
                let score: f64 = score
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| bad(format!("score `{score}` is not a number")))?;
                if a.is_empty() || b.is_empty() {
                    return Err(bad("an empty sentence".into()));
                }
                let (i, j) = (add(a, &mut set), add(b, &mut set));
                set.pairs.push((i, j, score));
            }
            fields => {
                return Err(bad(format!(
                    "expected `sentence<TAB>sentence<TAB>score` or one sentence, found {} tab-separated fields",
                    fields.len()
                )));
            }
        }
    }
    if set.sentences.len() < 2 {
        return Err(Error::Data {
            path: path.to_owned(),
            problem: "at least two sentences are needed".into(),
        });
    }
    Ok(set)
}

/// A BERT encoder's configuration and tokenizer, found beside its weights.
pub struct SentenceEncoder {
    config: Config,
    tokenizer: Tokenizer,
    /// Tokens per sentence at most (longer ones are truncated).
    pub max_len: usize,
}

/// The companion file `name` in the model's folder. A companion that resolves
/// (through a symlink) outside the folder is refused: nothing is read from elsewhere.
fn beside(model: &Model, name: &str) -> Result<PathBuf> {
    let dir = crate::model::folder_of(&model.path);
    let path = dir.join(name);
    // A companion that is not there is reported when it is read.
    if crate::model::leads_outside(dir, &path).unwrap_or(false) {
        return Err(Error::Unsupported {
            path,
            what: "leads outside the model's folder (a symlink); refusing to read it".into(),
        });
    }
    Ok(path)
}

/// The largest tokenizer.json read (real ones are a few megabytes).
const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// Whether `model` is safetensors weights with a BERT `config.json` and a
/// `tokenizer.json` beside them.
/// A companion that leads outside the folder counts as there, so that loading it
/// says why it is refused.
pub fn is_sentence_encoder(model: &Model) -> bool {
    if model.format != Format::Safetensors {
        return false;
    }
    let (Ok(tokenizer), Ok(config)) = (
        beside(model, "tokenizer.json"),
        beside(model, "config.json"),
    ) else {
        return true;
    };
    tokenizer.is_file()
        && crate::text::read_settings(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|c| c["model_type"] == "bert")
}

impl SentenceEncoder {
    /// Read `config.json`, `tokenizer.json` and (if there) sentence-transformers'
    /// `sentence_bert_config.json` from the model's folder. The maximum length is
    /// the latter's `max_seq_length`, else the config's `max_position_embeddings`.
    pub fn load(model: &Model) -> Result<SentenceEncoder> {
        let read = |name: &str| -> Result<(PathBuf, String)> {
            let path = beside(model, name)?;
            let text = crate::text::read_settings(&path).map_err(|e| Error::Unsupported {
                path: model.path.clone(),
                what: format!("a sentence encoder needs {name} beside it: {e}"),
            })?;
            Ok((path, text))
        };
        let (config_path, config_text) = read("config.json")?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| Error::Corrupt {
            path: config_path.clone(),
            format: "BERT config.json",
            problem: e.to_string(),
        })?;
        let positions = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|c| c["max_position_embeddings"].as_u64())
            .unwrap_or(512) as usize;
        let max_len = crate::text::read_settings(&beside(model, "sentence_bert_config.json")?)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|c| c["max_seq_length"].as_u64())
            .map_or(positions, |m| (m as usize).min(positions));
        let tokenizer_path = beside(model, "tokenizer.json")?;
        let size = std::fs::metadata(&tokenizer_path)
            .map_err(|e| Error::io(&tokenizer_path, e))?
            .len();
        if size > MAX_TOKENIZER_BYTES {
            return Err(Error::Corrupt {
                path: tokenizer_path,
                format: "tokenizer.json",
                problem: format!("{size} bytes is far larger than any tokenizer"),
            });
        }
        let engine = |e: tokenizers::Error| Error::Engine {
            context: tokenizer_path.display().to_string(),
            cause: e.to_string(),
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(engine)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(engine)?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        Ok(SentenceEncoder {
            config,
            tokenizer,
            max_len,
        })
    }

    /// Token ids and attention masks of `sentences`, padded to the longest.
    fn tokenize(&self, sentences: &[String]) -> Result<(Rows, Rows)> {
        let encodings = self
            .tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| Error::Engine {
                context: "cannot tokenize".into(),
                cause: e.to_string(),
            })?;
        Ok(encodings
            .iter()
            .map(|e| (e.get_ids().to_vec(), e.get_attention_mask().to_vec()))
            .unzip())
    }

    /// L2-normalised mean-pooled embeddings of `sentences` by `model` with
    /// `applied`'s tensors in place.
    pub fn embed(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
        sentences: &[String],
    ) -> Result<Vec<Vec<f32>>> {
        let fail = |e: candle_core::Error| Error::Engine {
            context: format!("{}: BERT", model.path.display()),
            cause: e.to_string(),
        };
        let weights = ModelWeights::new(model, applied);
        let mut tensors = HashMap::new();
        for t in model.tensors.iter().filter(|t| t.dtype.is_float()) {
            let (values, shape) = weights.weight(&t.name)?;
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu).map_err(fail)?;
            tensors.insert(t.name.clone(), tensor);
        }
        let vb = VarBuilder::from_tensors(tensors, CandleDType::F32, &Device::Cpu);
        let bert = BertModel::load(vb, &self.config).map_err(fail)?;
        let mut out = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(BATCH) {
            let (ids, masks) = self.tokenize(chunk)?;
            let hidden = (|| {
                let ids = Tensor::new(ids, &Device::Cpu)?;
                let mask = Tensor::new(masks.clone(), &Device::Cpu)?;
                let types = ids.zeros_like()?;
                bert.forward(&ids, &types, Some(&mask))?.to_vec3::<f32>()
            })()
            .map_err(fail)?;
            out.extend(hidden.iter().zip(&masks).map(|(h, m)| pool(h, m)));
        }
        Ok(out)
    }

    /// The same embeddings from an ONNX export of the encoder, run by tract.
    pub fn embed_onnx(&self, export: &Model, sentences: &[String]) -> Result<Vec<Vec<f32>>> {
        use tract_onnx::prelude::*;
        let fail = |e: TractError| Error::Engine {
            context: export.path.display().to_string(),
            cause: format!("{e:#}"),
        };
        let (ids, masks) = self.tokenize(sentences)?;
        let (n, len) = (ids.len(), ids.first().map_or(0, Vec::len));
        // The export's own (symbolic) input shapes stay: its shape checks are written
        // in those symbols. Its annotations of intermediate shapes go: exporters
        // write some that broadcasting contradicts (this one's attention mask).
        let mut proto = tract_onnx::onnx()
            .proto_model_for_path(&export.path)
            .map_err(fail)?;
        if let Some(g) = proto.graph.as_mut() {
            g.value_info.clear();
        }
        let graph = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(fail)?;
        let names: Vec<String> = graph
            .input_outlets()
            .map_err(fail)?
            .iter()
            .map(|o| graph.node(o.node).name.clone())
            .collect();
        let as_i64 = |rows: &[Vec<u32>]| -> Vec<i64> {
            rows.iter().flatten().map(|&v| i64::from(v)).collect()
        };
        let mut inputs = TVec::new();
        for name in &names {
            let values = match name.as_str() {
                "input_ids" => as_i64(&ids),
                "attention_mask" => as_i64(&masks),
                "token_type_ids" => vec![0; n * len],
                other => {
                    return Err(Error::Unsupported {
                        path: export.path.clone(),
                        what: format!(
                            "unexpected input `{other}` (a BERT export takes input_ids, attention_mask, token_type_ids)"
                        ),
                    });
                }
            };
            let array = tract_ndarray::Array2::from_shape_vec((n, len), values)
                .map_err(|e| Error::Internal(e.to_string()))?;
            inputs.push(Tensor::from(array).into());
        }
        let plan = graph
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(fail)?;
        let result = plan.run(inputs).map_err(fail)?;
        let hidden = result[0].to_plain_array_view::<f32>().map_err(fail)?;
        let width = hidden.shape().last().copied().unwrap_or(0);
        if hidden.shape() != [n, len, width] {
            return Err(Error::Unsupported {
                path: export.path.clone(),
                what: format!(
                    "output of shape {:?}, expected [{n}, {len}, hidden]",
                    hidden.shape()
                ),
            });
        }
        let flat: Vec<f32> = hidden.iter().copied().collect();
        Ok(masks
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let rows: Vec<Vec<f32>> = flat[i * len * width..(i + 1) * len * width]
                    .chunks(width)
                    .map(<[f32]>::to_vec)
                    .collect();
                pool(&rows, m)
            })
            .collect())
    }
}

/// Mean of the rows where `mask` is 1, L2-normalised (f64 sums).
fn pool(hidden: &[Vec<f32>], mask: &[u32]) -> Vec<f32> {
    let width = hidden.first().map_or(0, Vec::len);
    let mut sum = vec![0f64; width];
    let mut count = 0f64;
    for (row, &m) in hidden.iter().zip(mask) {
        if m != 0 {
            count += 1.0;
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count.max(1.0)).collect();
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    mean.iter().map(|v| (v / norm) as f32).collect()
}

/// Cosine similarity (f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-300)
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let average = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = average;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson's on average ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt().max(1e-300)
}

/// What a model's embeddings keep of the original's on a sentence set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EmbeddingMetrics {
    pub sentences: usize,
    /// Cosine similarity of each sentence's embedding to the original's: mean, least.
    pub mean_cosine: f64,
    pub min_cosine: f64,
    /// |cos(a, b) − original cos(a, b)| over every pair of sentences: mean, largest.
    pub mean_similarity_change: f64,
    pub max_similarity_change: f64,
    /// Spearman correlation of the scored pairs' cosine similarities with their
    /// scores (absent without scored pairs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman: Option<f64>,
}

/// Compare `embeddings` with the `original` ones of the same sentences.
pub fn compare(
    original: &[Vec<f32>],
    embeddings: &[Vec<f32>],
    set: &SentenceSet,
) -> EmbeddingMetrics {
    let n = original.len().min(embeddings.len());
    let cos: Vec<f64> = (0..n)
        .map(|i| cosine(&original[i], &embeddings[i]))
        .collect();
    let (mut change_sum, mut change_max, mut count) = (0f64, 0f64, 0usize);
    for i in 0..n {
        for j in i + 1..n {
            let d =
                (cosine(&embeddings[i], &embeddings[j]) - cosine(&original[i], &original[j])).abs();
            change_sum += d;
            change_max = change_max.max(d);
            count += 1;
        }
    }
    let scored: Vec<(f64, f64)> = set
        .pairs
        .iter()
        .filter(|&&(i, j, _)| i < n && j < n)
        .map(|&(i, j, s)| (cosine(&embeddings[i], &embeddings[j]), s))
        .collect();
    EmbeddingMetrics {
        sentences: n,
        mean_cosine: cos.iter().sum::<f64>() / n.max(1) as f64,
        min_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
        mean_similarity_change: change_sum / count.max(1) as f64,
        max_similarity_change: change_max,
        spearman: (scored.len() >= 3).then(|| {
            let (x, y): (Vec<f64>, Vec<f64>) = scored.into_iter().unzip();
            spearman(&x, &y)
        }),
    }
}

/// Share of sentences whose nearest other sentence (by cosine) is the original's.
pub fn neighbour_agreement(original: &[Vec<f32>], embeddings: &[Vec<f32>]) -> f64 {
    let nearest = |e: &[Vec<f32>], i: usize| {
        (0..e.len())
            .filter(|&j| j != i)
            .map(|j| (j, cosine(&e[i], &e[j])))
            .fold((usize::MAX, f64::NEG_INFINITY), |b, c| {
                if c.1 > b.1 { c } else { b }
            })
            .0
    };
    let n = original.len().min(embeddings.len());
    let same = (0..n)
        .filter(|&i| nearest(original, i) == nearest(embeddings, i))
        .count();
    same as f64 / n.max(1) as f64
}

/// The sentence file at `path` as a data set for the evaluator: one sample per
/// sentence, no values (the text is tokenized by the encoder), labels unused.
pub fn sentence_dataset(path: &Path) -> Result<Dataset> {
    let set = load_sentences(path)?;
    Ok(Dataset {
        source: path.to_owned(),
        x: Vec::new(),
        labels: vec![0; set.sentences.len()],
        sample_shape: vec![0],
    })
}

/// A sentence encoder measured on a sentence set, holding the original's embeddings
/// once computed.
pub struct SentenceTask {
    encoder: SentenceEncoder,
    pub set: SentenceSet,
    reference: Mutex<Option<Arc<Vec<Vec<f32>>>>>,
}

impl SentenceTask {
    pub fn new(model: &Model, sentences: &Path) -> Result<SentenceTask> {
        Ok(SentenceTask {
            encoder: SentenceEncoder::load(model)?,
            set: load_sentences(sentences)?,
            reference: Mutex::new(None),
        })
    }

    /// [`Metrics`] of `model` with `applied`'s tensors in place: its samples are the
    /// sentences, `top1` the share whose nearest neighbour is unchanged, `loss` the
    /// mean cosine distance (1 − cos) to the original's embeddings, and `embedding`
    /// the full comparison.
    pub fn measure(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Metrics> {
        let n = self.set.sentences.len();
        let start = Instant::now();
        let reference = self
            .reference
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let reference = match reference {
            Some(r) => r,
            None => {
                let r = Arc::new(self.encoder.embed(model, &[], &self.set.sentences)?);
                *self.reference.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
                r
            }
        };
        if !progress(0, n) {
            return Err(Error::Cancelled);
        }
        let embedded = if applied.is_empty() {
            reference.as_ref().clone()
        } else {
            self.encoder.embed(model, applied, &self.set.sentences)?
        };
        progress(n, n);
        let m = compare(&reference, &embedded, &self.set);
        Ok(Metrics {
            samples: n,
            top1: neighbour_agreement(&reference, &embedded),
            top5: None,
            loss: 1.0 - m.mean_cosine,
            samples_per_second: n as f64 / start.elapsed().as_secs_f64().max(1e-9),
            task: super::TaskFigures::Embedding(m),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_hand_ranked_values() {
        // Perfect agreement and reversal.
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ranks x = 1..5, y = [2, 1, 4, 3, 5]: Σd² = 4, ρ = 1 − 6·4 / (5·24) = 0.8.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.2, 0.1, 0.4, 0.3, 0.5]);
        assert!((rho - 0.8).abs() < 1e-12, "{rho}");
        // Ties share their average rank: [1, 2.5, 2.5, 4].
        assert_eq!(ranks(&[0.0, 5.0, 5.0, 9.0]), [1.0, 2.5, 2.5, 4.0]);
    }

    #[test]
    fn neighbours_by_hand() {
        let e = |v: &[[f32; 2]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
        // Nearest neighbours (cosine): 0 → 1 (0.994), 1 → 0, 2 → 1 (0.110 vs 0).
        let original = e(&[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]);
        // 2 turned a little: still 0 → 1, 1 → 0, 2 → 1 (0.209 vs 0.0995).
        let turned = e(&[[1.0, 0.0], [0.9, 0.1], [0.1, 1.0]]);
        assert_eq!(neighbour_agreement(&original, &turned), 1.0);
        // 2 moved next to 0: 0 → 2 (0.99875), 1 → 2 (0.99820), 2 → 0: none kept.
        let moved = e(&[[1.0, 0.0], [0.9, 0.1], [1.0, 0.05]]);
        assert_eq!(neighbour_agreement(&original, &moved), 0.0);
    }

    #[test]
    fn pooling_averages_only_unmasked_rows_and_normalises() {
        let hidden = vec![vec![3.0, 0.0], vec![1.0, 4.0], vec![100.0, 100.0]];
        let e = pool(&hidden, &[1, 1, 0]);
        // mean (2, 2) → (1/√2, 1/√2)
        assert!((e[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((e[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
