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
//! statistics) and `dropout` (nothing at evaluation). [`propose`] writes a spec from a
//! model's tensor names and shapes where that is unambiguous, and says what it assumed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{LayerKind, Model};

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

/// A proposed spec and what was assumed or inferred to write it.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub spec: ArchSpec,
    pub notes: Vec<String>,
}

/// One parametric layer found in the state_dict.
enum Found {
    Conv {
        weight: String,
        bias: Option<String>,
        shape: [usize; 4],
    },
    Linear {
        weight: String,
        bias: Option<String>,
        shape: [usize; 2],
    },
    Norm {
        weight: String,
        bias: String,
        mean: String,
        var: String,
    },
}

fn found_layers(model: &Model) -> Vec<Found> {
    let mut out = Vec::new();
    for layer in &model.layers {
        let tensors: Vec<&crate::model::TensorInfo> =
            layer.tensors.iter().map(|&i| &model.tensors[i]).collect();
        let named = |suffix: &str| {
            tensors
                .iter()
                .find(|t| t.name.ends_with(suffix))
                .map(|t| t.name.clone())
        };
        let Some(weight) = tensors.iter().find(|t| t.name.ends_with("weight")) else {
            continue;
        };
        let dims: Vec<usize> = weight.shape.iter().map(|&d| d as usize).collect();
        let bias = named("bias");
        match (dims.as_slice(), layer.kind) {
            ([o, i, h, w], _) => out.push(Found::Conv {
                weight: weight.name.clone(),
                bias,
                shape: [*o, *i, *h, *w],
            }),
            ([o, i], LayerKind::Linear | LayerKind::Other) => out.push(Found::Linear {
                weight: weight.name.clone(),
                bias,
                shape: [*o, *i],
            }),
            ([_], _) => {
                if let (Some(mean), Some(var), Some(bias)) =
                    (named("running_mean"), named("running_var"), bias)
                {
                    out.push(Found::Norm {
                        weight: weight.name.clone(),
                        bias,
                        mean,
                        var,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Propose a spec for `model` fed samples of `sample_len` values: convolutions and
/// linear layers in file order, ReLU after each but the last, and the padding and
/// pooling that make the flattened width match the first linear layer — when exactly
/// one uniform choice does.
pub fn propose(model: &Model, sample_len: usize) -> Result<Proposal> {
    let cannot = |why: String| {
        Error::InvalidSetting(format!(
            "{}: cannot propose an architecture: {why}; write a spec (--arch)",
            model.path.display()
        ))
    };
    let found = found_layers(model);
    if found.is_empty() {
        return Err(cannot(
            "no linear or convolution weights (names ending in `weight`)".into(),
        ));
    }
    let mut notes = vec![
        "Activations are not stored in a state_dict: ReLU assumed after every layer but the last."
            .to_owned(),
    ];
    let (input, note) = proposed_input(&found[0], sample_len, &cannot)?;
    notes.extend(note);
    let convs = found
        .iter()
        .filter(|f| matches!(f, Found::Conv { .. }))
        .count();
    let mut choice = (true, false);
    if convs > 0 {
        let (chosen, note) = conv_choice(&found, &input, &cannot)?;
        choice = chosen;
        notes.push(note);
    }
    Ok(Proposal {
        spec: ArchSpec {
            version: VERSION,
            input,
            layers: proposed_layers(found, choice, convs == 0),
        },
        notes,
    })
}

/// The input shape the first layer implies for samples of `sample_len` values, and
/// what was assumed to get it.
fn proposed_input(
    first: &Found,
    sample_len: usize,
    cannot: &dyn Fn(String) -> Error,
) -> Result<(Vec<usize>, Option<String>)> {
    Ok(match first {
        Found::Conv { shape, .. } => {
            let c = shape[1];
            let plane = sample_len / c.max(1);
            let side = (plane as f64).sqrt().round() as usize;
            if c == 0 || !sample_len.is_multiple_of(c) || side * side != plane {
                return Err(cannot(format!(
                    "{sample_len} values per sample are not {c} square image channel(s)"
                )));
            }
            let note = format!(
                "Input {c}×{side}×{side}, from {sample_len} values per sample and {c} input channel(s)."
            );
            (vec![c, side, side], Some(note))
        }
        Found::Linear { shape, .. } => {
            if shape[1] != sample_len {
                return Err(cannot(format!(
                    "the first linear layer takes {} values, the samples have {sample_len}",
                    shape[1]
                )));
            }
            (vec![sample_len], None)
        }
        Found::Norm { .. } => return Err(cannot("the first layer is a normalisation".into())),
    })
}

/// The one uniform (same padding?, 2×2 max-pool?) choice for the convolutions whose
/// flattened output matches the first linear layer, and the note saying so.
fn conv_choice(
    found: &[Found],
    input: &[usize],
    cannot: &dyn Fn(String) -> Error,
) -> Result<((bool, bool), String)> {
    let first_linear_in = found.iter().find_map(|f| match f {
        Found::Linear { shape, .. } => Some(shape[1]),
        _ => None,
    });
    let side = input[1];
    let fits = |same: bool, pool: bool| -> Option<usize> {
        let (mut s, mut c) = (side, input[0]);
        for f in found {
            if let Found::Conv { shape, .. } = f {
                let k = shape[2];
                let pad = if same { k / 2 } else { 0 };
                s = (s + 2 * pad).checked_sub(k)? + 1;
                if pool {
                    s /= 2;
                }
                c = shape[0];
                if s == 0 {
                    return None;
                }
            }
        }
        Some(c * s * s)
    };
    let candidates: Vec<(bool, bool)> =
        [(true, true), (false, true), (true, false), (false, false)]
            .into_iter()
            .filter(|&(same, pool)| fits(same, pool).is_some_and(|w| Some(w) == first_linear_in))
            .collect();
    let choice = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(cannot(format!(
                "no padding (0 or same) and pooling (none or 2×2 max) makes the convolutions' output match the first linear layer's {} inputs",
                first_linear_in.map_or("(missing)".into(), |w| w.to_string())
            )));
        }
        _ => {
            return Err(cannot(
                "several paddings and poolings fit the first linear layer's width".into(),
            ));
        }
    };
    let note = format!(
        "Convolutions: stride 1, {} padding, {} — the only uniform choice whose flattened width matches the first linear layer ({}).",
        if choice.0 { "same" } else { "no" },
        if choice.1 {
            "each followed by a 2×2 max-pool"
        } else {
            "no pooling"
        },
        first_linear_in.unwrap_or(0)
    );
    Ok((choice, note))
}

/// The layers of the proposal: each found layer with the padding and pooling chosen,
/// ReLU after each but the last, a flatten before the first linear layer (unless the
/// input is already flat) and each normalisation right after its layer.
fn proposed_layers(found: Vec<Found>, choice: (bool, bool), flat_input: bool) -> Vec<LayerSpec> {
    let mut layers = Vec::new();
    let last = found.len() - 1;
    let mut flattened = flat_input;
    for (n, f) in found.into_iter().enumerate() {
        match f {
            Found::Conv {
                weight,
                bias,
                shape,
            } => {
                layers.push(LayerSpec::Conv2d {
                    weight,
                    bias,
                    stride: 1,
                    padding: if choice.0 { shape[2] / 2 } else { 0 },
                    groups: 1,
                    out: None,
                    kernel: None,
                });
                if n != last {
                    layers.push(LayerSpec::Relu);
                }
                if choice.1 {
                    layers.push(LayerSpec::Maxpool {
                        kernel: 2,
                        stride: None,
                    });
                }
            }
            Found::Linear { weight, bias, .. } => {
                if !flattened {
                    layers.push(LayerSpec::Flatten);
                    flattened = true;
                }
                layers.push(LayerSpec::Linear {
                    weight,
                    bias,
                    out: None,
                });
                if n != last {
                    layers.push(LayerSpec::Relu);
                }
            }
            Found::Norm {
                weight,
                bias,
                mean,
                var,
            } => {
                // Right after the layer it normalises: before that layer's ReLU.
                let at = layers
                    .iter()
                    .rposition(|l| matches!(l, LayerSpec::Conv2d { .. } | LayerSpec::Linear { .. }))
                    .map_or(layers.len(), |p| p + 1);
                layers.insert(
                    at,
                    LayerSpec::Batchnorm {
                        weight,
                        bias,
                        mean,
                        var,
                        eps: 1e-5,
                    },
                );
            }
        }
    }
    layers
}
