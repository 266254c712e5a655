//! Winning accuracy back in the app: *Recover* fine-tunes the current configuration
//! (masks fixed, quantization-aware) and *Distill* trains a small student from the
//! open model. Both train on 80% of the attached data and report on the other 20%
//! (a seeded split), run on the sweeps' worker pool with progress and cancel, and a
//! recovered configuration appears on the curves beside its one-shot point. The sessions
//! themselves are [`crate::train::session`]; this is their panel and job.

use std::path::PathBuf;
use std::sync::Arc;

use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::app::{Command, file_name, group_digits, human_bytes};
use crate::compress::config::Config;
use crate::error::{Error, Result};
use crate::eval::evaluator::Evaluator;
use crate::jobs::{JobEvent, JobHandle, Pool, Progress};
use crate::model::Model;
use crate::train::session;
use crate::train::{EpochRecord, TrainEvent};

pub use crate::train::session::{
    DistillSettings, Distilled, HELD_OUT, RecoverSettings, Recovery, Student,
};

enum Finished {
    Recovery(Box<Recovery>),
    Distilled(Box<Distilled>),
}

/// A training job and what it has reported.
struct Running {
    what: &'static str,
    job: JobHandle<Finished, (String, TrainEvent)>,
    row: String,
    step: usize,
    steps: usize,
    loss: f64,
    epochs: Vec<(String, EpochRecord)>,
}

/// The training tab's state.
#[derive(Default)]
pub struct Training {
    pub recover: RecoverSettings,
    pub distill: DistillSettings,
    running: Option<Running>,
    /// Finished recoveries, newest last.
    pub recoveries: Vec<Recovery>,
    pub distilled: Option<Distilled>,
    /// The last run's failure or cancellation, in words.
    pub status: Option<String>,
}

impl Training {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// A line on the running job (for the status bar), if one runs.
    pub fn status_line(&self) -> Option<String> {
        self.running.as_ref().map(|r| {
            let row = if r.row.is_empty() {
                String::new()
            } else {
                format!(" · {}", r.row)
            };
            if r.steps == 0 {
                format!("{}{row}: starting…", r.what)
            } else {
                format!(
                    "{}{row}: step {}/{} · loss {:.4}",
                    r.what, r.step, r.steps, r.loss
                )
            }
        })
    }

    /// Forget everything (another model was opened); a running job is cancelled.
    pub fn clear(&mut self) {
        self.running = None;
        self.recoveries.clear();
        self.distilled = None;
        self.status = None;
    }

    /// Start recovering `config` of `model` on the pool.
    pub fn start_recovery(
        &mut self,
        pool: &Pool,
        model: Arc<Model>,
        config: Config,
        evaluator: Arc<Evaluator>,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        let settings = self.recover.clone();
        let job = pool.submit(
            notify,
            move |progress: &Progress<Finished, (String, TrainEvent)>| {
                session::recover(
                    &model,
                    config,
                    &evaluator,
                    &settings,
                    &mut |row, e| forward(progress, row, e),
                    &|| progress.is_cancelled(),
                )
                .map(|r| Finished::Recovery(Box::new(r)))
            },
        );
        self.begin("Recovering", job);
    }

    /// Start distilling `model` (the teacher) into the chosen student on the pool: the
    /// spec chosen, or the model itself under `config`, shrunk.
    pub fn start_distillation(
        &mut self,
        pool: &Pool,
        model: Arc<Model>,
        config: Config,
        evaluator: Arc<Evaluator>,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        let student = if self.distill.from_current {
            Student::Shrunk(config)
        } else {
            match self.distill.student.clone() {
                Some(p) => Student::Spec(p),
                None => {
                    self.status = Some("Choose a student architecture spec first.".into());
                    return;
                }
            }
        };
        let settings = self.distill.clone();
        let job = pool.submit(
            notify,
            move |progress: &Progress<Finished, (String, TrainEvent)>| {
                session::distill(&model, &evaluator, student, &settings, &mut |row, e| {
                    forward(progress, row, e)
                })
                .map(|d| Finished::Distilled(Box::new(d)))
            },
        );
        self.begin("Distilling", job);
    }

    fn begin(&mut self, what: &'static str, job: JobHandle<Finished, (String, TrainEvent)>) {
        self.status = None;
        self.running = Some(Running {
            what,
            job,
            row: String::new(),
            step: 0,
            steps: 0,
            loss: f64::NAN,
            epochs: Vec::new(),
        });
    }

    pub fn cancel(&mut self) {
        if let Some(r) = &self.running {
            r.job.cancel();
        }
    }

    /// Drain the job's events (never blocks).
    pub fn poll(&mut self) {
        let Some(running) = &mut self.running else {
            return;
        };
        let mut end = None;
        while let Ok(event) = running.job.events.try_recv() {
            match event {
                JobEvent::Point((row, TrainEvent::Step { step, steps, loss })) => {
                    (running.row, running.step, running.steps, running.loss) =
                        (row, step, steps, loss);
                }
                JobEvent::Point((row, TrainEvent::Epoch(r))) => running.epochs.push((row, r)),
                other if other.is_end() => end = Some(other),
                _ => {}
            }
        }
        let Some(end) = end else {
            return;
        };
        let what = running.what;
        self.running = None;
        match end {
            JobEvent::Finished(Finished::Recovery(r)) => self.recoveries.push(*r),
            JobEvent::Finished(Finished::Distilled(d)) => self.distilled = Some(*d),
            JobEvent::Failed(e) => self.status = Some(format!("{what} failed: {e}")),
            JobEvent::Cancelled => {
                self.status = Some(format!("{what} was cancelled; nothing was kept."))
            }
            _ => {}
        }
    }

    /// The work of saving the newest recovery (model and recipe) to `out`, to run
    /// off the UI thread.
    pub fn save_recovered(
        &self,
        out: PathBuf,
    ) -> Result<impl FnOnce() -> Result<String> + Send + 'static> {
        let r = self
            .recoveries
            .last()
            .ok_or_else(|| Error::InvalidSetting("nothing recovered yet".into()))?;
        let (trained, applied, recipe) = (r.trained.clone(), r.applied.clone(), r.recipe.clone());
        Ok(move || {
            crate::export::write_model(&trained, &applied, &recipe, &out, true)?;
            let recipe_path = out.with_extension("recipe.toml");
            crate::export::write_text(&recipe_path, &recipe, true)?;
            Ok(format!(
                "Saved the recovered model {} and its recipe {}",
                out.display(),
                file_name(&recipe_path)
            ))
        })
    }

    /// The work of writing the distilled student's weights (safetensors) to `out`.
    pub fn save_student(
        &self,
        out: PathBuf,
    ) -> Result<impl FnOnce() -> Result<String> + Send + 'static> {
        let d = self
            .distilled
            .as_ref()
            .ok_or_else(|| Error::InvalidSetting("nothing distilled yet".into()))?;
        let (spec, student) = (d.spec.clone(), d.student.clone());
        let write_spec = d.spec_path.is_none();
        let spec_path = d
            .spec_path
            .clone()
            .unwrap_or_else(|| out.with_extension("arch.toml"));
        Ok(move || {
            if write_spec {
                crate::export::write_text(&spec_path, &spec.to_toml(), true)?;
            }
            crate::train::trainable::write_weights(
                &spec,
                &student,
                &spec_path,
                &serde_json::json!({ "student": spec_path }),
                &out,
                true,
            )?;
            Ok(format!(
                "Saved the student {} (run it with the spec {})",
                out.display(),
                file_name(&spec_path)
            ))
        })
    }

    /// Where the curves draw finished recoveries: (sparsity %, bytes, one-shot top-1,
    /// recovered top-1), on the held-out part of the data only (the rest trained the
    /// recovered model, so its figure there would flatter it).
    pub fn markers(&self) -> Vec<super::curves::RecoveredMarker> {
        self.recoveries
            .iter()
            .map(|r| super::curves::RecoveredMarker {
                sparsity_pct: r.config.sparsity_pct,
                bytes: r.bytes_after,
                one_shot_top1: r.held_out.one_shot.top1,
                recovered_top1: r.held_out.recovered.top1,
            })
            .collect()
    }
}

fn forward(progress: &Progress<Finished, (String, TrainEvent)>, row: &str, e: TrainEvent) -> bool {
    if let TrainEvent::Step { step, steps, .. } = e {
        progress.report(step, steps);
    }
    progress.point((row.to_owned(), e))
}

fn percent(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// The training tab.
pub struct TrainingPanel<'a> {
    pub training: &'a mut Training,
    pub config: &'a Config,
    /// The configuration's evaluation, when it is on screen.
    pub evaluation: Option<&'a crate::measure::evaluation::Evaluation>,
    pub can_train: Option<&'a str>,
}

impl super::Panel for TrainingPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, actions: &mut Vec<Command>) {
        let TrainingPanel {
            training,
            config,
            evaluation,
            can_train,
        } = self;
        ui.label(format!(
            "Training runs on {:.0}% of the attached data; the figures below are measured on the other {:.0}% (held out).",
            100.0 * (1.0 - HELD_OUT),
            100.0 * HELD_OUT
        ));
        if let Some(why) = can_train {
            ui.colored_label(ui.visuals().warn_fg_color, why);
        }
        let idle = !training.is_running() && can_train.is_none();
        ui.add_space(6.0);
        ui.heading("Recover the current configuration");
        let effect = evaluation.map_or(String::new(), |e| {
            format!(
                " — effectively {:.1}% of the weight matrices zero, {} (estimate)",
                100.0 * e.matrix_sparsity,
                crate::units::human_bytes(e.totals.bytes_after)
            )
        });
        ui.label(format!("Configuration: {}{effect}", config_words(config)));
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut training.recover.epochs, 1..=20).text("epochs"))
                .on_hover_text("Passes over the training part of the data");
            ui.add(
                egui::Slider::new(&mut training.recover.lr, 1e-4..=1e-2)
                    .logarithmic(true)
                    .text("learning rate"),
            )
            .on_hover_text("AdamW learning rate");
        });
        ui.horizontal(|ui| {
            ui.checkbox(&mut training.recover.gradual, "Gradual pruning from")
                .on_hover_text("Raise magnitude sparsity from this level to the configuration's over the first two thirds of training (TF-MOT PolynomialDecay), instead of pruning at once");
            ui.add_enabled(
                training.recover.gradual,
                egui::Slider::new(&mut training.recover.gradual_from_pct, 0.0..=90.0).suffix(" %"),
            )
            .on_hover_text("The sparsity gradual pruning starts from");
        });
        if ui
            .add_enabled(idle && !config.is_identity(), egui::Button::new("Recover"))
            .on_hover_text("Fine-tune with the pruning masks fixed and the quantization simulated, then re-apply the configuration: the result is exactly in its formats")
            .clicked()
        {
            actions.push(Command::Recover);
        }
        progress_ui(ui, training, actions);
        if let Some(r) = training.recoveries.last() {
            recovery_ui(ui, r, actions);
        }
        ui.separator();
        ui.heading("Distill into a smaller student");
        ui.horizontal(|ui| {
            if ui
                .button("Student spec…")
                .on_hover_text("An architecture spec (TOML) for the student; layers it creates give `out` (and `kernel` for convolutions)")
                .clicked()
            {
                actions.push(Command::ChooseStudentDialog);
            }
            ui.label(
                training
                    .distill
                    .student
                    .as_deref()
                    .map_or("(none chosen)".into(), file_name),
            );
        });
        ui.horizontal(|ui| {
            ui.add(
                egui::Slider::new(&mut training.distill.temperature, 1.0..=10.0)
                    .text("temperature T"),
            )
            .on_hover_text(
                "Softens both distributions: the teacher's \"dark knowledge\" shows at T > 1",
            );
            ui.add(
                egui::Slider::new(&mut training.distill.alpha, 0.0..=1.0).text("α (soft share)"),
            )
            .on_hover_text("loss = α·T²·KL(teacher || student) + (1 − α)·cross-entropy");
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut training.distill.epochs, 1..=100).text("epochs"))
                .on_hover_text("Passes over the training part of the data");
            ui.add(
                egui::Slider::new(&mut training.distill.lr, 1e-4..=1e-2)
                    .logarithmic(true)
                    .text("learning rate"),
            );
        });
        ui.checkbox(
            &mut training.distill.from_current,
            "Student: this model under the current configuration, shrunk",
        )
        .on_hover_text(
            "Instead of a spec: the open network with the current configuration applied and the neurons and filters that structured pruning zeroed removed (set Method to Structured), physically smaller",
        );
        if ui
            .add_enabled(
                idle && (training.distill.student.is_some() || training.distill.from_current),
                egui::Button::new("Distill"),
            )
            .on_hover_text("Train the student from the open model's soft targets, and the same student from labels alone, to measure what the teacher adds")
            .clicked()
        {
            actions.push(Command::Distill);
        }
        if let Some(d) = &training.distilled {
            distilled_ui(ui, d, actions);
        }
    }
}

fn config_words(config: &Config) -> String {
    if config.is_identity() {
        return "nothing compressed yet (set a sparsity or format on the right)".into();
    }
    config.summary()
}

fn progress_ui(ui: &mut egui::Ui, training: &Training, actions: &mut Vec<Command>) {
    if let Some(r) = &training.running {
        ui.horizontal(|ui| {
            let fraction = if r.steps == 0 {
                0.0
            } else {
                r.step as f32 / r.steps as f32
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(320.0)
                    .text(training.status_line().unwrap_or_default()),
            );
            if ui
                .button("Cancel")
                .on_hover_text("Stop training; nothing is kept")
                .clicked()
            {
                actions.push(Command::CancelTraining);
            }
        });
        if !r.epochs.is_empty() {
            let pts = |row: &str| -> Vec<[f64; 2]> {
                r.epochs
                    .iter()
                    .filter(|(n, _)| n == row)
                    .map(|(_, e)| [e.epoch as f64, 100.0 * e.validation.top1])
                    .collect()
            };
            let rows: Vec<String> = r.epochs.iter().fold(Vec::new(), |mut v, (n, _)| {
                if !v.contains(n) {
                    v.push(n.clone());
                }
                v
            });
            Plot::new("training")
                .height(140.0)
                .legend(Legend::default())
                .x_axis_label("epoch")
                .y_axis_label("validation top-1 (%)")
                .allow_scroll(false)
                .show(ui, |plot| {
                    for row in rows {
                        let name = if row.is_empty() {
                            "validation"
                        } else {
                            row.as_str()
                        };
                        plot.line(Line::new(name.to_owned(), PlotPoints::from(pts(&row))));
                    }
                });
        }
    }
    if let Some(s) = &training.status {
        ui.colored_label(ui.visuals().warn_fg_color, s);
    }
}

fn recovery_ui(ui: &mut egui::Ui, r: &Recovery, actions: &mut Vec<Command>) {
    ui.label(format!("Recovered: {}", config_words(&r.config)));
    egui::Grid::new("recovery")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            ui.strong("model");
            ui.strong("top-1 (held out)")
                .on_hover_text("On the 20% of the data training never saw");
            ui.strong("loss");
            ui.end_row();
            for (name, m) in [
                ("original", &r.held_out.baseline),
                ("one-shot", &r.held_out.one_shot),
                ("recovered", &r.held_out.recovered),
            ] {
                ui.label(name);
                ui.label(percent(m.top1));
                ui.label(format!("{:.4}", m.loss));
                ui.end_row();
            }
        });
    ui.label(format!(
        "Kept epoch {} of {} · {} · pruned weights not exactly zero: {} · the curves show the held-out figures (on the whole data set, which includes the training part: one-shot {}, recovered {})",
        r.best_epoch,
        r.history.len(),
        human_bytes(r.bytes_after),
        r.mask_violations,
        percent(r.full.0.top1),
        percent(r.full.1.top1),
    ));
    if ui
        .button("Save recovered model…")
        .on_hover_text("Write the recovered model (.safetensors or .gguf) and its recipe")
        .clicked()
    {
        actions.push(Command::SaveRecoveredDialog);
    }
}

fn distilled_ui(ui: &mut egui::Ui, d: &Distilled, actions: &mut Vec<Command>) {
    egui::Grid::new("distilled")
        .striped(true)
        .num_columns(5)
        .show(ui, |ui| {
            for h in [
                "model",
                "parameters",
                "size",
                "top-1 (held out)",
                "samples/s",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for c in &d.table {
                ui.label(&c.name);
                ui.label(group_digits(c.params));
                ui.label(human_bytes(c.bytes));
                ui.label(percent(c.metrics.top1));
                ui.label(format!("{:.0}", c.metrics.samples_per_second));
                ui.end_row();
            }
        });
    if ui
        .button("Save student…")
        .on_hover_text("Write the distilled student's weights (.safetensors)")
        .clicked()
    {
        actions.push(Command::SaveStudentDialog);
    }
}
