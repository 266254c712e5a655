//! Shape inference for a sequential spec: the shape each layer receives, checked
//! against the weights' shapes before anything runs, so a spec that does not fit its
//! weights fails with the layer and the numbers. Only shapes are read, so checking a
//! model's spec decodes no tensor.

use super::spec::{ArchSpec, LayerSpec, window_output};
use super::weights::WeightSource;
use crate::error::{Error, Result};

/// What a spec does to one sample's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shapes {
    /// The shape each layer of the spec receives (one sample), in spec order.
    pub layer_inputs: Vec<Vec<usize>>,
    /// Class scores per sample (the last layer's output).
    pub classes: usize,
}

/// The shapes of `spec` over `source`'s weights, or the first layer that does not fit.
pub fn infer(spec: &ArchSpec, source: &dyn WeightSource) -> Result<Shapes> {
    let mut shape = spec.input.clone();
    let mut layer_inputs = Vec::with_capacity(spec.layers.len());
    for (n, layer) in spec.layers.iter().enumerate() {
        layer_inputs.push(shape.clone());
        let at = |problem: String| Error::Layer {
            layer: n + 1,
            kind: Some(describe(layer)),
            problem,
        };
        shape = output(layer, shape, source, &at)?;
    }
    let [classes] = shape[..] else {
        return Err(Error::InvalidSetting(format!(
            "the network ends with shape {shape:?}, not a vector of class scores"
        )));
    };
    Ok(Shapes {
        layer_inputs,
        classes,
    })
}

/// One sample's shape after `layer`, which receives `shape`.
fn output(
    layer: &LayerSpec,
    shape: Vec<usize>,
    source: &dyn WeightSource,
    at: &dyn Fn(String) -> Error,
) -> Result<Vec<usize>> {
    Ok(match layer {
        LayerSpec::Linear {
            weight,
            bias,
            out: declared,
        } => linear(source, weight, bias.as_deref(), *declared, &shape, at)?,
        LayerSpec::Conv2d { .. } => conv(source, layer, &shape, at)?,
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
            vec![c, oh, ow]
        }
        LayerSpec::Batchnorm {
            weight,
            bias,
            mean,
            var,
            ..
        } => {
            let Some(&c) = shape.first() else {
                return Err(at("receives an empty shape".into()));
            };
            for name in [weight, bias, mean, var] {
                let dims = source.shape(name)?;
                if dims != [c] {
                    return Err(at(format!("`{name}` has shape {dims:?}, not [{c}]")));
                }
            }
            shape
        }
        LayerSpec::Flatten => vec![shape.iter().product()],
        LayerSpec::Dropout
        | LayerSpec::Relu
        | LayerSpec::Gelu
        | LayerSpec::Sigmoid
        | LayerSpec::Tanh
        | LayerSpec::Softmax => shape,
    })
}

/// Tensor `name`'s shape, which must be `want`.
fn expect(
    source: &dyn WeightSource,
    name: &str,
    want: &[usize],
    at: &dyn Fn(String) -> Error,
) -> Result<()> {
    let dims = source.shape(name)?;
    if dims != want {
        return Err(at(format!(
            "tensor `{name}` has shape {dims:?}, the spec needs {want:?}"
        )));
    }
    Ok(())
}

/// A linear layer's output over `shape`.
fn linear(
    source: &dyn WeightSource,
    weight: &str,
    bias: Option<&str>,
    declared: Option<usize>,
    shape: &[usize],
    at: &dyn Fn(String) -> Error,
) -> Result<Vec<usize>> {
    let [out, inp] = source.shape(weight)?[..] else {
        return Err(at("the weight is not 2-D".into()));
    };
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
    if let Some(b) = bias {
        expect(source, b, &[out], at)?;
    }
    Ok(vec![out])
}

/// A convolution's output over `shape`.
fn conv(
    source: &dyn WeightSource,
    layer: &LayerSpec,
    shape: &[usize],
    at: &dyn Fn(String) -> Error,
) -> Result<Vec<usize>> {
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
    let [out, inp, kh, kw] = source.shape(weight)?[..] else {
        return Err(at("the weight is not 4-D".into()));
    };
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
    if let Some(b) = bias {
        expect(source, b, &[out], at)?;
    }
    Ok(vec![out, oh, ow])
}

/// How errors name a layer.
fn describe(l: &LayerSpec) -> String {
    match l {
        LayerSpec::Linear { weight, .. } => format!("linear {weight}"),
        LayerSpec::Conv2d { weight, .. } => format!("conv2d {weight}"),
        LayerSpec::Batchnorm { weight, .. } => format!("batchnorm {weight}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
