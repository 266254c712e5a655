//! Integer fake-quantization (quantize, then dequantize back to f32 for evaluation)
//! and weight-fidelity figures.
//!
//! Scheme (round to nearest, half to even like `torch.round`/`np.rint`, in f32):
//! - symmetric: `scale = absmax / (2^(b−1) − 1)`, `q = clamp(rint(x/scale), −qmax, qmax)`,
//!   `x̂ = q·scale`;
//! - asymmetric: `scale = (max − min) / (2^b − 1)`, `zp = clamp(rint(−min/scale), 0, 2^b − 1)`,
//!   `q = clamp(rint(x/scale) + zp, 0, 2^b − 1)`, `x̂ = (q − zp)·scale`;
//! - a zero scale (a constant group) reproduces the group: `x̂ = min` (asymmetric) or 0.
//!
//! Scales are taken per tensor, per output channel (a row of the `[rows, row_len]`
//! view) or per group of consecutive values along the input dimension. With
//! [`Clip::Mse`] each scale's range is first shrunk to the one of 80 candidates
//! `p·[min, max]`, `p = 1, 0.99, …, 0.21` (GPTQ's grid), with the least squared
//! error: clipping a few outliers buys a finer grid for everything else.
//! [`Fidelity`] figures describe the weights only: they are not accuracy.

use rayon::prelude::*;
use serde::Serialize;

/// Values per parallel work item when one scale covers many values.
const CHUNK: usize = 1 << 16;

/// Which values share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    PerTensor,
    /// One scale per output channel (row).
    PerChannel,
    /// One scale per this many consecutive values along a row (32, 64, 128, …).
    Group(usize),
}

/// How a scale's range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clip {
    /// The full range: absmax (symmetric) or [min, max].
    #[default]
    None,
    /// The shrunk range with the least squared error.
    Mse,
}

/// Range candidates: `p = 1 − i/CLIP_GRID` for `i < CLIP_STEPS`.
const CLIP_GRID: f32 = 100.0;
const CLIP_STEPS: usize = 80;

/// An integer quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IntScheme {
    /// 2 to 8.
    pub bits: u8,
    pub symmetric: bool,
    pub granularity: Granularity,
    pub clip: Clip,
}

/// Why a quantization request is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("integer quantization takes 2 to 8 bits, got {0}")]
    BadBits(u8),
    #[error("group size {group} does not divide rows of {row_len} values")]
    BadGroup { group: usize, row_len: usize },
    #[error("rows of {row_len} values do not divide a tensor of {len} values")]
    BadRows { row_len: usize, len: usize },
}

/// How one group maps values: `x̂ = (clamp(rint(x/scale) + zp, lo, hi) − zp)·scale`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) scale: f32,
    pub(crate) zero_point: f32,
    lo: f32,
    hi: f32,
    /// The value a zero-scale group reproduces.
    constant: f32,
}

impl Params {
    /// The grid `group` is put on (GPTQ asks for one group at a time).
    #[inline(always)]
    pub(crate) fn of(group: &[f32], bits: u8, symmetric: bool, clip: Clip) -> Params {
        let (min, max) = min_max(group);
        match clip {
            Clip::None => Self::from_range(min, max, bits, symmetric),
            Clip::Mse => Self::best_clip(min, max, bits, symmetric, |p| p.squared_error(group)),
        }
    }

    /// The candidate range with the least `error` (the first of equals: the widest).
    fn best_clip(
        min: f32,
        max: f32,
        bits: u8,
        symmetric: bool,
        error: impl Fn(&Params) -> f64,
    ) -> Params {
        let mut best = Self::from_range(min, max, bits, symmetric);
        let mut best_error = error(&best);
        for i in 1..CLIP_STEPS {
            let p = 1.0 - i as f32 / CLIP_GRID;
            let candidate = Self::from_range(p * min, p * max, bits, symmetric);
            let e = error(&candidate);
            if e < best_error {
                best = candidate;
                best_error = e;
            }
        }
        best
    }

    fn squared_error(&self, x: &[f32]) -> f64 {
        x.iter()
            .map(|&v| (f64::from(v) - f64::from(self.apply(v))).powi(2))
            .sum()
    }

    fn from_range(min: f32, max: f32, bits: u8, symmetric: bool) -> Params {
        if symmetric {
            let qmax = ((1u32 << (bits - 1)) - 1) as f32;
            let absmax = min.abs().max(max.abs());
            Params {
                scale: absmax / qmax,
                zero_point: 0.0,
                lo: -qmax,
                hi: qmax,
                constant: 0.0,
            }
        } else {
            let levels = ((1u32 << bits) - 1) as f32;
            let scale = (max - min) / levels;
            let zero_point = if scale == 0.0 {
                0.0
            } else {
                (-min / scale).round_ties_even().clamp(0.0, levels)
            };
            Params {
                scale,
                zero_point,
                lo: 0.0,
                hi: levels,
                constant: min,
            }
        }
    }

    /// Quantize-dequantize `x` into `out`.
    fn apply_all(&self, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (which implies SSE4.1's `roundps`).
            return unsafe { self.apply_all_avx2(x, out) };
        }
        out.iter_mut().zip(x).for_each(|(o, &x)| *o = self.apply(x));
    }

    /// The same loop compiled for AVX2: rounding becomes one instruction instead of a
    /// libm call per value on baseline x86-64.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_all_avx2(&self, x: &[f32], out: &mut [f32]) {
        out.iter_mut().zip(x).for_each(|(o, &x)| *o = self.apply(x));
    }

    #[inline(always)]
    pub(crate) fn apply(&self, x: f32) -> f32 {
        if self.scale == 0.0 {
            return self.constant;
        }
        let q = ((x / self.scale).round_ties_even() + self.zero_point).clamp(self.lo, self.hi);
        (q - self.zero_point) * self.scale
    }
}

/// Quantize `w` (a `[len / row_len, row_len]` view) with `scheme` and return the
/// dequantized values.
/// Smallest and largest value, NaN ignored (as `f32::min`/`max` do), in eight
/// independent lanes so the loop vectorizes.
#[inline(always)]
fn min_max(xs: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            lo[j] = lo[j].min(c[j]);
            hi[j] = hi[j].max(c[j]);
        }
    }
    for &x in chunks.remainder() {
        lo[0] = lo[0].min(x);
        hi[0] = hi[0].max(x);
    }
    (
        lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
        hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
    )
}

/// Quantize consecutive groups of `group` values, each with its own scale.
#[inline(always)]
fn quant_groups(
    x: &[f32],
    out: &mut [f32],
    group: usize,
    bits: u8,
    sym: bool,
    clip: Clip,
) -> Vec<(f32, f32)> {
    let mut params = Vec::with_capacity(x.len().div_ceil(group));
    for (o, x) in out.chunks_mut(group).zip(x.chunks(group)) {
        let p = Params::of(x, bits, sym, clip);
        o.iter_mut().zip(x).for_each(|(o, &x)| *o = p.apply(x));
        params.push((p.scale, p.zero_point));
    }
    params
}

/// [`quant_groups`] compiled for AVX2 (rounding in one instruction, min/max and the
/// grid vectorized); the same IEEE arithmetic, so the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quant_groups_avx2(
    x: &[f32],
    out: &mut [f32],
    group: usize,
    bits: u8,
    sym: bool,
    clip: Clip,
) -> Vec<(f32, f32)> {
    quant_groups(x, out, group, bits, sym, clip)
}

/// The grid an integer scheme put a tensor on: one scale and zero point per group of
/// `group` consecutive values (the whole tensor, a row, or a group along the row), so
/// that every value is `(q − zero_point)·scale` for an integer code `q` in
/// `[lo, hi]`. Exports store the codes instead of the values they decode to.
#[derive(Debug, Clone, PartialEq)]
pub struct IntGrid {
    pub bits: u8,
    pub symmetric: bool,
    /// Values per scale.
    pub group: usize,
    pub scales: Vec<f32>,
    pub zero_points: Vec<f32>,
}

/// What a runtime's `DequantizeLinear` needs to reproduce a tensor exactly: integer
/// codes and, per group, a positive scale and a zero point.
#[derive(Debug, Clone, PartialEq)]
pub struct IntCodes {
    pub codes: Vec<i32>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
}

impl IntGrid {
    /// The smallest and largest code.
    pub fn code_range(&self) -> (i32, i32) {
        if self.symmetric {
            let qmax = (1i32 << (self.bits - 1)) - 1;
            (-qmax, qmax)
        } else {
            (0, (1i32 << self.bits) - 1)
        }
    }

    /// The grid of a tensor cut down to output rows `rows` and input columns `cols`
    /// (of `inner` values each) of its rows of `row_len` values: one scale stays one
    /// scale, a scale per row keeps the kept rows'. `None` for groups along the row,
    /// which removing columns cuts apart.
    pub fn select(
        &self,
        rows: &[usize],
        cols: &[usize],
        row_len: usize,
        inner: usize,
    ) -> Option<IntGrid> {
        let len = rows.len() * cols.len() * inner;
        if self.scales.len() == 1 {
            return Some(IntGrid {
                group: len.max(1),
                ..self.clone()
            });
        }
        if self.group != row_len || rows.iter().any(|&r| r >= self.scales.len()) {
            return None;
        }
        Some(IntGrid {
            group: (cols.len() * inner).max(1),
            scales: rows.iter().map(|&r| self.scales[r]).collect(),
            zero_points: rows.iter().map(|&r| self.zero_points[r]).collect(),
            ..self.clone()
        })
    }

    /// The codes of `values` (what this grid dequantized to), checked to decode back
    /// to every value bit for bit in f32, as `(q − zp)·scale`. A group the quantizer
    /// kept constant (scale 0) gets a scale that reproduces its constant. `None`
    /// when a value is not on the grid (the values did not come from it).
    pub fn codes(&self, values: &[f32]) -> Option<IntCodes> {
        let (lo, hi) = self.code_range();
        let groups = values.len().div_ceil(self.group.max(1));
        if self.group == 0 || groups != self.scales.len() || groups != self.zero_points.len() {
            return None;
        }
        let mut out = IntCodes {
            codes: Vec::with_capacity(values.len()),
            scales: Vec::with_capacity(groups),
            zero_points: Vec::with_capacity(groups),
        };
        for (g, x) in values.chunks(self.group).enumerate() {
            let (mut scale, mut zp) = (self.scales[g], self.zero_points[g] as i32);
            if scale == 0.0 || !scale.is_finite() {
                // Every value is the group's constant c: code 1 or 0 around a zero
                // point of 0 or 1 gives ±|c| with scale |c| (0 stays code zp).
                let c = x[0];
                scale = if c == 0.0 { 1.0 } else { c.abs() };
                zp = if self.symmetric || c >= 0.0 { 0 } else { 1 };
                if !self.symmetric && c == 0.0 {
                    zp = 0;
                }
            }
            for &v in x {
                let q = ((v / scale).round_ties_even() as i32 + zp).clamp(lo, hi);
                if ((q - zp) as f32 * scale).to_bits() != v.to_bits() && !(v == 0.0 && q == zp) {
                    return None;
                }
                out.codes.push(q);
            }
            out.scales.push(scale);
            out.zero_points.push(zp);
        }
        Some(out)
    }
}

/// Quantize `w` (a `[len / row_len, row_len]` view) with `scheme` and return the
/// dequantized values.
pub fn fake_quant_int(
    w: &[f32],
    row_len: usize,
    scheme: &IntScheme,
) -> Result<Vec<f32>, QuantError> {
    let mut out = vec![0f32; w.len()];
    fake_quant_int_into(w, row_len, scheme, &mut out)?;
    Ok(out)
}

/// [`fake_quant_int`] into a caller's buffer of `w.len()` values (hot loops reuse one
/// buffer instead of paying a fresh allocation's page faults every time).
pub fn fake_quant_int_into(
    w: &[f32],
    row_len: usize,
    scheme: &IntScheme,
    out: &mut [f32],
) -> Result<(), QuantError> {
    fake_quant_int_grid(w, row_len, scheme, out).map(|_| ())
}

/// [`fake_quant_int_into`], returning the grid the values were put on.
pub fn fake_quant_int_grid(
    w: &[f32],
    row_len: usize,
    scheme: &IntScheme,
    out: &mut [f32],
) -> Result<IntGrid, QuantError> {
    assert_eq!(w.len(), out.len(), "output buffer of the wrong length");
    if !(2..=8).contains(&scheme.bits) {
        return Err(QuantError::BadBits(scheme.bits));
    }
    if row_len == 0 || !w.len().is_multiple_of(row_len) {
        return Err(QuantError::BadRows {
            row_len,
            len: w.len(),
        });
    }
    let (bits, sym, clip) = (scheme.bits, scheme.symmetric, scheme.clip);
    match scheme.granularity {
        Granularity::PerTensor => {
            let (min, max) = w
                .par_chunks(CHUNK)
                .map(|c| {
                    c.iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                            (a.min(x), b.max(x))
                        })
                })
                .reduce(
                    || (f32::INFINITY, f32::NEG_INFINITY),
                    |(a, b), (c, d)| (a.min(c), b.max(d)),
                );
            let p = match clip {
                Clip::None => Params::from_range(min, max, bits, sym),
                // Per-chunk sums in a fixed order: the choice does not depend on threads.
                Clip::Mse => Params::best_clip(min, max, bits, sym, |p| {
                    let parts: Vec<f64> = w.par_chunks(CHUNK).map(|c| p.squared_error(c)).collect();
                    parts.iter().sum()
                }),
            };
            out.par_chunks_mut(CHUNK)
                .zip(w.par_chunks(CHUNK))
                .for_each(|(o, x)| {
                    p.apply_all(x, o);
                });
            Ok(IntGrid {
                bits,
                symmetric: sym,
                group: w.len().max(1),
                scales: vec![p.scale],
                zero_points: vec![p.zero_point],
            })
        }
        Granularity::PerChannel | Granularity::Group(_) => {
            let group = match scheme.granularity {
                Granularity::Group(g) if g == 0 || !row_len.is_multiple_of(g) => {
                    return Err(QuantError::BadGroup { group: g, row_len });
                }
                Granularity::Group(g) => g,
                _ => row_len,
            };
            // Whole groups per task, about 8 Ki values each.
            let per_task = group * (8192 / group).max(1);
            let params: Vec<Vec<(f32, f32)>> = out
                .par_chunks_mut(per_task)
                .zip(w.par_chunks(per_task))
                .map(|(o, x)| {
                    #[cfg(target_arch = "x86_64")]
                    if is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU supports AVX2.
                        return unsafe { quant_groups_avx2(x, o, group, bits, sym, clip) };
                    }
                    quant_groups(x, o, group, bits, sym, clip)
                })
                .collect();
            let (scales, zero_points) = params.into_iter().flatten().unzip();
            Ok(IntGrid {
                bits,
                symmetric: sym,
                group,
                scales,
                zero_points,
            })
        }
    }
}

/// How close compressed weights are to the originals. Weight fidelity, not accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fidelity {
    /// Signal-to-quantization-noise ratio, dB: 10·log10(Σx² / Σ(x − x̂)²); +∞ if exact.
    pub sqnr_db: f64,
    /// ‖x − x̂‖ / ‖x‖.
    pub relative_error: f64,
    pub max_abs_error: f64,
    /// Cosine similarity of x and x̂.
    pub cosine: f64,
    /// Σx² and Σ(x − x̂)², to combine tensors into model-wide figures.
    #[serde(skip)]
    pub signal: f64,
    #[serde(skip)]
    pub noise: f64,
}

/// Fidelity of `compressed` to `original` (same length), in float64.
pub fn fidelity(original: &[f32], compressed: &[f32]) -> Fidelity {
    debug_assert_eq!(original.len(), compressed.len());
    // Per-chunk sums, added in chunk order: the figures do not depend on the
    // thread count or on how rayon split the work.
    let parts: Vec<(f64, f64, f64, f64, f64)> = original
        .par_chunks(CHUNK)
        .zip(compressed.par_chunks(CHUNK))
        .map(|(x, y)| {
            x.iter().zip(y).fold(
                (0f64, 0f64, 0f64, 0f64, 0f64),
                |(xx, ee, yy, xy, m), (&a, &b)| {
                    let (a, b) = (f64::from(a), f64::from(b));
                    let e = a - b;
                    (
                        xx + a * a,
                        ee + e * e,
                        yy + b * b,
                        xy + a * b,
                        m.max(e.abs()),
                    )
                },
            )
        })
        .collect();
    let (xx, ee, yy, xy, max) = parts
        .into_iter()
        .fold((0f64, 0f64, 0f64, 0f64, 0f64), |a, b| {
            (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3, a.4.max(b.4))
        });
    Fidelity {
        sqnr_db: 10.0 * (xx / ee).log10(),
        relative_error: (ee / xx).sqrt(),
        max_abs_error: max,
        cosine: xy / (xx * yy).sqrt(),
        signal: xx,
        noise: ee,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_symmetric_by_hand() {
        // absmax 7 → scale 1; 2.5 → 2 (half to even), 3.5 → 4, -9 clamps to -7.
        let w = [7.0, 2.5, 3.5, -9.0 / 9.0 * 7.0, 0.4, -0.5, 1.5, 0.0];
        let s = IntScheme {
            bits: 4,
            symmetric: true,
            granularity: Granularity::PerTensor,
            clip: Clip::None,
        };
        let y = fake_quant_int(&w, 8, &s).unwrap_or_default();
        assert_eq!(y, vec![7.0, 2.0, 4.0, -7.0, 0.0, -0.0, 2.0, 0.0]);
    }

    #[test]
    fn constant_groups_are_reproduced() {
        let s = IntScheme {
            bits: 3,
            symmetric: false,
            granularity: Granularity::Group(4),
            clip: Clip::None,
        };
        let y = fake_quant_int(&[0.3; 8], 8, &s).unwrap_or_default();
        assert_eq!(y, vec![0.3; 8]);
        let f = fidelity(&[1.0, 2.0], &[1.0, 2.0]);
        assert_eq!(
            (f.sqnr_db, f.relative_error, f.cosine),
            (f64::INFINITY, 0.0, 1.0)
        );
    }

    #[test]
    fn bad_settings_are_errors() {
        let s = |bits, g| IntScheme {
            bits,
            symmetric: true,
            granularity: g,
            clip: Clip::None,
        };
        assert_eq!(
            fake_quant_int(&[0.0; 8], 8, &s(1, Granularity::PerTensor)),
            Err(QuantError::BadBits(1))
        );
        assert_eq!(
            fake_quant_int(&[0.0; 8], 8, &s(4, Granularity::Group(3))),
            Err(QuantError::BadGroup {
                group: 3,
                row_len: 8
            })
        );
        assert!(fake_quant_int(&[0.0; 9], 8, &s(4, Granularity::PerChannel)).is_err());
    }
}
