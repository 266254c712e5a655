//! safetensors output: dequantized ("fake-quant") f32 values that any framework
//! loads, with the recipe and a summary in `__metadata__`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::compress::apply::AppliedTensor;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::Model;

use super::{check_output, persist};

fn safetensors_dtype(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F8E4M3 => Dtype::F8_E4M3,
        DType::F8E5M2 => Dtype::F8_E5M2,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U64 => Dtype::U64,
        DType::U32 => Dtype::U32,
        DType::U16 => Dtype::U16,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
        DType::Quant(_) | DType::Other(_) => return None,
    })
}

/// Write every tensor of `model` to a safetensors file at `out`: compressed tensors
/// as f32 fake-quant values, the others as stored (block-quantized ones dequantized
/// to f32). `metadata` lands in `__metadata__` (the recipe, a summary).
pub fn write_safetensors(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    metadata: HashMap<String, String>,
    out: &Path,
    force: bool,
) -> Result<()> {
    check_output(model, out, force)?;
    let mut buffers: Vec<(usize, Dtype, Vec<u8>)> = Vec::new();
    for (i, info) in model.tensors.iter().enumerate() {
        let compressed = applied.iter().find(|(k, _)| *k == i).map(|(_, t)| t);
        let (dtype, bytes) = match (compressed, safetensors_dtype(info.dtype)) {
            (Some(t), _) => (
                Dtype::F32,
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (None, Some(d)) => (d, model.tensor_bytes(i)?.to_vec()),
            (None, None) if info.dtype.can_decode() => {
                let values = model.tensor_f32(i)?;
                (
                    Dtype::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            }
            (None, None) => {
                return Err(Error::Unsupported {
                    path: model.path.clone(),
                    what: format!(
                        "tensor `{}` ({}) has no safetensors equivalent",
                        info.name, info.dtype
                    ),
                });
            }
        };
        buffers.push((i, dtype, bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (i, dtype, bytes) in &buffers {
        let info = &model.tensors[*i];
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        let view = TensorView::new(*dtype, shape, bytes)
            .map_err(|e| Error::InvalidSetting(format!("tensor `{}`: {e}", info.name)))?;
        views.push((info.name.clone(), view));
    }
    let tmp = super::temp_file_beside(out)?;
    safetensors::tensor::serialize_to_file(views, Some(metadata), tmp.path())
        .map_err(|e| Error::InvalidSetting(format!("{}: {e}", out.display())))?;
    persist(tmp, out, force)
}
