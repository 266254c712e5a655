//! The keyboard shortcuts window (F1) and the getting-started hint.

use super::Command;

/// Every shortcut the app has, as the help window lists them.
pub const SHORTCUTS: [(&str, &str); 7] = [
    ("Ctrl+O", "Open a model"),
    ("Ctrl+E", "Export the compressed model and its recipe"),
    ("Ctrl+Z", "Undo the last configuration change"),
    ("Ctrl+Shift+Z, Ctrl+Y", "Redo"),
    ("F1", "Show or hide these shortcuts"),
    (
        "Drop a file",
        "A model opens; a data set or architecture spec attaches to it",
    ),
    ("Double-click a plot", "Reset its zoom"),
];

/// The shortcuts window; `open` turns false when it is closed.
pub fn window(ctx: &egui::Context, open: &mut bool) {
    egui::Window::new("Keyboard shortcuts")
        .open(open)
        .collapsible(false)
        .resizable(false)
        .show(ctx, |ui| {
            egui::Grid::new("shortcuts")
                .num_columns(2)
                .striped(true)
                .show(ui, |ui| {
                    for (keys, what) in SHORTCUTS {
                        ui.strong(keys);
                        ui.label(what);
                        ui.end_row();
                    }
                });
        });
}

/// What to try first, until dismissed.
pub fn hint_ui(ui: &mut egui::Ui, commands: &mut Vec<Command>) {
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
