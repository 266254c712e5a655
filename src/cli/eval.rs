//! `slimscope eval MODEL --data D [--arch SPEC] [--recipe R] [--json]`: accuracy of
//! the model, and of its compressed version, on a labelled data set — or, for a
//! llama GGUF, perplexity on a text and the distance from the original's predictions.
//! `slimscope generate MODEL --prompt P`: a language model's greedy continuation.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::compress::apply::{AppliedTensor, apply_recipe};
use crate::compress::recipe::Recipe;
use crate::eval::causal_lm::{self, is_causal_lm};
use crate::eval::embeddings::is_sentence_encoder;
use crate::eval::{DEFAULT_BATCH, Metrics, Network, TaskFigures, load_data};
use crate::model::Model;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model file: a state_dict (safetensors, .pth, .npz), an ONNX graph, or a
    /// llama-family GGUF.
    pub model: PathBuf,
    /// The labelled data: a CSV/CSV.gz, IDX or .npz file, or a TOML data spec. For a
    /// llama GGUF, a UTF-8 text (default: the bundled evaluation text).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The architecture spec (TOML) of a state_dict; proposed from the weights when
    /// left out. ONNX models run their own graph.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// Also evaluate the model compressed with this recipe.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// The file the recipe's data-aware methods and static activation quantization
    /// calibrate on (a text for a llama GGUF, cut into windows of 128 tokens):
    /// the recipe's [calibration] samples of it, and both rows are measured on all
    /// of --data. Without it those samples are kept apart from --data.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// llama.cpp's importance matrix for the recipe's GGUF rules with
    /// `method = "imatrix"` (see `slimscope apply --imatrix`).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Samples per forward pass (the figures do not depend on it).
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Write the architecture used (proposed or given) to this file.
    #[arg(long)]
    pub write_arch: Option<PathBuf>,
    /// Replace the --write-arch file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A llama-family GGUF.
    pub model: PathBuf,
    /// The text to continue (tokenized with the model's own tokenizer).
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate (greedy).
    #[arg(short = 'n', long, default_value_t = 16)]
    pub tokens: usize,
    /// Generate with the model compressed by this recipe.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
}

/// The recipe at `path` applied to `model` (checked against the model's file).
fn applied_from(
    model: &Model,
    path: &std::path::Path,
) -> anyhow::Result<Vec<(usize, AppliedTensor)>> {
    let text = crate::text::read_settings(path)?;
    let recipe = Recipe::parse(&text, path)?;
    recipe.check_source(&model.path)?;
    Ok(apply_recipe(model, &recipe)?)
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let data_path = match &args.data {
        Some(p) => p.clone(),
        None if is_causal_lm(&model) => crate::demo::files()?.text,
        None if is_sentence_encoder(&model) => crate::demo::files()?.sentences,
        None => anyhow::bail!(
            "{}: --data is needed (a labelled data set or data spec)",
            args.model.display()
        ),
    };
    if let Some(path) = &args.write_arch {
        let mut inputs = vec![args.model.as_path(), data_path.as_path()];
        inputs.extend(args.arch.as_deref());
        inputs.extend(args.recipe.as_deref());
        inputs.extend(args.calibration.as_deref());
        crate::export::check_output_paths(&inputs, path, args.force)?;
    }
    let data = load_data(&model, &data_path)?;
    super::warn_about(&data);
    let (network, notes) = Network::resolve(&model, args.arch.as_deref(), &data)?;
    if let Some(path) = &args.write_arch {
        let Some(spec) = network.spec() else {
            anyhow::bail!(
                "{}: only a state_dict's network has an architecture spec to write",
                args.model.display()
            );
        };
        crate::export::write_text(path, &spec.to_toml(), args.force)?;
    }
    let recipe = args
        .recipe
        .as_deref()
        .map(|path| -> anyhow::Result<_> {
            let text = crate::text::read_settings(path)?;
            let recipe = Recipe::parse(&text, path)?;
            recipe.check_source(&model.path)?;
            Ok(recipe)
        })
        .transpose()?;
    let activations = recipe.as_ref().and_then(|r| r.activations.clone());
    // Static activation quantization calibrates on samples kept apart: both rows
    // are measured on the rest.
    let network = Arc::new(network);
    if recipe
        .as_ref()
        .is_some_and(|r| r.statistics_needed().is_some())
        && !network.collects_statistics()
    {
        return Err(crate::eval::statistics_unsupported(&model).into());
    }
    let importance = match (&recipe, &args.imatrix) {
        (Some(r), path) => super::importance_for(path.as_deref(), r)?,
        (None, Some(path)) => anyhow::bail!(
            "{}: --imatrix weights a --recipe's GGUF rules; there is no recipe",
            path.display()
        ),
        (None, None) => None,
    };
    let evaluator = super::evaluator(
        &model,
        network,
        data,
        recipe.as_ref().map_or(0, Recipe::kept_apart),
        args.calibration.as_deref(),
    )?;
    let base = evaluator.measure(&model, &[], args.batch, |_, _| true)?;
    let compressed = match &recipe {
        Some(recipe) => {
            let applied = crate::measure::apply_for(
                &model,
                recipe,
                None,
                &evaluator,
                importance.as_ref(),
                &|| false,
            )?;
            Some(evaluator.measure_with(
                &model,
                &applied,
                activations.as_ref(),
                args.batch,
                |_, _| true,
            )?)
        }
        None => None,
    };
    let calibration_note = calibration_note(args, &evaluator, &data_path, recipe.as_ref());
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "model": args.model,
            "data": data_path,
            "samples": base.samples,
            "architecture_notes": notes,
            "activations": activations,
            "calibration_samples": evaluator.calibration().map_or(0, |c| c.len()),
            "original": base,
            "compressed": compressed,
        });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    for n in notes.iter().chain(&calibration_note) {
        writeln!(out, "note: {n}")?;
    }
    if let Some(a) = &activations {
        writeln!(out, "activations (compressed row): {}", a.describe())?;
    }
    print_header(&mut out, &base, &data_path, evaluator.data().sample_len())?;
    print_row(&mut out, "original", &base)?;
    if let Some(c) = &compressed {
        print_row(&mut out, "compressed", c)?;
    }
    Ok(())
}

/// What the evaluation's calibration samples are and calibrate, if there are any.
fn calibration_note(
    args: &EvalArgs,
    evaluator: &crate::eval::evaluator::Evaluator,
    data_path: &std::path::Path,
    recipe: Option<&Recipe>,
) -> Option<String> {
    let c = evaluator.calibration()?;
    let (of, rest) = match &args.calibration {
        Some(path) => (path.display().to_string(), "all"),
        None => (format!("{} kept apart", data_path.display()), "the other"),
    };
    let activations = recipe
        .and_then(|r| r.activations.as_ref())
        .is_some_and(|a| a.calibration_samples() > 0);
    let what = match (activations, recipe.and_then(Recipe::statistics_needed)) {
        (true, Some(_)) => "activations and data-aware methods",
        (false, Some(_)) => "data-aware methods",
        _ => "activations",
    };
    Some(format!(
        "{} samples of {of} to calibrate {what}; both rows measured on {rest} {}",
        c.len(),
        evaluator.data().len()
    ))
}

/// What the figures are of, and the table's column names.
fn print_header(
    out: &mut impl Write,
    base: &Metrics,
    data_path: &std::path::Path,
    window: usize,
) -> std::io::Result<()> {
    match base.task {
        TaskFigures::Embedding(_) => {
            writeln!(
                out,
                "{} sentences of {} (against the original's embeddings; Spearman against the pair scores)",
                base.samples,
                data_path.display()
            )?;
            writeln!(
                out,
                "{:<12} {:>10} {:>10} {:>12} {:>9} {:>11}",
                "model", "mean cos", "min cos", "mean |Δsim|", "Spearman", "neighbours"
            )?;
        }
        TaskFigures::Language(_) => {
            writeln!(
                out,
                "{} tokens of {} in windows of {} (next-token figures; KL and agreement against the original)",
                base.samples,
                data_path.display(),
                window
            )?;
            writeln!(
                out,
                "{:<12} {:>11} {:>9} {:>9} {:>11} {:>10} {:>8} {:>9}",
                "model", "perplexity", "loss", "top-1", "KL mean", "KL max", "agree", "tokens/s"
            )?;
        }
        TaskFigures::Classification => {
            writeln!(
                out,
                "{:<12} {:>8} {:>8} {:>9} {:>9} {:>11}",
                "model", "top-1", "top-5", "loss", "samples", "samples/s"
            )?;
        }
    }
    Ok(())
}

/// One model's figures, in the columns [`print_header`] named.
fn print_row(out: &mut impl Write, name: &str, m: &Metrics) -> std::io::Result<()> {
    match m.task {
        TaskFigures::Embedding(e) => writeln!(
            out,
            "{name:<12} {:>10.5} {:>10.5} {:>12.5} {:>9} {:>10.2}%",
            e.mean_cosine,
            e.min_cosine,
            e.mean_similarity_change,
            e.spearman.map_or("–".into(), |s| format!("{s:.4}")),
            100.0 * m.top1
        ),
        TaskFigures::Language(l) => writeln!(
            out,
            "{name:<12} {:>11.3} {:>9.4} {:>8.2}% {:>11.5} {:>10.4} {:>7.2}% {:>9.1}",
            l.perplexity,
            m.loss,
            100.0 * m.top1,
            l.kl_divergence,
            l.kl_max,
            100.0 * l.top1_agreement,
            m.samples_per_second
        ),
        TaskFigures::Classification => writeln!(
            out,
            "{name:<12} {:>7.2}% {:>8} {:>9.4} {:>9} {:>11.0}",
            100.0 * m.top1,
            m.top5.map_or("–".into(), |t| format!("{:.2}%", 100.0 * t)),
            m.loss,
            m.samples,
            m.samples_per_second
        ),
    }
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let applied = match &args.recipe {
        Some(path) => applied_from(&model, path)?,
        None => Vec::new(),
    };
    let text = causal_lm::generate(&model, &applied, &args.prompt, args.tokens)?;
    writeln!(std::io::stdout().lock(), "{}{text}", args.prompt)?;
    Ok(())
}
