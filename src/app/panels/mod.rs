//! The app's panels. Each is a struct of what it shows and edits, borrowed for one
//! frame, drawn through [`Panel::ui`]: it edits only what it was lent, and everything
//! else the user asks for goes out as [`Command`]s, carried out at the end of the
//! frame. `layout.rs` places them.

pub mod accuracy;
pub mod compare;
pub mod compress;
pub mod curves;
pub mod hint;
pub mod histogram;
pub mod layers;
pub mod summary;
pub mod training;

use super::Command;

/// One panel, drawn for one frame.
pub trait Panel {
    /// Draw into `ui`; what the user asked for goes into `commands`.
    fn ui(self, ui: &mut egui::Ui, commands: &mut Vec<Command>);
}
