//! Training sessions on an attached data set, as the app runs them: *recover* a
//! configuration (fine-tune it with its masks fixed, quantization-aware) or *distill*
//! the model into a student (a spec, or the model itself under a configuration with
//! the neurons and filters structured pruning zeroed removed). Both train on 80% of
//! the data and report on the other 20% (a seeded split), and a recovery is measured
//! on the whole data too, beside its one-shot configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::distill::{Contender, Distillation, distill_and_compare};
use super::finetune::{Comparison, recover_and_compare};
use super::{EpochRecord, TrainEvent, TrainOptions, split};
use crate::compress::apply::AppliedTensor;
use crate::compress::config::Config;
use crate::error::{Error, Result};
use crate::eval::evaluator::Evaluator;
use crate::eval::{DEFAULT_BATCH, Metrics, evaluate};
use crate::measure::evaluation::SETTINGS_ORIGIN;
use crate::model::Model;
use crate::net::init::initialise;
use crate::net::sequential_runner;
use crate::net::spec::ArchSpec;
use crate::net::weights::{ModelWeights, Weights};

/// Share of the attached data held out for the figures the panel reports.
pub const HELD_OUT: f64 = 0.2;
/// Seed of the held-out split and of training.
pub const SEED: u64 = 0;

/// Settings of *Recover*.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoverSettings {
    pub epochs: usize,
    pub lr: f64,
    /// Raise magnitude sparsity gradually from `gradual_from_pct` instead of at once.
    pub gradual: bool,
    pub gradual_from_pct: f64,
}

impl Default for RecoverSettings {
    fn default() -> Self {
        RecoverSettings {
            epochs: 2,
            lr: 1e-3,
            gradual: false,
            gradual_from_pct: 0.0,
        }
    }
}

/// Settings of *Distill*.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillSettings {
    /// The student's architecture spec (with `out`/`kernel` for fresh layers).
    pub student: Option<PathBuf>,
    /// Instead of a spec: the open model under the current configuration, with the
    /// all-zero neurons and filters of structured pruning removed (`distill --init
    /// --shrink` on the command line).
    pub from_current: bool,
    pub temperature: f64,
    pub alpha: f64,
    pub epochs: usize,
    pub lr: f64,
}

impl Default for DistillSettings {
    fn default() -> Self {
        let d = Distillation::default();
        DistillSettings {
            student: None,
            from_current: false,
            temperature: d.temperature,
            alpha: d.alpha,
            epochs: 10,
            lr: 1e-3,
        }
    }
}

/// A finished recovery of one configuration.
pub struct Recovery {
    pub config: Config,
    /// Figures on the held-out 20%.
    pub held_out: Comparison,
    /// One-shot and recovered top-1 on the whole attached data (as the curves measure;
    /// the recovered model trained on 80% of it).
    pub full: (Metrics, Metrics),
    pub bytes_after: u64,
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub mask_violations: usize,
    /// The fine-tuned model and its compressed tensors.
    pub trained: Arc<Model>,
    pub applied: Arc<Vec<(usize, AppliedTensor)>>,
    /// The recipe the configuration stands for (with the model's file name).
    pub recipe: String,
}

/// A finished distillation.
pub struct Distilled {
    pub table: Vec<Contender>,
    pub student: Weights,
    pub spec: ArchSpec,
    /// The spec file the student was given; `None` for a student shrunk from the
    /// current configuration, whose spec is saved beside it.
    pub spec_path: Option<PathBuf>,
}

/// 80% to train on, 20% to report on (seeded).
pub fn halves(
    evaluator: &Evaluator,
) -> Result<(crate::eval::data::Dataset, crate::eval::data::Dataset)> {
    split(evaluator.data(), HELD_OUT, SEED)
}

/// Fine-tune the open model under `config` on 80% of the evaluator's data (masks
/// fixed, quantization-aware), and measure it against the one-shot configuration: on
/// the held-out 20% and on the whole data. `on_event` gets every training event (with
/// its table row, empty here) and returns false to stop; `cancelled` is asked
/// between batches of the final measurements.
pub fn recover(
    model: &Model,
    config: Config,
    evaluator: &Evaluator,
    settings: &RecoverSettings,
    on_event: &mut dyn FnMut(&str, TrainEvent) -> bool,
    cancelled: &dyn Fn() -> bool,
) -> Result<Recovery> {
    let Some(spec) = evaluator.network().spec() else {
        return Err(Error::Unsupported {
            path: model.path.clone(),
            what: "only a sequential network (a state_dict with an architecture spec) can be fine-tuned".into(),
        });
    };
    if config.is_identity() {
        return Err(Error::InvalidSetting(
            "the configuration compresses nothing: set a sparsity or a format first".into(),
        ));
    }
    let recipe_text = config.recipe_text(Some((&file_name(&model.path), None)));
    let plans = config.to_recipe(Path::new(SETTINGS_ORIGIN))?.plan(model)?;
    let (train, test) = halves(evaluator)?;
    let options = TrainOptions {
        epochs: settings.epochs,
        lr: settings.lr,
        seed: SEED,
        ..TrainOptions::default()
    };
    let gradual = settings
        .gradual
        .then_some(settings.gradual_from_pct / 100.0);
    let (recovered, held_out) = recover_and_compare(
        model,
        spec,
        &plans,
        &train,
        &test,
        &options,
        gradual,
        &mut |e| on_event("", e),
    )?;
    // On the whole attached data, as the curves measure: the one-shot point through
    // the shared evaluator (cached), the recovered one directly (other base weights).
    let one_shot_applied = crate::compress::apply::apply(model, &plans)?;
    let one_shot_full =
        evaluator.measure(model, &one_shot_applied, DEFAULT_BATCH, |_, _| !cancelled())?;
    let runner = sequential_runner(
        spec,
        &ModelWeights::new(&recovered.trained, &recovered.applied),
        &model.path,
    )?;
    let recovered_full = evaluate(runner.as_ref(), evaluator.data(), DEFAULT_BATCH, |_, _| {
        !cancelled()
    })?;
    let bytes_after = crate::export::summary(&recovered.trained, &recovered.applied).bytes_after;
    Ok(Recovery {
        config,
        held_out,
        full: (one_shot_full, recovered_full),
        bytes_after,
        history: recovered.history,
        best_epoch: recovered.best_epoch,
        mask_violations: recovered.mask_violations,
        trained: Arc::new(recovered.trained),
        applied: Arc::new(recovered.applied),
        recipe: recipe_text,
    })
}

/// Where a student comes from.
pub enum Student {
    /// An architecture spec file, fresh weights.
    Spec(PathBuf),
    /// The open model under this configuration, structurally shrunk.
    Shrunk(Config),
}

/// Distill the open model (the teacher) into `student` on 80% of the evaluator's
/// data, and compare teacher and student on the other 20%. `on_event` gets every
/// training event with its table row and returns false to stop.
pub fn distill(
    model: &Model,
    evaluator: &Evaluator,
    student: Student,
    settings: &DistillSettings,
    on_event: &mut dyn FnMut(&str, TrainEvent) -> bool,
) -> Result<Distilled> {
    let (spec, start, spec_path) = match student {
        Student::Spec(path) => {
            let spec = ArchSpec::load(&path)?;
            let start = initialise(&spec, SEED)
                .map_err(|e| Error::InvalidSetting(format!("{}: {e}", path.display())))?;
            (spec, start, Some(path))
        }
        Student::Shrunk(config) => {
            let (spec, start) = shrunk_student(model, evaluator, &config)?;
            (spec, start, None)
        }
    };
    let teacher = evaluator.network().runner(model, &[])?;
    let (train, test) = halves(evaluator)?;
    let options = TrainOptions {
        epochs: settings.epochs,
        lr: settings.lr,
        seed: SEED,
        ..TrainOptions::default()
    };
    let totals = model.totals();
    let distilled = distill_and_compare(
        teacher.as_ref(),
        (totals.params, totals.size_bytes),
        &spec,
        &start,
        (&train, &test),
        Distillation {
            temperature: settings.temperature,
            alpha: settings.alpha,
        },
        &options,
        true,
        on_event,
    )?;
    Ok(Distilled {
        table: distilled.table,
        student: distilled.student,
        spec,
        spec_path,
    })
}

/// The teacher's own network under `config`, its all-zero output neurons and
/// filters removed (see [`crate::net::shrink::shrink`]).
fn shrunk_student(
    model: &Model,
    evaluator: &Evaluator,
    config: &Config,
) -> Result<(ArchSpec, Weights)> {
    let Some(spec) = evaluator.network().spec() else {
        return Err(Error::Unsupported {
            path: model.path.clone(),
            what: "only a state_dict's network (with its spec) can be shrunk into a student".into(),
        });
    };
    let recipe = config.to_recipe(Path::new(SETTINGS_ORIGIN))?;
    let applied = crate::compress::apply::apply_recipe(model, &recipe)?;
    let weights = crate::net::weights::spec_weights(spec, &ModelWeights::new(model, &applied))?;
    let shrunk = crate::net::shrink::shrink(spec, &weights)?;
    Ok((shrunk.spec, shrunk.weights))
}

/// The file name of `path`, as a recipe's `[source]` records it.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
