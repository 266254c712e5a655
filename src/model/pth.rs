//! PyTorch zip checkpoints (`torch.save` since 1.6): a pickled state_dict plus one
//! zip member per storage. The pickle is read by candle's restricted unpickler, which
//! interprets opcodes without ever importing or executing Python code. Storages are
//! stored uncompressed, so each tensor is a slice of the memory-mapped file.

use std::panic::{AssertUnwindSafe, catch_unwind};

use candle_core::pickle::{TensorInfo as PickleTensor, read_pth_tensor_info};
use zip::CompressionMethod;

use super::{Ctx, Data, Loaded, Origin, TensorInfo, checked_numel};
use crate::dtype::DType;
use crate::error::Result;

/// Where checkpoints commonly nest their state_dict, tried in order when the top-level
/// object holds no tensors.
const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

pub(crate) fn open(ctx: &Ctx) -> Result<Loaded> {
    let mut found = None;
    for key in std::iter::once(None).chain(STATE_DICT_KEYS.iter().map(Some)) {
        let infos = read_infos(ctx, key.copied())?;
        if !infos.is_empty() {
            found = Some((key, infos));
            break;
        }
    }
    let Some((key, mut infos)) = found else {
        return Err(ctx.corrupt(
            "the pickle holds no tensors (not a state_dict or a checkpoint holding one)",
        ));
    };
    // candle hands the dict back reversed; torch numbers storages in save order, so
    // (storage number, offset) restores the state_dict's own order.
    infos.sort_by_key(|t| {
        let key = t.path.rsplit('/').next().unwrap_or_default();
        (
            key.parse::<u64>().unwrap_or(u64::MAX),
            key.to_owned(),
            t.layout.start_offset(),
        )
    });
    let file = ctx.map()?;
    let zip_err = |e: zip::result::ZipError| ctx.corrupt(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(file.clone())).map_err(zip_err)?;
    let mut tensors = Vec::with_capacity(infos.len());
    for t in infos {
        let dtype = dtype(t.dtype);
        let Some((_, elem)) = dtype.block() else {
            return Err(ctx.unsupported(format!(
                "tensor `{}` has unsupported dtype {:?}",
                t.name, t.dtype
            )));
        };
        let entry = archive
            .by_name(&t.path)
            .map_err(|e| ctx.corrupt(format!("storage `{}` of `{}`: {e}", t.path, t.name)))?;
        if entry.compression() != CompressionMethod::Stored {
            return Err(ctx.unsupported(format!(
                "storage `{}` is compressed; PyTorch never writes that",
                t.path
            )));
        }
        let start = entry
            .data_start()
            .ok_or_else(|| ctx.corrupt(format!("storage `{}` has no data offset", t.path)))?;
        let storage_len = entry.size();
        drop(entry);
        let dims = t.layout.dims().to_vec();
        let shape: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        let numel = checked_numel(&shape)
            .ok_or_else(|| ctx.corrupt(format!("tensor `{}` has an absurd shape", t.name)))?;
        let storage = ctx.slice(&file, &t.name, start, storage_len)?;
        let first = t.layout.start_offset() as u64;
        // The last element's index: start + Σ (dim − 1) · stride.
        let last = dims
            .iter()
            .zip(t.layout.stride())
            .try_fold(first, |acc, (&d, &s)| {
                (d as u64)
                    .checked_sub(1)
                    .map_or(Some(acc), |k| acc.checked_add(k.checked_mul(s as u64)?))
            });
        let in_bounds = numel == 0
            || last
                .and_then(|l| l.checked_add(1)?.checked_mul(elem))
                .is_some_and(|end| end <= storage_len);
        if !in_bounds {
            return Err(ctx.out_of_bounds(
                &t.name,
                start + first * elem,
                numel.saturating_mul(elem),
                start + storage_len,
            ));
        }
        let (data, offset) = if t.layout.is_contiguous() {
            let from = first * elem;
            (
                super::Data::Bytes(storage.slice(from as usize..(from + numel * elem) as usize)),
                Some(start + from),
            )
        } else {
            (
                Data::Strided {
                    base: storage,
                    elem_bytes: elem as usize,
                    shape: dims,
                    strides: t.layout.stride().to_vec(),
                    offset: first as usize,
                },
                None,
            )
        };
        tensors.push((
            TensorInfo {
                name: t.name,
                shape,
                dtype,
                numel,
                size_bytes: numel * elem,
                origin: Origin {
                    file: ctx.path.to_owned(),
                    offset,
                    member: Some(t.path),
                },
            },
            data,
        ));
    }
    let mut metadata = Vec::new();
    if let Some(key) = key {
        metadata.push(("state_dict_key".to_owned(), serde_json::json!(key)));
    }
    Ok(Loaded {
        metadata,
        tensors,
        layers: None,
    })
}

/// candle's reader indexes into pickled tuples and can panic on hostile input; a
/// malformed file must be an error, never a crash, so the panic is caught here.
fn read_infos(ctx: &Ctx, key: Option<&str>) -> Result<Vec<PickleTensor>> {
    match catch_unwind(AssertUnwindSafe(|| {
        read_pth_tensor_info(ctx.path, false, key)
    })) {
        Ok(Ok(infos)) => Ok(infos),
        Ok(Err(e)) => Err(ctx.corrupt(first_line(&e.to_string()))),
        Err(_) => Err(ctx.corrupt("the pickled state_dict is malformed")),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_owned()
}

fn dtype(d: candle_core::DType) -> DType {
    use candle_core::DType as C;
    match d {
        C::U8 => DType::U8,
        C::U32 => DType::U32,
        C::I16 => DType::I16,
        C::I32 => DType::I32,
        C::I64 => DType::I64,
        C::BF16 => DType::BF16,
        C::F16 => DType::F16,
        C::F32 => DType::F32,
        C::F64 => DType::F64,
        C::F8E4M3 => DType::F8E4M3,
        _ => DType::Other("unsupported torch dtype"),
    }
}
