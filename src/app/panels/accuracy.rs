//! Accuracy in the app: a labelled data set (and the network's architecture)
//! attached to the open model, its baseline, and what the current compression keeps.

use crate::app::{Command, file_name, group_digits};
pub use crate::eval::attach::Attached;
use crate::eval::{Metrics, Network, TaskFigures};
use crate::measure::evaluation::Evaluation;

fn percent(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// A share with its 95 % interval half-width in points: `97.80% ±0.41`.
fn percent_pm(v: f64, samples: usize) -> String {
    let half = 196.0 * crate::eval::binomial_standard_error(v, samples);
    format!("{} ±{half:.2}", percent(v))
}

/// The 95 % interval of a rank correlation `r` over `n` pairs (Fisher's z), e.g.
/// `(95 % CI 0.74–0.94, 32 pairs)`.
fn spearman_interval(r: f64, n: usize) -> String {
    if n <= 3 || !r.is_finite() {
        return format!("({n} pairs)");
    }
    let z = r.clamp(-0.999_999, 0.999_999).atanh();
    let half = 1.96 / ((n - 3) as f64).sqrt();
    format!(
        "(95 % CI {:.2}–{:.2}, {n} pairs)",
        (z - half).tanh(),
        (z + half).tanh()
    )
}

/// The sentence pairs a sentence encoder is scored on.
fn pairs(a: &Attached) -> usize {
    match a.evaluator.network() {
        Network::SentenceEncoder(task) => task.set.pairs.len(),
        _ => 0,
    }
}

/// How a difference compares with the noise of two measurements (95 %).
fn noise_words(a: (f64, f64), b: (f64, f64)) -> &'static str {
    if crate::eval::within_noise(a, b) {
        "within noise"
    } else {
        "beyond noise"
    }
}

/// The hover text of every "±" figure.
const INTERVAL_TIP: &str = "± is the 95 % interval of a share of this many samples (1.96 binomial \
     standard errors): another sample of the same size could move the figure that far. A \
     difference is \"within noise\" when it is smaller than 1.96 standard errors of the \
     difference (taking the two as independent, which overstates it).";

/// The accuracy section of the right panel.
pub struct AccuracyPanel<'a> {
    pub attached: Option<&'a Attached>,
    pub attaching: Option<(usize, usize)>,
    pub evaluation: Option<&'a Evaluation>,
    /// Whether the current configuration is being measured, and how far its task
    /// figures are (done, total).
    pub evaluating: Option<(usize, usize)>,
}

impl super::Panel for AccuracyPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let AccuracyPanel {
            attached,
            attaching,
            evaluation,
            evaluating,
        } = self;
        ui.horizontal(|ui| {
            ui.heading("Accuracy");
            if ui
                .button("Attach data…")
                .on_hover_text(
                    "A labelled data set (CSV/CSV.gz, IDX, .npz, or a TOML data spec) to measure accuracy on, \
                     or an architecture spec (TOML with [[layer]]s) for a state_dict; you can also drop them on the window",
                )
                .clicked()
            {
                commands.push(Command::AttachDataDialog);
            }
        });
        if let Some((done, total)) = attaching {
            let fraction = if total == 0 {
                0.0
            } else {
                done as f32 / total as f32
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .text(format!("Evaluating the original: {done}/{total} samples")),
            );
        }
        let Some(a) = attached else {
            if attaching.is_none() {
                ui.label("No data attached: sizes and SQNR above are weight figures only.");
            }
            return;
        };
        egui::Grid::new("accuracy")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                data_row(ui, a);
                ui.end_row();
                network_row(ui, a);
                ui.end_row();
                let kept_apart = evaluation.and_then(|e| e.kept_apart);
                original_row(ui, a, kept_apart.map(|(_, m)| m));
                ui.end_row();
                if let Some((n, original)) = kept_apart {
                    ui.label("Calibration");
                    ui.label(format!("{n} samples kept apart")).on_hover_text(format!(
                        "Static activation quantization calibrates its scales on these samples; \
                         every figure here leaves them out, the original's too (measured on the \
                         other {})",
                        group_digits(original.samples as u64)
                    ));
                    ui.end_row();
                }
                compressed_row(ui, a, evaluation, evaluating);
                ui.end_row();
            });
        for w in &a.warnings {
            ui.colored_label(ui.visuals().warn_fg_color, format!("Warning: {w}"));
        }
        if !a.notes.is_empty() {
            egui::CollapsingHeader::new("Architecture (proposed)")
                .default_open(false)
                .show(ui, |ui| {
                    for n in &a.notes {
                        ui.label(n);
                    }
                });
        }
    }
}

/// What the data set is: file, samples, classes (or windows, or sentence pairs).
fn data_row(ui: &mut egui::Ui, a: &Attached) {
    ui.label("Data");
    let data = a.evaluator.data();
    if let Network::SentenceEncoder(task) = a.evaluator.network() {
        ui.label(format!(
            "{} · {} sentences · {} scored pairs",
            file_name(&a.data_path),
            task.set.sentences.len(),
            task.set.pairs.len()
        ))
        .on_hover_text(format!(
            "{}\nTab-separated: sentence, sentence, similarity score; drop another such file to use it",
            a.data_path.display()
        ));
    } else if matches!(a.baseline.task, TaskFigures::Language(_)) {
        ui.label(format!(
            "{} · {} windows of {} tokens",
            file_name(&a.data_path),
            data.len(),
            data.sample_len()
        ))
        .on_hover_text(format!(
            "{}\nEach window is scored from its own start; drop another UTF-8 text to use it",
            a.data_path.display()
        ));
    } else {
        ui.label(format!(
            "{} · {} samples · {} classes",
            file_name(&a.data_path),
            group_digits(data.len() as u64),
            data.classes()
        ))
        .on_hover_text(a.data_path.display().to_string());
    }
}

/// What runs the model: the network given, proposed or built in.
fn network_row(ui: &mut egui::Ui, a: &Attached) {
    ui.label("Network");
    match (a.evaluator.network(), &a.arch_path) {
        (Network::CausalLm(_), _) => ui
            .label("candle's quantized llama (next-token prediction)")
            .on_hover_text("The compressed model runs as the GGUF an export would write"),
        (Network::SentenceEncoder(_), _) => ui
            .label("candle's BERT (mean-pooled sentence embeddings)")
            .on_hover_text("Compared with the original model's embeddings of the same sentences"),
        (Network::Onnx(_), _) => ui
            .label("the model's ONNX graph")
            .on_hover_text("Run by tract, compressed weights written into the graph"),
        (Network::Sequential(spec), Some(p)) => ui
            .label(format!("{} · {} layers", file_name(p), spec.layers.len()))
            .on_hover_text(p.display().to_string()),
        (Network::Sequential(spec), None) => ui
            .label(format!(
                "proposed from the weights · {} layers",
                spec.layers.len()
            ))
            .on_hover_text("Drop an architecture spec (TOML) to use your own"),
    };
}

/// The model as stored, on the data (on the samples calibration leaves, `kept`,
/// when static activation quantization keeps some apart).
fn original_row(ui: &mut egui::Ui, a: &Attached, kept: Option<Metrics>) {
    ui.label("Original").on_hover_text("The model as stored");
    if let Some(m) = kept {
        ui.label(format!(
            "top-1 {} · loss {:.4} (on {})",
            percent_pm(m.top1, m.samples),
            m.loss,
            group_digits(m.samples as u64)
        ))
        .on_hover_text(format!(
            "On every sample but the calibration ones; on all {}: top-1 {}",
            group_digits(a.baseline.samples as u64),
            percent(a.baseline.top1)
        ));
        return;
    }
    match a.baseline.task {
        TaskFigures::Embedding(e) => ui
            .label(format!(
                "Spearman {} with the pair scores",
                e.spearman.map_or("–".into(), |s| format!(
                    "{s:.4} {}",
                    spearman_interval(s, pairs(a))
                ))
            ))
            .on_hover_text(
                "Rank correlation of the embeddings' cosine similarities with the hand scores",
            ),
        TaskFigures::Language(l) => ui
            .label(format!(
                "perplexity {:.2} · next-token top-1 {}",
                l.perplexity,
                percent(a.baseline.top1)
            ))
            .on_hover_text(format!(
                "exp(mean loss) over {} tokens; {:.1} tokens/s",
                a.baseline.samples, a.baseline.samples_per_second
            )),
        TaskFigures::Classification => ui
            .label(format!(
                "top-1 {} · loss {:.4}",
                percent_pm(a.baseline.top1, a.baseline.samples),
                a.baseline.loss
            ))
            .on_hover_text(INTERVAL_TIP),
    };
}

/// The current configuration, on the same data.
fn compressed_row(
    ui: &mut egui::Ui,
    a: &Attached,
    evaluation: Option<&Evaluation>,
    evaluating: Option<(usize, usize)>,
) {
    let current = evaluation
        .and_then(|e| e.accuracy)
        .filter(|(v, _)| *v == a.version)
        .map(|(_, m)| m);
    ui.label("Compressed")
        .on_hover_text("The current configuration, measured on the same data");
    match current.map(|m| (m, m.task)) {
        Some((Metrics { top1, .. }, TaskFigures::Embedding(e))) => {
            ui.label(format!(
                "mean cosine {:.5} (least {:.4}) · Spearman {} · nearest neighbour kept {}",
                e.mean_cosine,
                e.min_cosine,
                e.spearman.map_or("–".into(), |s| format!(
                    "{s:.4} {}",
                    spearman_interval(s, pairs(a))
                )),
                percent(top1)
            ))
            .on_hover_text(format!(
                "Cosine of each sentence's embedding to the original's; pairwise similarities moved by {:.4} on average (at most {:.4})",
                e.mean_similarity_change, e.max_similarity_change
            ));
        }
        Some((_, TaskFigures::Language(l))) => {
            let samples = current.map_or(0, |m| m.samples);
            ui.label(format!(
                "perplexity {:.2} · KL {:.4} nats/token · top-1 agreement {}",
                l.perplexity,
                l.kl_divergence,
                percent_pm(l.top1_agreement, samples)
            ))
            .on_hover_text(
                "KL divergence of the compressed model's next-token distributions from the original's, mean over the text's tokens; \
                 agreement: share of tokens whose most likely successor is unchanged",
            );
        }
        Some((m, TaskFigures::Classification)) => {
            // The original on the same samples: calibration samples are left out.
            let original = evaluation
                .and_then(|e| e.kept_apart)
                .map_or(a.baseline, |(_, o)| o);
            let delta = 100.0 * (m.top1 - original.top1);
            let noise = noise_words(
                (m.top1, m.top1_standard_error()),
                (original.top1, original.top1_standard_error()),
            );
            ui.label(format!(
                "top-1 {} ({delta:+.2} pts, {noise}) · loss {:.4}",
                percent_pm(m.top1, m.samples),
                m.loss
            ))
            .on_hover_text(INTERVAL_TIP);
        }
        None if evaluating.is_some() => {
            // The sizes are on screen already; the task's figures take longer.
            match evaluating {
                Some((done, total)) if total > 0 => {
                    ui.add(
                        egui::ProgressBar::new(done as f32 / total as f32)
                            .desired_width(180.0)
                            .text(format!("measuring: {done}/{total}")),
                    );
                }
                _ => {
                    ui.spinner();
                }
            }
        }
        None => {
            ui.label("same as the original");
        }
    }
}
