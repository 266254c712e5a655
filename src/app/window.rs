//! The window's frame: the menu bar, the status bar, error and notice lines and the
//! empty state.

use super::{Command, SlimApp, Theme, file_name, group_digits, human_bytes, shortcuts};

pub(super) fn error_ui(ui: &mut egui::Ui, error: &str, commands: &mut Vec<Command>) {
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

pub(super) fn notice_ui(ui: &mut egui::Ui, notice: &str, commands: &mut Vec<Command>) {
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

pub(super) fn empty_state_ui(ui: &mut egui::Ui, loading: bool) {
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

impl SlimApp {
    pub(super) fn top_bar_ui(&self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
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

    pub(super) fn status_ui(&self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        ui.horizontal(|ui| {
            if let Some(loading) = &self.background.loading {
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
            } else if self.background.export.is_some() {
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
