//! Architecture specs for sequential networks stored as a state_dict (safetensors,
//! .pth, .npz): the file holds weights, not the forward pass, so a small TOML spec
//! says which operations run in which order, each bound to tensor names.
//!
//! ```toml
//! version = 1
//! input = [1, 28, 28]          # one sample: [C, H, W] or [features]
//!
//! [[layer]]
//! op = "conv2d"                # weight [out, in/groups, kh, kw]
//! weight = "conv_layers.0.weight"
//! bias = "conv_layers.0.bias"
//! stride = 1                   # defaults: stride 1, padding 0, groups 1
//! padding = 1
//!
//! [[layer]]
//! op = "relu"                  # also gelu, sigmoid, tanh, softmax
//!
//! [[layer]]
//! op = "maxpool"               # or avgpool; stride defaults to kernel
//! kernel = 2
//!
//! [[layer]]
//! op = "flatten"               # [N, C, H, W] → [N, C·H·W] (C, H, W order)
//!
//! [[layer]]
//! op = "linear"                # weight [out, in]
//! weight = "fc.weight"
//! bias = "fc.bias"
//! ```
//!
//! Also `batchnorm` (`weight`, `bias`, `mean`, `var`, `eps` = 1e-5; inference
//! statistics) and `dropout` (nothing at evaluation). [`propose`](super::propose::propose) writes a spec from a
//! model's tensor names and shapes where that is unambiguous, and says what it assumed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The spec format version this build reads and writes.
pub const VERSION: u32 = 1;

/// A whole architecture spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    pub version: u32,
    /// One sample's shape.
    pub input: Vec<usize>,
    #[serde(rename = "layer")]
    pub layers: Vec<LayerSpec>,
}

fn one() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn is_zero(v: &usize) -> bool {
    *v == 0
}
fn default_eps() -> f64 {
    1e-5
}

/// Input channels × kernel area up to which a network's first convolution is computed
/// directly (`first_conv`) rather than on tract (3 × 3 × 3): what decides both the
/// direct path and the batch size tract is planned for (`onnx::micro_batch`).
pub const DIRECT_CONV_MAX_TAPS: usize = 27;

/// Output length along one axis of a convolution or pooling window (`kernel`,
/// `stride`, zero `padding` on both sides); `None` when the window does not fit or
/// `kernel`/`stride` is 0. The one formula the forward pass, initialisation and
/// shrinking share.
pub fn window_output(len: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    if kernel == 0 || stride == 0 {
        return None;
    }
    (len + 2 * padding)
        .checked_sub(kernel)
        .map(|v| v / stride + 1)
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Linear {
        weight: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias: Option<String>,
        /// Output features: needed only to create the layer (training from scratch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<usize>,
    },
    Conv2d {
        weight: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias: Option<String>,
        /// Output channels and the (square) kernel size: needed only to create the
        /// layer (training from scratch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kernel: Option<usize>,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        stride: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        padding: usize,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
    },
    Maxpool {
        kernel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    Avgpool {
        kernel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    Batchnorm {
        weight: String,
        bias: String,
        mean: String,
        var: String,
        #[serde(default = "default_eps")]
        eps: f64,
    },
    Relu,
    Gelu,
    Sigmoid,
    Tanh,
    Softmax,
    Flatten,
    Dropout,
}

impl LayerSpec {
    /// The model tensors this layer reads.
    pub fn tensors(&self) -> Vec<&str> {
        match self {
            LayerSpec::Linear { weight, bias, .. } | LayerSpec::Conv2d { weight, bias, .. } => {
                std::iter::once(weight.as_str())
                    .chain(bias.as_deref())
                    .collect()
            }
            LayerSpec::Batchnorm {
                weight,
                bias,
                mean,
                var,
                ..
            } => vec![weight, bias, mean, var],
            _ => Vec::new(),
        }
    }
}

impl ArchSpec {
    /// Read a spec; errors name the file (and the line, from the TOML parser).
    pub fn load(path: &Path) -> Result<ArchSpec> {
        let text = crate::text::read_settings(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ArchSpec> {
        let spec: ArchSpec = toml::from_str(text).map_err(|e| {
            Error::InvalidSetting(format!(
                "{}: {}",
                path.display(),
                crate::text::toml_error(text, &e)
            ))
        })?;
        if spec.version != VERSION {
            return Err(Error::InvalidSetting(format!(
                "{}: architecture spec version {} is not supported (this build reads {VERSION})",
                path.display(),
                spec.version
            )));
        }
        if spec.input.is_empty() || spec.input.contains(&0) {
            return Err(Error::InvalidSetting(format!(
                "{}: input {:?} is not a sample shape",
                path.display(),
                spec.input
            )));
        }
        Ok(spec)
    }

    /// The network from layer `n` on, which receives samples of shape `input` (the
    /// activations entering layer `n`).
    pub fn from_layer(&self, n: usize, input: Vec<usize>) -> ArchSpec {
        ArchSpec {
            version: self.version,
            input,
            layers: self.layers[n..].to_vec(),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
