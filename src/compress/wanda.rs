//! Wanda (Sun, Liu, Bair, Kolter 2023, "A Simple and Effective Pruning Approach for
//! Large Language Models"): a weight's importance is `|W_ij| · ‖X_j‖₂`, its
//! magnitude times the norm of the input feature it multiplies over the calibration
//! rows, and weights are compared within each output (row), not across the layer.
//! Unstructured: each row loses its `round(s · columns)` least important weights;
//! N:M: each group of `m` consecutive weights of a row keeps its `n` most important.
//! Ties go to the earlier position first (a stable sort), as in the reference code.
//! No weight is updated.

use rayon::prelude::*;

use super::calibration::LayerStatistics;
use super::prune::{Pattern, PruneError, count_to_prune};

/// Which weights of `w` (`outputs × columns`, row-major, outputs first) Wanda keeps,
/// with `stats` the layer's input statistics (only their diagonals are read).
pub fn keep(
    w: &[f32],
    outputs: usize,
    stats: &LayerStatistics,
    pattern: Pattern,
) -> Result<Vec<bool>, PruneError> {
    stats.check_weights(w.len(), outputs)?;
    let (d, groups) = (stats.columns, stats.groups.max(1));
    let norms: Vec<Vec<f64>> = (0..groups)
        .map(|g| {
            stats
                .diagonal(g)
                .iter()
                .map(|s| s.max(0.0).sqrt())
                .collect()
        })
        .collect();
    let per_group = outputs / groups;
    let mut kept = vec![true; w.len()];
    let prune_per_row = match pattern {
        Pattern::Unstructured(s) => Some(count_to_prune(d, s)?),
        Pattern::NOfM { n, m } => {
            if n == 0 || n > m {
                return Err(PruneError::BadNM { n, m });
            }
            if !d.is_multiple_of(m) {
                return Err(PruneError::NotDivisible { n, m, row_len: d });
            }
            None
        }
    };
    kept.par_chunks_mut(d)
        .zip(w.par_chunks(d))
        .enumerate()
        .for_each(|(row, (kept, w))| {
            let norms = &norms[row / per_group];
            let score = |j: usize| f64::from(w[j].abs()) * norms[j];
            // Ascending score, then position: the first `k` go.
            let order = |range: std::ops::Range<usize>| {
                let mut idx: Vec<usize> = range.collect();
                idx.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
                idx
            };
            match (pattern, prune_per_row) {
                (_, Some(k)) => {
                    for j in order(0..d).into_iter().take(k) {
                        kept[j] = false;
                    }
                }
                (Pattern::NOfM { n, m }, None) => {
                    for start in (0..d).step_by(m) {
                        for j in order(start..start + m).into_iter().take(m - n) {
                            kept[j] = false;
                        }
                    }
                }
                (Pattern::Unstructured(_), None) => unreachable!("a count is computed"),
            }
        });
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::calibration::{Need, WeightLayout};

    fn stats(diag: &[f64]) -> LayerStatistics {
        let mut s = LayerStatistics::new(diag.len(), 1, WeightLayout::OutIn, Need::Diagonal);
        s.sums.copy_from_slice(diag);
        s
    }

    /// Hand-derived: with input norms (1, 10, 1, 1), a weight of 0.2 on the second
    /// input (score 2) outranks a weight of 1.5 (score 1.5); magnitude would drop it.
    #[test]
    fn importance_is_weight_times_input_norm() {
        let s = stats(&[1.0, 100.0, 1.0, 1.0]);
        let w = [1.5, 0.2, 3.0, 0.1, /* row 2 */ 0.5, 0.5, 0.5, 0.5];
        let kept = keep(&w, 2, &s, Pattern::Unstructured(0.5)).expect("wanda");
        // Row 1 scores 1.5, 2, 3, 0.1: the 0.1 and 1.5 go. Row 2 scores 0.5, 5, 0.5,
        // 0.5: the first two 0.5s (positions 0 and 2) go, ties by position.
        assert_eq!(kept, [false, true, true, false, false, true, false, true]);
        // 1:2: each pair keeps its larger score, the first of a tie going.
        let kept = keep(&w, 2, &s, Pattern::NOfM { n: 1, m: 2 }).expect("1:2");
        assert_eq!(kept, [false, true, true, false, false, true, false, true]);
        assert!(keep(&w, 2, &s, Pattern::NOfM { n: 2, m: 3 }).is_err());
    }
}
