//! The compression controls (global sparsity, method, scope, format, per-tensor
//! overrides) and the model-wide figures of their evaluation.
//!
//! The configuration becomes the same typed recipe an export writes, and is measured
//! by [`crate::measure::evaluation::evaluate`] as sweeps and `slimscope apply` are,
//! so what the app shows is what an exported recipe reproduces.

use crate::app::{Command, group_digits, human_bytes};
use crate::compress::activations::{ActivationSpec, ActivationType, Mode, Observer};
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
        Method::Wanda => {
            "Data-aware (Wanda): per output, zero the weights of smallest |w|·‖x‖, the input norms learnt from 128 samples of the attached data, kept apart from the evaluation"
        }
        Method::SparseGpt => {
            "Data-aware (SparseGPT): zero weights one column at a time and update the rest so each layer's output on 128 calibration samples of the attached data (kept apart) moves least"
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

/// What the open model's activations can be set to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActivationSupport {
    /// Quantized where they are measured (the network as a QDQ graph on tract) and
    /// in the `.onnx` export; `samples` in the attached data, if any.
    Simulated { samples: Option<usize> },
    /// A llama GGUF: ggml's CPU kernels already quantize activations themselves.
    Llama,
    /// Not simulated for this model, and why.
    Not(&'static str),
}

/// Calibration sizes offered (a fixed list: typing a number would start a
/// measurement per keystroke).
const CALIBRATION_CHOICES: [usize; 5] = [64, 128, 256, 512, 1024];

/// The activation settings offered, as (label, spec) with the calibration and
/// observer left to their own pickers.
fn activation_choices() -> [(&'static str, Option<ActivationSpec>); 4] {
    let spec = |mode, dtype| ActivationSpec {
        mode,
        dtype,
        observer: None,
        percentile: None,
        calibration: None,
    };
    [
        ("float (not quantized)", None),
        ("uint8 dynamic", Some(spec(Mode::Dynamic, None))),
        (
            "uint8 static",
            Some(spec(Mode::Static, Some(ActivationType::Uint8))),
        ),
        (
            "int8 static",
            Some(spec(Mode::Static, Some(ActivationType::Int8))),
        ),
    ]
}

/// Which of [`activation_choices`] `a` is.
fn activation_choice(a: Option<&ActivationSpec>) -> usize {
    match a {
        None => 0,
        Some(a) if a.mode == Mode::Dynamic => 1,
        Some(a) if a.dtype() == ActivationType::Uint8 => 2,
        Some(_) => 3,
    }
}

fn observer_label(o: Observer) -> &'static str {
    match o {
        Observer::Minmax => "min/max",
        Observer::Percentile => "percentile 99.999",
        Observer::Entropy => "entropy (KL)",
        Observer::Mse => "least squared error",
    }
}

/// The activation controls: the setting, then for static ones the observer and the
/// calibration samples (kept apart from every figure the app shows).
fn activations_ui(ui: &mut egui::Ui, config: &mut Config, support: ActivationSupport) {
    let samples = match support {
        ActivationSupport::Simulated { samples } => samples,
        ActivationSupport::Llama => {
            ui.label("8-bit inside ggml's kernels").on_hover_text(
                "A llama GGUF runs on ggml's CPU kernels, which quantize each activation row \
                 to 8 bits (Q8_K / Q8_0) inside the quantized dot products: the figures are \
                 measured that way already, and nothing is simulated on top",
            );
            return;
        }
        ActivationSupport::Not(why) => {
            ui.label("float").on_hover_text(why);
            return;
        }
    };
    let chosen = activation_choice(config.activations.as_ref());
    let choices = activation_choices();
    ui.vertical(|ui| {
        egui::ComboBox::from_id_salt("activations")
            .selected_text(choices[chosen].0)
            .show_ui(ui, |ui| {
                for (i, (label, spec)) in choices.iter().enumerate() {
                    if ui.selectable_label(i == chosen, *label).clicked() && i != chosen {
                        // Keep the observer and calibration across uint8/int8.
                        let mut spec = spec.clone();
                        if let (Some(new), Some(old)) = (&mut spec, &config.activations)
                            && new.mode == Mode::Static
                            && old.mode == Mode::Static
                        {
                            new.observer = old.observer;
                            new.calibration = old.calibration;
                        }
                        config.activations = spec;
                    }
                }
            })
            .response
            .on_hover_text(
                "Quantize the input of every weighted layer too, as onnxruntime does: \
                 dynamic computes a uint8 range per sample at run time; static calibrates \
                 one scale per tensor on samples kept apart from the evaluation",
            );
        let Some(spec) = config
            .activations
            .as_mut()
            .filter(|a| a.mode == Mode::Static)
        else {
            return;
        };
        ui.horizontal(|ui| {
            let observer = spec.observer();
            egui::ComboBox::from_id_salt("activations-observer")
                .selected_text(observer_label(observer))
                .show_ui(ui, |ui| {
                    for o in [
                        Observer::Minmax,
                        Observer::Percentile,
                        Observer::Entropy,
                        Observer::Mse,
                    ] {
                        if ui
                            .selectable_label(o == observer, observer_label(o))
                            .clicked()
                            && o != observer
                        {
                            spec.observer = (o != Observer::Minmax).then_some(o);
                        }
                    }
                })
                .response
                .on_hover_text(
                    "How the calibration samples' values become a range: all of them, \
                     99.999 % of them, the range whose 8-bit histogram keeps closest in KL \
                     divergence (TensorRT's), each computed as onnxruntime computes it, or \
                     the clipped range whose quantization has the least squared error",
                );
            let n = spec.calibration_samples();
            egui::ComboBox::from_id_salt("activations-calibration")
                .selected_text(format!("{n} samples"))
                .show_ui(ui, |ui| {
                    for c in CALIBRATION_CHOICES {
                        if ui
                            .selectable_label(c == n, format!("{c} samples"))
                            .clicked()
                            && c != n
                        {
                            spec.calibration =
                                (c != ActivationSpec::DEFAULT_CALIBRATION).then_some(c);
                        }
                    }
                })
                .response
                .on_hover_text(
                    "Samples of the attached data the scales are calibrated on; they are left \
                     out of every figure shown while this is set, the original's included",
                );
        });
        match samples {
            Some(total) if spec.calibration_samples() >= total => {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("The data holds {total} samples: pick fewer to calibrate on"),
                );
            }
            Some(_) => {}
            None => {
                ui.label("Attach data to calibrate and measure");
            }
        }
    });
}

/// The compression controls and the model-wide figures. Edits `config` in place.
pub struct ControlsPanel<'a> {
    pub config: &'a mut Config,
    pub selected: Option<&'a str>,
    pub evaluation: Option<&'a Evaluation>,
    pub busy: bool,
    pub activations: ActivationSupport,
    /// The block type most of the model's weights already have (a quantized GGUF).
    pub already_quantized: Option<&'static str>,
}

impl super::Panel for ControlsPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, _commands: &mut Vec<Command>) {
        let ControlsPanel {
            config,
            selected,
            evaluation,
            busy,
            activations,
            already_quantized,
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
                    if matches!(config.format, Format::Int { .. }) {
                        ui.checkbox(&mut config.gptq, "GPTQ (data-aware)").on_hover_text(
                            "Choose the integer codes column by column so each layer's output on \
                             128 calibration samples of the attached data (kept apart from the \
                             evaluation) moves least, instead of rounding each weight to nearest \
                             (GPTQ, Frantar et al. 2022); overrides' int formats too",
                        );
                    }
                    if let Some(q) = already_quantized.filter(|_| config.format != Format::Keep) {
                        ui.colored_label(
                            ui.visuals().warn_fg_color,
                            format!("Re-quantizes weights already stored as {q}"),
                        )
                        .on_hover_text(format!(
                            "The weights are decoded from {q} and quantized again, so the new \
                             format's error adds to {q}'s: llama.cpp refuses this without \
                             --allow-requantize. Start from an f16 or f32 model where you can."
                        ));
                    }
                });
                ui.end_row();
                ui.label("Activations")
                    .on_hover_text("Number format of the values flowing between layers");
                activations_ui(ui, config, activations);
                ui.end_row();
            });
        if let Some(name) = selected {
            override_ui(ui, config, name);
        }
        ui.add_space(6.0);
        match evaluation {
            // An older configuration's figures while the current one is computed:
            // dimmed.
            Some(e) if busy && e.config != *config => {
                ui.add_enabled_ui(false, |ui| figures_ui(ui, e))
                    .response
                    .on_disabled_hover_text(
                        "The previous configuration's figures: the current one is being computed",
                    );
            }
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
            ui.label("Model size (estimate)").on_hover_text(
                "Bytes of all tensors in the smallest storage that holds each (structurally \
                 pruned rows removed): an estimate of what a compact format stores. The file \
                 an export writes says its own size when written, and Compare's Measure speed \
                 shows each export's size on disk",
            );
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
