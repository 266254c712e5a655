//! The tensor table: every tensor with its shape, dtype, size and key statistics;
//! sortable by any column, filtered by name, virtualised (only visible rows are laid
//! out, so models with thousands of tensors scroll smoothly).

use super::{Command, LoadedModel, group_digits, human_bytes};
use crate::inspect::TensorReport;
use crate::stats::TensorStats;

/// Columns, in display order: (title, width, tooltip).
const COLUMNS: [(&str, f32, &str); 8] = [
    (
        "Name",
        200.0,
        "Tensor name (click a row to see its histogram)",
    ),
    ("Shape", 90.0, "Dimensions, outermost first"),
    ("DType", 48.0, "Element type as stored"),
    ("Params", 78.0, "Number of elements"),
    ("Bytes", 68.0, "Bytes in the file"),
    ("Zeros %", 52.0, "Fraction of exact zeros, %"),
    ("Std", 58.0, "Standard deviation of the values"),
    (
        ">3σ %",
        48.0,
        "Fraction of values more than 3 standard deviations from the mean, %",
    ),
];

/// Width the table needs (columns plus item spacing), for the panel's default size.
pub fn width() -> f32 {
    COLUMNS.iter().map(|c| c.1 + 8.0).sum::<f32>() + 16.0
}

/// Sorting and filtering of the table (runtime state).
#[derive(Debug, Clone, Default)]
pub struct TableState {
    pub filter: String,
    /// Column index to sort by; `None` keeps file order.
    pub sort: Option<usize>,
    pub descending: bool,
}

/// A statistic for sorting; tensors without statistics sort first.
fn stat(r: &TensorReport, f: fn(&TensorStats) -> f64) -> f64 {
    r.stats.as_ref().map_or(f64::NEG_INFINITY, f)
}

impl TableState {
    /// Row order after filtering and sorting.
    pub fn rows(&self, reports: &[TensorReport]) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<usize> = (0..reports.len())
            .filter(|&i| needle.is_empty() || reports[i].info.name.to_lowercase().contains(&needle))
            .collect();
        if let Some(col) = self.sort {
            rows.sort_by(|&a, &b| {
                let (ra, rb) = (&reports[a], &reports[b]);
                let ord = match col {
                    0 => ra.info.name.cmp(&rb.info.name),
                    1 => ra.info.shape.cmp(&rb.info.shape),
                    2 => ra.info.dtype.cmp(&rb.info.dtype),
                    3 => ra.info.numel.cmp(&rb.info.numel),
                    4 => ra.info.size_bytes.cmp(&rb.info.size_bytes),
                    5 => stat(ra, |s| s.zero_fraction).total_cmp(&stat(rb, |s| s.zero_fraction)),
                    6 => stat(ra, |s| s.std).total_cmp(&stat(rb, |s| s.std)),
                    _ => stat(ra, |s| s.beyond_3_sigma_fraction)
                        .total_cmp(&stat(rb, |s| s.beyond_3_sigma_fraction)),
                };
                if self.descending { ord.reverse() } else { ord }
            });
        }
        rows
    }

    /// Draw the table; returns the commands the user asked for.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        loaded: &LoadedModel,
        selected: Option<usize>,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        ui.horizontal(|ui| {
            ui.heading("Tensors");
            ui.add(
                egui::TextEdit::singleline(&mut self.filter)
                    .hint_text("filter by name")
                    .desired_width(180.0),
            )
            .on_hover_text("Show only tensors whose name contains this text");
            ui.label(format!(
                "{} tensors in {} layers",
                loaded.reports.len(),
                loaded.model.layers.len()
            ));
        });
        ui.separator();
        let left = egui::Layout::left_to_right(egui::Align::Center);
        let right = egui::Layout::right_to_left(egui::Align::Center);
        egui::ScrollArea::horizontal().show(ui, |ui| {
            ui.horizontal(|ui| {
                for (c, (title, width, tip)) in COLUMNS.iter().enumerate() {
                    let arrow = match (self.sort == Some(c), self.descending) {
                        (true, false) => " ^",
                        (true, true) => " v",
                        _ => "",
                    };
                    let header =
                        egui::Button::new(egui::RichText::new(format!("{title}{arrow}")).strong())
                            .frame(false);
                    let layout = if c < 3 { left } else { right };
                    let clicked = cell(ui, *width, 18.0, layout, |ui| {
                        ui.add(header)
                            .on_hover_text(format!("{tip}. Click to sort."))
                            .clicked()
                    });
                    if clicked {
                        if self.sort == Some(c) {
                            self.descending = !self.descending;
                        } else {
                            // Names sort A→Z first; sizes and statistics largest first.
                            (self.sort, self.descending) = (Some(c), c >= 3);
                        }
                    }
                }
            });
            let rows = self.rows(&loaded.reports);
            let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
            egui::ScrollArea::vertical().auto_shrink(false).show_rows(
                ui,
                row_height,
                rows.len(),
                |ui, visible| {
                    for &i in &rows[visible] {
                        let r = &loaded.reports[i];
                        ui.horizontal(|ui| {
                            let name = egui::Button::selectable(selected == Some(i), &r.info.name)
                                .truncate();
                            if cell(ui, COLUMNS[0].1, row_height, left, |ui| ui.add(name)).clicked()
                            {
                                commands.push(Command::SelectTensor(i));
                            }
                            let s = r.stats.as_ref();
                            let pct = |v: Option<f64>| {
                                v.filter(|v| v.is_finite())
                                    .map_or("–".to_owned(), |v| format!("{:.2}", 100.0 * v))
                            };
                            let cells = [
                                format!("{:?}", r.info.shape),
                                r.info.dtype.name().to_owned(),
                                group_digits(r.info.numel),
                                human_bytes(r.info.size_bytes),
                                pct(s.map(|s| s.zero_fraction)),
                                s.filter(|s| s.std.is_finite())
                                    .map_or("–".to_owned(), |s| format!("{:.4}", s.std)),
                                pct(s.map(|s| s.beyond_3_sigma_fraction)),
                            ];
                            for (k, (text, (_, width, _))) in
                                cells.iter().zip(&COLUMNS[1..]).enumerate()
                            {
                                // Shape and dtype read left to right; numbers align on the right.
                                let layout = if k < 2 { left } else { right };
                                cell(ui, *width, row_height, layout, |ui| {
                                    ui.add(egui::Label::new(text).truncate())
                                });
                            }
                        });
                    }
                },
            );
        });
        commands
    }
}

/// A cell of fixed `width`, its content placed by `layout`.
fn cell<R>(
    ui: &mut egui::Ui,
    width: f32,
    height: f32,
    layout: egui::Layout,
    add: impl FnOnce(&mut egui::Ui) -> R,
) -> R {
    ui.allocate_ui_with_layout(egui::vec2(width, height), layout, |ui| {
        ui.set_min_width(width);
        ui.set_max_width(width);
        add(ui)
    })
    .inner
}
