//! NumPy `.npy` arrays and `.npz` archives of them (plain or `savez_compressed`).
//! The `.npy` header is a Python dict literal (format spec: numpy's
//! `numpy/lib/format.py`); we parse the three keys it always has. Stored npz members
//! are memory-mapped in place; deflated ones are inflated when their data is asked for.

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use zip::CompressionMethod;

use super::{Ctx, Data, Loaded, Origin, TensorInfo, checked_numel};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// What an `.npy` header says.
struct Header {
    dtype: DType,
    shape: Vec<u64>,
    fortran_order: bool,
    /// Bytes before the data (magic + lengths + dict).
    data_offset: u64,
}

/// Parse an `.npy` header from the first bytes of the array; `what` names it in errors.
fn parse_header(ctx: &Ctx, head: &[u8], what: &str) -> Result<Header> {
    let bad = |m: String| ctx.corrupt(format!("{what}: {m}"));
    if !head.starts_with(b"\x93NUMPY") || head.len() < 10 {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let (dict_len, dict_start) = match head[6] {
        1 => (u64::from(u16::from_le_bytes([head[8], head[9]])), 10u64),
        2 | 3 if head.len() >= 12 => (
            u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]])),
            12u64,
        ),
        v => return Err(bad(format!("unknown .npy format version {v}"))),
    };
    let end = dict_start + dict_len;
    let Some(dict) = head.get(dict_start as usize..end as usize) else {
        return Err(bad(format!(
            "the header claims {dict_len} bytes but only {} are there",
            head.len() as u64 - dict_start.min(head.len() as u64)
        )));
    };
    let dict = std::str::from_utf8(dict).map_err(|_| bad("the header is not text".into()))?;
    let descr = dict_value(dict, "descr")
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.split('\'').next()))
        .ok_or_else(|| bad(format!("no 'descr' in header {dict:?}")))?;
    let fortran_order = match dict_value(dict, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(bad(format!("no 'fortran_order' in header {dict:?}"))),
    };
    let shape_text = dict_value(dict, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| bad(format!("no 'shape' in header {dict:?}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| bad(format!("bad dimension `{s}` in shape")))
        })
        .collect::<Result<Vec<_>>>()?;
    // numpy's NPY_MAXDIMS: no array numpy writes has more.
    if shape.len() > super::pickle::MAX_DIMS {
        return Err(bad(format!(
            "{} dimensions (numpy allows at most {})",
            shape.len(),
            super::pickle::MAX_DIMS
        )));
    }
    Ok(Header {
        dtype: npy_dtype(ctx, descr, what)?,
        shape,
        fortran_order,
        data_offset: end,
    })
}

/// The text after `'key':` in the header dict.
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict.find(&format!("'{key}'"))?;
    let rest = &dict[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn npy_dtype(ctx: &Ctx, descr: &str, what: &str) -> Result<DType> {
    // By characters: the descr is file text and need not be ASCII.
    let (order, code) = descr
        .char_indices()
        .nth(1)
        .map_or((descr, ""), |(at, _)| descr.split_at(at));
    if order == ">" && !matches!(code, "i1" | "u1" | "b1") {
        return Err(ctx.unsupported(format!(
            "{what}: big-endian arrays ({descr}) are not supported"
        )));
    }
    Ok(match code {
        "f8" => DType::F64,
        "f4" => DType::F32,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u8" => DType::U64,
        "u4" => DType::U32,
        "u2" => DType::U16,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        _ => return Err(ctx.unsupported(format!("{what}: NumPy dtype `{descr}` is not supported"))),
    })
}

fn info(
    ctx: &Ctx,
    name: String,
    header: &Header,
    offset: Option<u64>,
    member: Option<String>,
) -> Result<TensorInfo> {
    let numel = checked_numel(&header.shape)
        .ok_or_else(|| ctx.corrupt(format!("`{name}` has an absurd shape {:?}", header.shape)))?;
    let size_bytes = header
        .dtype
        .size_bytes(numel)
        .ok_or_else(|| ctx.corrupt(format!("`{name}` has an absurd size")))?;
    Ok(TensorInfo {
        name,
        shape: header.shape.clone(),
        dtype: header.dtype,
        numel,
        size_bytes,
        origin: Origin {
            file: ctx.path.to_owned(),
            offset,
            member,
        },
    })
}

/// Plain data as stored, reordered to row-major if the array is Fortran-ordered.
fn data_for(header: &Header, bytes: Bytes) -> Data {
    if !header.fortran_order || header.shape.len() < 2 {
        return Data::Bytes(bytes);
    }
    let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    Data::Strided {
        base: bytes,
        elem_bytes: elem_bytes(header),
        strides: fortran_strides(&shape),
        shape,
        offset: 0,
    }
}

fn elem_bytes(header: &Header) -> usize {
    header.dtype.block().map_or(1, |b| b.1 as usize)
}

/// Element strides of a column-major (Fortran-ordered) array of `shape`.
pub(crate) fn fortran_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for d in 1..shape.len() {
        strides[d] = strides[d - 1] * shape[d - 1];
    }
    strides
}

/// Open a single `.npy` file: one tensor, named after the file.
pub(crate) fn open_npy(ctx: &Ctx) -> Result<Loaded> {
    let file = ctx.map()?;
    let header = parse_header(ctx, &file, "array")?;
    let name = ctx
        .path
        .file_stem()
        .map_or_else(|| "array".to_owned(), |s| s.to_string_lossy().into_owned());
    let info = info(ctx, name, &header, Some(header.data_offset), None)?;
    let bytes = ctx.slice(&file, &info.name, header.data_offset, info.size_bytes)?;
    let data = data_for(&header, bytes);
    Ok(Loaded {
        metadata: vec![("fortran_order".into(), header.fortran_order.into())],
        tensors: vec![(info, data)],
        layers: None,
    })
}

/// Open an `.npz` archive: one tensor per `.npy` member.
pub(crate) fn open_npz(ctx: &Ctx) -> Result<Loaded> {
    let file = ctx.map()?;
    let zip_err = |e: zip::result::ZipError| ctx.corrupt(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(file.clone())).map_err(zip_err)?;
    let mut tensors = Vec::new();
    let mut compressed = 0usize;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(zip_err)?;
        let member = entry.name().map_err(zip_err)?.into_owned();
        let Some(name) = member.strip_suffix(".npy") else {
            continue;
        };
        let name = name.to_owned();
        let what = format!("member `{member}`");
        let method = entry.compression();
        let size = entry.size();
        let (compressed_size, crc32) = (entry.compressed_size(), entry.crc32());
        // Deflate expands at most ~1032:1; a member claiming more than that lies.
        if method != CompressionMethod::Stored
            && size > compressed_size.saturating_mul(1032).saturating_add(1024)
        {
            return Err(ctx.corrupt(format!(
                "{what} claims {size} bytes from {compressed_size} compressed bytes, more than deflate can hold"
            )));
        }
        let start = entry
            .data_start()
            .ok_or_else(|| ctx.corrupt(format!("{what}: no data offset")))?;
        // The header is at most a few KB; read up to 64 KiB of the (inflated) member.
        let mut head = Vec::new();
        (&mut entry)
            .take(65536)
            .read_to_end(&mut head)
            .map_err(|e| ctx.corrupt(format!("{what}: {e}")))?;
        let header = parse_header(ctx, &head, &what)?;
        let offset = (method == CompressionMethod::Stored).then_some(start + header.data_offset);
        let info = info(ctx, name, &header, offset, Some(member.clone()))?;
        if header.data_offset.saturating_add(info.size_bytes) > size {
            return Err(ctx.out_of_bounds(&info.name, header.data_offset, info.size_bytes, size));
        }
        let data = match offset {
            Some(at) => data_for(&header, ctx.slice(&file, &info.name, at, info.size_bytes)?),
            None => {
                compressed += 1;
                let fortran = (header.fortran_order && header.shape.len() > 1).then(|| {
                    (
                        header.shape.iter().map(|&d| d as usize).collect(),
                        elem_bytes(&header),
                    )
                });
                Data::Deflated {
                    member: DeflatedMember {
                        archive: ctx.path.to_owned(),
                        member,
                        compressed: ctx.slice(&file, &info.name, start, compressed_size)?,
                        size,
                        crc32,
                    },
                    skip: header.data_offset,
                    len: info.size_bytes,
                    fortran,
                }
            }
        };
        tensors.push((info, data));
    }
    if tensors.is_empty() {
        return Err(ctx.corrupt("the archive holds no .npy arrays"));
    }
    Ok(Loaded {
        metadata: vec![("compressed_members".into(), compressed.into())],
        tensors,
        layers: None,
    })
}

/// A deflated npz member's compressed bytes (a slice of the memory-mapped archive)
/// and what its zip entry says about them.
#[derive(Debug, Clone)]
pub(crate) struct DeflatedMember {
    pub archive: PathBuf,
    pub member: String,
    pub compressed: Bytes,
    /// Inflated size and CRC-32 the zip entry declares.
    pub size: u64,
    pub crc32: u32,
}

impl DeflatedMember {
    fn corrupt(&self, problem: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            path: self.archive.clone(),
            format: "NumPy .npz",
            problem: format!("member `{}`: {problem}", self.member),
        }
    }
}

/// The inflated bytes of a member, read as a stream: memory stays bounded whatever
/// the member's size, and the CRC-32 is checked when the last declared byte is read.
pub(crate) struct MemberStream {
    inflate: flate2::read::DeflateDecoder<std::io::Cursor<Bytes>>,
    crc: flate2::Crc,
    /// Bytes inflated so far (flate2's own count is 32-bit).
    read: u64,
    member: DeflatedMember,
}

impl MemberStream {
    /// The member's bytes after the first `skip` (its .npy header).
    pub(crate) fn open(member: &DeflatedMember, skip: u64) -> Result<MemberStream> {
        let mut stream = MemberStream {
            inflate: flate2::read::DeflateDecoder::new(std::io::Cursor::new(
                member.compressed.clone(),
            )),
            crc: flate2::Crc::new(),
            read: 0,
            member: member.clone(),
        };
        std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink())
            .map_err(|e| member.corrupt(e))?;
        Ok(stream)
    }
}

impl Read for MemberStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.member.size.saturating_sub(self.read);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inflate.read(&mut buf[..want])?;
        self.crc.update(&buf[..n]);
        self.read += n as u64;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the compressed data ends after {} of its {} bytes",
                    self.read, self.member.size
                ),
            ));
        }
        if self.read == self.member.size && self.crc.sum() != self.member.crc32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the inflated data does not match its CRC-32",
            ));
        }
        Ok(n)
    }
}

/// Inflate `len` bytes after `skip` bytes of a deflated member.
pub(crate) fn inflate_member(member: &DeflatedMember, skip: u64, len: u64) -> Result<Bytes> {
    let mut stream = MemberStream::open(member, skip)?;
    // Grown as the data arrives, so a member that lies about its size cannot make
    // one huge allocation up front.
    let mut out = Vec::with_capacity(len.min(64 << 20) as usize);
    (&mut stream)
        .take(len)
        .read_to_end(&mut out)
        .map_err(|e| member.corrupt(e))?;
    if out.len() as u64 != len {
        return Err(member.corrupt(format!("ends after {} of {len} data bytes", out.len())));
    }
    Ok(Bytes::from(out))
}
