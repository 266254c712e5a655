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

use super::{PartialFile, check_output, persist};

/// The safetensors name of a stored type slimscope can copy as it is: [`DType::name`]
/// spells plain types as safetensors does.
fn safetensors_dtype(d: DType) -> Option<&'static str> {
    match d {
        DType::Quant(_) | DType::Other(_) => None,
        plain => Some(plain.name()),
    }
}

/// Where one tensor's bytes come from.
pub(super) enum Source<'a> {
    /// Compressed values, as f32.
    Values(&'a [f32]),
    /// The model's tensor `i` as stored.
    Stored(usize),
    /// The model's tensor `i` decoded to f32 (a block type safetensors lacks).
    Decoded(usize),
    /// Computed when written (a packed tensor), so that only one is in memory.
    Later(Box<dyn Fn() -> Result<Vec<u8>> + 'a>),
}

/// One tensor of a safetensors file.
pub(super) struct Entry<'a> {
    pub name: String,
    /// The safetensors type name (`F32`, `I32`, …).
    pub dtype: &'static str,
    pub shape: Vec<u64>,
    /// Its byte length, which `bytes` must produce.
    pub len: u64,
    pub bytes: Source<'a>,
}

/// The entry of `model`'s tensor `i` as slimscope's f32 export writes it: `applied`'s
/// values when it was compressed, else as stored (a block type decoded to f32).
pub(super) fn plain_entry<'a>(
    model: &Model,
    i: usize,
    applied: Option<&'a AppliedTensor>,
) -> Result<Entry<'a>> {
    let info = &model.tensors[i];
    let (bytes, dtype, len) = match (applied, safetensors_dtype(info.dtype)) {
        (Some(t), _) if t.values.len() as u64 == info.numel => {
            (Source::Values(&t.values), "F32", 4 * info.numel)
        }
        (Some(t), _) => {
            return Err(Error::Internal(format!(
                "tensor `{}`: {} compressed values for {} elements",
                info.name,
                t.values.len(),
                info.numel
            )));
        }
        (None, Some(d)) => (Source::Stored(i), d, info.size_bytes),
        (None, None) if info.dtype.can_decode() => (Source::Decoded(i), "F32", 4 * info.numel),
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
    Ok(Entry {
        name: info.name.clone(),
        dtype,
        shape: info.shape.clone(),
        len,
        bytes,
    })
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
    let entries = (0..model.tensors.len())
        .map(|i| plain_entry(model, i, by_index.get(&i).copied()))
        .collect::<Result<Vec<_>>>()?;
    let tmp = write_entries(model, entries, metadata, out)?;
    persist(tmp, out, force)
}

/// `entries` (in this order) as a safetensors file in a temporary file beside `out`,
/// to persist when everything else an export writes is ready.
pub(super) fn write_entries(
    model: &Model,
    entries: Vec<Entry<'_>>,
    metadata: BTreeMap<String, String>,
    out: &Path,
) -> Result<PartialFile> {
    // Plan every tensor (type and byte length) first: the header comes before the data.
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0u64;
    for e in &entries {
        if e.name == "__metadata__" {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: "a tensor named `__metadata__`, a name safetensors reserves for its metadata"
                    .into(),
            });
        }
        let entry = serde_json::json!({
            "dtype": e.dtype,
            "shape": e.shape,
            "data_offsets": [offset, offset + e.len],
        });
        if header.insert(e.name.clone(), entry).is_some() {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: format!("two tensors would both be named `{}`", e.name),
            });
        }
        offset += e.len;
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
    for e in entries {
        let bytes = match e.bytes {
            Source::Values(v) => f32_bytes(v),
            Source::Stored(i) => model.tensor_bytes(i)?,
            Source::Decoded(i) => f32_bytes(&model.tensor_f32(i)?),
            Source::Later(make) => make()?.into(),
        };
        if bytes.len() as u64 != e.len {
            return Err(Error::Internal(format!(
                "tensor `{}`: {} bytes written for {} planned",
                e.name,
                bytes.len(),
                e.len
            )));
        }
        w.write_all(&bytes).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    Ok(tmp)
}
