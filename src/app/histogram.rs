//! The selected tensor: its histogram (log-count and |w| toggles) and statistics.

use egui_plot::{AxisHints, Bar, BarChart, GridInput, GridMark, Plot};

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

/// Grid marks at 1-2-5 steps, about five labelled ones across the visible range
/// (egui_plot's default steps by powers of ten, which leaves a narrow plot with a
/// single label), each with four unlabelled minor marks.
pub fn nice_grid(input: GridInput) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    let rough = span / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let major = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * magnitude);
    let minor = major / 5.0;
    let first = (lo / minor).floor() as i64;
    let last = (hi / minor).ceil() as i64;
    (first..=last)
        .map(|k| GridMark {
            value: k as f64 * minor,
            step_size: if k.rem_euclid(5) == 0 { major } else { minor },
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
                .custom_x_axes(vec![
                    // The plot is often narrow: allow tick labels closer than egui_plot's 60 px.
                    AxisHints::new_x().label(x_label).label_spacing(30.0..=45.0),
                ])
                .x_grid_spacer(nice_grid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_labels_land_on_1_2_5_steps() {
        let marks = nice_grid(GridInput {
            bounds: (-4.8, 5.3),
            base_step_size: 0.01,
        });
        let majors: Vec<f64> = marks
            .iter()
            .filter(|m| m.step_size == 5.0)
            .map(|m| m.value)
            .collect();
        assert_eq!(majors, vec![-5.0, 0.0, 5.0]);
        let marks = nice_grid(GridInput {
            bounds: (0.0, 0.9),
            base_step_size: 0.001,
        });
        assert!(
            marks
                .iter()
                .any(|m| m.step_size == 0.2 && (m.value - 0.4).abs() < 1e-12)
        );
        assert!(
            nice_grid(GridInput {
                bounds: (1.0, 1.0),
                base_step_size: 1.0
            })
            .is_empty()
        );
    }
}
