//! Fresh weights for a spec, as PyTorch initialises its layers (a student to distil
//! into, a network to train from scratch).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::spec::{ArchSpec, LayerSpec, window_output};
use super::weights::Weights;
use crate::error::{Error, Result};

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
