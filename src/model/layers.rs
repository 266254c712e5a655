//! Grouping tensors into layers, so users see "conv1 (weight + bias)" rather than a
//! flat list: a `weight` with its `bias` (and norm statistics), a GGUF `blk.N.*` block.

use serde::Serialize;

use super::{Format, TensorInfo};

/// What a layer most likely is, from its tensors' names and shapes (a hint for
/// display and for later compression defaults, never a guarantee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Linear,
    Conv,
    Embedding,
    Norm,
    /// A transformer block (GGUF `blk.N`) holding several sub-layers.
    Block,
    /// An ONNX node, with its operator type in [`Layer::op`].
    Node,
    Other,
}

/// A named group of tensors that belong together.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// The ONNX operator (`Conv`, `Gemm`, …) when the file says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// Indices into [`super::Model::tensors`].
    pub tensors: Vec<usize>,
}

/// Group by name: `blk.N.*` for GGUF blocks, otherwise everything before the last
/// `.`-separated component (`conv_layers.0.weight` → `conv_layers.0`). Layers keep
/// the order of their first tensor.
pub(crate) fn group_by_name(format: Format, tensors: &[TensorInfo]) -> Vec<Layer> {
    let mut layers: Vec<Layer> = Vec::new();
    // Layer name → index, so grouping stays linear in the number of tensors.
    let mut by_name: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, t) in tensors.iter().enumerate() {
        let key = layer_key(format, &t.name);
        match by_name.get(key) {
            Some(&l) => layers[l].tensors.push(i),
            None => {
                by_name.insert(key, layers.len());
                layers.push(Layer {
                    name: key.to_owned(),
                    kind: LayerKind::Other,
                    op: None,
                    tensors: vec![i],
                });
            }
        }
    }
    for layer in &mut layers {
        layer.kind = guess_kind(format, layer, tensors);
    }
    layers
}

fn layer_key(format: Format, name: &str) -> &str {
    if format == Format::Gguf
        && let Some(rest) = name.strip_prefix("blk.")
        && let Some(dot) = rest.find('.')
    {
        return &name[..4 + dot];
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    }
}

fn guess_kind(format: Format, layer: &Layer, tensors: &[TensorInfo]) -> LayerKind {
    if format == Format::Gguf && layer.name.starts_with("blk.") {
        return LayerKind::Block;
    }
    let name = layer.name.to_ascii_lowercase();
    let main = layer
        .tensors
        .iter()
        .filter_map(|&i| tensors.get(i))
        .max_by_key(|t| t.shape.len());
    let rank = main.map_or(0, |t| t.shape.len());
    if name.contains("norm") || name.contains("ln_") || (rank == 1 && name.contains("bn")) {
        LayerKind::Norm
    } else if name.contains("emb") && rank == 2 {
        LayerKind::Embedding
    } else if rank == 4 || rank == 3 && name.contains("conv") {
        LayerKind::Conv
    } else if rank == 2 {
        LayerKind::Linear
    } else {
        LayerKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_blocks_group_whole_blocks() {
        assert_eq!(layer_key(Format::Gguf, "blk.12.attn_q.weight"), "blk.12");
        assert_eq!(layer_key(Format::Gguf, "output_norm.weight"), "output_norm");
        assert_eq!(layer_key(Format::Safetensors, "fc.0.bias"), "fc.0");
        assert_eq!(layer_key(Format::Npz, "weights"), "weights");
    }
}
