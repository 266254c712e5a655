//! The desktop app: a thin egui layer over the library.
//!
//! State is split in two: [`Settings`] persist across restarts (eframe storage);
//! everything else is runtime state. Panels (one file each) only draw and return
//! [`Command`]s; [`SlimApp::apply`] carries them out once per frame. Heavy work —
//! opening, statistics, file dialogs — runs as [`crate::jobs`] on worker threads;
//! [`SlimApp::poll`] drains their channels without blocking, every frame.

pub mod accuracy;
pub mod compare;
pub mod compress;
pub mod curves;
mod document;
mod help;
mod histogram;
pub mod history;
mod layers;
mod shortcuts;
mod snapshot;
mod summary;
pub mod training;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compress::apply::apply_recipe;
use crate::inspect::{TensorReport, inspect_model};
use crate::jobs::{JobEvent, JobHandle, spawn_job};
use crate::model::Model;
use crate::stats::{DEFAULT_BINS, Histogram, HistogramRange, StatsOptions};
pub(crate) use crate::units::{group_digits, human_bytes};
pub use document::Document;

/// How many recent files File > Open Recent remembers.
const RECENT_FILES: usize = 8;

/// What persists across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub recent_files: Vec<PathBuf>,
    /// Histogram counts on a log scale.
    pub log_counts: bool,
    /// Histogram over |w| instead of w.
    pub abs_values: bool,
    pub bins: usize,
    pub theme: Theme,
    /// The last configuration used with each model, most recent first.
    pub last_configs: Vec<(PathBuf, compress::Config)>,
    /// Whether the getting-started hint was dismissed.
    pub hint_dismissed: bool,
    /// Show the UI's frame times (median and 99th percentile) in the status bar.
    pub show_frame_times: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            recent_files: Vec::new(),
            log_counts: false,
            abs_values: false,
            bins: DEFAULT_BINS,
            theme: Theme::Dark,
            last_configs: Vec::new(),
            hint_dismissed: false,
            show_frame_times: false,
        }
    }
}

/// How many models' last configurations are remembered.
const REMEMBERED_CONFIGS: usize = 32;

/// The colour theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Theme {
    Dark,
    Light,
}

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
    /// Show or hide the frame times in the status bar.
    ToggleFrameTimes,
    /// Show or hide the keyboard shortcuts (F1).
    ToggleHelp,
    /// Hide the getting-started hint for good.
    DismissHint,
    SetTheme(Theme),
}

/// A model with every tensor's statistics, as the loading job produces it.
pub struct LoadedModel {
    pub model: Arc<Model>,
    pub reports: Vec<TensorReport>,
}

/// A model being opened in the background.
struct Loading {
    path: PathBuf,
    job: JobHandle<LoadedModel>,
    progress: (usize, usize),
}

/// The end of the job in `slot` (reached through `job`), emptying the slot when it
/// has ended.
fn take_end<S, T, P>(
    slot: &mut Option<S>,
    job: impl Fn(&S) -> &JobHandle<T, P>,
) -> Option<JobEvent<T, P>> {
    let event = job(slot.as_ref()?).try_end()?;
    *slot = None;
    Some(event)
}

/// The job's end, if it has ended, after recording its latest progress.
fn drain<T>(job: &JobHandle<T>, progress: &mut (usize, usize)) -> Option<JobEvent<T>> {
    let mut end = None;
    while let Ok(event) = job.events.try_recv() {
        match event {
            JobEvent::Progress { done, total, .. } => *progress = (done, total),
            other if other.is_end() => end = Some(other),
            _ => {}
        }
    }
    end
}

/// The whole app state.
pub struct SlimApp {
    pub settings: Settings,
    /// The open model and everything that belongs to it.
    doc: Option<Document>,
    /// The last error, shown until dismissed; names the file.
    pub error: Option<String>,
    /// The last success message (an export), shown until dismissed.
    pub notice: Option<String>,
    loading: Option<Loading>,
    /// Data (and architecture) to attach once the model being opened has loaded.
    pending_attach: Option<(PathBuf, Option<PathBuf>)>,
    /// The file dialog on screen; its answer becomes a command.
    dialog: Option<JobHandle<Option<Command>>>,
    /// The export being written.
    export: Option<JobHandle<String>>,
    /// A training result, results file or image being written.
    saving: Option<JobHandle<String>>,
    ctx: Option<egui::Context>,
    /// Sweeps of the open model and their points.
    pub curves: Option<curves::Curves>,
    /// What the central area shows.
    pub tab: Tab,
    /// Recovery fine-tuning and distillation of the open model.
    pub training: training::Training,
    /// Plots to save once the window's screenshot arrives (with the scale it was
    /// taken at).
    pending_shot: Option<(
        snapshot::PngRequest,
        crossbeam_channel::Receiver<Arc<egui::ColorImage>>,
        f32,
    )>,
    /// Whether the keyboard shortcuts window is open.
    pub show_help: bool,
    /// CPU time of recent frames (eframe reports them).
    pub frame_times: FrameTimes,
}

/// The CPU time of the last frames, to show that the UI never blocks.
#[derive(Debug, Default)]
pub struct FrameTimes {
    seconds: std::collections::VecDeque<f32>,
}

impl FrameTimes {
    /// Frames kept.
    const KEEP: usize = 2000;

    pub fn push(&mut self, seconds: f32) {
        if self.seconds.len() == Self::KEEP {
            self.seconds.pop_front();
        }
        self.seconds.push_back(seconds);
    }

    /// (median, 99th percentile) in milliseconds and the frames counted.
    pub fn percentiles(&self) -> Option<(f64, f64, usize)> {
        if self.seconds.is_empty() {
            return None;
        }
        let mut v: Vec<f32> = self.seconds.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) * 1e3;
        Some((at(0.5), at(0.99), v.len()))
    }
}

/// Bytes of compressed tensors the app keeps for instant returns to a setting.
const TENSOR_CACHE_BYTES: usize = 1 << 30;

/// The central area's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Histogram,
    Curves,
    Training,
    Compare,
}

impl SlimApp {
    pub fn new(settings: Settings) -> Self {
        SlimApp {
            settings,
            doc: None,
            error: None,
            notice: None,
            loading: None,
            pending_attach: None,
            dialog: None,
            export: None,
            saving: None,
            ctx: None,
            // Sweeps compute on a pool of their own: one per core, two jobs at a time.
            curves: crate::jobs::Pool::background(2, 0)
                .ok()
                .map(|p| curves::Curves::new(Arc::new(p))),
            tab: Tab::Histogram,
            training: training::Training::default(),
            pending_shot: None,
            show_help: false,
            frame_times: FrameTimes::default(),
        }
    }

    /// The open model's document.
    pub fn document(&self) -> Option<&Document> {
        self.doc.as_ref()
    }

    /// The open model's document, to change.
    pub fn document_mut(&mut self) -> Option<&mut Document> {
        self.doc.as_mut()
    }

    /// The open model with its statistics.
    pub fn loaded(&self) -> Option<&LoadedModel> {
        self.doc.as_ref().map(|d| &d.loaded)
    }

    /// The data set attached to the open model.
    pub fn attached(&self) -> Option<&accuracy::Attached> {
        self.doc.as_ref()?.attached.as_ref()
    }

    /// The latest finished evaluation of the open model.
    pub fn evaluation(&self) -> Option<&Arc<compress::Evaluation>> {
        self.doc.as_ref()?.evaluation.as_ref()
    }

    /// What the compression controls are set to (nothing compressed with no model).
    pub fn config(&self) -> &compress::Config {
        static NONE: compress::Config = compress::Config::NONE;
        self.doc.as_ref().map_or(&NONE, |d| &d.config)
    }

    /// Whether a data set is being attached (loaded and evaluated).
    pub fn is_attaching(&self) -> bool {
        self.doc.as_ref().is_some_and(|d| d.attaching().is_some()) || self.pending_attach.is_some()
    }

    /// Attach `data` (and `arch`) to the open model on a worker, or to the model
    /// being opened once it has loaded.
    fn attach(&mut self, data: PathBuf, arch: Option<PathBuf>) {
        let notify = self.notifier();
        match &mut self.doc {
            Some(doc) => doc.attach(data, arch, notify),
            None => self.pending_attach = Some((data, arch)),
        }
    }

    /// Whether the evaluation on screen is of the current configuration.
    pub fn evaluation_is_current(&self) -> bool {
        self.doc
            .as_ref()
            .is_none_or(|d| d.evaluation_is_current(self.settings.bins))
    }

    /// Whether an export is being written.
    pub fn is_exporting(&self) -> bool {
        self.export.is_some()
    }

    fn schedule_evaluation(&mut self) {
        let notify = self.notifier();
        if let Some(doc) = &mut self.doc {
            doc.schedule_evaluation(self.settings.bins, notify);
        }
    }

    /// Export on a worker: the recipe (with the model's name and sha256) and the model.
    fn export(&mut self, out: PathBuf) {
        let Some(doc) = &self.doc else {
            return;
        };
        if self.export.is_some() {
            return;
        }
        let model = doc.loaded.model.clone();
        let config = doc.config.clone();
        self.export = Some(spawn_job("export", self.notifier(), move |_| {
            crate::export::OutputFormat::of(&out)?;
            crate::export::check_output(&model, &out, true)?;
            let sha = crate::checksum::sha256_file(&model.path)?;
            let text = config.recipe_text(Some((&file_name(&model.path), Some(&sha))));
            let recipe_path = out.with_extension("recipe.toml");
            let recipe = config.to_recipe(&recipe_path)?;
            let applied = apply_recipe(&model, &recipe)?;
            crate::export::write_model(&model, &applied, &text, &out, true)?;
            crate::export::write_text(&recipe_path, &text, true)?;
            Ok(format!(
                "Exported {} and its recipe {}",
                out.display(),
                file_name(&recipe_path)
            ))
        }));
    }

    /// Whether a model is being opened right now.
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Wake the UI from a worker thread.
    fn notifier(&self) -> impl Fn() + Send + Sync + 'static {
        let ctx = self.ctx.clone();
        move || {
            if let Some(ctx) = &ctx {
                ctx.request_repaint();
            }
        }
    }

    /// Drain every job channel (never blocks). Call once per frame before drawing.
    pub fn poll(&mut self) {
        if let Some(c) = &mut self.curves {
            c.poll();
        }
        self.training.poll();
        self.take_screenshot();
        if let Some(JobEvent::Finished(Some(command))) = take_end(&mut self.dialog, |d| d) {
            self.apply(command);
        }
        for slot in [&mut self.saving, &mut self.export] {
            match take_end(slot, |j| j) {
                Some(JobEvent::Finished(message)) => self.notice = Some(message),
                Some(JobEvent::Failed(message)) => self.error = Some(message),
                _ => {}
            }
        }
        if let Some(loading) = &mut self.loading
            && let Some(end) = drain(&loading.job, &mut loading.progress)
        {
            let path = loading.path.clone();
            self.loading = None;
            match end {
                JobEvent::Finished(loaded) => self.show_model(loaded, &path),
                JobEvent::Failed(message) => self.error = Some(message),
                _ => {}
            }
        }
        if let Some(error) = self.doc.as_mut().and_then(Document::poll) {
            self.error = Some(error);
        }
        self.schedule_evaluation();
    }

    /// Replace the document with the model just loaded from `path`.
    fn show_model(&mut self, loaded: LoadedModel, path: &Path) {
        self.error = None;
        // The configuration last used with this model comes back (one undo away
        // from none).
        let restored = self
            .settings
            .last_configs
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, config)| config.clone());
        if restored.is_some() {
            self.notice = Some(format!(
                "Restored the configuration you last used with {} (Ctrl+Z for none).",
                file_name(path)
            ));
        }
        if let Some(c) = &mut self.curves {
            c.clear();
        }
        self.training.clear();
        let recent = &mut self.settings.recent_files;
        recent.retain(|p| p != path);
        recent.insert(0, path.to_owned());
        recent.truncate(RECENT_FILES);
        let language_model = crate::eval::causal_lm::is_causal_lm(&loaded.model);
        let sentence_encoder = crate::eval::embeddings::is_sentence_encoder(&loaded.model);
        self.doc = Some(Document::new(loaded, restored));
        if let Some((data, arch)) = self.pending_attach.take() {
            self.attach(data, arch);
        } else if language_model || sentence_encoder {
            // Language models are measured on the bundled text, sentence encoders on
            // the bundled sentence pairs, until the user drops their own.
            match crate::demo::files() {
                Ok(d) => self.attach(if language_model { d.text } else { d.sentences }, None),
                Err(e) => self.error = Some(format!("The bundled evaluation text: {e}")),
            }
        }
    }

    /// Carry out one command.
    pub fn apply(&mut self, command: Command) {
        match command {
            Command::OpenModel(path) => self.open(path),
            Command::OpenDialog => self.answer_dialog(
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
            ),
            Command::CancelLoading => self.loading = None,
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
            Command::AttachDataDialog => self.answer_dialog(
                "Attach a labelled data set or an architecture spec",
                None,
                &[
                    ("data", &["csv", "gz", "npz", "toml", "ubyte"]),
                    ("all files", &["*"]),
                ],
                // A data set or an architecture spec, told apart as a drop is.
                |path| classify_drop(path, true),
            ),
        }
    }

    /// Ask where to export, offering the open model's own container first.
    fn export_dialog(&mut self) {
        const SAFETENSORS_FIRST: &[(&str, &[&str])] =
            &[("safetensors", &["safetensors"]), ("GGUF", &["gguf"])];
        const GGUF_FIRST: &[(&str, &[&str])] =
            &[("GGUF", &["gguf"]), ("safetensors", &["safetensors"])];
        let Some(model) = self.loaded().map(|l| l.model.clone()) else {
            return;
        };
        let stem = model
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (name, filters) = if model.format == crate::model::Format::Gguf {
            (format!("{stem}.slim.gguf"), GGUF_FIRST)
        } else {
            (format!("{stem}.slim.safetensors"), SAFETENSORS_FIRST)
        };
        self.answer_dialog(
            "Export the compressed model",
            Some(name),
            filters,
            Command::Export,
        );
    }

    /// Keep the current configuration and its figures for comparison.
    fn pin(&mut self) {
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
    fn save_results(&mut self, path: PathBuf) {
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
    fn save_plots(&mut self, path: PathBuf) {
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
        self.pending_shot = Some((request, rx, ctx.pixels_per_point()));
    }

    /// Write a training result on a worker; the outcome becomes a notice or an error.
    fn save_in_background(
        &mut self,
        work: impl FnOnce() -> crate::Result<String> + Send + 'static,
    ) {
        if self.saving.is_none() {
            self.saving = Some(spawn_job("save", self.notifier(), move |_| work()));
        }
    }

    /// Show a file dialog off the UI thread (one at a time); `answer` turns the
    /// chosen path into a command.
    fn answer_dialog(
        &mut self,
        title: &'static str,
        save_as: Option<String>,
        filters: &'static [(&'static str, &'static [&'static str])],
        answer: fn(PathBuf) -> Command,
    ) {
        if self.dialog.is_some() {
            return;
        }
        self.dialog = Some(spawn_job("file-dialog", self.notifier(), move |_| {
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
    fn training_blocker(&self) -> Option<&'static str> {
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

    /// Carry out what the training tab asked for.
    fn training_action(&mut self, action: training::TrainingAction) {
        use training::TrainingAction as A;
        let stem = self
            .loaded()
            .and_then(|l| l.model.path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match action {
            A::Recover | A::Distill => {
                let (Some(model), Some(evaluator), Some(pool)) = (
                    self.loaded().map(|l| l.model.clone()),
                    self.attached().map(|a| a.evaluator.clone()),
                    self.curves.as_ref().map(|c| c.pool().clone()),
                ) else {
                    return;
                };
                let notify = self.notifier();
                if action == A::Recover {
                    let config = self.config().clone();
                    self.training
                        .start_recovery(&pool, model, config, evaluator, notify);
                } else {
                    let config = self.config().clone();
                    self.training
                        .start_distillation(&pool, model, config, evaluator, notify);
                }
            }
            A::Cancel => self.training.cancel(),
            A::ChooseStudentDialog => self.answer_dialog(
                "Choose the student's architecture spec",
                None,
                &[("architecture spec", &["toml"])],
                Command::ChooseStudent,
            ),
            A::SaveRecoveredDialog => self.answer_dialog(
                "Save the recovered model",
                Some(format!("{stem}.recovered.safetensors")),
                &[("safetensors", &["safetensors"]), ("GGUF", &["gguf"])],
                Command::SaveRecovered,
            ),
            A::SaveStudentDialog => self.answer_dialog(
                "Save the distilled student",
                Some(format!("{stem}.student.safetensors")),
                &[("safetensors", &["safetensors"])],
                Command::SaveStudent,
            ),
        }
    }

    /// Open `path` on a worker: parse, then statistics for every tensor. The model on
    /// screen stays until the new one is ready; a newer open replaces (cancels) an older.
    fn open(&mut self, path: PathBuf) {
        let options = StatsOptions {
            bins: self.settings.bins,
            range: HistogramRange::Signed,
        };
        let job_path = path.clone();
        let job = spawn_job("open-model", self.notifier(), move |progress| {
            let model = Model::open(&job_path)?;
            let reports =
                inspect_model(&model, &options, |done, total| progress.report(done, total))?;
            Ok(LoadedModel {
                model: Arc::new(model),
                reports,
            })
        });
        self.loading = Some(Loading {
            path,
            job,
            progress: (0, 0),
        });
    }

    /// The (tensor, bins, range) the current settings ask to see for tensor `index`.
    fn histogram_key(&self, index: usize) -> document::HistogramKey {
        let range = if self.settings.abs_values {
            HistogramRange::Abs
        } else {
            HistogramRange::Signed
        };
        (index, self.settings.bins, range)
    }

    /// The histogram for tensor `index` under the current settings, if computed.
    pub fn cached_histogram(&self, index: usize) -> Option<&Histogram> {
        self.doc
            .as_ref()?
            .cached_histogram(self.histogram_key(index))
    }

    /// Whether the histogram for the selection, under the current settings, is at hand.
    pub fn has_histogram_for_selection(&self) -> bool {
        self.doc
            .as_ref()
            .and_then(|d| d.selected)
            .is_some_and(|i| self.cached_histogram(i).is_some())
    }

    /// Start computing the histogram for tensor `index` in the background unless it is
    /// at hand or already being computed.
    fn request_histogram(&mut self, index: usize) {
        let key = self.histogram_key(index);
        let notify = self.notifier();
        if let Some(doc) = &mut self.doc {
            doc.request_histogram(key, notify);
        }
    }

    /// Start a sweep of the open model (with the attached data, if any).
    pub fn start_sweep(&mut self, kind: curves::SweepKind) {
        let Some(model) = self.loaded().map(|l| l.model.clone()) else {
            return;
        };
        let points = kind.points(&model);
        self.start_points(kind, points, model);
    }

    /// Measure the allocations of `target` average sparsity over the layers, by the
    /// sensitivity ranking of the per-layer points so far (latest wins).
    pub fn start_allocation(&mut self, target: f64) {
        let (Some(model), Some(c)) = (self.loaded().map(|l| l.model.clone()), &self.curves) else {
            return;
        };
        let baseline = self.attached().map(|a| a.baseline.quality());
        let ranking =
            crate::sweep::analysis::sensitivity(&c.all_results(), "layer magnitude", baseline);
        let points = crate::sweep::analysis::allocation_points(
            target,
            &crate::sweep::layer_sizes(&model),
            &ranking,
        );
        self.start_points(curves::SweepKind::Allocation, points, model);
    }

    fn start_points(
        &mut self,
        kind: curves::SweepKind,
        points: Vec<crate::sweep::Point>,
        model: Arc<Model>,
    ) {
        // The heatmap is weight fidelity only: seconds, whatever the data.
        let accuracy = self
            .attached()
            .filter(|_| kind != curves::SweepKind::Heatmap)
            .map(|a| a.evaluator.clone());
        let notify = self.notifier();
        if let (Some(c), Some(doc)) = (&mut self.curves, &self.doc) {
            c.start(
                kind,
                points,
                model,
                doc.tensor_cache.clone(),
                accuracy,
                notify,
            );
        }
    }

    /// Draw the whole window. Tests call this through egui_kittest; eframe through
    /// [`eframe::App::ui`].
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        if self.ctx.is_none() {
            self.ctx = Some(ui.ctx().clone());
        }
        ui.ctx().set_theme(match self.settings.theme {
            Theme::Dark => egui::Theme::Dark,
            Theme::Light => egui::Theme::Light,
        });
        let model_open = self.doc.is_some();
        let mut commands = shortcuts::pressed(ui.ctx(), model_open);
        let dropped: Vec<PathBuf> = ui.ctx().input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        commands.extend(
            dropped
                .into_iter()
                .take(1)
                .map(|p| classify_drop(p, model_open)),
        );
        egui::Panel::top("menu").show(ui, |ui| self.top_bar_ui(ui, &mut commands));
        egui::Panel::bottom("status").show(ui, |ui| self.status_ui(ui, &mut commands));
        self.side_panels_ui(ui, &mut commands);
        egui::CentralPanel::default().show(ui, |ui| self.central_ui(ui, &mut commands));
        if self.show_help {
            shortcuts::window(ui.ctx(), &mut self.show_help);
        }
        for c in commands {
            self.apply(c);
        }
        let busy = ui.ctx().input(|i| i.pointer.any_down()) || ui.ctx().egui_wants_keyboard_input();
        if let Some(doc) = &mut self.doc {
            doc.history.observe(&doc.config, busy);
        }
        if !busy {
            self.remember_config();
        }
        self.schedule_evaluation();
    }

    /// The compression controls and figures on the right, the tensor table on the left.
    fn side_panels_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let bins = self.settings.bins;
        let Some(doc) = &mut self.doc else {
            return;
        };
        let busy = doc.is_evaluating();
        let selected_name = doc
            .selected
            .and_then(|i| doc.loaded.model.tensors.get(i))
            .filter(|t| t.shape.len() >= 2)
            .map(|t| t.name.clone());
        egui::Panel::right("summary")
            .default_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("right")
                    .show(ui, |ui| {
                        compress::controls_ui(
                            ui,
                            &mut doc.config,
                            selected_name.as_deref(),
                            doc.evaluation.as_deref(),
                            busy,
                        );
                        let can_pin =
                            doc.evaluation.is_some() && doc.evaluation_is_current(bins) && !busy;
                        if ui
                            .add_enabled(can_pin, egui::Button::new("Pin for comparison"))
                            .on_hover_text("Keep this configuration and its figures; compare pinned ones side by side in the Compare tab")
                            .clicked()
                        {
                            commands.push(Command::Pin);
                        }
                        ui.separator();
                        accuracy::ui(
                            ui,
                            doc.attached.as_ref(),
                            doc.attaching(),
                            doc.evaluation.as_deref(),
                            busy,
                            commands,
                        );
                        ui.separator();
                        summary::ui(ui, Some(&doc.loaded));
                    });
            });
        // The table scrolls sideways: leave the histogram room on small screens.
        let table_width = layers::width().min(0.42 * ui.available_width());
        egui::Panel::left("layers")
            .default_size(table_width)
            .show(ui, |ui| {
                commands.extend(doc.table.ui(
                    ui,
                    &doc.loaded,
                    doc.selected,
                    doc.evaluation.as_deref(),
                    &doc.config,
                ));
            });
    }

    /// Messages, the tabs and the tab shown.
    fn central_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        if let Some(error) = self.error.clone() {
            error_ui(ui, &error, commands);
        } else if let Some(notice) = self.notice.clone() {
            notice_ui(ui, &notice, commands);
        }
        if self.doc.is_none() {
            empty_state_ui(ui, self.loading.is_some());
            return;
        }
        if !self.settings.hint_dismissed {
            help::hint_ui(ui, commands);
        }
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tab, Tab::Histogram, "Histogram")
                .on_hover_text("The selected tensor's values, before and after compression");
            ui.selectable_value(&mut self.tab, Tab::Curves, "Curves")
                .on_hover_text("Accuracy against sparsity and bit-width, layer sensitivity, size against accuracy");
            ui.selectable_value(&mut self.tab, Tab::Training, "Training")
                .on_hover_text("Win accuracy back: fine-tune the current configuration, or distill into a smaller student");
            ui.selectable_value(&mut self.tab, Tab::Compare, "Compare")
                .on_hover_text("Pinned configurations side by side: size, accuracy, what each does per tensor");
        });
        ui.separator();
        match self.tab {
            Tab::Compare => self.compare_tab_ui(ui),
            Tab::Training => self.training_tab_ui(ui),
            Tab::Curves => self.curves_tab_ui(ui),
            Tab::Histogram => self.histogram_tab_ui(ui),
        }
    }

    fn compare_tab_ui(&mut self, ui: &mut egui::Ui) {
        let bins = self.settings.bins;
        let Some(doc) = &mut self.doc else {
            return;
        };
        let mut actions = Vec::new();
        let current = doc
            .evaluation
            .clone()
            .filter(|_| doc.evaluation_is_current(bins));
        let names: Vec<&str> = doc
            .loaded
            .model
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        compare::ui(ui, &mut doc.compare, current.as_ref(), &names, &mut actions);
        for a in actions {
            match a {
                compare::CompareAction::Use(config) => doc.config = config,
            }
        }
    }

    fn training_tab_ui(&mut self, ui: &mut egui::Ui) {
        let mut actions = Vec::new();
        let blocker = self.training_blocker();
        let config = self.config().clone();
        egui::ScrollArea::vertical()
            .id_salt("training")
            .show(ui, |ui| {
                training::ui(ui, &mut self.training, &config, blocker, &mut actions);
            });
        for a in actions {
            self.training_action(a);
        }
    }

    fn curves_tab_ui(&mut self, ui: &mut egui::Ui) {
        let mut actions = Vec::new();
        let baseline = self.attached().map(|a| a.baseline.quality());
        let has_data = self.attached().is_some();
        let evaluation = self.evaluation().cloned();
        let recovered = self.training.markers();
        if let Some(c) = &mut self.curves {
            egui::ScrollArea::vertical()
                .id_salt("curves")
                .show(ui, |ui| {
                    curves::ui(
                        ui,
                        c,
                        has_data,
                        evaluation.as_deref(),
                        baseline,
                        &recovered,
                        &mut actions,
                    );
                });
        } else {
            ui.label("Sweeps are unavailable: no worker threads could be started.");
        }
        for a in actions {
            match a {
                curves::CurvesAction::Start(kind) => self.start_sweep(kind),
                curves::CurvesAction::Allocate(target) => self.start_allocation(target),
                curves::CurvesAction::Use(config) => {
                    if let Some(doc) = &mut self.doc {
                        doc.config = config;
                    }
                }
                curves::CurvesAction::SaveResultsDialog => self.answer_dialog(
                    "Save the sweep results",
                    Some("sweep.json".into()),
                    &[("JSON", &["json"]), ("CSV", &["csv"])],
                    Command::SaveResults,
                ),
                curves::CurvesAction::SavePlotsDialog => self.answer_dialog(
                    "Save the plots as PNG",
                    Some("curves.png".into()),
                    &[("PNG image", &["png"])],
                    Command::SavePlots,
                ),
            }
        }
    }

    fn histogram_tab_ui(&mut self, ui: &mut egui::Ui) {
        let Some(index) = self.doc.as_ref().and_then(|d| d.selected) else {
            empty_state_ui(ui, self.loading.is_some());
            return;
        };
        self.request_histogram(index);
        let hist = self.cached_histogram(index).cloned();
        let Some(doc) = &self.doc else {
            return;
        };
        let overlay = doc
            .evaluation
            .as_ref()
            .and_then(|e| e.tensors.get(index)?.as_ref());
        histogram::ui(
            ui,
            &doc.loaded,
            index,
            hist.as_ref(),
            overlay,
            doc.is_computing_histogram(),
            &mut self.settings,
        );
    }

    /// Cut the plots out of the screenshot once it has arrived, and write them (on a
    /// worker).
    fn take_screenshot(&mut self) {
        let Some((_, rx, _)) = &self.pending_shot else {
            return;
        };
        let Ok(image) = rx.try_recv() else {
            return;
        };
        let Some((request, _, pixels_per_point)) = self.pending_shot.take() else {
            return;
        };
        self.save_in_background(move || {
            let bytes = snapshot::crop_png(&image, request.rect, pixels_per_point)?;
            crate::export::write_bytes(&request.path, &bytes, true)?;
            Ok(format!("Saved the plots to {}", request.path.display()))
        });
    }

    /// Every measured point as `slimscope sweep -o` writes them, as CSV or JSON, or
    /// `None` with none measured.
    fn results_report(&self, csv: bool) -> Option<String> {
        let curves = self.curves.as_ref()?;
        let results = curves.all_results();
        if results.is_empty() {
            return None;
        }
        let baseline = self.attached().map(|a| a.baseline);
        let ranking = crate::sweep::analysis::sensitivity(
            &results,
            "layer magnitude",
            baseline.map(|b| b.quality()),
        );
        let report = crate::sweep::output::Report::new(
            self.loaded()
                .map(|l| l.model.path.display().to_string())
                .unwrap_or_default(),
            self.attached().map(|a| a.data_path.display().to_string()),
            baseline,
            false,
            &results,
            ranking,
        );
        Some(if csv {
            report.to_csv()
        } else {
            report.to_json()
        })
    }

    /// Keep the current configuration as the open model's last one (settings).
    fn remember_config(&mut self) {
        let Some(doc) = &self.doc else {
            return;
        };
        let (path, config) = (&doc.loaded.model.path, &doc.config);
        let saved = &mut self.settings.last_configs;
        if saved.first().is_some_and(|(p, c)| p == path && c == config) {
            return;
        }
        saved.retain(|(p, _)| p != path);
        if !config.is_identity() {
            saved.insert(0, (path.clone(), config.clone()));
            saved.truncate(REMEMBERED_CONFIGS);
        }
    }

    fn top_bar_ui(&self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui
                    .button("Open…")
                    .on_hover_text(shortcuts::hint(
                        ui.ctx(),
                        &Command::OpenDialog,
                        "Choose a model file",
                    ))
                    .clicked()
                {
                    commands.push(Command::OpenDialog);
                }
                if ui
                    .add_enabled(self.doc.is_some(), egui::Button::new("Export…"))
                    .on_hover_text(shortcuts::hint(
                        ui.ctx(),
                        &Command::ExportDialog,
                        "Write the compressed model (.safetensors or .gguf) and its recipe",
                    ))
                    .clicked()
                {
                    commands.push(Command::ExportDialog);
                }
                ui.menu_button("Open Recent", |ui| {
                    if self.settings.recent_files.is_empty() {
                        ui.label("(none yet)");
                    }
                    for path in &self.settings.recent_files {
                        if ui
                            .button(path.display().to_string())
                            .on_hover_text("Open this model again")
                            .clicked()
                        {
                            commands.push(Command::OpenModel(path.clone()));
                        }
                    }
                });
            });
            ui.menu_button("Edit", |ui| {
                if ui
                    .add_enabled(self.doc.as_ref().is_some_and(|d| d.history.can_undo()), egui::Button::new("Undo"))
                    .on_hover_text(shortcuts::hint(
                        ui.ctx(),
                        &Command::Undo,
                        "Go back one configuration change",
                    ))
                    .clicked()
                {
                    commands.push(Command::Undo);
                }
                if ui
                    .add_enabled(self.doc.as_ref().is_some_and(|d| d.history.can_redo()), egui::Button::new("Redo"))
                    .on_hover_text(shortcuts::hint(ui.ctx(), &Command::Redo, "Go forward again"))
                    .clicked()
                {
                    commands.push(Command::Redo);
                }
            });
            ui.menu_button("View", |ui| {
                if ui
                    .checkbox(&mut self.settings.show_frame_times.clone(), "Frame times")
                    .on_hover_text("The UI's CPU time per frame (median and 99th percentile over the last 2,000 frames) in the status bar")
                    .clicked()
                {
                    commands.push(Command::ToggleFrameTimes);
                }
                for (theme, label) in [(Theme::Dark, "Dark theme"), (Theme::Light, "Light theme")] {
                    if ui
                        .radio(self.settings.theme == theme, label)
                        .on_hover_text("Remembered across restarts")
                        .clicked()
                    {
                        commands.push(Command::SetTheme(theme));
                    }
                }
            });
            ui.menu_button("Help", |ui| {
                if ui
                    .button("Keyboard shortcuts")
                    .on_hover_text(shortcuts::keys_of(ui.ctx(), &Command::ToggleHelp))
                    .clicked()
                {
                    commands.push(Command::ToggleHelp);
                }
            });
            if let Some(loaded) = self.loaded() {
                ui.separator();
                ui.label(egui::RichText::new(loaded.model.path.display().to_string()).strong());
            }
        });
    }

    fn status_ui(&self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        ui.horizontal(|ui| {
            if let Some(loading) = &self.loading {
                let name = file_name(&loading.path);
                let (done, total) = loading.progress;
                let fraction = if total == 0 {
                    0.0
                } else {
                    done as f32 / total as f32
                };
                ui.spinner();
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(260.0)
                        .text(format!("Opening {name}: {done}/{total} tensors")),
                );
                if ui
                    .button("Cancel")
                    .on_hover_text("Stop opening this file")
                    .clicked()
                {
                    commands.push(Command::CancelLoading);
                }
            } else if self.export.is_some() {
                ui.spinner();
                ui.label("Exporting…");
            } else if let Some(line) = self.training.status_line() {
                ui.spinner();
                ui.label(line);
                if ui
                    .button("Stop training")
                    .on_hover_text("Cancel the running recovery or distillation; nothing is kept")
                    .clicked()
                {
                    commands.push(Command::CancelTraining);
                }
            } else if let Some(loaded) = self.loaded() {
                let t = loaded.model.totals();
                ui.label(format!(
                    "{} · {} tensors · {} parameters · {}",
                    loaded.model.format.name(),
                    t.tensors,
                    group_digits(t.params),
                    human_bytes(t.size_bytes)
                ));
            } else {
                ui.label("No model open");
            }
            if self.settings.show_frame_times
                && let Some((p50, p99, n)) = self.frame_times.percentiles()
            {
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    ui.label(format!(
                        "frame CPU time p50 {p50:.1} ms · p99 {p99:.1} ms ({n} frames)"
                    ))
                    .on_hover_text("The UI thread's time per frame; heavy work runs on workers");
                });
            }
        });
    }
}

fn error_ui(ui: &mut egui::Ui, error: &str, commands: &mut Vec<Command>) {
    egui::Frame::group(ui.style())
        .fill(ui.visuals().extreme_bg_color)
        .stroke(egui::Stroke::new(1.5, ui.visuals().error_fg_color))
        .show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, error);
                if ui
                    .button("Dismiss")
                    .on_hover_text("Hide this message (nothing else changes)")
                    .clicked()
                {
                    commands.push(Command::DismissError);
                }
            });
        });
    ui.add_space(8.0);
}

fn notice_ui(ui: &mut egui::Ui, notice: &str, commands: &mut Vec<Command>) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.label(notice);
            if ui
                .button("Dismiss")
                .on_hover_text("Hide this message")
                .clicked()
            {
                commands.push(Command::DismissError);
            }
        });
    });
    ui.add_space(8.0);
}

fn empty_state_ui(ui: &mut egui::Ui, loading: bool) {
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() * 0.3);
        if loading {
            ui.heading("Opening…");
        } else {
            ui.heading("Drop a model file here");
            ui.label("safetensors · GGUF · PyTorch .pth · NumPy .npz/.npy · ONNX");
            let keys = shortcuts::keys_of(ui.ctx(), &Command::OpenDialog);
            ui.label(format!(
                "or use File > Open… ({keys}), or pass a path: slimscope MODEL"
            ));
        }
    });
}

/// What a dropped file is for: with a model open, data sets and architecture specs
/// attach to it; anything else opens as a model.
fn classify_drop(path: PathBuf, model_open: bool) -> Command {
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

/// A file's name for messages.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// eframe glue: restore settings, poll jobs in `logic`, draw in `ui`, save settings.
struct EframeApp(SlimApp);

impl eframe::App for EframeApp {
    fn logic(&mut self, _ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.0.poll();
    }
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        if let Some(seconds) = frame.info().cpu_usage {
            self.0.frame_times.push(seconds);
        }
        self.0.ui(ui);
    }
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.0.settings);
    }
}

/// Open the window (blocking until it closes), optionally opening `model` at once.
pub fn run(model: Option<PathBuf>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("slimscope")
            .with_inner_size([1400.0, 860.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "slimscope",
        options,
        Box::new(move |cc| {
            let settings: Settings = cc
                .storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default();
            let mut app = SlimApp::new(settings);
            app.ctx = Some(cc.egui_ctx.clone());
            // With no model named, open on the bundled demo.
            app.apply(model.map_or(Command::OpenDemo, Command::OpenModel));
            Ok(Box::new(EframeApp(app)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_time_percentiles_are_nearest_rank() {
        let mut f = super::FrameTimes::default();
        assert_eq!(f.percentiles(), None);
        for ms in (1..=100).rev() {
            f.push(ms as f32 / 1e3);
        }
        let (p50, p99, n) = f.percentiles().expect("frames");
        // Sorted 1..=100 ms: index round(99·0.5) = 50 → 51 ms; round(99·0.99) = 98 → 99 ms.
        assert!((p50 - 51.0).abs() < 1e-3 && (p99 - 99.0).abs() < 1e-3 && n == 100);
    }
}
