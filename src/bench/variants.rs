//! `slimscope bench MODEL [--arch SPEC] [--recipe R] [--data D]`: what a variant
//! really buys, measured on the artifact that would be deployed, beside the original:
//! both are written as the files `slimscope apply` writes (an `.onnx` QDQ model for a
//! classifier, a `.gguf` for a llama), and each is then loaded and served by a fresh
//! `slimscope` process, so its peak memory is that of a process serving that file:
//! - a classifier on tract: latency at batch 1 (p50/p99) and throughput at `--batch`;
//! - a llama GGUF on candle's quantized kernels: prompt-processing and generation
//!   tokens/s.
//!
//! The size shown is the artifact's size on disk. Each child watches the rest of the
//! machine: a timing during which other processes used more than a tenth of the
//! cores is marked noisy.

use crate::measure::Calibration;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::compress::apply::apply_recipe;
use crate::compress::recipe::Recipe;
use crate::eval::causal_lm;
use crate::measure::speed::{self, Budget, ClassifierSpeed, Served, SweepSpeed, Variant};
use crate::model::Model;
use crate::net::Runner;
use crate::net::onnx::OnnxGraph;
use crate::units::human_bytes;

/// What `bench MODEL` was asked to measure.
pub struct VariantArgs<'a> {
    pub model: &'a Path,
    pub arch: Option<&'a Path>,
    pub recipe: Option<&'a Path>,
    pub data: Option<&'a Path>,
    pub batch: usize,
    pub seconds: f64,
    pub prompt: usize,
    pub generate: usize,
    pub json: bool,
}

/// How [`serve_variants`] serves each artifact.
pub struct Serving<'a> {
    /// The `slimscope` program whose `bench --serve` serves each artifact in a
    /// fresh process ([`this_program`] for the CLI).
    pub program: &'a Path,
    /// The graph or spec a classifier's `.onnx` export is written from.
    pub network: Option<&'a crate::eval::Network>,
    /// The data file: it fixes an ONNX model's free dimensions in the child.
    pub data_path: Option<&'a Path>,
    /// The data set, whose samples static activation quantization calibrates on
    /// (the ones `eval` keeps apart).
    pub data: Option<&'a crate::eval::data::Dataset>,
    /// Seconds of timing per figure.
    pub seconds: f64,
}

/// The program running now: what serves artifacts for the CLI.
pub fn this_program() -> crate::Result<PathBuf> {
    std::env::current_exe().map_err(|e| crate::Error::io(Path::new("slimscope"), e))
}

/// Measure the artifact `apply` would write for each of `recipes` (and the
/// original's) as `bench` does: classifiers as `.onnx` on tract, language models as
/// `.gguf` on candle. `progress(i, n)` is told before each artifact.
pub fn serve_variants(
    model: &Model,
    serving: &Serving,
    recipes: &[(Recipe, String)],
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<SweepSpeed> {
    let lm = causal_lm::is_causal_lm(model);
    let dir = tempfile::Builder::new()
        .prefix("slimscope-sweep-speed.")
        .tempdir()
        .map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
    let args = VariantArgs {
        model: &model.path,
        arch: None,
        recipe: None,
        data: serving.data_path,
        batch: 1000,
        seconds: serving.seconds,
        prompt: 128,
        generate: 32,
        json: true,
    };
    let write = |recipe: Option<&Recipe>,
                 applied: &[(usize, crate::compress::apply::AppliedTensor)],
                 text: &str,
                 out: &Path|
     -> anyhow::Result<()> {
        if lm {
            crate::export::write_model(model, applied, text, out, true)?;
        } else {
            let network = serving.network.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: each variant is served as an .onnx export, which needs the \
                     network: attach data (or give --data or --arch)",
                    model.path.display()
                )
            })?;
            let activations = recipe.and_then(|r| r.activations.as_ref());
            if activations.is_some_and(|a| a.calibration_samples() > 0) && serving.data.is_none() {
                anyhow::bail!(
                    "{}: static activation quantization calibrates on data: attach data \
                     (or give --data)",
                    model.path.display()
                );
            }
            let calibration = crate::export::calibration_set(activations, serving.data)?;
            let metadata = crate::export::embedded(model, applied, text);
            let settings = crate::export::OnnxSettings {
                activations,
                calibration: calibration.as_ref(),
                metadata: &metadata,
                shrink: true,
            };
            crate::export::write_onnx(model, network, applied, &settings, out, true)?;
        }
        Ok(())
    };
    let serve = |artifact: &Path, label: String, needs_data: bool| {
        serve_in_child(serving.program, artifact, label, needs_data, &args, lm)
    };
    let extension = if lm { "gguf" } else { "onnx" };
    let total = recipes.len() + 1;
    progress(0, total);
    let original = if lm || model.format == crate::model::Format::Onnx {
        // An ONNX model's free dimensions are fixed from the data, as bench does.
        let needs_data = !lm && OnnxGraph::load(model, &[]).is_err();
        serve(&model.path, "the original as stored".into(), needs_data)?
    } else {
        let out = dir.path().join("original.onnx");
        write(None, &[], "", &out)?;
        serve(&out, "the original's float .onnx export".into(), false)?
    };
    let mut points = Vec::with_capacity(recipes.len());
    for (i, (recipe, text)) in recipes.iter().enumerate() {
        progress(i + 1, total);
        let applied = crate::measure::apply_calibrated(
            model,
            recipe,
            serving.network,
            serving
                .data
                .map_or(Calibration::None, Calibration::KeptApart),
            None,
        )?;
        let out = dir.path().join(format!("point.{extension}"));
        write(Some(recipe), &applied, text, &out)?;
        points.push(serve(&out, format!("point {i}"), false)?);
        std::fs::remove_file(&out).map_err(|e| crate::Error::io(&out, e))?;
    }
    Ok(SweepSpeed {
        runtime: runtime(lm),
        original,
        points,
    })
}

/// The runtime's words for the table and the JSON.
fn runtime(lm: bool) -> &'static str {
    if lm {
        "candle's quantized kernels (the GGUF)"
    } else {
        "tract (the .onnx file)"
    }
}

pub fn run(args: &VariantArgs) -> anyhow::Result<()> {
    let model = Model::open(args.model)?;
    let lm = causal_lm::is_causal_lm(&model);
    let recipe = args
        .recipe
        .map(|p| -> anyhow::Result<(Recipe, String)> {
            let text = crate::text::read_settings(p)?;
            let recipe = Recipe::parse(&text, p)?;
            recipe.check_source(&model.path)?;
            Ok((recipe, text))
        })
        .transpose()?;
    let dir = tempfile::Builder::new()
        .prefix("slimscope-bench.")
        .tempdir()
        .map_err(|e| crate::Error::io(std::env::temp_dir(), e))?;
    let (original, compressed) = if lm {
        if recipe
            .as_ref()
            .is_some_and(|(r, _)| r.activations.is_some())
        {
            anyhow::bail!(
                "{}: a llama GGUF's activations are quantized by ggml's kernels themselves; \
                 remove [activations]",
                args.recipe
                    .map_or_else(String::new, |p| p.display().to_string())
            );
        }
        let compressed = match &recipe {
            Some((r, text)) => {
                let applied = apply_recipe(&model, r)?;
                let out = dir.path().join("compressed.gguf");
                crate::export::write_model(&model, &applied, text, &out, true)?;
                Some(out)
            }
            None => None,
        };
        (model.path.clone(), compressed)
    } else {
        classifier_artifacts(&model, args, recipe.as_ref(), dir.path())?
    };
    let label = if original == model.path {
        format!("{} as stored", model.path.display())
    } else {
        "its float .onnx export".to_owned()
    };
    // Data goes to a child only where the graph's free dimensions need it (an ONNX
    // model as stored); exports fix the sample shape, and loading a data set would
    // add its memory to the figure.
    let needs_data = !lm && original == model.path && OnnxGraph::load(&model, &[]).is_err();
    let program = this_program()?;
    let mut variants = vec![serve_in_child(
        &program, &original, label, needs_data, args, lm,
    )?];
    if let Some(c) = &compressed {
        let label = if lm {
            "its .gguf export (as apply writes it)"
        } else {
            "its .onnx QDQ export (as apply writes it)"
        };
        variants.push(serve_in_child(
            &program,
            c,
            label.to_owned(),
            false,
            args,
            lm,
        )?);
    }
    drop(dir);
    report(args, lm, &variants)
}

/// The original and compressed classifier as the `.onnx` files `apply` writes (an
/// ONNX model is its own original).
fn classifier_artifacts(
    model: &Model,
    args: &VariantArgs,
    recipe: Option<&(Recipe, String)>,
    dir: &Path,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let data = args
        .data
        .map(|p| crate::eval::load_data(model, p))
        .transpose()?;
    let network = crate::export::export_network(model, args.arch, data.as_ref())?;
    let original = if model.format == crate::model::Format::Onnx {
        model.path.clone()
    } else {
        let out = dir.join("original.onnx");
        let settings = crate::export::OnnxSettings::default();
        crate::export::write_onnx(model, &network, &[], &settings, &out, true)?;
        out
    };
    let Some((recipe, text)) = recipe else {
        return Ok((original, None));
    };
    let applied = crate::measure::apply_calibrated(
        model,
        recipe,
        Some(&network),
        data.as_ref()
            .map_or(Calibration::None, Calibration::KeptApart),
        None,
    )?;
    let activations = recipe.activations.as_ref();
    if activations.is_some_and(|a| a.calibration_samples() > 0) && data.is_none() {
        anyhow::bail!(
            "{}: static activation quantization calibrates on data: give --data",
            args.recipe
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    let calibration = crate::export::calibration_set(activations, data.as_ref())?;
    let out = dir.join("compressed.onnx");
    let metadata = crate::export::embedded(model, &applied, text);
    let settings = crate::export::OnnxSettings {
        activations,
        calibration: calibration.as_ref(),
        metadata: &metadata,
        shrink: true,
    };
    crate::export::write_onnx(model, &network, &applied, &settings, &out, true)?;
    Ok((original, Some(out)))
}

/// Serve `artifact` in a fresh `slimscope bench --serve` process (with `--data` when
/// `needs_data`); `label` is what the report calls it.
fn serve_in_child(
    program: &Path,
    artifact: &Path,
    label: String,
    needs_data: bool,
    args: &VariantArgs,
    lm: bool,
) -> anyhow::Result<Variant> {
    let bytes_on_disk = std::fs::metadata(artifact)
        .map_err(|e| crate::Error::io(artifact, e))?
        .len();
    let mut command = Command::new(program);
    command
        .arg("bench")
        .arg(artifact)
        .arg("--serve")
        .args(["--batch", &args.batch.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--prompt", &args.prompt.to_string()])
        .args(["--generate", &args.generate.to_string()]);
    if needs_data && let Some(d) = args.data {
        command.arg("--data").arg(d);
    }
    let out = command
        .output()
        .map_err(|e| crate::Error::io(artifact, e))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr)
            .trim()
            .trim_start_matches("error: ")
            .replace(&artifact.display().to_string(), "the export")
            .to_owned();
        return Ok(Variant {
            artifact: label,
            bytes_on_disk,
            served: None,
            unavailable: Some(format!(
                "{} cannot serve it: {why}{}",
                runtime(lm),
                if lm {
                    ""
                } else {
                    " (benches/onnx_speed.py serves the file in onnxruntime)"
                }
            )),
        });
    }
    let served: Served = serde_json::from_slice(&out.stdout)
        .map_err(|e| crate::Error::Internal(format!("bench --serve printed bad JSON: {e}")))?;
    Ok(Variant {
        artifact: label,
        bytes_on_disk,
        served: Some(served),
        unavailable: None,
    })
}

fn report(args: &VariantArgs, lm: bool, variants: &[Variant]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let threads = rayon::current_num_threads();
    let energy = if speed::energy_available() {
        "RAPL present, not read yet"
    } else {
        "not available here"
    };
    if args.json {
        let report = serde_json::json!({
            "model": args.model,
            "recipe": args.recipe,
            "runtime": runtime(lm),
            "threads": threads,
            "energy": energy,
            "original": variants.first(),
            "compressed": variants.get(1),
        });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "runtime: {}, {threads} threads, each artifact served by a fresh process; energy: {energy}",
        runtime(lm)
    )?;
    if lm {
        writeln!(
            out,
            "{:<11} {:>10} {:>18} {:>16} {:>10}  artifact",
            "model",
            "on disk",
            format!("prompt tok/s ({})", args.prompt),
            format!("gen tok/s ({})", args.generate),
            "peak RSS"
        )?;
    } else {
        writeln!(
            out,
            "{:<11} {:>10} {:>9} {:>9} {:>17} {:>10}  artifact",
            "model",
            "on disk",
            "p50 ms",
            "p99 ms",
            format!("samples/s ({})", args.batch),
            "peak RSS"
        )?;
    }
    for (name, v) in ["original", "compressed"].iter().zip(variants) {
        let size = human_bytes(v.bytes_on_disk);
        let Some(s) = &v.served else {
            writeln!(
                out,
                "{name:<11} {size:>10}  {}: {}",
                v.artifact,
                v.unavailable.as_deref().unwrap_or("")
            )?;
            continue;
        };
        let peak = s.peak_rss().map_or("–".into(), human_bytes);
        let noisy = if s.noisy() {
            "  (noisy: other work ran)"
        } else {
            ""
        };
        match s {
            Served::Classifier {
                latency,
                throughput,
                ..
            } => writeln!(
                out,
                "{name:<11} {size:>10} {:>9.3} {:>9.3} {:>17.0} {peak:>10}  {}{noisy}",
                latency.p50_ms, latency.p99_ms, throughput.per_second, v.artifact
            )?,
            Served::Language {
                prompt_tokens_per_second,
                generation_tokens_per_second,
                ..
            } => writeln!(
                out,
                "{name:<11} {size:>10} {:>18.1} {:>16.1} {peak:>10}  {}{noisy}",
                prompt_tokens_per_second, generation_tokens_per_second, v.artifact
            )?,
        }
    }
    if let [a, b] = variants
        && let (Some(a), Some(b)) = (&a.served, &b.served)
    {
        let (what, ratio) = match (a, b) {
            (Served::Classifier { latency: x, .. }, Served::Classifier { latency: y, .. }) => {
                ("latency at batch 1", y.p50_ms / x.p50_ms)
            }
            (
                Served::Language {
                    generation_tokens_per_second: x,
                    ..
                },
                Served::Language {
                    generation_tokens_per_second: y,
                    ..
                },
            ) => ("time per generated token", x / y),
            _ => return Ok(()),
        };
        if ratio > 1.0 {
            writeln!(
                out,
                "the compressed variant is SLOWER: {ratio:.2}× the original's {what}"
            )?;
        } else {
            writeln!(
                out,
                "the compressed variant takes {ratio:.2}× the original's {what}"
            )?;
        }
    }
    Ok(())
}

/// `bench ARTIFACT --serve`: load one artifact in this (fresh) process, time it, and
/// print [`Served`] as JSON with this process's peak memory.
pub fn serve(args: &VariantArgs) -> anyhow::Result<()> {
    let model = Model::open(args.model)?;
    let served = if causal_lm::is_causal_lm(&model) {
        let (rates, share) = speed::others_share(|| {
            causal_lm::token_speed(&model, &[], args.prompt, args.generate, 3)
        });
        let (prompt, generation) = rates?;
        Served::Language {
            prompt_tokens_per_second: prompt,
            generation_tokens_per_second: generation,
            prompt_tokens: args.prompt,
            generated_tokens: args.generate,
            peak_rss: speed::peak_rss(),
            others_cpu_share: share,
            noisy: share.is_some_and(|s| s > speed::NOISY_SHARE),
        }
    } else {
        let data = args
            .data
            .map(|p| crate::eval::load_data(&model, p))
            .transpose()?;
        let hint = data.as_ref().map_or(Vec::new(), |d| d.sample_shape.clone());
        let graph = OnnxGraph::load(&model, &hint)?;
        let samples = samples(graph.input_shape(), data.as_ref(), args.batch.max(1));
        let ClassifierSpeed {
            latency,
            throughput,
            others_cpu_share,
            noisy,
        } = speed::classifier_speed(
            || {
                let single: Box<dyn Runner> = Box::new(graph.planned(&[], None, Some(1))?);
                let batched: Box<dyn Runner> = Box::new(graph.runner(&[])?);
                Ok((single, batched))
            },
            &samples,
            args.batch.max(1),
            Budget {
                seconds: args.seconds,
                ..Budget::default()
            },
        )?;
        Served::Classifier {
            latency,
            throughput,
            peak_rss: speed::peak_rss(),
            others_cpu_share,
            noisy,
        }
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &served)?;
    writeln!(out)?;
    Ok(())
}

/// `batch` samples of `shape` to time on: the data's (repeated if fewer), else seeded
/// normal values (speed does not depend on them).
fn samples(shape: &[usize], data: Option<&crate::eval::data::Dataset>, batch: usize) -> Vec<f32> {
    let len: usize = shape.iter().product();
    match data {
        Some(d) if d.sample_len() == len && !d.is_empty() => {
            d.x.iter().copied().cycle().take(batch * len).collect()
        }
        _ => {
            use rand::SeedableRng;
            use rand_distr::{Distribution, Normal};
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let normal = Normal::new(0.0f32, 1.0).unwrap_or_else(|_| unreachable!("valid"));
            (0..batch * len).map(|_| normal.sample(&mut rng)).collect()
        }
    }
}
