//! A sequential spec as a trainable candle network: weights and biases of linear and
//! convolution layers and batch-norm γ/β are `Var`s; batch-norm running statistics
//! stay frozen (usual when fine-tuning with small batches) and dropout is off, so a
//! step is deterministic. A trailing softmax is left out: the losses take logits.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor, Var};

use crate::error::{Error, Result};
use crate::net::shapes;
use crate::net::spec::{ArchSpec, LayerSpec};
use crate::net::weights::{WeightSource, Weights};

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
        let classes = shapes::infer(spec, source)?.classes;
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
                .ok_or_else(|| Error::Internal(format!("no tensor named `{name}`")))
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
                .ok_or_else(|| Error::Internal(format!("checkpoint lacks `{name}`")))?;
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
