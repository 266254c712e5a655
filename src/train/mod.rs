//! Winning accuracy back by training, on the CPU with candle's autograd:
//! [`finetune`] trains a compressed model with its pruning masks fixed and its
//! quantization simulated (recovery); [`distill`] trains a smaller student from a
//! teacher's soft targets. Both run the one loop here: seeded shuffles, AdamW, a
//! validation split carved from the training data to keep the best epoch, progress
//! per step and per epoch, and cancellation between steps.

pub mod distill;
pub mod finetune;
mod ops;
pub mod schedule;
pub mod session;
pub mod trainable;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use candle_nn::optim::{AdamW, ParamsAdamW};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::Metrics;
use crate::eval::data::Dataset;
use crate::net::weights::Weights;
use trainable::{TrainNet, candle};

/// How to train (shared by fine-tuning and distillation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay (0 = Adam).
    pub weight_decay: f64,
    /// Seeds the validation split, the shuffles and fresh weights: equal seeds give
    /// equal results.
    pub seed: u64,
    /// Fraction of the training data held out to choose the best epoch.
    pub validation: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 5,
            batch: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            seed: 0,
            validation: 0.1,
        }
    }
}

impl TrainOptions {
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidSetting(format!("training: {what}")));
        if self.epochs == 0 || self.batch == 0 {
            return bad(format!(
                "epochs ({}) and batch ({}) must be at least 1",
                self.epochs, self.batch
            ));
        }
        let lr_ok = self.lr > 0.0 && self.lr.is_finite();
        let decay_ok = self.weight_decay >= 0.0 && self.weight_decay.is_finite();
        if !lr_ok || !decay_ok {
            return bad(format!(
                "the learning rate ({}) must be positive and the weight decay ({}) not negative",
                self.lr, self.weight_decay
            ));
        }
        if !(self.validation > 0.0 && self.validation <= 0.5) {
            return bad(format!(
                "the validation fraction ({}) must lie in (0, 0.5]",
                self.validation
            ));
        }
        Ok(())
    }
}

/// One finished epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// The model as it would be exported, on the validation split.
    pub validation: Metrics,
    /// Whether this epoch may be kept as the best (not while sparsity is still rising).
    pub eligible: bool,
}

/// What a run reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum TrainEvent {
    Step {
        step: usize,
        steps: usize,
        loss: f64,
    },
    Epoch(EpochRecord),
}

/// The result of a run: the best epoch's weights and the whole history.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub weights: Weights,
    pub history: Vec<EpochRecord>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: usize,
    /// Cancelled after `history.len()` epochs: the best of those is kept.
    pub interrupted: bool,
}

/// Hold out `fraction` of `data` (a seeded shuffle) for validation: (train, validation).
pub fn split(data: &Dataset, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    let n = data.len();
    let held = ((n as f64 * fraction).round() as usize).max(1);
    if held >= n {
        return Err(Error::Data {
            path: data.source.clone(),
            problem: format!(
                "{n} samples are too few to hold {:.0}% out for validation",
                100.0 * fraction
            ),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    // A stream of its own, so the split does not shift the training shuffles.
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ SPLIT_STREAM));
    let (val, train) = order.split_at(held);
    let mut train = train.to_vec();
    let mut val = val.to_vec();
    train.sort_unstable();
    val.sort_unstable();
    Ok((subset(data, &train), subset(data, &val)))
}

const SPLIT_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;

/// The samples at `rows`, in that order.
pub fn subset(data: &Dataset, rows: &[usize]) -> Dataset {
    let len = data.sample_len();
    Dataset {
        source: data.source.clone(),
        x: rows
            .iter()
            .flat_map(|&r| &data.x[r * len..(r + 1) * len])
            .copied()
            .collect(),
        labels: rows.iter().map(|&r| data.labels[r]).collect(),
        sample_shape: data.sample_shape.clone(),
    }
}

/// What a caller adds to the loop (fine-tuning: masks and fake quantization).
pub(crate) trait Hooks {
    /// Tensors the forward pass uses instead of the variables, at `step`.
    fn replace(&mut self, _net: &TrainNet, _step: usize) -> Result<HashMap<String, Tensor>> {
        Ok(HashMap::new())
    }
    /// After the optimizer has stepped (`step` counts from 1).
    fn after_step(&mut self, _net: &TrainNet, _step: usize) -> Result<()> {
        Ok(())
    }
    /// The model as it would be exported, on `validation`; and whether this epoch,
    /// ending at `step`, may be kept as the best.
    fn validate(
        &mut self,
        net: &TrainNet,
        validation: &Dataset,
        step: usize,
    ) -> Result<(Metrics, bool)>;
}

/// Soft targets: the teacher's logits for every training sample, and how to mix them
/// with the labels.
pub(crate) struct Soft<'a> {
    pub logits: &'a [f32],
    pub settings: distill::Distillation,
}

/// Train `net` on `train` (a loss of cross-entropy, or the distillation loss with
/// `soft`), checking `validation` after every epoch and keeping the best weights.
/// `progress` returns false to cancel (between steps): the best finished epoch is
/// still returned (`interrupted`), or `Error::Cancelled` if none finished.
pub(crate) fn fit(
    net: &TrainNet,
    train: &Dataset,
    validation: &Dataset,
    soft: Option<Soft<'_>>,
    options: &TrainOptions,
    hooks: &mut dyn Hooks,
    progress: &mut dyn FnMut(TrainEvent) -> bool,
) -> Result<Fitted> {
    options.check()?;
    let classes = net.classes();
    let (n, len) = (train.len(), train.sample_len());
    if n == 0 {
        return Err(Error::Data {
            path: train.source.clone(),
            problem: "no training samples".into(),
        });
    }
    let vars = net.vars().iter().map(|(_, v)| v.clone()).collect();
    let mut optimizer = AdamW::new(
        vars,
        ParamsAdamW {
            lr: options.lr,
            weight_decay: options.weight_decay,
            ..ParamsAdamW::default()
        },
    )
    .map_err(candle)?;
    let steps_per_epoch = n.div_ceil(options.batch);
    let steps = steps_per_epoch * options.epochs;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut history, mut best): (Vec<EpochRecord>, Option<(Metrics, usize, Weights)>) =
        (Vec::new(), None);
    let mut step = 0;
    let mut interrupted = false;
    let mut input_dims = vec![0];
    input_dims.extend(&train.sample_shape);
    'epochs: for epoch in 1..=options.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for rows in order.chunks(options.batch) {
            let m = rows.len();
            let x: Vec<f32> = rows
                .iter()
                .flat_map(|&r| &train.x[r * len..(r + 1) * len])
                .copied()
                .collect();
            input_dims[0] = m;
            let x = Tensor::from_vec(x, input_dims.as_slice(), &Device::Cpu).map_err(candle)?;
            let y: Vec<u32> = rows.iter().map(|&r| train.labels[r]).collect();
            let y = Tensor::from_vec(y, m, &Device::Cpu).map_err(candle)?;
            let replace = hooks.replace(net, step)?;
            let logits = net.forward(&x, &replace)?;
            let loss = match &soft {
                None => candle_nn::loss::cross_entropy(&logits, &y).map_err(candle)?,
                Some(soft) => {
                    let t: Vec<f32> = rows
                        .iter()
                        .flat_map(|&r| &soft.logits[r * classes..(r + 1) * classes])
                        .copied()
                        .collect();
                    let t = Tensor::from_vec(t, (m, classes), &Device::Cpu).map_err(candle)?;
                    distill::loss(&logits, &t, &y, soft.settings)?
                }
            };
            let value = f64::from(loss.to_scalar::<f32>().map_err(candle)?);
            if !value.is_finite() {
                return Err(Error::InvalidSetting(format!(
                    "training diverged at step {} (loss {value}); try a smaller learning rate",
                    step + 1
                )));
            }
            optimizer.backward_step(&loss).map_err(candle)?;
            step += 1;
            hooks.after_step(net, step)?;
            loss_sum += value;
            if !progress(TrainEvent::Step {
                step,
                steps,
                loss: value,
            }) {
                interrupted = true;
                break 'epochs;
            }
        }
        let (metrics, eligible) = hooks.validate(net, validation, step)?;
        let record = EpochRecord {
            epoch,
            loss: loss_sum / steps_per_epoch as f64,
            validation: metrics,
            eligible,
        };
        history.push(record);
        let better = |b: &Metrics| {
            metrics.top1 > b.top1 || (metrics.top1 == b.top1 && metrics.loss < b.loss)
        };
        if eligible && best.as_ref().is_none_or(|(b, _, _)| better(b)) {
            best = Some((metrics, epoch, net.weights()?));
        }
        if !progress(TrainEvent::Epoch(record)) {
            interrupted = true;
            break;
        }
    }
    // A cancelled run keeps its best finished epoch; with none, nothing is kept.
    let (weights, best_epoch) = match best {
        Some((_, epoch, weights)) => (weights, epoch),
        None if interrupted => return Err(Error::Cancelled),
        None => (net.weights()?, options.epochs),
    };
    Ok(Fitted {
        weights,
        history,
        best_epoch,
        interrupted,
    })
}
