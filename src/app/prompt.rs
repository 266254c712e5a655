//! A path asked for in the window itself. Native file dialogs need a desktop portal
//! (none under remote desktops, minimal window managers or containers, where they
//! return nothing), so every dialog comes with this window: the path can be typed or
//! pasted, and the dialog's answer, where one opens, fills it. An export's window also
//! offers the recipe (copy, save) and the `slimscope apply` command line that writes
//! the same file.

use std::path::{Path, PathBuf};

use super::Command;

/// What the prompt's path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Export the compressed model (and its recipe beside it).
    Export,
    /// Anything else: the answer command takes the path.
    Other,
}

/// The path window on screen.
pub struct PathPrompt {
    pub title: &'static str,
    /// The path as typed.
    pub path: String,
    pub answer: fn(PathBuf) -> Command,
    pub purpose: Purpose,
    /// The button's word ("Open", "Export", "Save").
    pub action: &'static str,
    /// The dialog's filters: (name, extensions); an export offers them as formats.
    pub filters: &'static [(&'static str, &'static [&'static str])],
}

/// What the export window's command line names besides the output.
pub struct ExportHelp {
    pub model: PathBuf,
    pub arch: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

/// A word for the shell: single-quoted unless plainly safe.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The recipe file an export writes beside `out` (`NAME.recipe.toml`).
pub fn recipe_path(out: &Path) -> PathBuf {
    out.with_extension("recipe.toml")
}

/// The `slimscope apply` command line that writes what exporting to `out` writes,
/// from the recipe saved beside it.
pub fn apply_command(help: &ExportHelp, out: &Path) -> String {
    let path = |p: &Path| shell_word(&p.display().to_string());
    let mut words = vec![
        "slimscope apply".to_owned(),
        path(&help.model),
        "--recipe".into(),
        path(&recipe_path(out)),
        "-o".into(),
        path(out),
    ];
    let onnx = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if onnx {
        if let Some(a) = &help.arch {
            words.extend(["--arch".into(), path(a)]);
        }
        if let Some(d) = &help.data {
            words.extend(["--data".into(), path(d)]);
        }
    }
    words.join(" ")
}

impl PathPrompt {
    /// An export's formats: choosing one gives the path its extension.
    fn format_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("Format");
            let path = PathBuf::from(self.path.trim());
            let current = path.extension().map(|e| e.to_string_lossy().to_lowercase());
            for (name, extensions) in self.filters {
                let Some(&ext) = extensions.first() else {
                    continue;
                };
                let chosen = current.as_deref() == Some(ext);
                if ui.selectable_label(chosen, *name).clicked() && !chosen {
                    self.path = path.with_extension(ext).display().to_string();
                }
            }
        });
    }

    /// Draw the window; returns the commands it asks for and whether it stays open.
    pub fn window(
        &mut self,
        ctx: &egui::Context,
        help: Option<&ExportHelp>,
        commands: &mut Vec<Command>,
    ) -> bool {
        let mut open = true;
        let mut done = false;
        egui::Window::new(self.title)
            .collapsible(false)
            .resizable(false)
            .default_width(520.0)
            .show(ctx, |ui| {
                ui.label(
                    "Type or paste the path here (the file dialog opens too where the desktop \
                     provides one, and fills it in).",
                );
                let field = ui
                    .horizontal(|ui| {
                        let label = ui.label("Path");
                        ui.add(
                            egui::TextEdit::singleline(&mut self.path)
                                .desired_width(f32::INFINITY)
                                .hint_text("/path/to/file"),
                        )
                        .labelled_by(label.id)
                    })
                    .inner;
                let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if self.purpose == Purpose::Export {
                    self.format_ui(ui);
                }
                let path = PathBuf::from(self.path.trim());
                ui.horizontal(|ui| {
                    let ready = !self.path.trim().is_empty();
                    if ui
                        .add_enabled(ready, egui::Button::new(self.action))
                        .clicked()
                        || (entered && ready)
                    {
                        commands.push((self.answer)(path.clone()));
                        done = true;
                    }
                    if ui.button("Cancel").clicked() {
                        done = true;
                    }
                });
                if let (Purpose::Export, Some(help)) = (self.purpose, help) {
                    ui.separator();
                    ui.horizontal(|ui| {
                        ui.label("Recipe");
                        if ui
                            .button("Copy recipe")
                            .on_hover_text(
                                "The recipe TOML (with the model's sha256), to paste into a file",
                            )
                            .clicked()
                        {
                            commands.push(Command::CopyRecipe);
                        }
                        if ui
                            .add_enabled(
                                !self.path.trim().is_empty(),
                                egui::Button::new("Save recipe"),
                            )
                            .on_hover_text(format!(
                                "Write only the recipe, to {}",
                                recipe_path(&path).display()
                            ))
                            .clicked()
                        {
                            commands.push(Command::SaveRecipe(recipe_path(&path)));
                        }
                    });
                    let command = apply_command(help, &path);
                    ui.label("The same export from a shell (after saving the recipe):");
                    ui.horizontal(|ui| {
                        ui.add(egui::Label::new(egui::RichText::new(&command).monospace()).wrap());
                        if ui
                            .button("Copy")
                            .on_hover_text("Copy the command line")
                            .clicked()
                        {
                            ui.ctx().copy_text(command.clone());
                        }
                    });
                }
            });
        if ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            open = false;
        }
        open && !done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_where_needed() {
        assert_eq!(shell_word("/tmp/a.onnx"), "/tmp/a.onnx");
        assert_eq!(shell_word("/tmp/my model.pth"), "'/tmp/my model.pth'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        let help = ExportHelp {
            model: "/m/net.pth".into(),
            arch: Some("/m/net.toml".into()),
            data: Some("/m/data.toml".into()),
        };
        assert_eq!(
            apply_command(&help, Path::new("/out/net.slim.onnx")),
            "slimscope apply /m/net.pth --recipe /out/net.slim.recipe.toml -o /out/net.slim.onnx \
             --arch /m/net.toml --data /m/data.toml"
        );
        // The network is only asked for by an .onnx output.
        assert_eq!(
            apply_command(&help, Path::new("/out/x.safetensors")),
            "slimscope apply /m/net.pth --recipe /out/x.recipe.toml -o /out/x.safetensors"
        );
    }
}
