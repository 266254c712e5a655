//! PyTorch zip checkpoints (`torch.save` since 1.6): a pickled state_dict plus one
//! zip member per storage. The pickle is read by our own bounded unpickler
//! ([`super::pickle`]), which never imports or executes Python code. Storages are
//! stored uncompressed, so each tensor is a slice (or a strided view) of the
//! memory-mapped file.

use std::io::Read;

use zip::CompressionMethod;

use super::pickle::{TensorView, read_state_dict};
use super::{Ctx, Data, Loaded, Origin, TensorInfo, checked_numel};
use crate::dtype::DType;
use crate::error::Result;

/// Where checkpoints commonly nest their state_dict, tried in order when the top-level
/// object holds no tensors.
const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// The largest `data.pkl` read. A state_dict's pickle takes ~100 bytes a tensor, so
/// this is room for millions of tensors; a larger one is not a checkpoint.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// A strided view is gathered into contiguous bytes when read. One that repeats its
/// storage's elements (stride 0, as `expand` makes) may not exceed this many bytes,
/// so a tiny file cannot ask for terabytes.
const MAX_REPEATED_VIEW_BYTES: u64 = 64 << 20;

pub(crate) fn open(ctx: &Ctx) -> Result<Loaded> {
    let file = ctx.map()?;
    let zip_err = |e: zip::result::ZipError| ctx.corrupt(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(file.clone())).map_err(zip_err)?;
    let (pickle, prefix) = read_pickle(ctx, &mut archive)?;
    let state = read_state_dict(&pickle, &STATE_DICT_KEYS).map_err(|e| ctx.corrupt(e))?;
    drop(pickle);
    if state.tensors.is_empty() {
        return Err(ctx.corrupt(
            "the pickle holds no tensors (not a state_dict or a checkpoint holding one)",
        ));
    }
    let mut tensors = Vec::with_capacity(state.tensors.len());
    for (name, view) in state.tensors {
        tensors.push(tensor_of(ctx, &file, &mut archive, &prefix, name, view)?);
    }
    let mut metadata = Vec::new();
    if let Some(key) = state.key {
        metadata.push(("state_dict_key".to_owned(), serde_json::json!(key)));
    }
    Ok(Loaded {
        metadata,
        tensors,
        layers: None,
    })
}

type Archive = zip::ZipArchive<std::io::Cursor<bytes::Bytes>>;

/// The checkpoint's pickle (bounded) and the archive folder its storages are in,
/// after checking the byte order torch recorded.
fn read_pickle(ctx: &Ctx, archive: &mut Archive) -> Result<(Vec<u8>, String)> {
    // torch writes `<archive>/data.pkl` with the storages under `<archive>/data/`.
    let pickle_name = archive
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .map(|n| n.into_owned())
        .ok_or_else(|| ctx.corrupt("no data.pkl at the top of the archive"))?;
    let prefix = pickle_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut order) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        (&mut order)
            .take(16)
            .read_to_string(&mut text)
            .map_err(|e| ctx.corrupt(format!("byteorder: {e}")))?;
        if text.trim() != "little" {
            return Err(ctx.unsupported(format!(
                "the checkpoint was saved with byte order `{}`; only little-endian is supported",
                text.trim().escape_debug()
            )));
        }
    }
    let pickle = {
        let entry = archive
            .by_name(&pickle_name)
            .map_err(|e| ctx.corrupt(format!("{pickle_name}: {e}")))?;
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(ctx.corrupt(format!(
                "{pickle_name} claims {} bytes; a state_dict's pickle is far smaller",
                entry.size()
            )));
        }
        crate::bounded::read_at_most(entry, MAX_PICKLE_BYTES)
            .map_err(|e| ctx.corrupt(format!("{pickle_name}: {e}")))?
            .ok_or_else(|| ctx.corrupt(format!("{pickle_name} is larger than it claims")))?
    };
    Ok((pickle, prefix))
}

/// The tensor `name` views: its storage member's bytes in the mapped file, sliced or
/// strided as the view says, after checking every bound.
fn tensor_of(
    ctx: &Ctx,
    file: &bytes::Bytes,
    archive: &mut Archive,
    prefix: &str,
    name: String,
    view: TensorView,
) -> Result<(TensorInfo, Data)> {
    let dtype = storage_dtype(&view.storage.class).ok_or_else(|| {
        ctx.unsupported(format!(
            "tensor `{name}` is stored as {}, which slimscope cannot read",
            view.storage.class
        ))
    })?;
    let elem = dtype.block().map_or(1, |b| b.1);
    let member = format!("{prefix}data/{}", view.storage.key);
    let entry = archive
        .by_name(&member)
        .map_err(|e| ctx.corrupt(format!("storage `{member}` of `{name}`: {e}")))?;
    if entry.compression() != CompressionMethod::Stored {
        return Err(ctx.unsupported(format!(
            "storage `{member}` is compressed; PyTorch never writes that"
        )));
    }
    let start = entry
        .data_start()
        .ok_or_else(|| ctx.corrupt(format!("storage `{member}` has no data offset")))?;
    let storage_len = entry.size();
    drop(entry);
    let storage = ctx.slice(file, &name, start, storage_len)?;
    let numel = checked_numel(&view.shape)
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has an absurd shape")))?;
    let size_bytes = numel
        .checked_mul(elem)
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has an absurd shape")))?;
    let Some(end_elem) = view_end(&view) else {
        return Err(ctx.corrupt(format!("tensor `{name}` has absurd strides")));
    };
    let end_byte = end_elem.checked_mul(elem);
    if numel > 0 && end_byte.is_none_or(|end| end > storage_len) {
        return Err(ctx.out_of_bounds(
            &name,
            start.saturating_add(view.offset.saturating_mul(elem)),
            size_bytes,
            start.saturating_add(storage_len),
        ));
    }
    let (data, offset) = if numel == 0 {
        (Data::Bytes(bytes::Bytes::new()), None)
    } else if is_contiguous(&view) {
        // In bounds: checked against the storage's length just above.
        let from = view.offset * elem;
        (
            Data::Bytes(storage.slice(from as usize..(from + size_bytes) as usize)),
            Some(start + from),
        )
    } else {
        if size_bytes > storage_len.max(MAX_REPEATED_VIEW_BYTES) {
            return Err(ctx.unsupported(format!(
                "tensor `{name}` is a view repeating its storage's {} bytes as {size_bytes}; save it with .contiguous()",
                storage_len
            )));
        }
        (
            Data::Strided {
                base: storage,
                elem_bytes: elem as usize,
                shape: view.shape.iter().map(|&d| d as usize).collect(),
                strides: view.stride.iter().map(|&s| s as usize).collect(),
                offset: view.offset as usize,
            },
            None,
        )
    };
    Ok((
        TensorInfo {
            name,
            shape: view.shape,
            dtype,
            numel,
            size_bytes,
            origin: Origin {
                file: ctx.path.to_owned(),
                offset,
                member: Some(member),
            },
        },
        data,
    ))
}

/// One past the index of the view's last element: offset + Σ (dim − 1) · stride + 1,
/// or `None` on overflow. Only meaningful for a view with elements.
fn view_end(view: &TensorView) -> Option<u64> {
    view.shape
        .iter()
        .zip(&view.stride)
        .try_fold(view.offset, |acc, (&d, &s)| {
            d.checked_sub(1)
                .map_or(Some(acc), |k| acc.checked_add(k.checked_mul(s)?))
        })?
        .checked_add(1)
}

/// Row-major contiguous: each stride is the product of the dimensions after it
/// (dimensions of size 1 may have any stride, as in torch).
fn is_contiguous(view: &TensorView) -> bool {
    let mut expected = 1u64;
    for (&d, &s) in view.shape.iter().zip(&view.stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// The element type of a torch storage class (`torch/storage.py`'s
/// `_dtype_to_storage_type_map`). Complex and quantized storages are not read.
fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "DoubleStorage" => DType::F64,
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "Float8_e4m3fnStorage" => DType::F8E4M3,
        "Float8_e5m2Storage" => DType::F8E5M2,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "UInt16Storage" => DType::U16,
        "UInt32Storage" => DType::U32,
        "UInt64Storage" => DType::U64,
        "BoolStorage" => DType::Bool,
        _ => return None,
    })
}
