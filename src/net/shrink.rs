//! The physically smaller network that structured pruning allows.

use super::shapes;
use super::spec::{ArchSpec, LayerSpec};
use super::weights::{WeightSource, Weights};
use crate::error::{Error, Result};

/// What [`shrink`] made of a network.
pub struct Shrunk {
    /// The spec with every linear and convolution layer's `out` (and `kernel`) set.
    pub spec: ArchSpec,
    pub weights: Weights,
    /// Output neurons or filters removed, per layer weight.
    pub removed: Vec<(String, usize)>,
}

/// The physically smaller network structured pruning allows: output neurons or
/// filters whose weights are all zero (structured pruning along axis 0) are removed,
/// with their bias, batch-norm entries and the matching inputs of the next linear or
/// convolution layer. The class layer keeps every output. A removed neuron's bias
/// stops reaching the next layer (as torch-pruning also drops it); a structurally
/// pruned export is a starting point to train from, not an equivalent network.
pub fn shrink(spec: &ArchSpec, weights: &Weights) -> Result<Shrunk> {
    let get = |name: &str| weights.weight(name);
    let last = spec
        .layers
        .iter()
        .rposition(|l| matches!(l, LayerSpec::Linear { .. } | LayerSpec::Conv2d { .. }));
    let mut out_spec = spec.clone();
    let mut out = Weights::new();
    let mut removed = Vec::new();
    // Kept channels (or features) of the activation flowing.
    let mut keep: Option<Vec<usize>> = None;
    // The original, unshrunk shape each layer receives.
    let shapes = shapes::infer(spec, weights)?;
    for (n, layer) in spec.layers.iter().enumerate() {
        let at = |problem: String| Error::Layer {
            layer: n + 1,
            kind: None,
            problem,
        };
        match layer {
            LayerSpec::Linear { weight, bias, .. } | LayerSpec::Conv2d { weight, bias, .. } => {
                let (w, dims) = get(weight)?;
                if let LayerSpec::Conv2d { groups, .. } = layer
                    && *groups != 1
                {
                    return Err(at(format!(
                        "`{weight}` is a grouped convolution, which shrinking does not handle"
                    )));
                }
                let (rows, cols) = (dims[0], dims[1]);
                let inner: usize = dims[2..].iter().product();
                let kept_in: Vec<usize> = keep.clone().unwrap_or_else(|| (0..cols).collect());
                let row_len = cols * inner;
                let kept_out: Vec<usize> = if Some(n) == last {
                    (0..rows).collect()
                } else {
                    let live: Vec<usize> = (0..rows)
                        .filter(|&r| w[r * row_len..(r + 1) * row_len].iter().any(|&v| v != 0.0))
                        .collect();
                    if live.is_empty() { vec![0] } else { live }
                };
                let mut values = Vec::with_capacity(kept_out.len() * kept_in.len() * inner);
                for &r in &kept_out {
                    for &c in &kept_in {
                        let start = r * row_len + c * inner;
                        values.extend_from_slice(&w[start..start + inner]);
                    }
                }
                let mut new_dims = dims.clone();
                (new_dims[0], new_dims[1]) = (kept_out.len(), kept_in.len());
                out.insert(weight.clone(), (values, new_dims));
                if let Some(b) = bias {
                    let (bv, _) = get(b)?;
                    let picked: Vec<f32> = kept_out.iter().map(|&r| bv[r]).collect();
                    out.insert(b.clone(), (picked, vec![kept_out.len()]));
                }
                if rows > kept_out.len() {
                    removed.push((weight.clone(), rows - kept_out.len()));
                }
                match &mut out_spec.layers[n] {
                    LayerSpec::Linear { out, .. } => *out = Some(kept_out.len()),
                    LayerSpec::Conv2d { out, kernel, .. } => {
                        *out = Some(kept_out.len());
                        *kernel = dims.get(2).copied();
                    }
                    _ => {}
                }
                keep = Some(kept_out);
            }
            LayerSpec::Batchnorm {
                weight,
                bias,
                mean,
                var,
                ..
            } => {
                for name in [weight, bias, mean, var] {
                    let (v, _) = get(name)?;
                    let picked: Vec<f32> = match &keep {
                        Some(k) => k.iter().map(|&c| v[c]).collect(),
                        None => v,
                    };
                    let len = picked.len();
                    out.insert(name.clone(), (picked, vec![len]));
                }
            }
            LayerSpec::Flatten => {
                let plane: usize = shapes.layer_inputs[n].iter().skip(1).product();
                keep = keep.map(|k| k.iter().flat_map(|&c| c * plane..(c + 1) * plane).collect());
            }
            _ => {}
        }
    }
    Ok(Shrunk {
        spec: out_spec,
        weights: out,
        removed,
    })
}
