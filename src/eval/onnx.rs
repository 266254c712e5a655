//! The ONNX runner: a model's own ONNX graph, run by tract (a pure-Rust ONNX engine),
//! with compressed weights written into the graph's initializers (or `Constant` nodes)
//! before it is optimised. The graph is planned for a fixed micro-batch and micro-batches
//! run in parallel on the rayon pool, so results depend neither on the evaluation's batch
//! size nor on the thread count.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use rayon::prelude::*;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{ModelProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use super::Runner;
use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::Model;

/// Samples per planned forward pass when the graph's batch dimension is free: large
/// enough for tract's matrix kernels, small enough to spread a batch over all cores.
const MICRO_BATCH: usize = 32;

/// A model's ONNX graph and its one input, ready to be bound to weights.
pub struct OnnxGraph {
    path: PathBuf,
    proto: Arc<ModelProto>,
    /// One sample's shape (the input's dimensions after the batch dimension).
    sample: Vec<usize>,
    /// Samples per forward pass: the input's fixed batch size, or [`MICRO_BATCH`].
    micro: usize,
}

fn onnx_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidSetting(format!("{}: ONNX graph: {what}", path.display()))
}

impl OnnxGraph {
    /// Read `model`'s ONNX graph. Its input must be one float tensor with a batch
    /// dimension; dimensions the graph leaves symbolic are taken from `sample_hint`
    /// (the data set's sample shape).
    pub fn load(model: &Model, sample_hint: &[usize]) -> Result<OnnxGraph> {
        let path = &model.path;
        let bytes = crate::model::map_file(path)?;
        let proto = ModelProto::decode(&bytes[..])
            .map_err(|e| onnx_error(path, format!("protobuf decoding failed: {e}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| onnx_error(path, "the model has no graph"))?;
        let stored: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !stored.contains(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(onnx_error(
                path,
                format!(
                    "the classifier runner needs one input, the graph has {} ({})",
                    inputs.len(),
                    inputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let Some(TypeValue::TensorType(tensor)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(onnx_error(
                path,
                format!("input `{}` is not a tensor", input.name),
            ));
        };
        if tensor.elem_type != DataType::Float as i32 {
            return Err(onnx_error(
                path,
                format!(
                    "input `{}` has element type {}; the classifier runner feeds float32",
                    input.name,
                    DataType::try_from(tensor.elem_type)
                        .map_or_else(|_| tensor.elem_type.to_string(), |t| t.as_str_name().into())
                ),
            ));
        }
        let dims: Vec<Option<usize>> = tensor
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some((&batch, rest)) = dims.split_first() else {
            return Err(onnx_error(
                path,
                format!("input `{}` has no batch dimension", input.name),
            ));
        };
        let sample: Vec<usize> = if rest.iter().all(Option::is_some) {
            rest.iter().flatten().copied().collect()
        } else if rest.len() == sample_hint.len()
            && rest
                .iter()
                .zip(sample_hint)
                .all(|(d, h)| d.is_none_or(|d| d == *h))
        {
            sample_hint.to_vec()
        } else {
            return Err(onnx_error(
                path,
                format!(
                    "input `{}` has shape {} and the data's samples are {sample_hint:?}",
                    input.name,
                    shape_text(&dims)
                ),
            ));
        };
        Ok(OnnxGraph {
            path: path.clone(),
            sample,
            micro: batch.unwrap_or(MICRO_BATCH),
            proto: Arc::new(proto),
        })
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.sample
    }

    /// Plan the graph with `applied`'s compressed tensors in place of the stored ones.
    pub fn runner(&self, applied: &[(usize, AppliedTensor)]) -> Result<OnnxRunner> {
        let err = |what: String| onnx_error(&self.path, what);
        let mut proto = (*self.proto).clone();
        let graph = proto.graph.as_mut().ok_or_else(|| err("no graph".into()))?;
        for (_, t) in applied {
            let slot = graph
                .initializer
                .iter_mut()
                .find(|i| i.name == t.name)
                .or_else(|| {
                    graph
                        .node
                        .iter_mut()
                        .filter(|n| n.op_type == "Constant" && n.output.first() == Some(&t.name))
                        .flat_map(|n| n.attribute.iter_mut())
                        .find(|a| a.name == "value")
                        .and_then(|a| a.t.as_mut())
                })
                .ok_or_else(|| err(format!("no initializer or constant named `{}`", t.name)))?;
            replace_values(slot, &t.values)
                .map_err(|e| err(format!("tensor `{}`: {e}", t.name)))?;
        }
        let dir = self.path.parent().and_then(Path::to_str);
        let planned = (|| -> TractResult<_> {
            let mut model = tract_onnx::onnx().parse(&proto, dir)?.model;
            let mut shape = vec![self.micro];
            shape.extend(&self.sample);
            model.set_input_fact(0, f32::fact(&shape).into())?;
            let model = model.into_optimized()?;
            let out = model.output_fact(0)?.clone();
            Ok((model.into_runnable()?, out))
        })();
        let (plan, out) = planned.map_err(|e| err(format!("{e:#}")))?;
        let out_shape: Vec<Option<usize>> = out.shape.iter().map(|d| d.to_usize().ok()).collect();
        let classes = match out_shape.as_slice() {
            [Some(b), Some(c)] if *b == self.micro && out.datum_type == f32::datum_type() => *c,
            _ => {
                return Err(err(format!(
                    "the output is {:?} {}; a classifier gives float32 scores [batch, classes]",
                    out.datum_type,
                    shape_text(&out_shape)
                )));
            }
        };
        Ok(OnnxRunner {
            plan,
            sample: self.sample.clone(),
            micro: self.micro,
            classes,
        })
    }
}

fn shape_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Store `values` in `t`, in `t`'s own float type (the graph computes in it).
fn replace_values(t: &mut TensorProto, values: &[f32]) -> std::result::Result<(), String> {
    let numel: i64 = t.dims.iter().product();
    if numel != values.len() as i64 {
        return Err(format!("{} values for shape {:?}", values.len(), t.dims));
    }
    let raw: Vec<u8> = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Ok(DataType::Double) => values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        Ok(DataType::Float16) => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Ok(DataType::Bfloat16) => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => return Err(format!("element type {} is not a float type", t.data_type)),
    };
    t.raw_data = raw;
    t.float_data.clear();
    t.double_data.clear();
    t.int32_data.clear();
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// An ONNX graph planned for one micro-batch.
pub struct OnnxRunner {
    plan: Arc<TypedRunnableModel>,
    sample: Vec<usize>,
    micro: usize,
    classes: usize,
}

impl Runner for OnnxRunner {
    fn input_shape(&self) -> &[usize] {
        &self.sample
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn logits(&self, batch: &[f32], n: usize) -> Result<Vec<f32>> {
        let len: usize = self.sample.iter().product();
        let mut shape = vec![self.micro];
        shape.extend(&self.sample);
        let mut out = vec![0f32; n * self.classes];
        out.par_chunks_mut(self.micro * self.classes)
            .zip(batch[..n * len].par_chunks(self.micro * len))
            .try_for_each(|(scores, xs)| {
                // The last micro-batch is padded with zeros; their scores are dropped.
                let mut padded = xs.to_vec();
                padded.resize(self.micro * len, 0.0);
                let input = tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), padded)
                    .map_err(|e| e.to_string())?;
                let result = self
                    .plan
                    .run(tvec!(Tensor::from(input).into()))
                    .map_err(|e| format!("{e:#}"))?;
                let all = result[0]
                    .to_plain_array_view::<f32>()
                    .map_err(|e| format!("{e:#}"))?;
                // Logical (row-major) order, whatever the output's memory layout.
                for (s, v) in scores.iter_mut().zip(all.iter()) {
                    *s = *v;
                }
                Ok::<_, String>(())
            })
            .map_err(|e| Error::InvalidSetting(format!("ONNX forward pass: {e}")))?;
        Ok(out)
    }
}
