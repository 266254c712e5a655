//! ONNX output: the network's own graph (an ONNX model's, or the one a sequential spec
//! describes) with the compressed weights, as the QDQ model onnxruntime and tract run:
//! integer-quantized weights stored as 8- or 4-bit codes with their scales behind a
//! DequantizeLinear, activations quantized as the recipe's `[activations]` says
//! (calibrated on the same samples `eval` keeps apart), the recipe and summary in the
//! model's `metadata_props`.

use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::compress::activations::{ActivationSpec, Mode};
use crate::compress::apply::AppliedTensor;
use crate::compress::quant::IntGrid;
use crate::error::{Error, Result};
use crate::eval::data::Dataset;
use crate::eval::{BoundGraph, Network};
use crate::model::Model;
use crate::net::onnx::OnnxGraph;
use crate::net::qdq::Activations;
use crate::net::spec::ArchSpec;
use crate::net::weights::{ModelWeights, spec_weights};

use super::{check_output, persist, temp_file_beside};

/// What an ONNX export wrote.
#[derive(Debug, Clone)]
pub struct OnnxExport {
    /// Bytes of the file written.
    pub bytes: u64,
    /// Tensors that stayed float, and why.
    pub notes: Vec<String>,
}

/// The network an `.onnx` export of `model` holds: the one `data` resolves (a given
/// or proposed spec, an ONNX model's graph), else an ONNX model's graph as stored
/// (its free dimensions must then be fixed), else the spec at `arch`.
pub fn export_network(
    model: &Model,
    arch: Option<&Path>,
    data: Option<&Dataset>,
) -> Result<Network> {
    Ok(match (data, model.format) {
        (Some(d), _) => Network::resolve(model, arch, d)?.0,
        (None, crate::model::Format::Onnx) => Network::Onnx(OnnxGraph::load(model, &[])?),
        (None, _) => match arch {
            Some(arch) => Network::Sequential(crate::net::spec::ArchSpec::load(arch)?),
            None => {
                return Err(Error::InvalidSetting(format!(
                    "{}: an .onnx export of a state_dict needs its architecture spec \
                     (or data, to propose one)",
                    model.path.display()
                )));
            }
        },
    })
}

/// The samples static activation quantization calibrates on: those `eval` keeps
/// apart from `data` with the same setting (none for dynamic or no activations).
pub fn calibration_set(
    activations: Option<&ActivationSpec>,
    data: Option<&Dataset>,
) -> Result<Option<Dataset>> {
    match (activations.map(ActivationSpec::calibration_samples), data) {
        (Some(n @ 1..), Some(d)) => Ok(Some(d.split_apart(n)?.1)),
        _ => Ok(None),
    }
}

/// How an ONNX export is written, beyond the model and its tensors.
#[derive(Default)]
pub struct OnnxSettings<'a> {
    /// The recipe's activation quantization.
    pub activations: Option<&'a ActivationSpec>,
    /// The samples static activation quantization calibrates on (the ones `eval`
    /// keeps apart).
    pub calibration: Option<&'a Dataset>,
    /// Key/value pairs for the model's `metadata_props` (the recipe, the summary).
    pub metadata: &'a [(&'a str, String)],
    /// Remove what structured pruning zeroed from a sequential network
    /// ([`crate::net::shrink::shrink`]) instead of storing zeros.
    pub shrink: bool,
}

/// Write `model` with `applied`'s tensors as an ONNX QDQ model at `out`. `network`
/// is the model's graph or sequential spec.
pub fn write_onnx(
    model: &Model,
    network: &Network,
    applied: &[(usize, AppliedTensor)],
    settings: &OnnxSettings,
    out: &Path,
    force: bool,
) -> Result<OnnxExport> {
    check_output(model, out, force)?;
    let unsupported = || Error::Unsupported {
        path: model.path.clone(),
        what: "an ONNX export is written for sequential networks and ONNX graphs; \
               write a language model as .gguf and a sentence encoder as .safetensors"
            .into(),
    };
    let mut notes = Vec::new();
    let shrunk = match (network, settings.shrink) {
        (Network::Sequential(spec), true) => shrunk_graph(model, spec, applied, &mut notes)?,
        _ => None,
    };
    let compressed = match shrunk {
        Some(bound) => bound,
        None => network
            .onnx_graph(model, applied)?
            .ok_or_else(unsupported)?,
    };
    let (activations, calibration) = (settings.activations, settings.calibration);
    let acts = match activations {
        None => None,
        Some(spec) if spec.mode == Mode::Dynamic => Some(Activations::Dynamic),
        Some(spec) => {
            let data = calibration.ok_or_else(|| {
                Error::InvalidSetting(format!(
                    "{}: static activation quantization needs calibration samples",
                    model.path.display()
                ))
            })?;
            // Calibrated on the original float model, as the evaluator does.
            let original = network
                .onnx_graph(model, &[])?
                .ok_or_else(unsupported)?
                .graph;
            crate::eval::check_input(original.input_shape(), data)?;
            Some(original.calibrate(&data.x, spec, |_, _| true)?)
        }
    };
    let (proto, stayed_float) =
        (compressed.graph).qdq_model(&compressed.tensors, acts.as_ref(), settings.metadata)?;
    notes.extend(stayed_float);
    let bytes = proto.encode_to_vec();
    let tmp = temp_file_beside(out)?;
    let mut file = std::io::BufWriter::new(tmp.as_file()?);
    file.write_all(&bytes).map_err(|e| Error::io(out, e))?;
    file.flush().map_err(|e| Error::io(out, e))?;
    drop(file);
    persist(tmp, out, force)?;
    Ok(OnnxExport {
        bytes: bytes.len() as u64,
        notes,
    })
}

/// `spec`'s network with what structured pruning zeroed removed (see
/// [`crate::net::shrink::shrink`]), as a graph with the compressed tensors it holds
/// (their integer grids carried over where the removal leaves them whole), or
/// `None` when nothing can go. What was removed and what stayed goes to `notes`.
fn shrunk_graph(
    model: &Model,
    spec: &ArchSpec,
    applied: &[(usize, AppliedTensor)],
    notes: &mut Vec<String>,
) -> Result<Option<BoundGraph<'static>>> {
    crate::net::check(model, spec, applied)?;
    let weights = spec_weights(spec, &ModelWeights::new(model, applied))?;
    let shrunk = crate::net::shrink::shrink(spec, &weights)?;
    if !shrunk.is_smaller() {
        return Ok(None);
    }
    for (name, n) in &shrunk.removed {
        let before = &weights[name].1;
        let after = &shrunk.weights[name].1;
        notes.push(format!(
            "structured pruning: `{name}` {before:?} -> {after:?} ({n} all-zero outputs removed \
             with the next layer's inputs)"
        ));
    }
    notes.extend(shrunk.notes.iter().cloned());
    let graph = OnnxGraph::from_spec(&shrunk.spec, &shrunk.weights, &model.path)?;
    let tensors = applied
        .iter()
        .filter(|(_, t)| graph.holds(&t.name))
        .filter_map(|(i, t)| {
            let (values, dims) = shrunk.weights.get(&t.name)?.clone();
            let before = &weights[&t.name].1;
            let grid = match (&t.grid, shrunk.kept.get(&t.name)) {
                (None, _) => None,
                _ if shrunk.folded.contains(&t.name) => None,
                (Some(grid), Some((rows, cols))) => {
                    let inner: usize = dims[2..].iter().product();
                    let row_len = before[1..].iter().product();
                    let carried = grid.select(rows, cols, row_len, inner);
                    if carried.is_none() {
                        notes.push(format!(
                            "`{}`: its group scales do not survive the removal; stored as float32 values",
                            t.name
                        ));
                    }
                    carried
                }
                (Some(grid), None) if *before == dims => Some(grid.clone()),
                // A bias or batch-norm vector cut with its layer: one scale still fits.
                (Some(grid), None) if grid.scales.len() == 1 => Some(IntGrid {
                    group: values.len().max(1),
                    ..grid.clone()
                }),
                (Some(_), None) => None,
            };
            if t.grid.is_some() && grid.is_none() && shrunk.folded.contains(&t.name) {
                notes.push(format!(
                    "`{}`: removed outputs' constants folded in, off its grid; stored as float32 values",
                    t.name
                ));
            }
            Some((
                *i,
                AppliedTensor {
                    shape: dims.iter().map(|&d| d as u64).collect(),
                    values,
                    grid,
                    ..t.clone()
                },
            ))
        })
        .collect::<Vec<_>>();
    Ok(Some(BoundGraph {
        graph: std::borrow::Cow::Owned(graph),
        tensors: std::borrow::Cow::Owned(tensors),
    }))
}
