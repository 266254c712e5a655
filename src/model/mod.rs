//! Opening model files: one entry point, [`Model::open`], for every format.
//!
//! The format is recognised by content (magic bytes, header shape), not by file
//! extension. Each format lives in its own file with the same entry shape
//! (`open(&Ctx) -> Result<Loaded>`); this module sniffs, dispatches, attaches the path
//! to errors in one place (via [`Ctx`]), groups tensors into layers and hands out each
//! tensor's bytes lazily: files are memory-mapped, so opening a model reads only its
//! header and a tensor's data is touched when it is inspected.
//! This module knows nothing about statistics, compression or any UI.

mod gguf;
pub use gguf::{RawEntry, raw_metadata};
pub mod imatrix;
mod layers;
mod npy;
pub mod onnx;
mod pickle;
mod pth;
mod safetensors;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;

use crate::dtype::DType;
use crate::error::{Error, Result};

pub use layers::{Layer, LayerKind};

/// The container formats slimscope reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Safetensors,
    /// A `model.safetensors.index.json` naming several safetensors shards.
    SafetensorsSharded,
    Gguf,
    /// A PyTorch zip checkpoint (`torch.save`), read with a restricted unpickler.
    Pth,
    Npz,
    Npy,
    Onnx,
}

impl Format {
    /// The name users know the format by.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::SafetensorsSharded => "sharded safetensors",
            Format::Gguf => "GGUF",
            Format::Pth => "PyTorch checkpoint",
            Format::Npz => "NumPy .npz",
            Format::Npy => "NumPy .npy",
            Format::Onnx => "ONNX",
        }
    }
}

/// Where a tensor's bytes live on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file holding the bytes (a shard, for sharded models).
    pub file: PathBuf,
    /// Byte offset of the first element in `file`, where the data is stored plainly.
    pub offset: Option<u64>,
    /// The archive member (zip entry) holding the data, for .pth / .npz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// One stored tensor, as listed by its file.
#[derive(Debug, Clone, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, outermost first (row-major; for GGUF the reverse of ggml's `ne`).
    pub shape: Vec<u64>,
    pub dtype: DType,
    /// Number of elements (parameters).
    #[serde(rename = "params")]
    pub numel: u64,
    /// Bytes the tensor takes in the file.
    #[serde(rename = "bytes")]
    pub size_bytes: u64,
    pub origin: Origin,
}

/// How to get a tensor's bytes. Cheap to clone; touching the bytes may fault in pages.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// Plain little-endian bytes (a slice of a memory-mapped file, or owned).
    Bytes(Bytes),
    /// A deflate-compressed zip member, inflated on demand; `skip` header bytes first.
    /// `fortran` holds (shape, element bytes) of a column-major array to reorder.
    Deflated {
        member: npy::DeflatedMember,
        skip: u64,
        len: u64,
        fortran: Option<(Vec<usize>, usize)>,
    },
    /// Elements laid out with strides inside `base` (a non-contiguous PyTorch view).
    Strided {
        base: Bytes,
        elem_bytes: usize,
        shape: Vec<usize>,
        strides: Vec<usize>,
        offset: usize,
    },
}

/// What a format loader returns.
pub(crate) struct Loaded {
    pub metadata: Vec<(String, serde_json::Value)>,
    pub tensors: Vec<(TensorInfo, Data)>,
    /// Layers the format itself defines (ONNX nodes); `None`: group by name.
    pub layers: Option<Vec<Layer>>,
}

/// The file being opened, and the one place errors get its path attached.
pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
    pub format: &'static str,
}

impl Ctx<'_> {
    pub fn corrupt(&self, problem: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.to_owned(),
            format: self.format,
            problem: problem.into(),
        }
    }
    pub fn io(&self, source: std::io::Error) -> Error {
        Error::io(self.path, source)
    }
    pub fn unsupported(&self, what: impl Into<String>) -> Error {
        Error::Unsupported {
            path: self.path.to_owned(),
            what: what.into(),
        }
    }
    pub fn out_of_bounds(&self, name: &str, offset: u64, len: u64, file_len: u64) -> Error {
        Error::TensorOutOfBounds {
            path: self.path.to_owned(),
            name: name.to_owned(),
            offset,
            end: offset.saturating_add(len),
            file_len,
        }
    }
    /// The `len` bytes at `offset` in `file`, or a clear out-of-bounds error for `name`.
    pub fn slice(&self, file: &Bytes, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        let file_len = file.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= file_len => Ok(file.slice(offset as usize..end as usize)),
            _ => Err(self.out_of_bounds(name, offset, len, file_len)),
        }
    }
    /// Memory-map the file read-only.
    pub fn map(&self) -> Result<Bytes> {
        map_file(self.path)
    }
}

fn f32_info(name: String, shape: &[usize], numel: usize, path: &Path) -> TensorInfo {
    TensorInfo {
        name,
        shape: shape.iter().map(|&d| d as u64).collect(),
        dtype: DType::F32,
        numel: numel as u64,
        size_bytes: 4 * numel as u64,
        origin: Origin {
            file: path.to_owned(),
            offset: None,
            member: None,
        },
    }
}

/// `values` as little-endian bytes, as every format stores f32.
pub(crate) fn f32_bytes(values: &[f32]) -> Bytes {
    Bytes::from(
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

/// Memory-map `path` read-only as shared bytes.
pub(crate) fn map_file(path: &Path) -> Result<Bytes> {
    Error::regular_file(path)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and private to this process. As with every mmap,
    // another process truncating the file while it is open would fault; slimscope
    // never writes its inputs.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Bytes::from_owner(map))
}

/// Parameter and byte totals for one element type.
#[derive(Debug, Clone, Serialize)]
pub struct DTypeTotal {
    pub dtype: DType,
    pub tensors: usize,
    pub params: u64,
    pub size_bytes: u64,
}

/// Whole-model totals.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub tensors: usize,
    pub params: u64,
    pub size_bytes: u64,
    /// Per element type, most bytes first.
    pub by_dtype: Vec<DTypeTotal>,
}

/// An opened model: its tensors, layers and metadata. Tensor data stays on disk
/// (memory-mapped) until asked for.
#[derive(Debug)]
pub struct Model {
    pub path: PathBuf,
    pub format: Format,
    /// The file's own key/value metadata (GGUF keys, safetensors `__metadata__`, ONNX
    /// producer/opset, …), in file order. Long arrays are summarised.
    pub metadata: Vec<(String, serde_json::Value)>,
    pub tensors: Vec<TensorInfo>,
    pub layers: Vec<Layer>,
    data: Vec<Data>,
    /// Tensor name → index (names are unique: [`Model::open`] refuses duplicates).
    index: std::collections::HashMap<String, usize>,
}

impl Model {
    /// Open a model file of any supported format, recognised by its content.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let meta = Error::regular_file(path)?;
        if meta.len() == 0 {
            return Err(Error::EmptyFile {
                path: path.to_owned(),
            });
        }
        let mut head = Vec::with_capacity(64);
        File::open(path)
            .and_then(|f| f.take(64).read_to_end(&mut head))
            .map_err(|e| Error::io(path, e))?;
        let format = sniff(path, &head)?;
        let ctx = Ctx {
            path,
            format: format.name(),
        };
        let loaded = match format {
            Format::Safetensors => safetensors::open(&ctx)?,
            Format::SafetensorsSharded => safetensors::open_sharded(&ctx)?,
            Format::Gguf => gguf::open(&ctx)?,
            Format::Pth => pth::open(&ctx)?,
            Format::Npz => npy::open_npz(&ctx)?,
            Format::Npy => npy::open_npy(&ctx)?,
            Format::Onnx => onnx::open(&ctx)?,
        };
        let (tensors, data): (Vec<_>, Vec<_>) = loaded.tensors.into_iter().unzip();
        refuse_duplicate_names(&ctx, &tensors)?;
        refuse_amplified_views(&ctx, &tensors, &data)?;
        let layers = loaded
            .layers
            .unwrap_or_else(|| layers::group_by_name(format, &tensors));
        Ok(Model {
            path: path.to_owned(),
            format,
            metadata: loaded.metadata,
            index: name_index(&tensors),
            tensors,
            layers,
            data,
        })
    }

    /// A model held in memory: F32 tensors `(name, shape, values)` in order, as if
    /// read from a safetensors file at `path` (a trained student network).
    pub fn from_f32(
        path: impl Into<PathBuf>,
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Model {
        let path = path.into();
        let (infos, data): (Vec<_>, Vec<_>) = tensors
            .into_iter()
            .map(|(name, shape, values)| {
                let info = f32_info(name, &shape, values.len(), &path);
                (info, Data::Bytes(f32_bytes(&values)))
            })
            .unzip();
        let format = Format::Safetensors;
        Model {
            layers: layers::group_by_name(format, &infos),
            path,
            format,
            metadata: Vec::new(),
            index: name_index(&infos),
            tensors: infos,
            data,
        }
    }

    /// This model with some tensors' values replaced by F32 values held in memory
    /// (trained weights), so compression and export treat them like any others.
    /// Names not in the model, or values of the wrong length, are refused.
    pub fn with_values(
        &self,
        values: &std::collections::HashMap<String, Vec<f32>>,
    ) -> Result<Model> {
        let (mut tensors, mut data) = (self.tensors.clone(), self.data.clone());
        for (name, v) in values {
            let i = self
                .tensor_index(name)
                .ok_or_else(|| Error::MissingTensor {
                    path: self.path.clone(),
                    name: name.clone(),
                })?;
            let shape: Vec<usize> = tensors[i].shape.iter().map(|&d| d as usize).collect();
            if v.len() as u64 != tensors[i].numel {
                return Err(Error::Internal(format!(
                    "tensor `{name}`: {} values for shape {shape:?}",
                    v.len()
                )));
            }
            tensors[i] = f32_info(name.clone(), &shape, v.len(), &self.path);
            data[i] = Data::Bytes(f32_bytes(v));
        }
        Ok(Model {
            path: self.path.clone(),
            format: self.format,
            metadata: self.metadata.clone(),
            index: self.index.clone(),
            tensors,
            layers: self.layers.clone(),
            data,
        })
    }

    /// Index of the tensor called `name`.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.index
            .get(name)
            .copied()
            .filter(|&i| self.tensors.get(i).is_some_and(|t| t.name == name))
            .or_else(|| self.tensors.iter().position(|t| t.name == name))
    }

    /// The stored bytes of tensor `index` (little-endian, `size_bytes` long), read or
    /// inflated as needed. Memory-mapped data is not copied.
    pub fn tensor_bytes(&self, index: usize) -> Result<Bytes> {
        let info = self.tensors.get(index).ok_or_else(|| {
            Error::Internal(format!(
                "tensor index {index} out of range ({} tensors)",
                self.tensors.len()
            ))
        })?;
        let Some(data) = self.data.get(index) else {
            return Err(Error::Internal(format!("no data for tensor {index}")));
        };
        let bytes = match data {
            Data::Bytes(b) => b.clone(),
            Data::Deflated {
                member,
                skip,
                len,
                fortran,
            } => {
                let raw = npy::inflate_member(member, *skip, *len)?;
                match fortran {
                    Some((shape, elem)) => {
                        gather_strided(&raw, *elem, shape, &npy::fortran_strides(shape), 0)
                    }
                    None => raw,
                }
            }
            Data::Strided {
                base,
                elem_bytes,
                shape,
                strides,
                offset,
            } => gather_strided(base, *elem_bytes, shape, strides, *offset),
        };
        if bytes.len() as u64 != info.size_bytes {
            return Err(Error::Corrupt {
                path: info.origin.file.clone(),
                format: self.format.name(),
                problem: format!(
                    "tensor `{}` has {} bytes of data, expected {}",
                    info.name,
                    bytes.len(),
                    info.size_bytes
                ),
            });
        }
        Ok(bytes)
    }

    /// A reader of tensor `index`'s bytes when they are a deflated npz member, so
    /// statistics can stream them instead of inflating the whole member into memory;
    /// `None` for data that is mapped (or must be gathered whole).
    pub(crate) fn deflated_stream(&self, index: usize) -> Option<Result<impl Read + use<>>> {
        match self.data.get(index)? {
            Data::Deflated {
                member,
                skip,
                fortran: None,
                ..
            } => Some(npy::MemberStream::open(member, *skip)),
            _ => None,
        }
    }

    /// The values of tensor `index` decoded to f32 (integers converted, ggml blocks
    /// dequantized). Errors name the file and the tensor when its type has no decoder.
    pub fn tensor_f32(&self, index: usize) -> Result<Vec<f32>> {
        let bytes = self.tensor_bytes(index)?;
        let info = &self.tensors[index];
        if !info.dtype.can_decode() {
            return Err(Error::Unsupported {
                path: self.path.clone(),
                what: format!(
                    "tensor `{}`: no decoder for {} values",
                    info.name, info.dtype
                ),
            });
        }
        let mut values = vec![0f32; info.numel as usize];
        crate::dtype::decode(info.dtype, &bytes, &mut values);
        Ok(values)
    }

    /// Parameter and byte totals, overall and per element type.
    pub fn totals(&self) -> Totals {
        let mut by_dtype: Vec<DTypeTotal> = Vec::new();
        for t in &self.tensors {
            match by_dtype.iter_mut().find(|d| d.dtype == t.dtype) {
                Some(d) => {
                    d.tensors += 1;
                    d.params += t.numel;
                    d.size_bytes += t.size_bytes;
                }
                None => by_dtype.push(DTypeTotal {
                    dtype: t.dtype,
                    tensors: 1,
                    params: t.numel,
                    size_bytes: t.size_bytes,
                }),
            }
        }
        by_dtype.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.dtype.cmp(&b.dtype)));
        Totals {
            tensors: self.tensors.len(),
            params: self.tensors.iter().map(|t| t.numel).sum(),
            size_bytes: self.tensors.iter().map(|t| t.size_bytes).sum(),
            by_dtype,
        }
    }
}

/// Copy a strided view into contiguous bytes. Bounds were checked when the view was
/// built (`pth::open`), so indexing cannot fail here.
fn gather_strided(
    base: &Bytes,
    elem: usize,
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) -> Bytes {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&base[at * elem..(at + 1) * elem]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Bytes::from(out)
}

fn name_index(tensors: &[TensorInfo]) -> std::collections::HashMap<String, usize> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// Two tensors of one name make every later lookup ambiguous (which one does a
/// recipe rule, an export or a runtime mean?); llama.cpp and onnx refuse such files.
fn refuse_duplicate_names(ctx: &Ctx, tensors: &[TensorInfo]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(tensors.len());
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(ctx.corrupt(format!("the tensor name `{}` appears twice", t.name)));
        }
    }
    Ok(())
}

/// Tensors may share bytes (tied weights, views of one storage), but tensors that
/// view a file's bytes many times over would make every pass over the model
/// (inspect, apply) far longer than the file: refused past 4× the file plus 256 MiB.
/// Deflated members are bounded by deflate's own ratio instead.
fn refuse_amplified_views(ctx: &Ctx, tensors: &[TensorInfo], data: &[Data]) -> Result<()> {
    let mut by_file: std::collections::HashMap<&Path, u64> = std::collections::HashMap::new();
    for (t, d) in tensors.iter().zip(data) {
        if !matches!(d, Data::Deflated { .. }) {
            let sum = by_file.entry(t.origin.file.as_path()).or_default();
            *sum = sum.saturating_add(t.size_bytes);
        }
    }
    for (file, viewed) in by_file {
        let len = std::fs::metadata(file)
            .map_err(|e| Error::io(file, e))?
            .len();
        if viewed > len.saturating_mul(4).saturating_add(256 << 20) {
            return Err(ctx.corrupt(format!(
                "its tensors view {viewed} bytes of the {len}-byte {}: the same bytes many times over",
                file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned())
            )));
        }
    }
    Ok(())
}

/// `name` (a relative path the model file gives for a file of its own: an ONNX
/// external-data file, a safetensors shard) as a path inside the model's folder.
/// Anything that is not a plain relative path, or that resolves (through symlinks)
/// to a file outside the folder, is refused: a model must never make slimscope read,
/// and so export, another file on the machine.
pub(crate) fn file_beside(ctx: &Ctx, name: &str, what: &str) -> Result<PathBuf> {
    let plain = !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(ctx.corrupt(format!(
            "{what} `{name}` is not a plain file name inside the model's folder"
        )));
    }
    let dir = folder_of(ctx.path);
    let path = dir.join(name);
    if leads_outside(dir, &path).map_err(|e| Error::io(&path, e))? {
        return Err(ctx.corrupt(format!(
            "{what} `{name}` leads outside the model's folder (a symlink); refusing to read it"
        )));
    }
    Ok(path)
}

/// The folder a model file (as given) lies in: its own files must stay inside it.
pub(crate) fn folder_of(model: &Path) -> &Path {
    model
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `path` resolves, through any symlinks, to somewhere outside `dir`; an error
/// if either does not exist.
pub(crate) fn leads_outside(dir: &Path, path: &Path) -> std::io::Result<bool> {
    Ok(!path.canonicalize()?.starts_with(dir.canonicalize()?))
}

/// Recognise the format from the first bytes (and, for JSON/ONNX, the name).
fn sniff(path: &Path, head: &[u8]) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if head.starts_with(b"GGUF") {
        return Ok(Format::Gguf);
    }
    if head.starts_with(b"\x93NUMPY") {
        return Ok(Format::Npy);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return zip_kind(path);
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    let text_start = head.iter().find(|b| !b.is_ascii_whitespace());
    if text_start == Some(&b'{') {
        return Ok(Format::SafetensorsSharded);
    }
    // ONNX is a bare protobuf: no magic. A ModelProto almost always starts with
    // field 1 (ir_version, varint: tag 0x08); accept that, or the .onnx extension.
    if head.first() == Some(&0x08) || ext == "onnx" {
        return Ok(Format::Onnx);
    }
    // Say what kind of content it is, never the content itself: the file may be a
    // private one (a key, a password file) opened by mistake or through a link.
    let texty = head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b >= 0x80);
    Err(Error::UnknownFormat {
        path: path.to_owned(),
        hint: if texty {
            "the file starts with text".into()
        } else {
            "the file starts with unrecognised binary data".into()
        },
    })
}

/// A zip archive is a PyTorch checkpoint if it holds a `data.pkl`, an npz if it holds
/// `.npy` members.
fn zip_kind(path: &Path) -> Result<Format> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let archive =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            format: "zip (.pth/.npz)",
            problem: e.to_string(),
        })?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    if names.iter().any(|n| n.ends_with("data.pkl")) {
        Ok(Format::Pth)
    } else if names.iter().any(|n| n.ends_with(".npy")) {
        Ok(Format::Npz)
    } else {
        Err(Error::UnknownFormat {
            path: path.to_owned(),
            hint: "a zip archive with neither data.pkl (PyTorch) nor .npy members (NumPy)".into(),
        })
    }
}

/// Product of dims as u64, or `None` on overflow.
pub(crate) fn checked_numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}
