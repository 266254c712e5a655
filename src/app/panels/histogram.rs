//! The selected tensor: its histogram (log-count and |w| toggles) and statistics,
//! with the compressed tensor's histogram overlaid, the pruning threshold, the
//! quantization grid and the grid's reach drawn on it.

use egui_plot::{AxisHints, Bar, BarChart, GridInput, GridMark, Legend, LineStyle, Plot, VLine};

use crate::app::{Command, LoadedModel, Settings, group_digits, human_bytes};
use crate::measure::evaluation::{Overlay, TensorResult};
use crate::stats::{Histogram, TensorStats, linspace_edges};

/// Bars for a histogram; heights are log10(1 + count) when `log` is set.
pub fn bars(h: &Histogram, log: bool) -> Vec<Bar> {
    bars_of(&h.counts, &h.edges(), log)
}

fn bars_of(counts: &[u64], edges: &[f64], log: bool) -> Vec<Bar> {
    counts
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

fn overlay_bars(o: &Overlay, log: bool) -> Vec<Bar> {
    bars_of(
        &o.counts,
        &linspace_edges(o.min, o.max, o.counts.len()),
        log,
    )
}

/// A tick label with as many decimals as its step needs (0.5 → "0.5", not "0").
pub fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).max(0.0) as usize
    } else {
        0
    };
    let text = format!("{value:.decimals$}");
    // No "-0" for a mark at zero.
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        text.trim_start_matches('-').to_owned()
    } else {
        text
    }
}

/// The compressed tensor's markers: its pruning threshold, the quantization grid and
/// the grid's reach (on |w| when `abs`).
fn marker_lines(c: &TensorResult, abs: bool) -> Vec<VLine> {
    let mut lines = Vec::new();
    if let Some(t) = c.threshold {
        let red = egui::Color32::from_rgb(220, 60, 60);
        let xs: &[f64] = if abs { &[t] } else { &[-t, t] };
        for &x in xs {
            lines.push(
                VLine::new("pruning threshold", x)
                    .color(red)
                    .style(LineStyle::dashed_loose()),
            );
        }
    }
    for &g in &c.grid {
        if !abs || g >= 0.0 {
            lines.push(
                VLine::new("quantization grid", g.abs())
                    .color(egui::Color32::from_gray(150))
                    .width(0.5),
            );
        }
    }
    let (lo, hi) = c.range;
    if c.quantized && lo.is_finite() && hi.is_finite() {
        let green = egui::Color32::from_rgb(60, 170, 90);
        let reach: Vec<f64> = if abs {
            vec![lo.abs().max(hi.abs())]
        } else {
            vec![lo, hi]
        };
        for x in reach {
            lines.push(VLine::new("grid reach", x).color(green).width(1.5));
        }
    }
    lines
}

pub struct HistogramPanel<'a> {
    pub loaded: &'a LoadedModel,
    pub index: usize,
    pub hist: Option<&'a Histogram>,
    pub compressed: Option<&'a TensorResult>,
    pub computing: bool,
    pub settings: &'a mut Settings,
}

impl super::Panel for HistogramPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, _commands: &mut Vec<Command>) {
        let HistogramPanel {
            loaded,
            index,
            hist,
            compressed,
            computing,
            settings,
        } = self;
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
                let abs = settings.abs_values;
                let chart = BarChart::new("original", bars(h, settings.log_counts))
                    .color(egui::Color32::from_rgb(90, 140, 220));
                let overlay = compressed.map(|c| {
                    let o = if abs { &c.abs } else { &c.signed };
                    BarChart::new(
                        "compressed (zeroed left out)",
                        overlay_bars(o, settings.log_counts),
                    )
                    .color(egui::Color32::from_rgba_unmultiplied(235, 140, 50, 150))
                });
                let lines = compressed.map_or_else(Vec::new, |c| marker_lines(c, abs));
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
                        AxisHints::new_x()
                            .label(x_label)
                            .label_spacing(30.0..=45.0)
                            .formatter(|mark, _| tick_label(mark.value, mark.step_size)),
                    ])
                    .x_grid_spacer(nice_grid)
                    .y_axis_label(y_label)
                    .allow_scroll(false)
                    .legend(Legend::default())
                    .show(ui, |plot| {
                        plot.bar_chart(chart);
                        if let Some(o) = overlay {
                            plot.bar_chart(o);
                        }
                        for l in lines {
                            plot.vline(l);
                        }
                    });
                if let Some(c) = compressed {
                    compressed_line(ui, c);
                }
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
}

/// One line on what compression did to this tensor.
fn compressed_line(ui: &mut egui::Ui, c: &TensorResult) {
    let threshold = c
        .threshold
        .map_or(String::new(), |t| format!(" (largest |w| zeroed {t:.5})"));
    let sqnr = if c.sqnr_db.is_finite() {
        format!("{:.1} dB", c.sqnr_db)
    } else {
        "exact".to_owned()
    };
    ui.label(format!(
        "Compressed: {} · {} · {:.1}% zeros · {} weights zeroed{threshold} · {} -> {} · SQNR {sqnr} (weight fidelity, not accuracy)",
        c.scheme,
        c.storage,
        100.0 * c.sparsity,
        group_digits(c.zeroed),
        human_bytes(c.bytes_before),
        human_bytes(c.bytes_after),
    ));
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
    fn tick_labels_keep_the_decimals_their_step_needs() {
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(-0.5, 0.5), "-0.5");
        assert_eq!(tick_label(0.0, 0.5), "0.0");
        assert_eq!(tick_label(-0.0, 0.1), "0.0");
        assert_eq!(tick_label(10.0, 5.0), "10");
        assert_eq!(tick_label(0.004, 0.002), "0.004");
    }

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
