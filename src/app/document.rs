//! The open model and everything that belongs to it: its statistics, the selection
//! and table, the compression configuration and its undo history, the evaluation of
//! that configuration, the attached data, histograms computed on demand, compressed
//! tensors cached for sliders and sweeps, and pinned comparisons. Opening another
//! model replaces the document whole, so nothing of the previous one (a failed
//! evaluation, a job still running, a cache) can apply to the new one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::accuracy::Attached;
use super::background::{drain, take_end};
use super::history::History;
use super::panels::compare::Compare;
use super::panels::compress::ActivationSupport;
use super::panels::layers::TableState;
use super::speeds::Speeds;
use super::{LoadedModel, TENSOR_CACHE_BYTES};
use crate::compress::apply::TensorCache;
use crate::compress::config::Config;
use crate::jobs::{JobEvent, JobHandle, spawn_job, spawn_streaming};
use crate::measure::evaluation::{self, Evaluation};
use crate::stats::{Histogram, HistogramRange, StatsOptions};

/// A histogram's tensor, bins and range.
pub(super) type HistogramKey = (usize, usize, HistogramRange);

/// What an evaluation is computed for: configuration, histogram bins, data version.
type EvalKey = (Config, usize, u64);

/// A histogram being computed for a (tensor, bins, range) not computed at load time.
struct HistogramJob {
    key: HistogramKey,
    job: JobHandle<Histogram>,
}

/// A compression evaluation running for its key: it sends the sizes first (a
/// `Point`), then progress through the task, then the whole evaluation.
struct Evaluating {
    key: EvalKey,
    job: JobHandle<Evaluation, Evaluation>,
    progress: (usize, usize),
}

/// A data set being attached: loading, then the baseline evaluation.
struct Attaching {
    job: JobHandle<Attached>,
    progress: (usize, usize),
}

/// The open model and its state.
pub struct Document {
    pub loaded: LoadedModel,
    pub selected: Option<usize>,
    pub table: TableState,
    /// What the compression controls are set to.
    pub config: Config,
    /// Undo and redo of `config`.
    pub history: History,
    /// The latest finished evaluation (possibly of an older configuration while a
    /// newer one is computed).
    pub evaluation: Option<Arc<Evaluation>>,
    evaluating: Option<Evaluating>,
    /// The settings whose evaluation failed (not retried until they change).
    evaluation_failed: Option<EvalKey>,
    /// The data set attached, with its baseline.
    pub attached: Option<Attached>,
    attaching: Option<Attaching>,
    /// Counts attachments, so an evaluation knows which data it used.
    data_version: u64,
    histograms: HashMap<HistogramKey, Histogram>,
    histogram_job: Option<HistogramJob>,
    /// Compressed tensors, shared by the sliders and the sweeps.
    pub tensor_cache: Arc<TensorCache>,
    /// Pinned configurations, compared side by side.
    pub compare: Compare,
    /// The exports' measured speed, for the compare tab.
    pub speeds: Speeds,
    /// The block type most weights already have (decided once: the model is fixed).
    already_quantized: Option<&'static str>,
}

impl Document {
    /// The document of a freshly opened model; `restored` is the configuration last
    /// used with it, one undo away from none.
    pub fn new(loaded: LoadedModel, restored: Option<Config>) -> Document {
        // The first tensor shown: the first weight matrix (floating point, rank ≥ 2)
        // in layer order (file order for most formats, graph order for ONNX), not an
        // index buffer or a bias; else the first of the first layer.
        let model = &loaded.model;
        let in_order = || model.layers.iter().flat_map(|l| l.tensors.iter().copied());
        let first_shown = in_order()
            .find(|&i| {
                model
                    .tensors
                    .get(i)
                    .is_some_and(|t| t.shape.len() >= 2 && t.dtype.is_float())
            })
            .or_else(|| in_order().next());
        let selected = first_shown.or((!loaded.reports.is_empty()).then_some(0));
        let already_quantized = majority_block_type(&loaded.model);
        let mut config = Config::default();
        let mut history = History::default();
        history.reset(&config);
        if let Some(restored) = restored {
            config = restored;
            history.observe(&config, false);
        }
        Document {
            loaded,
            selected,
            table: TableState::default(),
            config,
            history,
            evaluation: None,
            evaluating: None,
            evaluation_failed: None,
            attached: None,
            attaching: None,
            data_version: 0,
            histograms: HashMap::new(),
            histogram_job: None,
            tensor_cache: Arc::new(TensorCache::new(TENSOR_CACHE_BYTES)),
            compare: Compare::default(),
            speeds: Speeds::default(),
            already_quantized,
        }
    }

    /// The block type most of the model's weights are already stored in, if they are
    /// (a quantized GGUF): re-quantizing them compounds two errors.
    pub fn already_quantized(&self) -> Option<&'static str> {
        self.already_quantized
    }

    /// What the open model's activations can be set to: quantized on the network
    /// that measures it (a sequential spec or an ONNX graph), or why not.
    pub fn activation_support(&self) -> ActivationSupport {
        use crate::eval::Network;
        let model = &self.loaded.model;
        match self.attached.as_ref().map(|a| a.evaluator.network()) {
            Some(Network::Sequential(_) | Network::Onnx(_)) => ActivationSupport::Simulated {
                samples: self.attached.as_ref().map(|a| a.evaluator.data().len()),
            },
            Some(Network::CausalLm(_)) => ActivationSupport::Llama,
            _ if crate::eval::causal_lm::is_causal_lm(model) => ActivationSupport::Llama,
            Some(Network::SentenceEncoder(_)) => ActivationSupport::Not(
                "Activation quantization is not simulated for BERT encoders yet: their \
                 activations stay float here",
            ),
            None if model.format == crate::model::Format::Onnx => {
                ActivationSupport::Simulated { samples: None }
            }
            None => ActivationSupport::Not(
                "Attach data (and, for a state_dict, its architecture) first: activations \
                 are quantized on the network that runs the model",
            ),
        }
    }

    /// Whether a data set is being attached (loaded and evaluated), with its progress.
    pub fn attaching(&self) -> Option<(usize, usize)> {
        self.attaching.as_ref().map(|a| a.progress)
    }

    /// How far the running evaluation's task figures are: (done, total) samples,
    /// windows or pairs.
    pub fn evaluation_progress(&self) -> Option<(usize, usize)> {
        self.evaluating.as_ref().map(|e| e.progress)
    }

    /// Whether an evaluation is running.
    pub fn is_evaluating(&self) -> bool {
        self.evaluating.is_some()
    }

    /// Whether a histogram is being computed.
    pub fn is_computing_histogram(&self) -> bool {
        self.histogram_job.is_some()
    }

    /// Attach `data` (and `arch`) on a worker.
    pub fn attach(
        &mut self,
        data: PathBuf,
        arch: Option<PathBuf>,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        // Keep an explicitly given architecture when only the data changes.
        let arch = arch.or_else(|| self.attached.as_ref().and_then(|a| a.arch_path.clone()));
        self.data_version += 1;
        let version = self.data_version;
        let model = self.loaded.model.clone();
        let job = spawn_job("attach-data", notify, move |progress| {
            crate::eval::attach::attach(&model, &data, arch.as_deref(), version, |done, total| {
                progress.report(done, total)
            })
        });
        self.attaching = Some(Attaching {
            job,
            progress: (0, 0),
        });
    }

    /// The key the current settings ask an evaluation for.
    fn eval_key(&self, bins: usize) -> EvalKey {
        let version = self.attached.as_ref().map_or(0, |a| a.version);
        (self.config.clone(), bins, version)
    }

    /// Whether the evaluation on screen is of the current configuration.
    pub fn evaluation_is_current(&self, bins: usize) -> bool {
        // With data attached, an evaluation counts only with accuracy on that data (a
        // configuration restored before the data arrived is measured again).
        let data = self.attached.as_ref().map(|a| a.version);
        self.config.is_identity() && self.evaluation.is_none()
            || self.evaluation.as_ref().is_some_and(|e| {
                e.config == self.config && e.bins == bins && e.accuracy.map(|(v, _)| v) == data
            })
    }

    /// Start evaluating the current configuration unless it is on screen or running.
    /// At most one evaluation runs: a stale one is cancelled and the current
    /// configuration starts when it has ended (latest wins).
    pub fn schedule_evaluation(&mut self, bins: usize, notify: impl Fn() + Send + Sync + 'static) {
        let key = self.eval_key(bins);
        if self.evaluation_failed.as_ref() == Some(&key) {
            return;
        }
        if let Some(running) = &self.evaluating {
            if running.key != key {
                running.job.cancel();
            }
            return;
        }
        if self.config.is_identity() {
            self.evaluation = None;
            return;
        }
        if self.evaluation_is_current(bins) {
            return;
        }
        let model = self.loaded.model.clone();
        let reports = self.loaded.reports.clone();
        let (config, bins, version) = key.clone();
        let evaluator = self.attached.as_ref().map(|a| a.evaluator.clone());
        let cache = self.tensor_cache.clone();
        let job = spawn_streaming("compress", notify, move |progress| {
            let accuracy = evaluator.as_deref().map(|e| (version, e));
            let cancelled = || progress.is_cancelled();
            // The exact sizes go on screen at once; the task's figures follow.
            let mut sizes = |e: &Evaluation| {
                progress.point(e.clone());
            };
            let mut report = |done, total| progress.report(done, total);
            let hooks = evaluation::Hooks {
                cancelled: &cancelled,
                sizes: &mut sizes,
                progress: &mut report,
            };
            evaluation::evaluate(&model, &reports, &config, bins, &cache, accuracy, hooks)
        });
        self.evaluating = Some(Evaluating {
            key,
            job,
            progress: (0, 0),
        });
    }

    /// The histogram for tensor `index` under `key`'s bins and range, if computed.
    pub fn cached_histogram(&self, key: HistogramKey) -> Option<&Histogram> {
        let at_load = self
            .loaded
            .reports
            .get(key.0)?
            .stats
            .as_ref()?
            .histogram
            .as_ref();
        at_load
            .filter(|h| h.range == key.2 && h.counts.len() == key.1)
            .or_else(|| self.histograms.get(&key))
    }

    /// Start computing the histogram for `key` in the background unless it is at hand
    /// or already being computed (a newer request replaces an older one).
    pub fn request_histogram(
        &mut self,
        key: HistogramKey,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        let index = key.0;
        let has_stats = self
            .loaded
            .reports
            .get(index)
            .and_then(|r| r.stats.as_ref())
            .is_some();
        if !has_stats
            || self.cached_histogram(key).is_some()
            || self.histogram_job.as_ref().map(|h| h.key) == Some(key)
        {
            return;
        }
        let model = self.loaded.model.clone();
        let options = StatsOptions {
            bins: key.1,
            range: key.2,
        };
        let job = spawn_job("histogram", notify, move |_| {
            let stats = model.tensor_stats(index, &options)?;
            stats
                .histogram
                .ok_or(crate::Error::InvalidSetting("no finite values".into()))
        });
        self.histogram_job = Some(HistogramJob { key, job });
    }

    /// Take in what the document's jobs finished (never blocks); returns the error
    /// of one that failed.
    pub fn poll(&mut self) -> Option<String> {
        let mut error = self.speeds.poll();
        if let Some(attaching) = &mut self.attaching
            && let Some(end) = drain(&attaching.job, &mut attaching.progress)
        {
            self.attaching = None;
            match end {
                JobEvent::Finished(a) => self.attached = Some(a),
                JobEvent::Failed(e) => error = Some(e.to_string()),
                _ => {}
            }
        }
        let mut ended = None;
        if let Some(running) = &mut self.evaluating {
            while let Ok(event) = running.job.events.try_recv() {
                match event {
                    JobEvent::Progress { done, total, .. } => running.progress = (done, total),
                    // The sizes, before the task's figures.
                    JobEvent::Point(sizes) => self.evaluation = Some(Arc::new(sizes)),
                    end if end.is_end() => ended = Some(end),
                    _ => {}
                }
            }
        }
        if let Some(running) = &self.evaluating
            && let Some(event) = ended
        {
            let key = running.key.clone();
            self.evaluating = None;
            match event {
                JobEvent::Finished(e) => self.evaluation = Some(Arc::new(e)),
                JobEvent::Failed(e) => {
                    error = Some(e.to_string());
                    // Not again for the same settings: the error stays on screen.
                    self.evaluation_failed = Some(key);
                }
                _ => {}
            }
        }
        let key = self.histogram_job.as_ref().map(|h| h.key);
        let ended = take_end(&mut self.histogram_job, |h| &h.job);
        match (key, ended) {
            (Some(key), Some(JobEvent::Finished(hist))) => {
                self.histograms.insert(key, hist);
            }
            (_, Some(JobEvent::Failed(e))) => error = Some(e.to_string()),
            _ => {}
        }
        error
    }
}

/// The block type most of `model`'s weights are stored in, if most are (a quantized
/// GGUF): re-quantizing them compounds two errors.
fn majority_block_type(model: &crate::model::Model) -> Option<&'static str> {
    let mut by_type: Vec<(crate::dtype::GgmlQuant, u64)> = Vec::new();
    let mut total = 0u64;
    for t in &model.tensors {
        total += t.numel;
        if let crate::dtype::DType::Quant(q) = t.dtype {
            match by_type.iter_mut().find(|(k, _)| *k == q) {
                Some((_, n)) => *n += t.numel,
                None => by_type.push((q, t.numel)),
            }
        }
    }
    let quantized: u64 = by_type.iter().map(|(_, n)| n).sum();
    // Mostly block-quantized: the usual downloaded GGUF.
    (2 * quantized > total)
        .then(|| {
            by_type
                .iter()
                .max_by_key(|(_, n)| *n)
                .map(|(q, _)| q.name())
        })
        .flatten()
}
