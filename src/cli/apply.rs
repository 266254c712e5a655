//! `slimscope apply MODEL --recipe R.toml -o OUT.{safetensors,gguf,onnx} [--arch SPEC]
//! [--data D] [--json] [--force]`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::compress::apply::{AppliedTensor, apply_recipe};
use crate::compress::recipe::Recipe;
use crate::export::{
    OutputFormat, calibration_set, embedded, export_network, summary, write_model,
};
use crate::model::Model;
use crate::units::human_bytes;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The model file.
    pub model: PathBuf,
    /// The recipe (TOML; see `slimscope::compress::recipe`).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Where to write the compressed model: `.safetensors` (f32 fake-quant values),
    /// `.gguf` (real ggml block types; a GGUF source keeps all its metadata) or `.onnx`
    /// (a QDQ model: int8/uint8 weight codes, quantized activations; for ONNX models
    /// and state_dicts with an architecture spec).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The architecture spec of a state_dict written as `.onnx` (proposed from the
    /// weights and --data when left out).
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// Data the `.onnx` export's static activation quantization calibrates on (the
    /// same samples `slimscope eval` keeps apart with this recipe).
    #[arg(long)]
    pub data: Option<PathBuf>,
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
    let format = OutputFormat::of(&args.output)?;
    if format != OutputFormat::Onnx
        && let Some(extra) = args.arch.as_ref().or(args.data.as_ref())
    {
        anyhow::bail!(
            "{}: --arch and --data are for .onnx outputs (the graph and its calibration)",
            extra.display()
        );
    }
    let text = crate::text::read_settings(&args.recipe)?;
    let recipe = Recipe::parse(&text, &args.recipe)?;
    recipe.check_source(&args.model)?;
    let applied = apply_recipe(&model, &recipe)?;
    let onnx = if format == OutputFormat::Onnx {
        Some(write_onnx_output(args, &model, &recipe, &text, &applied)?)
    } else {
        if recipe.activations.is_some() {
            anyhow::bail!(
                "{}: the recipe quantizes activations, which only an .onnx output carries",
                args.recipe.display()
            );
        }
        write_model(&model, &applied, &text, &args.output, args.force)?;
        None
    };
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
    match &onnx {
        Some(export) => {
            for note in &export.notes {
                writeln!(out, "note: {}", crate::text::printable(note))?;
            }
            if let Some(a) = &recipe.activations {
                writeln!(out, "activations: {}", a.describe())?;
            }
            writeln!(
                out,
                "model: {} -> {} on disk (ONNX QDQ: integer weights as int8/uint8 codes; \
                 {} estimated in the smallest storage formats); wrote {}",
                human_bytes(before),
                human_bytes(export.bytes),
                human_bytes(after),
                args.output.display()
            )?;
        }
        None => writeln!(
            out,
            "model: {} -> {} (estimated in the chosen storage formats); wrote {}",
            human_bytes(before),
            human_bytes(after),
            args.output.display()
        )?,
    }
    writeln!(out, "SQNR is weight fidelity, not accuracy.")?;
    Ok(())
}

/// The `.onnx` export: the model's graph or its spec's, calibrated on the samples
/// `eval` keeps apart when the recipe quantizes activations statically.
fn write_onnx_output(
    args: &ApplyArgs,
    model: &Model,
    recipe: &Recipe,
    text: &str,
    applied: &[(usize, AppliedTensor)],
) -> anyhow::Result<crate::export::OnnxExport> {
    if recipe
        .activations
        .as_ref()
        .is_some_and(|a| a.calibration_samples() > 0)
        && args.data.is_none()
    {
        anyhow::bail!(
            "{}: static activation quantization calibrates on data: give --data (the same \
             samples `slimscope eval` keeps apart with this recipe)",
            args.recipe.display()
        );
    }
    let data = args
        .data
        .as_deref()
        .map(|p| crate::eval::load_data(model, p))
        .transpose()?;
    let network = export_network(model, args.arch.as_deref(), data.as_ref())?;
    let calibration = calibration_set(recipe.activations.as_ref(), data.as_ref())?;
    Ok(crate::export::write_onnx(
        model,
        &network,
        applied,
        recipe.activations.as_ref(),
        calibration.as_ref(),
        &embedded(model, applied, text),
        &args.output,
        args.force,
    )?)
}
