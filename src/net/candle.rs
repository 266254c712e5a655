//! The sequential spec as a candle network on the CPU: the plain reference forward
//! pass that tests and `slimscope bench` hold the fast runner
//! ([`super::sequential_runner`]) against.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

use super::Runner;
use super::batchnorm_affine;
use super::shapes;
use super::spec::{ArchSpec, LayerSpec};
use super::weights::WeightSource;
use crate::error::{Error, Result};

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
    ops: Vec<Op>,
    classes: usize,
}

fn candle(e: candle_core::Error) -> Error {
    Error::Engine {
        context: "forward pass".into(),
        cause: e.to_string(),
    }
}

impl Sequential {
    /// Bind `spec` to weights from `source`, checking shapes layer by layer first
    /// ([`shapes::infer`]).
    pub fn build(spec: &ArchSpec, source: &dyn WeightSource) -> Result<Sequential> {
        let shapes = shapes::infer(spec, source)?;
        let tensor = |name: &str| -> Result<Tensor> {
            let (values, dims) = source.weight(name)?;
            Tensor::from_vec(values, dims, &Device::Cpu).map_err(candle)
        };
        let mut ops = Vec::with_capacity(spec.layers.len());
        for (layer, shape) in spec.layers.iter().zip(&shapes.layer_inputs) {
            ops.push(match layer {
                LayerSpec::Linear { weight, bias, .. } => Op::Linear(Linear::new(
                    tensor(weight)?,
                    bias.as_deref().map(tensor).transpose()?,
                )),
                LayerSpec::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                    groups,
                    ..
                } => Op::Conv(Conv2d::new(
                    tensor(weight)?,
                    bias.as_deref().map(tensor).transpose()?,
                    Conv2dConfig {
                        padding: *padding,
                        stride: *stride,
                        dilation: 1,
                        groups: *groups,
                        cudnn_fwd_algo: None,
                    },
                )),
                LayerSpec::Maxpool { kernel, stride } => {
                    Op::MaxPool(*kernel, stride.unwrap_or(*kernel))
                }
                LayerSpec::Avgpool { kernel, stride } => {
                    Op::AvgPool(*kernel, stride.unwrap_or(*kernel))
                }
                LayerSpec::Batchnorm {
                    weight,
                    bias,
                    mean,
                    var,
                    eps,
                } => {
                    let (scale, shift) = batchnorm_affine(source, [weight, bias, mean, var], *eps)?;
                    let mut dims = vec![1, shape[0]];
                    dims.extend(std::iter::repeat_n(1, shape.len() - 1));
                    let per_channel = |v: Vec<f32>| {
                        Tensor::from_vec(v, dims.clone(), &Device::Cpu).map_err(candle)
                    };
                    Op::Affine {
                        scale: per_channel(scale)?,
                        shift: per_channel(shift)?,
                    }
                }
                LayerSpec::Flatten => Op::Flatten,
                LayerSpec::Dropout => continue,
                LayerSpec::Relu => Op::Relu,
                LayerSpec::Gelu => Op::Gelu,
                LayerSpec::Sigmoid => Op::Sigmoid,
                LayerSpec::Tanh => Op::Tanh,
                LayerSpec::Softmax => Op::Softmax,
            });
        }
        Ok(Sequential {
            input: spec.input.clone(),
            ops,
            classes: shapes.classes,
        })
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
