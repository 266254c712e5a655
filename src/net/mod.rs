//! What a network is, shared by evaluation, training and the benchmarks: a sequential
//! [`spec`] (given, or [`propose`]d from a state_dict), its [`shapes`] inferred once
//! from the weights' shapes, the [`weights`] it runs with (the model's own, compressed
//! ones in their place, or tensors in memory), fresh weights ([`init`]) and the smaller
//! network structured pruning allows ([`shrink`]), and the forward passes that map a
//! batch of samples to class scores ([`Runner`]):
//! - [`sequential_runner`]: the fast path, a first convolution over few channels
//!   computed directly ([`first_conv`]) and the rest as an ONNX graph on tract;
//! - [`onnx`]: a model's own ONNX graph on tract, compressed weights written in;
//! - [`candle`]: the plain candle reference the fast path is tested against.
//!
//! Training's differentiable network is `train::trainable`, built on the same spec.

pub mod candle;
pub mod capture;
pub mod first_conv;
pub mod init;
pub mod onnx;
pub mod propose;
pub mod qdq;
pub mod shapes;
pub mod shrink;
pub mod sparse;
pub mod spec;
pub mod weights;

use std::path::Path;

use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::Model;
use shapes::Shapes;
use spec::ArchSpec;
use weights::{ModelWeights, WeightSource};

/// Anything that maps a batch of samples to class scores.
pub trait Runner: Send + Sync {
    /// One sample's shape.
    fn input_shape(&self) -> &[usize];
    /// Scores per sample.
    fn classes(&self) -> usize;
    /// Scores (logits) for `n` samples laid out row-major in `batch`: `n × classes`.
    fn logits(&self, batch: &[f32], n: usize) -> Result<Vec<f32>>;
}

/// The forward pass of a sequential spec with `weights`: a first convolution over few
/// channels computed directly ([`first_conv`]), the rest on tract (see
/// [`onnx::OnnxGraph::from_spec`]). The spec is checked against the weights' shapes
/// first ([`shapes::infer`]); `origin` is what tract's errors name.
pub fn sequential_runner(
    spec: &ArchSpec,
    weights: &dyn WeightSource,
    origin: &Path,
) -> Result<Box<dyn Runner>> {
    shapes::infer(spec, weights)?;
    Ok(match first_conv::FirstConv::from_spec(spec, weights)? {
        Some(head) => {
            let rest = spec.from_layer(head.layers(), head.output_shape().to_vec());
            Box::new(first_conv::FirstConvRunner {
                rest: onnx::OnnxGraph::from_spec(&rest, weights, origin)?.runner(&[])?,
                input: spec.input.clone(),
                head,
            })
        }
        None => Box::new(onnx::OnnxGraph::from_spec(spec, weights, origin)?.runner(&[])?),
    })
}

/// The shapes of `spec` over `model`'s weights, compressed ones from `applied` in
/// their place; a layer that does not fit is named, with the model.
pub fn check(model: &Model, spec: &ArchSpec, applied: &[(usize, AppliedTensor)]) -> Result<Shapes> {
    shapes::infer(spec, &ModelWeights::new(model, applied)).map_err(|e| in_model(model, e))
}

/// The candle reference network of `spec` with `model`'s weights, compressed ones from
/// `applied` in their place.
pub fn candle_runner(
    model: &Model,
    spec: &ArchSpec,
    applied: &[(usize, AppliedTensor)],
) -> Result<candle::Sequential> {
    candle::Sequential::build(spec, &ModelWeights::new(model, applied))
        .map_err(|e| in_model(model, e))
}

fn in_model(model: &Model, e: Error) -> Error {
    Error::Architecture {
        model: model.path.clone(),
        cause: Box::new(e),
    }
}

/// Inference batch norm γ·(x − μ)/√(σ² + ε) + β as `x·scale + shift` per channel,
/// from `source`'s γ, β, running mean and running variance (named in that order).
pub(crate) fn batchnorm_affine(
    source: &dyn WeightSource,
    [gamma, beta, mean, var]: [&String; 4],
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |name: &str| source.weight(name).map(|(v, _)| v);
    let (gamma, beta, mean, var) = (get(gamma)?, get(beta)?, get(mean)?, get(var)?);
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(&g, &v)| (f64::from(g) / (f64::from(v) + eps).sqrt()) as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(mean.iter().zip(&scale))
        .map(|(&b, (&m, &s))| b - m * s)
        .collect();
    Ok((scale, shift))
}
