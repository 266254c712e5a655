//! The compression controls (global sparsity, method, scope, format, per-tensor
//! overrides) and the model-wide figures of their evaluation.
//!
//! The configuration becomes the same typed recipe an export writes, and is measured
//! by [`crate::measure::evaluation::evaluate`] as sweeps and `slimscope apply` are,
//! so what the app shows is what an exported recipe reproduces.

use crate::app::{Command, group_digits, human_bytes};
use crate::compress::config::{Config, Format, IntGranularity, Method, Override};
use crate::measure::evaluation::Evaluation;

/// What a pruning method does, in a tooltip.
fn method_tip(m: Method) -> &'static str {
    match m {
        Method::Magnitude => "Zero the weights of smallest |w| (torch's l1_unstructured)",
        Method::Random => "Zero weights at random (seed 0): the baseline methods are compared to",
        Method::TwoFour => {
            "Keep the 2 largest of every 4 consecutive weights along a row: 50%, what sparse tensor cores run fast"
        }
        Method::Structured => {
            "Remove whole output rows (neurons, conv filters) of smallest L2 norm: the layer physically shrinks"
        }
    }
}

/// Whether two formats are the same choice in the picker (int granularity aside).
fn same_choice(a: Format, b: Format) -> bool {
    match (a, b) {
        (Format::Int { bits: a, .. }, Format::Int { bits: b, .. }) => a == b,
        (a, b) => a == b,
    }
}

/// A format picker; returns whether the choice changed.
fn format_picker(ui: &mut egui::Ui, id: &str, format: &mut Format) -> bool {
    let before = *format;
    egui::ComboBox::from_id_salt(id)
        .selected_text(format.label())
        .show_ui(ui, |ui| {
            for choice in Format::choices() {
                let selected = same_choice(*format, choice);
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
pub struct ControlsPanel<'a> {
    pub config: &'a mut Config,
    pub selected: Option<&'a str>,
    pub evaluation: Option<&'a Evaluation>,
    pub busy: bool,
}

impl super::Panel for ControlsPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, _commands: &mut Vec<Command>) {
        let ControlsPanel {
            config,
            selected,
            evaluation,
            busy,
        } = self;
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
                                .on_hover_text(method_tip(m));
                        }
                    })
                    .response
                    .on_hover_text(method_tip(config.method));
                ui.end_row();
                let label = ui
                    .label("Sparsity")
                    .on_hover_text("Fraction of weights set to zero");
                ui.add_enabled(
                    config.method != Method::TwoFour,
                    egui::Slider::new(&mut config.sparsity_pct, 0.0..=99.0)
                        .step_by(1.0)
                        // Round only what the user edits: a level set elsewhere (an
                        // allocation, a restored configuration) is shown, not changed.
                        .clamping(egui::SliderClamping::Edits)
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
            override_ui(ui, config, name);
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
}

/// The selected tensor's own settings: a checkbox, then its sparsity and format.
fn override_ui(ui: &mut egui::Ui, config: &mut Config, name: &str) {
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
                    .clamping(egui::SliderClamping::Edits)
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
