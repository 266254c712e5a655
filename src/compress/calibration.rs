//! What data-aware methods learn from calibration data: per weighted layer, the Gram
//! matrix `Σ x xᵀ` of its inputs (the Hessian of the layer's squared output error,
//! up to a factor, which GPTQ and SparseGPT need) or only its diagonal `Σ x_j²`
//! (Wanda's input norms ‖X_j‖²), summed in float64 over every input row the layer
//! saw: a linear layer's samples (and tokens), a convolution's unfolded patches
//! (im2col columns, `C/groups × kh × kw` per output position, in the weight's order).
//!
//! A recipe's `[calibration]` section says how many samples to learn from:
//!
//! ```toml
//! [calibration]
//! samples = 128        # of the attached data, kept apart from the evaluation
//! dampening = 0.01     # GPTQ / SparseGPT: λ·mean(diag H) added to the diagonal
//! ```
//!
//! For sequential networks and ONNX graphs statistics are one-shot: every layer's
//! inputs come from the original model (the reference implementations feed each
//! block the outputs of the blocks already compressed; for the few layers of a
//! classifier the difference is small, and one-shot lets every level of a sweep
//! share one collection). A llama GGUF's thirty-odd blocks are calibrated block by
//! block as the reference code does (see `eval::llama_inputs`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A recipe's `[calibration]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
}

impl CalibrationSpec {
    /// SparseGPT's and GPTQ's default calibration: 128 samples.
    pub const DEFAULT_SAMPLES: usize = 128;
    /// The reference implementations' `percdamp`.
    pub const DEFAULT_DAMPENING: f64 = 0.01;

    pub fn samples(&self) -> usize {
        self.samples.unwrap_or(Self::DEFAULT_SAMPLES)
    }

    pub fn dampening(&self) -> f64 {
        self.dampening.unwrap_or(Self::DEFAULT_DAMPENING)
    }

    /// What is wrong with the settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.samples == Some(0) {
            return Some("[calibration]: samples must be at least 1".into());
        }
        match self.dampening {
            Some(d) if !(d.is_finite() && (0.0..=1.0).contains(&d)) => Some(format!(
                "[calibration]: dampening is a fraction of the Hessian's mean diagonal, \
                 between 0 and 1, got {d}"
            )),
            _ => None,
        }
    }
}

/// How a layer's stored weight maps onto `outputs × inputs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in, …]`: a convolution, a Gemm with `transB = 1`, a torch Linear.
    OutIn,
    /// `[in, out]`: a MatMul's stored right-hand side, a Gemm with `transB = 0`.
    InOut,
}

/// What a method needs of a layer's inputs (every collection also sums `|x_j|`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// `Σ x_j²` per input feature (Wanda).
    Diagonal,
    /// The whole `Σ x xᵀ` (GPTQ, SparseGPT).
    Gram,
}

/// One weighted layer's input statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStatistics {
    /// Input features of one output: a linear layer's inputs, a convolution's
    /// `C/groups × kh × kw` (the weight's row length).
    pub columns: usize,
    /// Weight groups (a grouped convolution's), each with its own statistics over
    /// its own input channels; output `o` belongs to group `o / (outputs / groups)`.
    pub groups: usize,
    pub layout: WeightLayout,
    pub need: Need,
    /// Per group: `Σ x xᵀ` row-major `columns × columns`, or with [`Need::Diagonal`]
    /// its `columns` diagonal values.
    pub sums: Vec<f64>,
    /// Per group: `Σ |x_j|` of each input feature (AWQ's activation scale is its
    /// mean), `columns` values.
    pub abs_sums: Vec<f64>,
    /// Input rows summed per group (samples × output positions).
    pub rows: u64,
}

impl LayerStatistics {
    pub fn new(columns: usize, groups: usize, layout: WeightLayout, need: Need) -> Self {
        let per = match need {
            Need::Diagonal => columns,
            Need::Gram => columns * columns,
        };
        LayerStatistics {
            columns,
            groups,
            layout,
            need,
            sums: vec![0.0; per * groups],
            abs_sums: vec![0.0; columns * groups],
            rows: 0,
        }
    }

    fn per_group(&self) -> usize {
        self.sums.len() / self.groups.max(1)
    }

    /// `Σ x_j²` of group `g`.
    pub fn diagonal(&self, g: usize) -> Vec<f64> {
        let d = self.columns;
        let s = &self.sums[g * self.per_group()..(g + 1) * self.per_group()];
        match self.need {
            Need::Diagonal => s.to_vec(),
            Need::Gram => (0..d).map(|j| s[j * d + j]).collect(),
        }
    }

    /// The mean `|x_j|` of each input feature of group `g` over the rows seen.
    pub fn mean_abs(&self, g: usize) -> Vec<f64> {
        let d = self.columns;
        let n = self.rows.max(1) as f64;
        self.abs_sums[g * d..(g + 1) * d]
            .iter()
            .map(|s| s / n)
            .collect()
    }

    /// `Σ x xᵀ` of group `g` (row-major), when collected.
    pub fn gram(&self, g: usize) -> Option<&[f64]> {
        (self.need == Need::Gram)
            .then(|| &self.sums[g * self.per_group()..(g + 1) * self.per_group()])
    }

    /// Add the input rows `x` (`n × columns`, row-major) of group `g`.
    pub fn add_rows(&mut self, g: usize, x: &[f64], n: usize) {
        let d = self.columns;
        debug_assert_eq!(x.len(), n * d);
        let per = self.per_group();
        if d == 0 {
            return;
        }
        for row in x.chunks_exact(d) {
            for (acc, &v) in self.abs_sums[g * d..(g + 1) * d].iter_mut().zip(row) {
                *acc += v.abs();
            }
        }
        let s = &mut self.sums[g * per..(g + 1) * per];
        match self.need {
            Need::Diagonal => {
                for row in x.chunks_exact(d) {
                    for (acc, &v) in s.iter_mut().zip(row) {
                        *acc += v * v;
                    }
                }
            }
            Need::Gram => {
                // S += Xᵀ X through ndarray's matrix kernel (matrixmultiply, f64).
                use tract_onnx::prelude::tract_ndarray::{ArrayView2, ArrayViewMut2, linalg};
                let (Ok(x), Ok(mut acc)) = (
                    ArrayView2::from_shape((n, d), x),
                    ArrayViewMut2::from_shape((d, d), s),
                ) else {
                    unreachable!("the shapes are the slices' lengths");
                };
                linalg::general_mat_mul(1.0, &x.t(), &x, 1.0, &mut acc);
            }
        }
        if g + 1 == self.groups {
            self.rows += n as u64;
        }
    }

    /// That `len` weights over `outputs` rows are this layer's (`outputs × columns`,
    /// whole groups): what every method checks before reading the statistics.
    pub fn check_weights(
        &self,
        len: usize,
        outputs: usize,
    ) -> Result<(), super::prune::PruneError> {
        let d = self.columns;
        if d == 0 || len != outputs * d || !outputs.is_multiple_of(self.groups.max(1)) {
            return Err(super::prune::PruneError::BadShape {
                shape: vec![outputs, d],
                len,
                axis: 0,
            });
        }
        Ok(())
    }

    /// Add another collection's sums (the same layer over other samples).
    pub fn merge(&mut self, other: &LayerStatistics) {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        for (a, b) in self.abs_sums.iter_mut().zip(&other.abs_sums) {
            *a += b;
        }
        self.rows += other.rows;
    }
}

/// Every collected layer's statistics, by weight tensor name, and what they were
/// collected from (for cache keys and export metadata).
#[derive(Debug, Clone, Default)]
pub struct Statistics {
    pub layers: HashMap<String, Arc<LayerStatistics>>,
    /// Calibration samples the statistics cover.
    pub samples: usize,
    /// Identifies the calibration data and the network it ran through, so results
    /// computed with other statistics are never confused with these.
    pub data_key: u64,
    /// sha256 of the calibration samples' values (float32, little endian, in order):
    /// what exports record, so anyone can check which samples a model learnt from.
    pub data_sha256: String,
}

/// Where a data-aware tensor's calibration came from, as exports record it (its
/// scheme names the method).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub samples: usize,
    /// See [`Statistics::data_sha256`].
    pub data_sha256: String,
    pub dampening: f64,
}

impl Statistics {
    pub fn layer(&self, name: &str) -> Option<&LayerStatistics> {
        self.layers.get(name).map(|l| l.as_ref())
    }
}

/// A damped Hessian that cannot be inverted: Cholesky failed at input `column`, or
/// the layer's inputs held NaN or infinity there (`non_finite`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct NotPositiveDefinite {
    pub column: usize,
    pub dampening: f64,
    pub non_finite: bool,
}

impl NotPositiveDefinite {
    fn describe(&self) -> String {
        if self.non_finite {
            format!(
                "the calibration inputs of its input column {} hold NaN or infinity: check \
                 the data (and the layers before this one) for values that are not finite",
                self.column
            )
        } else {
            format!(
                "its calibration Hessian is not positive definite even with dampening {} (at \
                 input column {}): raise [calibration] dampening or use more samples",
                self.dampening, self.column
            )
        }
    }
}

/// `h + λ·mean(diag h)·I` with dead inputs (zero diagonal: the layer never saw them
/// non-zero) given a diagonal of 1, as GPTQ and SparseGPT prepare the Hessian.
/// Returns the dead columns, or the first column whose inputs were not finite.
pub fn dampen(h: &mut [f64], d: usize, dampening: f64) -> Result<Vec<usize>, NotPositiveDefinite> {
    if let Some(column) = (0..d).find(|&j| !h[j * d + j].is_finite()) {
        return Err(NotPositiveDefinite {
            column,
            dampening,
            non_finite: true,
        });
    }
    let dead: Vec<usize> = (0..d).filter(|&j| h[j * d + j] == 0.0).collect();
    for &j in &dead {
        h[j * d + j] = 1.0;
    }
    let mean = (0..d).map(|j| h[j * d + j]).sum::<f64>() / d.max(1) as f64;
    for j in 0..d {
        h[j * d + j] += dampening * mean;
    }
    Ok(dead)
}

/// In place, the lower Cholesky factor `L` of the symmetric positive definite `a`
/// (`a = L Lᵀ`, upper triangle zeroed); `Err(pivot)` where it is not.
pub fn cholesky(a: &mut [f64], d: usize) -> Result<(), usize> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        if !(diag > 0.0 && diag.is_finite()) {
            return Err(j);
        }
        let ljj = diag.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / ljj;
        }
        for k in j + 1..d {
            a[j * d + k] = 0.0;
        }
    }
    Ok(())
}

/// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = Uᵀ U`, row-major), from the
/// damped Hessian `h`: what the OBS sweeps of GPTQ and SparseGPT read their
/// per-column updates from (`torch.linalg.cholesky(cholesky_inverse(cholesky(H)),
/// upper=True)` in the reference code).
pub fn inverse_upper_cholesky(mut h: Vec<f64>, d: usize) -> Result<Vec<f64>, usize> {
    cholesky(&mut h, d)?;
    // (L⁻¹)ᵀ by forward substitution, row c holding column c of L⁻¹, so that every
    // inner loop below reads contiguous rows.
    let l = h;
    let mut inv_t = vec![0.0; d * d];
    for c in 0..d {
        let row = &mut inv_t[c * d..(c + 1) * d];
        for i in c..d {
            let li = &l[i * d..i * d + i];
            let s: f64 = (c..i).map(|k| li[k] * row[k]).sum();
            row[i] = (if i == c { 1.0 } else { 0.0 } - s) / l[i * d + i];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹: (H⁻¹)_ij = Σ_k (L⁻¹)_ki (L⁻¹)_kj, k ≥ max(i, j).
    let mut hinv = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let (ri, rj) = (&inv_t[i * d..(i + 1) * d], &inv_t[j * d..(j + 1) * d]);
            let s: f64 = (i..d).map(|k| ri[k] * rj[k]).sum();
            hinv[i * d + j] = s;
            hinv[j * d + i] = s;
        }
    }
    cholesky(&mut hinv, d)?;
    // U = Lᵀ of H⁻¹'s factor.
    let mut u = vec![0.0; d * d];
    for i in 0..d {
        for j in i..d {
            u[i * d + j] = hinv[j * d + i];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived: H = [[4, 2], [2, 3]] has H⁻¹ = [[3, −2], [−2, 4]] / 8, whose
    /// upper factor is U = [[√(3/8), −2/√24], [0, √(1/3)]] (UᵀU = H⁻¹).
    #[test]
    fn inverse_factor_of_a_small_hessian() {
        let u = inverse_upper_cholesky(vec![4.0, 2.0, 2.0, 3.0], 2).expect("pd");
        let want = [
            (3.0f64 / 8.0).sqrt(),
            -2.0 / 24f64.sqrt(),
            0.0,
            (1.0f64 / 3.0).sqrt(),
        ];
        for (a, b) in u.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{u:?}");
        }
        assert_eq!(cholesky(&mut [1.0, 2.0, 2.0, 1.0], 2), Err(1));
    }

    #[test]
    fn gram_and_diagonal_sums() {
        let x = [1.0, 2.0, 3.0, -1.0]; // rows (1, 2) and (3, −1)
        let mut g = LayerStatistics::new(2, 1, WeightLayout::OutIn, Need::Gram);
        g.add_rows(0, &x, 2);
        assert_eq!(g.gram(0).expect("gram"), &[10.0, -1.0, -1.0, 5.0]);
        let mut d = LayerStatistics::new(2, 1, WeightLayout::OutIn, Need::Diagonal);
        d.add_rows(0, &x, 2);
        assert_eq!((d.diagonal(0), d.rows), (vec![10.0, 5.0], 2));
        let mut h = vec![10.0, -1.0, -1.0, 0.0];
        assert_eq!(dampen(&mut h, 2, 0.1), Ok(vec![1]));
        assert_eq!(h, vec![10.55, -1.0, -1.0, 1.55]);
    }
}
