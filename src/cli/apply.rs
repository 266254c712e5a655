//! `slimscope apply MODEL --recipe R.toml -o OUT.{safetensors,gguf} [--json] [--force]`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::compress::apply::apply_recipe;
use crate::compress::recipe::Recipe;
use crate::export::{OutputFormat, summary, write_model};
use crate::model::Model;
use crate::units::human_bytes;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The model file.
    pub model: PathBuf,
    /// The recipe (TOML; see `slimscope::compress::recipe`).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Where to write the compressed model: `.safetensors` (f32 fake-quant values) or
    /// `.gguf` (real ggml block types; a GGUF source keeps all its metadata).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print the per-tensor report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    crate::export::check_output_paths(&[&args.model, &args.recipe], &args.output, args.force)?;
    OutputFormat::of(&args.output)?;
    let text = crate::text::read_settings(&args.recipe)?;
    let recipe = Recipe::parse(&text, &args.recipe)?;
    recipe.check_source(&args.model)?;
    let applied = apply_recipe(&model, &recipe)?;
    write_model(&model, &applied, &text, &args.output, args.force)?;
    let summary = summary(&model, &applied);
    let (before, after) = (summary.bytes_before, summary.bytes_after);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", summary.to_json(true))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<36} {:>9} {:>10} {:>10} {:>9}",
        "tensor", "scheme", "sparsity", "before", "after", "SQNR dB"
    )?;
    for t in &summary.tensors {
        writeln!(
            out,
            "{:<28} {:<36} {:>8.2}% {:>10} {:>10} {:>9.2}",
            crate::text::printable(&t.name),
            t.scheme,
            100.0 * t.sparsity,
            human_bytes(t.bytes_before),
            human_bytes(t.bytes_after),
            t.fidelity.sqnr_db
        )?;
    }
    for t in &summary.tensors {
        if let (Some(after), Some((f0, f1))) = (&t.shape_after, t.flops) {
            writeln!(
                out,
                "{}: structured pruning allows shape {:?} -> {after:?} ({f0} -> {f1} FLOPs per sample or position)",
                crate::text::printable(&t.name),
                t.shape
            )?;
        }
    }
    writeln!(
        out,
        "model: {} -> {} (estimated in the chosen storage formats); wrote {}",
        human_bytes(before),
        human_bytes(after),
        args.output.display()
    )?;
    writeln!(out, "SQNR is weight fidelity, not accuracy.")?;
    Ok(())
}
