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
use crate::net::weights::ModelWeights;

use super::{check_output, persist, temp_file_beside};

/// What an ONNX export wrote.
#[derive(Debug, Clone)]
pub struct OnnxExport {
    /// Bytes of the file written.
    pub bytes: u64,
    /// Tensors that stayed float, and why.
    pub notes: Vec<String>,
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
    let (original, compressed, applied) = match network {
        Network::Sequential(spec) => {
            crate::net::check(model, spec, applied)?;
            let original = OnnxGraph::from_spec(spec, &ModelWeights::new(model, &[]), &model.path)?;
            let compressed =
                OnnxGraph::from_spec(spec, &ModelWeights::new(model, applied), &model.path)?;
            // The graph holds the spec's weights under their names (a batch norm's
            // folds into constants of its own): those are the tensors to store.
            let held: Vec<(usize, AppliedTensor)> = applied
                .iter()
                .filter(|(_, t)| compressed.holds(&t.name))
                .cloned()
                .collect();
            (original, compressed, held)
        }
        Network::Onnx(graph) => (graph.clone(), graph.clone(), applied.to_vec()),
        Network::CausalLm(_) | Network::SentenceEncoder(_) => {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: "an ONNX export is written for sequential networks and ONNX graphs; \
                       write a language model as .gguf and a sentence encoder as .safetensors"
                    .into(),
            });
        }
    };
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
    let (proto, notes) = compressed.qdq_model(&applied, acts.as_ref(), metadata)?;
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
