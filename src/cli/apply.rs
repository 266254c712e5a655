//! `slimscope apply MODEL --recipe R.toml -o OUT.{safetensors,gguf,onnx} [--arch SPEC]
//! [--data D] [--layout fake-quant|compressed-tensors] [--json] [--force]`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::compress::apply::AppliedTensor;
use crate::compress::recipe::Recipe;
use crate::export::{
    LlamaQuantize, OutputFormat, calibration_set, check_output_paths, embedded, export_network,
    safetensors_metadata, summary, write_compressed_tensors, write_model,
};
use crate::measure::{Calibration, apply_calibrated};
use crate::model::Model;
use crate::units::human_bytes;

/// How a `.safetensors` output stores compressed tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    FakeQuant,
    CompressedTensors,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The model file.
    pub model: PathBuf,
    /// The recipe: TOML, `version = 1` then ordered `[[rule]]`s, each a `match` glob or
    /// `regex` with a `prune` and a `quant` table (the README shows one).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Where to write the compressed model: `.safetensors` (see --layout),
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
    /// How a `.safetensors` output stores compressed tensors: `fake-quant` (f32
    /// values any framework loads, the size of the original) or `compressed-tensors`
    /// (integer weights packed as Hugging Face transformers and vLLM load them, with
    /// the `quantization_config` in a `config.json` written beside the file).
    #[arg(long, value_enum, default_value_t = Layout::FakeQuant)]
    pub layout: Layout,
    /// Keep a sequential network's shapes in an `.onnx` output: store the neurons and
    /// filters structured pruning zeroed as zeros instead of removing them (and the
    /// next layer's inputs with them).
    #[arg(long)]
    pub keep_shapes: bool,
    /// The file data-aware methods learn from (a text for a llama GGUF, cut into
    /// windows of 128 tokens), instead of the --data samples `slimscope eval` keeps
    /// apart: the recipe's [calibration] samples of it.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// llama.cpp's importance matrix (`llama-imatrix` output, GGUF or legacy .dat)
    /// for GGUF rules with `method = "imatrix"`, as `llama-quantize --imatrix` uses it.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Print the per-tensor report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// What an export wrote, for the closing line.
enum Written {
    Onnx(crate::export::OnnxExport),
    CompressedTensors(crate::export::CompressedTensorsExport),
    /// A GGUF, with the llama-quantize invocation that rebuilds it and the
    /// `--tensor-type-file` written for it (when a weight takes a block type).
    Gguf(Option<(LlamaQuantize, PathBuf)>),
    /// A file whose size the report estimates (f32 fake-quant safetensors).
    Estimated,
}

/// Where the `--tensor-type-file` of a GGUF export goes: beside it.
fn tensor_types_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tensor-types.txt");
    out.with_file_name(name)
}

/// The per-tensor table: columns as wide as their longest entry, so long names and
/// schemes stay aligned.
fn print_tensors(out: &mut impl Write, summary: &crate::export::Summary) -> anyhow::Result<()> {
    let names: Vec<std::borrow::Cow<str>> = summary
        .tensors
        .iter()
        .map(|t| crate::text::printable(&t.name))
        .collect();
    let width =
        |texts: &mut dyn Iterator<Item = usize>, least: usize| texts.max().unwrap_or(0).max(least);
    let nw = width(&mut names.iter().map(|n| n.chars().count()), 6);
    let sw = width(
        &mut summary.tensors.iter().map(|t| t.scheme.chars().count()),
        6,
    );
    writeln!(
        out,
        "{:<nw$} {:<sw$} {:>9} {:>10} {:>10} {:>9}",
        "tensor", "scheme", "sparsity", "before", "after", "SQNR dB"
    )?;
    for (t, name) in summary.tensors.iter().zip(&names) {
        writeln!(
            out,
            "{:<nw$} {:<sw$} {:>8.2}% {:>10} {:>10} {:>9.2}",
            name,
            t.scheme,
            100.0 * t.sparsity,
            human_bytes(t.bytes_before),
            human_bytes(t.bytes_after),
            t.fidelity.sqnr_db
        )?;
    }
    Ok(())
}

/// Every file the command reads, none of which an output may replace.
fn inputs(args: &ApplyArgs) -> Vec<&Path> {
    let mut inputs = vec![args.model.as_path(), args.recipe.as_path()];
    for path in [&args.arch, &args.data, &args.calibration, &args.imatrix] {
        inputs.extend(path.as_deref());
    }
    inputs
}

pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    crate::export::check_output_paths(&inputs(args), &args.output, args.force)?;
    let format = OutputFormat::of(&args.output)?;
    let text = crate::text::read_settings(&args.recipe)?;
    let recipe = Recipe::parse(&text, &args.recipe)?;
    let data_aware = recipe.statistics_needed();
    if format != OutputFormat::Onnx
        && data_aware.is_none()
        && let Some(extra) = args.arch.as_ref().or(args.data.as_ref())
    {
        anyhow::bail!(
            "{}: --arch and --data are for .onnx outputs (the graph and its calibration) \
             and for data-aware methods",
            extra.display()
        );
    }
    recipe.check_source(&args.model)?;
    let (applied, importance) = compress(args, &model, &recipe)?;
    let gguf_extra = importance
        .as_ref()
        .map(crate::export::imatrix_metadata)
        .unwrap_or_default();
    let written = write_output(args, &model, &recipe, &text, &applied, format, &gguf_extra)?;
    let summary = summary(&model, &applied);
    let (before, after) = (summary.bytes_before, summary.bytes_after);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", summary.to_json(true))?;
        return Ok(());
    }
    print_tensors(&mut out, &summary)?;
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
    match &written {
        Written::Onnx(export) => {
            for note in &export.notes {
                writeln!(out, "note: {}", crate::text::printable(note))?;
            }
            if let Some(a) = &recipe.activations {
                writeln!(out, "activations: {}", a.describe())?;
            }
            writeln!(
                out,
                "model: {} -> {} on disk (ONNX QDQ: integer weights as 8- or 4-bit codes; \
                 {} estimated in the smallest storage formats); wrote {}",
                human_bytes(before),
                human_bytes(export.bytes),
                human_bytes(after),
                args.output.display()
            )?;
        }
        Written::CompressedTensors(export) => {
            for note in &export.notes {
                writeln!(out, "note: {}", crate::text::printable(note))?;
            }
            writeln!(
                out,
                "model: {} -> {} on disk (compressed-tensors layout; {} estimated \
                 in the smallest storage formats); wrote {} and {}",
                human_bytes(before),
                human_bytes(export.bytes),
                human_bytes(after),
                args.output.display(),
                export.config.display()
            )?;
        }
        Written::Gguf(rebuild) => {
            let size = std::fs::metadata(&args.output)
                .map(|m| m.len())
                .unwrap_or(0);
            let tensors = crate::export::gguf_tensor_bytes(&model, &applied);
            writeln!(
                out,
                "model: {} -> {} on disk (GGUF: {} of tensors, the rest metadata and \
                 alignment); wrote {}",
                human_bytes(before),
                human_bytes(size),
                human_bytes(tensors),
                args.output.display()
            )?;
            if tensors > after {
                writeln!(
                    out,
                    "note: ggml has no type for some of these grids, so they are stored as F32 \
                     values; in their own storage the tensors would take {} (estimated)",
                    human_bytes(after)
                )?;
            }
            if let Some((rebuild, types)) = rebuild {
                let text = |p: &Path| crate::text::printable(&p.display().to_string()).into_owned();
                writeln!(
                    out,
                    "llama.cpp rebuilds it from the original with:\n  {}",
                    rebuild.command(&text(&args.model), &text(&args.output), &text(types))
                )?;
                for caveat in &rebuild.caveats {
                    writeln!(out, "note: {}", crate::text::printable(caveat))?;
                }
            }
        }
        Written::Estimated => writeln!(
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

/// The applied tensors and the importance matrix they were weighted by.
type Compressed = (
    Vec<(usize, AppliedTensor)>,
    Option<crate::model::imatrix::Imatrix>,
);

/// The recipe applied to the model, with the calibration data or the importance
/// matrix its data-aware rules learn from.
fn compress(args: &ApplyArgs, model: &Model, recipe: &Recipe) -> anyhow::Result<Compressed> {
    let data_aware = recipe.statistics_needed();
    let importance = super::importance_for(args.imatrix.as_deref(), recipe)?;
    if let (Some(path), None) = (&args.calibration, data_aware) {
        anyhow::bail!(
            "{}: --calibration is for recipes with data-aware methods (Wanda, SparseGPT, \
             GPTQ); {} has none",
            path.display(),
            args.recipe.display()
        );
    }
    let applied = match (data_aware, &args.data, &args.calibration) {
        (Some(_), _, Some(path)) => {
            let calibration = crate::eval::load_calibration(model, path, recipe.kept_apart())?;
            let (network, _) =
                crate::eval::Network::resolve(model, args.arch.as_deref(), &calibration)?;
            apply_calibrated(
                model,
                recipe,
                Some(&network),
                Calibration::Set(&calibration),
                importance.as_ref(),
            )?
        }
        (Some(_), Some(path), None) => {
            let data = crate::eval::load_data(model, path)?;
            let (network, _) = crate::eval::Network::resolve(model, args.arch.as_deref(), &data)?;
            apply_calibrated(
                model,
                recipe,
                Some(&network),
                Calibration::KeptApart(&data),
                importance.as_ref(),
            )?
        }
        _ => apply_calibrated(model, recipe, None, Calibration::None, importance.as_ref())?,
    };
    Ok((applied, importance))
}

/// Write the export `args.output` names, as `format` and `--layout` say.
fn write_output(
    args: &ApplyArgs,
    model: &Model,
    recipe: &Recipe,
    text: &str,
    applied: &[(usize, AppliedTensor)],
    format: OutputFormat,
    gguf_extra: &[(&str, String)],
) -> anyhow::Result<Written> {
    if args.layout != Layout::FakeQuant && format != OutputFormat::Safetensors {
        anyhow::bail!(
            "{}: --layout is for .safetensors outputs",
            args.output.display()
        );
    }
    if args.keep_shapes && format != OutputFormat::Onnx {
        anyhow::bail!(
            "{}: --keep-shapes is for .onnx outputs (the others keep every shape)",
            args.output.display()
        );
    }
    if format != OutputFormat::Onnx && recipe.activations.is_some() {
        anyhow::bail!(
            "{}: the recipe quantizes activations, which only an .onnx output carries",
            args.recipe.display()
        );
    }
    Ok(match (format, args.layout) {
        (OutputFormat::Onnx, _) => {
            let export = write_onnx_output(args, model, recipe, text, applied)?;
            Written::Onnx(export)
        }
        (OutputFormat::Safetensors, Layout::CompressedTensors) => {
            Written::CompressedTensors(write_compressed_tensors(
                model,
                applied,
                safetensors_metadata(model, applied, text),
                &args.output,
                args.force,
            )?)
        }
        (OutputFormat::Gguf, _) => {
            let rebuild = LlamaQuantize::of(model, applied);
            let types_path = tensor_types_path(&args.output);
            if rebuild.is_some() {
                check_output_paths(&inputs(args), &types_path, args.force)?;
            }
            crate::export::write_model_with(
                model,
                applied,
                text,
                gguf_extra,
                &args.output,
                args.force,
            )?;
            match rebuild {
                Some(rebuild) => {
                    crate::export::write_text(
                        &types_path,
                        &rebuild.tensor_type_file(),
                        args.force,
                    )?;
                    Written::Gguf(Some((rebuild, types_path)))
                }
                None => Written::Gguf(None),
            }
        }
        _ => {
            write_model(model, applied, text, &args.output, args.force)?;
            Written::Estimated
        }
    })
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
    let metadata = embedded(model, applied, text);
    let settings = crate::export::OnnxSettings {
        activations: recipe.activations.as_ref(),
        calibration: calibration.as_ref(),
        metadata: &metadata,
        shrink: !args.keep_shapes,
    };
    Ok(crate::export::write_onnx(
        model,
        &network,
        applied,
        &settings,
        &args.output,
        args.force,
    )?)
}
