//! Evaluating many compressed variants of one model on one data set, reusing what the
//! variants share. Sweeps and sliders measure dozens of configurations that differ in a
//! few tensors, so:
//! - a variant whose changed tensors are exactly those of one measured before (moving
//!   back to a slider level; 0% of any pruning method) returns its metrics at once;
//! - a sequential network whose first layers are unchanged starts from their cached
//!   activations, so a per-layer sensitivity point of a late layer runs only the
//!   layers from that one on.
//!
//! Activation quantization runs the network as a QDQ graph (`net::qdq`), calibrated
//! once per setting on samples kept apart from the evaluation data.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use super::data::Dataset;
use super::{Metrics, Network, evaluate};
use crate::compress::activations::{ActivationSpec, Mode};
use crate::compress::apply::AppliedTensor;
use crate::compress::calibration::{Need, Statistics};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::net::qdq::Activations;
use crate::net::sequential_runner;
use crate::net::spec::{ArchSpec, LayerSpec};
use crate::net::weights::ModelWeights;

/// Activations kept per data set and cut, at most: the digit CNN's largest useful cut
/// (32 × 14 × 14 per image) is 125 MB for 5,000 images.
const PREFIX_BUDGET: usize = 1 << 30;

/// The activations entering layer `n` of a sequential network.
enum Prefix {
    /// One thread is computing them; others run the whole network meanwhile rather
    /// than wait (waiting inside rayon work could deadlock on nested jobs).
    Computing,
    Ready(Arc<Dataset>),
    /// Over the budget, or not computable: always run the whole network.
    Unavailable,
}

/// A network and data set, with the metrics and activations measured so far. It
/// belongs to one model: every call passes that model.
pub struct Evaluator {
    network: Arc<Network>,
    data: Arc<Dataset>,
    /// Metrics by the changed tensors' names and values (see [`changed_key`]).
    results: Mutex<HashMap<u64, Metrics>>,
    prefixes: Mutex<HashMap<usize, Prefix>>,
    /// A sequential spec's input shape at every layer, inferred (and the spec checked
    /// against the weights) at the first measurement: compression keeps every
    /// tensor's shape, so later variants need neither again.
    layer_inputs: Mutex<Option<Vec<Vec<usize>>>>,
    /// Samples kept apart from `data` to calibrate static activation quantization.
    calibration: Option<Arc<Dataset>>,
    /// Calibrated activation quantization by setting (its JSON).
    activations: Mutex<HashMap<String, Arc<Activations>>>,
    /// Evaluators of the same network that keep samples apart, by how many (the
    /// newest few; see [`Evaluator::keeping_apart`]).
    kept_apart: Mutex<Vec<(usize, Arc<Evaluator>)>>,
    /// Calibration statistics collected on `calibration` (the newest few), with what
    /// they hold and of which tensors; the lock is held while collecting, so
    /// parallel variants wait for one collection.
    statistics: Mutex<Vec<Collected>>,
}

/// Statistics collected once: what they hold, of which tensors.
type Collected = (Need, Vec<String>, Arc<Statistics>);

/// Calibration splits an evaluator keeps at hand (each holds a copy of the data).
const KEPT_APART: usize = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tensors `applied` really changes (a tensor a recipe matched but left exact,
/// such as 0% sparsity, is the original).
fn changed(applied: &[(usize, AppliedTensor)]) -> Vec<&AppliedTensor> {
    let mut out: Vec<&AppliedTensor> = applied
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.fidelity.noise != 0.0)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A key for the model with `changed` in place of its own tensors: their names and
/// value bits.
fn changed_key(changed: &[&AppliedTensor]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for t in changed {
        t.name.hash(&mut h);
        for chunk in t.values.chunks(1024) {
            let bytes: Vec<u8> = chunk
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect();
            h.write(&bytes);
        }
    }
    h.finish()
}

impl Evaluator {
    pub fn new(network: Arc<Network>, data: Arc<Dataset>) -> Self {
        Evaluator {
            network,
            data,
            results: Mutex::new(HashMap::new()),
            prefixes: Mutex::new(HashMap::new()),
            layer_inputs: Mutex::new(None),
            calibration: None,
            activations: Mutex::new(HashMap::new()),
            kept_apart: Mutex::new(Vec::new()),
            statistics: Mutex::new(Vec::new()),
        }
    }

    /// An evaluator that keeps `calibration` samples of `data` apart (see
    /// [`Dataset::split_apart`]) to calibrate static activation quantization, and
    /// evaluates every variant, the original too, on the rest.
    pub fn with_calibration(
        network: Arc<Network>,
        data: &Dataset,
        calibration: usize,
    ) -> Result<Self> {
        let (rest, apart) = data.split_apart(calibration)?;
        Ok(Evaluator {
            calibration: Some(Arc::new(apart)),
            ..Evaluator::new(network, Arc::new(rest))
        })
    }

    /// An evaluator that calibrates on `calibration`, samples of another file, and
    /// evaluates every variant on all of `data`.
    pub fn with_calibration_set(
        network: Arc<Network>,
        data: Arc<Dataset>,
        calibration: Dataset,
    ) -> Self {
        Evaluator {
            calibration: Some(Arc::new(calibration)),
            ..Evaluator::new(network, data)
        }
    }

    /// This evaluator's network on the same data with `calibration` samples kept
    /// apart ([`Evaluator::with_calibration`]), made once and kept for the next
    /// variant: what the app measures a static activation setting with, the
    /// original as well, so every figure it compares covers the same samples.
    pub fn keeping_apart(&self, calibration: usize) -> Result<Arc<Evaluator>> {
        let mut kept = lock(&self.kept_apart);
        if let Some(at) = kept.iter().position(|(n, _)| *n == calibration) {
            let hit = kept.remove(at);
            kept.push(hit.clone());
            return Ok(hit.1);
        }
        let made = Arc::new(Evaluator::with_calibration(
            self.network.clone(),
            &self.data,
            calibration,
        )?);
        if kept.len() == KEPT_APART {
            kept.remove(0);
        }
        kept.push((calibration, made.clone()));
        Ok(made)
    }

    /// What data-aware methods learn from, over the samples kept apart (see
    /// [`Network::statistics`]): collected once, a Gram matrix serving a diagonal
    /// request too.
    pub fn statistics(
        &self,
        model: &Model,
        (need, tensors): (Need, Vec<String>),
        progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Arc<Statistics>> {
        let mut held = lock(&self.statistics);
        let hit = held
            .iter()
            .find(|(n, names, _)| *n >= need && tensors.iter().all(|t| names.contains(t)));
        if let Some((_, _, s)) = hit {
            return Ok(s.clone());
        }
        let calibration = self.calibration_samples(model)?;
        let stats =
            Arc::new(
                self.network
                    .statistics(model, calibration, need, &tensors, progress)?,
            );
        if held.len() == KEPT_APART {
            held.remove(0);
        }
        held.push((need, tensors, stats.clone()));
        Ok(stats)
    }

    /// The calibration samples data-aware methods learn from, or why there are none.
    pub fn calibration_samples(&self, model: &Model) -> Result<&Dataset> {
        self.calibration.as_deref().ok_or_else(|| {
            Error::InvalidSetting(format!(
                "{}: data-aware methods learn from calibration samples kept apart from the \
                 evaluation data; none were set aside for this evaluation",
                model.path.display()
            ))
        })
    }

    /// The samples kept apart for calibration, if any.
    pub fn calibration(&self) -> Option<&Dataset> {
        self.calibration.as_deref()
    }

    /// The input shape of every layer of `spec` on `model`'s weights (see
    /// `layer_inputs`), inferred once, which checks the spec and names the layer of
    /// any mismatch.
    fn layer_inputs(&self, model: &Model, spec: &ArchSpec) -> Result<Vec<Vec<usize>>> {
        if let Some(shapes) = lock(&self.layer_inputs).as_ref() {
            return Ok(shapes.clone());
        }
        let shapes = crate::net::check(model, spec, &[])?.layer_inputs;
        *lock(&self.layer_inputs) = Some(shapes.clone());
        Ok(shapes)
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// How many distinct variants have been measured.
    pub fn measured(&self) -> usize {
        lock(&self.results).len()
    }

    /// How many layers' input activations are cached.
    pub fn prefixes(&self) -> usize {
        lock(&self.prefixes)
            .values()
            .filter(|p| matches!(p, Prefix::Ready(_)))
            .count()
    }

    /// Metrics of `model` with `applied`'s tensors in place, in batches of `batch`;
    /// `progress(done, total)` returns false to cancel. Equal to
    /// `evaluate(network.runner(model, applied), data)` (within float rounding where
    /// a cached prefix is used), only faster when something is reused.
    pub fn measure(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
        batch: usize,
        progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Metrics> {
        self.measure_with(model, applied, None, batch, progress)
    }

    /// [`Evaluator::measure`] with the weighted layers' inputs quantized as
    /// `activations` says (none: float activations).
    pub fn measure_with(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
        activations: Option<&ActivationSpec>,
        batch: usize,
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Metrics> {
        let changed = changed(applied);
        let mut key = changed_key(&changed);
        if let Some(spec) = activations {
            let mut h = std::hash::DefaultHasher::new();
            key.hash(&mut h);
            serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
            key = h.finish();
        }
        if let Some(m) = lock(&self.results).get(&key) {
            return Ok(*m);
        }
        if let Some(spec) = activations {
            let metrics = self.measure_quantized(model, applied, spec, batch, &mut progress)?;
            lock(&self.results).insert(key, metrics);
            return Ok(metrics);
        }
        let metrics = match self.network.as_ref() {
            Network::Sequential(spec) => {
                let layer_inputs = self.layer_inputs(model, spec)?;
                let cut = spec
                    .layers
                    .iter()
                    .position(|l| {
                        l.tensors()
                            .iter()
                            .any(|n| changed.iter().any(|t| t.name == *n))
                    })
                    .unwrap_or(spec.layers.len());
                let weights = ModelWeights::new(model, applied);
                let prefix = match (cut, layer_inputs.get(cut)) {
                    (1.., Some(shape)) => {
                        self.prefix(model, spec, cut, shape, batch, &mut progress)?
                    }
                    _ => None,
                };
                match prefix {
                    Some(activations) => {
                        let rest = spec.from_layer(cut, activations.sample_shape.clone());
                        let runner = sequential_runner(&rest, &weights, &model.path)?;
                        evaluate(runner.as_ref(), &activations, batch, progress)?
                    }
                    None => {
                        let runner = sequential_runner(spec, &weights, &model.path)?;
                        evaluate(runner.as_ref(), &self.data, batch, progress)?
                    }
                }
            }
            Network::Onnx(graph) => evaluate(&graph.runner(applied)?, &self.data, batch, progress)?,
            Network::CausalLm(lm) => {
                lm.measure(model, applied, !changed.is_empty(), &self.data, progress)?
            }
            Network::SentenceEncoder(task) => task.measure(model, applied, progress)?,
        };
        lock(&self.results).insert(key, metrics);
        Ok(metrics)
    }

    /// Metrics with quantized activations: the network as a QDQ graph on tract.
    fn measure_quantized(
        &self,
        model: &Model,
        applied: &[(usize, AppliedTensor)],
        spec: &ActivationSpec,
        batch: usize,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Metrics> {
        let acts = self.calibrated(model, spec, progress)?;
        let bound = (self.network.onnx_graph(model, applied)?)
            .ok_or_else(|| activations_unsupported(model))?;
        let runner = bound.graph.quantized_runner(&bound.tensors, &acts)?;
        evaluate(&runner, &self.data, batch, progress)
    }

    /// Activation quantization for `spec`, calibrated on the original model over the
    /// samples kept apart (once per setting).
    fn calibrated(
        &self,
        model: &Model,
        spec: &ActivationSpec,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Arc<Activations>> {
        if spec.mode == Mode::Dynamic {
            return Ok(Arc::new(Activations::Dynamic));
        }
        let key = serde_json::to_string(spec).unwrap_or_default();
        if let Some(a) = lock(&self.activations).get(&key) {
            return Ok(a.clone());
        }
        let Some(calibration) = &self.calibration else {
            return Err(Error::InvalidSetting(format!(
                "{}: static activation quantization needs calibration samples kept apart \
                 from the evaluation data; none were set aside for this evaluation",
                model.path.display()
            )));
        };
        if calibration.len() != spec.calibration_samples() {
            return Err(Error::InvalidSetting(format!(
                "{}: the recipe calibrates on {} samples, but this evaluation kept {} apart",
                model.path.display(),
                spec.calibration_samples(),
                calibration.len()
            )));
        }
        let bound =
            (self.network.onnx_graph(model, &[])?).ok_or_else(|| activations_unsupported(model))?;
        let graph = bound.graph;
        super::check_input(graph.input_shape(), calibration)?;
        let acts = Arc::new(graph.calibrate(&calibration.x, spec, progress)?);
        lock(&self.activations).insert(key, acts.clone());
        Ok(acts)
    }

    /// The data's activations entering layer `cut` (of sample shape `shape`) with the
    /// model's own weights; `None` while another thread computes them or when they do
    /// not fit the budget.
    fn prefix(
        &self,
        model: &Model,
        spec: &ArchSpec,
        cut: usize,
        shape: &[usize],
        batch: usize,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Option<Arc<Dataset>>> {
        {
            let mut prefixes = lock(&self.prefixes);
            match prefixes.get(&cut) {
                Some(Prefix::Ready(d)) => return Ok(Some(d.clone())),
                Some(Prefix::Computing | Prefix::Unavailable) => return Ok(None),
                None => {}
            }
            let bytes = self.data.len() * shape.iter().product::<usize>() * 4;
            let held: usize = prefixes
                .values()
                .map(|p| match p {
                    Prefix::Ready(d) => d.x.len() * 4,
                    _ => 0,
                })
                .sum();
            if held + bytes > PREFIX_BUDGET {
                prefixes.insert(cut, Prefix::Unavailable);
                return Ok(None);
            }
            prefixes.insert(cut, Prefix::Computing);
        }
        let computed = self.compute_prefix(model, spec, cut, shape, batch, progress);
        let mut prefixes = lock(&self.prefixes);
        match computed {
            Ok(d) => {
                let d = Arc::new(d);
                prefixes.insert(cut, Prefix::Ready(d.clone()));
                Ok(Some(d))
            }
            Err(e) => {
                prefixes.remove(&cut);
                Err(e)
            }
        }
    }

    fn compute_prefix(
        &self,
        model: &Model,
        spec: &ArchSpec,
        cut: usize,
        shape: &[usize],
        batch: usize,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Dataset> {
        let mut layers = spec.layers[..cut].to_vec();
        // One row of features per sample, whatever the layout (undone by `shape`).
        layers.push(LayerSpec::Flatten);
        let head = ArchSpec {
            version: spec.version,
            input: spec.input.clone(),
            layers,
        };
        let runner = sequential_runner(&head, &ModelWeights::new(model, &[]), &model.path)?;
        let (n, len) = (self.data.len(), self.data.sample_len());
        let width: usize = shape.iter().product();
        let mut x = Vec::with_capacity(n * width);
        for start in (0..n).step_by(batch.max(1)) {
            // Checked as evaluation batches are: a cancel stops here too.
            if !progress(0, n) {
                return Err(Error::Cancelled);
            }
            let m = batch.max(1).min(n - start);
            let out = runner.logits(&self.data.x[start * len..(start + m) * len], m)?;
            if out.len() != m * width {
                return Err(Error::Internal(format!(
                    "{}: layer {} receives {} values per sample, expected {shape:?}",
                    model.path.display(),
                    cut + 1,
                    out.len() / m.max(1)
                )));
            }
            x.extend_from_slice(&out);
        }
        Ok(Dataset {
            source: self.data.source.clone(),
            x,
            labels: self.data.labels.clone(),
            sample_shape: shape.to_vec(),
        })
    }
}

/// Why a language model or sentence encoder takes no `[activations]` section.
fn activations_unsupported(model: &Model) -> Error {
    Error::Unsupported {
        path: model.path.clone(),
        what: "activation quantization is simulated for sequential networks and ONNX graphs; \
               for a llama GGUF, ggml's CPU kernels already quantize activations to 8 bits \
               inside the quantized dot products; a BERT sentence encoder's cannot be \
               quantized yet"
            .into(),
    }
}
