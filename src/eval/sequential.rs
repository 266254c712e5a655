//! The sequential runner: an [`ArchSpec`] bound to weights, run with candle on the
//! CPU. Building checks every shape against the spec's input before anything runs,
//! so a spec that does not fit its weights fails with the layer and the numbers.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

use super::Runner;
use super::arch::{ArchSpec, LayerSpec, window_output};
use crate::error::{Error, Result};

/// Where a runner's weights come from: the model's own tensors, or compressed ones.
pub trait WeightSource {
    /// The values and shape of tensor `name`.
    fn weight(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)>;
}

enum Op {
    Linear(Linear),
    Conv(Conv2d),
    MaxPool(usize, usize),
    AvgPool(usize, usize),
    /// Inference batch norm as `x·scale + shift` per channel.
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    Relu,
    Gelu,
    Sigmoid,
    Tanh,
    Softmax,
    Flatten,
}

/// A sequential network ready to run.
pub struct Sequential {
    input: Vec<usize>,
    classes: usize,
    ops: Vec<Op>,
    /// The shape each layer of the spec receives (one sample), in spec order.
    layer_inputs: Vec<Vec<usize>>,
}

fn candle(e: candle_core::Error) -> Error {
    Error::Engine {
        context: "forward pass".into(),
        cause: e.to_string(),
    }
}

impl Sequential {
    /// Bind `spec` to weights from `source`, checking shapes layer by layer.
    pub fn build(spec: &ArchSpec, source: &dyn WeightSource) -> Result<Sequential> {
        let bind = Binder {
            source,
            dev: Device::Cpu,
        };
        let mut shape = spec.input.clone();
        let mut ops = Vec::with_capacity(spec.layers.len());
        let mut layer_inputs = Vec::with_capacity(spec.layers.len());
        for (n, layer) in spec.layers.iter().enumerate() {
            layer_inputs.push(shape.clone());
            let at = |problem: String| Error::Layer {
                layer: n + 1,
                kind: Some(describe(layer)),
                problem,
            };
            let op = match layer {
                LayerSpec::Linear {
                    weight,
                    bias,
                    out: declared,
                } => bind.linear(weight, bias.as_deref(), *declared, &mut shape, &at)?,
                LayerSpec::Conv2d { .. } => bind.conv(layer, &mut shape, &at)?,
                LayerSpec::Maxpool { kernel, stride } | LayerSpec::Avgpool { kernel, stride } => {
                    let s = stride.unwrap_or(*kernel);
                    let [c, h, w] = shape[..] else {
                        return Err(at(format!("needs a [C, H, W] input, receives {shape:?}")));
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
                    if matches!(layer, LayerSpec::Maxpool { .. }) {
                        Op::MaxPool(*kernel, s)
                    } else {
                        Op::AvgPool(*kernel, s)
                    }
                }
                LayerSpec::Batchnorm {
                    weight,
                    bias,
                    mean,
                    var,
                    eps,
                } => bind.batchnorm([weight, bias, mean, var], *eps, &shape, &at)?,
                LayerSpec::Flatten => {
                    shape = vec![shape.iter().product()];
                    Op::Flatten
                }
                LayerSpec::Dropout => continue,
                LayerSpec::Relu => Op::Relu,
                LayerSpec::Gelu => Op::Gelu,
                LayerSpec::Sigmoid => Op::Sigmoid,
                LayerSpec::Tanh => Op::Tanh,
                LayerSpec::Softmax => Op::Softmax,
            };
            ops.push(op);
        }
        let [classes] = shape[..] else {
            return Err(Error::InvalidSetting(format!(
                "the network ends with shape {shape:?}, not a vector of class scores"
            )));
        };
        Ok(Sequential {
            input: spec.input.clone(),
            classes,
            ops,
            layer_inputs,
        })
    }

    /// The shape layer `n` of the spec receives, for one sample.
    pub fn layer_input(&self, n: usize) -> Option<&[usize]> {
        self.layer_inputs.get(n).map(Vec::as_slice)
    }
}

/// Binds a spec's layers to weights, checking each against the shape it receives.
struct Binder<'a> {
    source: &'a dyn WeightSource,
    dev: Device,
}

impl Binder<'_> {
    /// Weight `name` as a tensor, of shape `want` when given.
    fn tensor(&self, name: &str, want: Option<&[usize]>) -> Result<Tensor> {
        let (values, dims) = self.source.weight(name)?;
        if let Some(w) = want
            && w != dims.as_slice()
        {
            return Err(Error::InvalidSetting(format!(
                "tensor `{name}` has shape {dims:?}, the spec needs {w:?}"
            )));
        }
        Tensor::from_vec(values, dims, &self.dev).map_err(candle)
    }

    /// A linear layer over `shape` (which becomes its output's).
    fn linear(
        &self,
        weight: &str,
        bias: Option<&str>,
        declared: Option<usize>,
        shape: &mut Vec<usize>,
        at: &dyn Fn(String) -> Error,
    ) -> Result<Op> {
        let w = self.tensor(weight, None)?;
        let (out, inp) = w.dims2().map_err(|_| at("the weight is not 2-D".into()))?;
        if declared.is_some_and(|d| d != out) {
            return Err(at(format!(
                "declares out = {} but `{weight}` has {out} outputs",
                declared.unwrap_or_default()
            )));
        }
        if *shape != [inp] {
            return Err(at(format!(
                "takes {inp} inputs but receives {shape:?} (a flatten, padding or pooling may be missing)"
            )));
        }
        let b = bias.map(|b| self.tensor(b, Some(&[out]))).transpose()?;
        *shape = vec![out];
        Ok(Op::Linear(Linear::new(w, b)))
    }

    /// A convolution over `shape` (which becomes its output's).
    fn conv(
        &self,
        layer: &LayerSpec,
        shape: &mut Vec<usize>,
        at: &dyn Fn(String) -> Error,
    ) -> Result<Op> {
        let LayerSpec::Conv2d {
            weight,
            bias,
            stride,
            padding,
            groups,
            out: declared,
            kernel,
        } = layer
        else {
            return Err(at("not a convolution".into()));
        };
        let w = self.tensor(weight, None)?;
        let (out, inp, kh, kw) = w.dims4().map_err(|_| at("the weight is not 4-D".into()))?;
        if declared.is_some_and(|d| d != out) || kernel.is_some_and(|k| k != kh || k != kw) {
            return Err(at(format!(
                "declares out = {declared:?}, kernel = {kernel:?} but `{weight}` is {out}×{inp}×{kh}×{kw}"
            )));
        }
        let [c, h, wd] = shape[..] else {
            return Err(at(format!("needs a [C, H, W] input, receives {shape:?}")));
        };
        if *groups == 0 || c != inp * groups || *stride == 0 {
            return Err(at(format!(
                "takes {} channels (groups {groups}) but receives {c}",
                inp * groups
            )));
        }
        let size = |x: usize, k: usize| window_output(x, k, *stride, *padding);
        let (Some(oh), Some(ow)) = (size(h, kh), size(wd, kw)) else {
            return Err(at(format!(
                "a {kh}×{kw} kernel does not fit a {h}×{wd} input"
            )));
        };
        let b = bias
            .as_deref()
            .map(|b| self.tensor(b, Some(&[out])))
            .transpose()?;
        *shape = vec![out, oh, ow];
        Ok(Op::Conv(Conv2d::new(
            w,
            b,
            Conv2dConfig {
                padding: *padding,
                stride: *stride,
                dilation: 1,
                groups: *groups,
                cudnn_fwd_algo: None,
            },
        )))
    }

    /// Inference batch norm over `shape`'s channels, as one per-channel affine map.
    /// `names` are γ, β, the running mean and the running variance.
    fn batchnorm(
        &self,
        [weight, bias, mean, var]: [&String; 4],
        eps: f64,
        shape: &[usize],
        at: &dyn Fn(String) -> Error,
    ) -> Result<Op> {
        let c = shape[0];
        let get = |name: &str| -> Result<Vec<f32>> {
            let (v, dims) = self.source.weight(name)?;
            if dims != [c] {
                return Err(at(format!("`{name}` has shape {dims:?}, not [{c}]")));
            }
            Ok(v)
        };
        let (scale, shift) =
            batchnorm_affine(&get(weight)?, &get(bias)?, &get(mean)?, &get(var)?, eps);
        let mut dims = vec![1, c];
        dims.extend(std::iter::repeat_n(1, shape.len() - 1));
        Ok(Op::Affine {
            scale: Tensor::from_vec(scale, dims.clone(), &self.dev).map_err(candle)?,
            shift: Tensor::from_vec(shift, dims, &self.dev).map_err(candle)?,
        })
    }
}

/// Inference batch norm γ·(x − μ)/√(σ² + ε) + β as `x·scale + shift` per channel.
pub(crate) fn batchnorm_affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| (f64::from(g) / (f64::from(v) + eps).sqrt()) as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(mean.iter().zip(&scale))
        .map(|(&b, (&m, &s))| b - m * s)
        .collect();
    (scale, shift)
}

fn describe(l: &LayerSpec) -> String {
    match l {
        LayerSpec::Linear { weight, .. } => format!("linear {weight}"),
        LayerSpec::Conv2d { weight, .. } => format!("conv2d {weight}"),
        LayerSpec::Batchnorm { weight, .. } => format!("batchnorm {weight}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl Runner for Sequential {
    fn input_shape(&self) -> &[usize] {
        &self.input
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn logits(&self, batch: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut dims = vec![n];
        dims.extend(&self.input);
        let mut x = Tensor::from_slice(batch, dims, &Device::Cpu).map_err(candle)?;
        for op in &self.ops {
            x = match op {
                Op::Linear(l) => l.forward(&x),
                Op::Conv(c) => c.forward(&x),
                Op::MaxPool(k, s) => x.max_pool2d_with_stride(*k, *s),
                Op::AvgPool(k, s) => x.avg_pool2d_with_stride(*k, *s),
                Op::Affine { scale, shift } => {
                    x.broadcast_mul(scale).and_then(|y| y.broadcast_add(shift))
                }
                Op::Relu => x.relu(),
                Op::Gelu => x.gelu_erf(),
                Op::Sigmoid => candle_nn::ops::sigmoid(&x),
                Op::Tanh => x.tanh(),
                Op::Softmax => candle_nn::ops::softmax_last_dim(&x),
                Op::Flatten => x.flatten_from(1),
            }
            .map_err(candle)?;
        }
        x.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle)
    }
}

/// Named tensors held in memory (generated weights, tests).
impl WeightSource for std::collections::HashMap<String, (Vec<f32>, Vec<usize>)> {
    fn weight(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.get(name)
            .cloned()
            .ok_or_else(|| Error::InvalidSetting(format!("no tensor named `{name}`")))
    }
}
