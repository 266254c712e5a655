//! Every keyboard shortcut, defined once: the input handling, the menus' hover texts
//! and the shortcuts window (F1) all read [`SHORTCUTS`], so a key cannot do one thing
//! and be listed as another.

use egui::{Key, KeyboardShortcut, Modifiers};

use super::Command;

/// One shortcut: its keys, what it does and when it applies.
pub struct Shortcut {
    /// The key combinations; the first is the one menus name.
    pub keys: &'static [KeyboardShortcut],
    pub command: Command,
    /// What it does, in the shortcuts window.
    pub what: &'static str,
    /// Whether it also works while a text field has the keyboard (a text field's own
    /// Ctrl+Z stays its own).
    pub while_typing: bool,
    /// Whether it needs an open model.
    pub needs_model: bool,
}

const fn ctrl(key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(Modifiers::COMMAND, key)
}

/// The shortcuts, in the order the shortcuts window lists them.
pub const SHORTCUTS: [Shortcut; 5] = [
    Shortcut {
        keys: &[ctrl(Key::O)],
        command: Command::OpenDialog,
        what: "Open a model",
        while_typing: true,
        needs_model: false,
    },
    Shortcut {
        keys: &[ctrl(Key::E)],
        command: Command::ExportDialog,
        what: "Export the compressed model and its recipe",
        while_typing: true,
        needs_model: true,
    },
    Shortcut {
        keys: &[ctrl(Key::Z)],
        command: Command::Undo,
        what: "Undo the last configuration change",
        while_typing: false,
        needs_model: false,
    },
    Shortcut {
        keys: &[
            KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::Z),
            ctrl(Key::Y),
        ],
        command: Command::Redo,
        what: "Redo",
        while_typing: false,
        needs_model: false,
    },
    Shortcut {
        keys: &[KeyboardShortcut::new(Modifiers::NONE, Key::F1)],
        command: Command::ToggleHelp,
        what: "Show or hide these shortcuts",
        while_typing: true,
        needs_model: false,
    },
];

/// What the mouse does, listed after the keys.
pub const GESTURES: [(&str, &str); 2] = [
    (
        "Drop a file",
        "A model opens; a data set or architecture spec attaches to it",
    ),
    ("Double-click a plot", "Reset its zoom"),
];

fn modifier_count(m: Modifiers) -> usize {
    [m.alt, m.ctrl || m.command || m.mac_cmd, m.shift]
        .into_iter()
        .filter(|&on| on)
        .count()
}

/// The commands of the shortcuts pressed this frame, consumed so no widget also
/// acts on them.
pub fn pressed(ctx: &egui::Context, model_open: bool) -> Vec<Command> {
    let typing = ctx.egui_wants_keyboard_input();
    // Longer combinations first: Ctrl+Shift+Z is Redo, not Undo with Shift held.
    let mut keys: Vec<(&KeyboardShortcut, &Shortcut)> = SHORTCUTS
        .iter()
        .filter(|s| (s.while_typing || !typing) && (model_open || !s.needs_model))
        .flat_map(|s| s.keys.iter().map(move |k| (k, s)))
        .collect();
    keys.sort_by_key(|(k, _)| std::cmp::Reverse(modifier_count(k.modifiers)));
    let mut commands = Vec::new();
    ctx.input_mut(|i| {
        for (key, s) in keys {
            if i.consume_shortcut(key) && !commands.contains(&s.command) {
                commands.push(s.command.clone());
            }
        }
    });
    commands
}

/// The keys of `command`'s shortcut as this platform writes them ("Ctrl+Shift+Z or
/// Ctrl+Y"); empty when it has none.
pub fn keys_of(ctx: &egui::Context, command: &Command) -> String {
    SHORTCUTS
        .iter()
        .find(|s| s.command == *command)
        .map(|s| {
            s.keys
                .iter()
                .map(|k| ctx.format_shortcut(k))
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .unwrap_or_default()
}

/// `text` followed by `command`'s keys in parentheses: a menu item's hover text.
pub fn hint(ctx: &egui::Context, command: &Command, text: &str) -> String {
    match keys_of(ctx, command) {
        keys if keys.is_empty() => text.to_owned(),
        keys => format!("{text} ({keys})"),
    }
}

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
                    for s in &SHORTCUTS {
                        ui.strong(keys_of(ctx, &s.command));
                        ui.label(s.what);
                        ui.end_row();
                    }
                    for (gesture, what) in GESTURES {
                        ui.strong(gesture);
                        ui.label(what);
                        ui.end_row();
                    }
                });
        });
}
