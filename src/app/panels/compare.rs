//! Pinned configurations, compared side by side: the whole-model figures (size,
//! bits per weight, sparsity, weight SQNR, accuracy) and, tensor by tensor, what each
//! does differently.

use std::sync::Arc;

use crate::app::{Command, group_digits, human_bytes};
use crate::measure::evaluation::Evaluation;

/// A configuration kept for comparison, with everything measured for it.
#[derive(Clone)]
pub struct Pinned {
    pub name: String,
    pub evaluation: Arc<Evaluation>,
}

/// The compare tab's state.
#[derive(Default)]
pub struct Compare {
    pub pinned: Vec<Pinned>,
    /// Indices into `pinned` of the two columns; `None` in `b` is the current
    /// configuration.
    pub a: usize,
    pub b: Option<usize>,
    pinned_so_far: usize,
}

impl Compare {
    /// Keep `evaluation` for comparison; the newest pin becomes column B and the one
    /// before it column A.
    pub fn pin(&mut self, evaluation: Arc<Evaluation>) {
        self.pinned_so_far += 1;
        self.pinned.push(Pinned {
            name: format!("#{}", self.pinned_so_far),
            evaluation,
        });
        let n = self.pinned.len();
        self.a = n.saturating_sub(2);
        self.b = (n >= 2).then_some(n - 1);
    }

    pub fn clear(&mut self) {
        *self = Compare::default();
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// The figures of one column, as (row label, text, value for the difference).
fn figures(e: &Evaluation) -> Vec<(&'static str, String, Option<f64>)> {
    let (_, bpw) = e.totals.bits_per_weight();
    let sparsity = 1.0 - e.nonzero_after as f64 / e.totals.params.max(1) as f64;
    let accuracy = e.accuracy.map(|(_, m)| m);
    vec![
        (
            "Model size",
            human_bytes(e.totals.bytes_after),
            Some(e.totals.bytes_after as f64 / 1e6),
        ),
        ("Bits per weight", format!("{bpw:.2}"), Some(bpw)),
        (
            "Non-zero weights",
            format!(
                "{} ({} sparse)",
                group_digits(e.nonzero_after),
                pct(sparsity)
            ),
            Some(100.0 * sparsity),
        ),
        (
            "Weight SQNR (fidelity)",
            if e.totals.weight_sqnr_db().is_finite() {
                format!("{:.1} dB", e.totals.weight_sqnr_db())
            } else {
                "unchanged".into()
            },
            e.totals
                .weight_sqnr_db()
                .is_finite()
                .then_some(e.totals.weight_sqnr_db()),
        ),
        (
            "Top-1",
            accuracy.map_or("– (no data attached)".into(), |m| pct(m.top1)),
            accuracy.map(|m| 100.0 * m.top1),
        ),
        (
            "Loss",
            accuracy.map_or("–".into(), |m| format!("{:.4}", m.loss)),
            accuracy.map(|m| m.loss),
        ),
    ]
}

/// The units of each figure's difference, in row order.
const DIFF_UNITS: [&str; 6] = [" MB", " bits", " pts", " dB", " pts", ""];

/// The compare tab.
pub struct ComparePanel<'a> {
    pub compare: &'a mut Compare,
    pub current: Option<&'a Arc<Evaluation>>,
    pub tensor_names: &'a [&'a str],
}

impl super::Panel for ComparePanel<'_> {
    fn ui(self, ui: &mut egui::Ui, actions: &mut Vec<Command>) {
        let ComparePanel {
            compare,
            current,
            tensor_names,
        } = self;
        if compare.pinned.is_empty() {
            ui.label(
                "Nothing pinned yet: set a configuration on the right and press \"Pin for comparison\"; \
                 pin another and compare them here (or one against the current configuration).",
            );
            return;
        }
        compare.a = compare.a.min(compare.pinned.len() - 1);
        if compare.b.is_some_and(|b| b >= compare.pinned.len()) {
            compare.b = None;
        }
        let names: Vec<String> = compare.pinned.iter().map(|p| p.name.clone()).collect();
        ui.horizontal(|ui| {
            ui.label("A");
            egui::ComboBox::from_id_salt("compare_a")
                .selected_text(&names[compare.a])
                .show_ui(ui, |ui| {
                    for (i, n) in names.iter().enumerate() {
                        ui.selectable_value(&mut compare.a, i, n);
                    }
                })
                .response
                .on_hover_text("The pinned configuration on the left of every comparison");
            ui.label("B");
            egui::ComboBox::from_id_salt("compare_b")
                .selected_text(compare.b.map_or("current", |b| names[b].as_str()))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut compare.b, None, "current");
                    for (i, n) in names.iter().enumerate() {
                        ui.selectable_value(&mut compare.b, Some(i), n);
                    }
                })
                .response
                .on_hover_text("Another pin, or the current configuration as you edit it");
        });
        let a = compare.pinned[compare.a].evaluation.clone();
        let b = match compare.b {
            Some(i) => Some(compare.pinned[i].evaluation.clone()),
            None => current.cloned(),
        };
        let b_name = compare.b.map_or("current".to_owned(), |i| names[i].clone());
        ui.add_space(4.0);
        egui::Grid::new("compare_figures")
            .num_columns(4)
            .striped(true)
            .show(ui, |ui| {
                ui.strong("");
                ui.strong(format!("A: {}", names[compare.a]));
                ui.strong(format!("B: {b_name}"));
                ui.strong("B − A");
                ui.end_row();
                ui.label("Configuration");
                ui.label(a.config.summary());
                ui.label(
                    b.as_ref()
                        .map_or("as stored".into(), |b| b.config.summary()),
                );
                ui.label("");
                ui.end_row();
                let fa = figures(&a);
                let fb = b.as_deref().map(figures);
                for (k, (label, text, value)) in fa.into_iter().enumerate() {
                    ui.label(label);
                    ui.label(text);
                    let other = fb.as_ref().map(|f| &f[k]);
                    ui.label(other.map_or("–".into(), |o| o.1.clone()));
                    match (value, other.and_then(|o| o.2)) {
                        (Some(x), Some(y)) => ui.label(format!("{:+.2}{}", y - x, DIFF_UNITS[k])),
                        _ => ui.label("–"),
                    };
                    ui.end_row();
                }
            });
        ui.horizontal(|ui| {
            if ui
                .button("Use A")
                .on_hover_text("Make A the current configuration (Ctrl+Z goes back)")
                .clicked()
            {
                actions.push(Command::UseConfig(a.config.clone()));
            }
            if let Some(b) = &b
                && compare.b.is_some()
                && ui
                    .button("Use B")
                    .on_hover_text("Make B the current configuration (Ctrl+Z goes back)")
                    .clicked()
            {
                actions.push(Command::UseConfig(b.config.clone()));
            }
        });
        ui.separator();
        tensors_ui(ui, &a, b.as_deref(), tensor_names);
    }
}

/// Per tensor: what A and B do, for every tensor either changes; rows that differ
/// first.
fn tensors_ui(ui: &mut egui::Ui, a: &Evaluation, b: Option<&Evaluation>, names: &[&str]) {
    let words = |e: Option<&Evaluation>, i: usize| -> Option<String> {
        let t = e?.tensors.get(i)?.as_ref()?;
        Some(format!(
            "{} · {:.1}% zero · {}",
            t.scheme,
            100.0 * t.sparsity,
            if t.sqnr_db.is_finite() {
                format!("{:.1} dB", t.sqnr_db)
            } else {
                "exact".into()
            }
        ))
    };
    let mut rows: Vec<(usize, Option<String>, Option<String>)> = (0..a.tensors.len())
        .map(|i| (i, words(Some(a), i), words(b, i)))
        .filter(|(_, x, y)| x.is_some() || y.is_some())
        .collect();
    rows.sort_by_key(|(i, x, y)| (x == y, *i));
    let differ = rows.iter().filter(|(_, x, y)| x != y).count();
    ui.label(format!(
        "Tensors: {} compressed by either, {differ} compressed differently",
        rows.len()
    ));
    let height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    egui::ScrollArea::vertical()
        .id_salt("compare_tensors")
        .auto_shrink(false)
        .show_rows(ui, height, rows.len(), |ui, range| {
            egui::Grid::new("compare_tensors_grid")
                .num_columns(3)
                .striped(true)
                .show(ui, |ui| {
                    if range.start == 0 {
                        ui.strong("tensor");
                        ui.strong("A");
                        ui.strong("B");
                        ui.end_row();
                    }
                    for (i, x, y) in &rows[range] {
                        let name = names.get(*i).copied().unwrap_or("?");
                        if x == y {
                            ui.label(name);
                        } else {
                            ui.strong(name);
                        }
                        ui.label(x.as_deref().unwrap_or("as stored"));
                        ui.label(y.as_deref().unwrap_or("as stored"));
                        ui.end_row();
                    }
                });
        });
}
