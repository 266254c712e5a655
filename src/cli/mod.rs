//! The command line: a thin layer over the library. One file per subcommand.
//! With no subcommand, `slimscope [MODEL]` opens the app.

mod apply;
mod embed;
mod eval;
mod imatrix;
mod inspect;
mod interrupt;
mod sweep;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// slimscope: explore neural-network compression trade-offs.
#[derive(Debug, Parser)]
#[command(
    name = "slimscope",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A model to open in the app (safetensors, GGUF, .pth, .npz/.npy, ONNX).
    pub model: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a model's tensors and layers with exact statistics.
    Inspect(inspect::InspectArgs),
    /// Compress a model with a recipe and write the result (safetensors or GGUF).
    Apply(apply::ApplyArgs),
    /// Accuracy and loss on a labelled data set, before and after a recipe.
    Eval(eval::EvalArgs),
    /// Sentence embeddings of a BERT encoder before and after a recipe (and of an ONNX
    /// export): cosine to the original, similarity changes, Spearman on scored pairs.
    Embed(embed::EmbedArgs),
    /// Continue a prompt with a llama-family GGUF (greedy), compressed or not.
    Generate(eval::GenerateArgs),
    /// llama.cpp's importance matrix of a llama GGUF on a text (`llama-imatrix`), for
    /// `apply --imatrix`.
    Imatrix(imatrix::ImatrixArgs),
    /// Trade-off curves: accuracy (or weight fidelity) against sparsity and bit-width,
    /// per-layer sensitivity and the Pareto front.
    Sweep(sweep::SweepArgs),
    /// Recover accuracy under a recipe: fine-tune with its pruning masks fixed and
    /// its quantization simulated, then write the compressed result.
    Finetune(train::FinetuneArgs),
    /// Train a small student from a teacher's soft targets (knowledge distillation),
    /// and the same student from labels alone for comparison.
    Distill(train::DistillArgs),
    /// Train a network from labels (fresh weights or --init).
    Train(train::FitArgs),
    /// Measure a model and its compressed variant as deployed (size on disk, latency,
    /// throughput or tokens/s, peak memory); without a model, slimscope's kernels on
    /// the standard workload (64 Mi f32 weights from normal(0, 0.02)) beside a memcpy.
    Bench(crate::bench::BenchArgs),
}

/// Say on stderr what is odd about a data set that still loads (NaN/±inf features).
pub(crate) fn warn_about(data: &crate::eval::data::Dataset) {
    if let Some(w) = data.non_finite_warning() {
        eprintln!("warning: {}", crate::text::printable(&w));
    }
}

/// The evaluator of `network` on `data` for recipes that calibrate on `kept`
/// samples: those of the `--calibration` file when one is given (all of `data` is
/// evaluated), else samples kept apart from `data`.
pub(crate) fn evaluator(
    model: &crate::model::Model,
    network: std::sync::Arc<crate::eval::Network>,
    data: crate::eval::data::Dataset,
    kept: usize,
    calibration: Option<&std::path::Path>,
) -> anyhow::Result<crate::eval::evaluator::Evaluator> {
    use crate::eval::evaluator::Evaluator;
    Ok(match (kept, calibration) {
        (0, Some(path)) => anyhow::bail!(
            "{}: --calibration is for recipes that calibrate (data-aware methods, static \
             activation quantization); this one calibrates nothing",
            path.display()
        ),
        (0, None) => Evaluator::new(network, std::sync::Arc::new(data)),
        (n, Some(path)) => Evaluator::with_calibration_set(
            network,
            std::sync::Arc::new(data),
            crate::eval::load_calibration(model, path, n)?,
        ),
        (n, None) => Evaluator::with_calibration(network, &data, n)?,
    })
}

/// The importance matrix at `path` for `recipe`, which must have a rule that uses
/// one (`method = "imatrix"`).
pub(crate) fn importance_for(
    path: Option<&std::path::Path>,
    recipe: &crate::compress::recipe::Recipe,
) -> anyhow::Result<Option<crate::model::imatrix::Imatrix>> {
    Ok(match (path, recipe.uses_imatrix()) {
        (Some(path), true) => Some(crate::model::imatrix::Imatrix::open(path)?),
        (Some(path), false) => anyhow::bail!(
            "{}: no rule of {} uses it (give a GGUF rule `method = \"imatrix\"`)",
            path.display(),
            recipe.origin.display()
        ),
        (None, _) => None,
    })
}

/// Run a subcommand. Errors are returned for `main` to print (exit code 2).
pub fn run(command: Command) -> anyhow::Result<()> {
    interrupt::install();
    match command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Generate(args) => eval::generate(&args),
        Command::Imatrix(args) => imatrix::run(&args),
        Command::Sweep(args) => sweep::run(&args),
        Command::Finetune(args) => train::finetune(&args),
        Command::Distill(args) => train::distill(&args),
        Command::Train(args) => train::fit(&args),
        Command::Bench(args) => crate::bench::run(&args),
    }
}
