//! Where a network's weights come from: the model's own tensors, compressed ones in
//! their place, or tensors held in memory (trained, generated, shrunk).

use std::collections::HashMap;

use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::Model;

/// Named tensors held in memory: values and shape.
pub type Weights = HashMap<String, (Vec<f32>, Vec<usize>)>;

/// A network's weights by tensor name.
pub trait WeightSource {
    /// The values and shape of tensor `name`.
    fn weight(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)>;

    /// The shape of tensor `name`, without decoding its values where the source can
    /// (checking a spec reads only shapes).
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.weight(name).map(|(_, dims)| dims)
    }
}

impl WeightSource for Weights {
    fn weight(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.get(name).cloned().ok_or_else(|| no_tensor(name))
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.get(name)
            .map(|(_, dims)| dims.clone())
            .ok_or_else(|| no_tensor(name))
    }
}

/// Every tensor `spec`'s layers read, from `source`, held in memory (to shrink or
/// train them).
pub fn spec_weights(
    spec: &crate::net::spec::ArchSpec,
    source: &dyn WeightSource,
) -> Result<Weights> {
    let mut weights = Weights::new();
    for layer in &spec.layers {
        for name in layer.tensors() {
            weights.insert(name.to_owned(), source.weight(name)?);
        }
    }
    Ok(weights)
}

/// Tensor `name` of `weights`, borrowed (a [`WeightSource`] gives copies).
pub fn held<'a>(weights: &'a Weights, name: &str) -> Result<&'a (Vec<f32>, Vec<usize>)> {
    weights.get(name).ok_or_else(|| no_tensor(name))
}

fn no_tensor(name: &str) -> Error {
    Error::InvalidSetting(format!("no tensor named `{name}`"))
}

/// A model's own tensors, with compressed ones (from `apply`) taking their place.
pub struct ModelWeights<'a> {
    pub model: &'a Model,
    pub replaced: HashMap<&'a str, &'a AppliedTensor>,
}

impl<'a> ModelWeights<'a> {
    pub fn new(model: &'a Model, applied: &'a [(usize, AppliedTensor)]) -> Self {
        ModelWeights {
            model,
            replaced: applied.iter().map(|(_, t)| (t.name.as_str(), t)).collect(),
        }
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.model
            .tensor_index(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.model.path.clone(),
                name: name.to_owned(),
            })
    }
}

impl WeightSource for ModelWeights<'_> {
    fn weight(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        if let Some(t) = self.replaced.get(name) {
            return Ok((t.values.clone(), dims(&t.shape)));
        }
        let i = self.index(name)?;
        Ok((
            self.model.tensor_f32(i)?,
            dims(&self.model.tensors[i].shape),
        ))
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        if let Some(t) = self.replaced.get(name) {
            return Ok(dims(&t.shape));
        }
        Ok(dims(&self.model.tensors[self.index(name)?].shape))
    }
}

fn dims(shape: &[u64]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}
