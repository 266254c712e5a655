//! How the window is laid out: the compression controls and figures on the right,
//! the tensor table on the left, messages and one of four tabs in the centre.

use std::path::PathBuf;

use super::panels::Panel;
use super::panels::accuracy::AccuracyPanel;
use super::panels::compare::ComparePanel;
use super::panels::compress::ControlsPanel;
use super::panels::curves::CurvesPanel;
use super::panels::hint::Hint;
use super::panels::histogram::HistogramPanel;
use super::panels::layers::{self, TablePanel};
use super::panels::summary::SummaryPanel;
use super::panels::training::TrainingPanel;
use super::window::{empty_state_ui, error_ui, notice_ui};
use super::{Command, NO_CONFIG, SlimApp, Tab, Theme, classify_drop, shortcuts};

impl SlimApp {
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
        if let Some(mut prompt) = self.prompt.take() {
            let help = self.export_help();
            if prompt.window(ui.ctx(), help.as_ref(), &mut commands) {
                self.prompt = Some(prompt);
            }
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
    pub(super) fn side_panels_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
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
                        let activations = doc.activation_support();
                        let already_quantized = doc.already_quantized();
                        ControlsPanel {
                            config: &mut doc.config,
                            selected: selected_name.as_deref(),
                            evaluation: doc.evaluation.as_deref(),
                            busy,
                            activations,
                            already_quantized,
                        }
                        .ui(ui, commands);
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
                        AccuracyPanel {
                            attached: doc.attached.as_ref(),
                            attaching: doc.attaching(),
                            evaluation: doc.evaluation.as_deref(),
                            evaluating: doc.evaluation_progress(),
                        }
                        .ui(ui, commands);
                        ui.separator();
                        SummaryPanel {
                            loaded: Some(&doc.loaded),
                        }
                        .ui(ui, commands);
                    });
            });
        // The table scrolls sideways: leave the histogram room on small screens.
        let table_width = layers::width().min(0.42 * ui.available_width());
        egui::Panel::left("layers")
            .default_size(table_width)
            .show(ui, |ui| {
                TablePanel {
                    table: &mut doc.table,
                    loaded: &doc.loaded,
                    selected: doc.selected,
                    evaluation: doc.evaluation.as_deref(),
                    config: &doc.config,
                }
                .ui(ui, commands);
            });
    }

    /// Messages, the tabs and the tab shown.
    pub(super) fn central_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        if let Some(error) = self.error.clone() {
            error_ui(ui, &error, commands);
        } else if let Some(notice) = self.notice.clone() {
            notice_ui(ui, &notice, commands);
        }
        if self.doc.is_none() {
            empty_state_ui(ui, self.is_loading());
            return;
        }
        if !self.settings.hint_dismissed {
            Hint.ui(ui, commands);
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
            Tab::Compare => self.compare_tab_ui(ui, commands),
            Tab::Training => self.training_tab_ui(ui, commands),
            Tab::Curves => self.curves_tab_ui(ui, commands),
            Tab::Histogram => self.histogram_tab_ui(ui, commands),
        }
    }

    pub(super) fn compare_tab_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let bins = self.settings.bins;
        let Some(doc) = &mut self.doc else {
            return;
        };
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
        ComparePanel {
            compare: &mut doc.compare,
            current: current.as_ref(),
            tensor_names: &names,
            speeds: &doc.speeds,
            original_quality: doc.attached.as_ref().map(|a| a.baseline.quality()),
        }
        .ui(ui, commands);
    }

    pub(super) fn training_tab_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let blocker = self.training_blocker();
        let config = self.doc.as_ref().map_or(&NO_CONFIG, |d| &d.config);
        // The evaluation of this very configuration, for what it effectively does.
        let evaluation = self
            .doc
            .as_ref()
            .and_then(|d| d.evaluation.as_deref())
            .filter(|e| e.config == *config);
        egui::ScrollArea::vertical()
            .id_salt("training")
            .show(ui, |ui| {
                TrainingPanel {
                    training: &mut self.training,
                    config,
                    evaluation,
                    can_train: blocker,
                }
                .ui(ui, commands);
            });
    }

    pub(super) fn curves_tab_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let baseline = self.attached().map(|a| a.baseline.quality());
        let has_data = self.attached().is_some();
        let evaluation = self.evaluation().cloned();
        let recovered = self.training.markers();
        if let Some(c) = &mut self.curves {
            egui::ScrollArea::vertical()
                .id_salt("curves")
                .show(ui, |ui| {
                    CurvesPanel {
                        curves: c,
                        can_measure: has_data,
                        current: evaluation.as_deref(),
                        baseline_top1: baseline,
                        recovered: &recovered,
                    }
                    .ui(ui, commands);
                });
        } else {
            ui.label("Sweeps are unavailable: no worker threads could be started.");
        }
    }

    pub(super) fn histogram_tab_ui(&mut self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        let Some(index) = self.doc.as_ref().and_then(|d| d.selected) else {
            empty_state_ui(ui, self.is_loading());
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
        HistogramPanel {
            loaded: &doc.loaded,
            index,
            hist: hist.as_ref(),
            compressed: overlay,
            computing: doc.is_computing_histogram(),
            settings: &mut self.settings,
        }
        .ui(ui, commands);
    }
}
