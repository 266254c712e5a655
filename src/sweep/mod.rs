//! Trade-off curves: many compression configurations of one model, each applied and
//! measured — accuracy on data where a runner and a data set exist, weight fidelity
//! always. A sweep is a list of [`Point`]s (a configuration, the curve it belongs to
//! and its level); [`run`] evaluates them in parallel, streaming each finished point,
//! and [`analysis`] turns the results into Pareto fronts, sensitivity rankings and
//! sensitivity-aware allocations.

pub mod analysis;
pub mod output;

use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::compress::apply::TensorCache;
use crate::compress::config::{Config, Format, IntGranularity, Method, Override};
use crate::error::{Error, Result};
use crate::eval::Metrics;
use crate::eval::evaluator::Evaluator;
use crate::jobs::{CancelToken, Progress};
use crate::model::Model;

/// Where sweep recipes say they come from, in error messages.
const ORIGIN: &str = "(sweep)";

/// Samples per forward pass in sweeps: a cancelled sweep stops within one such batch
/// (about 50 ms of the digit CNN on one core).
pub const SWEEP_BATCH: usize = 128;

/// What a point's level measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Fraction of weights pruned (0–1).
    Sparsity,
    /// Nominal bits per weight of the number format.
    Bits,
}

/// One configuration to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The curve it belongs to, e.g. `magnitude (global)` or `int per channel`.
    pub curve: String,
    pub axis: Axis,
    pub level: f64,
    /// For per-layer sensitivity: the one tensor this point changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(skip)]
    pub config: Config,
    /// The recipe `slimscope apply` reproduces this point from.
    pub recipe: String,
}

impl Point {
    pub(crate) fn new(
        curve: String,
        axis: Axis,
        level: f64,
        layer: Option<String>,
        config: Config,
    ) -> Self {
        let recipe = config.recipe_text(None);
        Point {
            curve,
            axis,
            level,
            layer,
            config,
            recipe,
        }
    }
}

/// What one point measured.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    #[serde(flatten)]
    pub point: Point,
    /// Model bytes in the smallest storage of each tensor.
    pub bytes: u64,
    /// Over every parameter of the model.
    pub bits_per_weight: f64,
    /// Fraction of exact zeros in the compressed tensors.
    pub sparsity: f64,
    /// Weight fidelity of the compressed tensors (not accuracy): SQNR in dB (+∞ if
    /// nothing changed) and ‖w − ŵ‖/‖w‖.
    pub weight_sqnr_db: f64,
    pub weight_relative_error: f64,
    /// Accuracy on the data, when a runner and data were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// Pruning methods a sweep can trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepMethod {
    /// Magnitude, one threshold per tensor.
    Magnitude,
    /// Magnitude, one threshold across all tensors.
    Global,
    Random,
    /// Whole output rows (neurons / filters) by L2 norm.
    Structured,
    /// 2 of every 4: one point at 50%.
    TwoFour,
    /// Data-aware: |w|·‖x‖ per output (learns from calibration samples).
    Wanda,
    /// Data-aware: OBS pruning with weight updates.
    SparseGpt,
}

impl SweepMethod {
    pub const ALL: [SweepMethod; 7] = [
        SweepMethod::Global,
        SweepMethod::Magnitude,
        SweepMethod::Random,
        SweepMethod::Structured,
        SweepMethod::TwoFour,
        SweepMethod::Wanda,
        SweepMethod::SparseGpt,
    ];
    /// The methods that need no data (what a sweep without calibration runs).
    pub const DATA_FREE: [SweepMethod; 5] = [
        SweepMethod::Global,
        SweepMethod::Magnitude,
        SweepMethod::Random,
        SweepMethod::Structured,
        SweepMethod::TwoFour,
    ];
    /// The methods that learn from calibration samples kept apart.
    pub const DATA_AWARE: [SweepMethod; 2] = [SweepMethod::Wanda, SweepMethod::SparseGpt];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            SweepMethod::Magnitude => "magnitude",
            SweepMethod::Global => "global",
            SweepMethod::Random => "random",
            SweepMethod::Structured => "structured",
            SweepMethod::TwoFour => "2:4",
            SweepMethod::Wanda => "wanda",
            SweepMethod::SparseGpt => "sparsegpt",
        }
    }

    pub fn is_data_aware(self) -> bool {
        SweepMethod::DATA_AWARE.contains(&self)
    }

    pub fn parse(name: &str) -> Result<SweepMethod> {
        SweepMethod::ALL
            .into_iter()
            .find(|m| m.name() == name.trim())
            .ok_or_else(|| {
                Error::InvalidSetting(format!(
                    "unknown pruning method `{name}` (expected one of: {})",
                    SweepMethod::ALL.map(SweepMethod::name).join(", ")
                ))
            })
    }

    fn curve(self) -> &'static str {
        match self {
            SweepMethod::Magnitude => "magnitude (per tensor)",
            SweepMethod::Global => "magnitude (global)",
            SweepMethod::Random => "random",
            SweepMethod::Structured => "structured rows (L2)",
            SweepMethod::TwoFour => "2:4",
            SweepMethod::Wanda => "Wanda",
            SweepMethod::SparseGpt => "SparseGPT",
        }
    }

    fn config(self, sparsity: f64) -> Config {
        let (method, global_scope) = match self {
            SweepMethod::Magnitude => (Method::Magnitude, false),
            SweepMethod::Global => (Method::Magnitude, true),
            SweepMethod::Random => (Method::Random, false),
            SweepMethod::Structured => (Method::Structured, false),
            SweepMethod::TwoFour => (Method::TwoFour, false),
            SweepMethod::Wanda => (Method::Wanda, false),
            SweepMethod::SparseGpt => (Method::SparseGpt, false),
        };
        Config {
            sparsity_pct: 100.0 * sparsity,
            method,
            global_scope,
            ..Config::default()
        }
    }
}

/// The most levels one range may ask for: each is a measurement.
pub const MAX_LEVELS: usize = 1000;

/// Levels `a:b:step` (inclusive of `b` within rounding), or a comma list; at most
/// [`MAX_LEVELS`], every one a finite number.
pub fn parse_levels(text: &str) -> Result<Vec<f64>> {
    let bad = |what: &str| Error::InvalidSetting(format!("levels `{text}`: {what}"));
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| bad(&format!("`{s}` is not a number")))
    };
    let levels: Vec<f64> = match text.split(':').collect::<Vec<_>>().as_slice() {
        [a, b, step] => {
            let (a, b, step) = (number(a)?, number(b)?, number(step)?);
            if !(a.is_finite() && b.is_finite() && step.is_finite()) || step <= 0.0 || b < a {
                return Err(bad(
                    "expected start:end:step of finite numbers, with end ≥ start and step > 0",
                ));
            }
            let count = ((b - a) / step + 1e-9).floor();
            if count >= MAX_LEVELS as f64 {
                return Err(bad(&format!("more than {MAX_LEVELS} levels")));
            }
            let n = count as usize;
            // Round to the step's decimals so 0.1 + 0.2 prints as 0.3.
            (0..=n)
                .map(|i| ((a + i as f64 * step) * 1e9).round() / 1e9)
                .collect()
        }
        [_] => text.split(',').map(number).collect::<Result<_>>()?,
        _ => return Err(bad("expected start:end:step or a comma list")),
    };
    if levels.is_empty() {
        return Err(bad("no levels"));
    }
    if levels.len() > MAX_LEVELS {
        return Err(bad(&format!("more than {MAX_LEVELS} levels")));
    }
    if let Some(v) = levels.iter().find(|v| !v.is_finite()) {
        return Err(bad(&format!("{v} is not a finite number")));
    }
    Ok(levels)
}

/// Nominal bits per weight of a number format (the bits curve's x).
pub fn nominal_bits(format: Format) -> f64 {
    match format {
        Format::Keep => 32.0,
        Format::Int { bits, .. } => f64::from(bits),
        Format::F16 | Format::Bf16 => 16.0,
        Format::Fp8E4m3 | Format::Fp8E5m2 => 8.0,
        Format::Gguf(q) => q.block_bytes() as f64 * 8.0 / q.block_len() as f64,
    }
}

fn format_curve(format: Format) -> String {
    match format {
        Format::Int {
            granularity,
            mse_clip,
            ..
        } => format!(
            "int {}{}",
            granularity.label(),
            if mse_clip { ", MSE clip" } else { "" }
        ),
        Format::Gguf(_) => "GGUF".into(),
        Format::Fp8E4m3 | Format::Fp8E5m2 => "fp8".into(),
        other => other.label(),
    }
}

/// Whole-model curves: every method at every sparsity, then every format alone.
pub fn global_points(
    methods: &[SweepMethod],
    sparsities: &[f64],
    formats: &[Format],
) -> Vec<Point> {
    let mut points = Vec::new();
    for &m in methods {
        let levels: &[f64] = if m == SweepMethod::TwoFour {
            &[0.5]
        } else {
            sparsities
        };
        for &s in levels {
            points.push(Point::new(
                m.curve().into(),
                Axis::Sparsity,
                s,
                None,
                m.config(s),
            ));
        }
    }
    for &f in formats {
        let config = Config {
            format: f,
            ..Config::default()
        };
        points.push(Point::new(
            format_curve(f),
            Axis::Bits,
            nominal_bits(f),
            None,
            config,
        ));
    }
    points
}

/// The full global sweep: every method at 0, 5, …, 95% and int8…int2 per channel
/// (the app's curves, and what `slimscope bench --sweeps` times against PyTorch).
pub fn full_global_points() -> Vec<Point> {
    let levels: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.05).collect();
    let formats: Vec<Format> = [8, 6, 4, 3, 2]
        .map(|bits| Format::Int {
            bits,
            granularity: IntGranularity::Channel,
            mse_clip: false,
        })
        .to_vec();
    global_points(&SweepMethod::DATA_FREE, &levels, &formats)
}

/// The data-aware curves beside [`full_global_points`]: Wanda and SparseGPT at
/// 10, 20, …, 90%, and GPTQ at int8…int2 per channel (each point learns from the
/// calibration samples kept apart).
pub fn data_aware_points() -> Vec<Point> {
    let levels: Vec<f64> = (1..10).map(|i| f64::from(i) * 0.1).collect();
    let mut points = global_points(&SweepMethod::DATA_AWARE, &levels, &[]);
    for bits in [8, 6, 4, 3, 2] {
        let format = Format::Int {
            bits,
            granularity: IntGranularity::Channel,
            mse_clip: false,
        };
        points.push(Point::new(
            format!("{} GPTQ", format_curve(format)),
            Axis::Bits,
            nominal_bits(format),
            None,
            Config {
                format,
                gptq: true,
                ..Config::default()
            },
        ));
    }
    points
}

/// A language model's curves: re-quantization to llama.cpp's block types from
/// Q8_0 down to Q2_K, and magnitude pruning (per tensor) at 10–50%. Each point is a
/// full pass over the text, so the set is small.
pub fn language_points() -> Vec<Point> {
    use crate::dtype::GgmlQuant;
    let formats: Vec<Format> = [
        GgmlQuant::Q8_0,
        GgmlQuant::Q4_0,
        GgmlQuant::Q4_K,
        GgmlQuant::Q3_K,
        GgmlQuant::Q2_K,
    ]
    .map(Format::Gguf)
    .to_vec();
    global_points(
        &[SweepMethod::Magnitude],
        &[0.1, 0.2, 0.3, 0.4, 0.5],
        &formats,
    )
}

/// The tensors per-layer sensitivity looks at: float matrices and kernels (rank ≥ 2),
/// as pruning and block quantization touch only those.
pub fn sweepable_layers(model: &Model) -> Vec<String> {
    model
        .tensors
        .iter()
        .filter(|t| t.shape.len() >= 2 && t.dtype.is_float() && t.dtype.can_decode())
        .map(|t| t.name.clone())
        .collect()
}

/// The sweepable layers with their parameter counts (what allocations weigh by).
pub fn layer_sizes(model: &Model) -> Vec<(String, u64)> {
    let names = sweepable_layers(model);
    model
        .tensors
        .iter()
        .filter(|t| names.contains(&t.name))
        .map(|t| (t.name.clone(), t.numel))
        .collect()
}

/// Per-layer sensitivity: each layer alone magnitude-pruned to each sparsity, and
/// alone quantized to each integer width (per channel), every other layer untouched.
pub fn per_layer_points(layers: &[String], sparsities: &[f64], bits: &[u8]) -> Vec<Point> {
    let mut points = Vec::new();
    for layer in layers {
        let alone = |o: Override| {
            let mut c = Config::default();
            c.overrides.insert(layer.clone(), o);
            c
        };
        for &s in sparsities {
            points.push(Point::new(
                "layer magnitude".into(),
                Axis::Sparsity,
                s,
                Some(layer.clone()),
                alone(Override {
                    sparsity_pct: 100.0 * s,
                    format: Format::Keep,
                }),
            ));
        }
        for &b in bits {
            points.push(Point::new(
                "layer int per channel".into(),
                Axis::Bits,
                f64::from(b),
                Some(layer.clone()),
                alone(Override {
                    sparsity_pct: 0.0,
                    format: Format::Int {
                        bits: b,
                        granularity: IntGranularity::Channel,
                        mse_clip: false,
                    },
                }),
            ));
        }
    }
    points
}

/// What the points of a sweep are measured with.
pub struct SweepContext<'a> {
    pub model: &'a Model,
    /// A network and data, for accuracy; without them points get weight fidelity only.
    pub accuracy: Option<&'a Evaluator>,
    /// Compressed tensors already computed (shared across sweeps of one model).
    pub cache: &'a TensorCache,
}

/// Apply `point`'s configuration and measure it ([`crate::measure::measure`]).
pub fn measure(ctx: &SweepContext, point: &Point, cancel: &CancelToken) -> Result<PointResult> {
    let recipe = point.config.to_recipe(std::path::Path::new(ORIGIN))?;
    // A data-aware point learns from samples kept apart and is measured on the
    // rest, unless the whole sweep already keeps them apart.
    let split;
    let evaluator = match (ctx.accuracy, recipe.kept_apart()) {
        (Some(e), n @ 1..) if e.calibration().map(|c| c.len()) != Some(n) => {
            split = e.keeping_apart(n)?;
            Some(split.as_ref())
        }
        (e, _) => e,
    };
    let with = crate::measure::With {
        cache: Some(ctx.cache),
        evaluator,
        batch: SWEEP_BATCH,
    };
    let m = crate::measure::measure(ctx.model, &recipe, with, &|| cancel.is_cancelled())?;
    Ok(PointResult {
        point: point.clone(),
        bytes: m.totals.bytes_after,
        bits_per_weight: m.totals.bits_per_weight().1,
        sparsity: m.totals.sparsity(),
        weight_sqnr_db: m.totals.weight_sqnr_db(),
        weight_relative_error: m.totals.weight_relative_error(),
        metrics: m.metrics,
    })
}

/// Measure every point on the current rayon pool (a [`crate::jobs::Pool`]'s compute
/// threads when run as a job), calling `on_point(index, result)` as each finishes and
/// `on_progress(done, total)` after it. Returns the results by index; points not
/// measured because the sweep was cancelled are `None`. A point that fails fails the
/// sweep.
pub fn run(
    ctx: &SweepContext,
    points: &[Point],
    cancel: &CancelToken,
    on_point: impl Fn(usize, &PointResult) + Sync,
    on_progress: impl Fn(usize, usize) + Sync,
) -> Result<Vec<Option<PointResult>>> {
    let results: Mutex<Vec<Option<PointResult>>> = Mutex::new(vec![None; points.len()]);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let outcome = points.par_iter().enumerate().try_for_each(|(i, p)| {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let r = measure(ctx, p, cancel)?;
        on_point(i, &r);
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        on_progress(n, points.len());
        Ok(())
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok(()) | Err(Error::Cancelled) => Ok(results),
        Err(e) => Err(e),
    }
}

/// [`run`] as a pool job's work: each point becomes a `Point((index, result))` event
/// and progress a `Progress` event; a cancelled sweep ends `Cancelled`, its points
/// already delivered.
pub fn run_job(
    ctx: &SweepContext,
    points: &[Point],
    progress: &Progress<(), (usize, PointResult)>,
) -> Result<()> {
    run(
        ctx,
        points,
        progress.token(),
        |i, r| {
            progress.point((i, r.clone()));
        },
        |done, total| {
            progress.report(done, total);
        },
    )?;
    if progress.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}
