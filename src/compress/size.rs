//! Size accounting: the bytes a tensor really takes in a named storage format, so
//! every size the app shows is a real on-disk figure, not bits × params.
//!
//! Formulas (n weights in `rows` rows of `row_len`, `nnz` of them non-zero):
//! - dense: ⌈n·bits/8⌉;
//! - packed integers: ⌈n·bits/8⌉ values + one scale per group (f16 or f32) + for
//!   asymmetric schemes one `bits`-wide zero point per group, packed;
//! - GGUF blocks: n/block · block bytes (Q4_0: 18 B per 32 weights, …);
//! - sparse bitmask: ⌈n/8⌉ mask bytes + nnz values;
//! - CSR: nnz values + nnz column indices of the narrowest width (8/16/32 bits) that
//!   holds `row_len − 1` + (rows + 1) 32-bit row pointers.

use serde::Serialize;

use super::quant::Granularity;
use crate::dtype::GgmlQuant;

/// A storage format whose size can be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Storage {
    /// Plain values of `bits` each (32 f32, 16 f16/bf16, 8 fp8/int8).
    Dense { bits: u32 },
    /// Packed `bits`-bit integers with per-group scales of `scale_bits` (16 or 32).
    Int {
        bits: u32,
        granularity: Granularity,
        asymmetric: bool,
        scale_bits: u32,
    },
    /// A ggml block type.
    Gguf {
        #[serde(serialize_with = "ggml_name")]
        quant: GgmlQuant,
    },
    /// One mask bit per weight plus the non-zero values of `value_bits`.
    SparseBitmask { value_bits: u32 },
    /// Compressed sparse rows with values of `value_bits`.
    Csr { value_bits: u32 },
}

fn ggml_name<S: serde::Serializer>(q: &GgmlQuant, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(q.name())
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Storage::Dense { bits } => write!(f, "dense {bits}-bit"),
            Storage::Int {
                bits,
                granularity,
                asymmetric,
                scale_bits,
            } => {
                let scope = match granularity {
                    Granularity::PerTensor => "per tensor".to_owned(),
                    Granularity::PerChannel => "per channel".to_owned(),
                    Granularity::Group(g) => format!("groups of {g}"),
                };
                let zp = if asymmetric { " + zero points" } else { "" };
                write!(f, "int{bits}, {scope} ({scale_bits}-bit scales{zp})")
            }
            Storage::Gguf { quant } => write!(f, "GGUF {}", quant.name()),
            Storage::SparseBitmask { value_bits } => {
                write!(f, "bitmask + {value_bits}-bit non-zeros")
            }
            Storage::Csr { value_bits } => write!(f, "CSR, {value_bits}-bit non-zeros"),
        }
    }
}

/// Why a size cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{n} weights are not a whole number of {block}-weight {name} blocks")]
    NotWholeBlocks {
        n: u64,
        block: u64,
        name: &'static str,
    },
    #[error("group size {group} does not divide rows of {row_len}")]
    BadGroup { group: u64, row_len: u64 },
    #[error("{nnz} non-zeros in a tensor of {n} weights")]
    BadNnz { nnz: u64, n: u64 },
}

/// A tensor viewed as `[rows, row_len]` (output channels × inputs), with `nnz`
/// non-zero weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub rows: u64,
    pub row_len: u64,
    pub nnz: u64,
}

impl Layout {
    pub fn dense(rows: u64, row_len: u64) -> Layout {
        Layout {
            rows,
            row_len,
            nnz: rows * row_len,
        }
    }
    pub fn numel(&self) -> u64 {
        self.rows * self.row_len
    }
}

/// Bits of the narrowest index type (8, 16 or 32) that holds `0..len`.
pub fn index_bits(len: u64) -> u64 {
    match len.saturating_sub(1) {
        0..=0xff => 8,
        0x100..=0xffff => 16,
        _ => 32,
    }
}

fn packed(count: u64, bits: u64) -> u64 {
    (count * bits).div_ceil(8)
}

/// Bytes `layout` takes in `storage`.
pub fn size_bytes(storage: Storage, layout: Layout) -> Result<u64, SizeError> {
    let n = layout.numel();
    if layout.nnz > n {
        return Err(SizeError::BadNnz { nnz: layout.nnz, n });
    }
    Ok(match storage {
        Storage::Dense { bits } => packed(n, u64::from(bits)),
        Storage::Int {
            bits,
            granularity,
            asymmetric,
            scale_bits,
        } => {
            let groups = match granularity {
                Granularity::PerTensor => 1,
                Granularity::PerChannel => layout.rows,
                Granularity::Group(g) => {
                    let g = g as u64;
                    if g == 0 || !layout.row_len.is_multiple_of(g) {
                        return Err(SizeError::BadGroup {
                            group: g,
                            row_len: layout.row_len,
                        });
                    }
                    n / g
                }
            };
            let zero_points = if asymmetric {
                packed(groups, u64::from(bits))
            } else {
                0
            };
            packed(n, u64::from(bits)) + packed(groups, u64::from(scale_bits)) + zero_points
        }
        Storage::Gguf { quant } => {
            let block = quant.block_len();
            if !n.is_multiple_of(block) {
                return Err(SizeError::NotWholeBlocks {
                    n,
                    block,
                    name: quant.name(),
                });
            }
            n / block * quant.block_bytes()
        }
        Storage::SparseBitmask { value_bits } => {
            n.div_ceil(8) + packed(layout.nnz, u64::from(value_bits))
        }
        Storage::Csr { value_bits } => {
            packed(
                layout.nnz,
                u64::from(value_bits) + index_bits(layout.row_len),
            ) + (layout.rows + 1) * 4
        }
    })
}

/// The smallest of `candidates` for `layout` (formats that cannot hold it are skipped),
/// with its size; ties keep the earlier candidate.
pub fn smallest(candidates: &[Storage], layout: Layout) -> Option<(Storage, u64)> {
    candidates
        .iter()
        .filter_map(|&s| size_bytes(s, layout).ok().map(|b| (s, b)))
        .fold(None, |best: Option<(Storage, u64)>, (s, b)| match best {
            Some((_, bb)) if bb <= b => best,
            _ => Some((s, b)),
        })
}

/// Multiply-accumulate FLOPs (2 per MAC) of a linear layer `[out, in]` per sample.
pub fn linear_flops(out_features: u64, in_features: u64) -> u64 {
    2 * out_features * in_features
}

/// FLOPs per output position of a conv weight `[out_ch, in_ch/groups, kh, kw]`
/// (multiply by the output's H·W for the whole layer).
pub fn conv_flops_per_position(shape: [u64; 4]) -> u64 {
    2 * shape.iter().product::<u64>()
}

/// FLOPs per sample (linear `[out, in]`) or per output position (conv
/// `[out, in/groups, kh, kw]`) of a weight of `shape`, before and after pruning:
/// structured pruning computes with the smaller `shape_after`, N:M with `n/m` of the
/// multiplies (sparse tensor cores); unstructured sparsity buys nothing on dense
/// kernels and is not counted. `None` for tensors that are not linear or conv weights.
pub fn weight_flops(
    shape: &[u64],
    shape_after: Option<&[u64]>,
    n_of_m: Option<(usize, usize)>,
) -> Option<(u64, u64)> {
    let flops = |s: &[u64]| match *s {
        [out, inp] => Some(linear_flops(out, inp)),
        [o, i, h, w] => Some(conv_flops_per_position([o, i, h, w])),
        _ => None,
    };
    let before = flops(shape)?;
    let mut after = shape_after.and_then(flops).unwrap_or(before);
    if let Some((n, m)) = n_of_m.filter(|&(_, m)| m > 0) {
        after = after * n as u64 / m as u64;
    }
    Some((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_count_what_pruning_really_removes() {
        // A 1024-neuron layer over 512 inputs pruned 60% structurally: 410 neurons.
        assert_eq!(
            weight_flops(&[1024, 512], Some(&[410, 512]), None),
            Some((2 * 1024 * 512, 2 * 410 * 512))
        );
        assert_eq!(
            weight_flops(&[64, 32, 3, 3], None, Some((2, 4))),
            Some((2 * 64 * 32 * 9, 64 * 32 * 9))
        );
        assert_eq!(weight_flops(&[256], None, None), None);
    }

    /// The anchors' workload: 4096 × 16384 weights.
    const BIG: Layout = Layout {
        rows: 4096,
        row_len: 16384,
        nnz: 4096 * 16384,
    };
    const N: u64 = 4096 * 16384;

    #[test]
    fn dense_and_gguf_sizes_by_hand() {
        assert_eq!(
            size_bytes(Storage::Dense { bits: 32 }, BIG),
            Ok(268_435_456)
        );
        assert_eq!(
            size_bytes(Storage::Dense { bits: 16 }, BIG),
            Ok(134_217_728)
        );
        // Q4_0: 18 bytes per 32 weights = 4.5 bits/weight; Q8_0: 34 per 32.
        assert_eq!(
            size_bytes(
                Storage::Gguf {
                    quant: GgmlQuant::Q4_0
                },
                BIG
            ),
            Ok(N / 32 * 18)
        );
        assert_eq!(
            size_bytes(
                Storage::Gguf {
                    quant: GgmlQuant::Q8_0
                },
                BIG
            ),
            Ok(N / 32 * 34)
        );
        assert_eq!(
            size_bytes(
                Storage::Gguf {
                    quant: GgmlQuant::Q4_K
                },
                BIG
            ),
            Ok(N / 256 * 144)
        );
        let odd = Layout::dense(3, 10);
        assert!(
            size_bytes(
                Storage::Gguf {
                    quant: GgmlQuant::Q4_0
                },
                odd
            )
            .is_err()
        );
    }

    #[test]
    fn packed_integers_count_their_scales_and_zero_points() {
        let int = |bits, granularity, asymmetric| Storage::Int {
            bits,
            granularity,
            asymmetric,
            scale_bits: 16,
        };
        // int4 per channel: N/2 bytes + 4096 f16 scales.
        assert_eq!(
            size_bytes(int(4, Granularity::PerChannel, false), BIG),
            Ok(N / 2 + 4096 * 2)
        );
        // int4 group 128 asymmetric: + N/128 f16 scales + N/128 4-bit zero points.
        assert_eq!(
            size_bytes(int(4, Granularity::Group(128), true), BIG),
            Ok(N / 2 + N / 128 * 2 + N / 128 / 2)
        );
        // int3 per tensor: 3 bits each, one scale.
        assert_eq!(
            size_bytes(int(3, Granularity::PerTensor, false), BIG),
            Ok(N * 3 / 8 + 2)
        );
    }

    #[test]
    fn sparse_formats_and_the_smallest() {
        // 90% sparse, f16 values: bitmask = N/8 + 0.1N·2; CSR = 0.1N·(2 + 2) + 4097·4
        // (16-bit column indices suffice for 16384 columns).
        let sparse = Layout { nnz: N / 10, ..BIG };
        assert_eq!(
            size_bytes(Storage::SparseBitmask { value_bits: 16 }, sparse),
            Ok(N / 8 + N / 10 * 2)
        );
        assert_eq!(
            size_bytes(Storage::Csr { value_bits: 16 }, sparse),
            Ok(N / 10 * 4 + 4097 * 4)
        );
        let options = [
            Storage::Dense { bits: 16 },
            Storage::SparseBitmask { value_bits: 16 },
            Storage::Csr { value_bits: 16 },
        ];
        assert_eq!(
            smallest(&options, sparse).map(|s| s.0),
            Some(Storage::SparseBitmask { value_bits: 16 })
        );
        // 99% sparse: CSR wins; dense (no zeros): dense wins.
        let very = Layout {
            nnz: N / 100,
            ..BIG
        };
        assert_eq!(
            smallest(&options, very).map(|s| s.0),
            Some(Storage::Csr { value_bits: 16 })
        );
        assert_eq!(
            smallest(&options, BIG).map(|s| s.0),
            Some(Storage::Dense { bits: 16 })
        );
        assert_eq!(
            (index_bits(256), index_bits(257), index_bits(70_000)),
            (8, 16, 32)
        );
    }

    #[test]
    fn flops_by_hand() {
        assert_eq!(linear_flops(256, 1152), 589_824);
        assert_eq!(conv_flops_per_position([64, 32, 3, 3]), 36_864);
    }
}
