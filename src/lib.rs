//! slimscope: explore neural-network compression trade-offs.
//!
//! Data flow (the library knows nothing of the front ends):
//!
//! ```text
//!  file ──Model::open──▶ Model { tensors, layers, metadata }   (model/, one file per format)
//!                          │  tensor_bytes(i): memory-mapped, lazy
//!                          ▼
//!                   stats::compute ──▶ TensorStats + Histogram  (stats.rs, all cores)
//!                          │
//!              inspect::inspect_model ──▶ per-tensor reports + totals
//!                          │
//!        jobs::spawn_job runs any of it on a named worker thread, streaming
//!        progress/results over crossbeam channels, cancellable
//!                          ▼
//!              cli/ (slimscope inspect, bench)      app/ (egui window)
//! ```

pub mod checksum;
pub mod compress;
pub mod demo;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod jobs;
pub mod model;
pub mod stats;
pub mod sweep;
pub mod text;
pub mod train;
pub mod units;

#[cfg(feature = "gui")]
pub mod app;
#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;

pub use dtype::DType;
pub use error::{Error, Result};
pub use model::{Format, Layer, Model, TensorInfo};
pub use stats::{Histogram, HistogramRange, StatsOptions, TensorStats};
