//! `slimscope eval MODEL --data D [--arch SPEC] [--recipe R] [--json]`: accuracy of
//! the model, and of its compressed version, on a labelled data set.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::compress::apply::apply_recipe;
use crate::compress::recipe::Recipe;
use crate::eval::{DEFAULT_BATCH, Metrics, Network, data, evaluate};
use crate::model::Model;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model file: a state_dict (safetensors, .pth, .npz) or an ONNX graph.
    pub model: PathBuf,
    /// The labelled data: a CSV/CSV.gz, IDX or .npz file, or a TOML data spec.
    #[arg(long)]
    pub data: PathBuf,
    /// The architecture spec (TOML) of a state_dict; proposed from the weights when
    /// left out. ONNX models run their own graph.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// Also evaluate the model compressed with this recipe.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Samples per forward pass (the figures do not depend on it).
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Write the architecture used (proposed or given) to this file.
    #[arg(long)]
    pub write_arch: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let data = data::load(&args.data)?;
    let (network, notes) = Network::resolve(&model, args.arch.as_deref(), &data)?;
    if let Some(path) = &args.write_arch {
        let Some(spec) = network.spec() else {
            anyhow::bail!(
                "{}: an ONNX model has no architecture spec to write",
                args.model.display()
            );
        };
        crate::export::write_text(path, &spec.to_toml(), true)?;
    }
    let original = network.runner(&model, &[])?;
    let base = evaluate(original.as_ref(), &data, args.batch, |_, _| true)?;
    let compressed = match &args.recipe {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            let recipe = Recipe::parse(&text, path)?;
            recipe.check_source(&args.model, path)?;
            let applied = apply_recipe(&model, &recipe, &text, path)?;
            let runner = network.runner(&model, &applied)?;
            Some(evaluate(runner.as_ref(), &data, args.batch, |_, _| true)?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "model": args.model,
            "data": args.data,
            "samples": base.samples,
            "architecture_notes": notes,
            "original": base,
            "compressed": compressed,
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
        "{:<12} {:>8} {:>8} {:>9} {:>9} {:>11}",
        "model", "top-1", "top-5", "loss", "samples", "samples/s"
    )?;
    let row = |out: &mut std::io::StdoutLock, name: &str, m: &Metrics| {
        writeln!(
            out,
            "{name:<12} {:>7.2}% {:>8} {:>9.4} {:>9} {:>11.0}",
            100.0 * m.top1,
            m.top5.map_or("–".into(), |t| format!("{:.2}%", 100.0 * t)),
            m.loss,
            m.samples,
            m.samples_per_second
        )
    };
    row(&mut out, "original", &base)?;
    if let Some(c) = &compressed {
        row(&mut out, "compressed", c)?;
    }
    Ok(())
}
