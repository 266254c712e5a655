//! A sequential spec as a trainable candle network: weights and biases of linear and
//! convolution layers and batch-norm γ/β are `Var`s; batch-norm running statistics
//! stay frozen (usual when fine-tuning with small batches) and dropout is off, so a
//! step is deterministic. A trailing softmax is left out: the losses take logits.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::eval::arch::{ArchSpec, LayerSpec, window_output};
use crate::eval::sequential::{Sequential, WeightSource};

/// Named tensors as plain values: what a trained network hands back.
pub type Weights = HashMap<String, (Vec<f32>, Vec<usize>)>;

pub(crate) fn candle(e: candle_core::Error) -> Error {
    Error::Engine {
        context: "training".into(),
        cause: e.to_string(),
    }
}

/// A spec bound to trainable variables.
pub struct TrainNet {
    spec: ArchSpec,
    /// Trainable tensors, in spec order.
    vars: Vec<(String, Var)>,
    /// Frozen batch-norm statistics.
    frozen: HashMap<String, Tensor>,
    classes: usize,
}

impl TrainNet {
    /// Bind `spec` to starting values from `source` (every shape is checked first, as
    /// for evaluation).
    pub fn new(spec: &ArchSpec, source: &dyn WeightSource) -> Result<TrainNet> {
        let built = Sequential::build(spec, source)?;
        let classes = crate::eval::Runner::classes(&built);
        let mut spec = spec.clone();
        if matches!(spec.layers.last(), Some(LayerSpec::Softmax)) {
            spec.layers.pop();
        }
        let (mut vars, mut frozen) = (Vec::new(), HashMap::new());
        for layer in &spec.layers {
            let (trained, fixed): (Vec<&str>, Vec<&str>) = match layer {
                LayerSpec::Batchnorm {
                    weight,
                    bias,
                    mean,
                    var,
                    ..
                } => (vec![weight, bias], vec![mean, var]),
                other => (other.tensors(), Vec::new()),
            };
            for name in trained {
                if vars.iter().any(|(n, _)| n == name) {
                    continue; // a tensor shared by two layers trains once
                }
                let (values, dims) = source.weight(name)?;
                let t = Tensor::from_vec(values, dims, &Device::Cpu).map_err(candle)?;
                vars.push((name.to_owned(), Var::from_tensor(&t).map_err(candle)?));
            }
            for name in fixed {
                let (values, dims) = source.weight(name)?;
                let t = Tensor::from_vec(values, dims, &Device::Cpu).map_err(candle)?;
                frozen.insert(name.to_owned(), t);
            }
        }
        Ok(TrainNet {
            spec,
            vars,
            frozen,
            classes,
        })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The trainable tensors, in spec order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Trainable parameters.
    pub fn params(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Logits for a batch `x` ([N, …input]); `replace` gives the tensor a layer uses
    /// instead of its variable (fake-quantized weights), by name.
    pub fn forward(&self, x: &Tensor, replace: &HashMap<String, Tensor>) -> Result<Tensor> {
        let get = |name: &str| -> Result<Tensor> {
            if let Some(t) = replace.get(name) {
                return Ok(t.clone());
            }
            if let Some(v) = self.var(name) {
                return Ok(v.as_tensor().clone());
            }
            self.frozen
                .get(name)
                .cloned()
                .ok_or_else(|| Error::InvalidSetting(format!("no tensor named `{name}`")))
        };
        let mut x = x.clone();
        let mut layers = self.spec.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            x = match layer {
                LayerSpec::Linear { weight, bias, .. } => {
                    candle_nn::Linear::new(get(weight)?, bias.as_deref().map(get).transpose()?)
                        .forward(&x)
                }
                LayerSpec::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                    groups,
                    ..
                } => {
                    let b = bias.as_deref().map(get).transpose()?;
                    Ok(conv2d(
                        &x,
                        &get(weight)?,
                        b.as_ref(),
                        *padding,
                        *stride,
                        *groups,
                    )?)
                }
                LayerSpec::Maxpool { kernel, stride } => {
                    super::ops::max_pool(&x, *kernel, stride.unwrap_or(*kernel), false)
                }
                // The usual block, ReLU then max-pool, is one op.
                LayerSpec::Relu => match layers.peek() {
                    Some(LayerSpec::Maxpool { kernel, stride }) => {
                        let (kernel, stride) = (*kernel, stride.unwrap_or(*kernel));
                        layers.next();
                        super::ops::max_pool(&x, kernel, stride, true)
                    }
                    _ => super::ops::relu(&x),
                },
                LayerSpec::Avgpool { kernel, stride } => {
                    x.avg_pool2d_with_stride(*kernel, stride.unwrap_or(*kernel))
                }
                LayerSpec::Batchnorm {
                    weight,
                    bias,
                    mean,
                    var,
                    eps,
                } => {
                    let mut dims = vec![1, x.dim(1).map_err(candle)?];
                    dims.extend(std::iter::repeat_n(1, x.rank() - 2));
                    let shaped = |name: &str| {
                        get(name).and_then(|t| t.reshape(dims.clone()).map_err(candle))
                    };
                    let inv_std = (shaped(var)? + *eps)
                        .and_then(|v| v.sqrt())
                        .and_then(|s| s.recip())
                        .map_err(candle)?;
                    let (mean, gamma, beta) = (shaped(mean)?, shaped(weight)?, shaped(bias)?);
                    x.broadcast_sub(&mean)
                        .and_then(|y| y.broadcast_mul(&inv_std))
                        .and_then(|y| y.broadcast_mul(&gamma))
                        .and_then(|y| y.broadcast_add(&beta))
                }
                LayerSpec::Gelu => x.gelu_erf(),
                LayerSpec::Sigmoid => candle_nn::ops::sigmoid(&x),
                LayerSpec::Tanh => x.tanh(),
                LayerSpec::Softmax => candle_nn::ops::softmax(&x, D::Minus1),
                LayerSpec::Flatten => x.flatten_from(1),
                LayerSpec::Dropout => Ok(x),
            }
            .map_err(candle)?;
        }
        Ok(x)
    }

    /// The current values of one variable.
    pub fn values_of(&self, name: &str) -> Result<Vec<f32>> {
        let v = self
            .var(name)
            .ok_or_else(|| Error::InvalidSetting(format!("no trainable tensor `{name}`")))?;
        v.as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle)
    }

    /// Every tensor the spec uses (trained and frozen), as plain values.
    pub fn weights(&self) -> Result<Weights> {
        let mut out = Weights::new();
        let plain = |t: &Tensor| -> Result<(Vec<f32>, Vec<usize>)> {
            Ok((
                t.flatten_all()
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(candle)?,
                t.dims().to_vec(),
            ))
        };
        for (name, v) in &self.vars {
            out.insert(name.clone(), plain(v.as_tensor())?);
        }
        for (name, t) in &self.frozen {
            out.insert(name.clone(), plain(t)?);
        }
        Ok(out)
    }

    /// Set every variable from `weights` (a kept checkpoint).
    pub fn load(&self, weights: &Weights) -> Result<()> {
        for (name, v) in &self.vars {
            let (values, dims) = weights
                .get(name)
                .ok_or_else(|| Error::InvalidSetting(format!("checkpoint lacks `{name}`")))?;
            let t = Tensor::from_slice(values, dims.as_slice(), &Device::Cpu).map_err(candle)?;
            v.set(&t).map_err(candle)?;
        }
        Ok(())
    }
}

/// A convolution whose backward pass is matrix products: candle's CPU conv2d and its
/// gradients are direct loops (10× slower than PyTorch on LeNet), so stride-1,
/// ungrouped convolutions unfold their input (im2col, with a one-pass col2im
/// gradient) into a [C·k·k (+1), N·oh·ow] matrix and multiply the weights, as [out,
/// C·k·k] with the bias as one more column against a row of ones, by it: one product
/// forward and one per gradient, with no broadcast to reduce. Other convolutions use
/// candle's own.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
    groups: usize,
) -> Result<Tensor> {
    let (out, c, kh, kw) = w.dims4().map_err(candle)?;
    if stride != 1 || groups != 1 {
        return (|| {
            let y = x.conv2d(w, padding, stride, 1, groups)?;
            match b {
                Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
                None => Ok(y),
            }
        })()
        .map_err(candle);
    }
    (|| {
        let (n, _, h, wd) = x.dims4()?;
        let (oh, ow) = (h + 2 * padding + 1 - kh, wd + 2 * padding + 1 - kw);
        let k = c * kh * kw;
        let mut cols = super::ops::unfold(x, kh, kw, padding)?;
        let mut weights = w.reshape((out, k))?;
        if let Some(b) = b {
            cols = Tensor::cat(
                &[
                    &cols,
                    &Tensor::ones((1, n * oh * ow), cols.dtype(), cols.device())?,
                ],
                0,
            )?;
            weights = Tensor::cat(&[&weights, &b.reshape((out, 1))?], 1)?;
        }
        weights
            .matmul(&cols)?
            .reshape((out, n, oh, ow))?
            .transpose(0, 1)?
            .contiguous()
    })()
    .map_err(candle)
}

/// Fresh weights for `spec`, initialised as PyTorch initialises `nn.Linear` and
/// `nn.Conv2d` (weights and biases uniform in ±1/√fan_in), batch norm as identity.
/// Layers whose tensors are created need `out` (and a convolution `kernel`).
pub fn initialise(spec: &ArchSpec, seed: u64) -> Result<Weights> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = Weights::new();
    let mut shape = spec.input.clone();
    for (n, layer) in spec.layers.iter().enumerate() {
        let at = |problem: String| Error::Layer {
            layer: n + 1,
            kind: None,
            problem,
        };
        let mut uniform = |name: &str, dims: Vec<usize>, fan_in: usize| {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let count = dims.iter().product();
            let values = (0..count)
                .map(|_| rng.random_range(-bound..=bound))
                .collect();
            weights.insert(name.to_owned(), (values, dims));
        };
        match layer {
            LayerSpec::Linear { weight, bias, out } => {
                let out = out.ok_or_else(|| {
                    at(format!(
                        "linear `{weight}` needs `out` (its output features) to be created"
                    ))
                })?;
                let [inp] = shape[..] else {
                    return Err(at(format!(
                        "linear `{weight}` receives {shape:?}, not a vector (a flatten may be missing)"
                    )));
                };
                uniform(weight, vec![out, inp], inp);
                if let Some(b) = bias {
                    uniform(b, vec![out], inp);
                }
                shape = vec![out];
            }
            LayerSpec::Conv2d {
                weight,
                bias,
                stride,
                padding,
                groups,
                out,
                kernel,
            } => {
                let (Some(out), Some(k)) = (*out, *kernel) else {
                    return Err(at(format!(
                        "conv2d `{weight}` needs `out` (channels) and `kernel` to be created"
                    )));
                };
                let [c, h, w] = shape[..] else {
                    return Err(at(format!(
                        "conv2d `{weight}` receives {shape:?}, not [C, H, W]"
                    )));
                };
                if *groups == 0 || c % groups != 0 || out % groups != 0 || *stride == 0 {
                    return Err(at(format!(
                        "conv2d `{weight}`: {c} → {out} channels do not split into {groups} groups"
                    )));
                }
                let fan_in = c / groups * k * k;
                uniform(weight, vec![out, c / groups, k, k], fan_in);
                if let Some(b) = bias {
                    uniform(b, vec![out], fan_in);
                }
                let size = |x: usize| window_output(x, k, *stride, *padding);
                let (Some(oh), Some(ow)) = (size(h), size(w)) else {
                    return Err(at(format!("a {k}×{k} kernel does not fit {h}×{w}")));
                };
                shape = vec![out, oh, ow];
            }
            LayerSpec::Maxpool { kernel, stride } | LayerSpec::Avgpool { kernel, stride } => {
                let s = stride.unwrap_or(*kernel);
                let [c, h, w] = shape[..] else {
                    return Err(at(format!("pooling receives {shape:?}, not [C, H, W]")));
                };
                let (Some(oh), Some(ow)) = (
                    window_output(h, *kernel, s, 0),
                    window_output(w, *kernel, s, 0),
                ) else {
                    return Err(at(format!(
                        "a {kernel}×{kernel} window does not fit {h}×{w}"
                    )));
                };
                shape = vec![c, oh, ow];
            }
            LayerSpec::Batchnorm {
                weight,
                bias,
                mean,
                var,
                ..
            } => {
                let c = shape[0];
                for (name, value) in [(weight, 1.0), (bias, 0.0), (mean, 0.0), (var, 1.0)] {
                    weights.insert(name.clone(), (vec![value; c], vec![c]));
                }
            }
            LayerSpec::Flatten => shape = vec![shape.iter().product()],
            _ => {}
        }
    }
    Ok(weights)
}

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
    let get = |name: &str| {
        weights
            .get(name)
            .cloned()
            .ok_or_else(|| Error::InvalidSetting(format!("no tensor named `{name}`")))
    };
    let last = spec
        .layers
        .iter()
        .rposition(|l| matches!(l, LayerSpec::Linear { .. } | LayerSpec::Conv2d { .. }));
    let mut out_spec = spec.clone();
    let mut out = Weights::new();
    let mut removed = Vec::new();
    // Kept channels (or features) of the activation flowing, and its spatial size.
    let mut keep: Option<Vec<usize>> = None;
    let mut shape = spec.input.clone();
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
                let plane: usize = shape.iter().skip(1).product();
                keep = keep.map(|k| k.iter().flat_map(|&c| c * plane..(c + 1) * plane).collect());
            }
            _ => {}
        }
        shape = layer_output(layer, &shape, weights).map_err(at_layer(n))?;
    }
    Ok(Shrunk {
        spec: out_spec,
        weights: out,
        removed,
    })
}

fn at_layer(n: usize) -> impl Fn(Error) -> Error {
    move |e| Error::Layer {
        layer: n + 1,
        kind: None,
        problem: e.to_string(),
    }
}

/// One sample's shape after `layer` (the original, unshrunk sizes).
fn layer_output(layer: &LayerSpec, shape: &[usize], weights: &Weights) -> Result<Vec<usize>> {
    let dims = |name: &str| {
        weights
            .get(name)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| Error::InvalidSetting(format!("no tensor named `{name}`")))
    };
    Ok(match (layer, shape) {
        (LayerSpec::Linear { weight, .. }, _) => vec![dims(weight)?[0]],
        (
            LayerSpec::Conv2d {
                weight,
                stride,
                padding,
                ..
            },
            [_, h, w],
        ) => {
            let d = dims(weight)?;
            let size = |x: usize, k: usize| {
                window_output(x, k, *stride, *padding).ok_or_else(|| {
                    Error::InvalidSetting(format!("`{weight}`: the kernel does not fit {h}×{w}"))
                })
            };
            vec![d[0], size(*h, d[2])?, size(*w, d[3])?]
        }
        (
            LayerSpec::Maxpool { kernel, stride } | LayerSpec::Avgpool { kernel, stride },
            [c, h, w],
        ) => {
            let s = stride.unwrap_or(*kernel);
            let size = |x: usize| {
                window_output(x, *kernel, s, 0).ok_or_else(|| {
                    Error::InvalidSetting(format!(
                        "a {kernel}×{kernel} window does not fit {h}×{w}"
                    ))
                })
            };
            vec![*c, size(*h)?, size(*w)?]
        }
        (LayerSpec::Flatten, _) => vec![shape.iter().product()],
        _ => shape.to_vec(),
    })
}

/// The tensors of `spec` in layer order, for writing.
fn ordered(spec: &ArchSpec, weights: &Weights) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for layer in &spec.layers {
        for name in layer.tensors() {
            if out.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            if let Some((v, dims)) = weights.get(name) {
                out.push((name.to_owned(), dims.clone(), v.clone()));
            }
        }
    }
    out
}

/// Write trained `weights` of `spec` (read from `origin`) to `out` as safetensors
/// (atomically), with `note` saying how they were made in the metadata.
pub fn write_weights(
    spec: &ArchSpec,
    weights: &Weights,
    origin: &Path,
    note: &serde_json::Value,
    out: &Path,
    force: bool,
) -> Result<()> {
    let model = crate::model::Model::from_f32(origin, ordered(spec, weights));
    crate::export::write_safetensors(
        &model,
        &[],
        std::collections::BTreeMap::from([
            ("format".to_owned(), "pt".to_owned()),
            ("slimscope_training".to_owned(), note.to_string()),
        ]),
        out,
        force,
    )
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    fn var(dims: &[usize], seed: usize) -> Var {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1009) as f32 / 504.5 - 1.0)
            .collect();
        Var::from_vec(values, dims, &Device::Cpu).expect("var")
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    }

    /// The im2col convolution gives candle's own conv2d values and gradients (input,
    /// weights, bias), over paddings 0–2 and kernels 1–3.
    #[test]
    fn the_unfolded_convolution_matches_candles_conv2d_and_its_gradients() {
        for (k, padding) in [(3, 0), (3, 1), (3, 2), (1, 0), (2, 1)] {
            let (x, w, b) = (var(&[2, 3, 7, 6], 1), var(&[4, 3, k, k], 2), var(&[4], 3));
            let ours = super::conv2d(
                x.as_tensor(),
                w.as_tensor(),
                Some(b.as_tensor()),
                padding,
                1,
                1,
            )
            .expect("ours");
            let theirs = x
                .as_tensor()
                .conv2d(w.as_tensor(), padding, 1, 1, 1)
                .and_then(|y| y.broadcast_add(&b.as_tensor().reshape((1, 4, 1, 1))?))
                .expect("theirs");
            assert_eq!(ours.dims(), theirs.dims());
            for (p, q) in flat(&ours).iter().zip(flat(&theirs)) {
                assert!((p - q).abs() < 1e-4, "k {k} pad {padding}: {p} vs {q}");
            }
            // A loss that weighs every output differently.
            let mix = Tensor::arange(0f32, ours.elem_count() as f32, &Device::Cpu)
                .and_then(|t| t.reshape(ours.dims()))
                .and_then(|t| t.sin())
                .expect("mix");
            let grads = |y: &Tensor| {
                (y * &mix)
                    .and_then(|l| l.sum_all())
                    .and_then(|l| l.backward())
                    .expect("backward")
            };
            let (ga, gb) = (grads(&ours), grads(&theirs));
            for v in [&x, &w, &b] {
                let (p, q) = (
                    flat(ga.get(v.as_tensor()).expect("ours")),
                    flat(gb.get(v.as_tensor()).expect("theirs")),
                );
                for (p, q) in p.iter().zip(&q) {
                    assert!(
                        (p - q).abs() < 1e-3,
                        "k {k} pad {padding} gradient: {p} vs {q}"
                    );
                }
            }
        }
    }
}
