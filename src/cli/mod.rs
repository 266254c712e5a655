//! The command line: a thin layer over the library. One file per subcommand.
//! With no subcommand, `slimscope [MODEL]` opens the app.

mod apply;
mod eval;
mod inspect;
mod sweep;

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
    /// Trade-off curves: accuracy (or weight fidelity) against sparsity and bit-width,
    /// per-layer sensitivity and the Pareto front.
    Sweep(sweep::SweepArgs),
    /// Measure slimscope's kernels on the standard workload (see perf-anchors).
    Bench(crate::bench::BenchArgs),
}

/// Run a subcommand. Errors are returned for `main` to print (exit code 2).
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Sweep(args) => sweep::run(&args),
        Command::Bench(args) => crate::bench::run(&args),
    }
}
