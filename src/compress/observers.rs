//! Calibration observers: the range of one activation tensor over the calibration
//! samples, as onnxruntime's calibrators (`onnxruntime/quantization/calibrate.py`)
//! compute it, so that a recipe calibrated here gives the scales `quantize_static`
//! would:
//! - **minmax**: the smallest and largest value (`MinMaxCalibrater`);
//! - **percentile** (`HistogramCollector.compute_percentile`): a 2,048-bin histogram,
//!   of |x| over `[min |x|, max |x|]` for a symmetric type, of x over
//!   `[−max |x|, max |x|]` otherwise; the threshold is the left edge of the bin where
//!   the cumulative share first reaches the percentile (each tail cut by half the
//!   rest, asymmetric);
//! - **entropy** (`get_entropy_threshold`, after TensorRT): a 2,048-bin histogram of x
//!   over `[−max |x|, max |x|]`; of the symmetric windows of 128 to 2,048 bins around
//!   zero, the one whose 128-level requantization loses the least KL divergence;
//! - **mse** (not one of onnxruntime's): a 2,048-bin histogram of x over `[min, max]`;
//!   of the ranges `p·[min, max]`, `p = 1, 0.99, …, 0.21`, the one whose quantization
//!   (onnxruntime's scale and zero point for it) has the least squared error, each bin
//!   counted at its centre, in float64 (the first of equal errors).
//!
//! The histograms bin as `np.histogram` does on float32 data (float32 edges from
//! `linspace`, float32 index arithmetic, then the ±1 correction against the edges),
//! and the KL terms follow onnxruntime's float32 arithmetic, including its integer
//! truncation of the expanded distribution.

use super::activations::{ActivationSpec, ActivationType, Observer, QuantParams};

/// Histogram bins (onnxruntime's percentile default; TensorRT's for entropy).
pub const HISTOGRAM_BINS: usize = 2048;
/// Levels the entropy search requantizes a window to (onnxruntime's default).
pub const QUANTIZED_BINS: usize = 128;

/// The streamed statistics of one activation tensor over the calibration samples:
/// a first pass for the range, a second (histogram observers) for the counts.
#[derive(Debug, Clone)]
pub struct RangeObserver {
    pub min: f32,
    pub max: f32,
    /// The smallest and largest |x| (the symmetric percentile's histogram range).
    abs_min: f32,
    abs_max: f32,
    histogram: Option<Histogram>,
}

impl Default for RangeObserver {
    fn default() -> Self {
        RangeObserver {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            abs_min: f32::INFINITY,
            abs_max: f32::NEG_INFINITY,
            histogram: None,
        }
    }
}

/// Whether `spec` needs the second, histogram pass.
pub fn needs_histogram(spec: &ActivationSpec) -> bool {
    spec.observer() != Observer::Minmax
}

impl RangeObserver {
    /// First pass: the range.
    pub fn observe_range(&mut self, xs: &[f32]) {
        for &x in xs.iter().filter(|x| !x.is_nan()) {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
            self.abs_min = self.abs_min.min(x.abs());
            self.abs_max = self.abs_max.max(x.abs());
        }
    }

    /// Second pass (histogram observers): count `xs`.
    pub fn observe_histogram(&mut self, xs: &[f32], spec: &ActivationSpec) {
        let absolute = absolute_histogram(spec);
        let (abs_min, abs_max, min, max) = (self.abs_min, self.abs_max, self.min, self.max);
        let mse = spec.observer() == Observer::Mse;
        let h = self.histogram.get_or_insert_with(|| {
            if absolute {
                Histogram::new(abs_min, abs_max, HISTOGRAM_BINS)
            } else if mse {
                Histogram::new(min, max, HISTOGRAM_BINS)
            } else {
                let t = min.abs().max(max.abs());
                Histogram::new(-t, t, HISTOGRAM_BINS)
            }
        });
        for &x in xs.iter().filter(|x| !x.is_nan()) {
            h.add(if absolute { x.abs() } else { x });
        }
    }

    /// The calibrated parameters.
    pub fn params(&self, spec: &ActivationSpec) -> QuantParams {
        let dtype = spec.dtype();
        if !self.min.is_finite() || !self.max.is_finite() {
            return QuantParams::from_range(0.0, 0.0, dtype);
        }
        let (lo, hi) = match (&self.histogram, spec.observer()) {
            (None, _) | (_, Observer::Minmax) => (self.min, self.max),
            (Some(h), Observer::Percentile) => h.percentile_range(spec),
            (Some(h), Observer::Entropy) => h.entropy_range(QUANTIZED_BINS),
            (Some(h), Observer::Mse) => h.mse_range(self.min, self.max, dtype),
        };
        // onnxruntime clips the thresholds to what was seen.
        QuantParams::from_range(lo.max(self.min), hi.min(self.max), dtype)
    }
}

/// The symmetric percentile counts |x|; the others x.
fn absolute_histogram(spec: &ActivationSpec) -> bool {
    spec.observer() == Observer::Percentile && spec.dtype() == ActivationType::Int8
}

/// Counts over equal bins, binned as `np.histogram` bins float32 data.
#[derive(Debug, Clone)]
struct Histogram {
    first: f32,
    last: f32,
    /// `bins + 1` float32 edges, as `np.linspace(first, last, bins + 1)` gives them
    /// for float32 ends.
    edges: Vec<f32>,
    counts: Vec<u64>,
}

impl Histogram {
    fn new(mut first: f32, mut last: f32, bins: usize) -> Histogram {
        // numpy widens an empty range by ±0.5.
        if first == last {
            first -= 0.5;
            last += 0.5;
        }
        // linspace in float32: step = (last − first) / bins, edge i = i·step + first,
        // the last edge exactly `last`.
        let step = (last - first) / bins as f32;
        let mut edges: Vec<f32> = (0..=bins).map(|i| i as f32 * step + first).collect();
        edges[bins] = last;
        Histogram {
            first,
            last,
            edges,
            counts: vec![0; bins],
        }
    }

    fn add(&mut self, x: f32) {
        if !(x >= self.first && x <= self.last) {
            return; // np.histogram drops values outside its range
        }
        let bins = self.counts.len();
        let f = (x - self.first) / (self.last - self.first) * bins as f32;
        let mut i = (f as usize).min(bins);
        if i == bins {
            i -= 1;
        }
        if x < self.edges[i] {
            i = i.saturating_sub(1);
        } else if i != bins - 1 && x >= self.edges[i + 1] {
            i += 1;
        }
        self.counts[i] += 1;
    }

    /// `np.cumsum(hist / total)`, then `searchsorted(cdf, share)` (the first bin
    /// whose cumulative share reaches `share`; `bins` when none does).
    fn first_reaching(&self, share: f64) -> usize {
        let total: u64 = self.counts.iter().sum();
        let mut cdf = 0.0f64;
        for (i, &c) in self.counts.iter().enumerate() {
            cdf += c as f64 / total as f64;
            if cdf >= share {
                return i;
            }
        }
        self.counts.len()
    }

    /// `compute_percentile`: `(−t, t)` from the |x| histogram, or the two tails cut.
    fn percentile_range(&self, spec: &ActivationSpec) -> (f32, f32) {
        let p = spec.percentile();
        if absolute_histogram(spec) {
            let t = self.edges[self.first_reaching(p / 100.0)];
            (-t, t)
        } else {
            let cut = (100.0 - p) / 200.0;
            (
                self.edges[self.first_reaching(cut)],
                self.edges[self.first_reaching(1.0 - cut)],
            )
        }
    }

    /// `get_entropy_threshold`: the window around the zero bin, of `2i + 1` bins for
    /// `i` from `quantized / 2` to half the bins, whose distribution (outliers folded
    /// into its end bins) loses the least KL divergence when requantized to
    /// `quantized` levels.
    fn entropy_range(&self, quantized: usize) -> (f32, f32) {
        let hist = &self.counts;
        let bins = hist.len();
        let zero = bins / 2;
        let half = quantized / 2;
        if half == 0 || zero < half {
            return (self.first, self.last);
        }
        let mut best: Option<(f32, usize)> = None;
        for i in half..=zero {
            let start = zero - i;
            let end = (zero + i + 1).min(bins);
            let sliced = &hist[start..end];
            let mut p: Vec<u64> = sliced.to_vec();
            p[0] += hist[..start].iter().sum::<u64>();
            let last = p.len() - 1;
            p[last] += hist[end..].iter().sum::<u64>();
            let merged = sliced.len() / quantized;
            let mut levels: Vec<u64> = (0..quantized)
                .map(|k| sliced[k * merged..k * merged + merged].iter().sum())
                .collect();
            levels[quantized - 1] += sliced[quantized * merged..].iter().sum::<u64>();
            // Spread each level over its bins (onnxruntime divides by the bins where
            // p is non-zero and stores into an integer array: truncated; the tail
            // past `quantized · merged` stays zero).
            let mut q = vec![0u64; p.len()];
            for (k, &level) in levels.iter().enumerate() {
                let span = k * merged..k * merged + merged;
                let norm = p[span.clone()].iter().filter(|&&v| v != 0).count() as u64;
                if let Some(each) = level.checked_div(norm) {
                    q[span].fill(each);
                }
            }
            let div = match (smooth(&p), smooth(&q)) {
                (Some(p), Some(q)) => kl_divergence(&p, &q),
                _ => f32::INFINITY,
            };
            // np.argmin: the first minimum.
            if best.is_none_or(|(b, _)| div < b) {
                best = Some((div, i));
            }
        }
        let i = best.map_or(zero, |(_, i)| i);
        (self.edges[zero - i], self.edges[(zero + i + 1).min(bins)])
    }
}

/// Candidates of the MSE observer: `p = 1 − i/100` for `i < MSE_STEPS`.
const MSE_STEPS: usize = 80;

impl Histogram {
    /// The MSE observer's range: of `p·[min, max]`, the one whose quantization has
    /// the least squared error over the counts (each at its bin's centre).
    fn mse_range(&self, min: f32, max: f32, dtype: ActivationType) -> (f32, f32) {
        let centres: Vec<f64> = self
            .edges
            .windows(2)
            .map(|e| (f64::from(e[0]) + f64::from(e[1])) / 2.0)
            .collect();
        let (qmin, qmax) = match dtype {
            ActivationType::Uint8 => (0.0, 255.0),
            ActivationType::Int8 => (-127.0, 127.0),
        };
        let error = |lo: f32, hi: f32| -> f64 {
            let p = QuantParams::from_range(lo, hi, dtype);
            let (scale, zp) = (f64::from(p.scale), f64::from(p.zero_point));
            centres
                .iter()
                .zip(&self.counts)
                .filter(|(_, c)| **c > 0)
                .map(|(&x, &c)| {
                    let q = ((x / scale).round_ties_even() + zp).clamp(qmin, qmax);
                    c as f64 * (x - (q - zp) * scale).powi(2)
                })
                .sum()
        };
        let mut best = ((min, max), error(min, max));
        for i in 1..MSE_STEPS {
            let p = 1.0 - i as f32 / 100.0;
            let e = error(p * min, p * max);
            if e < best.1 {
                best = ((p * min, p * max), e);
            }
        }
        best.0
    }
}

/// onnxruntime's `smooth_distribution` (eps 0.0001) in float32: zeros become eps,
/// the non-zero entries give up as much. `None` when all are zero (or the result
/// would not be positive, where onnxruntime's own assertion stops).
fn smooth(p: &[u64]) -> Option<Vec<f32>> {
    const EPS: f64 = 0.0001;
    let zeros = p.iter().filter(|&&v| v == 0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    let (eps, eps1) = (EPS as f32, eps1 as f32);
    let out: Vec<f32> = p
        .iter()
        .map(|&v| if v == 0 { eps } else { v as f32 - eps1 })
        .collect();
    out.iter().all(|&v| v > 0.0).then_some(out)
}

/// onnxruntime's `entropy(p, q)` in float32: both normalised by their (pairwise,
/// numpy) sums, then the sum of `p·ln(p/q)`.
fn kl_divergence(p: &[f32], q: &[f32]) -> f32 {
    let (sp, sq) = (pairwise_sum(p), pairwise_sum(q));
    let terms: Vec<f32> = p
        .iter()
        .zip(q)
        .map(|(&p, &q)| {
            let (p, q) = (p / sp, q / sq);
            if p > 0.0 && q > 0.0 {
                p * (f64::from(p / q).ln() as f32)
            } else {
                f32::INFINITY
            }
        })
        .collect();
    pairwise_sum(&terms)
}

/// numpy's pairwise summation of float32 (`pairwise_sum` in loops_utils.h): below 8
/// values in order; up to 128 with eight interleaved accumulators; else the two
/// halves (the first a multiple of 8) summed apart.
fn pairwise_sum(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        let mut s = -0.0f32;
        for &v in a {
            s += v;
        }
        s
    } else if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            s += v;
        }
        s
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::activations::Mode;

    fn spec(observer: Observer, dtype: ActivationType, percentile: Option<f64>) -> ActivationSpec {
        ActivationSpec {
            mode: Mode::Static,
            dtype: Some(dtype),
            observer: Some(observer),
            percentile,
            calibration: None,
        }
    }

    /// 100,000 values 0..1 and one outlier of 1,000: the 99.9th percentile of |x|
    /// ignores the outlier, minmax keeps it. |x| spans [0, 1000] in bins of
    /// 1000/2048; the first two hold 48,829 and 48,828 values (numpy 2.3.5 agrees),
    /// the third reaches 99.9 % of 100,001, and the threshold is its left edge,
    /// 2·1000/2048.
    #[test]
    fn the_percentile_observer_ignores_outliers() {
        let mut xs: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        xs.push(1000.0);
        let mut o = RangeObserver::default();
        o.observe_range(&xs);
        let minmax = o.params(&spec(Observer::Minmax, ActivationType::Int8, None));
        assert_eq!(minmax.scale, (1000.0f64 / 127.0) as f32);
        let s = spec(Observer::Percentile, ActivationType::Int8, Some(99.9));
        o.observe_histogram(&xs, &s);
        let p = o.params(&s);
        let t = 2.0f32 * (1000.0f32 / 2048.0);
        assert_eq!(p.scale, (f64::from(2.0 * t) / 254.0) as f32);
        assert_eq!(p.zero_point, 0);
    }

    /// numpy's pairwise order, by hand on 9 values: eight accumulators then the rest.
    #[test]
    fn pairwise_sum_follows_numpy() {
        let a = [1e8f32, 1.0, -1e8, 1.0, 0.5, 0.25, 0.125, 0.0625, 3.0];
        let r = ((1e8f32 + 1.0) + (-1e8 + 1.0)) + ((0.5 + 0.25) + (0.125 + 0.0625));
        assert_eq!(pairwise_sum(&a), r + 3.0);
    }

    /// np.histogram(np.float32([0, 0.1, 0.2, 0.3]), 3): edges linspace(0, 0.3, 4) in
    /// float32; 0.1 and 0.2 sit on edges and count in the bin they open.
    #[test]
    fn bins_follow_numpy_float32() {
        let mut h = Histogram::new(0.0, 0.3, 3);
        for x in [0.0f32, 0.1, 0.2, 0.3] {
            h.add(x);
        }
        assert_eq!(h.edges[1], 0.1f32);
        assert_eq!(h.counts, vec![1, 1, 2]);
    }
}
