//! The tensor table: every tensor with its shape, dtype, size and key statistics;
//! sortable by any column, filtered by name, virtualised (only visible rows are laid
//! out, so models with thousands of tensors scroll smoothly).

use crate::app::{Command, LoadedModel, group_digits, human_bytes};
use crate::compress::config::Config;
use crate::inspect::TensorReport;
use crate::measure::evaluation::Evaluation;
use crate::stats::TensorStats;

/// Columns, in display order: (title, width, tooltip). The last two show the current
/// compression and do not sort.
const COLUMNS: [(&str, f32, &str); 10] = [
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
    (
        "After",
        68.0,
        "Bytes after compression, in the smallest storage that holds the result",
    ),
    (
        "SQNR dB",
        56.0,
        "Weight SQNR after compression (fidelity, not accuracy)",
    ),
];
/// Columns that can sort the table.
const SORTABLE: usize = 8;

/// Width the table needs (columns plus item spacing), for the panel's default size.
pub fn width() -> f32 {
    // + margins and the vertical scroll bar, so it never covers the last column.
    COLUMNS.iter().map(|c| c.1 + 8.0).sum::<f32>() + 32.0
}

/// Sorting, filtering and grouping of the table (runtime state).
#[derive(Debug, Clone)]
pub struct TableState {
    pub filter: String,
    /// Column index to sort by; `None` keeps file order.
    pub sort: Option<usize>,
    pub descending: bool,
    /// Show each layer as a header row with its tensors beneath (sorted within it).
    pub group_by_layer: bool,
}

impl Default for TableState {
    fn default() -> Self {
        TableState {
            filter: String::new(),
            sort: None,
            descending: false,
            group_by_layer: true,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// A layer header: index into `Model::layers`.
    Layer(usize),
    /// A tensor: index into the reports / `Model::tensors`.
    Tensor(usize),
}

/// A statistic for sorting; tensors without statistics sort first.
fn stat(r: &TensorReport, f: fn(&TensorStats) -> f64) -> f64 {
    r.stats.as_ref().map_or(f64::NEG_INFINITY, f)
}

/// The tensor table, drawn with what it shows.
pub struct TablePanel<'a> {
    pub table: &'a mut TableState,
    pub loaded: &'a LoadedModel,
    pub selected: Option<usize>,
    pub evaluation: Option<&'a Evaluation>,
    pub config: &'a Config,
}

impl super::Panel for TablePanel<'_> {
    fn ui(self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let TablePanel {
            table,
            loaded,
            selected,
            evaluation,
            config,
        } = self;
        table.draw(ui, loaded, selected, (evaluation, config), commands);
    }
}

/// Layer indices in file order, except that layers numbered under one prefix (GGUF's
/// `blk.0`, `blk.1`, … `blk.10`, which files often store in text order) take their
/// slots in numeric order.
fn numbered_order(layers: &[crate::model::Layer]) -> Vec<usize> {
    let prefix = |name: &str| {
        let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
        (digits > 0).then(|| name[..name.len() - digits].to_owned())
    };
    let mut order: Vec<usize> = (0..layers.len()).collect();
    let mut groups: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (i, layer) in layers.iter().enumerate() {
        if let Some(p) = prefix(&layer.name) {
            groups.entry(p).or_default().push(i);
        }
    }
    for slots in groups.into_values() {
        let mut sorted = slots.clone();
        sorted.sort_by(|&a, &b| crate::text::natural_cmp(&layers[a].name, &layers[b].name));
        for (slot, layer) in slots.into_iter().zip(sorted) {
            order[slot] = layer;
        }
    }
    order
}

impl TableState {
    /// The rows to show: tensors filtered and sorted, under their layers when grouped.
    /// A layer is shown when its name or any of its tensors' names match the filter.
    pub fn rows(&self, loaded: &LoadedModel) -> Vec<Row> {
        let tensors = self.tensor_rows(&loaded.reports);
        if !self.group_by_layer {
            return tensors.into_iter().map(Row::Tensor).collect();
        }
        let needle = self.filter.to_lowercase();
        let mut rank = vec![usize::MAX; loaded.reports.len()];
        for (r, &t) in tensors.iter().enumerate() {
            rank[t] = r;
        }
        let mut rows = Vec::new();
        for l in numbered_order(&loaded.model.layers) {
            let layer = &loaded.model.layers[l];
            let layer_matches = !needle.is_empty() && layer.name.to_lowercase().contains(&needle);
            let mut members: Vec<usize> = layer
                .tensors
                .iter()
                .copied()
                .filter(|&t| layer_matches || rank.get(t).is_some_and(|&r| r != usize::MAX))
                .collect();
            if members.is_empty() {
                continue;
            }
            members.sort_by_key(|&t| rank.get(t).copied().unwrap_or(usize::MAX));
            rows.push(Row::Layer(l));
            rows.extend(members.into_iter().map(Row::Tensor));
        }
        rows
    }

    /// Tensor order after filtering and sorting (no grouping).
    pub fn tensor_rows(&self, reports: &[TensorReport]) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<usize> = (0..reports.len())
            .filter(|&i| needle.is_empty() || reports[i].info.name.to_lowercase().contains(&needle))
            .collect();
        if let Some(col) = self.sort {
            rows.sort_by(|&a, &b| {
                let (ra, rb) = (&reports[a], &reports[b]);
                let ord = match col {
                    0 => crate::text::natural_cmp(&ra.info.name, &rb.info.name),
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

    /// Draw the table; what the user asked for goes into `commands`.
    fn draw(
        &mut self,
        ui: &mut egui::Ui,
        loaded: &LoadedModel,
        selected: Option<usize>,
        (evaluation, config): (Option<&Evaluation>, &Config),
        commands: &mut Vec<Command>,
    ) {
        ui.horizontal(|ui| {
            ui.heading("Tensors");
            ui.label(format!(
                "{} tensors in {} layers",
                loaded.reports.len(),
                loaded.model.layers.len()
            ));
        });
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.filter)
                    .hint_text("filter by name")
                    .desired_width(180.0),
            )
            .on_hover_text("Show only tensors (or layers) whose name contains this text");
            ui.checkbox(&mut self.group_by_layer, "Group by layer")
                .on_hover_text(
                    "Show each layer (a weight with its bias, a GGUF block, an ONNX node) with its \
                 tensors beneath; sorting then orders tensors within each layer",
                );
        });
        ui.separator();
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
                    let layout = if c < 3 { left() } else { right() };
                    let clicked = cell(ui, *width, 18.0, layout, |ui| {
                        let tip = if c < SORTABLE {
                            format!("{tip}. Click to sort.")
                        } else {
                            tip.to_string()
                        };
                        ui.add(header).on_hover_text(tip).clicked()
                    });
                    if clicked && c < SORTABLE {
                        if self.sort == Some(c) {
                            self.descending = !self.descending;
                        } else {
                            // Names sort A→Z first; sizes and statistics largest first.
                            (self.sort, self.descending) = (Some(c), c >= 3);
                        }
                    }
                }
            });
            let rows = self.rows(loaded);
            let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
            egui::ScrollArea::vertical().auto_shrink(false).show_rows(
                ui,
                row_height,
                rows.len(),
                |ui, visible| {
                    for row in &rows[visible] {
                        match *row {
                            Row::Layer(l) => layer_row_ui(ui, loaded, l, row_height),
                            Row::Tensor(i) => {
                                let indent = if self.group_by_layer { 14.0 } else { 0.0 };
                                let result = evaluation
                                    .and_then(|e| e.tensors.get(i)?.as_ref())
                                    .map(|r| (r.bytes_after, r.sqnr_db));
                                let own =
                                    config.overrides.contains_key(&loaded.reports[i].info.name);
                                if tensor_row_ui(
                                    ui,
                                    &loaded.reports[i],
                                    own,
                                    result,
                                    selected == Some(i),
                                    row_height,
                                    indent,
                                ) {
                                    commands.push(Command::SelectTensor(i));
                                }
                            }
                        }
                    }
                },
            );
        });
    }
}

fn left() -> egui::Layout {
    egui::Layout::left_to_right(egui::Align::Center)
}

fn right() -> egui::Layout {
    egui::Layout::right_to_left(egui::Align::Center)
}

/// A layer's header row: name and kind, total parameters and bytes.
fn layer_row_ui(ui: &mut egui::Ui, loaded: &LoadedModel, l: usize, height: f32) {
    let Some(layer) = loaded.model.layers.get(l) else {
        return;
    };
    let tensors = || {
        layer
            .tensors
            .iter()
            .filter_map(|&t| loaded.model.tensors.get(t))
    };
    let params: u64 = tensors().map(|t| t.numel).sum();
    let bytes: u64 = tensors().map(|t| t.size_bytes).sum();
    let kind = layer
        .op
        .clone()
        .unwrap_or_else(|| format!("{:?}", layer.kind).to_lowercase());
    ui.horizontal(|ui| {
        let title = COLUMNS[0].1 + COLUMNS[1].1 + COLUMNS[2].1 + 16.0;
        cell(ui, title, height, left(), |ui| {
            ui.add(
                egui::Label::new(egui::RichText::new(format!("{}  ({kind})", layer.name)).strong())
                    .truncate(),
            )
            .on_hover_text(format!(
                "layer {} with {} tensors",
                layer.name,
                layer.tensors.len()
            ));
        });
        cell(ui, COLUMNS[3].1, height, right(), |ui| {
            ui.strong(group_digits(params))
        });
        cell(ui, COLUMNS[4].1, height, right(), |ui| {
            ui.strong(human_bytes(bytes))
        });
    });
}

/// A tensor's row; returns whether its name was clicked.
fn tensor_row_ui(
    ui: &mut egui::Ui,
    r: &TensorReport,
    own_settings: bool,
    compressed: Option<(u64, f64)>,
    selected: bool,
    height: f32,
    indent: f32,
) -> bool {
    ui.horizontal(|ui| {
        let text = if own_settings {
            format!("{} *", r.info.name)
        } else {
            r.info.name.clone()
        };
        let name = egui::Button::selectable(selected, text).truncate();
        let clicked = cell(ui, COLUMNS[0].1, height, left(), |ui| {
            ui.add_space(indent);
            let response = ui.add(name);
            if own_settings {
                response
                    .clone()
                    .on_hover_text("* has its own compression settings");
            }
            response.clicked()
        });
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
            compressed.map_or(String::new(), |(b, _)| human_bytes(b)),
            compressed.map_or(String::new(), |(_, q)| {
                if q.is_finite() {
                    format!("{q:.1}")
                } else {
                    "exact".to_owned()
                }
            }),
        ];
        for (k, (text, (_, width, _))) in cells.iter().zip(&COLUMNS[1..]).enumerate() {
            // Shape and dtype read left to right; numbers align on the right.
            let layout = if k < 2 { left() } else { right() };
            cell(ui, *width, height, layout, |ui| {
                ui.add(egui::Label::new(text).truncate())
            });
        }
        clicked
    })
    .inner
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
