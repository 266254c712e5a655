//! Pruning masks: which weights survive.
//!
//! Every method prunes an exact number of weights, `round(target_sparsity · n)` — the
//! count `torch.nn.utils.prune` uses — and breaks ties deterministically: weights are
//! pruned in ascending order of (|w|, position), so among equal magnitudes the earlier
//! one goes first. Existing zeros have the smallest magnitude and count toward the
//! target; NaN ranks above every number (never pruned by magnitude).
//!
//! Magnitude pruning selects the threshold over the bit patterns of |w| (monotone for
//! non-negative floats), O(n) on all cores, instead of a sort: for large inputs a
//! sample brackets the threshold and two passes settle it exactly (see
//! `select_by_sample`); otherwise, or when the sample misleads, a two-level radix
//! select.

#[cfg(target_arch = "x86_64")]
mod avx2;

use rand::SeedableRng;
use rand::seq::index::sample;
use rayon::prelude::*;

/// Weights per parallel work item; a multiple of 64 so each item owns whole mask words.
const CHUNK: usize = 1 << 16;
const RADIX: usize = 1 << 16;
/// Up to this many weights in all, magnitude selection sorts instead of using the
/// radix histograms.
const SORT_BELOW: usize = 1 << 12;

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

/// Which weights of each output a data-aware method removes: a fraction of them, or
/// all but `n` of every `m` consecutive ones (N:M, as `nm` counts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    Unstructured(f64),
    NOfM { n: usize, m: usize },
}

impl Mask {
    /// The mask keeping exactly the weights where `kept` is true.
    pub fn from_kept(kept: &[bool]) -> Mask {
        let mut mask = Mask::keep_all(kept.len());
        for (i, _) in kept.iter().enumerate().filter(|(_, k)| !**k) {
            mask.prune(i);
        }
        mask
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
    if total <= SORT_BELOW {
        // Small tensors (biases, MoE shards, tiny layers): one sort is exact and far
        // cheaper than two 65,536-bucket histograms.
        let mut keys: Vec<(u32, usize, usize)> = tensors
            .iter()
            .enumerate()
            .flat_map(|(t, w)| w.iter().enumerate().map(move |(i, &x)| (key(x), t, i)))
            .collect();
        keys.sort_unstable();
        for &(_, t, i) in &keys[..k] {
            masks[t].prune(i);
        }
        return Ok(masks);
    }
    if let Some(masks) = select_by_sample(tensors, total, k) {
        return Ok(masks);
    }
    // Level 1: the high 16 bits. Level 2: the low 16 bits among keys in the crossing bucket.
    let high = histogram(tensors, |key| Some(key >> 16));
    let (bucket, below_bucket) = crossing(&high, k);
    let low = histogram(tensors, |key| (key >> 16 == bucket).then_some(key & 0xffff));
    let (low_bits, below_low) = crossing(&low, k - below_bucket);
    let threshold = (bucket << 16) | low_bits;
    // Everything below the threshold goes, plus the first `ties` weights equal to it
    // (in tensor order, then position). `equal` weights equal it in all.
    let mut ties = k - below_bucket - below_low;
    let equal = low[low_bits as usize] as usize;
    let (all_ties, no_ties) = (ties == equal, ties == 0);
    for (t, mask) in tensors.iter().zip(&mut masks) {
        // Per chunk: how many of its threshold-equal weights go. Only counted when some
        // but not all ties go (rare); otherwise every chunk takes none or all of them.
        let budgets: Vec<Option<usize>> = if all_ties || no_ties {
            vec![if all_ties { None } else { Some(0) }; t.len().div_ceil(CHUNK)]
        } else {
            let equal_per_chunk: Vec<usize> = t
                .par_chunks(CHUNK)
                .map(|c| c.iter().filter(|&&x| key(x) == threshold).count())
                .collect();
            equal_per_chunk
                .iter()
                .map(|&e| {
                    let take = e.min(ties);
                    ties -= take;
                    Some(take)
                })
                .collect()
        };
        mask.words
            .par_chunks_mut(CHUNK / 64)
            .zip(t.par_chunks(CHUNK))
            .zip(budgets)
            .for_each(|((words, values), budget)| match budget {
                // Keep strictly above (all ties go) or at and above (none go).
                None => keep_words(words, values, |k| k > threshold),
                Some(0) => keep_words(words, values, |k| k >= threshold),
                Some(mut budget) => {
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
                }
            });
    }
    Ok(masks)
}

/// Weights per sampled weight when estimating the threshold.
const SAMPLE_STRIDE: usize = 251;

/// The fast path of [`magnitude_global`] for large inputs, exact all the same: a
/// deterministic sample brackets the threshold key in a window; one pass counts the
/// keys below the window and histograms those inside it; a second pass writes the
/// masks, pruning everything below the crossing bucket and collecting the few
/// weights inside it, which are then ranked exactly by (|w|, tensor, position).
/// `None` when the input is small or the k-th key falls outside the window (then the
/// two-level radix select runs).
fn select_by_sample(tensors: &[&[f32]], total: usize, k: usize) -> Option<Vec<Mask>> {
    if total < 1 << 20 {
        return None;
    }
    let mut sample: Vec<u32> = tensors
        .iter()
        .flat_map(|t| t.iter().step_by(SAMPLE_STRIDE).map(|&x| key(x)))
        .collect();
    sample.sort_unstable();
    let m = sample.len() as f64;
    let q = k as f64 / total as f64;
    // Six standard deviations of the sample quantile, plus slack for ties.
    let margin = 6.0 * (m * q * (1.0 - q)).sqrt() + 64.0;
    let lo = sample[((q * m - margin).floor().max(0.0) as usize).min(sample.len() - 1)];
    let hi = sample[((q * m + margin).ceil() as usize).min(sample.len() - 1)];
    let span = u64::from(hi - lo) + 1;
    let shift = (64 - (span - 1).leading_zeros()).saturating_sub(16);
    let buckets = ((span - 1) >> shift) as usize + 1;
    let chunks: Vec<&[f32]> = tensors.iter().flat_map(|t| t.chunks(CHUNK)).collect();
    let (below, hist) = chunks
        .par_iter()
        .fold(
            || (0u64, vec![0u32; buckets]),
            |(below, mut h), chunk| {
                let window = Window {
                    lo,
                    width: hi - lo,
                    shift,
                };
                (below + window.count(chunk, &mut h), h)
            },
        )
        .map(|(b, h)| (b, h.into_iter().map(u64::from).collect::<Vec<u64>>()))
        .reduce(
            || (0, vec![0u64; buckets]),
            |(b1, mut h1), (b2, h2)| {
                h1.iter_mut().zip(h2).for_each(|(x, y)| *x += y);
                (b1 + b2, h1)
            },
        );
    let (below, inside) = (below as usize, hist.iter().sum::<u64>() as usize);
    if k <= below || k > below + inside {
        return None;
    }
    let (b, below_bucket) = crossing(&hist, k - below);
    let b_lo = lo + (b << shift);
    let b_hi = b_lo.saturating_add((1 << shift) - 1).min(hi);
    let need = k - below - below_bucket;
    // Masks: below the bucket pruned, the bucket's members kept for now and listed.
    let mut masks: Vec<Mask> = tensors.iter().map(|t| Mask::keep_all(t.len())).collect();
    let mut members: Vec<(u32, usize, usize)> = Vec::new();
    let bucket = Window {
        lo: b_lo,
        width: b_hi - b_lo,
        shift: 0,
    };
    for (ti, (t, mask)) in tensors.iter().zip(&mut masks).enumerate() {
        let found: Vec<Vec<(u32, usize)>> = mask
            .words
            .par_chunks_mut(CHUNK / 64)
            .zip(t.par_chunks(CHUNK))
            .enumerate()
            .map(|(c, (words, values))| {
                let mut found = Vec::new();
                bucket.mask(values, words, c * CHUNK, &mut found);
                found
            })
            .collect();
        members.extend(found.into_iter().flatten().map(|(kx, i)| (kx, ti, i)));
    }
    members.sort_unstable();
    for &(_, ti, i) in &members[..need] {
        masks[ti].prune(i);
    }
    Some(masks)
}

/// Mask words from a keep test on each weight's key, 64 weights per word, without
/// branches.
#[inline]
fn keep_words(words: &mut [u64], values: &[f32], keep: impl Fn(u32) -> bool) {
    for (word, group) in words.iter_mut().zip(values.chunks(64)) {
        let mut w = 0u64;
        for (j, &x) in group.iter().enumerate() {
            w |= u64::from(keep(key(x))) << j;
        }
        *word = w;
    }
}

/// A window of keys `[lo, lo + width]`, bucketed by `(key − lo) >> shift`: the two
/// passes of [`select_by_sample`], with AVX2 versions chosen at run time. Tests are
/// written as one unsigned compare of `key − lo` (wrapping), never as two compares:
/// at 50% sparsity `key < lo` is a coin flip a branch predictor cannot learn.
#[derive(Debug, Clone, Copy)]
struct Window {
    lo: u32,
    width: u32,
    shift: u32,
}

impl Window {
    /// Count the keys below the window and histogram those inside it.
    fn count(&self, values: &[f32], hist: &mut [u32]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            return unsafe { avx2::count(self, values, hist) };
        }
        self.count_plain(values, hist)
    }

    fn count_plain(&self, values: &[f32], hist: &mut [u32]) -> u64 {
        let mut below = 0u64;
        for &x in values {
            let kx = key(x);
            below += u64::from(kx < self.lo);
            let d = kx.wrapping_sub(self.lo);
            if d <= self.width {
                hist[(d >> self.shift) as usize] += 1;
            }
        }
        below
    }

    /// Mask words keeping keys ≥ `lo` (everything below is pruned), and the keys and
    /// positions (`offset` + index) of the weights inside the window.
    fn mask(
        &self,
        values: &[f32],
        words: &mut [u64],
        offset: usize,
        found: &mut Vec<(u32, usize)>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            return unsafe { avx2::mask(self, values, words, offset, found) };
        }
        self.mask_plain(values, words, offset, found);
    }

    fn mask_plain(
        &self,
        values: &[f32],
        words: &mut [u64],
        offset: usize,
        found: &mut Vec<(u32, usize)>,
    ) {
        keep_words(words, values, |kx| kx >= self.lo);
        for (i, &x) in values.iter().enumerate() {
            if key(x).wrapping_sub(self.lo) <= self.width {
                found.push((key(x), offset + i));
            }
        }
    }
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

    /// The reference: sort (|w| bits, tensor, position) and prune the first k.
    fn by_sorting(tensors: &[&[f32]], k: usize) -> Vec<Vec<bool>> {
        let mut all: Vec<(u32, usize, usize)> = tensors
            .iter()
            .enumerate()
            .flat_map(|(t, xs)| xs.iter().enumerate().map(move |(i, &x)| (key(x), t, i)))
            .collect();
        all.sort_unstable();
        let mut kept: Vec<Vec<bool>> = tensors.iter().map(|t| vec![true; t.len()]).collect();
        for &(_, t, i) in &all[..k] {
            kept[t][i] = false;
        }
        kept
    }

    fn assert_same(masks: &[Mask], kept: &[Vec<bool>]) {
        for (m, k) in masks.iter().zip(kept) {
            assert_eq!(m.len(), k.len());
            let differ = (0..k.len()).filter(|&i| m.keeps(i) != k[i]).count();
            assert_eq!(differ, 0, "weights ranked differently from the sort");
        }
    }

    /// The sampled select on a large input with heavy ties (values on a coarse grid)
    /// across two tensors, and on an input whose every sampled weight is an outlier
    /// (the window misses, the radix select runs): both equal a full sort.
    #[test]
    fn the_sampled_select_equals_sorting() {
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let a: Vec<f32> = (0..900_000)
            .map(|_| (next() * 512.0).round() / 512.0)
            .collect();
        let b: Vec<f32> = (0..700_001)
            .map(|_| (next() * 256.0).round() / 1024.0)
            .collect();
        for sparsity in [0.5, 0.9, 0.123] {
            let k = count_to_prune(a.len() + b.len(), sparsity).expect("k");
            let masks = select_by_sample(&[&a, &b], a.len() + b.len(), k).expect("window hit");
            assert_same(&masks, &by_sorting(&[&a, &b], k));
            let public = magnitude_global(&[&a, &b], sparsity).expect("masks");
            assert_same(&public, &by_sorting(&[&a, &b], k));
        }
        let skewed: Vec<f32> = (0..1_200_000)
            .map(|i| if i % SAMPLE_STRIDE == 0 { 9.0 } else { next() })
            .collect();
        let k = count_to_prune(skewed.len(), 0.5).expect("k");
        assert!(
            select_by_sample(&[&skewed], skewed.len(), k).is_none(),
            "window misses"
        );
        let masks = magnitude_global(&[&skewed], 0.5).expect("masks");
        assert_same(&masks, &by_sorting(&[&skewed], k));
    }

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
