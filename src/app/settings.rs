//! What persists across restarts (eframe storage): recent files, view options, the
//! theme and each model's last configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stats::DEFAULT_BINS;

/// How many recent files File > Open Recent remembers.
pub(super) const RECENT_FILES: usize = 8;

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
    pub last_configs: Vec<(PathBuf, crate::compress::config::Config)>,
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
pub(super) const REMEMBERED_CONFIGS: usize = 32;

/// The colour theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Theme {
    Dark,
    Light,
}
