//! GGUF output (llama.cpp's format, v3) with real tensor types: GGUF block types
//! stay the ggml blocks `apply` made, f16/bf16 grids are stored as F16/BF16, other
//! compressed tensors as F32 fake-quant values (ggml has no per-channel int or fp8
//! type), untouched tensors as stored. From a GGUF source every metadata entry is
//! copied byte for byte (tokenizer, chat template, hyper-parameters), so llama.cpp
//! and candle run the result; `general.file_type` is updated and the recipe is added
//! under `slimscope.*`. Spec: ggml's docs/gguf.md.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::compress::apply::AppliedTensor;
use crate::dtype::{DType, GgmlQuant};
use crate::error::{Error, Result};
use crate::model::{Format, Model, RawEntry, raw_metadata};

use super::{check_output, persist};

const VERSION: u32 = 3;
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_NAME` is 64 bytes including the terminating NUL.
const MAX_NAME_BYTES: usize = 63;
const TYPE_U32: u32 = 4;
const TYPE_I32: u32 = 5;
const TYPE_STRING: u32 = 8;

/// ggml's type id for an element type GGUF can hold as is.
fn ggml_type_id(d: DType) -> Option<u32> {
    Some(match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::I8 => 24,
        DType::I16 => 25,
        DType::I32 => 26,
        DType::I64 => 27,
        DType::F64 => 28,
        DType::BF16 => 30,
        DType::Quant(q) => q.type_id(),
        _ => return None,
    })
}

/// llama.cpp's `llama_ftype` for a model whose weights are mostly of type `d`
/// (the `_S` variant for K-quants: all weights of one type).
fn file_type(d: DType) -> Option<u32> {
    use GgmlQuant::*;
    Some(match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 32,
        DType::Quant(q) => match q {
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 14,
            Q5_K => 16,
            Q6_K => 18,
            _ => return None,
        },
        _ => return None,
    })
}

fn string_value(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn set_entry(entries: &mut Vec<RawEntry>, key: &str, value_type: u32, value: Vec<u8>) {
    let entry = RawEntry {
        key: key.to_owned(),
        value_type,
        value,
    };
    match entries.iter_mut().find(|e| e.key == key) {
        Some(e) => *e = entry,
        None => entries.push(entry),
    }
}

/// One tensor as it will be written.
struct Out<'a> {
    name: &'a str,
    ne: Vec<u64>,
    type_id: u32,
    bytes: Cow<'a, [u8]>,
}

/// Write every tensor of `model` to a GGUF file at `out`. `extra` string entries
/// (the recipe, a summary) are added to the metadata.
pub fn write_gguf(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    extra: &[(&str, String)],
    out: &Path,
    force: bool,
) -> Result<()> {
    check_output(model, out, force)?;
    let tmp = super::temp_file_beside(out)?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file()?);
    encode_gguf(model, applied, extra, &mut w).map_err(|e| match e {
        Error::Io { cause, .. } => Error::io(out, cause),
        other => other,
    })?;
    w.flush().map_err(|e| Error::io(out, e))?;
    drop(w);
    persist(tmp, out, force)
}

/// The GGUF file [`write_gguf`] writes, into `w` (the language-model runner reads
/// a compressed model this way, exactly as it would be exported).
pub fn encode_gguf(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    extra: &[(&str, String)],
    w: &mut dyn Write,
) -> Result<()> {
    let by_index: std::collections::HashMap<usize, &AppliedTensor> =
        applied.iter().map(|(i, t)| (*i, t)).collect();
    let mut tensors = Vec::with_capacity(model.tensors.len());
    let mut bytes_by_type: Vec<(DType, u64)> = Vec::new();
    for (i, info) in model.tensors.iter().enumerate() {
        if info.name.len() > MAX_NAME_BYTES {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: format!(
                    "tensor name `{}` is {} bytes; GGUF (ggml) allows at most {MAX_NAME_BYTES}",
                    info.name,
                    info.name.len()
                ),
            });
        }
        let (dtype, bytes) = tensor_data(model, i, by_index.get(&i).copied())?;
        let mut ne: Vec<u64> = info.shape.iter().rev().copied().collect();
        if ne.is_empty() {
            ne.push(1);
        }
        let expected = dtype.size_bytes(info.numel);
        if expected != Some(bytes.len() as u64) {
            return Err(Error::Internal(format!(
                "tensor `{}`: {} bytes of {dtype} for {} values",
                info.name,
                bytes.len(),
                info.numel
            )));
        }
        if info.shape.len() >= 2 {
            match bytes_by_type.iter_mut().find(|(d, _)| *d == dtype) {
                Some(e) => e.1 += bytes.len() as u64,
                None => bytes_by_type.push((dtype, bytes.len() as u64)),
            }
        }
        let type_id = ggml_type_id(dtype).unwrap_or(0);
        tensors.push(Out {
            name: &info.name,
            ne,
            type_id,
            bytes,
        });
    }

    let entries = out_metadata(model, &bytes_by_type, extra)?;
    let alignment = model
        .metadata
        .iter()
        .find(|(k, _)| k == "gguf.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(DEFAULT_ALIGNMENT);

    let io = |e| Error::io(&model.path, e);
    let header = header(&entries, &tensors, alignment);
    w.write_all(&header).map_err(io)?;
    let zeros = vec![0u8; alignment as usize];
    for t in &tensors {
        w.write_all(&t.bytes).map_err(io)?;
        let pad = (t.bytes.len() as u64).div_ceil(alignment) * alignment - t.bytes.len() as u64;
        w.write_all(&zeros[..pad as usize]).map_err(io)?;
    }
    Ok(())
}

/// The ggml type a tensor is written as: a compressed tensor's ggml blocks or
/// half-precision grid, the model's own type when ggml has it, else f32.
fn written_type(info: &crate::model::TensorInfo, compressed: Option<&AppliedTensor>) -> DType {
    match compressed {
        Some(t) => match (t.stored, &t.packed) {
            (DType::Quant(q), Some(_)) => DType::Quant(q),
            (d @ (DType::F16 | DType::BF16), _) => d,
            _ => DType::F32,
        },
        None if ggml_type_id(info.dtype).is_some() => info.dtype,
        None => DType::F32,
    }
}

/// The bytes of tensor data a GGUF export of `model` with `applied` holds (before
/// alignment padding): what the file really stores, where a compressed tensor
/// ggml has no type for (an integer grid) is written as F32 values.
pub fn tensor_bytes(model: &Model, applied: &[(usize, AppliedTensor)]) -> u64 {
    let by_index: std::collections::HashMap<usize, &AppliedTensor> =
        applied.iter().map(|(i, t)| (*i, t)).collect();
    model
        .tensors
        .iter()
        .enumerate()
        .map(|(i, info)| {
            written_type(info, by_index.get(&i).copied())
                .size_bytes(info.numel)
                .unwrap_or(0)
        })
        .sum()
}

/// Tensor `i`'s type and bytes in the file (see [`written_type`]).
fn tensor_data<'a>(
    model: &Model,
    i: usize,
    compressed: Option<&'a AppliedTensor>,
) -> Result<(DType, Cow<'a, [u8]>)> {
    let info = &model.tensors[i];
    let dtype = written_type(info, compressed);
    let bytes = match (compressed, dtype) {
        (
            Some(AppliedTensor {
                packed: Some(packed),
                ..
            }),
            DType::Quant(_),
        ) => Cow::Borrowed(packed.as_slice()),
        (Some(t), DType::F16) => t
            .values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        (Some(t), DType::BF16) => t
            .values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        (Some(t), _) => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        (None, d) if d == info.dtype => Cow::Owned(model.tensor_bytes(i)?.to_vec()),
        (None, _) if info.dtype.is_float() && info.dtype.can_decode() => model
            .tensor_f32(i)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        (None, _) => {
            return Err(Error::Unsupported {
                path: model.path.clone(),
                what: format!(
                    "tensor `{}` ({}) has no GGUF equivalent",
                    info.name, info.dtype
                ),
            });
        }
    };
    Ok((dtype, bytes))
}

/// The output's metadata: the source's (a GGUF's own, or its name), the file type
/// of the matrices' dominant type, and `extra` (the recipe and the summary).
fn out_metadata(
    model: &Model,
    bytes_by_type: &[(DType, u64)],
    extra: &[(&str, String)],
) -> Result<Vec<RawEntry>> {
    let mut entries = if model.format == Format::Gguf {
        raw_metadata(&model.path)?
    } else {
        let stem = model
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![RawEntry {
            key: "general.name".into(),
            value_type: TYPE_STRING,
            value: string_value(&stem),
        }]
    };
    entries.retain(|e| !e.key.starts_with("slimscope."));
    let dominant = bytes_by_type
        .iter()
        .max_by_key(|(_, b)| *b)
        .map(|(d, _)| *d);
    if let Some(ft) = dominant.and_then(file_type) {
        set_entry(
            &mut entries,
            "general.file_type",
            TYPE_U32,
            ft.to_le_bytes().to_vec(),
        );
    }
    for (key, value) in extra {
        // llama.cpp's imatrix counts are int32 keys; everything else is a string.
        match value.parse::<i32>() {
            Ok(n) if key.ends_with("_count") => {
                set_entry(&mut entries, key, TYPE_I32, n.to_le_bytes().to_vec())
            }
            _ => set_entry(&mut entries, key, TYPE_STRING, string_value(value)),
        }
    }
    Ok(entries)
}

/// Everything before the tensor data: magic, version, counts, metadata and tensor
/// infos with offsets, padded to `alignment`.
fn header(entries: &[RawEntry], tensors: &[Out], alignment: u64) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        header.extend_from_slice(&string_value(&e.key));
        header.extend_from_slice(&e.value_type.to_le_bytes());
        header.extend_from_slice(&e.value);
    }
    let mut offset = 0u64;
    for t in tensors {
        header.extend_from_slice(&string_value(t.name));
        header.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&t.type_id.to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + t.bytes.len() as u64).div_ceil(alignment) * alignment;
    }
    let padded = (header.len() as u64).div_ceil(alignment) * alignment;
    header.resize(padded as usize, 0);
    header
}
