//! slimscope: explore neural-network compression trade-offs.
//!
//! Data flow (the library knows nothing of the front ends):
//!
//! ```text
//!  file ──Model::open──▶ Model { tensors, layers, metadata }   (model/: one file per format;
//!                          │  tensor_bytes(i): mapped, lazy      every file checked at the door)
//!          ┌───────────────┤
//!          ▼               ▼
//!   stats::compute    compress: Config ─to_recipe─▶ Recipe ◀─parse─ recipe file
//!   (inspect.rs)           │            Recipe ─plan─▶ TensorPlan ─apply─▶ AppliedTensor
//!                          │            (prune, quant, ggml blocks, size accounting, cache)
//!                          ▼
//!        measure::measure: applied tensors + Totals (bytes, bits/weight, sparsity,
//!                          │  weight fidelity) + Metrics from eval's Evaluator
//!                          │  (Network + data set ─▶ net::Runner; variants share work;
//!                          │   net/: specs, shapes, weight sources, runners)
//!          ┌───────────────┴───────────────┐
//!          ▼                               ▼
//!   sweep/: many configurations       train/: recovery fine-tuning,
//!   measured; Pareto fronts,          distillation
//!   sensitivity, allocation
//!          └───────────────┬───────────────┘
//!                          ▼
//!        export/: safetensors, GGUF, recipe   (atomic, byte-reproducible, never an input)
//!
//!  jobs::spawn_job and jobs::Pool run any of it on named worker threads, streaming
//!  progress, points and the typed result or error over crossbeam channels,
//!  cancellable; cli/ and app/ are thin front ends.
//! ```

#![warn(clippy::too_many_lines)]

pub mod bounded;
pub mod checksum;
pub mod compress;
pub mod demo;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod jobs;
pub mod measure;
pub mod model;
pub mod net;
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
