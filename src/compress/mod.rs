//! Compression: turning weights into smaller ones: ggml's block quantizers
//! ([`gguf_blocks`], [`k_quants`]), integer and float fake-quantization ([`quant`], [`float`]),
//! pruning masks ([`prune`]), size accounting ([`size`]), recipes ([`recipe`]), the
//! configurations the app and sweeps turn into recipes ([`config`]) and applying a
//! recipe to a model ([`apply`]); activation settings ([`activations`]) and their
//! calibration ([`observers`]); data-aware pruning ([`wanda`], [`sparsegpt`]) and
//! quantization ([`gptq`], [`awq`]) from calibration statistics ([`calibration`]). Everything in this module works on
//! `f32` slices, byte buffers and recipe text: it knows nothing about model files
//! (see `model/`) or any UI.

pub mod activations;
pub mod apply;
pub mod awq;
pub mod calibration;
pub mod config;
pub mod float;
pub mod gguf_blocks;
pub mod gptq;
pub mod importance;
pub mod k_quants;
pub mod observers;
pub mod prune;
pub mod quant;
pub mod recipe;
pub mod size;
pub mod sparsegpt;
pub mod wanda;
