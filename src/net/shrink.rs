//! The physically smaller network that structured pruning allows, computing what
//! the masked network computes.

use std::collections::HashMap;

use super::shapes;
use super::spec::{ArchSpec, LayerSpec};
use super::weights::{Weights, held};
use crate::error::{Error, Result};

/// What [`shrink`] made of a network.
pub struct Shrunk {
    /// The spec with every linear and convolution layer's `out` (and `kernel`) set.
    pub spec: ArchSpec,
    pub weights: Weights,
    /// Output neurons or filters removed, per layer weight.
    pub removed: Vec<(String, usize)>,
    /// Per linear or convolution weight: the original output rows and input columns
    /// it keeps (to carry a quantization grid over).
    pub kept: HashMap<String, (Vec<usize>, Vec<usize>)>,
    /// Biases whose values changed: removed channels' constant outputs folded in.
    pub folded: Vec<String>,
    /// Channels kept although their weights are zero, and why.
    pub notes: Vec<String>,
}

impl Shrunk {
    /// Whether anything was removed.
    pub fn is_smaller(&self) -> bool {
        !self.removed.is_empty()
    }
}

/// A weighted layer's parts.
struct Weighted<'a> {
    weight: &'a str,
    bias: Option<&'a str>,
    padding: usize,
    conv: bool,
}

fn weighted(layer: &LayerSpec) -> Option<Weighted<'_>> {
    match layer {
        LayerSpec::Linear { weight, bias, .. } => Some(Weighted {
            weight,
            bias: bias.as_deref(),
            padding: 0,
            conv: false,
        }),
        LayerSpec::Conv2d {
            weight,
            bias,
            padding,
            ..
        } => Some(Weighted {
            weight,
            bias: bias.as_deref(),
            padding: *padding,
            conv: true,
        }),
        _ => None,
    }
}

/// The physically smaller network structured pruning allows, computing what the
/// masked network computes. An output neuron or filter of a linear or convolution
/// layer (not the class layer) is removed, with its bias, batch-norm entries and the
/// matching inputs of the next linear or convolution layer, when either
/// - the next layer's weights for it are all zero (its value is never used), or
/// - its own weights are all zero, so it outputs a constant (its bias through the
///   batch norms and activations between), and that constant is zero or the next
///   layer can fold it into its bias exactly: a linear layer, or a convolution
///   without padding (padding would see zeros at the borders instead of the
///   constant), with a bias.
///
/// Anything else stays, with a note: a constant a padded convolution or a layer
/// without bias would see, a GELU of a non-zero constant, a softmax on the way.
pub fn shrink(spec: &ArchSpec, weights: &Weights) -> Result<Shrunk> {
    let get = |name: &str| held(weights, name);
    let positions: Vec<usize> = (spec.layers.iter().enumerate())
        .filter(|(_, l)| weighted(l).is_some())
        .map(|(n, _)| n)
        .collect();
    let mut out = Shrunk {
        spec: spec.clone(),
        weights: Weights::new(),
        removed: Vec::new(),
        kept: HashMap::new(),
        folded: Vec::new(),
        notes: Vec::new(),
    };
    // The original, unshrunk shape each layer receives.
    let shapes = shapes::infer(spec, weights)?;
    // Kept channels (or, after a flatten, features) of the activation flowing.
    let mut keep: Option<Vec<usize>> = None;
    // Removed channels of the last weighted layer and the constant each brings to
    // the next one, with the flatten's plane size between (1 without).
    let mut constants: Vec<(usize, f32)> = Vec::new();
    let mut plane = 1usize;
    for (k, &n) in positions.iter().enumerate() {
        let layer = &spec.layers[n];
        let at = |problem: String| Error::Layer {
            layer: n + 1,
            kind: None,
            problem,
        };
        let Some(lw) = weighted(layer) else { continue };
        if let LayerSpec::Conv2d { groups, .. } = layer
            && *groups != 1
        {
            return Err(at(format!(
                "`{}` is a grouped convolution, which shrinking does not handle",
                lw.weight
            )));
        }
        let from = if k == 0 { 0 } else { positions[k - 1] + 1 };
        carry_between(
            spec,
            weights,
            &shapes,
            from..n,
            &mut keep,
            &mut plane,
            &mut out.weights,
        )?;

        let (w, dims) = get(lw.weight)?;
        let w = w.as_slice();
        let (rows, cols) = (dims[0], dims[1]);
        let inner: usize = dims[2..].iter().product();
        let row_len = cols * inner;
        let kept_in: Vec<usize> = keep.clone().unwrap_or_else(|| (0..cols).collect());
        // The bias with the removed inputs' constants folded in.
        let mut bias = match lw.bias {
            Some(b) => Some(get(b)?.0.clone()),
            None => None,
        };
        let layout = (row_len, inner, plane);
        if fold_constants(w, layout, &constants, bias.as_mut(), lw.weight)? {
            out.folded.extend(lw.bias.map(str::to_owned));
        }
        let row_kept = |r: usize| -> bool {
            kept_in.iter().any(|&c| {
                w[r * row_len + c * inner..r * row_len + (c + 1) * inner]
                    .iter()
                    .any(|&v| v != 0.0)
            })
        };

        // Which outputs go, and the constants the removed ones bring to the next layer.
        constants.clear();
        plane = 1;
        let kept_out: Vec<usize> = match positions.get(k + 1) {
            None => (0..rows).collect(), // the class layer keeps every output
            Some(&next) => {
                let decision = Removal::decide(spec, weights, &shapes, n, next, rows)?;
                let biases = bias.as_deref();
                let (kept, notes) =
                    decision.outputs(spec, lw.weight, biases, row_kept, &mut constants)?;
                out.notes.extend(notes);
                kept
            }
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
        out.weights.insert(lw.weight.to_owned(), (values, new_dims));
        if let (Some(name), Some(b)) = (lw.bias, &bias) {
            let picked: Vec<f32> = kept_out.iter().map(|&r| b[r]).collect();
            out.weights
                .insert(name.to_owned(), (picked, vec![kept_out.len()]));
        }
        if rows > kept_out.len() {
            out.removed
                .push((lw.weight.to_owned(), rows - kept_out.len()));
        }
        match &mut out.spec.layers[n] {
            LayerSpec::Linear { out, .. } => *out = Some(kept_out.len()),
            LayerSpec::Conv2d { out, kernel, .. } => {
                *out = Some(kept_out.len());
                *kernel = dims.get(2).copied();
            }
            _ => {}
        }
        out.kept
            .insert(lw.weight.to_owned(), (kept_out.clone(), kept_in));
        keep = Some(kept_out);
    }
    // Batch norms after the last weighted layer keep every entry.
    let tail = positions.last().map_or(0, |&l| l + 1);
    let layers = tail..spec.layers.len();
    carry_between(
        spec,
        weights,
        &shapes,
        layers,
        &mut keep,
        &mut plane,
        &mut out.weights,
    )?;
    Ok(out)
}

/// The layers `range` between two weighted layers: a batch norm keeps the entries of
/// the channels `keep` (all when `None`); a flatten spreads the kept channels over
/// its plane (which `plane` becomes).
fn carry_between(
    spec: &ArchSpec,
    weights: &Weights,
    shapes: &shapes::Shapes,
    range: std::ops::Range<usize>,
    keep: &mut Option<Vec<usize>>,
    plane: &mut usize,
    out: &mut Weights,
) -> Result<()> {
    for m in range {
        match &spec.layers[m] {
            LayerSpec::Batchnorm {
                weight,
                bias,
                mean,
                var,
                ..
            } => {
                for name in [weight, bias, mean, var] {
                    let (v, _) = held(weights, name)?;
                    let picked: Vec<f32> = match keep {
                        Some(kept) => kept.iter().map(|&c| v[c]).collect(),
                        None => v.clone(),
                    };
                    let len = picked.len();
                    out.insert(name.clone(), (picked, vec![len]));
                }
            }
            LayerSpec::Flatten => {
                // A later flatten of what is already flat multiplies by 1.
                *plane *= shapes.layer_inputs[m].iter().skip(1).product::<usize>();
                let p = *plane;
                *keep = keep
                    .take()
                    .map(|kept| kept.iter().flat_map(|&c| c * p..(c + 1) * p).collect());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Add to `bias` what the removed inputs' `constants` (channel, value) contribute
/// through weights `w` laid out as (row length, values per input, inputs per
/// channel). Whether anything was added.
fn fold_constants(
    w: &[f32],
    (row_len, inner, plane): (usize, usize, usize),
    constants: &[(usize, f32)],
    bias: Option<&mut Vec<f32>>,
    name: &str,
) -> Result<bool> {
    if constants.iter().all(|&(_, c)| c == 0.0) {
        return Ok(false);
    }
    let b =
        bias.ok_or_else(|| Error::Internal(format!("`{name}`: a constant to fold and no bias")))?;
    for (o, b) in b.iter_mut().enumerate() {
        let mut sum = f64::from(*b);
        for &(r, c) in constants.iter().filter(|&&(_, c)| c != 0.0) {
            let span = &w[o * row_len + r * plane * inner..o * row_len + (r + 1) * plane * inner];
            sum += f64::from(c) * span.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        *b = sum as f32;
    }
    Ok(true)
}

/// What removing outputs of weighted layer `n` means for the path to the next
/// weighted layer `next`.
struct Removal {
    /// Outputs whose every weight in the next layer is zero.
    dead: Vec<bool>,
    n: usize,
    next: usize,
    /// Why no constant can reach the next layer exactly, if none can.
    blocked: Option<String>,
    /// The (scale, shift) of each batch norm on the path, by layer index: computed
    /// once, not per output.
    affines: HashMap<usize, (Vec<f32>, Vec<f32>)>,
}

impl Removal {
    fn decide(
        spec: &ArchSpec,
        weights: &Weights,
        shapes: &shapes::Shapes,
        n: usize,
        next: usize,
        rows: usize,
    ) -> Result<Removal> {
        let path = &spec.layers[n + 1..next];
        let consumer =
            weighted(&spec.layers[next]).ok_or_else(|| Error::Internal("no consumer".into()))?;
        if path.iter().any(|l| matches!(l, LayerSpec::Softmax)) {
            // A softmax mixes every channel: none can go.
            return Ok(Removal {
                dead: vec![false; rows],
                n,
                next,
                blocked: Some("a softmax mixes it with the others".into()),
                affines: HashMap::new(),
            });
        }
        let plane: usize = path
            .iter()
            .zip(n + 1..next)
            .filter(|(l, _)| matches!(l, LayerSpec::Flatten))
            .map(|(_, m)| shapes.layer_inputs[m].iter().skip(1).product::<usize>())
            .product();
        let (w, dims) = held(weights, consumer.weight)?;
        let (out_rows, cols) = (dims[0], dims[1]);
        let inner: usize = dims[2..].iter().product();
        let row_len = cols * inner;
        let dead = (0..rows)
            .map(|r| {
                let span = r * plane * inner..(r + 1) * plane * inner;
                span.end <= row_len
                    && (0..out_rows).all(|o| {
                        w[o * row_len + span.start..o * row_len + span.end]
                            .iter()
                            .all(|&v| v == 0.0)
                    })
            })
            .collect();
        let blocked = if consumer.bias.is_none() {
            Some(format!(
                "its constant would need a bias in `{}`",
                consumer.weight
            ))
        } else if consumer.conv && consumer.padding > 0 {
            Some(format!(
                "`{}` pads its input, so its constant output does not fold into a bias",
                consumer.weight
            ))
        } else {
            None
        };
        let mut affines = HashMap::new();
        for (m, layer) in path.iter().enumerate() {
            if let LayerSpec::Batchnorm {
                weight,
                bias,
                mean,
                var,
                eps,
            } = layer
            {
                let affine = super::batchnorm_affine(weights, [weight, bias, mean, var], *eps)?;
                affines.insert(n + 1 + m, affine);
            }
        }
        Ok(Removal {
            dead,
            n,
            next,
            blocked,
            affines,
        })
    }

    /// The outputs of `weight` (whose `biases`, after folding, are given) that stay,
    /// in order, with notes on the all-zero ones that must; `constants` receives the
    /// removed ones' constants for the next layer. `row_kept(r)` says whether row `r`
    /// has a non-zero weight.
    fn outputs(
        &self,
        spec: &ArchSpec,
        weight: &str,
        biases: Option<&[f32]>,
        row_kept: impl Fn(usize) -> bool,
        constants: &mut Vec<(usize, f32)>,
    ) -> Result<(Vec<usize>, Vec<String>)> {
        let mut kept = Vec::new();
        let mut stayed: Vec<(String, Vec<usize>)> = Vec::new();
        for r in 0..self.dead.len() {
            if self.dead[r] {
                continue;
            }
            if row_kept(r) {
                kept.push(r);
                continue;
            }
            let b = biases.map_or(0.0, |b| b[r]);
            match self.constant(spec, r, b)? {
                Ok(c) => constants.push((r, c)),
                Err(why) => {
                    match stayed.iter_mut().find(|(w, _)| *w == why) {
                        Some((_, outputs)) => outputs.push(r),
                        None => stayed.push((why, vec![r])),
                    }
                    kept.push(r);
                }
            }
        }
        let notes = stayed
            .into_iter()
            .map(|(why, outputs)| {
                let list: Vec<String> = outputs.iter().map(ToString::to_string).collect();
                format!(
                    "`{weight}`: {} all-zero output(s) kept ({}): {why}",
                    outputs.len(),
                    list.join(", ")
                )
            })
            .collect();
        if kept.is_empty() && !self.dead.is_empty() {
            // Keep one output (zero weights: its constant flows as before).
            let first = if constants.is_empty() {
                0
            } else {
                constants.remove(0).0
            };
            kept.push(first);
        }
        kept.sort_unstable();
        Ok((kept, notes))
    }

    /// The constant that output `r`, with all-zero weights and bias `b`, brings to
    /// the next layer, or why it cannot be folded there.
    fn constant(
        &self,
        spec: &ArchSpec,
        r: usize,
        b: f32,
    ) -> Result<std::result::Result<f32, String>> {
        let mut c = b;
        let mut flat = false;
        for (m, layer) in spec
            .layers
            .iter()
            .enumerate()
            .take(self.next)
            .skip(self.n + 1)
        {
            c = match layer {
                // Per feature after a flatten: no longer one constant per channel.
                LayerSpec::Batchnorm { .. } if flat => {
                    return Ok(Err(
                        "a batch norm after the flatten scales its features apart".into(),
                    ));
                }
                LayerSpec::Flatten => {
                    flat = true;
                    c
                }
                // A softmax mixes every channel, a constant zero's exp(0) included.
                LayerSpec::Softmax => return Ok(Err("a softmax mixes it with the others".into())),
                LayerSpec::Batchnorm { .. } => {
                    let (scale, shift) = &self.affines[&m];
                    c * scale[r] + shift[r]
                }
                LayerSpec::Relu => c.max(0.0),
                LayerSpec::Sigmoid => 1.0 / (1.0 + (-c).exp()),
                LayerSpec::Tanh => c.tanh(),
                LayerSpec::Gelu if c == 0.0 => 0.0,
                LayerSpec::Gelu => return Ok(Err("a GELU of a non-zero constant".into())),
                _ => c,
            };
        }
        Ok(match &self.blocked {
            Some(why) if c != 0.0 => Err(why.clone()),
            _ => Ok(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(weight: &str, bias: &str) -> LayerSpec {
        LayerSpec::Linear {
            weight: weight.into(),
            bias: Some(bias.into()),
            out: None,
        }
    }

    /// Hand-derived: a 3-2-1 network whose hidden neuron 1 has zero weights and bias
    /// 2 (relu 2 reaches the output with weight 3, so the output bias gains 6), and
    /// whose hidden neuron 0 feeds the output with weight 0 (never used).
    #[test]
    fn constants_fold_and_unused_outputs_go() {
        let spec = ArchSpec {
            version: 1,
            input: vec![3],
            layers: vec![linear("a.w", "a.b"), LayerSpec::Relu, linear("b.w", "b.b")],
        };
        let mut weights = Weights::new();
        weights.insert(
            "a.w".into(),
            (
                vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0],
                vec![3, 3],
            ),
        );
        weights.insert("a.b".into(), (vec![0.5, 2.0, -1.0], vec![3]));
        weights.insert("b.w".into(), (vec![0.0, 3.0, 7.0], vec![1, 3]));
        weights.insert("b.b".into(), (vec![1.0], vec![1]));
        let s = shrink(&spec, &weights).expect("shrink");
        assert_eq!(s.removed, vec![("a.w".to_owned(), 2)]);
        assert_eq!(s.weights["a.w"], (vec![4.0, 5.0, 6.0], vec![1, 3]));
        assert_eq!(s.weights["a.b"], (vec![-1.0], vec![1]));
        assert_eq!(s.weights["b.w"], (vec![7.0], vec![1, 1]));
        assert_eq!(s.weights["b.b"], (vec![7.0], vec![1]));
        assert_eq!(s.folded, vec!["b.b".to_owned()]);
        assert_eq!(s.kept["b.w"], (vec![0], vec![2]));
    }

    /// A softmax between keeps even a zero output: its exp(0) is in every other
    /// output's denominator.
    #[test]
    fn a_softmax_on_the_way_keeps_zero_outputs() {
        let spec = ArchSpec {
            version: 1,
            input: vec![2],
            layers: vec![
                linear("a.w", "a.b"),
                LayerSpec::Softmax,
                linear("b.w", "b.b"),
            ],
        };
        let mut weights = Weights::new();
        weights.insert("a.w".into(), (vec![1.0, 2.0, 0.0, 0.0], vec![2, 2]));
        weights.insert("a.b".into(), (vec![0.0, 0.0], vec![2]));
        weights.insert("b.w".into(), (vec![1.0, 1.0], vec![1, 2]));
        weights.insert("b.b".into(), (vec![0.0], vec![1]));
        let s = shrink(&spec, &weights).expect("shrink");
        assert!(s.removed.is_empty());
        assert!(
            s.notes.iter().any(|n| n.contains("softmax")),
            "{:?}",
            s.notes
        );
    }

    /// A padded convolution after a zero filter whose constant is not zero keeps it.
    #[test]
    fn a_padded_consumer_keeps_a_non_zero_constant() {
        let conv = |w: &str, b: &str, padding| LayerSpec::Conv2d {
            weight: w.into(),
            bias: Some(b.into()),
            out: None,
            kernel: None,
            stride: 1,
            padding,
            groups: 1,
        };
        let spec = ArchSpec {
            version: 1,
            input: vec![1, 3, 3],
            layers: vec![
                conv("a.w", "a.b", 0),
                LayerSpec::Relu,
                conv("b.w", "b.b", 1),
                LayerSpec::Flatten,
            ],
        };
        let mut weights = Weights::new();
        // Two 1x1 filters: the second all zero, bias 1 (relu 1 ≠ 0) then -1 (relu 0).
        weights.insert("a.w".into(), (vec![1.0, 0.0], vec![2, 1, 1, 1]));
        weights.insert("b.w".into(), (vec![1.0; 2 * 9], vec![1, 2, 3, 3]));
        weights.insert("b.b".into(), (vec![0.0], vec![1]));
        weights.insert("a.b".into(), (vec![0.0, 1.0], vec![2]));
        let s = shrink(&spec, &weights).expect("shrink");
        assert!(s.removed.is_empty());
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        weights.insert("a.b".into(), (vec![0.0, -1.0], vec![2]));
        let s = shrink(&spec, &weights).expect("shrink");
        assert_eq!(s.removed, vec![("a.w".to_owned(), 1)]);
        assert!(s.folded.is_empty());
    }
}
