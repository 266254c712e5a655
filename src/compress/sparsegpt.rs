//! SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
//! Accurately Pruned in One-Shot"): pruning as a sequence of optimal-brain-surgeon
//! updates. Columns are visited left to right; each pruned weight's error
//! `(w − 0) / [H⁻¹]_ii` is spread over the row's later weights along row `i` of the
//! upper Cholesky factor of `H⁻¹` (`H = Σ x xᵀ` of the layer's inputs, dampened), so
//! the layer's output on the calibration data moves as little as possible.
//! Blocks of [`BLOCK`] columns are updated lazily, as in the reference code.
//!
//! Masks are chosen adaptively:
//! - unstructured: at the start of each block, over all rows together, the
//!   `round(s · rows · block)` weights of least `w² / [U]_ii²` (the reference takes
//!   the weights at or below the sorted value at that index, one more than the count
//!   when all differ);
//! - N:M: at each group of `m` columns, per row, the `m − n` of least `w² / [U]_ii²`.
//!
//! Ties go to the earlier position (row-major within a block). Computed in float64.

use rayon::prelude::*;

use super::calibration::{LayerStatistics, NotPositiveDefinite, dampen, inverse_upper_cholesky};
use super::prune::{Pattern, PruneError, count_to_prune};

/// Columns per lazy update, the reference's `blocksize` (rounded up to whole N:M
/// groups).
pub const BLOCK: usize = 128;

/// Why an OBS method (SparseGPT, GPTQ) cannot compress a layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObsError {
    #[error(transparent)]
    Prune(#[from] PruneError),
    #[error(transparent)]
    Hessian(#[from] NotPositiveDefinite),
    #[error("its calibration statistics hold no Hessian (collected for Wanda only)")]
    NoGram,
    #[error(transparent)]
    Quant(#[from] super::quant::QuantError),
}

/// The pruned and updated weights of `w` (`outputs × columns`, row-major) and which
/// are kept, with `stats` the layer's input Gram matrices.
pub fn prune(
    w: &[f32],
    outputs: usize,
    stats: &LayerStatistics,
    pattern: Pattern,
    dampening: f64,
) -> Result<(Vec<f32>, Vec<bool>), ObsError> {
    stats.check_weights(w.len(), outputs)?;
    let (d, groups) = (stats.columns, stats.groups.max(1));
    let block = match pattern {
        Pattern::Unstructured(s) => {
            count_to_prune(1, s)?;
            BLOCK
        }
        Pattern::NOfM { n, m } => {
            if n == 0 || n > m {
                return Err(PruneError::BadNM { n, m }.into());
            }
            if !d.is_multiple_of(m) {
                return Err(PruneError::NotDivisible { n, m, row_len: d }.into());
            }
            BLOCK.div_ceil(m) * m
        }
    };
    let per_group = outputs / groups;
    let mut values: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    let mut kept = vec![true; w.len()];
    for g in 0..groups {
        let mut h = stats.gram(g).ok_or(ObsError::NoGram)?.to_vec();
        let dead = dampen(&mut h, d, dampening)?;
        let u = inverse_upper_cholesky(h, d).map_err(|column| NotPositiveDefinite {
            column,
            dampening,
            non_finite: false,
        })?;
        let rows = g * per_group * d..(g + 1) * per_group * d;
        let (values, kept) = (&mut values[rows.clone()], &mut kept[rows]);
        // Inputs the layer never saw non-zero carry nothing: their weights go first.
        for row in values.chunks_mut(d) {
            for &j in &dead {
                row[j] = 0.0;
            }
        }
        for i1 in (0..d).step_by(block) {
            let i2 = (i1 + block).min(d);
            if let Pattern::Unstructured(s) = pattern {
                choose_in_block(values, kept, d, (i1, i2), &u, s)?;
            }
            values
                .par_chunks_mut(d)
                .zip(kept.par_chunks_mut(d))
                .for_each(|(row, kept)| sweep_block(row, kept, d, (i1, i2), &u, pattern));
        }
    }
    Ok((values.iter().map(|&x| x as f32).collect(), kept))
}

/// The unstructured mask of columns `i1..i2`: the block's weights of least
/// `w² / U_jj²` over all rows.
fn choose_in_block(
    values: &[f64],
    kept: &mut [bool],
    d: usize,
    (i1, i2): (usize, usize),
    u: &[f64],
    sparsity: f64,
) -> Result<(), PruneError> {
    let width = i2 - i1;
    let rows = values.len() / d;
    let k = count_to_prune(rows * width, sparsity)?;
    let score = |r: usize, c: usize| {
        let j = i1 + c;
        let w = values[r * d + j];
        w * w / (u[j * d + j] * u[j * d + j])
    };
    let mut idx: Vec<(f64, usize)> = (0..rows * width)
        .into_par_iter()
        .map(|p| (score(p / width, p % width), p))
        .collect();
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    for &(_, p) in idx.iter().take(k) {
        kept[(p / width) * d + i1 + p % width] = false;
    }
    Ok(())
}

/// One row through columns `i1..i2`: N:M choices, each column's pruning and its
/// error spread over the block, then the block's errors over the rest of the row.
fn sweep_block(
    row: &mut [f64],
    kept: &mut [bool],
    d: usize,
    (i1, i2): (usize, usize),
    u: &[f64],
    pattern: Pattern,
) {
    let mut errors = vec![0.0; i2 - i1];
    for i in i1..i2 {
        if let Pattern::NOfM { n, m } = pattern
            && i % m == 0
        {
            let score = |j: usize| row[j] * row[j] / (u[j * d + j] * u[j * d + j]);
            let mut idx: Vec<usize> = (i..i + m).collect();
            idx.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
            for &j in &idx[..m - n] {
                kept[j] = false;
            }
        }
        let w = row[i];
        let q = if kept[i] { w } else { 0.0 };
        errors[i - i1] = obs_step(row, i, q, i2, u, d);
    }
    spread_block(row, &errors, (i1, i2), u, d);
}

/// Column `i` of a row set to `q` (pruned or rounded), its error spread over the
/// block's later columns `i + 1..i2` along row `i` of `u`: the OBS update GPTQ and
/// SparseGPT share. Returns the error, for [`spread_block`].
pub(crate) fn obs_step(row: &mut [f64], i: usize, q: f64, i2: usize, u: &[f64], d: usize) -> f64 {
    let err = (row[i] - q) / u[i * d + i];
    row[i] = q;
    if err != 0.0 {
        for j in i + 1..i2 {
            row[j] -= err * u[i * d + j];
        }
    }
    err
}

/// The lazy update after a block `i1..i2`: its columns' errors spread over the rest
/// of the row.
pub(crate) fn spread_block(
    row: &mut [f64],
    errors: &[f64],
    (i1, i2): (usize, usize),
    u: &[f64],
    d: usize,
) {
    for (c, &err) in errors.iter().enumerate().filter(|(_, e)| **e != 0.0) {
        let ui = &u[(i1 + c) * d..(i1 + c + 1) * d];
        for j in i2..d {
            row[j] -= err * ui[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::calibration::{Need, WeightLayout};

    /// Hand-derived on two inputs with H = [[4, 2], [2, 3]] (U = [[√(3/8), −2/√24],
    /// [0, 1/√3]]): pruning w = (1, 1) to one weight removes the first (score
    /// 1/(3/8) < 1/(1/3)), and the OBS update moves the second to
    /// `1 − (1/√(3/8))·(−2/√24) = 1 + 2/3`: the least-squares fit `w₂' = (Hw)₂/H₂₂
    /// = 5/3` of the dense output on the remaining input.
    #[test]
    fn pruning_updates_the_remaining_weight_optimally() {
        let mut s = LayerStatistics::new(2, 1, WeightLayout::OutIn, Need::Gram);
        s.sums.copy_from_slice(&[4.0, 2.0, 2.0, 3.0]);
        let (w, kept) = prune(&[1.0, 1.0], 1, &s, Pattern::Unstructured(0.5), 0.0).expect("obs");
        assert_eq!(kept, [false, true]);
        assert!((w[1] - 5.0 / 3.0).abs() < 1e-6 && w[0] == 0.0, "{w:?}");
        let (w, kept) = prune(&[1.0, 1.0], 1, &s, Pattern::NOfM { n: 1, m: 2 }, 0.0).expect("1:2");
        assert_eq!(kept, [false, true]);
        assert!((w[1] - 5.0 / 3.0).abs() < 1e-6, "{w:?}");
    }
}
