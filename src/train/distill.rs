//! Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a
//! Neural Network", 2015): a small student learns from a teacher's softened class
//! probabilities as well as from the labels,
//!
//! loss = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(y, z_s),
//!
//! with the KL divergence averaged over the batch (PyTorch's `batchmean`). The T²
//! keeps the soft term's gradients on the scale of the hard one's. With α = 0 the
//! same loop trains the student from labels alone: the baseline that shows what the
//! teacher adds.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use super::trainable::{TrainNet, candle};
use super::{Fitted, Hooks, Soft, TrainEvent, TrainOptions, fit, split};
use crate::error::{Error, Result};
use crate::eval::data::Dataset;
use crate::eval::{DEFAULT_BATCH, Metrics, check_fit, evaluate};
use crate::net::spec::ArchSpec;
use crate::net::weights::Weights;
use crate::net::{Runner, sequential_runner};

/// Temperature and mix of the distillation loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distillation {
    /// T: above 1 softens both distributions, exposing the teacher's "dark knowledge".
    pub temperature: f64,
    /// α: weight of the soft term (0 = labels only, 1 = teacher only).
    pub alpha: f64,
}

impl Default for Distillation {
    fn default() -> Self {
        Distillation {
            temperature: 4.0,
            alpha: 0.9,
        }
    }
}

impl Distillation {
    pub fn check(&self) -> Result<()> {
        let temperature_ok = self.temperature > 0.0 && self.temperature.is_finite();
        if !temperature_ok || !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::InvalidSetting(format!(
                "distillation needs a temperature > 0 and 0 ≤ α ≤ 1 (got T = {}, α = {})",
                self.temperature, self.alpha
            )));
        }
        Ok(())
    }
}

/// The distillation loss for a batch of student logits `z_s`, teacher logits `z_t`
/// (both [N, classes]) and labels `y` [N].
pub fn loss(z_s: &Tensor, z_t: &Tensor, y: &Tensor, d: Distillation) -> Result<Tensor> {
    let ce = candle_nn::loss::cross_entropy(z_s, y).map_err(candle)?;
    if d.alpha == 0.0 {
        return Ok(ce);
    }
    let t = d.temperature;
    let n = z_s.dim(0).map_err(candle)? as f64;
    let kl = (|| {
        let log_ps = candle_nn::ops::log_softmax(&(z_s / t)?, D::Minus1)?;
        let log_pt = candle_nn::ops::log_softmax(&(z_t / t)?, D::Minus1)?;
        let pt = log_pt.exp()?;
        (pt * (log_pt - log_ps)?)?.sum_all()? / n
    })()
    .map_err(candle)?;
    (|| (kl * (d.alpha * t * t))? + (ce * (1.0 - d.alpha))?)().map_err(candle)
}

/// The teacher's logits for every sample of `data`, row-major.
pub fn teacher_logits(teacher: &dyn Runner, data: &Dataset) -> Result<Vec<f32>> {
    check_fit(teacher.input_shape(), teacher.classes(), data)?;
    let len = data.sample_len();
    let mut out = Vec::with_capacity(data.len() * teacher.classes());
    for (k, chunk) in data.x.chunks(DEFAULT_BATCH * len).enumerate() {
        let n = chunk.len() / len;
        let scores = teacher.logits(chunk, n)?;
        if scores.len() != n * teacher.classes() {
            return Err(Error::Engine {
                context: "the teacher's forward pass".into(),
                cause: format!("{} scores for {n} samples (batch {k})", scores.len()),
            });
        }
        out.extend(scores);
    }
    Ok(out)
}

/// Validation of a plain (uncompressed) network through the evaluation path.
struct Plain<'a> {
    spec: &'a ArchSpec,
}

impl Hooks for Plain<'_> {
    fn validate(
        &mut self,
        net: &TrainNet,
        validation: &Dataset,
        _step: usize,
    ) -> Result<(Metrics, bool)> {
        let runner = sequential_runner(self.spec, &net.weights()?, &validation.source)?;
        let metrics = evaluate(runner.as_ref(), validation, DEFAULT_BATCH, |_, _| true)?;
        Ok((metrics, true))
    }
}

/// Train the network of `spec`, starting from `start` (see
/// [`crate::net::init::initialise`] for fresh weights), on `train`: from the labels alone,
/// or with `teacher`'s soft targets. A validation split of `train` picks the best
/// epoch.
pub fn train(
    spec: &ArchSpec,
    start: &Weights,
    train: &Dataset,
    teacher: Option<(&dyn Runner, Distillation)>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(TrainEvent) -> bool,
) -> Result<Fitted> {
    let net = TrainNet::new(spec, start)?;
    let (fit_set, validation) = split(train, options.validation, options.seed)?;
    check_fit(&spec.input, net.classes(), train)?;
    let soft_logits = match teacher {
        Some((runner, settings)) => {
            settings.check()?;
            if runner.classes() != net.classes() {
                return Err(Error::InvalidSetting(format!(
                    "the teacher has {} classes but the student {}",
                    runner.classes(),
                    net.classes()
                )));
            }
            Some((teacher_logits(runner, &fit_set)?, settings))
        }
        None => None,
    };
    let soft = soft_logits.as_ref().map(|(logits, settings)| Soft {
        logits,
        settings: *settings,
    });
    fit(
        &net,
        &fit_set,
        &validation,
        soft,
        options,
        &mut Plain { spec },
        progress,
    )
}

/// One model of a distillation comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contender {
    pub name: String,
    pub params: u64,
    pub bytes: u64,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The distilled student and the comparison table: teacher, distilled student, and
/// (when asked) the same student trained from labels alone.
pub struct Distilled {
    pub student: Weights,
    pub table: Vec<Contender>,
    /// Cancelled: the rows trained so far, the student from its best finished epoch.
    pub interrupted: bool,
}

/// Names of the table's rows.
pub const TEACHER: &str = "teacher";
pub const DISTILLED: &str = "student (distilled)";
pub const LABELS_ONLY: &str = "student (labels only)";

/// Distill `teacher` (of `teacher_size`: parameters and bytes) into the network of
/// `spec` starting from `start`, on `train`; measure everything on `test`. With
/// `baseline`, also train the same student from the same start on labels alone.
/// `progress` hears which row is training.
#[allow(
    clippy::too_many_arguments,
    reason = "the inputs of one run, no natural grouping"
)]
pub fn distill_and_compare(
    teacher: &dyn Runner,
    teacher_size: (u64, u64),
    spec: &ArchSpec,
    start: &Weights,
    (train_set, test): (&Dataset, &Dataset),
    settings: Distillation,
    options: &TrainOptions,
    baseline: bool,
    progress: &mut dyn FnMut(&str, TrainEvent) -> bool,
) -> Result<Distilled> {
    let measure = |runner: &dyn Runner| evaluate(runner, test, DEFAULT_BATCH, |_, _| true);
    let mut table = vec![Contender {
        name: TEACHER.into(),
        params: teacher_size.0,
        bytes: teacher_size.1,
        metrics: measure(teacher)?,
    }];
    let mut student = None;
    let mut interrupted = false;
    for (name, with_teacher) in [(DISTILLED, true), (LABELS_ONLY, false)] {
        if (!with_teacher && !baseline) || interrupted {
            continue;
        }
        let fitted = train(
            spec,
            start,
            train_set,
            with_teacher.then_some((teacher, settings)),
            options,
            &mut |e| progress(name, e),
        )?;
        let runner = sequential_runner(spec, &fitted.weights, &test.source)?;
        let (params, bytes) = size_of(&fitted.weights);
        table.push(Contender {
            name: name.into(),
            params: params as u64,
            bytes,
            metrics: measure(runner.as_ref())?,
        });
        interrupted = fitted.interrupted;
        student.get_or_insert(fitted.weights);
    }
    Ok(Distilled {
        student: student.unwrap_or_default(),
        table,
        interrupted,
    })
}

/// Parameters and f32 bytes of a set of weights.
pub fn size_of(weights: &Weights) -> (usize, u64) {
    let params: usize = weights.values().map(|(v, _)| v.len()).sum();
    (params, 4 * params as u64)
}
