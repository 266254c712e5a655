//! The selected tensor: its histogram (log-count and |w| toggles) and statistics.

use egui_plot::{Bar, BarChart, Plot};

use super::{LoadedModel, Settings, group_digits};
use crate::stats::{Histogram, TensorStats};

/// Bars for a histogram; heights are log10(1 + count) when `log` is set.
pub fn bars(h: &Histogram, log: bool) -> Vec<Bar> {
    let edges = h.edges();
    h.counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let height = if log {
                (1.0 + c as f64).log10()
            } else {
                c as f64
            };
            Bar::new(0.5 * (edges[i] + edges[i + 1]), height)
                .width(edges[i + 1] - edges[i])
                .name(format!("[{:.5}, {:.5}): {c}", edges[i], edges[i + 1]))
        })
        .collect()
}

pub fn ui(
    ui: &mut egui::Ui,
    loaded: &LoadedModel,
    index: usize,
    hist: Option<&Histogram>,
    computing: bool,
    settings: &mut Settings,
) {
    let Some(report) = loaded.reports.get(index) else {
        return;
    };
    let info = &report.info;
    ui.heading(format!("Histogram of {}", info.name));
    ui.label(format!(
        "{:?} · {} · {} values",
        info.shape,
        info.dtype,
        group_digits(info.numel)
    ));
    ui.horizontal(|ui| {
        ui.checkbox(&mut settings.log_counts, "Log-scale counts")
            .on_hover_text("Bar heights as log10(1 + count): shows the sparse tails");
        ui.checkbox(&mut settings.abs_values, "|w|").on_hover_text(
            "Histogram of magnitudes |w| over [0, max |w|] (what magnitude pruning cuts)",
        );
        if computing {
            ui.spinner();
        }
    });
    if let Some(note) = &report.note {
        ui.colored_label(ui.visuals().warn_fg_color, note);
    }
    match hist {
        Some(h) => {
            let chart = BarChart::new("counts", bars(h, settings.log_counts))
                .color(egui::Color32::from_rgb(90, 140, 220));
            let y_label = if settings.log_counts {
                "log10(1 + count)"
            } else {
                "count"
            };
            let x_label = if settings.abs_values { "|w|" } else { "w" };
            Plot::new("histogram")
                .height((ui.available_height() - 190.0).max(160.0))
                .x_axis_label(x_label)
                .y_axis_label(y_label)
                .allow_scroll(false)
                .show(ui, |plot| plot.bar_chart(chart));
        }
        None if computing => {
            ui.label("Computing histogram…");
        }
        None => {
            ui.label("No histogram (no finite values to bin).");
        }
    }
    if let Some(s) = &report.stats {
        stats_grid(ui, s);
    }
}

fn stats_grid(ui: &mut egui::Ui, s: &TensorStats) {
    ui.add_space(6.0);
    let rows: [[(&str, String, &str); 2]; 5] = [
        [
            ("min", format!("{:.6}", s.min), "Smallest finite value"),
            ("max", format!("{:.6}", s.max), "Largest finite value"),
        ],
        [
            ("mean", format!("{:.6}", s.mean), "Mean of finite values"),
            (
                "std",
                format!("{:.6}", s.std),
                "Population standard deviation",
            ),
        ],
        [
            ("mean |w|", format!("{:.6}", s.mean_abs), "Mean magnitude"),
            (
                "zeros",
                format!("{} ({:.2}%)", s.zeros, 100.0 * s.zero_fraction),
                "Exact zeros (existing sparsity)",
            ),
        ],
        [
            (
                ">3σ",
                format!(
                    "{} ({:.3}%)",
                    s.beyond_3_sigma,
                    100.0 * s.beyond_3_sigma_fraction
                ),
                "Values more than 3σ from the mean",
            ),
            (
                ">6σ",
                format!(
                    "{} ({:.4}%)",
                    s.beyond_6_sigma,
                    100.0 * s.beyond_6_sigma_fraction
                ),
                "Heavy outliers, more than 6σ from the mean: they stretch a quantization grid",
            ),
        ],
        [
            (
                "NaN",
                s.nan.to_string(),
                "Not-a-number values, left out of every other figure",
            ),
            (
                "Inf",
                s.inf.to_string(),
                "Infinite values, left out of every other figure",
            ),
        ],
    ];
    egui::Grid::new("stats")
        .num_columns(4)
        .striped(true)
        .show(ui, |ui| {
            for row in rows {
                for (k, v, tip) in row {
                    ui.label(k).on_hover_text(tip);
                    ui.monospace(v);
                }
                ui.end_row();
            }
        });
}
