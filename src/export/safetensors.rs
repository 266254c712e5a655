//! safetensors output: dequantized ("fake-quant") f32 values that any framework
//! loads, with the recipe and a summary in `__metadata__`.
//!
//! Written by our own writer rather than the `safetensors` crate's
//! `serialize_to_file`, which stages the whole file in a private (0600) temporary
//! file of its own and orders `__metadata__` by a random hash: here the header is
//! built deterministically (metadata keys sorted, tensors in the model's order,
//! padded with spaces to 8 bytes as the crate does) and each tensor is streamed into
//! the one temporary file we own, so two runs write identical bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::compress::apply::AppliedTensor;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Model, f32_bytes};

use super::{check_output, persist};

/// The safetensors name of a stored type slimscope can copy as it is: [`DType::name`]
/// spells plain types as safetensors does.
fn safetensors_dtype(d: DType) -> Option<&'static str> {
    match d {
        DType::Quant(_) | DType::Other(_) => None,
        plain => Some(plain.name()),
    }
}

/// How one tensor is written.
enum Source<'a> {
    Compressed(&'a AppliedTensor),
    Stored,
    Decoded,
}

/// Write every tensor of `model` to a safetensors file at `out`: compressed tensors
/// as f32 fake-quant values, the others as stored (block-quantized ones dequantized
/// to f32). `metadata` lands in `__metadata__` (the recipe, a summary).
pub fn write_safetensors(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    metadata: BTreeMap<String, String>,
    out: &Path,
    force: bool,
) -> Result<()> {
    check_output(model, out, force)?;
    let by_index: HashMap<usize, &AppliedTensor> = applied.iter().map(|(i, t)| (*i, t)).collect();
    // Plan every tensor (type and byte length) first: the header comes before the data.
    let mut plan = Vec::with_capacity(model.tensors.len());
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0u64;
    for (i, info) in model.tensors.iter().enumerate() {
        if info.name == "__metadata__" {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: "a tensor named `__metadata__`, a name safetensors reserves for its metadata"
                    .into(),
            });
        }
        let (source, dtype, len) = match (by_index.get(&i), safetensors_dtype(info.dtype)) {
            (Some(t), _) if t.values.len() as u64 == info.numel => {
                (Source::Compressed(t), "F32", 4 * info.numel)
            }
            (Some(t), _) => {
                return Err(Error::Internal(format!(
                    "tensor `{}`: {} compressed values for {} elements",
                    info.name,
                    t.values.len(),
                    info.numel
                )));
            }
            (None, Some(d)) => (Source::Stored, d, info.size_bytes),
            (None, None) if info.dtype.can_decode() => (Source::Decoded, "F32", 4 * info.numel),
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
        header.insert(
            info.name.clone(),
            serde_json::json!({
                "dtype": dtype,
                "shape": info.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
        plan.push((i, source, len));
    }
    // serde_json's map keeps keys sorted; the crate's reader accepts any order of
    // keys and checks that the offsets tile the data exactly, as they do here.
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::Internal(format!("{}: {e}", out.display())))?;
    header.resize(header.len().next_multiple_of(8), b' ');

    let tmp = super::temp_file_beside(out)?;
    let io = |e| Error::io(out, e);
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file()?);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&header).map_err(io)?;
    for (i, source, len) in plan {
        let bytes = match source {
            Source::Compressed(t) => f32_bytes(&t.values),
            Source::Stored => {
                w.write_all(&model.tensor_bytes(i)?).map_err(io)?;
                continue;
            }
            Source::Decoded => f32_bytes(&model.tensor_f32(i)?),
        };
        debug_assert_eq!(bytes.len() as u64, len);
        w.write_all(&bytes).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    persist(tmp, out, force)
}
