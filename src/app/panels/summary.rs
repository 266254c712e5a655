//! The model summary: format, totals by element type, layers and the file's metadata.

use crate::app::{Command, LoadedModel, group_digits, human_bytes};

pub struct SummaryPanel<'a> {
    pub loaded: Option<&'a LoadedModel>,
}

impl super::Panel for SummaryPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, _commands: &mut Vec<Command>) {
        let SummaryPanel { loaded } = self;
        let Some(loaded) = loaded else { return };
        let model = &loaded.model;
        let totals = model.totals();
        ui.heading("Model");
        egui::Grid::new("summary")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                ui.label("File");
                ui.label(crate::app::file_name(&model.path))
                    .on_hover_text(model.path.display().to_string());
                ui.end_row();
                ui.label("Format");
                ui.label(model.format.name());
                ui.end_row();
                ui.label("Parameters");
                ui.label(group_digits(totals.params));
                ui.end_row();
                ui.label("Size");
                ui.label(human_bytes(totals.size_bytes));
                ui.end_row();
                ui.label("Tensors / layers");
                ui.label(format!("{} / {}", totals.tensors, model.layers.len()));
                ui.end_row();
            });
        // Weights the table cannot show, said where the totals are.
        if let Some((_, hidden)) = model
            .metadata
            .iter()
            .find(|(k, _)| k == crate::model::onnx::SUBGRAPH_WEIGHTS)
        {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("Not shown: {}", hidden.as_str().unwrap_or_default()),
            );
        }
        ui.add_space(6.0);
        ui.strong("By element type");
        egui::Grid::new("by_dtype")
            .num_columns(3)
            .striped(true)
            .show(ui, |ui| {
                for d in &totals.by_dtype {
                    ui.label(d.dtype.name());
                    ui.label(format!("{} params", group_digits(d.params)));
                    ui.label(human_bytes(d.size_bytes));
                    ui.end_row();
                }
            });
        ui.add_space(6.0);
        egui::CollapsingHeader::new(format!("Metadata ({} keys)", model.metadata.len()))
            .default_open(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("metadata")
                    .show(ui, |ui| {
                        egui::Grid::new("metadata_grid")
                            .num_columns(2)
                            .striped(true)
                            .show(ui, |ui| {
                                for (k, v) in &model.metadata {
                                    ui.label(k);
                                    let text = match v {
                                        serde_json::Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    };
                                    ui.add(egui::Label::new(text).truncate());
                                    ui.end_row();
                                }
                            });
                    });
            });
    }
}
