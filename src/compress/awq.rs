//! AWQ (Lin, Tang, Tang, Yang, Dang, Gan, Han 2024, "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration"): before rounding, scale each
//! input column `j` of the weights that share an input by `s_j` and divide the input
//! by `s_j` where it is made (the norm or the projection before), an exact
//! transformation of the float model that lets the columns of large activations
//! round with a smaller relative error.
//!
//! As the reference code (llm-awq's `auto_scale_block`) searches them, per shared
//! input: `s = max(mean|x|^α, 1e-4) / √(max s · min s)` for `α = 0, 1/20, …, 19/20`,
//! the weights fake-quantized as `Q(W·diag s)·diag(1/s)`, and the `α` of least output
//! error kept (`α = 0` is plain rounding, so AWQ never does worse on its own loss).
//! The loss here is the squared error of the layers' own outputs over the calibration
//! inputs, `Σ tr(ΔW H ΔWᵀ)` with `H = Σ x xᵀ`, summed over the weights sharing the
//! input; llm-awq measures the attention block's and the MLP's outputs for the
//! projections that share an input (and each single projection's own output, as
//! here). Its clipping search (`auto_clip`) is not part of this. llm-awq feeds each
//! block the float outputs of the block before; slimscope's block-by-block pass feeds
//! it the compressed ones, as it does for GPTQ (see `eval::llama_inputs`).

use rayon::prelude::*;
use tract_onnx::prelude::tract_ndarray::{Array2, ArrayView2, linalg};

use super::calibration::{LayerStatistics, Need};
use crate::error::{Error, Result};

/// The number of `α` values searched, as llm-awq's `n_grid`.
pub const GRID: usize = 20;

/// A weight's fake quantization, rounded to nearest.
pub type Quantizer<'a> = dyn Fn(&[f32]) -> Result<Vec<f32>> + Sync + 'a;

/// One weight that shares the input AWQ scales, `outputs × columns` row-major.
pub struct Member<'a> {
    pub weights: &'a [f32],
    pub outputs: usize,
    /// Its fake quantization, rounded to nearest; `None` when it is not quantized
    /// (it is rescaled exactly and adds no error).
    pub quantize: Option<&'a Quantizer<'a>>,
}

/// The scales AWQ chose for one shared input.
#[derive(Debug, Clone, PartialEq)]
pub struct Scales {
    /// `s_j` per input column, float32 as they are applied.
    pub scales: Vec<f32>,
    /// The `α` that gave them.
    pub ratio: f64,
    /// Its summed squared output error, and plain rounding's (`α = 0`).
    pub loss: f64,
    pub loss_rounded: f64,
}

/// The scales of ratio `alpha` from the mean input magnitudes `mean_abs`.
pub fn scales_of(mean_abs: &[f64], alpha: f64) -> Vec<f32> {
    let s: Vec<f64> = mean_abs.iter().map(|m| m.powf(alpha).max(1e-4)).collect();
    let (max, min) = s
        .iter()
        .fold((f64::MIN, f64::MAX), |(a, b), &v| (a.max(v), b.min(v)));
    let norm = (max * min).sqrt();
    s.iter().map(|v| (v / norm) as f32).collect()
}

/// Row-major `w` (`columns` wide) with column `j` multiplied by `s[j]`.
pub fn scale_columns(w: &mut [f32], s: &[f32]) {
    for row in w.chunks_exact_mut(s.len()) {
        for (v, &k) in row.iter_mut().zip(s) {
            *v *= k;
        }
    }
}

/// Row-major `w` (`s.len()` rows) with row `r` divided by `s[r]`: the projection or
/// norm (one row per value) that makes the input.
pub fn divide_rows(w: &mut [f32], s: &[f32]) {
    let len = w.len() / s.len().max(1);
    for (row, &k) in w.chunks_exact_mut(len.max(1)).zip(s) {
        for v in row {
            *v /= k;
        }
    }
}

/// `Σ_rows δ H δᵀ` of `delta` (`rows × d`) with the Gram matrix `h` (`d × d`).
fn output_error(delta: &[f32], rows: usize, h: &Array2<f32>) -> Result<f64> {
    let d = h.nrows();
    let delta = ArrayView2::from_shape((rows, d), delta).map_err(|e| {
        Error::Internal(format!("AWQ: a quantizer changed the weights' length: {e}"))
    })?;
    let mut product = Array2::<f32>::zeros((rows, d));
    linalg::general_mat_mul(1.0, &delta, h, 0.0, &mut product);
    Ok(product
        .iter()
        .zip(delta.iter())
        .map(|(&p, &x)| f64::from(p) * f64::from(x))
        .sum())
}

/// The scales of least output error for the weights `members`, which all multiply
/// the input `stats` describes (collected with [`Need::Gram`]).
pub fn search(members: &[Member], stats: &LayerStatistics) -> Result<Scales> {
    let d = stats.columns;
    let gram = stats
        .gram(0)
        .filter(|_| stats.groups == 1 && stats.need == Need::Gram)
        .ok_or_else(|| Error::Internal("AWQ needs one Gram matrix per input".into()))?;
    for m in members {
        stats
            .check_weights(m.weights.len(), m.outputs)
            .map_err(|e| Error::Internal(format!("AWQ: {e}")))?;
    }
    let h = Array2::from_shape_vec((d, d), gram.iter().map(|&v| v as f32).collect())
        .map_err(|e| Error::Internal(format!("AWQ: {e}")))?;
    let mean_abs = stats.mean_abs(0);
    let losses: Vec<(f64, Vec<f32>)> = (0..GRID)
        .into_par_iter()
        .map(|k| -> Result<(f64, Vec<f32>)> {
            let s = scales_of(&mean_abs, k as f64 / GRID as f64);
            let mut loss = 0.0;
            for m in members {
                let Some(quantize) = m.quantize else { continue };
                let mut scaled = m.weights.to_vec();
                scale_columns(&mut scaled, &s);
                let mut delta = quantize(&scaled)?;
                for (row, original) in delta.chunks_exact_mut(d).zip(m.weights.chunks_exact(d)) {
                    for ((v, &k), &w) in row.iter_mut().zip(&s).zip(original) {
                        *v = *v / k - w;
                    }
                }
                loss += output_error(&delta, m.outputs, &h)?;
            }
            Ok((loss, s))
        })
        .collect::<Result<_>>()?;
    let loss_rounded = losses[0].0;
    let (best, (loss, scales)) = losses
        .into_iter()
        .enumerate()
        .filter(|(_, (l, _))| l.is_finite())
        .reduce(|a, b| if b.1.0 < a.1.0 { b } else { a })
        .ok_or_else(|| {
            Error::InvalidSetting(
                "AWQ: every scaling gives a non-finite output error (the calibration inputs \
                 or the weights hold NaN or infinity)"
                    .into(),
            )
        })?;
    Ok(Scales {
        scales,
        ratio: best as f64 / GRID as f64,
        loss,
        loss_rounded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::calibration::WeightLayout;

    /// Rounding to multiples of 0.5: the hand-checkable grid of the tests.
    fn halves(v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.iter().map(|x| (x * 2.0).round() / 2.0).collect())
    }

    #[test]
    fn scales_are_normalised_by_the_geometric_middle_of_their_range() {
        // mean|x| = (4, 1), α = 1/2: (2, 1) / √2.
        let s = scales_of(&[4.0, 1.0], 0.5);
        assert!((s[0] - 2f32.sqrt()).abs() < 1e-6 && (s[1] - 0.5f32.sqrt()).abs() < 1e-6);
        assert_eq!(scales_of(&[4.0, 0.0], 0.0), vec![1.0, 1.0]);
    }

    #[test]
    fn the_scale_of_least_output_error_wins_and_never_loses_to_rounding() {
        // One output, two inputs: x₁ is 10× x₂, so column 1's rounding matters most.
        let mut stats = LayerStatistics::new(2, 1, WeightLayout::OutIn, Need::Gram);
        stats.add_rows(0, &[10.0, 1.0, -10.0, 1.0], 2);
        let w = [0.3f32, 0.3];
        let member = Member {
            weights: &w,
            outputs: 1,
            quantize: Some(&halves),
        };
        let found = search(&[member], &stats).expect("search");
        // Plain rounding: (0.5, 0.5), Δ = (0.2, 0.2), H = diag(200, 2): 0.04·202.
        assert!(
            (found.loss_rounded - 0.04 * 202.0).abs() < 1e-4,
            "{found:?}"
        );
        assert!(found.loss <= found.loss_rounded);
        // Brute force over the same grid of α, by hand.
        let best = (0..GRID)
            .map(|k| {
                let s = scales_of(&[10.0, 1.0], k as f64 / GRID as f64);
                let q: Vec<f32> = (0..2)
                    .map(|j| ((w[j] * s[j]) * 2.0).round() / 2.0 / s[j])
                    .collect();
                let e = [f64::from(q[0] - w[0]), f64::from(q[1] - w[1])];
                (200.0 * e[0] * e[0] + 2.0 * e[1] * e[1], k)
            })
            .fold((f64::MAX, 0), |a, b| if b.0 < a.0 { b } else { a });
        assert_eq!(found.ratio, best.1 as f64 / GRID as f64);
        assert!((found.loss - best.0).abs() < 1e-4 * best.0.max(1.0));
    }

    #[test]
    fn folding_the_scales_leaves_the_float_product_unchanged() {
        // (x / s) · (W · s)ᵀ = x · Wᵀ.
        let s = [2.0f32, 0.5, 4.0];
        let mut w = vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 0.25];
        let mut norm = vec![1.0f32, 1.0, 1.0];
        let x = [0.5f32, -2.0, 1.0];
        let before: Vec<f32> = w
            .chunks(3)
            .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum())
            .collect();
        scale_columns(&mut w, &s);
        divide_rows(&mut norm, &s);
        let after: Vec<f32> = w
            .chunks(3)
            .map(|r| {
                r.iter()
                    .zip(&x)
                    .zip(&norm)
                    .map(|((a, b), n)| a * b * n)
                    .sum()
            })
            .collect();
        assert_eq!(before, after);
    }
}
