//! `slimscope sweep MODEL [--data D] …`: trade-off curves — accuracy (or weight
//! fidelity, without data) against sparsity and bit-width, per-layer sensitivity, and
//! the size/quality Pareto front — on a job pool, with a progress bar on a terminal.
//! Ctrl-C stops the sweep and keeps the points already measured.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::compress::apply::TensorCache;
use crate::compress::config::{Config, Format, IntGranularity};
use crate::dtype::GgmlQuant;
use crate::eval::evaluator::Evaluator;
use crate::eval::{Network, TaskFigures};
use crate::jobs::{JobEvent, Pool};
use crate::model::Model;
use crate::sweep::analysis::{
    HeatCell, allocation_points, best_allocation, heatmap, pareto_front, quality, sensitivity,
};
use crate::sweep::output::Report;
use crate::sweep::{
    Point, PointResult, SWEEP_BATCH, SweepContext, SweepMethod, global_points, layer_sizes,
    parse_levels, per_layer_points, sweepable_layers,
};
use crate::units::human_bytes;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The model file.
    pub model: PathBuf,
    /// Labelled data (file or TOML data spec) to measure accuracy on; without it the
    /// curves are weight fidelity (SQNR), not accuracy.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The architecture spec (TOML) of a state_dict; proposed when left out.
    #[arg(long)]
    pub arch: Option<PathBuf>,
    /// The file data-aware curves learn from, instead of samples kept apart from
    /// --data: the whole sweep is then measured on all of --data.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Pruning methods, comma-separated: global, magnitude, random, structured, 2:4,
    /// and the data-aware wanda and sparsegpt (these need --data; with one of them
    /// the whole sweep is measured on the samples calibration does not see).
    #[arg(long, default_value = "global,magnitude,random,structured,2:4")]
    pub prune: String,
    /// Sparsity levels: start:end:step, or a comma list.
    #[arg(long, default_value = "0:0.95:0.05")]
    pub sparsity: String,
    /// Integer widths to quantize to, comma-separated ("" for none).
    #[arg(long, default_value = "8,6,4,3,2")]
    pub bits: String,
    /// Integer scale granularities: tensor, channel, group (of 128), comma-separated.
    #[arg(long, default_value = "channel")]
    pub granularity: String,
    /// Also quantize every integer width and granularity with GPTQ (data-aware: needs
    /// --data), a curve beside each round-to-nearest one.
    #[arg(long)]
    pub gptq: bool,
    /// Also quantize every integer width and granularity and every GGUF type with AWQ
    /// (llama GGUFs; data-aware: needs --data), a curve beside each round-to-nearest one.
    #[arg(long)]
    pub awq: bool,
    /// The calibration samples data-aware curves learn from (`[calibration] samples`;
    /// windows of 128 tokens of a text); the recipe default (128) when left out.
    #[arg(long)]
    pub calibration_samples: Option<usize>,
    /// GGUF block types to quantize to, comma-separated (e.g. Q8_0,Q4_0,Q4_K).
    #[arg(long, default_value = "")]
    pub gguf: String,
    /// Per-layer sensitivity: each layer alone at each sparsity and bit-width.
    #[arg(long)]
    pub per_layer: bool,
    /// Sparsity levels of the per-layer sweep (start:end:step or a list).
    #[arg(long, default_value = "0.1:0.9:0.2")]
    pub layer_sparsity: String,
    /// Spread this average sparsity (0–0.99) over the layers three ways (uniform, one
    /// global threshold, inverse to measured sensitivity), measure each and name the
    /// best. Needs --per-layer (the sensitivities).
    #[arg(long, requires = "per_layer")]
    pub allocate: Option<f64>,
    /// Also measure each point's speed: the artifact `apply` would write (.onnx on
    /// tract for classifiers, .gguf on candle for llamas), served after the sweep,
    /// one at a time, each in a fresh process (latency, throughput, peak memory).
    #[arg(long)]
    pub speed: bool,
    /// Seconds of timing per artifact with --speed.
    #[arg(long, default_value_t = 0.5, requires = "speed")]
    pub speed_seconds: f64,
    /// Write every point (with its recipe) to this file: .json or .csv.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Compute threads (default: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The sparsity levels `text` names for option `flag`, each within 0–0.99.
fn sparsity_levels(flag: &str, text: &str) -> anyhow::Result<Vec<f64>> {
    let levels = parse_levels(text)?;
    if let Some(s) = levels.iter().find(|s| !(0.0..=0.99).contains(*s)) {
        anyhow::bail!("{flag}: {s} is outside 0–0.99");
    }
    Ok(levels)
}

/// The points the arguments ask for.
fn points(args: &SweepArgs, model: &Model) -> anyhow::Result<Vec<Point>> {
    let methods = list(&args.prune)
        .map(SweepMethod::parse)
        .collect::<crate::error::Result<Vec<_>>>()?;
    let sparsities = sparsity_levels("--sparsity", &args.sparsity)?;
    let bits: Vec<u8> = list(&args.bits)
        .map(|b| match b.parse::<u8>() {
            Ok(v) if (2..=8).contains(&v) => Ok(v),
            _ => anyhow::bail!("--bits: `{b}` is not an integer width from 2 to 8"),
        })
        .collect::<anyhow::Result<_>>()?;
    let granularities = list(&args.granularity)
        .map(|g| match g {
            "tensor" => Ok(IntGranularity::Tensor),
            "channel" => Ok(IntGranularity::Channel),
            "group" => Ok(IntGranularity::Group128),
            other => anyhow::bail!("--granularity: `{other}` (expected tensor, channel or group)"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut formats: Vec<Format> = granularities
        .iter()
        .flat_map(|&granularity| {
            bits.iter().map(move |&bits| Format::Int {
                bits,
                granularity,
                mse_clip: false,
            })
        })
        .collect();
    for name in list(&args.gguf) {
        let q = (0..=39)
            .filter_map(GgmlQuant::from_type_id)
            .find(|q| q.name().eq_ignore_ascii_case(name))
            .with_context(|| format!("--gguf: `{name}` is not a ggml block type"))?;
        formats.push(Format::Gguf(q));
    }
    let mut points = global_points(&methods, &sparsities, &formats);
    let quantized = |p: &&Point, gguf: bool| {
        p.config.sparsity_pct == 0.0
            && match p.config.format {
                Format::Int { .. } => true,
                Format::Gguf(_) => gguf,
                _ => false,
            }
    };
    let beside = |points: &[Point], gguf: bool, name: &str, set: fn(&mut Config)| {
        points
            .iter()
            .filter(|p| quantized(p, gguf))
            .map(|p| {
                let mut config = p.config.clone();
                set(&mut config);
                Point::new(format!("{} {name}", p.curve), p.axis, p.level, None, config)
            })
            .collect::<Vec<Point>>()
    };
    let gptq = if args.gptq {
        beside(&points, false, "GPTQ", |c| c.gptq = true)
    } else {
        Vec::new()
    };
    let awq = if args.awq {
        beside(&points, true, "AWQ", |c| c.awq = true)
    } else {
        Vec::new()
    };
    points.extend(gptq);
    points.extend(awq);
    if let Some(n) = args.calibration_samples {
        if n == 0 {
            anyhow::bail!("--calibration-samples: must be at least 1");
        }
        for p in &mut points {
            let learns = p
                .config
                .to_recipe(Path::new("(sweep)"))
                .is_ok_and(|r| r.statistics_needed().is_some());
            if !learns {
                continue;
            }
            let mut config = p.config.clone();
            config.calibration_samples = Some(n);
            *p = Point::new(p.curve.clone(), p.axis, p.level, p.layer.clone(), config);
        }
    }
    if args.per_layer {
        let levels = sparsity_levels("--layer-sparsity", &args.layer_sparsity)?;
        points.extend(per_layer_points(&sweepable_layers(model), &levels, &bits));
    }
    if points.is_empty() {
        anyhow::bail!("nothing to sweep: give --prune, --bits or --gguf");
    }
    Ok(points)
}

/// The settings' problems that need no model: outputs that would replace an input
/// or are not .json/.csv, a calibration file with nothing to measure on.
fn check_args(args: &SweepArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.output {
        let mut inputs = vec![args.model.as_path()];
        inputs.extend(args.data.as_deref());
        inputs.extend(args.arch.as_deref());
        inputs.extend(args.calibration.as_deref());
        crate::export::check_output_paths(&inputs, out, args.force)?;
        if !matches!(
            out.extension().and_then(|e| e.to_str()),
            Some("json" | "csv")
        ) {
            anyhow::bail!("{}: the output must end in .json or .csv", out.display());
        }
    }
    if let (Some(path), None) = (&args.calibration, &args.data) {
        anyhow::bail!(
            "{}: --calibration serves the data-aware curves measured on --data; give --data",
            path.display()
        );
    }
    Ok(())
}

pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    check_args(args)?;
    let model = Arc::new(Model::open(&args.model)?);
    let points = points(args, &model)?;
    if let Some(t) = args.allocate
        && !(0.0..=0.99).contains(&t)
    {
        anyhow::bail!("--allocate: {t} is outside 0–0.99");
    }
    let accuracy = match &args.data {
        Some(path) => {
            let data = crate::eval::load_data(&model, path)?;
            super::warn_about(&data);
            let (network, _) = Network::resolve(&model, args.arch.as_deref(), &data)?;
            // One slice kept apart for every curve, so they compare on the same samples.
            let kept = points
                .iter()
                .map(|p| {
                    p.config
                        .to_recipe(Path::new("(sweep)"))
                        .map(|r| r.kept_apart())
                })
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .max()
                .unwrap_or(0);
            Some(Arc::new(super::evaluator(
                &model,
                Arc::new(network),
                data,
                kept,
                args.calibration.as_deref(),
            )?))
        }
        None => None,
    };
    let pool = Pool::new(1, args.jobs)?;
    let baseline = match &accuracy {
        Some(evaluator) => {
            Some(pool.install(|| evaluator.measure(&model, &[], SWEEP_BATCH, |_, _| true))?)
        }
        None => None,
    };

    let total = points.len();
    let interrupted = super::interrupt::cooperate();
    let cache = Arc::new(TensorCache::new(1 << 30));
    let sweep = Sweep {
        pool: &pool,
        model: &model,
        accuracy: &accuracy,
        cache: &cache,
        interrupted: &interrupted,
    };
    let (mut done, mut cancelled) = sweep.run(&points)?;
    let ranking = if args.per_layer {
        sensitivity(&done, "layer magnitude", baseline.map(|b| b.quality()))
    } else {
        Vec::new()
    };
    let mut total = total;
    if let Some(target) = args.allocate
        && !cancelled
    {
        let allocations = allocation_points(target, &layer_sizes(&model), &ranking);
        total += allocations.len();
        let (more, stopped) = sweep.run(&allocations)?;
        done.extend(more);
        cancelled = stopped;
    }
    // Timings run on a quiet machine: the sweep's pool is gone by now.
    drop(pool);
    let speed = if args.speed && !cancelled {
        Some(measure_speeds(args, &model, accuracy.as_deref(), &done)?)
    } else {
        None
    };
    let mut report = Report::new(
        args.model.display().to_string(),
        args.data.as_ref().map(|d| d.display().to_string()),
        baseline,
        cancelled,
        &done,
        ranking,
    );
    if let Some(speed) = speed {
        report = report.with_speed(speed);
    }
    if let Some(out) = &args.output {
        let text = if out.extension().is_some_and(|e| e == "csv") {
            report.to_csv()
        } else {
            report.to_json()
        };
        crate::export::write_text(out, &text, args.force)?;
    }
    print_summary(&report, args.allocate.is_some())?;
    if cancelled {
        eprintln!(
            "cancelled: kept {} of {total} points{}",
            done.len(),
            args.output
                .as_ref()
                .map_or(String::new(), |o| format!(" in {}", o.display()))
        );
        std::process::exit(130);
    }
    Ok(())
}

/// Each point's artifact served for its speed (see `SweepArgs::speed`).
fn measure_speeds(
    args: &SweepArgs,
    model: &Model,
    accuracy: Option<&Evaluator>,
    done: &[PointResult],
) -> anyhow::Result<crate::measure::speed::SweepSpeed> {
    if !(args.speed_seconds > 0.0 && args.speed_seconds <= 600.0) {
        anyhow::bail!(
            "--speed-seconds: {} is outside (0, 600]",
            args.speed_seconds
        );
    }
    let own;
    let network = match accuracy {
        Some(e) => Some(e.network()),
        None if crate::eval::causal_lm::is_causal_lm(model) => None,
        None => {
            own = crate::export::export_network(model, args.arch.as_deref(), None)?;
            Some(&own)
        }
    };
    let origin = Path::new("(sweep point)");
    let recipes = done
        .iter()
        .map(|r| Ok((r.point.config.to_recipe(origin)?, r.point.recipe.clone())))
        .collect::<crate::Result<Vec<_>>>()?;
    let mut last = std::time::Instant::now();
    let program = crate::bench::variants::this_program()?;
    let serving = crate::bench::variants::Serving {
        program: &program,
        network,
        data_path: args.data.as_deref(),
        data: accuracy.map(|e| e.data()),
        seconds: args.speed_seconds,
    };
    crate::bench::variants::serve_variants(model, &serving, &recipes, |i, n| {
        if last.elapsed().as_secs_f64() > 5.0 || i == 0 {
            eprintln!("speed: artifact {} of {n}", i + 1);
            last = std::time::Instant::now();
        }
    })
}

/// What a batch of points runs with; Ctrl-C (`interrupted`) cancels it.
struct Sweep<'a> {
    pool: &'a Pool,
    model: &'a Arc<Model>,
    accuracy: &'a Option<Arc<Evaluator>>,
    cache: &'a Arc<TensorCache>,
    interrupted: &'a Arc<std::sync::atomic::AtomicBool>,
}

impl Sweep<'_> {
    /// Measure `points` with a progress bar (on a terminal); returns the points
    /// finished, in order, and whether Ctrl-C cancelled the rest.
    fn run(&self, points: &[Point]) -> anyhow::Result<(Vec<PointResult>, bool)> {
        let total = points.len();
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(total as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:30} {pos}/{len} points · {elapsed} · ETA {eta} · {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let job = {
            let (model, accuracy, cache) = (
                self.model.clone(),
                self.accuracy.clone(),
                self.cache.clone(),
            );
            let points = points.to_vec();
            self.pool.submit::<(), (usize, PointResult), _>(
                || {},
                move |progress| {
                    let ctx = SweepContext {
                        model: &model,
                        accuracy: accuracy.as_deref(),
                        cache: &cache,
                    };
                    crate::sweep::run_job(&ctx, &points, progress)
                },
            )
        };
        let mut results: Vec<Option<PointResult>> = vec![None; total];
        let mut cancelled = false;
        loop {
            if self.interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                job.cancel();
            }
            match job
                .events
                .recv_timeout(std::time::Duration::from_millis(50))
            {
                Ok(JobEvent::Point((i, r))) => {
                    bar.set_message(format!("{} {:.2}", r.point.curve, r.point.level));
                    results[i] = Some(r);
                }
                Ok(JobEvent::Progress { done, .. }) => bar.set_position(done as u64),
                Ok(JobEvent::Finished(())) => break,
                Ok(JobEvent::Cancelled) => {
                    cancelled = true;
                    break;
                }
                Ok(JobEvent::Failed(e)) => {
                    bar.abandon();
                    return Err(e.into());
                }
                Ok(JobEvent::Started) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the sweep's worker stopped without a result")
                }
            }
        }
        bar.finish_and_clear();
        Ok((results.into_iter().flatten().collect(), cancelled))
    }
}

fn print_summary(report: &Report, allocated: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let measured = report.baseline.is_some();
    let quality_name = match report.baseline {
        Some(b) => b.quality_name(),
        None => "weight-SQNR",
    };
    print_baseline(&mut out, report)?;
    print_points(&mut out, report, quality_name)?;
    print_sensitivity(&mut out, report, quality_name, measured)?;
    print_heatmap(&mut out, report, quality_name, measured)?;
    if allocated {
        print_allocations(&mut out, report, measured)?;
    }
    print_speed(&mut out, report, quality_name)?;
    Ok(())
}

/// A point's curve, with the block type for GGUF points (one curve, many types).
fn point_name(p: &crate::sweep::Point) -> String {
    match p.config.format {
        crate::compress::config::Format::Gguf(q) => format!("{} {}", p.curve, q.name()),
        _ => p.curve.clone(),
    }
}

/// The measured speed of each point's artifact beside its quality (`--speed`).
fn print_speed(out: &mut impl Write, report: &Report, quality_name: &str) -> anyhow::Result<()> {
    let Some(speed) = &report.speed else {
        return Ok(());
    };
    writeln!(
        out,
        "\nspeed ({}, each artifact served alone by a fresh process; * latency/quality Pareto):",
        speed.runtime
    )?;
    use crate::measure::speed::{Served, Variant};
    let figures = |v: &Variant| -> String {
        let noisy = if v.served.as_ref().is_some_and(Served::noisy) {
            " (noisy)"
        } else {
            ""
        };
        match (&v.served, &v.unavailable) {
            (
                Some(Served::Language {
                    prompt_tokens_per_second,
                    generation_tokens_per_second,
                    ..
                }),
                _,
            ) => format!(
                "{prompt_tokens_per_second:>8.1} {generation_tokens_per_second:>7.1} tok/s{noisy}"
            ),
            (Some(_), _) => match v.classifier_figures() {
                Some((ms, per_s)) => format!("{ms:>8.3} ms {per_s:>10.0}/s{noisy}"),
                None => "–".into(),
            },
            (None, Some(why)) => crate::text::printable(why).into_owned(),
            (None, None) => "–".into(),
        }
    };
    // Latency (classifiers) or time per generated token (language models), as a
    // ratio to the original's: above 1 is slower.
    let cost = Variant::time_cost;
    let base = cost(&speed.original);
    let language = speed.original.generation_speed().is_some();
    writeln!(
        out,
        "{:<26} {:>7} {:>10} {:>22} {:>9}  {quality_name}",
        "curve",
        "level",
        "on disk",
        if language {
            "prompt, generation"
        } else {
            "p50 latency, samples/s"
        },
        "vs orig."
    )?;
    writeln!(
        out,
        "{:<26} {:>7} {:>10} {}",
        "original",
        "",
        human_bytes(speed.original.bytes_on_disk),
        figures(&speed.original)
    )?;
    let front = report.pareto_latency.clone().unwrap_or_default();
    for (i, (r, v)) in report.points.iter().zip(&speed.points).enumerate() {
        let ratio = match (base, cost(v)) {
            (Some(b), Some(c)) if b > 0.0 => format!("{:.2}×", c / b),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<26} {:>7.2} {:>10} {} {:>9}  {:.4}{}",
            crate::text::printable(&point_name(&r.point)),
            r.point.level,
            human_bytes(v.bytes_on_disk),
            figures(v),
            ratio,
            crate::sweep::analysis::quality(r),
            if front.contains(&i) { " *" } else { "" }
        )?;
    }
    Ok(())
}

/// What the points are measured against.
fn print_baseline(out: &mut impl Write, report: &Report) -> anyhow::Result<()> {
    if let Some(b) = report.baseline {
        match b.task {
            TaskFigures::Embedding(e) => writeln!(
                out,
                "baseline: {} sentences · Spearman {} with the pair scores; \
                 quality is the mean cosine to the original's embeddings",
                b.samples,
                e.spearman.map_or("–".into(), |s| format!("{s:.4}"))
            )?,
            TaskFigures::Language(l) => writeln!(
                out,
                "baseline: perplexity {:.3} · next-token top-1 {:.2}% · {} tokens; \
                 quality is top-1 agreement with the original's next tokens",
                l.perplexity,
                100.0 * b.top1,
                b.samples
            )?,
            TaskFigures::Classification => writeln!(
                out,
                "baseline: top-1 {:.2}% · loss {:.4} · {} samples",
                100.0 * b.top1,
                b.loss,
                b.samples
            )?,
        }
    } else {
        writeln!(
            out,
            "no data: quality is weight SQNR (dB), a fidelity proxy, not accuracy"
        )?;
    }
    Ok(())
}

/// One line per point of the curves, Pareto-optimal ones marked.
fn print_points(out: &mut impl Write, report: &Report, quality_name: &str) -> anyhow::Result<()> {
    let measured = report.baseline.is_some();
    let language = report.baseline.is_some_and(|b| b.language().is_some());
    writeln!(
        out,
        "{:<26} {:>7} {:>10} {:>9} {:>10}{}",
        "curve",
        "level",
        match quality_name {
            "top-1 agreement" => "agreement",
            "mean cosine" => "mean cos",
            "weight-SQNR" => "SQNR dB",
            other => other,
        },
        "bits/w",
        "MB",
        if language {
            format!(" {:>11} {:>9}", "perplexity", "KL mean")
        } else {
            String::new()
        }
    )?;
    let front = pareto_front(report.points);
    for (i, r) in report.points.iter().enumerate() {
        if r.point.layer.is_some() {
            continue;
        }
        let q = quality(r);
        writeln!(
            out,
            "{:<26} {:>7.3} {:>10} {:>9.3} {:>10.3}{}{}",
            point_name(&r.point),
            r.point.level,
            if measured {
                format!("{:.2}%", 100.0 * q)
            } else {
                format!("{q:.1}")
            },
            r.bits_per_weight,
            r.bytes as f64 / 1e6,
            match r.metrics.and_then(|m| m.language()) {
                Some(l) => format!(" {:>11.3} {:>9.5}", l.perplexity, l.kl_divergence),
                None => String::new(),
            },
            if front.contains(&i) { "  *pareto" } else { "" }
        )?;
    }
    Ok(())
}

/// The layers ranked by how much pruning each alone costs.
fn print_sensitivity(
    out: &mut impl Write,
    report: &Report,
    quality_name: &str,
    measured: bool,
) -> anyhow::Result<()> {
    if !report.sensitivity.is_empty() {
        writeln!(
            out,
            "\nlayer sensitivity (magnitude pruning alone, mean {} drop), most sensitive first:",
            quality_name
        )?;
        for s in &report.sensitivity {
            writeln!(
                out,
                "  {:<40} {:>8.4}{}",
                crate::text::printable(&s.layer),
                s.score,
                if measured { "" } else { " dB" }
            )?;
        }
    }
    Ok(())
}

/// Layer × level, each layer pruned alone.
fn print_heatmap(
    out: &mut impl Write,
    report: &Report,
    quality_name: &str,
    measured: bool,
) -> anyhow::Result<()> {
    let map = heatmap(report.points, report.baseline.map(|b| b.quality()));
    if !map.is_empty() {
        writeln!(
            out,
            "\nlayer × level, each layer alone: {}",
            if measured {
                format!("{quality_name} drop in points")
            } else {
                "weight SQNR in dB (a fidelity proxy)".into()
            }
        )?;
        write!(out, "  {:<40}", "")?;
        for c in &map.columns {
            write!(out, " {:>7}", c.heading())?;
        }
        writeln!(out)?;
        for (layer, row) in map.layers.iter().zip(&map.cells) {
            write!(out, "  {:<40}", crate::text::printable(layer))?;
            for cell in row {
                let text = match cell {
                    Some(HeatCell {
                        top1_drop: Some(d), ..
                    }) => format!("{:.2}", 100.0 * d),
                    Some(c) if c.sqnr_db.is_finite() => format!("{:.1}dB", c.sqnr_db),
                    Some(_) => "exact".into(),
                    None => "-".into(),
                };
                write!(out, " {text:>7}")?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The measured allocations of one average sparsity, the best marked.
fn print_allocations(out: &mut impl Write, report: &Report, measured: bool) -> anyhow::Result<()> {
    let best = best_allocation(report.points);
    writeln!(out, "\nallocations of one average sparsity, measured:")?;
    for r in report
        .points
        .iter()
        .filter(|r| r.point.curve.starts_with("allocation: "))
    {
        let q = quality(r);
        writeln!(
            out,
            "  {:<30} {:>5.1}% → {:>10} · {:.3} MB{}",
            r.point.curve,
            100.0 * r.sparsity,
            if measured {
                format!("{:.2}%", 100.0 * q)
            } else {
                format!("{q:.1} dB")
            },
            r.bytes as f64 / 1e6,
            if best.is_some_and(|b| std::ptr::eq(b, r)) {
                "  ← best"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}
