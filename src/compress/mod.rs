//! Compression: turning weights into smaller ones. So far: ggml's block quantizers
//! ([`gguf_blocks`]), integer and float fake-quantization ([`quant`], [`float`]),
//! pruning masks ([`prune`]) and size accounting ([`size`]); recipes and export grow
//! here. Everything in this module works on `f32` slices and byte buffers: it knows
//! nothing about files (see `model/`) or any UI.

pub mod float;
pub mod gguf_blocks;
pub mod prune;
pub mod quant;
pub mod size;
