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
mod help;
mod histogram;
pub mod history;
mod layers;
mod snapshot;
mod summary;
pub mod training;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compress::apply::{TensorCache, apply_recipe};
use crate::inspect::{TensorReport, inspect_model};
use crate::jobs::{JobEvent, JobHandle, spawn_job};
use crate::model::Model;
use crate::stats::{DEFAULT_BINS, Histogram, HistogramRange, StatsOptions};
pub(crate) use crate::units::{group_digits, human_bytes};

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
    done: usize,
    total: usize,
}

/// A histogram being computed for a (tensor, bins, range) not computed at load time.
struct HistogramJob {
    key: HistogramKey,
    job: JobHandle<Histogram>,
}

type HistogramKey = (usize, usize, HistogramRange);

/// What an evaluation is computed for: the model opened (its generation: reopening
/// the same file is a new one), configuration, histogram bins, data version.
type EvalKey = (u64, compress::Config, usize, u64);

/// A compression evaluation running for its key.
struct Evaluating {
    key: EvalKey,
    job: JobHandle<compress::Evaluation>,
}

/// A data set being attached: loading, then the baseline evaluation.
struct Attaching {
    job: JobHandle<accuracy::Attached>,
    done: usize,
    total: usize,
}

/// The whole app state.
pub struct SlimApp {
    pub settings: Settings,
    pub loaded: Option<LoadedModel>,
    pub selected: Option<usize>,
    /// The last error, shown until dismissed; names the file.
    pub error: Option<String>,
    pub table: layers::TableState,
    loading: Option<Loading>,
    dialog: Option<JobHandle<Option<PathBuf>>>,
    histograms: HashMap<HistogramKey, Histogram>,
    histogram_job: Option<HistogramJob>,
    /// What the compression controls are set to.
    pub config: compress::Config,
    /// The latest finished evaluation (possibly of an older configuration while a
    /// newer one is computed).
    pub evaluation: Option<Arc<compress::Evaluation>>,
    evaluating: Option<Evaluating>,
    /// The settings whose evaluation failed (not retried until they change).
    evaluation_failed: Option<EvalKey>,
    /// Counts the models shown, so keys of one never match another's.
    model_generation: u64,
    export_dialog: Option<JobHandle<Option<PathBuf>>>,
    export: Option<JobHandle<String>>,
    /// The last success message (an export), shown until dismissed.
    pub notice: Option<String>,
    /// The data set attached to the open model, with its baseline.
    pub attached: Option<accuracy::Attached>,
    attaching: Option<Attaching>,
    /// Data (and architecture) to attach once the model being opened has loaded.
    pending_attach: Option<(PathBuf, Option<PathBuf>)>,
    data_dialog: Option<JobHandle<Option<PathBuf>>>,
    data_version: u64,
    ctx: Option<egui::Context>,
    /// Sweeps of the open model and their points.
    pub curves: Option<curves::Curves>,
    /// What the central area shows.
    pub tab: Tab,
    /// Compressed tensors of the open model, shared by the sliders and the sweeps.
    tensor_cache: Arc<TensorCache>,
    /// Recovery fine-tuning and distillation of the open model.
    pub training: training::Training,
    /// A file dialog whose answer becomes a command (student spec, save targets).
    answer_dialog: Option<JobHandle<Option<Command>>>,
    /// A training result, results file or image being written.
    saving: Option<JobHandle<String>>,
    /// Plots to save once the window's screenshot arrives (with the scale it was
    /// taken at).
    pending_shot: Option<(
        snapshot::PngRequest,
        crossbeam_channel::Receiver<Arc<egui::ColorImage>>,
        f32,
    )>,
    /// Undo and redo of `config`.
    pub history: history::History,
    /// Whether the keyboard shortcuts window is open.
    pub show_help: bool,
    /// Pinned configurations, compared side by side.
    pub compare: compare::Compare,
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
            loaded: None,
            selected: None,
            error: None,
            table: layers::TableState::default(),
            loading: None,
            dialog: None,
            histograms: HashMap::new(),
            histogram_job: None,
            config: compress::Config::default(),
            evaluation: None,
            evaluating: None,
            evaluation_failed: None,
            model_generation: 0,
            export_dialog: None,
            export: None,
            notice: None,
            attached: None,
            attaching: None,
            pending_attach: None,
            data_dialog: None,
            data_version: 0,
            ctx: None,
            // Sweeps compute on a pool of their own: one per core, two jobs at a time.
            curves: crate::jobs::Pool::background(2, 0)
                .ok()
                .map(|p| curves::Curves::new(Arc::new(p))),
            tab: Tab::Histogram,
            tensor_cache: Arc::new(TensorCache::new(TENSOR_CACHE_BYTES)),
            training: training::Training::default(),
            answer_dialog: None,
            saving: None,
            pending_shot: None,
            history: history::History::default(),
            show_help: false,
            compare: compare::Compare::default(),
            frame_times: FrameTimes::default(),
        }
    }

    /// Whether a data set is being attached (loaded and evaluated).
    pub fn is_attaching(&self) -> bool {
        self.attaching.is_some() || self.pending_attach.is_some()
    }

    /// The key the current settings ask an evaluation for.
    fn eval_key(&self) -> EvalKey {
        (
            self.model_generation,
            self.config.clone(),
            self.settings.bins,
            self.attached.as_ref().map_or(0, |a| a.version),
        )
    }

    /// Attach `data` (and `arch`) to the open model on a worker.
    fn attach(&mut self, data: PathBuf, arch: Option<PathBuf>) {
        let Some(model) = self.loaded.as_ref().map(|l| l.model.clone()) else {
            self.pending_attach = Some((data, arch));
            return;
        };
        // Keep an explicitly given architecture when only the data changes.
        let arch = arch.or_else(|| self.attached.as_ref().and_then(|a| a.arch_path.clone()));
        self.data_version += 1;
        let version = self.data_version;
        let job = spawn_job("attach-data", self.notifier(), move |progress| {
            accuracy::attach(&model, &data, arch.as_deref(), version, progress)
        });
        self.attaching = Some(Attaching {
            job,
            done: 0,
            total: 0,
        });
    }

    /// Whether the evaluation on screen is of the current configuration.
    pub fn evaluation_is_current(&self) -> bool {
        // With data attached, an evaluation counts only with accuracy on that data (a
        // configuration restored before the data arrived is measured again).
        let data = self.attached.as_ref().map(|a| a.version);
        self.config.is_identity() && self.evaluation.is_none()
            || self.evaluation.as_ref().is_some_and(|e| {
                e.config == self.config
                    && e.bins == self.settings.bins
                    && e.accuracy.map(|(v, _)| v) == data
            })
    }

    /// Whether an export is being written.
    pub fn is_exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Start evaluating the current configuration unless it is on screen or running.
    /// At most one evaluation runs: a stale one is cancelled and the current
    /// configuration starts when it has ended (latest wins).
    fn schedule_evaluation(&mut self) {
        let Some(loaded) = &self.loaded else {
            return;
        };
        let key = self.eval_key();
        if self.evaluation_failed.as_ref() == Some(&key) {
            return;
        }
        if let Some(running) = &self.evaluating {
            if running.key != key {
                running.job.cancel();
            }
            return;
        }
        if self.config.is_identity() {
            self.evaluation = None;
            return;
        }
        if self.evaluation_is_current() {
            return;
        }
        let model = loaded.model.clone();
        let reports = loaded.reports.clone();
        let (_, config, bins, version) = key.clone();
        let evaluator = self.attached.as_ref().map(|a| a.evaluator.clone());
        let cache = self.tensor_cache.clone();
        let job = spawn_job("compress", self.notifier(), move |progress| {
            let accuracy = evaluator.as_deref().map(|e| (version, e));
            compress::evaluate(&model, &reports, &config, bins, &cache, accuracy, || {
                progress.is_cancelled()
            })
        });
        self.evaluating = Some(Evaluating { key, job });
    }

    /// Export on a worker: the recipe (with the model's name and sha256) and the model.
    fn export(&mut self, out: PathBuf) {
        let Some(loaded) = &self.loaded else {
            return;
        };
        if self.export.is_some() {
            return;
        }
        let model = loaded.model.clone();
        let config = self.config.clone();
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
        if let Some(dialog) = &self.answer_dialog
            && let Some(event) = dialog.try_end()
        {
            self.answer_dialog = None;
            if let JobEvent::Finished(Some(command)) = event {
                self.apply(command);
            }
        }
        if let Some(saving) = &self.saving
            && let Some(event) = saving.try_end()
        {
            self.saving = None;
            match event {
                JobEvent::Finished(message) => self.notice = Some(message),
                JobEvent::Failed(message) => self.error = Some(message),
                _ => {}
            }
        }
        if let Some(loading) = &mut self.loading {
            let mut finished = None;
            while let Ok(event) = loading.job.events.try_recv() {
                match event {
                    JobEvent::Progress { done, total, .. } => {
                        (loading.done, loading.total) = (done, total)
                    }
                    end if end.is_end() => finished = Some(end),
                    _ => {}
                }
            }
            if let Some(end) = finished {
                let path = loading.path.clone();
                self.loading = None;
                match end {
                    JobEvent::Finished(loaded) => self.show_model(loaded, &path),
                    JobEvent::Failed(message) => self.error = Some(message),
                    _ => {}
                }
            }
        }
        if let Some(dialog) = &self.dialog
            && let Some(event) = dialog.try_end()
        {
            self.dialog = None;
            if let JobEvent::Finished(Some(path)) = event {
                self.apply(Command::OpenModel(path));
            }
        }
        if let Some(running) = &self.evaluating
            && let Some(event) = running.job.try_end()
        {
            let key = running.key.clone();
            self.evaluating = None;
            match event {
                JobEvent::Finished(e) => self.evaluation = Some(Arc::new(e)),
                JobEvent::Failed(message) => {
                    self.error = Some(message);
                    // Not again for the same settings: the error stays on screen.
                    self.evaluation_failed = Some(key);
                }
                _ => {}
            }
        }
        if let Some(dialog) = &self.export_dialog
            && let Some(event) = dialog.try_end()
        {
            self.export_dialog = None;
            if let JobEvent::Finished(Some(path)) = event {
                self.apply(Command::Export(path));
            }
        }
        if let Some(export) = &self.export
            && let Some(event) = export.try_end()
        {
            self.export = None;
            match event {
                JobEvent::Finished(message) => self.notice = Some(message),
                JobEvent::Failed(message) => self.error = Some(message),
                _ => {}
            }
        }
        if let Some(attaching) = &mut self.attaching {
            let mut end = None;
            while let Ok(event) = attaching.job.events.try_recv() {
                match event {
                    JobEvent::Progress { done, total, .. } => {
                        (attaching.done, attaching.total) = (done, total)
                    }
                    other if other.is_end() => end = Some(other),
                    _ => {}
                }
            }
            if let Some(end) = end {
                self.attaching = None;
                match end {
                    JobEvent::Finished(a) => self.attached = Some(a),
                    JobEvent::Failed(message) => self.error = Some(message),
                    _ => {}
                }
            }
        }
        if let Some(dialog) = &self.data_dialog
            && let Some(event) = dialog.try_end()
        {
            self.data_dialog = None;
            if let JobEvent::Finished(Some(path)) = event {
                // A data set or an architecture spec, told apart as a drop is.
                self.apply(classify_drop(path, true));
            }
        }
        self.schedule_evaluation();
        if let Some(h) = &self.histogram_job
            && let Some(event) = h.job.try_end()
        {
            let key = h.key;
            self.histogram_job = None;
            match event {
                JobEvent::Finished(hist) => {
                    self.histograms.insert(key, hist);
                }
                JobEvent::Failed(message) => self.error = Some(message),
                _ => {}
            }
        }
    }

    fn show_model(&mut self, loaded: LoadedModel, path: &Path) {
        self.histograms.clear();
        self.histogram_job = None;
        // The first tensor shown: the first of the first layer (file order for most
        // formats, graph order for ONNX).
        let first_shown = loaded
            .model
            .layers
            .first()
            .and_then(|l| l.tensors.first().copied());
        self.selected = first_shown.or((!loaded.reports.is_empty()).then_some(0));
        self.table = layers::TableState::default();
        self.error = None;
        self.config = compress::Config::default();
        self.history.reset(&self.config);
        // The configuration last used with this model comes back (one undo away
        // from none).
        if let Some((_, config)) = self.settings.last_configs.iter().find(|(p, _)| p == path) {
            self.config = config.clone();
            self.history.observe(&self.config, false);
            self.notice = Some(format!(
                "Restored the configuration you last used with {} (Ctrl+Z for none).",
                file_name(path)
            ));
        }
        self.model_generation += 1;
        self.evaluation = None;
        self.evaluating = None;
        // A failure belonged to the model as it was opened before: measure afresh.
        self.evaluation_failed = None;
        self.attached = None;
        self.attaching = None;
        if let Some(c) = &mut self.curves {
            c.clear();
        }
        self.training.clear();
        self.compare.clear();
        self.tensor_cache = Arc::new(TensorCache::new(TENSOR_CACHE_BYTES));
        let recent = &mut self.settings.recent_files;
        recent.retain(|p| p != path);
        recent.insert(0, path.to_owned());
        recent.truncate(RECENT_FILES);
        let language_model = crate::eval::causal_lm::is_causal_lm(&loaded.model);
        let sentence_encoder = crate::eval::embeddings::is_sentence_encoder(&loaded.model);
        self.loaded = Some(loaded);
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
            Command::OpenDialog => {
                if self.dialog.is_none() {
                    self.dialog = Some(spawn_job("file-dialog", self.notifier(), |_| {
                        Ok(rfd::FileDialog::new()
                            .set_title("Open a model")
                            .add_filter(
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
                            )
                            .add_filter("all files", &["*"])
                            .pick_file())
                    }));
                }
            }
            Command::CancelLoading => self.loading = None,
            Command::SelectTensor(i) => self.selected = Some(i),
            Command::DismissError => {
                self.error = None;
                self.notice = None;
            }
            Command::ExportDialog => {
                if self.export_dialog.is_none()
                    && let Some(loaded) = &self.loaded
                {
                    let stem = loaded
                        .model
                        .path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let gguf = loaded.model.format == crate::model::Format::Gguf;
                    self.export_dialog =
                        Some(spawn_job("file-dialog", self.notifier(), move |_| {
                            let (name, first, second) = if gguf {
                                (
                                    format!("{stem}.slim.gguf"),
                                    ("GGUF", "gguf"),
                                    ("safetensors", "safetensors"),
                                )
                            } else {
                                (
                                    format!("{stem}.slim.safetensors"),
                                    ("safetensors", "safetensors"),
                                    ("GGUF", "gguf"),
                                )
                            };
                            Ok(rfd::FileDialog::new()
                                .set_title("Export the compressed model")
                                .set_file_name(name)
                                .add_filter(first.0, &[first.1])
                                .add_filter(second.0, &[second.1])
                                .save_file())
                        }));
                }
            }
            Command::Export(path) => self.export(path),
            Command::OpenDemo => match crate::demo::files() {
                Ok(d) => {
                    self.pending_attach = Some((d.data, Some(d.arch)));
                    self.open(d.model);
                }
                Err(e) => self.error = Some(format!("The bundled demo: {e}")),
            },
            Command::AttachData(path) => self.attach(path, None),
            Command::AttachArch(path) => match &self.attached {
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
            Command::SaveResults(path) => {
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
            Command::SavePlots(path) => match (
                self.curves.as_ref().and_then(|c| c.plots_rect),
                self.ctx.clone(),
            ) {
                (Some(rect), Some(ctx)) => {
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
                _ => self.error = Some("Open the Curves tab's plots to save them.".into()),
            },
            Command::Undo => {
                self.history.undo(&mut self.config);
            }
            Command::Redo => {
                self.history.redo(&mut self.config);
            }
            Command::ToggleHelp => self.show_help = !self.show_help,
            Command::ToggleFrameTimes => {
                self.settings.show_frame_times = !self.settings.show_frame_times;
            }
            Command::Pin => match &self.evaluation {
                Some(e) if self.evaluation_is_current() => {
                    self.compare.pin(e.clone());
                    self.tab = Tab::Compare;
                }
                _ => {
                    self.error = Some(
                        "Wait for the current configuration's figures before pinning it.".into(),
                    )
                }
            },
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
            Command::AttachDataDialog => {
                if self.data_dialog.is_none() {
                    self.data_dialog = Some(spawn_job("file-dialog", self.notifier(), |_| {
                        Ok(rfd::FileDialog::new()
                            .set_title("Attach a labelled data set or an architecture spec")
                            .add_filter("data", &["csv", "gz", "npz", "toml", "ubyte"])
                            .add_filter("all files", &["*"])
                            .pick_file())
                    }));
                }
            }
        }
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

    /// Show a file dialog off the UI thread; `answer` turns the chosen path into a
    /// command.
    fn answer_dialog(
        &mut self,
        title: &'static str,
        save_as: Option<String>,
        filters: &'static [(&'static str, &'static [&'static str])],
        answer: fn(PathBuf) -> Command,
    ) {
        if self.answer_dialog.is_some() {
            return;
        }
        self.answer_dialog = Some(spawn_job("file-dialog", self.notifier(), move |_| {
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
        match &self.attached {
            _ if self.loaded.is_none() => Some("Open a model first."),
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
            .loaded
            .as_ref()
            .and_then(|l| l.model.path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match action {
            A::Recover | A::Distill => {
                let (Some(model), Some(evaluator), Some(pool)) = (
                    self.loaded.as_ref().map(|l| l.model.clone()),
                    self.attached.as_ref().map(|a| a.evaluator.clone()),
                    self.curves.as_ref().map(|c| c.pool().clone()),
                ) else {
                    return;
                };
                let notify = self.notifier();
                if action == A::Recover {
                    let config = self.config.clone();
                    self.training
                        .start_recovery(&pool, model, config, evaluator, notify);
                } else {
                    let config = self.config.clone();
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
            done: 0,
            total: 0,
        });
    }

    /// The (tensor, bins, range) the current settings ask to see for tensor `index`.
    fn histogram_key(&self, index: usize) -> HistogramKey {
        let range = if self.settings.abs_values {
            HistogramRange::Abs
        } else {
            HistogramRange::Signed
        };
        (index, self.settings.bins, range)
    }

    /// The histogram for tensor `index` under the current settings, if computed.
    pub fn cached_histogram(&self, index: usize) -> Option<&Histogram> {
        let key = self.histogram_key(index);
        let at_load = self
            .loaded
            .as_ref()?
            .reports
            .get(index)?
            .stats
            .as_ref()?
            .histogram
            .as_ref();
        at_load
            .filter(|h| h.range == key.2 && h.counts.len() == key.1)
            .or_else(|| self.histograms.get(&key))
    }

    /// Whether the histogram for the selection, under the current settings, is at hand.
    pub fn has_histogram_for_selection(&self) -> bool {
        self.selected
            .is_some_and(|i| self.cached_histogram(i).is_some())
    }

    /// Start computing the histogram for tensor `index` in the background unless it is
    /// at hand or already being computed (a newer request replaces an older one).
    fn request_histogram(&mut self, index: usize) {
        let key = self.histogram_key(index);
        let has_stats = self
            .loaded
            .as_ref()
            .and_then(|l| l.reports.get(index)?.stats.as_ref())
            .is_some();
        if !has_stats
            || self.cached_histogram(index).is_some()
            || self.histogram_job.as_ref().map(|h| h.key) == Some(key)
        {
            return;
        }
        let Some(model) = self.loaded.as_ref().map(|l| l.model.clone()) else {
            return;
        };
        let options = StatsOptions {
            bins: key.1,
            range: key.2,
        };
        let job = spawn_job("histogram", self.notifier(), move |_| {
            let stats = model.tensor_stats(index, &options)?;
            stats
                .histogram
                .ok_or(crate::Error::InvalidSetting("no finite values".into()))
        });
        self.histogram_job = Some(HistogramJob { key, job });
    }

    /// Start a sweep of the open model (with the attached data, if any).
    pub fn start_sweep(&mut self, kind: curves::SweepKind) {
        let Some(model) = self.loaded.as_ref().map(|l| l.model.clone()) else {
            return;
        };
        let points = kind.points(&model);
        self.start_points(kind, points, model);
    }

    /// Measure the allocations of `target` average sparsity over the layers, by the
    /// sensitivity ranking of the per-layer points so far (latest wins).
    pub fn start_allocation(&mut self, target: f64) {
        let (Some(model), Some(c)) = (self.loaded.as_ref().map(|l| l.model.clone()), &self.curves)
        else {
            return;
        };
        let baseline = self.attached.as_ref().map(|a| a.baseline.quality());
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
            .attached
            .as_ref()
            .filter(|_| kind != curves::SweepKind::Heatmap)
            .map(|a| a.evaluator.clone());
        let notify = self.notifier();
        if let Some(c) = &mut self.curves {
            c.start(
                kind,
                points,
                model,
                self.tensor_cache.clone(),
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
        let mut commands = shortcuts(ui.ctx());
        let dropped: Vec<PathBuf> = ui.ctx().input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        let model_open = self.loaded.is_some();
        commands.extend(
            dropped
                .into_iter()
                .take(1)
                .map(|p| classify_drop(p, model_open)),
        );

        egui::Panel::top("menu").show(ui, |ui| self.top_bar_ui(ui, &mut commands));
        egui::Panel::bottom("status").show(ui, |ui| self.status_ui(ui, &mut commands));
        if self.loaded.is_some() {
            let busy = self.evaluating.is_some();
            let selected_name = self
                .selected
                .and_then(|i| self.loaded.as_ref()?.model.tensors.get(i))
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
                                &mut self.config,
                                selected_name.as_deref(),
                                self.evaluation.as_deref(),
                                busy,
                            );
                            let can_pin = self.evaluation.is_some()
                                && self.evaluation_is_current()
                                && self.evaluating.is_none();
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
                                self.attached.as_ref(),
                                self.attaching.as_ref().map(|a| (a.done, a.total)),
                                self.evaluation.as_deref(),
                                busy,
                                &mut commands,
                            );
                            ui.separator();
                            summary::ui(ui, self.loaded.as_ref());
                        });
                });
            // The table scrolls sideways: leave the histogram room on small screens.
            let table_width = layers::width().min(0.42 * ui.available_width());
            egui::Panel::left("layers")
                .default_size(table_width)
                .show(ui, |ui| {
                    if let Some(loaded) = &self.loaded {
                        commands.extend(self.table.ui(
                            ui,
                            loaded,
                            self.selected,
                            self.evaluation.as_deref(),
                            &self.config,
                        ));
                    }
                });
        }
        egui::CentralPanel::default().show(ui, |ui| {
            if let Some(error) = self.error.clone() {
                error_ui(ui, &error, &mut commands);
            } else if let Some(notice) = self.notice.clone() {
                notice_ui(ui, &notice, &mut commands);
            }
            if self.loaded.is_some() && !self.settings.hint_dismissed {
                help::hint_ui(ui, &mut commands);
            }
            if self.loaded.is_some() {
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
            }
            match (self.selected, self.loaded.is_some()) {
                (_, true) if self.tab == Tab::Compare => {
                    let mut actions = Vec::new();
                    let current = self.evaluation.clone().filter(|_| self.evaluation_is_current());
                    if let Some(loaded) = &self.loaded {
                        let names: Vec<&str> =
                            loaded.model.tensors.iter().map(|t| t.name.as_str()).collect();
                        compare::ui(ui, &mut self.compare, current.as_ref(), &names, &mut actions);
                    }
                    for a in actions {
                        match a {
                            compare::CompareAction::Use(config) => self.config = config,
                        }
                    }
                }
                (_, true) if self.tab == Tab::Training => {
                    let mut actions = Vec::new();
                    let blocker = self.training_blocker();
                    egui::ScrollArea::vertical().id_salt("training").show(ui, |ui| {
                        training::ui(ui, &mut self.training, &self.config, blocker, &mut actions);
                    });
                    for a in actions {
                        self.training_action(a);
                    }
                }
                (_, true) if self.tab == Tab::Curves => {
                    let mut actions = Vec::new();
                    let baseline = self.attached.as_ref().map(|a| a.baseline.quality());
                    let recovered = self.training.markers();
                    if let Some(c) = &mut self.curves {
                        egui::ScrollArea::vertical().id_salt("curves").show(ui, |ui| {
                            curves::ui(
                                ui,
                                c,
                                self.attached.is_some(),
                                self.evaluation.as_deref(),
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
                            curves::CurvesAction::Allocate(target) => {
                                self.start_allocation(target);
                            }
                            curves::CurvesAction::Use(config) => self.config = config,
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
                (Some(index), true) => {
                    self.request_histogram(index);
                    let hist = self.cached_histogram(index).cloned();
                    let waiting = self.histogram_job.is_some();
                    let overlay = self
                        .evaluation
                        .as_ref()
                        .and_then(|e| e.tensors.get(index)?.as_ref());
                    if let Some(loaded) = &self.loaded {
                        histogram::ui(
                            ui,
                            loaded,
                            index,
                            hist.as_ref(),
                            overlay,
                            waiting,
                            &mut self.settings,
                        );
                    }
                }
                _ => empty_state_ui(ui, self.loading.is_some()),
            }
        });
        if self.show_help {
            help::window(ui.ctx(), &mut self.show_help);
        }
        for c in commands {
            self.apply(c);
        }
        let busy = ui.ctx().input(|i| i.pointer.any_down()) || ui.ctx().egui_wants_keyboard_input();
        self.history.observe(&self.config, busy);
        if !busy {
            self.remember_config();
        }
        self.schedule_evaluation();
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
        let baseline = self.attached.as_ref().map(|a| a.baseline);
        let ranking = crate::sweep::analysis::sensitivity(
            &results,
            "layer magnitude",
            baseline.map(|b| b.quality()),
        );
        let report = crate::sweep::output::Report::new(
            self.loaded
                .as_ref()
                .map(|l| l.model.path.display().to_string())
                .unwrap_or_default(),
            self.attached
                .as_ref()
                .map(|a| a.data_path.display().to_string()),
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
        let Some(path) = self.loaded.as_ref().map(|l| l.model.path.clone()) else {
            return;
        };
        let saved = &mut self.settings.last_configs;
        if saved
            .first()
            .is_some_and(|(p, c)| *p == path && *c == self.config)
        {
            return;
        }
        saved.retain(|(p, _)| *p != path);
        if !self.config.is_identity() {
            saved.insert(0, (path, self.config.clone()));
            saved.truncate(REMEMBERED_CONFIGS);
        }
    }

    fn top_bar_ui(&self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui
                    .button("Open…")
                    .on_hover_text("Choose a model file (Ctrl+O)")
                    .clicked()
                {
                    commands.push(Command::OpenDialog);
                }
                if ui
                    .add_enabled(self.loaded.is_some(), egui::Button::new("Export…"))
                    .on_hover_text(
                        "Write the compressed model (.safetensors or .gguf) and its recipe (Ctrl+E)",
                    )
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
                    .add_enabled(self.history.can_undo(), egui::Button::new("Undo"))
                    .on_hover_text("Go back one configuration change (Ctrl+Z)")
                    .clicked()
                {
                    commands.push(Command::Undo);
                }
                if ui
                    .add_enabled(self.history.can_redo(), egui::Button::new("Redo"))
                    .on_hover_text("Go forward again (Ctrl+Shift+Z or Ctrl+Y)")
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
                    .on_hover_text("F1")
                    .clicked()
                {
                    commands.push(Command::ToggleHelp);
                }
            });
            if ui.input(|i| i.modifiers.command && i.key_pressed(egui::Key::O)) {
                commands.push(Command::OpenDialog);
            }
            if self.loaded.is_some()
                && ui.input(|i| i.modifiers.command && i.key_pressed(egui::Key::E))
            {
                commands.push(Command::ExportDialog);
            }
            if let Some(loaded) = &self.loaded {
                ui.separator();
                ui.label(egui::RichText::new(loaded.model.path.display().to_string()).strong());
            }
        });
    }

    fn status_ui(&self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        ui.horizontal(|ui| {
            if let Some(loading) = &self.loading {
                let name = file_name(&loading.path);
                let fraction = if loading.total == 0 {
                    0.0
                } else {
                    loading.done as f32 / loading.total as f32
                };
                ui.spinner();
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(260.0)
                        .text(format!(
                            "Opening {name}: {}/{} tensors",
                            loading.done, loading.total
                        )),
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
            } else if let Some(loaded) = &self.loaded {
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
            ui.label("or use File > Open… (Ctrl+O), or pass a path: slimscope MODEL");
        }
    });
}

/// The app-wide keyboard shortcuts (not while a text field takes the keys: there
/// Ctrl+Z undoes typing).
fn shortcuts(ctx: &egui::Context) -> Vec<Command> {
    use egui::{Key, Modifiers};
    let mut commands = Vec::new();
    if ctx.input(|i| i.key_pressed(Key::F1)) {
        commands.push(Command::ToggleHelp);
    }
    if ctx.egui_wants_keyboard_input() {
        return commands;
    }
    ctx.input_mut(|i| {
        if i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
            || i.consume_key(Modifiers::COMMAND, Key::Y)
        {
            commands.push(Command::Redo);
        } else if i.consume_key(Modifiers::COMMAND, Key::Z) {
            commands.push(Command::Undo);
        }
    });
    commands
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
