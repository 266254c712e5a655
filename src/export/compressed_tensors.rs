//! safetensors in the compressed-tensors layout: what Hugging Face transformers
//! (with the `compressed-tensors` package) and vLLM load as a quantized checkpoint.
//!
//! An integer-quantized 2-D weight `P.weight` is written in compressed-tensors'
//! `pack-quantized` format, as its `PackedQuantizationCompressor` writes it:
//! - `P.weight_packed`: int32 `[rows, ⌈cols / (32 / bits)⌉]`; code `j` of a row sits
//!   in word `j / f` at bit `(j mod f)·bits` (`f = 32 / bits`), as the unsigned
//!   `q + 2^(bits−1)` of the signed code `q`, the last word padded with zeros;
//! - `P.weight_scale`: f32, `[1]` per tensor, `[rows, 1]` per channel,
//!   `[rows, cols / group]` per group;
//! - `P.weight_zero_point` (asymmetric only): signed codes, int8 `[1]` per tensor,
//!   else packed like the weight but along rows: int32 `[⌈rows / f⌉, groups]`;
//! - `P.weight_shape`: int64 `[2]`, the dense shape.
//!
//! A loader decodes `(q − zero_point)·scale` in f32: exactly the values slimscope
//! evaluated. A pruned 2-D weight that stays float is written in the `sparse-bitmask`
//! format where that is smaller (see [`Bitmask`]). `config.json` beside the file
//! carries the `quantization_config` naming each packed module and the
//! `sparsity_config` naming each sparse one. f16 and bf16 tensors are stored in their type; other
//! compressed tensors (fp8, GGUF blocks, integer grids on weights that are not 2-D
//! such as convolutions) stay f32 values and are left out of the config, so a loader
//! keeps them dense; the notes say which.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::compress::apply::AppliedTensor;
use crate::compress::quant::{IntCodes, IntGrid};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::Model;

use super::safetensors::{Entry, Source, plain_entry, write_entries};
use super::{check_output, check_output_paths, persist};

/// What a compressed-tensors export wrote.
#[derive(Debug)]
pub struct CompressedTensorsExport {
    /// The safetensors file's size on disk.
    pub bytes: u64,
    /// The `config.json` written beside it.
    pub config: PathBuf,
    /// Compressed tensors stored as f32 values, and why.
    pub notes: Vec<String>,
}

/// How a 2-D weight's scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strategy {
    Tensor,
    Channel,
    Group(usize),
}

/// A weight written in the `pack-quantized` format.
struct Packing<'a> {
    prefix: String,
    rows: usize,
    cols: usize,
    bits: u8,
    symmetric: bool,
    strategy: Strategy,
    grid: &'a IntGrid,
    values: &'a [f32],
    /// The scales and zero points once the codes were computed.
    params: RefCell<Option<IntCodes>>,
}

impl Packing<'_> {
    /// Codes per int32 word.
    fn per_word(&self) -> usize {
        32 / self.bits as usize
    }

    /// Scales per row (one for the whole tensor counts as one row's).
    fn groups_per_row(&self) -> usize {
        match self.strategy {
            Strategy::Tensor | Strategy::Channel => 1,
            Strategy::Group(g) => self.cols / g,
        }
    }

    fn scale_shape(&self) -> Vec<u64> {
        match self.strategy {
            Strategy::Tensor => vec![1],
            _ => vec![self.rows as u64, self.groups_per_row() as u64],
        }
    }

    /// The codes, checked to decode to the evaluated values bit for bit. The scales
    /// and zero points are kept for the tensors written after the codes (not the
    /// codes themselves: one tensor's codes at a time are in memory).
    fn codes(&self) -> Result<IntCodes> {
        let internal = |what: &str| Error::Internal(format!("`{}weight`: {what}", self.prefix));
        let codes = (self.grid.codes(self.values))
            .ok_or_else(|| internal("a value is off its integer grid"))?;
        if self.symmetric && codes.zero_points.iter().any(|&z| z != 0) {
            // compressed-tensors stores no zero point for symmetric weights.
            return Err(internal("a symmetric grid with a zero point"));
        }
        *self.params.borrow_mut() = Some(IntCodes {
            codes: Vec::new(),
            ..codes.clone()
        });
        Ok(codes)
    }

    /// The scales and zero points (computed with the codes, when they were).
    fn params(&self) -> Result<IntCodes> {
        // The borrow ends before `codes` takes the cell mutably.
        let cached = self.params.borrow().clone();
        match cached {
            Some(p) => Ok(p),
            None => self.codes(),
        }
    }

    /// The four tensors the format stores for this weight, in the order written.
    fn entries(&self) -> Vec<Entry<'_>> {
        let f = self.per_word();
        let offset = 1i32 << (self.bits - 1);
        // An asymmetric code is already `q_signed + 2^(bits-1)`; a symmetric one is signed.
        let unsigned = move |q: i32, symmetric: bool| if symmetric { q + offset } else { q };
        let packed_cols = self.cols.div_ceil(f);
        let mut out = vec![Entry {
            name: format!("{}weight_packed", self.prefix),
            dtype: "I32",
            shape: vec![self.rows as u64, packed_cols as u64],
            len: 4 * (self.rows * packed_cols) as u64,
            bytes: Source::Later(Box::new(move || {
                let codes = self.codes()?;
                let mut bytes = Vec::with_capacity(4 * self.rows * packed_cols);
                for row in codes.codes.chunks(self.cols) {
                    for word in row.chunks(f) {
                        let w = word.iter().enumerate().fold(0u32, |w, (k, &q)| {
                            w | ((unsigned(q, self.symmetric) as u32) << (k * self.bits as usize))
                        });
                        bytes.extend_from_slice(&w.to_le_bytes());
                    }
                }
                Ok(bytes)
            })),
        }];
        let scales = self.scale_shape();
        out.push(Entry {
            name: format!("{}weight_scale", self.prefix),
            dtype: "F32",
            len: 4 * scales.iter().product::<u64>(),
            shape: scales,
            bytes: Source::Later(Box::new(move || {
                Ok(self
                    .params()?
                    .scales
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect())
            })),
        });
        if !self.symmetric {
            let groups = self.groups_per_row();
            out.push(match self.strategy {
                Strategy::Tensor => Entry {
                    name: format!("{}weight_zero_point", self.prefix),
                    dtype: "I8",
                    shape: vec![1],
                    len: 1,
                    bytes: Source::Later(Box::new(move || {
                        Ok(vec![(self.params()?.zero_points[0] - offset) as i8 as u8])
                    })),
                },
                _ => {
                    let packed_rows = self.rows.div_ceil(f);
                    Entry {
                        name: format!("{}weight_zero_point", self.prefix),
                        dtype: "I32",
                        shape: vec![packed_rows as u64, groups as u64],
                        len: 4 * (packed_rows * groups) as u64,
                        bytes: Source::Later(Box::new(move || {
                            let zp = self.params()?.zero_points;
                            let mut bytes = Vec::with_capacity(4 * packed_rows * groups);
                            for word_row in 0..packed_rows {
                                for g in 0..groups {
                                    let mut w = 0u32;
                                    for k in 0..f {
                                        let row = word_row * f + k;
                                        if row < self.rows {
                                            // The signed zero point plus the offset: ours.
                                            let u = zp[row * groups + g] as u32;
                                            w |= u << (k * self.bits as usize);
                                        }
                                    }
                                    bytes.extend_from_slice(&w.to_le_bytes());
                                }
                            }
                            Ok(bytes)
                        })),
                    }
                }
            });
        }
        let shape = [self.rows as i64, self.cols as i64];
        out.push(Entry {
            name: format!("{}weight_shape", self.prefix),
            dtype: "I64",
            shape: vec![2],
            len: 16,
            bytes: Source::Later(Box::new(move || {
                Ok(shape.iter().flat_map(|d| d.to_le_bytes()).collect())
            })),
        });
        out
    }

    /// compressed-tensors' `QuantizationArgs` for these weights.
    fn args(&self) -> Value {
        let (strategy, group_size) = match self.strategy {
            Strategy::Tensor => ("tensor", Value::Null),
            Strategy::Channel => ("channel", Value::Null),
            Strategy::Group(g) => ("group", json!(g)),
        };
        json!({
            "num_bits": self.bits,
            "type": "int",
            "symmetric": self.symmetric,
            "strategy": strategy,
            "group_size": group_size,
            "block_structure": null,
            "dynamic": false,
            "actorder": null,
            "observer": "minmax",
            "observer_kwargs": {},
        })
    }
}

/// How `t` is packed, or why it stays f32 values.
fn packing<'a>(t: &'a AppliedTensor) -> std::result::Result<Packing<'a>, String> {
    let Some(grid) = &t.grid else {
        return Err(format!(
            "`{}` ({}): not on an integer grid; stored as f32 values",
            t.name, t.scheme
        ));
    };
    let (Some(module), &[rows, cols]) = (t.name.strip_suffix(".weight"), &t.shape[..]) else {
        return Err(format!(
            "`{}`: compressed-tensors packs 2-D `.weight` tensors (a linear layer's); \
             stored as f32 values",
            t.name
        ));
    };
    if rows == 0 || cols == 0 {
        return Err(format!(
            "`{}`: an empty tensor; stored as f32 values",
            t.name
        ));
    }
    let prefix = format!("{module}.");
    let (rows, cols) = (rows as usize, cols as usize);
    let strategy = match grid.scales.len() {
        1 => Strategy::Tensor,
        _ if grid.group == cols => Strategy::Channel,
        _ if grid.group > 0 && cols.is_multiple_of(grid.group) => Strategy::Group(grid.group),
        _ => {
            return Err(format!(
                "`{}`: groups of {} do not tile its rows of {cols}; stored as f32 values",
                t.name, grid.group
            ));
        }
    };
    if !(1..=8).contains(&grid.bits) {
        return Err(format!(
            "`{}`: {} bits do not pack; stored as f32 values",
            t.name, grid.bits
        ));
    }
    Ok(Packing {
        prefix,
        rows,
        cols,
        bits: grid.bits,
        symmetric: grid.symmetric,
        strategy,
        grid,
        values: &t.values,
        params: RefCell::new(None),
    })
}

/// An f16 or bf16 tensor in its own type (its values are on that grid); a loader
/// casts it to the model's type as it does any checkpoint's.
fn half_entry(t: &AppliedTensor) -> Option<Entry<'_>> {
    let (dtype, encode): (&'static str, fn(f32) -> [u8; 2]) = match t.stored {
        DType::F16 => ("F16", |v| half::f16::from_f32(v).to_le_bytes()),
        DType::BF16 => ("BF16", |v| half::bf16::from_f32(v).to_le_bytes()),
        _ => return None,
    };
    Some(Entry {
        name: t.name.clone(),
        dtype,
        shape: t.shape.clone(),
        len: 2 * t.values.len() as u64,
        bytes: Source::Later(Box::new(move || {
            Ok(t.values.iter().flat_map(|&v| encode(v)).collect())
        })),
    })
}

/// How one model tensor is written.
enum Stored {
    Packed,
    Sparse,
    Whole(usize),
}

/// A pruned weight that stays float, in compressed-tensors' `sparse-bitmask` format
/// (its `BitmaskCompressor`): `P.compressed`, the non-zero values in row-major order
/// in the tensor's type; `P.bitmask`, uint8 `[rows, ⌈cols / 8⌉]`, bit `j mod 8` of
/// byte `j / 8` set where column `j` is non-zero (numpy's `packbits`, little bit
/// order); `P.row_offsets`, int64 `[rows]`, where each row's values start; `P.shape`,
/// int64 `[2]`. Only where that is smaller than the dense tensor.
struct Bitmask<'a> {
    prefix: String,
    rows: usize,
    cols: usize,
    nonzero: usize,
    /// Type name and bytes per value.
    dtype: (&'static str, usize),
    values: &'a [f32],
}

impl<'a> Bitmask<'a> {
    fn of(t: &'a AppliedTensor) -> Option<Bitmask<'a>> {
        let dtype = match t.stored {
            DType::F32 => ("F32", 4),
            DType::F16 => ("F16", 2),
            DType::BF16 => ("BF16", 2),
            _ => return None,
        };
        let (Some(prefix), &[rows, cols]) = (t.name.strip_suffix(".weight"), &t.shape[..]) else {
            return None;
        };
        if !t.pruned || t.grid.is_some() || rows == 0 || cols == 0 {
            return None;
        }
        let (rows, cols) = (rows as usize, cols as usize);
        let nonzero = t.values.iter().filter(|&&v| v != 0.0).count();
        let b = Bitmask {
            prefix: prefix.to_owned(),
            rows,
            cols,
            nonzero,
            dtype,
            values: &t.values,
        };
        (b.bytes() < (rows * cols * dtype.1) as u64).then_some(b)
    }

    fn bytes(&self) -> u64 {
        (self.nonzero * self.dtype.1 + self.rows * self.cols.div_ceil(8) + 8 * self.rows + 16)
            as u64
    }

    fn entries(&self) -> Vec<Entry<'_>> {
        let p = &self.prefix;
        let (dtype, width) = self.dtype;
        let shape = [self.rows as i64, self.cols as i64];
        vec![
            Entry {
                name: format!("{p}.shape"),
                dtype: "I64",
                shape: vec![2],
                len: 16,
                bytes: Source::Later(Box::new(move || {
                    Ok(shape.iter().flat_map(|d| d.to_le_bytes()).collect())
                })),
            },
            Entry {
                name: format!("{p}.compressed"),
                dtype,
                shape: vec![self.nonzero as u64],
                len: (self.nonzero * width) as u64,
                bytes: Source::Later(Box::new(move || {
                    let nonzero = self.values.iter().filter(|&&v| v != 0.0);
                    Ok(match dtype {
                        "F16" => nonzero
                            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                            .collect(),
                        "BF16" => nonzero
                            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                            .collect(),
                        _ => nonzero.flat_map(|&v| v.to_le_bytes()).collect(),
                    })
                })),
            },
            Entry {
                name: format!("{p}.bitmask"),
                dtype: "U8",
                shape: vec![self.rows as u64, self.cols.div_ceil(8) as u64],
                len: (self.rows * self.cols.div_ceil(8)) as u64,
                bytes: Source::Later(Box::new(move || {
                    let mut bytes = Vec::with_capacity(self.rows * self.cols.div_ceil(8));
                    for row in self.values.chunks(self.cols) {
                        for byte in row.chunks(8) {
                            let b = byte
                                .iter()
                                .enumerate()
                                .fold(0u8, |b, (k, &v)| b | (u8::from(v != 0.0) << k));
                            bytes.push(b);
                        }
                    }
                    Ok(bytes)
                })),
            },
            Entry {
                name: format!("{p}.row_offsets"),
                dtype: "I64",
                shape: vec![self.rows as u64],
                len: 8 * self.rows as u64,
                bytes: Source::Later(Box::new(move || {
                    let mut start = 0i64;
                    let mut bytes = Vec::with_capacity(8 * self.rows);
                    for row in self.values.chunks(self.cols) {
                        bytes.extend_from_slice(&start.to_le_bytes());
                        start += row.iter().filter(|&&v| v != 0.0).count() as i64;
                    }
                    Ok(bytes)
                })),
            },
        ]
    }
}

/// The `quantization_config` for `packed` and `sparse`: one config group per
/// distinct integer setting, targeting its modules by name, and a `sparsity_config`
/// naming the bitmask-sparse ones (`{}` when none: compressed-tensors reads that as
/// no sparsity). Without packed weights only the method and the sparsity remain,
/// which compressed-tensors reads as no quantization.
fn quantization_config(packed: &[Packing], sparse: &[Bitmask]) -> Value {
    let mut groups: BTreeMap<String, (Value, Vec<&str>)> = BTreeMap::new();
    for p in packed {
        let args = p.args();
        let module = p.prefix.strip_suffix('.').unwrap_or(&p.prefix);
        groups
            .entry(args.to_string())
            .or_insert_with(|| (args, Vec::new()))
            .1
            .push(module);
    }
    let config_groups: serde_json::Map<String, Value> = groups
        .into_values()
        .enumerate()
        .map(|(n, (weights, targets))| {
            (
                format!("group_{n}"),
                json!({
                    "targets": targets,
                    "weights": weights,
                    "input_activations": null,
                    "output_activations": null,
                    "format": "pack-quantized",
                }),
            )
        })
        .collect();
    let sparsity = if sparse.is_empty() {
        json!({})
    } else {
        let (zeros, total) = sparse.iter().fold((0, 0), |(z, n), b| {
            (z + b.rows * b.cols - b.nonzero, n + b.rows * b.cols)
        });
        json!({
            "format": "sparse-bitmask",
            "targets": sparse.iter().map(|b| b.prefix.as_str()).collect::<Vec<_>>(),
            "ignore": [],
            // Over the sparse targets (informational, as compressed-tensors says).
            "global_sparsity": zeros as f64 / total as f64,
            "sparsity_structure": "unstructured",
        })
    };
    if packed.is_empty() {
        return json!({
            "quant_method": "compressed-tensors",
            "sparsity_config": sparsity,
        });
    }
    json!({
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": [],
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": sparsity,
    })
}

/// Write `model` with `applied`'s tensors to `out` in the compressed-tensors layout,
/// and `config.json` beside it: the model's own `config.json` (when its folder has
/// one) with the `quantization_config` added, else that alone. `metadata` lands in
/// the file's `__metadata__`.
pub fn write_compressed_tensors(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    metadata: BTreeMap<String, String>,
    out: &Path,
    force: bool,
) -> Result<CompressedTensorsExport> {
    check_output(model, out, force)?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config_out = dir.join("config.json");
    let source_dir = crate::model::folder_of(&model.path);
    let source_config = source_dir.join("config.json");
    check_output_paths(&[&model.path, &source_config], &config_out, force)?;
    let mut config = match crate::model::leads_outside(source_dir, &source_config) {
        Ok(false) if source_config.is_file() => {
            let text = crate::text::read_settings(&source_config)?;
            serde_json::from_str::<Value>(&text)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| Error::Corrupt {
                    path: source_config.clone(),
                    format: "config.json",
                    problem: "not a JSON object".into(),
                })?
        }
        _ => json!({}),
    };

    let by_index: HashMap<usize, &AppliedTensor> = applied.iter().map(|(i, t)| (*i, t)).collect();
    let mut notes = Vec::new();
    let mut packed = Vec::new();
    let mut sparse = Vec::new();
    // Per model tensor: packed (the next of `packed`), bitmask-sparse (the next of
    // `sparse`) or written whole.
    let mut order = Vec::with_capacity(model.tensors.len());
    for i in 0..model.tensors.len() {
        let Some(&t) = by_index.get(&i) else {
            order.push(Stored::Whole(i));
            continue;
        };
        match packing(t) {
            Ok(p) => {
                packed.push(p);
                order.push(Stored::Packed);
            }
            Err(note) => {
                if let Some(b) = Bitmask::of(t) {
                    sparse.push(b);
                    order.push(Stored::Sparse);
                    continue;
                }
                if t.grid.is_some() || !matches!(t.stored, DType::F32 | DType::F16 | DType::BF16) {
                    notes.push(note);
                }
                order.push(Stored::Whole(i));
            }
        }
    }
    let mut entries = Vec::new();
    let (mut next_packed, mut next_sparse) = (packed.iter(), sparse.iter());
    for slot in order {
        match slot {
            Stored::Whole(i) => entries.push(match by_index.get(&i).and_then(|t| half_entry(t)) {
                Some(entry) => entry,
                None => plain_entry(model, i, by_index.get(&i).copied())?,
            }),
            Stored::Packed => {
                entries.extend(next_packed.next().map(Packing::entries).unwrap_or_default())
            }
            Stored::Sparse => {
                entries.extend(next_sparse.next().map(Bitmask::entries).unwrap_or_default())
            }
        }
    }
    config["quantization_config"] = quantization_config(&packed, &sparse);
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Internal(format!("{}: {e}", config_out.display())))?;

    let tmp = write_entries(model, entries, metadata, out)?;
    let bytes = std::fs::metadata(tmp.path())
        .map_err(|e| Error::io(out, e))?
        .len();
    // Both finished before either is renamed into place.
    super::write_text(&config_out, &(text + "\n"), force)?;
    persist(tmp, out, force)?;
    Ok(CompressedTensorsExport {
        bytes,
        config: config_out,
        notes,
    })
}
