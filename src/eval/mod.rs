//! Accuracy on real data: data sets, the evaluation loop and the networks measured
//! on them.
//!
//! [`evaluate`] runs a data set through a [`Runner`] (see [`crate::net`]) in
//! fixed-size batches and reports top-1 / top-5 accuracy and mean cross-entropy;
//! [`Network`] says how a model's weights become a forward pass (a sequential spec,
//! its own ONNX graph, a llama GGUF on a text, a BERT encoder on sentence pairs), and
//! [`evaluator::Evaluator`] measures many compressed variants of one model, reusing
//! what they share.

pub mod attach;
pub mod causal_lm;
pub mod data;
pub mod embeddings;
pub mod evaluator;
pub mod imatrix;
pub mod llama_inputs;

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::compress::apply::AppliedTensor;
use crate::compress::calibration::{Need, Statistics};
use crate::error::{Error, Result};
use crate::model::{Format, Model};
use crate::net::spec::ArchSpec;
use crate::net::weights::ModelWeights;
use crate::net::{Runner, onnx, propose, sequential_runner};
use data::Dataset;

/// Samples per forward pass (results do not depend on it).
pub const DEFAULT_BATCH: usize = 256;

/// What a model gets right on a data set. Its JSON adds `top1_stderr`, the binomial
/// standard error of `top1` (see [`Metrics::top1_standard_error`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub samples: usize,
    /// Fraction whose highest score is the label.
    pub top1: f64,
    /// Fraction whose label is among the five highest scores (more than 5 classes only).
    pub top5: Option<f64>,
    /// Mean cross-entropy of softmax(scores) against the labels, nats.
    pub loss: f64,
    /// Wall-clock throughput of the forward passes.
    pub samples_per_second: f64,
    /// The task measured, with its own figures (in JSON a `language` or `embedding`
    /// member; none for classification).
    pub task: TaskFigures,
}

impl Serialize for Metrics {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("samples", &self.samples)?;
        map.serialize_entry("top1", &self.top1)?;
        map.serialize_entry("top1_stderr", &self.top1_standard_error())?;
        if let Some(t5) = self.top5 {
            map.serialize_entry("top5", &t5)?;
        }
        map.serialize_entry("loss", &self.loss)?;
        map.serialize_entry("samples_per_second", &self.samples_per_second)?;
        match &self.task {
            TaskFigures::Classification => {}
            TaskFigures::Language(l) => map.serialize_entry("language", l)?,
            TaskFigures::Embedding(e) => map.serialize_entry("embedding", e)?,
        }
        map.end()
    }
}

/// The binomial standard error of a share `p` of `n` trials, `√(p(1 − p)/n)`: how far
/// a measured accuracy may move on another sample of the same size.
pub fn binomial_standard_error(p: f64, n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    (p * (1.0 - p) / n as f64).max(0.0).sqrt()
}

/// Whether `a` and `b`, each with its standard error, differ by less than twice
/// (1.96×) the standard error of their difference (taken as independent, which
/// overstates it for two models on the same samples: a conservative "within noise").
pub fn within_noise(a: (f64, f64), b: (f64, f64)) -> bool {
    let se = (a.1 * a.1 + b.1 * b.1).sqrt();
    (a.0 - b.0).abs() < 1.96 * se
}

/// Which task a measurement is of, with that task's own figures: what every front
/// end matches on (exhaustively) to show a measurement. Decided by the [`Network`]
/// that measured it ([`Network::task`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskFigures {
    /// Labelled samples: top-1, top-5 and loss are the figures.
    Classification,
    /// A language model (whose samples are the text's tokens, its classes the
    /// vocabulary) on a text: perplexity, and the distance from the original's
    /// predictions.
    Language(causal_lm::LanguageMetrics),
    /// A sentence encoder on sentence pairs (its samples are sentences; `top1` the
    /// share whose nearest neighbour is unchanged, `loss` the mean cosine distance to
    /// the original's embeddings): the full comparison.
    Embedding(embeddings::EmbeddingMetrics),
}

impl Serialize for TaskFigures {
    /// As the one member (or none) it adds to [`Metrics`]' JSON.
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            TaskFigures::Classification => {}
            TaskFigures::Language(l) => map.serialize_entry("language", l)?,
            TaskFigures::Embedding(e) => map.serialize_entry("embedding", e)?,
        }
        map.end()
    }
}

impl Metrics {
    /// The standard error of `top1` over the `samples` (binomial).
    pub fn top1_standard_error(&self) -> f64 {
        binomial_standard_error(self.top1, self.samples)
    }

    /// The standard error of [`Metrics::quality`], where it is a share of samples
    /// (top-1, or a language model's top-1 agreement); `None` for a mean cosine.
    pub fn quality_standard_error(&self) -> Option<f64> {
        match self.task {
            TaskFigures::Classification => Some(self.top1_standard_error()),
            TaskFigures::Language(l) => {
                Some(binomial_standard_error(l.top1_agreement, self.samples))
            }
            TaskFigures::Embedding(_) => None,
        }
    }

    /// A language model's figures, if these are of one.
    pub fn language(&self) -> Option<causal_lm::LanguageMetrics> {
        match self.task {
            TaskFigures::Language(l) => Some(l),
            TaskFigures::Classification | TaskFigures::Embedding(_) => None,
        }
    }

    /// A sentence encoder's figures, if these are of one.
    pub fn embedding(&self) -> Option<embeddings::EmbeddingMetrics> {
        match self.task {
            TaskFigures::Embedding(e) => Some(e),
            TaskFigures::Classification | TaskFigures::Language(_) => None,
        }
    }

    /// The figure curves, Pareto fronts and sensitivities rank by (higher is better):
    /// top-1 accuracy, or for a language model the top-1 agreement with the
    /// original's next tokens (its own top-1 on a short text is noisy, and can even
    /// rise by chance; agreement measures what compression lost).
    /// For a sentence encoder, the mean cosine similarity to the original's embeddings.
    pub fn quality(&self) -> f64 {
        match self.task {
            TaskFigures::Language(l) => l.top1_agreement,
            TaskFigures::Embedding(e) => e.mean_cosine,
            TaskFigures::Classification => self.top1,
        }
    }

    /// What [`Metrics::quality`] is, for labels.
    pub fn quality_name(&self) -> &'static str {
        match self.task {
            TaskFigures::Language(_) => "top-1 agreement",
            TaskFigures::Embedding(_) => "mean cosine",
            TaskFigures::Classification => "top-1",
        }
    }
}

/// Whether `data`'s samples fit a model input of shape `input` (labels aside).
pub fn check_input(input: &[usize], data: &Dataset) -> Result<()> {
    let unfit = |problem: String| Error::Data {
        path: data.source.clone(),
        problem,
    };
    if data.is_empty() {
        return Err(unfit("holds no samples to measure on".into()));
    }
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
            input
        )));
    }
    Ok(())
}

/// Check that `data` fits `runner` before anything runs: feature count and labels.
pub fn check_fit(input: &[usize], classes: usize, data: &Dataset) -> Result<()> {
    check_input(input, data)?;
    let unfit = |problem: String| Error::Data {
        path: data.source.clone(),
        problem,
    };
    if let Some((i, &l)) = data
        .labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(unfit(format!(
            "sample {i} has label {l}, but the model has {classes} classes (0–{})",
            classes.saturating_sub(1)
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
    check_fit(runner.input_shape(), runner.classes(), data)?;
    let (n, len, classes) = (data.len(), data.sample_len(), runner.classes());
    let batch = batch.max(1);
    let (mut top1, mut top5, mut loss) = (0usize, 0usize, 0f64);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let m = batch.min(n - done);
        let scores = runner.logits(&data.x[done * len..(done + m) * len], m)?;
        if scores.len() != m * classes {
            return Err(Error::Engine {
                context: "forward pass".into(),
                cause: format!(
                    "the model returned {} scores for {m} samples of {classes} classes",
                    scores.len()
                ),
            });
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
        task: TaskFigures::Classification,
    })
}

/// A network as an ONNX graph and the compressed tensors it holds by name (see
/// [`Network::onnx_graph`]).
pub struct BoundGraph<'a> {
    pub graph: Cow<'a, onnx::OnnxGraph>,
    pub tensors: Cow<'a, [(usize, AppliedTensor)]>,
}

/// How a model's weights become a forward pass.
pub enum Network {
    /// A sequential network described by an architecture spec (given or proposed).
    Sequential(ArchSpec),
    /// The model's own ONNX graph.
    Onnx(onnx::OnnxGraph),
    /// A llama-family GGUF measured on a text (see [`causal_lm`]).
    CausalLm(causal_lm::CausalLm),
    /// A BERT sentence encoder measured on sentence pairs (see [`embeddings`]).
    SentenceEncoder(Box<embeddings::SentenceTask>),
}

/// Data-aware methods cannot learn from `model`'s network yet.
pub fn statistics_unsupported(model: &Model) -> Error {
    Error::Unsupported {
        path: model.path.clone(),
        what: "data-aware methods (Wanda, SparseGPT, GPTQ, AWQ) learn from the layer inputs of \
               sequential networks, ONNX graphs and llama GGUFs; a sentence encoder's are \
               not collected yet"
            .into(),
    }
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

/// `samples` calibration samples of the file at `path`, read as `model` reads its
/// data (a text as token windows, without the cap on tokens scored), spread evenly
/// over the file (see [`data::Dataset::split_apart`]): what data-aware methods and
/// static activation quantization learn from instead of samples kept apart from
/// the evaluation data.
pub fn load_calibration(model: &Model, path: &Path, samples: usize) -> Result<data::Dataset> {
    let (all, unit) = if causal_lm::is_causal_lm(model) {
        (
            causal_lm::calibration_windows(model, path)?,
            format!("windows of {} tokens", causal_lm::WINDOW),
        )
    } else {
        (load_data(model, path)?, "samples".to_owned())
    };
    match samples.cmp(&all.len()) {
        std::cmp::Ordering::Greater => Err(Error::Data {
            path: path.to_owned(),
            problem: format!(
                "holds {} {unit}, fewer than the {samples} the recipe calibrates on \
                 (lower [calibration] samples or give a longer calibration file)",
                all.len()
            ),
        }),
        std::cmp::Ordering::Equal => Ok(all),
        std::cmp::Ordering::Less => Ok(all.split_apart(samples)?.1),
    }
}

/// What results learned from statistics of calibration samples depend on: the
/// samples (their `data_sha256`, see [`Statistics::data_sha256`]) and the network
/// they ran through (another spec gives other layer inputs).
pub fn calibration_key(data_sha256: &str, spec: Option<&ArchSpec>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_sha256.hash(&mut h);
    if let Some(spec) = spec {
        serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    }
    h.finish()
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
            Some(p) => (ArchSpec::load(p)?, Vec::new()),
            None => {
                let p = propose::propose(model, data.sample_len())?;
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
                // The spec is checked against the weights, naming the layer of any
                // mismatch; tract runs it (see `OnnxGraph::from_spec`).
                crate::net::check(model, spec, applied)?;
                sequential_runner(spec, &ModelWeights::new(model, applied), &model.path)?
            }
            Network::Onnx(graph) => Box::new(graph.runner(applied)?),
            Network::CausalLm(_) | Network::SentenceEncoder(_) => {
                return Err(Error::Unsupported {
                    path: model.path.clone(),
                    what: "a language model or sentence encoder is measured on its text as a whole, not sample by sample".into(),
                });
            }
        })
    }

    /// Whether data-aware methods can learn from this network's layer inputs (see
    /// [`Network::statistics`]): sequential networks, ONNX graphs and llama GGUFs.
    pub fn collects_statistics(&self) -> bool {
        matches!(
            self,
            Network::Sequential(_) | Network::Onnx(_) | Network::CausalLm(_)
        )
    }

    /// Whether data-aware methods learn block by block, each block's inputs coming
    /// from the blocks before it already compressed (a llama GGUF: see
    /// [`llama_inputs::apply_block_by_block`]), rather than from statistics of the
    /// original collected once.
    pub fn learns_block_by_block(&self) -> bool {
        matches!(self, Network::CausalLm(_))
    }

    /// The weights of the layers whose inputs data-aware methods can learn from (see
    /// `net::capture::weighted_layers`).
    pub fn calibrated_layers(&self, model: &Model) -> Result<Vec<String>> {
        if let Network::CausalLm(_) = self {
            return Ok(llama_inputs::calibrated_layers(model));
        }
        let bound = self
            .onnx_graph(model, &[])?
            .ok_or_else(|| statistics_unsupported(model))?;
        Ok(bound
            .graph
            .proto()
            .graph
            .as_ref()
            .map(crate::net::capture::weighted_layers)
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.weight)
            .collect())
    }

    /// What data-aware methods learn from: the statistics `need` asks for of the
    /// weighted layers whose weights are `tensors`, over the calibration samples
    /// `calibration`, with the original weights (see `net::capture` and
    /// [`llama_inputs`]). `progress(done, total)` returns false to
    /// cancel.
    pub fn statistics(
        &self,
        model: &Model,
        calibration: &data::Dataset,
        need: Need,
        tensors: &[String],
        progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Statistics> {
        let sha = crate::checksum::sha256_f32(&calibration.x);
        let key = calibration_key(&sha, self.spec());
        let mut stats = match self {
            Network::CausalLm(_) => {
                llama_inputs::statistics(model, calibration, need, tensors, progress)?
            }
            _ => {
                let bound = self
                    .onnx_graph(model, &[])?
                    .ok_or_else(|| statistics_unsupported(model))?;
                check_input(bound.graph.input_shape(), calibration)?;
                crate::net::capture::collect(
                    &bound.graph,
                    &calibration.x,
                    tensors,
                    need,
                    key,
                    progress,
                )?
            }
        };
        stats.data_key = key;
        stats.data_sha256 = sha;
        Ok(stats)
    }

    /// The network as an ONNX graph with `model`'s weights, `applied`'s in their
    /// place, and the compressed tensors the graph stores under their names (those
    /// an export writes as codes). A spec's graph is built with `applied` folded in
    /// (a batch norm's into constants of its own, so it holds fewer); an ONNX
    /// model's is its own, `applied` bound when it runs. `None` for a language model
    /// or sentence encoder, which have no such graph.
    pub fn onnx_graph<'a>(
        &'a self,
        model: &Model,
        applied: &'a [(usize, AppliedTensor)],
    ) -> Result<Option<BoundGraph<'a>>> {
        Ok(match self {
            Network::Sequential(spec) => {
                crate::net::check(model, spec, applied)?;
                let graph = onnx::OnnxGraph::from_spec(
                    spec,
                    &ModelWeights::new(model, applied),
                    &model.path,
                )?;
                let held = applied
                    .iter()
                    .filter(|(_, t)| graph.holds(&t.name))
                    .cloned()
                    .collect();
                Some(BoundGraph {
                    graph: Cow::Owned(graph),
                    tensors: Cow::Owned(held),
                })
            }
            Network::Onnx(graph) => Some(BoundGraph {
                graph: Cow::Borrowed(graph),
                tensors: Cow::Borrowed(applied),
            }),
            Network::CausalLm(_) | Network::SentenceEncoder(_) => None,
        })
    }

    /// The sequential spec, if this is one (to show or save it).
    pub fn spec(&self) -> Option<&ArchSpec> {
        match self {
            Network::Sequential(spec) => Some(spec),
            Network::Onnx(_) | Network::CausalLm(_) | Network::SentenceEncoder(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::causal_lm::LanguageMetrics;
    use super::embeddings::EmbeddingMetrics;
    use super::{Metrics, TaskFigures};

    /// The JSON that sweeps, `eval --json` and exports write keeps its shape: the
    /// task's figures are one `language` (or `embedding`) member after the common
    /// ones, and none for classification (the text written out by hand; the standard
    /// error of a half of 4 is √(0.25/4) = 0.25).
    #[test]
    fn metrics_json_has_one_member_per_task() {
        let mut m = Metrics {
            samples: 4,
            top1: 0.5,
            top5: None,
            loss: 1.25,
            samples_per_second: 8.0,
            task: TaskFigures::Classification,
        };
        let json = |m: &Metrics| serde_json::to_string(m).expect("json");
        assert_eq!(
            json(&m),
            r#"{"samples":4,"top1":0.5,"top1_stderr":0.25,"loss":1.25,"samples_per_second":8.0}"#
        );
        m.task = TaskFigures::Language(LanguageMetrics {
            perplexity: 12.5,
            kl_divergence: 0.25,
            kl_max: 2.0,
            top1_agreement: 0.75,
        });
        assert_eq!(
            json(&m),
            r#"{"samples":4,"top1":0.5,"top1_stderr":0.25,"loss":1.25,"samples_per_second":8.0,"language":{"perplexity":12.5,"kl_divergence":0.25,"kl_max":2.0,"top1_agreement":0.75}}"#
        );
        m.task = TaskFigures::Embedding(EmbeddingMetrics {
            sentences: 3,
            mean_cosine: 0.5,
            min_cosine: 0.25,
            mean_similarity_change: 0.125,
            max_similarity_change: 0.75,
            spearman: None,
        });
        assert_eq!(
            json(&m),
            r#"{"samples":4,"top1":0.5,"top1_stderr":0.25,"loss":1.25,"samples_per_second":8.0,"embedding":{"sentences":3,"mean_cosine":0.5,"min_cosine":0.25,"mean_similarity_change":0.125,"max_similarity_change":0.75}}"#
        );
    }
}
