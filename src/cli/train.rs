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

use anyhow::Context;
use clap::Args;

use crate::compress::apply::apply;
use crate::compress::recipe::Recipe;
use crate::eval::arch::ArchSpec;
use crate::eval::data::{self, Dataset};
use crate::eval::{
    DEFAULT_BATCH, Metrics, ModelWeights, Network, Runner, evaluate, sequential_runner,
};
use crate::export::{check_output, write_model, write_safetensors};
use crate::model::Model;
use crate::train::distill::{self, Distillation};
use crate::train::finetune::recover;
use crate::train::net::{Weights, initialise};
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
        let interrupted = Arc::new(AtomicBool::new(false));
        {
            let interrupted = interrupted.clone();
            // Only the first handler can be set; later runs in one process have none.
            let _ = ctrlc::set_handler(move || interrupted.store(true, Ordering::SeqCst));
        }
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

/// Turn a cancelled run into a clear message.
fn cancelled(e: crate::Error) -> anyhow::Error {
    if matches!(e, crate::Error::Cancelled) {
        anyhow::anyhow!("cancelled: nothing was written")
    } else {
        e.into()
    }
}

fn measure(runner: &dyn Runner, data: &Dataset) -> anyhow::Result<Metrics> {
    Ok(evaluate(runner, data, DEFAULT_BATCH, |_, _| true)?)
}

fn check_data_output(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        anyhow::bail!(
            "{}: already exists (use --force to replace it)",
            out.display()
        );
    }
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
    check_output(&model, &args.output, args.train.force)?;
    crate::export::OutputFormat::of(&args.output)?;
    let text = std::fs::read_to_string(&args.recipe)
        .with_context(|| format!("{}", args.recipe.display()))?;
    let recipe = Recipe::parse(&text, &args.recipe)?;
    recipe.check_source(&args.model, &args.recipe)?;
    let names: Vec<(&str, usize)> = model
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.len()))
        .collect();
    let plans = recipe.resolve(&names, &text, &args.recipe)?;
    let train = data::load(&args.data)?;
    let test = data::load(&args.eval_data)?;
    let (network, notes) = Network::resolve(&model, args.arch.as_deref(), &train)?;
    let Some(spec) = network.spec() else {
        anyhow::bail!(
            "{}: an ONNX graph cannot be fine-tuned; give a state_dict and its architecture spec",
            args.model.display()
        );
    };
    let baseline = measure(network.runner(&model, &[])?.as_ref(), &test)?;
    let one_shot_applied = apply(&model, &plans)?;
    let one_shot = measure(network.runner(&model, &one_shot_applied)?.as_ref(), &test)?;
    let reporter = Reporter::new("fine-tuning", args.train.json);
    let recovered = recover(
        &model,
        spec,
        &plans,
        &train,
        &args.train.options(),
        args.gradual_from,
        &mut |e| reporter.event(e),
    )
    .map_err(cancelled)?;
    drop(reporter);
    let runner = sequential_runner(
        spec,
        &ModelWeights::new(&recovered.trained, &recovered.applied),
        &args.model,
    )?;
    let after = measure(runner.as_ref(), &test)?;
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
            "baseline": baseline,
            "one_shot": one_shot,
            "recovered": after,
            "training": recovered.report(),
            "options": args.train.options(),
            "gradual_from": args.gradual_from,
            "output": args.output,
        });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
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
        ("original", &baseline),
        ("one-shot", &one_shot),
        ("recovered", &after),
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
    Ok(())
}

/// The spec's tensors in order, for writing.
fn ordered(spec: &ArchSpec, weights: &Weights) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for layer in &spec.layers {
        for name in layer.tensors() {
            if out.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            if let Some((v, dims)) = weights.get(name) {
                out.push((name.to_owned(), dims.clone(), v.clone()));
            }
        }
    }
    out
}

/// Write `weights` (of the spec read from `origin`) as safetensors with a note of
/// how they were made.
fn write_weights(
    (spec, origin): (&ArchSpec, &Path),
    weights: &Weights,
    note: serde_json::Value,
    out: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let model = Model::from_f32(origin, ordered(spec, weights));
    write_safetensors(
        &model,
        &[],
        std::collections::HashMap::from([
            ("format".to_owned(), "pt".to_owned()),
            ("slimscope_training".to_owned(), note.to_string()),
        ]),
        out,
        force,
    )?;
    Ok(())
}

/// Starting weights for `spec`: a weights file, or fresh ones from the seed.
fn start_weights(spec: &ArchSpec, init: Option<&Path>, seed: u64) -> anyhow::Result<Weights> {
    let Some(path) = init else {
        return Ok(initialise(spec, seed)?);
    };
    let model = Model::open(path)?;
    let source = ModelWeights::new(&model, &[]);
    let mut weights = Weights::new();
    for layer in &spec.layers {
        for name in layer.tensors() {
            weights.insert(
                name.to_owned(),
                crate::eval::sequential::WeightSource::weight(&source, name)?,
            );
        }
    }
    Ok(weights)
}

/// One trained network's figures.
#[derive(serde::Serialize)]
struct Contender {
    name: &'static str,
    params: u64,
    bytes: u64,
    #[serde(flatten)]
    metrics: Metrics,
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
    check_data_output(&args.output, args.train.force)?;
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
    let (network, _) = Network::resolve(&teacher_model, args.arch.as_deref(), &train)?;
    let teacher = network.runner(&teacher_model, &[])?;
    let start = start_weights(&student_spec, args.init.as_deref(), options.seed)?;
    let teacher_totals = teacher_model.totals();
    let mut rows = vec![Contender {
        name: "teacher",
        params: teacher_totals.params,
        bytes: teacher_totals.size_bytes,
        metrics: measure(teacher.as_ref(), &test)?,
    }];
    let mut run = |name: &'static str, with_teacher: bool| -> anyhow::Result<Weights> {
        let reporter = Reporter::new(name, args.train.json);
        let fitted = distill::train(
            &student_spec,
            &start,
            &train,
            with_teacher.then_some((teacher.as_ref(), settings)),
            &options,
            &mut |e| reporter.event(e),
        )
        .map_err(cancelled)?;
        let runner = sequential_runner(&student_spec, &fitted.weights, &args.student)?;
        let (params, bytes) = distill::size_of(&fitted.weights);
        rows.push(Contender {
            name,
            params: params as u64,
            bytes,
            metrics: measure(runner.as_ref(), &test)?,
        });
        Ok(fitted.weights)
    };
    let student = run("student (distilled)", true)?;
    if !args.no_baseline {
        run("student (labels only)", false)?;
    }
    write_weights(
        (&student_spec, &args.student),
        &student,
        serde_json::json!({
            "distilled_from": args.teacher,
            "student": args.student,
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
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    print_contenders(&mut out, &args.eval_data, &rows)?;
    writeln!(out, "wrote {}", args.output.display())?;
    Ok(())
}

pub fn fit(args: &FitArgs) -> anyhow::Result<()> {
    check_data_output(&args.output, args.train.force)?;
    let options = args.train.options();
    options.check()?;
    let spec = ArchSpec::load(&args.spec)?;
    let train = data::load(&args.data)?;
    let test = data::load(&args.eval_data)?;
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
        name: "trained",
        params: params as u64,
        bytes,
        metrics: measure(runner.as_ref(), &test)?,
    };
    write_weights(
        (&spec, &args.spec),
        &fitted.weights,
        serde_json::json!({ "spec": args.spec, "options": options }),
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
                "output": args.output,
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    print_contenders(&mut out, &args.eval_data, &[row])?;
    writeln!(
        out,
        "kept epoch {} of {}; wrote {}",
        fitted.best_epoch,
        fitted.history.len(),
        args.output.display()
    )?;
    Ok(())
}
