//! Writing a spec from a state_dict's tensor names and shapes, where that is
//! unambiguous, saying what was assumed.

use super::spec::{ArchSpec, LayerSpec, VERSION};
use crate::error::{Error, Result};
use crate::model::{LayerKind, Model};

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
    let cannot = |why: String| Error::Unsupported {
        path: model.path.clone(),
        what: format!("cannot propose an architecture: {why}; write a spec (--arch)"),
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
        let (chosen, note) = conv_choice(&found, &input, &cannot).map_err(|e| {
            // Data of another size is likelier than an odd network: say which sizes
            // the weights fit, if square inputs do.
            let c = input[0];
            let fits: Vec<usize> = (1..=1024usize)
                .filter(|&side| conv_choice(&found, &[c, side, side], &cannot).is_ok())
                .collect();
            if fits.is_empty() {
                return e;
            }
            // Runs of consecutive sides (pooling floors make several fit).
            let mut runs: Vec<(usize, usize)> = Vec::new();
            for &side in &fits {
                match runs.last_mut() {
                    Some(run) if run.1 + 1 == side => run.1 = side,
                    _ => runs.push((side, side)),
                }
            }
            let sizes: Vec<String> = runs
                .iter()
                .take(4)
                .map(|&(a, b)| match a == b {
                    true => format!("{c}×{a}×{a}"),
                    false => format!("{c}×{a}×{a} to {c}×{b}×{b}"),
                })
                .collect();
            Error::Unsupported {
                path: model.path.clone(),
                what: format!(
                    "the samples have {sample_len} values ({c}×{}×{}), but the model's weights \
                     fit inputs of {}{}: is the data for this model? (or write a spec with \
                     --arch)",
                    input[1],
                    input[2],
                    sizes.join(", "),
                    if runs.len() > 4 { ", …" } else { "" }
                ),
            }
        })?;
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
