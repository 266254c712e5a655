//! Pinned configurations, compared side by side: the whole-model figures (size,
//! bits per weight, sparsity, weight SQNR, accuracy), the measured speed of their
//! exports with a quality × size × latency Pareto front, and, tensor by tensor, what
//! each does differently.

use std::sync::Arc;

use crate::app::speeds::Speeds;
use crate::app::{Command, group_digits, human_bytes};
use crate::measure::evaluation::Evaluation;
use crate::measure::speed::{Served, Variant};

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

/// The widest a compared column grows before its text wraps.
const COLUMN_WIDTH: f32 = 190.0;

/// A compared column's cell: wraps at the column's width.
fn cell(ui: &mut egui::Ui, text: impl Into<egui::WidgetText>) {
    ui.add(egui::Label::new(text).wrap());
}

/// A speed figure: the row, its text, its value for the difference and its unit.
type SpeedRow = (&'static str, String, Option<f64>, &'static str);

/// The speed rows of one column: what serving its export measured, each figure
/// compared with the original's (a slower variant says so plainly).
fn speed_rows(v: Option<&Variant>, original: Option<&Variant>) -> Vec<SpeedRow> {
    let Some(v) = v else {
        return vec![("Speed", "– (not measured)".into(), None, "")];
    };
    let mut rows: Vec<SpeedRow> = vec![(
        "On disk (served file)",
        human_bytes(v.bytes_on_disk),
        Some(v.bytes_on_disk as f64 / 1e6),
        " MB",
    )];
    let noisy = if v.served.as_ref().is_some_and(Served::noisy) {
        " (noisy: the CPU was busy)"
    } else {
        ""
    };
    let slower = |slower: bool| {
        if slower {
            " · slower than the original"
        } else {
            ""
        }
    };
    match (&v.served, original.and_then(|o| o.served.as_ref())) {
        (
            Some(Served::Classifier {
                latency,
                throughput,
                ..
            }),
            o,
        ) => {
            let (o_ms, o_rate) = match o {
                Some(Served::Classifier {
                    latency,
                    throughput,
                    ..
                }) => (Some(latency.p50_ms), Some(throughput.per_second)),
                _ => (None, None),
            };
            rows.push((
                "Latency p50 · batch 1",
                format!(
                    "{:.3} ms (p99 {:.3}){}{noisy}",
                    latency.p50_ms,
                    latency.p99_ms,
                    slower(o_ms.is_some_and(|o| latency.p50_ms > o))
                ),
                Some(latency.p50_ms),
                " ms",
            ));
            rows.push((
                "Throughput",
                format!(
                    "{:.0} samples/s at batch {}{}",
                    throughput.per_second,
                    throughput.batch,
                    slower(o_rate.is_some_and(|o| throughput.per_second < o))
                ),
                Some(throughput.per_second),
                "/s",
            ));
        }
        (
            Some(Served::Language {
                prompt_tokens_per_second,
                generation_tokens_per_second,
                ..
            }),
            o,
        ) => {
            let (o_prompt, o_gen) = match o {
                Some(Served::Language {
                    prompt_tokens_per_second,
                    generation_tokens_per_second,
                    ..
                }) => (
                    Some(*prompt_tokens_per_second),
                    Some(*generation_tokens_per_second),
                ),
                _ => (None, None),
            };
            rows.push((
                "Prompt processing",
                format!(
                    "{prompt_tokens_per_second:.1} tokens/s{}{noisy}",
                    slower(o_prompt.is_some_and(|o| *prompt_tokens_per_second < o))
                ),
                Some(*prompt_tokens_per_second),
                " tok/s",
            ));
            rows.push((
                "Generation",
                format!(
                    "{generation_tokens_per_second:.1} tokens/s{}{noisy}",
                    slower(o_gen.is_some_and(|o| *generation_tokens_per_second < o))
                ),
                Some(*generation_tokens_per_second),
                " tok/s",
            ));
        }
        (None, _) => rows.push((
            "Speed",
            v.unavailable.clone().unwrap_or_else(|| "–".into()),
            None,
            "",
        )),
    }
    if let Some(rss) = v.served.as_ref().and_then(Served::peak_rss) {
        rows.push((
            "Peak memory (serving)",
            human_bytes(rss),
            Some(rss as f64 / 1e6),
            " MB",
        ));
    }
    rows
}

/// The compare tab.
pub struct ComparePanel<'a> {
    pub compare: &'a mut Compare,
    pub current: Option<&'a Arc<Evaluation>>,
    pub tensor_names: &'a [&'a str],
    pub speeds: &'a Speeds,
    /// The original's quality on the attached data, for the Pareto front.
    pub original_quality: Option<f64>,
}

impl super::Panel for ComparePanel<'_> {
    fn ui(self, ui: &mut egui::Ui, actions: &mut Vec<Command>) {
        let ComparePanel {
            compare,
            current,
            tensor_names,
            speeds,
            original_quality,
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
            .max_col_width(COLUMN_WIDTH)
            .striped(true)
            .show(ui, |ui| {
                ui.strong("");
                ui.strong(format!("A: {}", names[compare.a]));
                ui.strong(format!("B: {b_name}"));
                ui.strong("B − A");
                ui.end_row();
                ui.label("Configuration");
                cell(ui, a.config.summary());
                cell(
                    ui,
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
                let columns = Columns {
                    a: &a,
                    b: b.as_deref(),
                    a_name: &names[compare.a],
                    b_name: &b_name,
                };
                speed_grid_rows(
                    ui,
                    &columns,
                    speeds,
                    &pareto(compare, current, speeds, original_quality),
                );
            });
        speed_ui(ui, &a, b.as_deref(), speeds, actions);
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

/// The two columns compared.
struct Columns<'a> {
    a: &'a Evaluation,
    b: Option<&'a Evaluation>,
    a_name: &'a str,
    b_name: &'a str,
}

/// The speed rows of the figures grid (one per figure either column has, in A's
/// order then B's), then the Pareto row.
fn speed_grid_rows(
    ui: &mut egui::Ui,
    columns: &Columns,
    speeds: &Speeds,
    front: &[(String, Option<String>)],
) {
    let original = speeds.original.as_ref();
    let sa = speed_rows(speeds.of(&columns.a.config), original);
    let sb = columns
        .b
        .map(|b| speed_rows(speeds.of(&b.config), original));
    // One row per label either column has, in A's order then B's.
    let mut labels: Vec<&str> = sa.iter().map(|r| r.0).collect();
    for r in sb.iter().flatten() {
        if !labels.contains(&r.0) {
            labels.push(r.0);
        }
    }
    for label in labels {
        let x = sa.iter().find(|r| r.0 == label);
        let y = sb.iter().flatten().find(|r| r.0 == label);
        ui.label(label);
        cell(ui, x.map_or("–", |r| r.1.as_str()));
        cell(ui, y.map_or("–", |r| r.1.as_str()));
        match (x.and_then(|r| r.2), y.and_then(|r| r.2)) {
            (Some(p), Some(q)) => ui.label(format!("{:+.3}{}", q - p, x.map_or("", |r| r.3))),
            _ => ui.label("–"),
        };
        ui.end_row();
    }
    if !front.is_empty() {
        ui.label("Pareto front").on_hover_text(
            "Quality × size on disk × latency, among the original, the pins and the current \
             configuration with measured speed: whether another is at least as good in all \
             three and better in one",
        );
        let word = |name: &str| {
            front.iter().find(|(n, _)| n == name).map_or(
                "– (speed not measured)".to_owned(),
                |(_, by)| {
                    by.as_ref()
                        .map_or("on the front".to_owned(), |by| format!("dominated by {by}"))
                },
            )
        };
        ui.label(word(columns.a_name));
        ui.label(word(columns.b_name));
        ui.label("");
        ui.end_row();
    }
}

/// The measure button, the measurement's progress and the original's figures.
fn speed_ui(
    ui: &mut egui::Ui,
    a: &Evaluation,
    b: Option<&Evaluation>,
    speeds: &Speeds,
    actions: &mut Vec<Command>,
) {
    ui.horizontal(|ui| match speeds.measuring() {
        Some((_, (done, total))) => {
            // No spinner: it repaints every frame, CPU the timing would share.
            ui.label(format!(
                "Serving the exports one at a time, the sweeps paused: {} of {}",
                (done + 1).min(total.max(1)),
                total.max(1)
            ));
        }
        None => {
            let mut configs = vec![a.config.clone()];
            if let Some(b) = b
                && b.config != a.config
            {
                configs.push(b.config.clone());
            }
            if ui
                .button("Measure speed")
                .on_hover_text(
                    "Write the original's, A's and B's exports (the .onnx or .gguf File > Export \
                     writes) and serve each alone in a fresh slimscope process, as `slimscope \
                     bench` does: size on disk, latency, throughput, peak memory. The sweeps \
                     pause meanwhile.",
                )
                .clicked()
            {
                actions.push(Command::MeasureSpeed(configs));
            }
        }
    });
    if let Some(o) = &speeds.original {
        let mut figures = vec![format!("{} on disk", human_bytes(o.bytes_on_disk))];
        match &o.served {
            Some(Served::Classifier {
                latency,
                throughput,
                ..
            }) => {
                figures.push(format!("{:.3} ms p50", latency.p50_ms));
                figures.push(format!("{:.0} samples/s", throughput.per_second));
            }
            Some(Served::Language {
                prompt_tokens_per_second,
                generation_tokens_per_second,
                ..
            }) => {
                figures.push(format!("prompt {prompt_tokens_per_second:.1} tokens/s"));
                figures.push(format!(
                    "generation {generation_tokens_per_second:.1} tokens/s"
                ));
            }
            None => figures.extend(o.unavailable.clone()),
        }
        if let Some(rss) = o.served.as_ref().and_then(Served::peak_rss) {
            figures.push(format!("{} peak", human_bytes(rss)));
        }
        if o.served.as_ref().is_some_and(Served::noisy) {
            figures.push("noisy: the CPU was busy".into());
        }
        ui.add(
            egui::Label::new(format!(
                "Original on {}: {}",
                speeds.runtime,
                figures.join(" · ")
            ))
            .wrap(),
        );
    }
}

/// Each candidate's name and, unless on the Pareto front of quality, bytes on disk
/// and latency, the name of one that dominates it: the original, the pins and the
/// current configuration, those with measured speed and quality.
fn pareto(
    compare: &Compare,
    current: Option<&Arc<Evaluation>>,
    speeds: &Speeds,
    original_quality: Option<f64>,
) -> Vec<(String, Option<String>)> {
    let mut candidates: Vec<(String, f64, [f64; 2])> = Vec::new();
    let mut add = |name: String, quality: Option<f64>, v: Option<&Variant>| {
        if let (Some(q), Some(v)) = (quality, v)
            && let Some(t) = v.time_cost()
        {
            candidates.push((name, q, [v.bytes_on_disk as f64, t]));
        }
    };
    add(
        "the original".into(),
        original_quality,
        speeds.original.as_ref(),
    );
    let quality = |e: &Evaluation| e.accuracy.map(|(_, m)| m.quality());
    for p in &compare.pinned {
        add(
            p.name.clone(),
            quality(&p.evaluation),
            speeds.of(&p.evaluation.config),
        );
    }
    if let Some(e) = current {
        add("current".into(), quality(e), speeds.of(&e.config));
    }
    let points: Vec<(f64, [f64; 2])> = candidates.iter().map(|(_, q, c)| (*q, *c)).collect();
    let by = crate::sweep::analysis::dominated_by(&points);
    candidates
        .iter()
        .zip(by)
        .map(|((name, ..), by)| (name.clone(), by.map(|i| candidates[i].0.clone())))
        .collect()
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
