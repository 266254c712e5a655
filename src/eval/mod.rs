//! Accuracy on real data: model runners, data sets and the evaluation loop.
//!
//! A [`Runner`] turns a batch of samples into class scores; every model kind (the
//! sequential networks of [`sequential`], later ONNX graphs and transformers)
//! implements it. [`evaluate`] runs a data set through a runner in fixed-size
//! batches and reports top-1 / top-5 accuracy and mean cross-entropy. Compressed
//! weights reach a runner through [`sequential::WeightSource`], so the same network is
//! evaluated before and after a recipe.

pub mod arch;
pub mod attach;
pub mod causal_lm;
pub mod data;
pub mod embeddings;
pub mod evaluator;
pub mod first_conv;
pub mod onnx;
pub mod sequential;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::{Format, Model};
use data::Dataset;
use sequential::WeightSource;

/// Samples per forward pass (results do not depend on it).
pub const DEFAULT_BATCH: usize = 256;

/// Anything that maps a batch of samples to class scores.
pub trait Runner: Send + Sync {
    /// One sample's shape.
    fn input_shape(&self) -> &[usize];
    /// Scores per sample.
    fn classes(&self) -> usize;
    /// Scores (logits) for `n` samples laid out row-major in `batch`: `n × classes`.
    fn logits(&self, batch: &[f32], n: usize) -> Result<Vec<f32>>;
}

/// What a model gets right on a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub samples: usize,
    /// Fraction whose highest score is the label.
    pub top1: f64,
    /// Fraction whose label is among the five highest scores (more than 5 classes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top5: Option<f64>,
    /// Mean cross-entropy of softmax(scores) against the labels, nats.
    pub loss: f64,
    /// Wall-clock throughput of the forward passes.
    pub samples_per_second: f64,
    /// For a language model (whose samples are the text's tokens, its classes the
    /// vocabulary): perplexity, and the distance from the original's predictions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<causal_lm::LanguageMetrics>,
    /// For a sentence encoder (whose samples are sentences; `top1` the share whose
    /// nearest neighbour is unchanged, `loss` the mean cosine distance to the
    /// original's embeddings): the full comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<embeddings::EmbeddingMetrics>,
}

/// Which task a measurement is of, with that task's own figures: what every front
/// end matches on (exhaustively) to show a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskFigures {
    /// Labelled samples: top-1, top-5 and loss are the figures.
    Classification,
    /// A language model on a text.
    Language(causal_lm::LanguageMetrics),
    /// A sentence encoder on sentence pairs.
    Embedding(embeddings::EmbeddingMetrics),
}

impl Metrics {
    /// The task these metrics are of, decided in one place.
    pub fn task(&self) -> TaskFigures {
        match (self.language, self.embedding) {
            (_, Some(e)) => TaskFigures::Embedding(e),
            (Some(l), None) => TaskFigures::Language(l),
            (None, None) => TaskFigures::Classification,
        }
    }

    /// The figure curves, Pareto fronts and sensitivities rank by (higher is better):
    /// top-1 accuracy, or for a language model the top-1 agreement with the
    /// original's next tokens (its own top-1 on a short text is noisy, and can even
    /// rise by chance; agreement measures what compression lost).
    /// For a sentence encoder, the mean cosine similarity to the original's embeddings.
    pub fn quality(&self) -> f64 {
        match self.task() {
            TaskFigures::Language(l) => l.top1_agreement,
            TaskFigures::Embedding(e) => e.mean_cosine,
            TaskFigures::Classification => self.top1,
        }
    }

    /// What [`Metrics::quality`] is, for labels.
    pub fn quality_name(&self) -> &'static str {
        match self.task() {
            TaskFigures::Language(_) => "top-1 agreement",
            TaskFigures::Embedding(_) => "mean cosine",
            TaskFigures::Classification => "top-1",
        }
    }
}

/// Check that `data` fits `runner` before anything runs: feature count and labels.
pub fn check_fit(runner: &dyn Runner, data: &Dataset) -> Result<()> {
    let unfit = |problem: String| Error::Data {
        path: data.source.clone(),
        problem,
    };
    if data.is_empty() {
        return Err(unfit("holds no samples to measure on".into()));
    }
    let input = runner.input_shape();
    // Flat rows feed any input (and any sample feeds a flat input) in row-major
    // order; two shaped layouts must agree, or a [1, 14, 56] image would be
    // silently read as a [1, 28, 28] one.
    if data.sample_shape.len() > 1 && input.len() > 1 && data.sample_shape != input {
        return Err(unfit(format!(
            "samples have shape {:?} but the model takes {:?}",
            data.sample_shape, input
        )));
    }
    let want: usize = input.iter().product();
    if data.sample_len() != want {
        return Err(unfit(format!(
            "samples have {} values ({:?}) but the model takes {want} ({:?})",
            data.sample_len(),
            data.sample_shape,
            runner.input_shape()
        )));
    }
    if let Some((i, &l)) = data
        .labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= runner.classes())
    {
        return Err(unfit(format!(
            "sample {i} has label {l}, but the model has {} classes (0–{})",
            runner.classes(),
            runner.classes().saturating_sub(1)
        )));
    }
    Ok(())
}

/// Run `data` through `runner` in batches of `batch`. Sums are float64 in sample
/// order, so the figures do not depend on the batch size or the thread count.
/// `progress(done, total)` returns false to cancel.
pub fn evaluate(
    runner: &dyn Runner,
    data: &Dataset,
    batch: usize,
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<Metrics> {
    check_fit(runner, data)?;
    let (n, len, classes) = (data.len(), data.sample_len(), runner.classes());
    let batch = batch.max(1);
    let (mut top1, mut top5, mut loss) = (0usize, 0usize, 0f64);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let m = batch.min(n - done);
        let scores = runner.logits(&data.x[done * len..(done + m) * len], m)?;
        if scores.len() != m * classes {
            return Err(Error::InvalidSetting(format!(
                "the model returned {} scores for {m} samples of {classes} classes",
                scores.len()
            )));
        }
        for (s, &label) in scores.chunks(classes).zip(&data.labels[done..done + m]) {
            let y = s[label as usize];
            // Rank = how many scores beat the label's (ties count for the label).
            let rank = s.iter().filter(|&&v| v > y).count();
            top1 += usize::from(rank == 0);
            top5 += usize::from(rank < 5);
            let max = s
                .iter()
                .fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)));
            let lse = max
                + s.iter()
                    .map(|&v| (f64::from(v) - max).exp())
                    .sum::<f64>()
                    .ln();
            loss += lse - f64::from(y);
        }
        done += m;
        if !progress(done, n) {
            return Err(Error::Cancelled);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let nf = n.max(1) as f64;
    Ok(Metrics {
        samples: n,
        top1: top1 as f64 / nf,
        top5: (classes > 5).then_some(top5 as f64 / nf),
        loss: loss / nf,
        samples_per_second: n as f64 / seconds.max(1e-9),
        language: None,
        embedding: None,
    })
}

/// A model's own tensors, with compressed ones (from `apply`) taking their place.
pub struct ModelWeights<'a> {
    pub model: &'a Model,
    pub replaced: HashMap<&'a str, &'a AppliedTensor>,
}

impl<'a> ModelWeights<'a> {
    pub fn new(model: &'a Model, applied: &'a [(usize, AppliedTensor)]) -> Self {
        ModelWeights {
            model,
            replaced: applied.iter().map(|(_, t)| (t.name.as_str(), t)).collect(),
        }
    }
}

impl WeightSource for ModelWeights<'_> {
    fn weight(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        if let Some(t) = self.replaced.get(name) {
            return Ok((
                t.values.clone(),
                t.shape.iter().map(|&d| d as usize).collect(),
            ));
        }
        let i = self
            .model
            .tensor_index(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.model.path.clone(),
                name: name.to_owned(),
            })?;
        let shape = self.model.tensors[i]
            .shape
            .iter()
            .map(|&d| d as usize)
            .collect();
        Ok((self.model.tensor_f32(i)?, shape))
    }
}

/// How a model's weights become a forward pass.
pub enum Network {
    /// A sequential network described by an architecture spec (given or proposed).
    Sequential(arch::ArchSpec),
    /// The model's own ONNX graph.
    Onnx(onnx::OnnxGraph),
    /// A llama-family GGUF measured on a text (see [`causal_lm`]).
    CausalLm(causal_lm::CausalLm),
    /// A BERT sentence encoder measured on sentence pairs (see [`embeddings`]).
    SentenceEncoder(Box<embeddings::SentenceTask>),
}

/// The data at `path` as `model` reads it: a text cut into token windows for a
/// language model, else a labelled data set (see [`data::load`]).
pub fn load_data(model: &Model, path: &Path) -> Result<data::Dataset> {
    if causal_lm::is_causal_lm(model) {
        causal_lm::text_dataset(model, path)
    } else if embeddings::is_sentence_encoder(model) {
        embeddings::sentence_dataset(path)
    } else {
        data::load(path)
    }
}

impl Network {
    /// The network for `model` on `data`: the ONNX graph of an ONNX model, else the
    /// spec at `arch`, else one proposed from the tensor names and shapes. The notes
    /// say what a proposal assumed.
    pub fn resolve(
        model: &Model,
        arch: Option<&Path>,
        data: &data::Dataset,
    ) -> Result<(Network, Vec<String>)> {
        if causal_lm::is_causal_lm(model) {
            if let Some(a) = arch {
                return Err(Error::InvalidSetting(format!(
                    "{}: a llama GGUF runs as a language model; the architecture spec {} does not apply",
                    model.path.display(),
                    a.display()
                )));
            }
            return Ok((
                Network::CausalLm(causal_lm::CausalLm::new(model)?),
                Vec::new(),
            ));
        }
        if embeddings::is_sentence_encoder(model) {
            if let Some(a) = arch {
                return Err(Error::InvalidSetting(format!(
                    "{}: a BERT sentence encoder runs from its config.json; the architecture spec {} does not apply",
                    model.path.display(),
                    a.display()
                )));
            }
            let task = embeddings::SentenceTask::new(model, &data.source)?;
            return Ok((Network::SentenceEncoder(Box::new(task)), Vec::new()));
        }
        if model.format == Format::Onnx {
            if let Some(a) = arch {
                return Err(Error::InvalidSetting(format!(
                    "{}: an ONNX model runs its own graph; the architecture spec {} does not apply",
                    model.path.display(),
                    a.display()
                )));
            }
            let graph = onnx::OnnxGraph::load(model, &data.sample_shape)?;
            return Ok((Network::Onnx(graph), Vec::new()));
        }
        let (spec, notes) = match arch {
            Some(p) => (arch::ArchSpec::load(p)?, Vec::new()),
            None => {
                let p = arch::propose(model, data.sample_len())?;
                (p.spec, p.notes)
            }
        };
        Ok((Network::Sequential(spec), notes))
    }

    /// A runner with `model`'s weights, compressed ones from `applied` in their place.
    pub fn runner(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
    ) -> Result<Box<dyn Runner>> {
        Ok(match self {
            Network::Sequential(spec) => {
                // Candle checks the spec against the weights, naming the layer of any
                // mismatch; tract runs it (see `OnnxGraph::from_spec`).
                build_runner(model, spec, applied)?;
                sequential_runner(spec, &ModelWeights::new(model, applied), &model.path)?
            }
            Network::Onnx(graph) => Box::new(graph.runner(applied)?),
            Network::CausalLm(_) | Network::SentenceEncoder(_) => {
                return Err(Error::InvalidSetting(format!(
                    "{}: a language model or sentence encoder is measured on its text as a whole, not sample by sample",
                    model.path.display()
                )));
            }
        })
    }

    /// The sequential spec, if this is one (to show or save it).
    pub fn spec(&self) -> Option<&arch::ArchSpec> {
        match self {
            Network::Sequential(spec) => Some(spec),
            Network::Onnx(_) | Network::CausalLm(_) | Network::SentenceEncoder(_) => None,
        }
    }
}

/// The forward pass of a sequential spec that fits `weights` (see [`build_runner`]):
/// a first convolution over few channels computed directly ([`first_conv`]), the
/// rest on tract (see [`onnx::OnnxGraph::from_spec`]). `origin` is what errors name.
pub fn sequential_runner(
    spec: &arch::ArchSpec,
    weights: &dyn WeightSource,
    origin: &Path,
) -> Result<Box<dyn Runner>> {
    Ok(match first_conv::FirstConv::from_spec(spec, weights)? {
        Some(head) => {
            let rest = spec.from_layer(head.layers(), head.output_shape().to_vec());
            Box::new(first_conv::FirstConvRunner {
                rest: onnx::OnnxGraph::from_spec(&rest, weights, origin)?.runner(&[])?,
                input: spec.input.clone(),
                head,
            })
        }
        None => Box::new(onnx::OnnxGraph::from_spec(spec, weights, origin)?.runner(&[])?),
    })
}

/// The sequential network of `arch` with `model`'s weights, compressed ones from
/// `applied` in their place.
pub fn build_runner(
    model: &Model,
    arch: &arch::ArchSpec,
    applied: &[(usize, AppliedTensor)],
) -> Result<sequential::Sequential> {
    sequential::Sequential::build(arch, &ModelWeights::new(model, applied)).map_err(|e| {
        Error::Architecture {
            model: model.path.clone(),
            cause: Box::new(e),
        }
    })
}
