//! GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training
//! Quantization for Generative Pre-trained Transformers"): integer quantization as a
//! sequence of optimal-brain-surgeon updates. Columns are quantized left to right
//! (or, with `act_order`, in descending order of the Hessian's diagonal); each
//! column's rounding error `(w − q) / U_ii` is spread over the row's columns not yet
//! quantized along row `i` of `U`, the upper Cholesky factor of the dampened `H⁻¹`
//! (`H = Σ x xᵀ` of the layer's inputs), in lazy blocks of
//! [`super::sparsegpt::BLOCK`] columns as the reference code does.
//!
//! The grids are slimscope's integer grids (see [`super::quant`]), so an export stores
//! GPTQ's codes with their scales exactly:
//! - per tensor and per channel: computed from the original weights before the
//!   sweep (the reference's `find_params(W)`);
//! - per group: computed when the sweep reaches a group's first column, from the
//!   row's weights as updated so far (the reference's default); with `act_order`,
//!   from the original weights up front (its `static_groups`), so that a group stays
//!   `group_size` consecutive inputs.
//!
//! Weights a pruning mask removed stay exactly zero (0 is on every grid) and their
//! zeroing error is compensated like a rounding error. Computed in float64, each
//! quantization in float32 exactly as the grid's round-to-nearest does it.

use rayon::prelude::*;

use super::calibration::{LayerStatistics, NotPositiveDefinite, dampen, inverse_upper_cholesky};
use super::gguf_blocks;
use super::quant::{Granularity, IntGrid, IntScheme, Params, QuantError};
use super::sparsegpt::{BLOCK, ObsError, obs_step, spread_block};
use crate::dtype::GgmlQuant;

/// GPTQ's settings beyond the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqSettings {
    pub act_order: bool,
    pub dampening: f64,
}

/// The GPTQ-quantized values of `w` (`outputs × columns`, row-major) on `scheme`'s
/// grid and the grid itself; `kept` (when pruned) marks the weights that survive.
/// With `inputs_first` the tensor is stored `[in, out]` (a MatMul's weight) and its
/// grid lies along the stored rows, as round-to-nearest puts it: per input, or per
/// group of outputs of an input, computed from the original weights up front.
pub fn quantize(
    w: &[f32],
    outputs: usize,
    stats: &LayerStatistics,
    scheme: &IntScheme,
    settings: GptqSettings,
    kept: Option<&[bool]>,
    inputs_first: bool,
) -> Result<(Vec<f32>, IntGrid), ObsError> {
    stats.check_weights(w.len(), outputs)?;
    let d = stats.columns;
    if !(2..=8).contains(&scheme.bits) {
        return Err(ObsError::Quant(QuantError::BadBits(scheme.bits)));
    }
    // The stored rows the grid lies along.
    let row_len = if inputs_first { outputs } else { d };
    let group = match scheme.granularity {
        Granularity::PerTensor => w.len(),
        Granularity::PerChannel => row_len,
        Granularity::Group(g) if g > 0 && row_len.is_multiple_of(g) => g,
        Granularity::Group(g) => {
            return Err(ObsError::Quant(QuantError::BadGroup { group: g, row_len }));
        }
    };
    let dynamic =
        matches!(scheme.granularity, Granularity::Group(_)) && !settings.act_order && !inputs_first;
    // Grids fixed before the sweep: one per tensor, stored row or (static) group.
    let stored: std::borrow::Cow<[f32]> = if inputs_first {
        let mut t = vec![0f32; w.len()];
        for (r, row) in w.chunks(d).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                t[j * outputs + r] = v;
            }
        }
        t.into()
    } else {
        w.into()
    };
    let fixed: Vec<Params> = if dynamic {
        Vec::new()
    } else {
        stored
            .chunks(group)
            .map(|g| Params::of(g, scheme.bits, scheme.symmetric, scheme.clip))
            .collect()
    };
    let layout = Layout {
        group,
        dynamic,
        fixed: &fixed,
        rule: Rule::Int(scheme),
        outputs: inputs_first.then_some(outputs),
    };
    let (out, dynamic_grids) = sweep_all(w, outputs, stats, settings, kept, &layout)?;
    let (scales, zero_points) = if dynamic {
        dynamic_grids.into_iter().unzip()
    } else {
        fixed.iter().map(|p| (p.scale, p.zero_point)).unzip()
    };
    Ok((
        out,
        IntGrid {
            bits: scheme.bits,
            symmetric: scheme.symmetric,
            group,
            scales,
            zero_points,
        },
    ))
}

/// GPTQ onto the blocks of ggml type `t` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) along each
/// row of `w` (`outputs × columns`): each block's scale (and minimum) fitted as ggml
/// fits it when the sweep reaches the block, from the row's weights as updated so far
/// (as GPTQ's groups are), each weight then rounded on it as ggml rounds. Returns the
/// values and every block's `(d, min)` as fitted (before float16), row by row.
pub fn quantize_blocks(
    w: &[f32],
    outputs: usize,
    stats: &LayerStatistics,
    t: GgmlQuant,
    dampening: f64,
    kept: Option<&[bool]>,
) -> Result<Swept, ObsError> {
    stats.check_weights(w.len(), outputs)?;
    let d = stats.columns;
    if !gguf_blocks::fits_with_gptq(t) || !d.is_multiple_of(gguf_blocks::BLOCK) {
        return Err(ObsError::Quant(QuantError::BadGroup {
            group: gguf_blocks::BLOCK,
            row_len: d,
        }));
    }
    let layout = Layout {
        group: gguf_blocks::BLOCK,
        dynamic: true,
        fixed: &[],
        rule: Rule::Ggml(t),
        outputs: None,
    };
    let settings = GptqSettings {
        act_order: false,
        dampening,
    };
    sweep_all(w, outputs, stats, settings, kept, &layout)
}

/// Swept values, and every row's dynamic grids in order: `(scale, zero point)` or a
/// ggml block's `(d, min)`.
type Swept = (Vec<f32>, Vec<(f32, f32)>);

/// How the sweep's grids are laid out and fitted.
struct Layout<'a> {
    group: usize,
    /// Group grids computed as the sweep reaches them (else `fixed`).
    dynamic: bool,
    fixed: &'a [Params],
    rule: Rule<'a>,
    /// Outputs, when the tensor is stored `[in, out]` (its grids index stored order).
    outputs: Option<usize>,
}

/// The grid a group's weights round on.
#[derive(Clone, Copy)]
enum Rule<'a> {
    Int(&'a IntScheme),
    Ggml(GgmlQuant),
}

/// Every row of `w` swept (see [`Sweep::row`]): the values and each row's dynamic
/// group grids, `(scale, zero point)` or a ggml block's `(d, min)`.
fn sweep_all(
    w: &[f32],
    outputs: usize,
    stats: &LayerStatistics,
    settings: GptqSettings,
    kept: Option<&[bool]>,
    layout: &Layout,
) -> Result<Swept, ObsError> {
    let (d, groups) = (stats.columns, stats.groups.max(1));
    let per_group = outputs / groups;
    let mut values: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    let mut out = vec![0f32; w.len()];
    // Per row, the grids of its groups as the sweep computes them (one slot per row
    // when the grids are fixed, so that every row has a slot to zip with).
    let grids_per_row = if layout.dynamic { d / layout.group } else { 1 };
    let mut dynamic_grids: Vec<(f32, f32)> = vec![(0.0, 0.0); outputs * grids_per_row];
    for g in 0..groups {
        let mut h = stats.gram(g).ok_or(ObsError::NoGram)?.to_vec();
        let dead = dampen(&mut h, d, settings.dampening)?;
        // The order columns are quantized in, and H in that order.
        let mut order: Vec<usize> = (0..d).collect();
        if settings.act_order {
            order.sort_by(|&a, &b| h[b * d + b].total_cmp(&h[a * d + a]).then(a.cmp(&b)));
            let mut permuted = vec![0.0; d * d];
            for (i, &a) in order.iter().enumerate() {
                for (j, &b) in order.iter().enumerate() {
                    permuted[i * d + j] = h[a * d + b];
                }
            }
            h = permuted;
        }
        // A failing pivot is reported as the input column it stands for.
        let u = inverse_upper_cholesky(h, d).map_err(|pivot| NotPositiveDefinite {
            column: order[pivot],
            non_finite: false,
            dampening: settings.dampening,
        })?;
        let rows = g * per_group..(g + 1) * per_group;
        let span = rows.start * d..rows.end * d;
        let grid_span = rows.start * grids_per_row..rows.end * grids_per_row;
        values[span.clone()]
            .par_chunks_mut(d)
            .zip(out[span.clone()].par_chunks_mut(d))
            .zip(dynamic_grids[grid_span].par_chunks_mut(grids_per_row))
            .enumerate()
            .for_each(|(r, ((row, out), grids))| {
                let sweep = Sweep {
                    d,
                    order: &order,
                    u: &u,
                    dead: &dead,
                    layout,
                    kept,
                };
                sweep.row(rows.start + r, row, out, grids);
            });
    }
    Ok((out, dynamic_grids))
}

/// One group's grid.
#[derive(Clone, Copy)]
enum Grid {
    Int(Params),
    Ggml(gguf_blocks::BlockFit),
}

impl Grid {
    fn apply(self, x: f32) -> f32 {
        match self {
            Grid::Int(p) => p.apply(x),
            Grid::Ggml(b) => b.value(b.code(x)),
        }
    }
}

/// What every row's sweep shares.
struct Sweep<'a> {
    d: usize,
    /// The columns in quantization order; `u` is in that order too.
    order: &'a [usize],
    u: &'a [f64],
    dead: &'a [usize],
    layout: &'a Layout<'a>,
    kept: Option<&'a [bool]>,
}

impl Sweep<'_> {
    /// Row `index` (`row`, its values) quantized into `out`; `grids` receives the
    /// row's dynamic group grids.
    fn row(&self, index: usize, row: &mut [f64], out: &mut [f32], grids: &mut [(f32, f32)]) {
        let (d, u, layout) = (self.d, self.u, self.layout);
        let group = layout.group;
        for &j in self.dead {
            row[j] = 0.0;
        }
        let mut x: Vec<f64> = self.order.iter().map(|&j| row[j]).collect();
        let keep = |j: usize| self.kept.is_none_or(|k| k[index * d + j]);
        let mut grid: Option<Grid> = None;
        for i1 in (0..d).step_by(BLOCK) {
            let i2 = (i1 + BLOCK).min(d);
            let mut errors = vec![0.0; i2 - i1];
            for i in i1..i2 {
                let j = self.order[i];
                let p = if layout.dynamic {
                    if j.is_multiple_of(group) {
                        let current: Vec<f32> = x[i..i + group].iter().map(|&v| v as f32).collect();
                        let fitted = match layout.rule {
                            Rule::Int(s) => {
                                let p = Params::of(&current, s.bits, s.symmetric, s.clip);
                                grids[j / group] = (p.scale, p.zero_point);
                                Grid::Int(p)
                            }
                            Rule::Ggml(t) => {
                                let b = gguf_blocks::BlockFit::of(t, &current);
                                grids[j / group] = (b.d, b.min);
                                Grid::Ggml(b)
                            }
                        };
                        grid = Some(fitted);
                    }
                    grid.unwrap_or_else(|| unreachable!("a group starts at its first column"))
                } else {
                    let stored = match layout.outputs {
                        Some(outputs) => j * outputs + index,
                        None => index * d + j,
                    };
                    Grid::Int(layout.fixed[stored / group])
                };
                let q = if keep(j) {
                    f64::from(p.apply(x[i] as f32))
                } else {
                    0.0
                };
                errors[i - i1] = obs_step(&mut x, i, q, i2, u, d);
            }
            spread_block(&mut x, &errors, (i1, i2), u, d);
        }
        for (i, &j) in self.order.iter().enumerate() {
            out[j] = x[i] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::calibration::{Need, WeightLayout};
    use crate::compress::quant::Clip;

    /// Hand-derived on two inputs with H = [[4, 2], [2, 3]] (U = [[√(3/8), −2/√24],
    /// [0, 1/√3]]) on a symmetric 2-bit grid per tensor (absmax 1.5: scale 1.5,
    /// values −1.5, 0, 1.5). Row (1, 0.9): its first weight rounds to 1.5 (error
    /// −0.5), which moves the second to 0.9 − 0.5·(2/√24)/√(3/8) = 0.9 − 1/3 ≈ 0.567,
    /// rounded to 0 — round-to-nearest would give 1.5.
    #[test]
    fn rounding_errors_move_the_next_weight() {
        let mut s = LayerStatistics::new(2, 1, WeightLayout::OutIn, Need::Gram);
        s.sums.copy_from_slice(&[4.0, 2.0, 2.0, 3.0]);
        let scheme = IntScheme {
            bits: 2,
            symmetric: true,
            granularity: Granularity::PerTensor,
            clip: Clip::None,
        };
        let settings = GptqSettings {
            act_order: false,
            dampening: 0.0,
        };
        // One row (1, 0.9) and a second (1.5, 0) fixing the tensor's absmax at 1.5.
        let (q, grid) =
            quantize(&[1.0, 0.9, 1.5, 0.0], 2, &s, &scheme, settings, None, false).expect("gptq");
        assert_eq!(grid.scales, vec![1.5]);
        assert_eq!(&q[..2], &[1.5, 0.0]);
    }
}
