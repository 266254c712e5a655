//! The desktop app: a thin egui layer over the library, made of parts.
//!
//! - [`Settings`] persist across restarts (eframe storage, `settings.rs`).
//! - A [`Document`] holds the open model and everything that belongs to it (the
//!   configuration, its evaluation, attached data, histograms, pins); opening another
//!   model replaces it whole.
//! - [`panels`] (one file each, one [`panels::Panel`] signature; `layout.rs` places
//!   them, `window.rs` draws the bars) edit only what they are lent and return
//!   [`Command`]s; [`SlimApp::apply`] (`command.rs`) carries them out at the end of
//!   the frame. Keyboard shortcuts are one table (`shortcuts.rs`).
//! - Heavy work — opening, statistics, evaluation, sweeps, training, file dialogs —
//!   runs as [`crate::jobs`] on worker threads; [`SlimApp::poll`] takes in what they
//!   finished without blocking, every frame: the document's, the curves', training's
//!   and the app's own (`background.rs`, one poll returning what ended).

mod background;
mod command;
mod document;
mod frame_times;
pub mod history;
mod layout;
pub mod panels;
mod prompt;
mod settings;
mod shortcuts;
mod snapshot;
mod speeds;
mod sweeps;
mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compress::apply::apply_recipe_cached;
use crate::compress::config::Config;
use crate::inspect::{TensorReport, inspect_model};
use crate::jobs::spawn_job;
use crate::measure::evaluation::Evaluation;
use crate::model::Model;
use crate::stats::{Histogram, HistogramRange, StatsOptions};
pub(crate) use crate::units::{group_digits, human_bytes};
use background::{Background, Ended, Loading};
pub use command::Command;
use command::classify_drop;
pub use document::Document;
pub use frame_times::FrameTimes;
use panels::{accuracy, curves, training};
use settings::{RECENT_FILES, REMEMBERED_CONFIGS};
pub use settings::{Settings, Theme};

/// A model with every tensor's statistics, as the loading job produces it.
pub struct LoadedModel {
    pub model: Arc<Model>,
    pub reports: Vec<TensorReport>,
}

/// What the controls show with no model open: nothing compressed.
static NO_CONFIG: Config = Config::NONE;

/// The whole app state.
pub struct SlimApp {
    settings: Settings,
    /// The open model and everything that belongs to it.
    doc: Option<Document>,
    /// The last error, shown until dismissed; names the file.
    error: Option<String>,
    /// The last success message (an export), shown until dismissed.
    notice: Option<String>,
    /// Opening, the file dialog, exporting, saving, the screenshot awaited.
    background: Background,
    /// Data (and architecture) to attach once the model being opened has loaded.
    pending_attach: Option<(PathBuf, Option<PathBuf>)>,
    ctx: Option<egui::Context>,
    /// Sweeps of the open model and their points.
    curves: Option<curves::Curves>,
    /// What the central area shows.
    tab: Tab,
    /// Recovery fine-tuning and distillation of the open model.
    training: training::Training,
    /// Whether the keyboard shortcuts window is open.
    show_help: bool,
    /// CPU time of recent frames (eframe reports them).
    frame_times: FrameTimes,
    /// The `slimscope` program that serves exports for speed measurements (this
    /// one, unless a test names the binary).
    serving_program: Option<PathBuf>,
    /// The path window beside a file dialog (see `prompt.rs`).
    prompt: Option<prompt::PathPrompt>,
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
            background: Background::default(),
            pending_attach: None,
            ctx: None,
            // Sweeps compute on a pool of their own: one per core, two jobs at a time.
            curves: crate::jobs::Pool::background(2, 0)
                .ok()
                .map(|p| curves::Curves::new(Arc::new(p))),
            tab: Tab::Histogram,
            training: training::Training::default(),
            show_help: false,
            frame_times: FrameTimes::default(),
            serving_program: crate::bench::variants::this_program().ok(),
            prompt: None,
        }
    }

    /// The title of the path window on screen, if one is.
    pub fn prompt_title(&self) -> Option<&str> {
        self.prompt.as_ref().map(|p| p.title)
    }

    /// What the path window's command line names besides the output.
    fn export_help(&self) -> Option<prompt::ExportHelp> {
        let doc = self.doc.as_ref()?;
        Some(prompt::ExportHelp {
            model: doc.loaded.model.path.clone(),
            arch: doc.attached.as_ref().and_then(|a| a.arch_path.clone()),
            data: doc.attached.as_ref().map(|a| a.data_path.clone()),
        })
    }

    /// Serve exports for speed measurements with `program` (a `slimscope` binary).
    pub fn set_serving_program(&mut self, program: PathBuf) {
        self.serving_program = Some(program);
    }

    /// Whether exports' speed is being measured.
    pub fn is_measuring_speed(&self) -> bool {
        self.doc
            .as_ref()
            .is_some_and(|d| d.speeds.measuring().is_some())
    }

    /// Measure the speed of `configs`' exports (and the original's) in the runtime
    /// that would serve them, each in a fresh process, the sweep pool paused.
    fn measure_speed(&mut self, configs: Vec<Config>) {
        let notify = self.notifier();
        let Some(doc) = &mut self.doc else {
            return;
        };
        let Some(program) = self.serving_program.clone() else {
            self.error =
                Some("Cannot find the slimscope program to serve the exports with.".into());
            return;
        };
        let inputs = speeds::SpeedInputs {
            model: doc.loaded.model.clone(),
            evaluator: doc.attached.as_ref().map(|a| a.evaluator.clone()),
            data_path: doc.attached.as_ref().map(|a| a.data_path.clone()),
            program,
            paused: self.curves.as_ref().map(|c| c.pool().pause()),
        };
        doc.speeds.start(configs, inputs, notify);
    }

    /// What persists across restarts.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The error on screen (until dismissed), naming the file.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The success message on screen (an export, a restored configuration).
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The sweeps of the open model (none if no worker threads could start).
    pub fn curves(&self) -> Option<&curves::Curves> {
        self.curves.as_ref()
    }

    /// Recovery and distillation of the open model.
    pub fn training(&self) -> &training::Training {
        &self.training
    }

    /// The training tab's settings and results, to change.
    pub fn training_mut(&mut self) -> &mut training::Training {
        &mut self.training
    }

    /// The tab the central area shows.
    pub fn tab(&self) -> Tab {
        self.tab
    }

    /// Whether the keyboard shortcuts window is open.
    pub fn show_help(&self) -> bool {
        self.show_help
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
    pub fn evaluation(&self) -> Option<&Arc<Evaluation>> {
        self.doc.as_ref()?.evaluation.as_ref()
    }

    /// What the compression controls are set to (nothing compressed with no model).
    pub fn config(&self) -> &Config {
        self.doc.as_ref().map_or(&NO_CONFIG, |d| &d.config)
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
        self.background.export.is_some()
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
        if self.background.export.is_some() {
            return;
        }
        let model = doc.loaded.model.clone();
        let config = doc.config.clone();
        let evaluator = doc.attached.as_ref().map(|a| a.evaluator.clone());
        self.background.export = Some(spawn_job("export", self.notifier(), move |_| {
            let format = crate::export::OutputFormat::of(&out)?;
            crate::export::check_output(&model, &out, true)?;
            if format != crate::export::OutputFormat::Onnx && config.activations.is_some() {
                return Err(crate::Error::InvalidSetting(format!(
                    "{}: the configuration quantizes activations, which only an .onnx export \
                     carries: export as .onnx, or set the activations to float",
                    out.display()
                )));
            }
            let sha = crate::checksum::sha256_file(&model.path)?;
            let text = config.recipe_text(Some((&file_name(&model.path), Some(&sha))));
            let recipe_path = out.with_extension("recipe.toml");
            let recipe = config.to_recipe(&recipe_path)?;
            // Data-aware methods learn from the samples the measurement kept apart.
            let stats = match (recipe.statistics_request(&model)?, evaluator.as_deref()) {
                (Some(need), Some(e)) => Some(e.keeping_apart(recipe.kept_apart())?.statistics(
                    &model,
                    need,
                    |_, _| true,
                )?),
                _ => None,
            };
            let applied = apply_recipe_cached(&model, &recipe, None, stats.as_deref())?;
            let mut notes = Vec::new();
            if format == crate::export::OutputFormat::Onnx {
                let activations = recipe.activations.as_ref();
                notes = export_onnx(
                    &model,
                    evaluator.as_deref(),
                    &applied,
                    activations,
                    &text,
                    &out,
                )?;
            } else {
                crate::export::write_model(&model, &applied, &text, &out, true)?;
            }
            crate::export::write_text(&recipe_path, &text, true)?;
            let on_disk = std::fs::metadata(&out)
                .map_err(|e| crate::Error::io(&out, e))?
                .len();
            let mut message = format!(
                "Exported {} ({} on disk) and its recipe {}",
                out.display(),
                crate::units::human_bytes(on_disk),
                file_name(&recipe_path)
            );
            // What the export changed, briefly (the recipe beside it says the rest).
            for note in notes.iter().take(3) {
                message.push('\n');
                message.push_str(note);
            }
            if notes.len() > 3 {
                message.push_str(&format!("\n… and {} more notes", notes.len() - 3));
            }
            Ok(message)
        }));
    }

    /// Whether the open model can be exported as ONNX: an ONNX model, or any model
    /// whose network the attached data resolved (a given or proposed spec).
    pub fn can_export_onnx(&self) -> bool {
        self.doc.as_ref().is_some_and(|d| {
            d.loaded.model.format == crate::model::Format::Onnx
                || d.attached.as_ref().is_some_and(|a| {
                    matches!(a.evaluator.network(), crate::eval::Network::Sequential(_))
                })
        })
    }

    /// Whether a model is being opened right now.
    pub fn is_loading(&self) -> bool {
        self.background.loading.is_some()
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
        if let Some(error) = self.doc.as_mut().and_then(Document::poll) {
            self.error = Some(error);
        }
        // The document first: a model that finished loading replaces it below (its
        // last error with it). Then in order: a dialog's answer (attach this, export
        // there) comes after a finished load, so it is for the model then on screen.
        for ended in self.background.poll() {
            match ended {
                Ended::Loaded(path, loaded) => self.show_model(loaded, &path),
                Ended::Written(message) => self.notice = Some(message),
                Ended::Failed(error) => self.error = Some(error),
                Ended::Screenshot(request, image, pixels_per_point) => {
                    self.write_plots(request, image, pixels_per_point);
                }
                Ended::Answer(command) => {
                    // The dialog answered: its path replaces the window's.
                    self.prompt = None;
                    self.apply(command);
                }
                Ended::Copied(text) => {
                    if let Some(ctx) = &self.ctx {
                        ctx.copy_text(text);
                    }
                    self.notice = Some("Copied the recipe to the clipboard.".into());
                }
            }
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
        self.background.loading = Some(Loading {
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

    /// Cut the plots out of the screenshot that arrived, and write them (on a worker).
    fn write_plots(
        &mut self,
        request: snapshot::PngRequest,
        image: Arc<egui::ColorImage>,
        pixels_per_point: f32,
    ) {
        self.save_in_background(move || {
            let bytes = snapshot::crop_png(&image, request.rect, pixels_per_point)?;
            crate::export::write_bytes(&request.path, &bytes, true)?;
            Ok(format!("Saved the plots to {}", request.path.display()))
        });
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

/// The app's `.onnx` export: the network the attached data resolved (else an ONNX
/// model's own graph) as `slimscope apply -o X.onnx` writes it, structurally pruned
/// outputs removed, static activations calibrated on the samples the app's figures
/// leave out. Returns the export's notes.
fn export_onnx(
    model: &Model,
    evaluator: Option<&crate::eval::evaluator::Evaluator>,
    applied: &[(usize, crate::compress::apply::AppliedTensor)],
    activations: Option<&crate::compress::activations::ActivationSpec>,
    recipe: &str,
    out: &Path,
) -> crate::Result<Vec<String>> {
    let own;
    let network = match evaluator {
        Some(e) => e.network(),
        None => {
            own = crate::export::export_network(model, None, None)?;
            &own
        }
    };
    let metadata = crate::export::embedded(model, applied, recipe);
    let calibration = crate::export::calibration_set(activations, evaluator.map(|e| e.data()))?;
    let settings = crate::export::OnnxSettings {
        activations,
        calibration: calibration.as_ref(),
        metadata: &metadata,
        shrink: true,
    };
    Ok(crate::export::write_onnx(model, network, applied, &settings, out, true)?.notes)
}
