//! ONNX output: the network's own graph (an ONNX model's, or the one a sequential spec
//! describes) with the compressed weights, as the QDQ model onnxruntime and tract run:
//! integer-quantized weights stored as int8/uint8 codes with their scales behind a
//! DequantizeLinear, activations quantized as the recipe's `[activations]` says
//! (calibrated on the same samples `eval` keeps apart), the recipe and summary in the
//! model's `metadata_props`.

use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::compress::activations::{ActivationSpec, Mode};
use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::eval::Network;
use crate::eval::data::Dataset;
use crate::model::Model;
use crate::net::onnx::OnnxGraph;
use crate::net::qdq::Activations;

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

/// Write `model` with `applied`'s tensors as an ONNX QDQ model at `out`. `network`
/// is the model's graph or sequential spec; `calibration` the samples static
/// activation quantization calibrates on (the ones `eval` keeps apart).
#[allow(clippy::too_many_arguments)]
pub fn write_onnx(
    model: &Model,
    network: &Network,
    applied: &[(usize, AppliedTensor)],
    activations: Option<&ActivationSpec>,
    calibration: Option<&Dataset>,
    metadata: &[(&str, String)],
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
    let original = network
        .onnx_graph(model, &[])?
        .ok_or_else(unsupported)?
        .graph;
    let compressed = network
        .onnx_graph(model, applied)?
        .ok_or_else(unsupported)?;
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
            crate::eval::check_input(original.input_shape(), data)?;
            Some(original.calibrate(&data.x, spec, |_, _| true)?)
        }
    };
    let (proto, notes) =
        (compressed.graph).qdq_model(&compressed.tensors, acts.as_ref(), metadata)?;
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
