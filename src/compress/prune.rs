//! Pruning masks: which weights survive.
//!
//! Every method prunes an exact number of weights, `round(target_sparsity · n)` — the
//! count `torch.nn.utils.prune` uses — and breaks ties deterministically: weights are
//! pruned in ascending order of (|w|, position), so among equal magnitudes the earlier
//! one goes first. Existing zeros have the smallest magnitude and count toward the
//! target; NaN ranks above every number (never pruned by magnitude).
//!
//! Magnitude pruning selects the threshold with a two-level radix select over the bit
//! patterns of |w| (monotone for non-negative floats), O(n) on all cores, instead of a
//! sort.

use rand::SeedableRng;
use rand::seq::index::sample;
use rayon::prelude::*;

/// Weights per parallel work item; a multiple of 64 so each item owns whole mask words.
const CHUNK: usize = 1 << 16;
const RADIX: usize = 1 << 16;

/// Why a pruning request is impossible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PruneError {
    #[error("target sparsity must be between 0 and 1, got {0}")]
    BadSparsity(f64),
    #[error("N:M needs 0 < N <= M, got {n}:{m}")]
    BadNM { n: usize, m: usize },
    #[error("rows of {row_len} values are not a whole number of {m}-value groups for {n}:{m}")]
    NotDivisible { n: usize, m: usize, row_len: usize },
    #[error("shape {shape:?} does not hold {len} values, or has no axis {axis}")]
    BadShape {
        shape: Vec<usize>,
        len: usize,
        axis: usize,
    },
}

/// One bit per weight: set = kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    words: Vec<u64>,
    len: usize,
}

impl Mask {
    /// Keep everything.
    pub fn keep_all(len: usize) -> Mask {
        let mut words = vec![u64::MAX; len.div_ceil(64)];
        if let (false, Some(last)) = (len.is_multiple_of(64), words.last_mut()) {
            *last = (1u64 << (len % 64)) - 1;
        }
        Mask { words, len }
    }
    /// Number of weights the mask covers.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether weight `i` survives.
    pub fn keeps(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 == 1
    }
    fn prune(&mut self, i: usize) {
        self.words[i / 64] &= !(1u64 << (i % 64));
    }
    /// Weights kept.
    pub fn kept(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Weights pruned.
    pub fn pruned(&self) -> usize {
        self.len - self.kept()
    }
    /// Fraction pruned (0 for an empty mask).
    pub fn sparsity(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            self.pruned() as f64 / self.len as f64
        }
    }
    /// Zero the pruned weights of `w` (which must have the mask's length).
    pub fn apply(&self, w: &mut [f32]) {
        debug_assert_eq!(w.len(), self.len);
        w.par_chunks_mut(CHUNK)
            .zip(self.words.par_chunks(CHUNK / 64))
            .for_each(|(w, words)| {
                for (k, x) in w.iter_mut().enumerate() {
                    if words[k / 64] >> (k % 64) & 1 == 0 {
                        *x = 0.0;
                    }
                }
            });
    }
}

/// `round(target · n)` with Python's rounding (half to even), as torch's
/// `_compute_nparams_toprune` computes it, after checking the target.
pub fn count_to_prune(n: usize, target_sparsity: f64) -> Result<usize, PruneError> {
    if !(0.0..=1.0).contains(&target_sparsity) {
        return Err(PruneError::BadSparsity(target_sparsity));
    }
    Ok(((target_sparsity * n as f64).round_ties_even() as usize).min(n))
}

/// The ranking key: bits of |w|, which order like the magnitudes (NaN above ∞).
#[inline]
fn key(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// L1-unstructured magnitude pruning of one tensor (`torch.nn.utils.prune.l1_unstructured`).
pub fn magnitude(w: &[f32], target_sparsity: f64) -> Result<Mask, PruneError> {
    magnitude_global(&[w], target_sparsity).map(|mut m| m.remove(0))
}

/// Magnitude pruning with one threshold across several tensors
/// (`torch.nn.utils.prune.global_unstructured` with L1): the smallest
/// `round(target · total)` weights of all tensors together; ties go in tensor order,
/// then position.
pub fn magnitude_global(tensors: &[&[f32]], target_sparsity: f64) -> Result<Vec<Mask>, PruneError> {
    let total: usize = tensors.iter().map(|t| t.len()).sum();
    let k = count_to_prune(total, target_sparsity)?;
    let mut masks: Vec<Mask> = tensors.iter().map(|t| Mask::keep_all(t.len())).collect();
    if k == 0 {
        return Ok(masks);
    }
    // Level 1: the high 16 bits. Level 2: the low 16 bits among keys in the crossing bucket.
    let high = histogram(tensors, |key| Some(key >> 16));
    let (bucket, below_bucket) = crossing(&high, k);
    let low = histogram(tensors, |key| (key >> 16 == bucket).then_some(key & 0xffff));
    let (low_bits, below_low) = crossing(&low, k - below_bucket);
    let threshold = (bucket << 16) | low_bits;
    // Everything below the threshold goes, plus the first `ties` weights equal to it.
    let mut ties = k - below_bucket - below_low;
    for (t, mask) in tensors.iter().zip(&mut masks) {
        let equal_per_chunk: Vec<usize> = t
            .par_chunks(CHUNK)
            .map(|c| c.iter().filter(|&&x| key(x) == threshold).count())
            .collect();
        let mut budgets = Vec::with_capacity(equal_per_chunk.len());
        for &e in &equal_per_chunk {
            let take = e.min(ties);
            budgets.push(take);
            ties -= take;
        }
        mask.words
            .par_chunks_mut(CHUNK / 64)
            .zip(t.par_chunks(CHUNK))
            .zip(budgets)
            .for_each(|((words, values), mut budget)| {
                for (i, &x) in values.iter().enumerate() {
                    let kx = key(x);
                    let prune = kx < threshold
                        || (kx == threshold && budget > 0 && {
                            budget -= 1;
                            true
                        });
                    if prune {
                        words[i / 64] &= !(1u64 << (i % 64));
                    }
                }
            });
    }
    Ok(masks)
}

/// Counts of `bucket(key)` over all weights, in parallel.
fn histogram(tensors: &[&[f32]], bucket: impl Fn(u32) -> Option<u32> + Sync) -> Vec<u64> {
    tensors
        .iter()
        .flat_map(|t| t.chunks(CHUNK))
        .collect::<Vec<_>>()
        .par_iter()
        .fold(
            || vec![0u32; RADIX],
            |mut h, chunk| {
                for &x in *chunk {
                    if let Some(b) = bucket(key(x)) {
                        h[b as usize] += 1;
                    }
                }
                h
            },
        )
        .map(|h| h.into_iter().map(u64::from).collect::<Vec<u64>>())
        .reduce(
            || vec![0u64; RADIX],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// The bucket holding the `k`-th smallest key (1-based, k ≥ 1) and the count of keys
/// in earlier buckets.
fn crossing(hist: &[u64], k: usize) -> (u32, usize) {
    let mut below = 0usize;
    for (b, &c) in hist.iter().enumerate() {
        if below + c as usize >= k {
            return (b as u32, below);
        }
        below += c as usize;
    }
    (hist.len() as u32 - 1, below)
}

/// Random unstructured pruning: exactly `round(target · n)` weights chosen uniformly,
/// reproducibly from `seed` (the baseline magnitude pruning is compared against).
pub fn random(len: usize, target_sparsity: f64, seed: u64) -> Result<Mask, PruneError> {
    let k = count_to_prune(len, target_sparsity)?;
    let mut mask = Mask::keep_all(len);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in sample(&mut rng, len, k) {
        mask.prune(i);
    }
    Ok(mask)
}

/// N:M semi-structured sparsity along the last (input) dimension: in every group of
/// `m` consecutive weights of a row, keep the `n` largest magnitudes (2:4 is what
/// sparse tensor cores run). `row_len` is the last dimension.
pub fn n_m(w: &[f32], row_len: usize, n: usize, m: usize) -> Result<Mask, PruneError> {
    if n == 0 || n > m {
        return Err(PruneError::BadNM { n, m });
    }
    if row_len == 0 || !row_len.is_multiple_of(m) || !w.len().is_multiple_of(row_len) {
        return Err(PruneError::NotDivisible { n, m, row_len });
    }
    let mut mask = Mask::keep_all(w.len());
    let mut order: Vec<usize> = Vec::with_capacity(m);
    for (g, group) in w.chunks_exact(m).enumerate() {
        order.clear();
        order.extend(0..m);
        order.sort_by_key(|&j| (key(group[j]), j));
        for &j in &order[..m - n] {
            mask.prune(g * m + j);
        }
    }
    Ok(mask)
}

/// Which norm ranks whole rows/channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    L1,
    L2,
}

/// The result of structured pruning: the mask, and the slices that survive.
#[derive(Debug, Clone, PartialEq)]
pub struct Structured {
    pub mask: Mask,
    /// Indices along the pruned axis that are kept, ascending.
    pub kept: Vec<usize>,
    /// The physically smaller shape the pruning allows.
    pub shape: Vec<usize>,
}

/// Structured pruning along `axis` (0: output neurons / conv filters; 1: input
/// channels) of a row-major tensor of `shape`: remove `round(target · shape[axis])`
/// slices with the smallest L1/L2 norm (ties: the earlier slice goes first).
pub fn structured(
    w: &[f32],
    shape: &[usize],
    axis: usize,
    target_sparsity: f64,
    norm: Norm,
) -> Result<Structured, PruneError> {
    let bad = || PruneError::BadShape {
        shape: shape.to_vec(),
        len: w.len(),
        axis,
    };
    if axis > 1 || axis >= shape.len() || shape.iter().product::<usize>() != w.len() {
        return Err(bad());
    }
    let slices = shape[axis];
    let k = count_to_prune(slices, target_sparsity)?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    // Element (o, s, i) lives at (o · slices + s) · inner + i.
    let mut norms = vec![0f64; slices];
    for o in 0..outer {
        for (s, n) in norms.iter_mut().enumerate() {
            let at = (o * slices + s) * inner;
            for &x in &w[at..at + inner] {
                let x = f64::from(x);
                *n += if norm == Norm::L1 { x.abs() } else { x * x };
            }
        }
    }
    let mut order: Vec<usize> = (0..slices).collect();
    order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
    let mut pruned = vec![false; slices];
    for &s in &order[..k] {
        pruned[s] = true;
    }
    let mut mask = Mask::keep_all(w.len());
    for o in 0..outer {
        for s in (0..slices).filter(|&s| pruned[s]) {
            for i in 0..inner {
                mask.prune((o * slices + s) * inner + i);
            }
        }
    }
    let kept: Vec<usize> = (0..slices).filter(|&s| !pruned[s]).collect();
    let mut smaller = shape.to_vec();
    smaller[axis] = kept.len();
    Ok(Structured {
        mask,
        kept,
        shape: smaller,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_counts_and_bad_targets() {
        assert_eq!(count_to_prune(1024, 0.6), Ok(614)); // 410 neurons remain
        // Python's round(2.5) == 2 and round(1.5) == 2: half to even.
        assert_eq!(count_to_prune(10, 0.25), Ok(2));
        assert_eq!(count_to_prune(3, 0.5), Ok(2));
        assert_eq!(count_to_prune(5, 1.5), Err(PruneError::BadSparsity(1.5)));
        assert!(count_to_prune(5, f64::NAN).is_err());
    }

    #[test]
    fn ties_go_in_position_order() {
        let w = [0.5, -0.1, 0.1, 0.0, 0.1, 2.0];
        let m = magnitude(&w, 0.5).unwrap_or_else(|e| panic!("{e}"));
        // Prune 3: the zero, then the first two of the three 0.1 magnitudes.
        let kept: Vec<bool> = (0..6).map(|i| m.keeps(i)).collect();
        assert_eq!(kept, [true, false, false, false, true, true]);
    }

    #[test]
    fn structured_rows_give_the_smaller_shape() {
        // 4 rows of 2: L1 norms 3, 0.2, 7, 1 → pruning 50% removes rows 1 and 3.
        let w = [1.0, -2.0, 0.1, 0.1, 3.0, 4.0, 0.5, 0.5];
        let s = structured(&w, &[4, 2], 0, 0.5, Norm::L1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.kept.clone(), s.shape.clone()), (vec![0, 2], vec![2, 2]));
        assert_eq!(s.mask.pruned(), 4);
    }
}
