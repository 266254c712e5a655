//! Per-tensor statistics and histograms, exact and fast.
//!
//! A tensor is processed in chunks of [`CHUNK`] elements on all cores (rayon). Each
//! chunk is decoded to `f32` into a per-thread buffer (or read in place when the data
//! already is aligned little-endian f32), so no tensor is ever materialised whole: a
//! model inspects in little more memory than its memory-mapped file. Two passes over
//! the chunks: the first gathers count, min, max and float64 sums; the second, which
//! needs min/max and mean/std, bins the histogram and counts outliers.
//!
//! Histogram bins follow numpy's `np.histogram(x, bins, range=(min, max))` exactly:
//! edges are `linspace(min, max, bins + 1)` in float64, bin `i` holds
//! `edges[i] <= x < edges[i+1]` and the last bin is closed. Non-finite values are
//! counted apart and left out of every other figure.

use rayon::prelude::*;
use serde::Serialize;

use crate::dtype::{self, DType};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Elements per chunk: 256 KiB of f32, a multiple of every ggml block (32, 256).
pub const CHUNK: usize = 1 << 16;
/// Default histogram resolution.
pub const DEFAULT_BINS: usize = 256;
/// Upper bound on bins, so a typo cannot ask for gigabytes of counters.
pub const MAX_BINS: usize = 1 << 20;

/// What the histogram ranges over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistogramRange {
    /// Values over `[min, max]`.
    #[default]
    Signed,
    /// Magnitudes `|w|` over `[0, max |w|]` (what magnitude pruning thresholds).
    Abs,
}

/// Options for [`compute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsOptions {
    /// Number of equal-width bins (1..=[`MAX_BINS`]).
    pub bins: usize,
    pub range: HistogramRange,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            bins: DEFAULT_BINS,
            range: HistogramRange::Signed,
        }
    }
}

/// Equal-width bin counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    pub range: HistogramRange,
    /// Left edge of the first bin.
    pub min: f64,
    /// Right edge of the last bin.
    pub max: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The `bins + 1` bin edges, computed as numpy's `linspace` does.
    pub fn edges(&self) -> Vec<f64> {
        linspace_edges(self.min, self.max, self.counts.len())
    }
    /// Sum of the counts (the number of finite values binned).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Exact statistics of one tensor. Float figures are `NaN` (JSON `null`) when the
/// tensor has no finite values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorStats {
    /// Elements in the tensor.
    pub count: u64,
    pub nan: u64,
    pub inf: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std: f64,
    /// Mean of |w|.
    pub mean_abs: f64,
    /// Elements exactly equal to zero.
    pub zeros: u64,
    /// `zeros / count`.
    pub zero_fraction: f64,
    /// Elements with |w − mean| > 3·std.
    pub beyond_3_sigma: u64,
    pub beyond_3_sigma_fraction: f64,
    /// Elements with |w − mean| > 6·std (heavy outliers, which hurt quantization).
    pub beyond_6_sigma: u64,
    pub beyond_6_sigma_fraction: f64,
    /// `None` when there is nothing to bin (no finite values). Reports serialise it
    /// beside the statistics rather than inside them.
    #[serde(skip)]
    pub histogram: Option<Histogram>,
}

/// Why statistics could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("no decoder for {0} values (listed, but statistics are unavailable)")]
    Undecodable(DType),
    #[error("{bytes} bytes do not hold {numel} {dtype} values")]
    SizeMismatch {
        dtype: DType,
        numel: u64,
        bytes: usize,
    },
    #[error("bins must be between 1 and {MAX_BINS}, got {0}")]
    BadBins(usize),
    #[error("reading the data failed: {0}")]
    Read(String),
}

/// Statistics and histogram of `numel` values of `dtype` stored in `bytes`.
pub fn compute(
    dtype: DType,
    bytes: &[u8],
    numel: u64,
    options: &StatsOptions,
) -> Result<TensorStats, StatsError> {
    check_request(dtype, options)?;
    if dtype.size_bytes(numel) != Some(bytes.len() as u64) {
        return Err(StatsError::SizeMismatch {
            dtype,
            numel,
            bytes: bytes.len(),
        });
    }
    let source = Source {
        dtype,
        bytes,
        numel: numel as usize,
    };
    compute_passes(numel, options, &mut |visit| {
        visit(&source);
        Ok(())
    })
}

/// Whether statistics of `dtype` values with `options` can be computed at all.
fn check_request(dtype: DType, options: &StatsOptions) -> Result<(), StatsError> {
    if options.bins == 0 || options.bins > MAX_BINS {
        return Err(StatsError::BadBins(options.bins));
    }
    if !dtype.can_decode() {
        return Err(StatsError::Undecodable(dtype));
    }
    Ok(())
}

/// Elements read per piece by [`compute_streamed`]: 64 chunks (16 MiB as f32).
const PIECE: usize = 64 * CHUNK;

/// [`compute`] over `numel` values of `dtype` read from a stream (`open` is called once
/// per pass, twice in all) in pieces of a bounded size, so memory stays bounded
/// whatever the tensor's size. Chunks fall where they would in memory, so the figures
/// are bit-identical to [`compute`] on the same bytes.
pub fn compute_streamed<R: std::io::Read>(
    dtype: DType,
    numel: u64,
    options: &StatsOptions,
    mut open: impl FnMut() -> std::io::Result<R>,
) -> Result<TensorStats, StatsError> {
    check_request(dtype, options)?;
    let mut buf = Vec::new();
    compute_passes(numel, options, &mut |visit| {
        let read = |e: std::io::Error| StatsError::Read(e.to_string());
        let mut reader = open().map_err(read)?;
        let mut start = 0u64;
        while start < numel {
            let len = (PIECE as u64).min(numel - start);
            let bytes = dtype.size_bytes(len).ok_or(StatsError::SizeMismatch {
                dtype,
                numel,
                bytes: 0,
            })?;
            buf.resize(bytes as usize, 0);
            reader.read_exact(&mut buf).map_err(read)?;
            visit(&Source {
                dtype,
                bytes: &buf,
                numel: len as usize,
            });
            start += len;
        }
        Ok(())
    })
}

/// Visits every piece of a tensor's data, in order, once per call.
type Pieces<'p> = dyn FnMut(&mut dyn FnMut(&Source<'_>)) -> Result<(), StatsError> + 'p;

/// The two passes of [`compute`] over the pieces `pieces` visits.
fn compute_passes(
    numel: u64,
    options: &StatsOptions,
    pieces: &mut Pieces<'_>,
) -> Result<TensorStats, StatsError> {
    // Float sums merged in chunk order, so the statistics are the same bits at
    // any thread count.
    let mut m = Moments::default();
    pieces(&mut |source| {
        m = source
            .par_map_chunks(moments)
            .into_iter()
            .fold(m, Moments::merge);
    })?;
    let finite = m.finite();
    let count = numel;
    let frac = |k: u64| {
        if count == 0 {
            f64::NAN
        } else {
            k as f64 / count as f64
        }
    };
    let mut stats = TensorStats {
        count,
        nan: m.nan,
        inf: m.inf,
        min: f64::NAN,
        max: f64::NAN,
        mean: f64::NAN,
        std: f64::NAN,
        mean_abs: f64::NAN,
        zeros: m.zeros,
        zero_fraction: frac(m.zeros),
        beyond_3_sigma: 0,
        beyond_3_sigma_fraction: frac(0),
        beyond_6_sigma: 0,
        beyond_6_sigma_fraction: frac(0),
        histogram: None,
    };
    if finite == 0 {
        return Ok(stats);
    }
    let n = finite as f64;
    let mean = m.sum / n;
    let std = (m.sum_sq / n - mean * mean).max(0.0).sqrt();
    stats.min = f64::from(m.min);
    stats.max = f64::from(m.max);
    stats.mean = mean;
    stats.std = std;
    stats.mean_abs = m.sum_abs / n;

    let (first, last) = match options.range {
        HistogramRange::Signed => (stats.min, stats.max),
        HistogramRange::Abs => (0.0, stats.min.abs().max(stats.max.abs())),
    };
    // numpy widens an empty range by ±0.5.
    let (first, last) = if first == last {
        (first - 0.5, last + 0.5)
    } else {
        (first, last)
    };
    let binner = Binner::new(first, last, options.bins, options.range, mean, std);
    let bins = options.bins;
    let mut tally = Tally::new(bins);
    pieces(&mut |source| {
        let piece = source.par_fold(
            || Tally::new(bins),
            |mut t, xs| {
                binner.tally(xs, &mut t);
                t
            },
            Tally::merge,
        );
        tally = Tally::merge(std::mem::replace(&mut tally, Tally::new(0)), piece);
    })?;
    stats.beyond_3_sigma = tally.beyond[0];
    stats.beyond_6_sigma = tally.beyond[1];
    stats.beyond_3_sigma_fraction = frac(tally.beyond[0]);
    stats.beyond_6_sigma_fraction = frac(tally.beyond[1]);
    stats.histogram = Some(Histogram {
        range: options.range,
        min: first,
        max: last,
        counts: tally.counts,
    });
    Ok(stats)
}

/// numpy's `linspace(first, last, bins + 1)` in float64: `i * step + first`, the last
/// edge set to `last` exactly.
pub fn linspace_edges(first: f64, last: f64, bins: usize) -> Vec<f64> {
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    if let Some(e) = edges.last_mut() {
        *e = last;
    }
    edges
}

/// The smallest f32 `>= v`: for any f32 `x`, `x as f64 >= v` ⇔ `x >= up(v)`.
fn f32_at_or_above(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v { f.next_up() } else { f }
}

/// The largest f32 `<= v`: for any f32 `x`, `x as f64 > v` ⇔ `x > down(v)`.
fn f32_at_or_below(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) > v { f.next_down() } else { f }
}

/// A tensor's bytes, handed out as f32 chunks in parallel.
struct Source<'a> {
    dtype: DType,
    bytes: &'a [u8],
    numel: usize,
}

impl Source<'_> {
    /// Fold every chunk's values with `fold` on all cores, then `merge` the partials.
    fn par_fold<T, I, F, M>(&self, init: I, fold: F, merge: M) -> T
    where
        T: Send,
        I: Fn() -> T + Sync + Send,
        F: Fn(T, &[f32]) -> T + Sync + Send,
        M: Fn(T, T) -> T + Sync + Send,
    {
        let chunks = self.numel.div_ceil(CHUNK);
        (0..chunks)
            .into_par_iter()
            .fold(
                || (init(), Vec::new()),
                |(acc, mut buf), k| {
                    let start = k * CHUNK;
                    let len = CHUNK.min(self.numel - start);
                    let acc = fold(acc, self.chunk(start, len, &mut buf));
                    (acc, buf)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(&init, &merge)
    }

    /// `f` of every chunk's values on all cores, in chunk order.
    fn par_map_chunks<T, F>(&self, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(&[f32]) -> T + Sync + Send,
    {
        let chunks = self.numel.div_ceil(CHUNK);
        (0..chunks)
            .into_par_iter()
            .map_init(Vec::new, |buf, k| {
                let start = k * CHUNK;
                let len = CHUNK.min(self.numel - start);
                f(self.chunk(start, len, buf))
            })
            .collect()
    }

    /// Elements `start..start + len` as f32: in place when possible, else decoded.
    fn chunk<'b>(&'b self, start: usize, len: usize, buf: &'b mut Vec<f32>) -> &'b [f32] {
        // Chunk starts are multiples of CHUNK, hence of every block length.
        let from = self.dtype.size_bytes(start as u64).unwrap_or(0) as usize;
        let to = self.dtype.size_bytes((start + len) as u64).unwrap_or(0) as usize;
        let raw = &self.bytes[from..to];
        if self.dtype == DType::F32 && cfg!(target_endian = "little") {
            // SAFETY: every bit pattern is a valid f32; `align_to` only yields the
            // middle slice where alignment holds.
            let (pre, mid, post) = unsafe { raw.align_to::<f32>() };
            if pre.is_empty() && post.is_empty() {
                return mid;
            }
        }
        buf.resize(len, 0.0);
        dtype::decode(self.dtype, raw, buf);
        buf
    }
}

/// First-pass accumulators over finite values.
#[derive(Debug, Clone, Copy)]
struct Moments {
    count: u64,
    nan: u64,
    inf: u64,
    min: f32,
    max: f32,
    sum: f64,
    sum_sq: f64,
    sum_abs: f64,
    zeros: u64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            nan: 0,
            inf: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            sum: 0.0,
            sum_sq: 0.0,
            sum_abs: 0.0,
            zeros: 0,
        }
    }
}

impl Moments {
    fn finite(&self) -> u64 {
        self.count - self.nan - self.inf
    }
    fn merge(self, o: Moments) -> Moments {
        Moments {
            count: self.count + o.count,
            nan: self.nan + o.nan,
            inf: self.inf + o.inf,
            min: if o.min < self.min { o.min } else { self.min },
            max: if o.max > self.max { o.max } else { self.max },
            sum: self.sum + o.sum,
            sum_sq: self.sum_sq + o.sum_sq,
            sum_abs: self.sum_abs + o.sum_abs,
            zeros: self.zeros + o.zeros,
        }
    }
}

/// Lanes of independent accumulators: lets the compiler vectorise and hides latency.
const LANES: usize = 8;

/// Whether the explicit AVX2 kernels can run on this CPU (checked once, cached by std).
fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn moments(xs: &[f32]) -> Moments {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU supports the features the AVX2 kernel is compiled for.
        return unsafe { avx2::moments(xs) };
    }
    moments_kernel(xs)
}

/// The first pass over one chunk, plain Rust: the portable path and the reference the
/// AVX2 kernel is tested against. The fast path assumes finite values and checks that
/// with an integer test; a chunk holding NaN/Inf is redone value by value.
fn moments_kernel(xs: &[f32]) -> Moments {
    let mut min = [f32::INFINITY; LANES];
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut sum = [0f64; LANES];
    let mut sum_sq = [0f64; LANES];
    let mut sum_abs = [0f64; LANES];
    let mut zeros = [0u32; LANES];
    let mut non_finite = [0u32; LANES];
    let body = xs.chunks_exact(LANES);
    let tail = body.remainder();
    for c in body {
        for j in 0..LANES {
            let x = c[j];
            min[j] = if x < min[j] { x } else { min[j] };
            max[j] = if x > max[j] { x } else { max[j] };
            let d = f64::from(x);
            sum[j] += d;
            sum_sq[j] += d * d;
            sum_abs[j] += d.abs();
            zeros[j] += u32::from(x == 0.0);
            non_finite[j] += u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000);
        }
    }
    if non_finite.iter().any(|&n| n > 0) || tail.iter().any(|x| !x.is_finite()) {
        return moments_slow(xs);
    }
    let mut m = Moments {
        count: xs.len() as u64,
        ..Moments::default()
    };
    for j in 0..LANES {
        m.min = if min[j] < m.min { min[j] } else { m.min };
        m.max = if max[j] > m.max { max[j] } else { m.max };
        m.sum += sum[j];
        m.sum_sq += sum_sq[j];
        m.sum_abs += sum_abs[j];
        m.zeros += u64::from(zeros[j]);
    }
    for &x in tail {
        add_finite(&mut m, x);
    }
    m
}

fn add_finite(m: &mut Moments, x: f32) {
    m.min = if x < m.min { x } else { m.min };
    m.max = if x > m.max { x } else { m.max };
    let d = f64::from(x);
    m.sum += d;
    m.sum_sq += d * d;
    m.sum_abs += d.abs();
    m.zeros += u64::from(x == 0.0);
}

fn moments_slow(xs: &[f32]) -> Moments {
    let mut m = Moments {
        count: xs.len() as u64,
        ..Moments::default()
    };
    for &x in xs {
        if x.is_nan() {
            m.nan += 1;
        } else if x.is_infinite() {
            m.inf += 1;
        } else {
            add_finite(&mut m, x);
        }
    }
    m
}

/// Second-pass accumulators.
struct Tally {
    counts: Vec<u64>,
    /// Values beyond 3σ and 6σ.
    beyond: [u64; 2],
    /// Per-chunk scratch: [`SPLIT`] interleaved sub-histograms of u32.
    scratch: Vec<u32>,
}

/// Sub-histograms per chunk: consecutive values usually fall in the same few bins, and
/// spreading their increments over separate counters avoids a store→load stall.
const SPLIT: usize = 4;

impl Tally {
    fn new(bins: usize) -> Tally {
        Tally {
            counts: vec![0; bins],
            beyond: [0; 2],
            scratch: vec![0; bins * SPLIT],
        }
    }
    /// Clear the per-chunk counters.
    fn start_chunk(&mut self) {
        self.scratch.iter_mut().for_each(|c| *c = 0);
    }

    /// Fold the per-chunk counters into the totals.
    fn end_chunk(&mut self, beyond: [u32; 2]) {
        let bins = self.counts.len();
        for s in 0..SPLIT {
            for (c, &n) in self
                .counts
                .iter_mut()
                .zip(&self.scratch[s * bins..(s + 1) * bins])
            {
                *c += u64::from(n);
            }
        }
        self.beyond[0] += u64::from(beyond[0]);
        self.beyond[1] += u64::from(beyond[1]);
    }

    fn merge(mut self, o: Tally) -> Tally {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.beyond[0] += o.beyond[0];
        self.beyond[1] += o.beyond[1];
        self
    }
}

/// Everything the second pass needs, fixed before it starts.
struct Binner {
    bins: usize,
    abs: bool,
    /// `first` and `bins / (last - first)` in f32, for the fast estimate.
    first: f32,
    scale: f32,
    /// `lower[i]`: smallest f32 in bin `i` (`lower[0] = -inf`), from numpy's f64 edges.
    lower: Vec<f32>,
    /// Outlier bounds: value `x` is beyond kσ when `x > hi[k]` or `x < lo[k]`.
    hi: [f32; 2],
    lo: [f32; 2],
}

/// The fast bin estimate is trusted only this far (in bins) from a bin edge; f32
/// rounding moves it by at most ~bins·2⁻²² ≪ this. Closer values take the exact path.
const EDGE_MARGIN: f32 = 1e-3;

impl Binner {
    fn new(first: f64, last: f64, bins: usize, range: HistogramRange, mean: f64, std: f64) -> Self {
        let edges = linspace_edges(first, last, bins);
        let mut lower: Vec<f32> = edges[..bins].iter().map(|&e| f32_at_or_above(e)).collect();
        lower[0] = f32::NEG_INFINITY;
        Binner {
            bins,
            abs: range == HistogramRange::Abs,
            first: first as f32,
            scale: (bins as f64 / (last - first)) as f32,
            lower,
            hi: [
                f32_at_or_below(mean + 3.0 * std),
                f32_at_or_below(mean + 6.0 * std),
            ],
            lo: [
                f32_at_or_above(mean - 3.0 * std),
                f32_at_or_above(mean - 6.0 * std),
            ],
        }
    }

    /// The exact bin of `v`, starting the search from the estimate `guess`.
    #[inline]
    fn exact_bin(&self, v: f32, guess: usize) -> usize {
        let mut i = guess.min(self.bins - 1);
        while i > 0 && v < self.lower[i] {
            i -= 1;
        }
        while i + 1 < self.bins && v >= self.lower[i + 1] {
            i += 1;
        }
        i
    }

    /// The bin of one value, or `None` for NaN/Inf (which are not binned).
    #[inline]
    fn bin_of(&self, x: f32) -> Option<usize> {
        if !x.is_finite() {
            return None;
        }
        let v = if self.abs { x.abs() } else { x };
        let f = (v - self.first) * self.scale;
        let guess = f as usize; // saturating: negatives become 0
        let frac = f - guess as f32;
        Some(
            if guess < self.bins && frac > EDGE_MARGIN && frac < 1.0 - EDGE_MARGIN {
                guess
            } else {
                self.exact_bin(v, guess)
            },
        )
    }

    /// Whether one value lies beyond 3σ and beyond 6σ (never for NaN/Inf).
    #[inline]
    fn beyond(&self, x: f32) -> [u32; 2] {
        let finite = x.is_finite();
        [0, 1].map(|k| u32::from(finite && (x > self.hi[k] || x < self.lo[k])))
    }

    fn tally(&self, xs: &[f32], t: &mut Tally) {
        #[cfg(target_arch = "x86_64")]
        if use_avx2() {
            // SAFETY: the CPU supports the features the AVX2 kernel is compiled for.
            unsafe { avx2::tally(self, xs, t) };
            return;
        }
        tally_kernel(self, xs, t);
    }
}

/// The second pass over one chunk, plain Rust (portable path and test reference).
fn tally_kernel(b: &Binner, xs: &[f32], t: &mut Tally) {
    t.start_chunk();
    let mut beyond = [0u32; 2];
    tally_values(b, xs, &mut t.scratch, &mut beyond);
    t.end_chunk(beyond);
}

/// Bin `xs` into the per-chunk sub-histograms and count their outliers, value by
/// value (the plain kernel, and the AVX2 kernel's tail).
fn tally_values(b: &Binner, xs: &[f32], scratch: &mut [u32], beyond: &mut [u32; 2]) {
    for (k, &x) in xs.iter().enumerate() {
        let [b3, b6] = b.beyond(x);
        beyond[0] += b3;
        beyond[1] += b6;
        if let Some(bin) = b.bin_of(x) {
            scratch[(k % SPLIT) * b.bins + bin] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn stats(xs: &[f32], bins: usize) -> TensorStats {
        compute(
            DType::F32,
            &f32_bytes(xs),
            xs.len() as u64,
            &StatsOptions {
                bins,
                range: HistogramRange::Signed,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn hand_derived_small_case() {
        // Values 0..=4: min 0, max 4, mean 2, population std sqrt(2), one zero.
        let s = stats(&[0.0, 1.0, 2.0, 3.0, 4.0], 4);
        assert_eq!((s.min, s.max, s.mean), (0.0, 4.0, 2.0));
        assert!((s.std - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(s.zeros, 1);
        // Edges 0,1,2,3,4; the last bin is closed: [0,1) [1,2) [2,3) [3,4].
        assert_eq!(s.histogram.map(|h| h.counts), Some(vec![1, 1, 1, 2]));
    }

    #[test]
    fn values_near_edges_fall_where_numpy_puts_them() {
        // np.histogram(np.float32([0.1, 0.2, 0.3]), bins=2) → [2, 1] (numpy 2.3.5): the
        // float64 middle edge is (0.1f + 0.3f)/2 = 0.2000000067…, above 0.2f = 0.2000000030….
        let s = stats(&[0.1, 0.2, 0.3], 2);
        assert_eq!(s.histogram.map(|h| h.counts), Some(vec![2, 1]));
    }

    #[test]
    fn constant_tensor_lands_in_the_middle_bin() {
        // numpy widens (1, 1) to (0.5, 1.5): ten bins, the value sits on edge 5.
        let s = stats(&[1.0; 7], 10);
        let h = s.histogram.unwrap_or_else(|| panic!("no histogram"));
        assert_eq!(h.counts[5], 7);
        assert_eq!((h.min, h.max), (0.5, 1.5));
        assert_eq!(s.std, 0.0);
    }

    #[test]
    fn non_finite_values_are_counted_apart() {
        let s = stats(&[1.0, f32::NAN, -2.0, f32::INFINITY, f32::NEG_INFINITY], 8);
        assert_eq!((s.nan, s.inf, s.count), (1, 2, 5));
        assert_eq!((s.min, s.max, s.mean), (-2.0, 1.0, -0.5));
        assert_eq!(s.histogram.map(|h| h.total()), Some(2));
    }

    #[test]
    fn empty_and_all_nan_tensors_have_no_histogram() {
        let s = stats(&[], 8);
        assert_eq!(s.count, 0);
        assert!(s.histogram.is_none() && s.mean.is_nan());
        let s = stats(&[f32::NAN; 3], 8);
        assert!(s.histogram.is_none() && s.min.is_nan());
    }

    #[test]
    fn bad_settings_are_errors() {
        let bytes = f32_bytes(&[1.0]);
        let zero = StatsOptions {
            bins: 0,
            range: HistogramRange::Signed,
        };
        assert_eq!(
            compute(DType::F32, &bytes, 1, &zero),
            Err(StatsError::BadBins(0))
        );
        assert!(matches!(
            compute(DType::F32, &bytes, 2, &StatsOptions::default()),
            Err(StatsError::SizeMismatch { .. })
        ));
    }
}
