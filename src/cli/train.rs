//! Training from the command line:
//! - `slimscope finetune MODEL --recipe R --data TRAIN --eval-data TEST -o OUT`
//!   recovers accuracy under a recipe (masks fixed, quantization-aware);
//! - `slimscope distill TEACHER --student SPEC --data TRAIN --eval-data TEST -o OUT`
//!   trains a small student from a teacher, and the same student from labels alone;
//! - `slimscope train SPEC --data TRAIN --eval-data TEST -o OUT` trains a network
//!   from labels (fresh weights, or `--init`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

use crate::compress::recipe::Recipe;
use crate::eval::data::{self, Dataset};
use crate::eval::{DEFAULT_BATCH, Metrics, Network, evaluate};
use crate::export::write_model;
use crate::model::Model;
use crate::net::init::initialise;
use crate::net::shrink::shrink;
use crate::net::spec::ArchSpec;
use crate::net::weights::{ModelWeights, Weights};
use crate::net::{Runner, sequential_runner};
use crate::train::distill::{self, Contender, Distillation, distill_and_compare};
use crate::train::finetune::recover_and_compare;
use crate::train::trainable::write_weights;
use crate::train::{EpochRecord, TrainEvent, TrainOptions};
use crate::units::human_bytes;

/// Settings every training command shares.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Passes over the training data.
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = TrainOptions::default().batch)]
    pub batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    pub lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = TrainOptions::default().weight_decay)]
    pub weight_decay: f64,
    /// Seed of the validation split, the shuffles and fresh weights.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// Fraction of the training data held out to keep the best epoch.
    #[arg(long, default_value_t = TrainOptions::default().validation)]
    pub validation: f64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

impl TrainArgs {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            validation: self.validation,
        }
    }
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The model file (a state_dict: safetensors, .pth, .npz).
    pub model: PathBuf,
    /// The recipe whose masks and formats training keeps.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Training data (a data file or TOML data spec).
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out data for the before/after figures.
    #[arg(long)]
    pub eval_data: PathBuf,
    /// The architecture spec; proposed from the weights when left out.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// Gradual pruning: start magnitude masks at this sparsity and raise them to the
    /// recipe's over the first two thirds of training (TF-MOT's PolynomialDecay).
    #[arg(long)]
    pub gradual_from: Option<f64>,
    /// Where to write the recovered, compressed model (.safetensors or .gguf).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Args)]
pub struct DistillArgs {
    /// The teacher model (any model slimscope evaluates, ONNX graphs included).
    pub teacher: PathBuf,
    /// The student's architecture spec (TOML; give `out`/`kernel` for fresh layers).
    #[arg(long)]
    pub student: PathBuf,
    /// Start the student from these weights (e.g. a structurally pruned model)
    /// instead of fresh ones.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Remove the all-zero output neurons and filters of the --init weights (a
    /// structurally pruned export of the teacher, say) and the inputs that fed on them,
    /// so the student is physically smaller; its spec is written beside the output.
    #[arg(long, requires = "init")]
    pub shrink: bool,
    /// The teacher's architecture spec, for a state_dict teacher.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// Training data.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out data for the comparison.
    #[arg(long)]
    pub eval_data: PathBuf,
    /// Softmax temperature T of the soft targets.
    #[arg(long, default_value_t = Distillation::default().temperature)]
    pub temperature: f64,
    /// Weight α of the soft term (1 − α goes to the labels).
    #[arg(long, default_value_t = Distillation::default().alpha)]
    pub alpha: f64,
    /// Skip training the same student from labels alone (the comparison baseline).
    #[arg(long)]
    pub no_baseline: bool,
    /// Where to write the distilled student (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// The architecture spec (TOML; give `out`/`kernel` for fresh layers).
    pub spec: PathBuf,
    /// Start from these weights instead of fresh ones.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Training data.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out data for the final figures.
    #[arg(long)]
    pub eval_data: PathBuf,
    /// Where to write the trained weights (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Progress on stderr (a bar on a terminal, epoch lines otherwise) and Ctrl-C.
struct Reporter {
    bar: indicatif::ProgressBar,
    label: String,
    interrupted: Arc<AtomicBool>,
    quiet: bool,
}

impl Reporter {
    fn new(label: &str, quiet: bool) -> Reporter {
        let interrupted = super::interrupt::cooperate();
        let bar = if std::io::stderr().is_terminal() && !quiet {
            indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix} {bar:30} step {pos}/{len} · {elapsed} · ETA {eta} · {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_prefix(label.to_owned());
        Reporter {
            bar,
            label: label.to_owned(),
            interrupted,
            quiet,
        }
    }

    fn event(&self, event: TrainEvent) -> bool {
        match event {
            TrainEvent::Step { step, steps, loss } => {
                self.bar.set_length(steps as u64);
                self.bar.set_position(step as u64);
                self.bar.set_message(format!("loss {loss:.4}"));
            }
            TrainEvent::Epoch(r) if !self.quiet => self.bar.suspend(|| {
                eprintln!("{}: {}", self.label, epoch_line(&r));
            }),
            TrainEvent::Epoch(_) => {}
        }
        !self.interrupted.load(Ordering::SeqCst)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn epoch_line(r: &EpochRecord) -> String {
    format!(
        "epoch {}: training loss {:.4}, validation top-1 {:.2}% (loss {:.4}){}",
        r.epoch,
        r.loss,
        100.0 * r.validation.top1,
        r.validation.loss,
        if r.eligible {
            ""
        } else {
            " (sparsity still rising)"
        }
    )
}

/// Turn a run cancelled before its first epoch ended into a clear message.
fn cancelled(e: crate::Error) -> anyhow::Error {
    if matches!(e, crate::Error::Cancelled) {
        anyhow::anyhow!("cancelled before the first epoch ended: nothing was written")
    } else {
        e.into()
    }
}

fn measure(runner: &dyn Runner, data: &Dataset) -> anyhow::Result<Metrics> {
    Ok(evaluate(runner, data, DEFAULT_BATCH, |_, _| true)?)
}

fn check_data_output(inputs: &[&Path], out: &Path, force: bool) -> anyhow::Result<()> {
    crate::export::check_output_paths(inputs, out, force)?;
    if !out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        anyhow::bail!("{}: the output must end in .safetensors", out.display());
    }
    Ok(())
}

pub fn finetune(args: &FinetuneArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let mut inputs = vec![
        args.model.as_path(),
        args.recipe.as_path(),
        args.data.as_path(),
        args.eval_data.as_path(),
    ];
    inputs.extend(args.arch.as_deref());
    crate::export::check_output_paths(&inputs, &args.output, args.train.force)?;
    crate::export::OutputFormat::of(&args.output)?;
    let text = crate::text::read_settings(&args.recipe)?;
    let recipe = Recipe::parse(&text, &args.recipe)?;
    recipe.check_source(&args.model)?;
    let plans = recipe.plan(&model)?;
    let train = data::load(&args.data)?;
    let test = data::load(&args.eval_data)?;
    super::warn_about(&train);
    super::warn_about(&test);
    let (network, notes) = Network::resolve(&model, args.arch.as_deref(), &train)?;
    let Some(spec) = network.spec() else {
        anyhow::bail!(
            "{}: only a sequential network (a state_dict and its architecture spec) can be fine-tuned; ONNX graphs, language models and sentence encoders cannot",
            args.model.display()
        );
    };
    let reporter = Reporter::new("fine-tuning", args.train.json);
    let (recovered, figures) = recover_and_compare(
        &model,
        spec,
        &plans,
        &train,
        &test,
        &args.train.options(),
        args.gradual_from,
        &mut |e| reporter.event(e),
    )
    .map_err(cancelled)?;
    drop(reporter);
    write_model(
        &recovered.trained,
        &recovered.applied,
        &text,
        &args.output,
        args.train.force,
    )?;
    let mut out = std::io::stdout().lock();
    if args.train.json {
        let report = serde_json::json!({
            "model": args.model,
            "recipe": args.recipe,
            "eval_data": args.eval_data,
            "baseline": figures.baseline,
            "one_shot": figures.one_shot,
            "recovered": figures.recovered,
            "training": recovered.report(),
            "options": args.train.options(),
            "gradual_from": args.gradual_from,
            "output": args.output,
        });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return interrupted(
            recovered.interrupted,
            recovered.best_epoch,
            recovered.history.len(),
        );
    }
    for n in &notes {
        writeln!(out, "note: {n}")?;
    }
    writeln!(
        out,
        "on {} ({} samples):",
        args.eval_data.display(),
        test.len()
    )?;
    writeln!(out, "{:<12} {:>8} {:>9}", "model", "top-1", "loss")?;
    for (name, m) in [
        ("original", &figures.baseline),
        ("one-shot", &figures.one_shot),
        ("recovered", &figures.recovered),
    ] {
        writeln!(out, "{name:<12} {:>7.2}% {:>9.4}", 100.0 * m.top1, m.loss)?;
    }
    writeln!(
        out,
        "kept epoch {} of {}; pruned weights not exactly zero: {}; wrote {}",
        recovered.best_epoch,
        recovered.history.len(),
        recovered.mask_violations,
        args.output.display()
    )?;
    interrupted(
        recovered.interrupted,
        recovered.best_epoch,
        recovered.history.len(),
    )
}

/// After a Ctrl-C that left finished epochs: say what was kept, exit 130.
fn interrupted(stopped: bool, best: usize, finished: usize) -> anyhow::Result<()> {
    if stopped {
        eprintln!("interrupted: kept the best of {finished} finished epochs (epoch {best})");
        std::process::exit(130);
    }
    Ok(())
}

/// Starting weights for `spec`: a weights file, or fresh ones from the seed.
fn start_weights(spec: &ArchSpec, init: Option<&Path>, seed: u64) -> anyhow::Result<Weights> {
    let Some(path) = init else {
        return Ok(initialise(spec, seed)?);
    };
    let model = Model::open(path)?;
    Ok(crate::net::weights::spec_weights(
        spec,
        &ModelWeights::new(&model, &[]),
    )?)
}

fn print_contenders(out: &mut impl Write, data: &Path, rows: &[Contender]) -> anyhow::Result<()> {
    writeln!(out, "on {}:", data.display())?;
    writeln!(
        out,
        "{:<22} {:>10} {:>10} {:>8} {:>9} {:>11}",
        "model", "params", "size", "top-1", "loss", "samples/s"
    )?;
    for c in rows {
        writeln!(
            out,
            "{:<22} {:>10} {:>10} {:>7.2}% {:>9.4} {:>11.0}",
            c.name,
            c.params,
            human_bytes(c.bytes),
            100.0 * c.metrics.top1,
            c.metrics.loss,
            c.metrics.samples_per_second
        )?;
    }
    Ok(())
}

pub fn distill(args: &DistillArgs) -> anyhow::Result<()> {
    let mut inputs = vec![
        args.teacher.as_path(),
        args.student.as_path(),
        args.data.as_path(),
        args.eval_data.as_path(),
    ];
    inputs.extend(args.init.as_deref());
    inputs.extend(args.arch.as_deref());
    check_data_output(&inputs, &args.output, args.train.force)?;
    if args.shrink {
        let spec = args.output.with_extension("arch.toml");
        crate::export::check_output_paths(&inputs, &spec, args.train.force)?;
    }
    let settings = Distillation {
        temperature: args.temperature,
        alpha: args.alpha,
    };
    settings.check()?;
    let options = args.train.options();
    options.check()?;
    let teacher_model = Model::open(&args.teacher)?;
    let student_spec = ArchSpec::load(&args.student)?;
    let train = data::load(&args.data)?;
    let test = data::load(&args.eval_data)?;
    super::warn_about(&train);
    super::warn_about(&test);
    let (network, _) = Network::resolve(&teacher_model, args.arch.as_deref(), &train)?;
    let teacher = network.runner(&teacher_model, &[])?;
    let mut start = start_weights(&student_spec, args.init.as_deref(), options.seed)?;
    let mut student_spec = student_spec;
    let shrunk_spec = if args.shrink {
        let shrunk = shrink(&student_spec, &start)?;
        for (weight, n) in &shrunk.removed {
            eprintln!("shrink: {weight} loses {n} all-zero outputs");
        }
        (student_spec, start) = (shrunk.spec, shrunk.weights);
        let path = args.output.with_extension("arch.toml");
        crate::export::write_text(&path, &student_spec.to_toml(), args.train.force)?;
        Some(path)
    } else {
        None
    };
    let totals = teacher_model.totals();
    let mut reporters: Vec<Reporter> = Vec::new();
    let distilled = distill_and_compare(
        teacher.as_ref(),
        (totals.params, totals.size_bytes),
        &student_spec,
        &start,
        (&train, &test),
        settings,
        &options,
        !args.no_baseline,
        &mut |name, e| {
            if reporters.last().is_none_or(|r| r.label != name) {
                reporters.push(Reporter::new(name, args.train.json));
            }
            reporters.last().is_none_or(|r| r.event(e))
        },
    )
    .map_err(cancelled)?;
    drop(reporters);
    let stopped = distilled.interrupted;
    let (student, rows) = (distilled.student, distilled.table);
    write_weights(
        &student_spec,
        &student,
        &args.student,
        &serde_json::json!({
            "distilled_from": args.teacher,
            "student": shrunk_spec.as_ref().unwrap_or(&args.student),
            "distillation": settings,
            "options": options,
        }),
        &args.output,
        args.train.force,
    )?;
    let mut out = std::io::stdout().lock();
    if args.train.json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({
                "eval_data": args.eval_data,
                "distillation": settings,
                "options": options,
                "models": rows,
                "output": args.output,
                "student_spec": shrunk_spec.as_ref().unwrap_or(&args.student),
                "interrupted": stopped,
            }),
        )?;
        writeln!(out)?;
        return distill_interrupted(stopped);
    }
    print_contenders(&mut out, &args.eval_data, &rows)?;
    match &shrunk_spec {
        Some(spec) => writeln!(
            out,
            "wrote {} and its spec {}",
            args.output.display(),
            spec.display()
        )?,
        None => writeln!(out, "wrote {}", args.output.display())?,
    }
    distill_interrupted(stopped)
}

fn distill_interrupted(stopped: bool) -> anyhow::Result<()> {
    if stopped {
        eprintln!(
            "interrupted: the student from its best finished epoch was written; rows not trained are missing"
        );
        std::process::exit(130);
    }
    Ok(())
}

pub fn fit(args: &FitArgs) -> anyhow::Result<()> {
    let mut inputs = vec![
        args.spec.as_path(),
        args.data.as_path(),
        args.eval_data.as_path(),
    ];
    inputs.extend(args.init.as_deref());
    check_data_output(&inputs, &args.output, args.train.force)?;
    let options = args.train.options();
    options.check()?;
    let spec = ArchSpec::load(&args.spec)?;
    let train = data::load(&args.data)?;
    let test = data::load(&args.eval_data)?;
    super::warn_about(&train);
    super::warn_about(&test);
    let start = start_weights(&spec, args.init.as_deref(), options.seed)?;
    let reporter = Reporter::new("training", args.train.json);
    let fitted = distill::train(&spec, &start, &train, None, &options, &mut |e| {
        reporter.event(e)
    })
    .map_err(cancelled)?;
    drop(reporter);
    let runner = sequential_runner(&spec, &fitted.weights, &args.spec)?;
    let (params, bytes) = distill::size_of(&fitted.weights);
    let row = Contender {
        name: "trained".into(),
        params: params as u64,
        bytes,
        metrics: measure(runner.as_ref(), &test)?,
    };
    write_weights(
        &spec,
        &fitted.weights,
        &args.spec,
        &serde_json::json!({ "spec": args.spec, "options": options }),
        &args.output,
        args.train.force,
    )?;
    let mut out = std::io::stdout().lock();
    if args.train.json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({
                "eval_data": args.eval_data,
                "options": options,
                "model": row,
                "history": fitted.history,
                "best_epoch": fitted.best_epoch,
                "interrupted": fitted.interrupted,
                "output": args.output,
            }),
        )?;
        writeln!(out)?;
        return interrupted(fitted.interrupted, fitted.best_epoch, fitted.history.len());
    }
    print_contenders(&mut out, &args.eval_data, &[row])?;
    writeln!(
        out,
        "kept epoch {} of {}; wrote {}",
        fitted.best_epoch,
        fitted.history.len(),
        args.output.display()
    )?;
    interrupted(fitted.interrupted, fitted.best_epoch, fitted.history.len())
}
