//! What panels, menus, shortcuts and dialogs ask the app to do: one [`Command`] enum,
//! carried out by [`SlimApp::apply`] at the end of the frame.

use std::path::{Path, PathBuf};

use super::{SlimApp, Tab, Theme, file_name, prompt, snapshot};
use crate::jobs::spawn_job;

/// Something a panel asks the app to do.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    OpenModel(PathBuf),
    /// Show the file dialog (off the UI thread).
    OpenDialog,
    CancelLoading,
    SelectTensor(usize),
    DismissError,
    /// Ask where to export (off the UI thread).
    ExportDialog,
    /// Write the compressed model to this path (.safetensors or .gguf) and its recipe
    /// beside it (`NAME.recipe.toml`).
    Export(PathBuf),
    /// Open the bundled demo: the digit CNN with 5,000 MNIST images attached.
    OpenDemo,
    /// Attach a labelled data set (file or TOML data spec) to the open model.
    AttachData(PathBuf),
    /// Use this architecture spec for the open model (re-attaching its data).
    AttachArch(PathBuf),
    /// Ask for a data set to attach (off the UI thread).
    AttachDataDialog,
    /// Make this the current configuration (a sweep point, a pinned one).
    UseConfig(crate::compress::config::Config),
    /// Start a sweep of the open model.
    StartSweep(super::curves::SweepKind),
    /// Measure the allocations of this average sparsity (a fraction) by the layers'
    /// sensitivity so far.
    Allocate(f64),
    /// Ask where to save every measured sweep point (JSON or CSV), then save.
    SaveResultsDialog,
    /// Ask where to save the plots as PNG, then save.
    SavePlotsDialog,
    /// Fine-tune the current configuration on the attached data.
    Recover,
    /// Distill the open model into the chosen student.
    Distill,
    /// Ask for the student's architecture spec.
    ChooseStudentDialog,
    /// Ask where to save the newest recovered model, then write it.
    SaveRecoveredDialog,
    /// Ask where to save the distilled student, then write it.
    SaveStudentDialog,
    /// Use this architecture spec as the distillation student.
    ChooseStudent(PathBuf),
    /// Stop the running recovery or distillation.
    CancelTraining,
    /// Write the newest recovered model (and its recipe) here.
    SaveRecovered(PathBuf),
    /// Write the distilled student's weights here.
    SaveStudent(PathBuf),
    /// Save every measured sweep point here (.json or .csv).
    SaveResults(PathBuf),
    /// Save the plots as PNG here (after the next screenshot arrives).
    SavePlots(PathBuf),
    /// Go back one configuration change (Ctrl+Z).
    Undo,
    /// Go forward again (Ctrl+Shift+Z or Ctrl+Y).
    Redo,
    /// Keep the current configuration and its figures for comparison.
    Pin,
    /// Measure the speed of these configurations' exports beside the original's.
    MeasureSpeed(Vec<crate::compress::config::Config>),
    /// Write the current configuration's recipe (with the model's sha256) here.
    SaveRecipe(PathBuf),
    /// Put the current configuration's recipe on the clipboard.
    CopyRecipe,
    /// Show or hide the frame times in the status bar.
    ToggleFrameTimes,
    /// Show or hide the keyboard shortcuts (F1).
    ToggleHelp,
    /// Hide the getting-started hint for good.
    DismissHint,
    SetTheme(Theme),
}

/// What a dropped file is for: with a model open, data sets and architecture specs
/// attach to it; anything else opens as a model.
pub(super) fn classify_drop(path: PathBuf, model_open: bool) -> Command {
    let name = file_name(&path).to_lowercase();
    if model_open {
        if name.ends_with(".csv") || name.ends_with(".csv.gz") || name.contains("ubyte") {
            return Command::AttachData(path);
        }
        if name.ends_with(".toml") {
            // A spec is a few hundred bytes: reading its head does not stall a frame.
            let mut head = String::new();
            if let Ok(f) = std::fs::File::open(&path) {
                use std::io::Read;
                let _ = f.take(16 << 10).read_to_string(&mut head);
            }
            if head.contains("[[layer]]") {
                return Command::AttachArch(path);
            }
            return Command::AttachData(path);
        }
    }
    Command::OpenModel(path)
}

impl SlimApp {
    /// Carry out one command.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::OpenModel(path) => self.open(path),
            Command::OpenDialog => self.open_dialog(),
            Command::CancelLoading => self.background.loading = None,
            Command::SelectTensor(i) => {
                if let Some(doc) = &mut self.doc {
                    doc.selected = Some(i);
                }
            }
            Command::DismissError => {
                self.error = None;
                self.notice = None;
            }
            Command::ExportDialog => self.export_dialog(),
            Command::Export(path) => self.export(path),
            Command::OpenDemo => match crate::demo::files() {
                Ok(d) => {
                    self.pending_attach = Some((d.data, Some(d.arch)));
                    self.open(d.model);
                }
                Err(e) => self.error = Some(format!("The bundled demo: {e}")),
            },
            Command::AttachData(path) => self.attach(path, None),
            Command::AttachArch(path) => match self.attached() {
                Some(a) => {
                    let data = a.data_path.clone();
                    self.attach(data, Some(path));
                }
                None => {
                    self.error = Some(format!(
                        "{}: attach a data set first; the architecture is checked against it",
                        path.display()
                    ))
                }
            },
            Command::ChooseStudent(path) => self.training.distill.student = Some(path),
            Command::CancelTraining => self.training.cancel(),
            Command::SaveResults(path) => self.save_results(path),
            Command::SavePlots(path) => self.save_plots(path),
            Command::Undo => {
                if let Some(doc) = &mut self.doc {
                    doc.history.undo(&mut doc.config);
                }
            }
            Command::Redo => {
                if let Some(doc) = &mut self.doc {
                    doc.history.redo(&mut doc.config);
                }
            }
            Command::ToggleHelp => self.show_help = !self.show_help,
            Command::ToggleFrameTimes => {
                self.settings.show_frame_times = !self.settings.show_frame_times;
            }
            Command::Pin => self.pin(),
            Command::MeasureSpeed(configs) => self.measure_speed(configs),
            Command::SaveRecipe(path) => self.save_recipe(Some(path)),
            Command::CopyRecipe => self.save_recipe(None),
            Command::DismissHint => self.settings.hint_dismissed = true,
            Command::SetTheme(theme) => self.settings.theme = theme,
            Command::SaveRecovered(path) => match self.training.save_recovered(path) {
                Ok(work) => self.save_in_background(work),
                Err(e) => self.error = Some(e.to_string()),
            },
            Command::SaveStudent(path) => match self.training.save_student(path) {
                Ok(work) => self.save_in_background(work),
                Err(e) => self.error = Some(e.to_string()),
            },
            Command::UseConfig(_)
            | Command::StartSweep(_)
            | Command::Allocate(_)
            | Command::SaveResultsDialog
            | Command::SavePlotsDialog
            | Command::Recover
            | Command::Distill
            | Command::ChooseStudentDialog
            | Command::SaveRecoveredDialog
            | Command::SaveStudentDialog => self.tab_command(command),
            Command::AttachDataDialog => {
                self.answer_dialog(
                    "Attach a labelled data set or an architecture spec",
                    None,
                    &[
                        ("data", &["csv", "gz", "npz", "toml", "ubyte"]),
                        ("all files", &["*"]),
                    ],
                    // A data set or an architecture spec, told apart as a drop is.
                    |path| classify_drop(path, true),
                );
                if let Some(p) = &mut self.prompt {
                    p.action = "Attach";
                }
            }
        }
    }

    /// Ask which model to open.
    fn open_dialog(&mut self) {
        self.answer_dialog(
            "Open a model",
            None,
            &[
                (
                    "models",
                    &[
                        "safetensors",
                        "gguf",
                        "pth",
                        "pt",
                        "bin",
                        "npz",
                        "npy",
                        "onnx",
                        "json",
                    ],
                ),
                ("all files", &["*"]),
            ],
            Command::OpenModel,
        );
    }

    /// Ask where to export, offering the open model's own container first.
    pub(super) fn export_dialog(&mut self) {
        const SAFETENSORS_FIRST: &[(&str, &[&str])] =
            &[("safetensors", &["safetensors"]), ("GGUF", &["gguf"])];
        const GGUF_FIRST: &[(&str, &[&str])] =
            &[("GGUF", &["gguf"]), ("safetensors", &["safetensors"])];
        // ONNX (QDQ, structurally pruned outputs removed) where the network is known.
        const ONNX_FIRST: &[(&str, &[&str])] = &[
            ("ONNX", &["onnx"]),
            ("safetensors", &["safetensors"]),
            ("GGUF", &["gguf"]),
        ];
        const SAFETENSORS_ONNX: &[(&str, &[&str])] = &[
            ("safetensors", &["safetensors"]),
            ("ONNX", &["onnx"]),
            ("GGUF", &["gguf"]),
        ];
        let onnx = self.can_export_onnx();
        let Some(model) = self.loaded().map(|l| l.model.clone()) else {
            return;
        };
        let stem = model
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Quantized activations only an .onnx export carries.
        let activations = self.config().activations.is_some();
        let (name, filters) = match model.format {
            crate::model::Format::Gguf => (format!("{stem}.slim.gguf"), GGUF_FIRST),
            crate::model::Format::Onnx => (format!("{stem}.slim.onnx"), ONNX_FIRST),
            _ if onnx && activations => (format!("{stem}.slim.onnx"), ONNX_FIRST),
            _ if onnx => (format!("{stem}.slim.safetensors"), SAFETENSORS_ONNX),
            _ => (format!("{stem}.slim.safetensors"), SAFETENSORS_FIRST),
        };
        self.answer_dialog(
            "Export the compressed model",
            Some(name),
            filters,
            Command::Export,
        );
        if let Some(p) = &mut self.prompt {
            (p.purpose, p.action) = (prompt::Purpose::Export, "Export");
        }
    }

    /// The current configuration's recipe, with the model's name and sha256 (read on
    /// a worker): written to `path`, or put on the clipboard.
    fn save_recipe(&mut self, path: Option<PathBuf>) {
        let Some(doc) = &self.doc else {
            return;
        };
        let model = doc.loaded.model.path.clone();
        let config = doc.config.clone();
        let text = move || -> crate::Result<String> {
            let sha = crate::checksum::sha256_file(&model)?;
            Ok(config.recipe_text(Some((&file_name(&model), Some(&sha)))))
        };
        match path {
            Some(path) => self.save_in_background(move || {
                crate::export::write_text(&path, &text()?, true)?;
                Ok(format!("Saved the recipe to {}", path.display()))
            }),
            None => {
                if self.background.copying.is_none() {
                    self.background.copying =
                        Some(spawn_job("copy-recipe", self.notifier(), move |_| text()));
                }
            }
        }
    }

    /// Keep the current configuration and its figures for comparison.
    pub(super) fn pin(&mut self) {
        let current = self.evaluation_is_current();
        match &mut self.doc {
            Some(doc) if current && doc.evaluation.is_some() => {
                if let Some(e) = doc.evaluation.clone() {
                    doc.compare.pin(e);
                }
                self.tab = Tab::Compare;
            }
            _ => {
                self.error =
                    Some("Wait for the current configuration's figures before pinning it.".into())
            }
        }
    }

    /// Save every measured sweep point to `path` (.csv or .json) on a worker.
    pub(super) fn save_results(&mut self, path: PathBuf) {
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let work = self.results_report(csv).map(|text| {
            move || {
                crate::export::write_text(&path, &text, true)?;
                Ok(format!("Saved the sweep results to {}", path.display()))
            }
        });
        match work {
            Some(work) => self.save_in_background(work),
            None => self.error = Some("No sweep points to save yet.".into()),
        }
    }

    /// Ask for a screenshot of the window; the plots are cut out of it and saved to
    /// `path` when it arrives.
    pub(super) fn save_plots(&mut self, path: PathBuf) {
        let (Some(rect), Some(ctx)) = (
            self.curves.as_ref().and_then(|c| c.plots_rect),
            self.ctx.clone(),
        ) else {
            self.error = Some("Open the Curves tab's plots to save them.".into());
            return;
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waker = ctx.clone();
        ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
            egui::ScreenshotCallback::new(move |image| {
                let _ = tx.send(image);
                waker.request_repaint();
            }),
        ));
        let request = snapshot::PngRequest { path, rect };
        self.background.screenshot = Some(super::background::Screenshot {
            request,
            image: rx,
            pixels_per_point: ctx.pixels_per_point(),
        });
    }

    /// Write a training result on a worker; the outcome becomes a notice or an error.
    pub(super) fn save_in_background(
        &mut self,
        work: impl FnOnce() -> crate::Result<String> + Send + 'static,
    ) {
        if self.background.saving.is_none() {
            self.background.saving = Some(spawn_job("save", self.notifier(), move |_| work()));
        }
    }

    /// Show a file dialog off the UI thread (one at a time); `answer` turns the
    /// chosen path into a command.
    pub(super) fn answer_dialog(
        &mut self,
        title: &'static str,
        save_as: Option<String>,
        filters: &'static [(&'static str, &'static [&'static str])],
        answer: fn(PathBuf) -> Command,
    ) {
        // The window's own path field, filled where the dialog answers: without a
        // desktop portal the dialog cannot open at all.
        let folder = self
            .loaded()
            .and_then(|l| l.model.path.parent().map(Path::to_path_buf))
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default();
        let path = match &save_as {
            Some(name) => folder.join(name).display().to_string(),
            None => format!("{}{}", folder.display(), std::path::MAIN_SEPARATOR),
        };
        self.prompt = Some(prompt::PathPrompt {
            title,
            path,
            answer,
            purpose: prompt::Purpose::Other,
            action: if save_as.is_some() { "Save" } else { "Open" },
            filters,
        });
        if self.background.dialog.is_some() {
            return;
        }
        self.background.dialog = Some(spawn_job("file-dialog", self.notifier(), move |_| {
            let mut dialog = rfd::FileDialog::new().set_title(title);
            for (name, extensions) in filters {
                dialog = dialog.add_filter(*name, extensions);
            }
            let path = match save_as {
                Some(name) => dialog.set_file_name(name).save_file(),
                None => dialog.pick_file(),
            };
            Ok(path.map(answer))
        }));
    }

    /// Why training cannot start now (`None`: it can).
    pub(super) fn training_blocker(&self) -> Option<&'static str> {
        match self.attached() {
            _ if self.doc.is_none() => Some("Open a model first."),
            None => Some("Attach a labelled data set first: training needs data."),
            Some(a) => match a.evaluator.network() {
                crate::eval::Network::Sequential(_) => None,
                crate::eval::Network::Onnx(_) => Some(
                    "This model runs as an ONNX graph, which cannot be trained; open a state_dict with an architecture spec.",
                ),
                crate::eval::Network::CausalLm(_) | crate::eval::Network::SentenceEncoder(_) => {
                    Some(
                        "Fine-tuning and distillation here train sequential networks (a state_dict with an architecture spec); language models and sentence encoders are measured, not trained.",
                    )
                }
            },
        }
    }

    /// Start a recovery (`recover`) or a distillation of the open model on the
    /// sweeps' pool.
    fn start_training(&mut self, recover: bool) {
        let (Some(model), Some(evaluator), Some(pool)) = (
            self.loaded().map(|l| l.model.clone()),
            self.attached().map(|a| a.evaluator.clone()),
            self.curves.as_ref().map(|c| c.pool().clone()),
        ) else {
            return;
        };
        let notify = self.notifier();
        let config = self.config().clone();
        if recover {
            self.training
                .start_recovery(&pool, model, config, evaluator, notify);
        } else {
            self.training
                .start_distillation(&pool, model, config, evaluator, notify);
        }
    }

    /// The open model's file stem, for suggested file names.
    fn model_stem(&self) -> String {
        self.loaded()
            .and_then(|l| l.model.path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Carry out a command of the Curves or Training tab.
    fn tab_command(&mut self, command: Command) {
        match command {
            Command::UseConfig(config) => {
                if let Some(doc) = &mut self.doc {
                    doc.config = config;
                }
            }
            Command::StartSweep(kind) => self.start_sweep(kind),
            Command::Allocate(target) => self.start_allocation(target),
            Command::SaveResultsDialog => self.answer_dialog(
                "Save the sweep results",
                Some("sweep.json".into()),
                &[("JSON", &["json"]), ("CSV", &["csv"])],
                Command::SaveResults,
            ),
            Command::SavePlotsDialog => self.answer_dialog(
                "Save the plots as PNG",
                Some("curves.png".into()),
                &[("PNG image", &["png"])],
                Command::SavePlots,
            ),
            Command::Recover => self.start_training(true),
            Command::Distill => self.start_training(false),
            Command::ChooseStudentDialog => self.answer_dialog(
                "Choose the student's architecture spec",
                None,
                &[("architecture spec", &["toml"])],
                Command::ChooseStudent,
            ),
            Command::SaveRecoveredDialog => {
                let name = format!("{}.recovered.safetensors", self.model_stem());
                self.answer_dialog(
                    "Save the recovered model",
                    Some(name),
                    &[("safetensors", &["safetensors"]), ("GGUF", &["gguf"])],
                    Command::SaveRecovered,
                );
            }
            Command::SaveStudentDialog => {
                let name = format!("{}.student.safetensors", self.model_stem());
                self.answer_dialog(
                    "Save the distilled student",
                    Some(name),
                    &[("safetensors", &["safetensors"])],
                    Command::SaveStudent,
                );
            }
            other => self.apply(other),
        }
    }
}
