//! The getting-started hint.

use crate::app::Command;

/// What to try first, until dismissed.
pub struct Hint;

impl super::Panel for Hint {
    fn ui(self, ui: &mut egui::Ui, commands: &mut Vec<Command>) {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.strong("Getting started:");
                ui.label(
                    "drag the Sparsity slider on the right and watch size and accuracy change · \
                     Curves, then Run: Layer sensitivity, shows which layers can take it · \
                     Training wins accuracy back · drop your own model (safetensors, GGUF, \
                     .pth, .npz, ONNX) on this window · F1 lists the shortcuts.",
                );
                if ui
                    .button("Got it")
                    .on_hover_text("Hide this hint (it stays hidden after a restart)")
                    .clicked()
                {
                    commands.push(Command::DismissHint);
                }
            });
        });
        ui.add_space(6.0);
    }
}
