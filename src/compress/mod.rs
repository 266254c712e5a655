//! Compression: turning weights into smaller ones. So far: ggml's block quantizers
//! ([`gguf_blocks`]), integer and float fake-quantization ([`quant`], [`float`]),
//! pruning masks ([`prune`]), size accounting ([`size`]) and recipes ([`recipe`]);
//! applying a recipe and exporting grow here. Everything in this module works on
//! `f32` slices, byte buffers and recipe text: it knows nothing about model files
//! (see `model/`) or any UI.

pub mod apply;
pub mod float;
pub mod gguf_blocks;
pub mod prune;
pub mod quant;
pub mod recipe;
pub mod size;
