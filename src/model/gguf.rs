//! GGUF v2/v3 (llama.cpp's format): a key/value metadata section, tensor infos, then
//! aligned tensor data. Parsed here rather than with candle's reader so that every
//! tensor is listed with its ggml type and file offset — including types slimscope
//! cannot dequantize (IQ*, TQ*, MXFP4), which candle refuses — and so that hostile
//! counts and lengths become clear errors instead of huge allocations.
//! Spec: ggml's docs/gguf.md.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Ctx, Data, Loaded, Origin, TensorInfo, checked_numel};
use crate::dtype::{DType, GgmlQuant};
use crate::error::Result;

/// Arrays longer than this are summarised in the metadata (tokenizer vocabularies
/// have ~50k entries).
const ARRAY_SHOWN: usize = 16;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A bounds-checked reader over the header bytes.
struct Reader<'a> {
    ctx: &'a Ctx<'a>,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.buf.len() as u64);
        let Some(end) = end else {
            return Err(self.ctx.corrupt(format!(
                "the header ends early: {what} at byte {} needs {n} bytes but the file holds {}",
                self.pos,
                self.buf.len()
            )));
        };
        let out = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            self.ctx
                .corrupt(format!("{what} at byte {at} is not valid UTF-8"))
        })
    }
    /// Bytes left, to bound element counts before looping over them.
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => json!(self.array::<1>(key)?[0]),
            1 => json!(self.array::<1>(key)?[0] as i8),
            2 => json!(u16::from_le_bytes(self.array(key)?)),
            3 => json!(i16::from_le_bytes(self.array(key)?)),
            4 => json!(self.u32(key)?),
            5 => json!(i32::from_le_bytes(self.array(key)?)),
            6 => json!(f32::from_le_bytes(self.array(key)?)),
            7 => json!(self.array::<1>(key)?[0] != 0),
            8 => json!(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(self
                        .ctx
                        .corrupt(format!("key `{key}` nests arrays too deep")));
                }
                let elem = self.u32(key)?;
                let at = self.pos;
                let count = self.u64(key)?;
                // Every element takes at least one byte: a count beyond the bytes left is a lie.
                if count > self.remaining() {
                    return Err(self.ctx.corrupt(format!(
                        "key `{key}` claims an array of {count} elements at byte {at}, more than the file holds"
                    )));
                }
                let mut shown = Vec::new();
                for i in 0..count {
                    let v = self.value(elem, key, depth + 1)?;
                    if (i as usize) < ARRAY_SHOWN {
                        shown.push(v);
                    }
                }
                if count as usize <= ARRAY_SHOWN {
                    Value::Array(shown)
                } else {
                    shown.truncate(8);
                    json!({ "array_of": type_name(elem), "len": count, "head": shown })
                }
            }
            10 => json!(self.u64(key)?),
            11 => json!(i64::from_le_bytes(self.array(key)?)),
            12 => json!(f64::from_le_bytes(self.array(key)?)),
            other => {
                return Err(self
                    .ctx
                    .corrupt(format!("key `{key}` has unknown value type {other}")));
            }
        })
    }
}

fn type_name(ty: u32) -> &'static str {
    match ty {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// The element type for ggml type id `id`.
fn ggml_dtype(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => DType::Quant(GgmlQuant::from_type_id(id)?),
    })
}

/// One metadata entry as stored: its key, GGUF value type and the value's bytes.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub key: String,
    pub value_type: u32,
    pub value: Vec<u8>,
}

/// Every metadata entry of the GGUF file at `path`, byte for byte, in file order:
/// what a writer copies so that a re-quantized model keeps its tokenizer, chat
/// template and hyper-parameters untouched.
pub fn raw_metadata(path: &std::path::Path) -> Result<Vec<RawEntry>> {
    let ctx = Ctx {
        path,
        format: "GGUF",
    };
    let file = ctx.map()?;
    let mut r = Reader {
        ctx: &ctx,
        buf: &file,
        pos: 0,
    };
    let (_, _, kv_count) = r.preamble()?;
    let mut out = Vec::with_capacity(kv_count.min(4096) as usize);
    for _ in 0..kv_count {
        let key = r.string("metadata key")?;
        let value_type = r.u32(&key)?;
        let start = r.pos;
        r.value(value_type, &key, 0)?;
        out.push(RawEntry {
            key,
            value_type,
            value: file[start..r.pos].to_vec(),
        });
    }
    Ok(out)
}

impl Reader<'_> {
    /// Magic, version and the two counts (bounded by the file's size).
    fn preamble(&mut self) -> Result<(u32, u64, u64)> {
        let ctx = self.ctx;
        self.take(4, "magic")?;
        let version = self.u32("version")?;
        if version == 1 {
            return Err(ctx.unsupported(
                "GGUF version 1 (2023) is not supported; re-convert the model with a current llama.cpp",
            ));
        }
        if version != 2 && version != 3 {
            return Err(ctx.corrupt(format!("unknown GGUF version {version}")));
        }
        let tensor_count = self.u64("tensor count")?;
        let kv_count = self.u64("metadata count")?;
        // A tensor info takes at least 24 bytes, a key/value at least 13: bound the counts.
        if tensor_count.saturating_mul(24) > self.remaining()
            || kv_count.saturating_mul(13) > self.remaining()
        {
            return Err(ctx.corrupt(format!(
                "the header claims {tensor_count} tensors and {kv_count} metadata keys, more than a {}-byte file can hold",
                self.buf.len()
            )));
        }
        Ok((version, tensor_count, kv_count))
    }
}

pub(crate) fn open(ctx: &Ctx) -> Result<Loaded> {
    let file = ctx.map()?;
    let mut r = Reader {
        ctx,
        buf: &file,
        pos: 0,
    };
    let (version, tensor_count, kv_count) = r.preamble()?;
    let mut metadata = vec![("gguf.version".to_owned(), json!(version))];
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut keys = std::collections::HashSet::new();
    for _ in 0..kv_count {
        let key = r.string("metadata key")?;
        // llama.cpp's gguf_init refuses a file that repeats a key.
        if !keys.insert(key.clone()) {
            return Err(ctx.corrupt(format!("the metadata key `{key}` appears twice")));
        }
        let ty = r.u32(&key)?;
        let value = r.value(ty, &key, 0)?;
        if key == "general.alignment" {
            // llama.cpp reads it only as a u32 (GGUF_TYPE_UINT32).
            if ty != 4 {
                return Err(ctx.corrupt(format!(
                    "general.alignment has value type {ty}; GGUF stores it as a u32 (type 4)"
                )));
            }
            alignment = value
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| {
                    ctx.corrupt(format!("general.alignment = {value} is not a power of two"))
                })?;
        }
        metadata.push((key, value));
    }
    let mut infos = Vec::with_capacity(tensor_count.min(4096) as usize);
    for _ in 0..tensor_count {
        let name = r.string("tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims > MAX_DIMS {
            return Err(ctx.corrupt(format!(
                "tensor `{name}` has {n_dims} dimensions (ggml allows at most {MAX_DIMS})"
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(r.u64(&name)?);
        }
        let type_id = r.u32(&name)?;
        let offset = r.u64(&name)?;
        infos.push((name, ne, type_id, offset));
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    metadata.push(("gguf.alignment".to_owned(), json!(alignment)));
    metadata.push(("gguf.data_offset".to_owned(), json!(data_start)));
    // llama.cpp (gguf.cpp, gguf_init_from_file_impl) requires each tensor's data to
    // start exactly where the previous one's, padded to the alignment, ends: data that
    // is unaligned, overlaps or leaves gaps is refused, and so it is here.
    let mut expected = 0u64;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, ne, type_id, offset) in infos {
        // Data outside the file first: that is what a truncated download looks like.
        let t = tensor(ctx, &file, data_start, name, ne, type_id, offset)?;
        let name = &t.0.name;
        if offset % alignment != 0 {
            return Err(ctx.corrupt(format!(
                "tensor `{name}` starts at data offset {offset}, not a multiple of the alignment {alignment}"
            )));
        }
        if offset != expected {
            return Err(ctx.corrupt(format!(
                "tensor `{name}` starts at data offset {offset} but the previous tensors end at {expected} (overlapping or out-of-order data)"
            )));
        }
        expected =
            t.0.size_bytes
                .checked_next_multiple_of(alignment)
                .and_then(|padded| expected.checked_add(padded))
                .ok_or_else(|| ctx.corrupt("the tensors' data sizes overflow"))?;
        tensors.push(t);
    }
    Ok(Loaded {
        metadata,
        tensors,
        layers: None,
    })
}

fn tensor(
    ctx: &Ctx,
    file: &Bytes,
    data_start: u64,
    name: String,
    ne: Vec<u64>,
    type_id: u32,
    offset: u64,
) -> Result<(TensorInfo, Data)> {
    let dtype = ggml_dtype(type_id)
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has unknown ggml type {type_id}")))?;
    let shape: Vec<u64> = ne.iter().rev().copied().collect();
    let numel = checked_numel(&shape)
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has an absurd shape {shape:?}")))?;
    let (block_len, _) = dtype.block().unwrap_or((1, 1));
    if ne.first().is_some_and(|&n0| n0 % block_len != 0) {
        return Err(ctx.corrupt(format!(
            "tensor `{name}` ({dtype}) has rows of {} values, not a multiple of the {block_len}-value block",
            ne[0]
        )));
    }
    let size_bytes = dtype
        .size_bytes(numel)
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has an absurd size")))?;
    let at = data_start
        .checked_add(offset)
        .ok_or_else(|| ctx.out_of_bounds(&name, offset, size_bytes, file.len() as u64))?;
    let bytes = ctx.slice(file, &name, at, size_bytes)?;
    Ok((
        TensorInfo {
            name,
            shape,
            dtype,
            numel,
            size_bytes,
            origin: Origin {
                file: ctx.path.to_owned(),
                offset: Some(at),
                member: None,
            },
        },
        Data::Bytes(bytes),
    ))
}
