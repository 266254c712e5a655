//! safetensors: a JSON header then raw little-endian data. Parsed with the
//! `safetensors` crate (which validates offsets), data memory-mapped, never copied.
//! Also the sharded layout: `model.safetensors.index.json` with a `weight_map`.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::{Ctx, Data, Loaded, Origin, TensorInfo, checked_numel, map_file};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Open one `.safetensors` file.
pub(crate) fn open(ctx: &Ctx) -> Result<Loaded> {
    let file = ctx.map()?;
    let (metadata, tensors) = read(ctx, &file)?;
    Ok(Loaded {
        metadata,
        tensors,
        layers: None,
    })
}

type Listing = (Vec<(String, serde_json::Value)>, Vec<(TensorInfo, Data)>);

fn read(ctx: &Ctx, file: &Bytes) -> Result<Listing> {
    let (header_len, meta) = SafeTensors::read_metadata(file).map_err(|e| explain(ctx, file, e))?;
    let data_start = 8 + header_len as u64;
    let mut entries: Vec<(String, &safetensors::tensor::TensorInfo)> =
        meta.tensors().into_iter().collect();
    entries.sort_by_key(|(name, info)| (info.data_offsets.0, name.clone()));
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, info) in entries {
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        let dtype = dtype(info.dtype);
        let (begin, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        let numel = checked_numel(&shape)
            .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has an absurd shape {shape:?}")))?;
        let offset = data_start + begin;
        let bytes = ctx.slice(file, &name, offset, end - begin)?;
        tensors.push((
            TensorInfo {
                name,
                shape,
                dtype,
                numel,
                size_bytes: end - begin,
                origin: Origin {
                    file: ctx.path.to_owned(),
                    offset: Some(offset),
                    member: None,
                },
            },
            Data::Bytes(bytes),
        ));
    }
    let mut metadata: Vec<(String, serde_json::Value)> = meta
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((metadata, tensors))
}

/// Turn the crate's error into words a user can act on.
fn explain(ctx: &Ctx, file: &Bytes, e: SafeTensorError) -> Error {
    let claimed = file
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    match e {
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => ctx.corrupt(
            format!(
                "the header claims {} bytes but the file holds {} bytes",
                claimed.unwrap_or(0),
                file.len()
            ),
        ),
        SafeTensorError::MetadataIncompleteBuffer => ctx.corrupt(format!(
            "the header's tensors do not match the file's {} bytes of data (truncated, or extra bytes at the end)",
            file.len()
        )),
        other => ctx.corrupt(format!("{other}")),
    }
}

fn dtype(d: Dtype) -> DType {
    match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::F8_E5M2 => DType::F8E5M2,
        Dtype::F8_E4M3 => DType::F8E4M3,
        Dtype::I16 => DType::I16,
        Dtype::U16 => DType::U16,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::U32 => DType::U32,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U64 => DType::U64,
        Dtype::F4 => DType::Other("F4"),
        Dtype::F6_E2M3 => DType::Other("F6_E2M3"),
        Dtype::F6_E3M2 => DType::Other("F6_E3M2"),
        Dtype::F8_E8M0 => DType::Other("F8_E8M0"),
        Dtype::F8_E4M3FNUZ => DType::Other("F8_E4M3FNUZ"),
        Dtype::F8_E5M2FNUZ => DType::Other("F8_E5M2FNUZ"),
        Dtype::C64 => DType::Other("C64"),
        _ => DType::Other("unknown"),
    }
}

/// Open a sharded model through its `*.safetensors.index.json`.
pub(crate) fn open_sharded(ctx: &Ctx) -> Result<Loaded> {
    // A real index is ~100 bytes a tensor; refuse to read gigabytes of JSON.
    const MAX_INDEX_BYTES: u64 = 256 << 20;
    let len = std::fs::metadata(ctx.path).map_err(|e| ctx.io(e))?.len();
    if len > MAX_INDEX_BYTES {
        return Err(ctx.corrupt(format!(
            "a {len}-byte JSON file is far larger than any safetensors index"
        )));
    }
    let text = std::fs::read_to_string(ctx.path).map_err(|e| ctx.io(e))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ctx.corrupt(format!("the index is not valid JSON: {e}")))?;
    let Some(weight_map) = index.get("weight_map").and_then(|w| w.as_object()) else {
        return Err(
            ctx.corrupt("a JSON file without a `weight_map` object (not a safetensors index)")
        );
    };
    let mut distinct = std::collections::BTreeSet::new();
    for (name, shard) in weight_map {
        let Some(shard) = shard.as_str() else {
            return Err(ctx.corrupt(format!("weight_map entry `{name}` is not a file name")));
        };
        distinct.insert(shard);
    }
    let shards: Vec<&str> = distinct.into_iter().collect();
    let mut tensors = Vec::new();
    for shard in &shards {
        let path = super::file_beside(ctx, shard, "shard")?;
        let shard_ctx = Ctx {
            path: &path,
            format: "safetensors shard",
        };
        let file = map_file(&path)?;
        let (_, listed) = read(&shard_ctx, &file)?;
        tensors.extend(listed);
    }
    let found: BTreeMap<&str, &Path> = tensors
        .iter()
        .map(|(t, _)| (t.name.as_str(), t.origin.file.as_path()))
        .collect();
    for (name, shard) in weight_map {
        let shard = shard.as_str().unwrap_or_default();
        match found.get(name.as_str()) {
            Some(file) if file.ends_with(shard) => {}
            _ => {
                return Err(ctx.corrupt(format!(
                    "the index puts tensor `{name}` in `{shard}`, which does not hold it"
                )));
            }
        }
    }
    let mut metadata = vec![("shards".to_owned(), serde_json::json!(shards.len()))];
    if let Some(m) = index.get("metadata").and_then(|m| m.as_object()) {
        metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Ok(Loaded {
        metadata,
        tensors,
        layers: None,
    })
}
