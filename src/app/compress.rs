//! Compression in the app: the controls (global sparsity, method, scope, format,
//! per-tensor overrides), the recipe they stand for, and the evaluation a worker
//! computes from it — sizes, sparsity, weight fidelity and overlay histograms for
//! every compressed tensor.
//!
//! The configuration becomes the same typed recipe an export writes, and is measured
//! by [`crate::measure::measure`] as sweeps and `slimscope apply` are, so what the app
//! shows is what an exported recipe reproduces.

use std::path::Path;

use rayon::prelude::*;

use super::{group_digits, human_bytes};
use crate::compress::apply::{AppliedTensor, TensorCache};
pub use crate::compress::config::{Config, Format, IntGranularity, Method, Override};
use crate::error::Result;
use crate::eval::Metrics;
use crate::eval::evaluator::Evaluator;
use crate::inspect::TensorReport;
use crate::model::Model;

/// Where the app's recipes say they come from, in error messages.
pub const RECIPE_ORIGIN: &str = "(app settings)";
/// Grids with at most this many distinct values are drawn on the histogram.
const MAX_GRID_LINES: usize = 64;

/// One compressed tensor as the app shows it.
#[derive(Debug, Clone)]
pub struct TensorResult {
    pub scheme: String,
    pub storage: String,
    pub sparsity: f64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub sqnr_db: f64,
    /// Weights that were non-zero and are zero now.
    pub zeroed: u64,
    /// The largest |w| that became zero, when a pruning mask was applied (the
    /// effective pruning threshold).
    pub threshold: Option<f64>,
    /// Smallest and largest compressed value (the grid's reach).
    pub range: (f64, f64),
    /// Whether some kept value changed (a quantization grid, not only pruning).
    pub quantized: bool,
    /// The compressed values, when there are few enough distinct ones to draw.
    pub grid: Vec<f64>,
    /// Histograms of the compressed values (newly zeroed ones left out) on the
    /// original's signed and |w| ranges.
    pub signed: Overlay,
    pub abs: Overlay,
}

/// Counts of compressed values in bins over `[min, max]`.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub min: f64,
    pub max: f64,
    pub counts: Vec<u64>,
}

/// What a configuration does to the whole model.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub config: Config,
    pub bins: usize,
    pub recipe: String,
    /// By tensor index; `None` for tensors the configuration leaves alone.
    pub tensors: Vec<Option<TensorResult>>,
    /// Bytes, parameters and weight fidelity over the whole model.
    pub totals: crate::measure::Totals,
    /// Non-zero weights of the whole model after compression.
    pub nonzero_after: u64,
    /// Accuracy of the compressed model on the attached data set, if one is attached
    /// (with the attachment's version, so a newer data set triggers a new evaluation).
    pub accuracy: Option<(u64, Metrics)>,
}

fn overlay(values: &[f32], min: f64, max: f64, bins: usize, abs: bool) -> Overlay {
    let mut counts = vec![0u64; bins];
    let width = max - min;
    if bins > 0 && width.is_finite() && width > 0.0 {
        for &v in values {
            let v = if abs { v.abs() } else { v };
            if v.is_finite() {
                let b = ((f64::from(v) - min) / width * bins as f64).floor();
                counts[(b.max(0.0) as usize).min(bins - 1)] += 1;
            }
        }
    }
    Overlay { min, max, counts }
}

fn tensor_result(
    original: &[f32],
    t: &AppliedTensor,
    report: &TensorReport,
    bins: usize,
) -> TensorResult {
    let (mut zeroed, mut threshold) = (0u64, None::<f64>);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut grid: Vec<f64> = Vec::new();
    let mut grid_ok = true;
    let mut quantized = false;
    let mut kept: Vec<f32> = Vec::with_capacity(t.values.len());
    for (&x, &y) in original.iter().zip(&t.values) {
        if y == 0.0 && x != 0.0 {
            zeroed += 1;
            let a = f64::from(x.abs());
            threshold = Some(threshold.map_or(a, |t: f64| t.max(a)));
        } else {
            kept.push(y);
            quantized |= x != y;
        }
        let y = f64::from(y);
        if y.is_finite() {
            lo = lo.min(y);
            hi = hi.max(y);
        }
        if grid_ok && let Err(at) = grid.binary_search_by(|g| g.total_cmp(&y)) {
            if grid.len() == MAX_GRID_LINES {
                grid_ok = false;
                grid.clear();
            } else {
                grid.insert(at, y);
            }
        }
    }
    let (smin, smax) = report.stats.as_ref().map_or((lo, hi), |s| (s.min, s.max));
    let amax = smin.abs().max(smax.abs());
    TensorResult {
        scheme: t.scheme.clone(),
        storage: t.storage.to_string(),
        sparsity: t.sparsity,
        bytes_before: t.bytes_before,
        bytes_after: t.bytes_after,
        sqnr_db: t.fidelity.sqnr_db,
        zeroed,
        threshold: threshold.filter(|_| t.pruned),
        range: (lo, hi),
        quantized,
        grid: if quantized { grid } else { Vec::new() },
        // Newly zeroed weights are left out: their spike at 0 would flatten the rest.
        signed: overlay(&kept, smin, smax, bins, false),
        abs: overlay(&kept, 0.0, amax, bins, true),
    }
}

/// Compress `model` as `config` says and measure the result (run on a worker): sizes
/// and fidelity always, accuracy when a data set is attached (`accuracy`: its version
/// and evaluator). Tensors and accuracy already computed for another configuration
/// are reused, so returning to a level is instant.
pub fn evaluate(
    model: &Model,
    reports: &[TensorReport],
    config: &Config,
    bins: usize,
    cache: &TensorCache,
    accuracy: Option<(u64, &Evaluator)>,
    cancelled: impl Fn() -> bool + Sync,
) -> Result<Evaluation> {
    let recipe = config.to_recipe(Path::new(RECIPE_ORIGIN))?;
    let with = crate::measure::With {
        cache: Some(cache),
        evaluator: accuracy.map(|(_, e)| e),
        batch: crate::eval::DEFAULT_BATCH,
    };
    let measured = crate::measure::measure(model, &recipe, with, &cancelled)?;
    let results: Vec<(usize, TensorResult)> = measured
        .applied
        .par_iter()
        .map(|(i, t)| {
            let original = model.tensor_f32(*i)?;
            Ok((*i, tensor_result(&original, t, &reports[*i], bins)))
        })
        .collect::<Result<_>>()?;
    let nonzero = |r: &TensorReport| r.info.numel - r.stats.as_ref().map_or(0, |s| s.zeros);
    let mut nonzero_after: u64 = reports.iter().map(nonzero).sum();
    for (i, t) in &measured.applied {
        let after = ((1.0 - t.sparsity) * t.values.len() as f64).round() as u64;
        nonzero_after = nonzero_after - nonzero(&reports[*i]) + after;
    }
    let mut tensors: Vec<Option<TensorResult>> = vec![None; model.tensors.len()];
    for (i, r) in results {
        tensors[i] = Some(r);
    }
    let totals = measured.totals;
    Ok(Evaluation {
        config: config.clone(),
        bins,
        recipe: config.recipe_text(None),
        tensors,
        totals,
        nonzero_after,
        accuracy: accuracy.zip(measured.metrics).map(|((v, _), m)| (v, m)),
    })
}

/// A format picker; returns whether the choice changed.
fn format_picker(ui: &mut egui::Ui, id: &str, format: &mut Format) -> bool {
    let before = *format;
    egui::ComboBox::from_id_salt(id)
        .selected_text(format.label())
        .show_ui(ui, |ui| {
            for choice in Format::choices() {
                let selected = format.same_choice(choice);
                if ui.selectable_label(selected, choice.label()).clicked() && !selected {
                    *format = match (choice, before) {
                        // Keep the granularity and clipping when only the bits change.
                        (
                            Format::Int { bits, .. },
                            Format::Int {
                                granularity,
                                mse_clip,
                                ..
                            },
                        ) => Format::Int {
                            bits,
                            granularity,
                            mse_clip,
                        },
                        (c, _) => c,
                    };
                }
            }
        })
        .response
        .on_hover_text(
            "Number format of the weights: integers with scales, narrower floats, or llama.cpp's GGUF block types",
        );
    if let Format::Int {
        granularity,
        mse_clip,
        ..
    } = format
    {
        ui.horizontal(|ui| {
            egui::ComboBox::from_id_salt(format!("{id}-granularity"))
                .selected_text(granularity.label())
                .show_ui(ui, |ui| {
                    for g in [
                        IntGranularity::Channel,
                        IntGranularity::Group128,
                        IntGranularity::Tensor,
                    ] {
                        ui.selectable_value(granularity, g, g.label());
                    }
                })
                .response
                .on_hover_text("Which weights share one scale: finer scales, smaller error, more bytes");
            ui.checkbox(mse_clip, "MSE clip").on_hover_text(
                "Shrink each scale's range to the one with the least squared error (clips outliers)",
            );
        });
    }
    *format != before
}

/// The compression controls and the model-wide figures. Edits `config` in place.
pub fn controls_ui(
    ui: &mut egui::Ui,
    config: &mut Config,
    selected: Option<&str>,
    evaluation: Option<&Evaluation>,
    busy: bool,
) {
    ui.horizontal(|ui| {
        ui.heading("Compress");
        if busy {
            ui.spinner()
                .on_hover_text("Computing the compressed model…");
        }
    });
    egui::Grid::new("compress_controls")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Method").on_hover_text("How weights are chosen for pruning");
            egui::ComboBox::from_id_salt("method")
                .selected_text(config.method.label())
                .show_ui(ui, |ui| {
                    for m in Method::ALL {
                        ui.selectable_value(&mut config.method, m, m.label())
                            .on_hover_text(m.tip());
                    }
                })
                .response
                .on_hover_text(config.method.tip());
            ui.end_row();
            let label = ui
                .label("Sparsity")
                .on_hover_text("Fraction of weights set to zero");
            ui.add_enabled(
                config.method != Method::TwoFour,
                egui::Slider::new(&mut config.sparsity_pct, 0.0..=99.0)
                    .step_by(1.0)
                    .fixed_decimals(0)
                    .suffix(" %"),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "Target sparsity of every matrix (biases and norms are never pruned); 2:4 is always 50%",
            );
            ui.end_row();
            if config.method == Method::Magnitude {
                ui.label("Scope");
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut config.global_scope, false, "per tensor")
                        .on_hover_text("Every tensor loses the same fraction of its weights");
                    ui.selectable_value(&mut config.global_scope, true, "global")
                        .on_hover_text(
                            "One |w| threshold across all tensors: layers with small weights lose more",
                        );
                });
                ui.end_row();
            }
            ui.label("Format");
            ui.vertical(|ui| {
                format_picker(ui, "format", &mut config.format);
            });
            ui.end_row();
        });
    if let Some(name) = selected {
        ui.add_space(4.0);
        let mut on = config.overrides.contains_key(name);
        let label = format!("Own settings for {name}");
        if ui
            .checkbox(&mut on, egui::RichText::new(label))
            .on_hover_text("Give this tensor its own sparsity (magnitude) and format")
            .changed()
        {
            if on {
                config.overrides.insert(
                    name.to_owned(),
                    Override {
                        sparsity_pct: 0.0,
                        format: Format::Keep,
                    },
                );
            } else {
                config.overrides.remove(name);
            }
        }
        if let Some(o) = config.overrides.get_mut(name) {
            ui.indent("override", |ui| {
                ui.add(
                    egui::Slider::new(&mut o.sparsity_pct, 0.0..=99.0)
                        .step_by(1.0)
                        .fixed_decimals(0)
                        .suffix(" %")
                        .text("sparsity"),
                )
                .on_hover_text("Magnitude sparsity of this tensor alone");
                format_picker(ui, "override-format", &mut o.format);
            });
        }
        if !config.overrides.is_empty() {
            ui.label(format!(
                "{} tensor(s) with their own settings",
                config.overrides.len()
            ));
        }
    }
    ui.add_space(6.0);
    match evaluation {
        Some(e) => figures_ui(ui, e),
        None if busy => {
            ui.label("Computing…");
        }
        None => {}
    }
}

fn figures_ui(ui: &mut egui::Ui, e: &Evaluation) {
    let (bpw_before, bpw_after) = e.totals.bits_per_weight();
    let ratio = e.totals.bytes_before as f64 / e.totals.bytes_after.max(1) as f64;
    egui::Grid::new("compress_figures")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            ui.label("Model size")
                .on_hover_text("Bytes of all tensors in the smallest storage that holds each");
            ui.label(format!(
                "{} -> {} ({ratio:.2}x smaller)",
                human_bytes(e.totals.bytes_before),
                human_bytes(e.totals.bytes_after)
            ));
            ui.end_row();
            ui.label("Bits per weight");
            ui.label(format!("{bpw_before:.2} -> {bpw_after:.2}"));
            ui.end_row();
            ui.label("Non-zero weights");
            ui.label(format!(
                "{} of {} ({:.1}% sparse)",
                group_digits(e.nonzero_after),
                group_digits(e.totals.params),
                100.0 * (1.0 - e.nonzero_after as f64 / e.totals.params.max(1) as f64)
            ));
            ui.end_row();
            ui.label("Weight SQNR").on_hover_text(
                "Signal-to-noise of the compressed weights, all compressed tensors together. \
                 A weight-fidelity figure, not accuracy.",
            );
            let sqnr_db = e.totals.weight_sqnr_db();
            ui.label(if sqnr_db.is_finite() {
                format!("{:.1} dB (fidelity, not accuracy)", sqnr_db)
            } else {
                "unchanged".to_owned()
            });
            ui.end_row();
        });
}
