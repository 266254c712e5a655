//! AVX2 + FMA versions of the two statistics passes, selected at run time.
//!
//! They compute exactly what the plain kernels in `mod.rs` compute (the tests below
//! check one against the other): the same f32 min/max, float64 sums (one FMA rounding
//! for Σx² instead of two: differences of a few ulps), the same counts, and the same
//! bins — lanes whose fast bin estimate is too close to an edge, or whose value is not
//! finite, fall back to the scalar code per value.

use std::arch::x86_64::*;

use super::{Binner, Moments, SPLIT, Tally, add_finite, moments_slow, tally_values};
use crate::stats::EDGE_MARGIN;

/// Horizontal sum of 8 i32 lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum_epi32(v: __m256i) -> u64 {
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` is 32 writable bytes; storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
    lanes.iter().map(|&l| u64::from(l as u32)).sum()
}

/// Horizontal sum of two 4-lane f64 accumulators.
#[target_feature(enable = "avx2,fma")]
fn hsum_pd(a: __m256d, b: __m256d) -> f64 {
    let mut lanes = [0f64; 4];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(a, b)) };
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// First pass over one chunk (at most `super::CHUNK` values, so i32 lane counts fit).
#[target_feature(enable = "avx2,fma")]
pub(super) fn moments(xs: &[f32]) -> Moments {
    let body = xs.len() / 8 * 8;
    let mut vmin = _mm256_set1_ps(f32::INFINITY);
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    let zero = _mm256_setzero_pd();
    let (mut s0, mut s1, mut q0, mut q1, mut a0, mut a1) = (zero, zero, zero, zero, zero, zero);
    let mut zeros = _mm256_setzero_si256();
    let mut non_finite = _mm256_setzero_si256();
    let exponent = _mm256_set1_epi32(0x7f80_0000);
    let abs_pd = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fff_ffff_ffff_ffff));
    let zero_ps = _mm256_setzero_ps();
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= body <= xs.len().
        let x = unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) };
        vmin = _mm256_min_ps(vmin, x);
        vmax = _mm256_max_ps(vmax, x);
        let e = _mm256_and_si256(_mm256_castps_si256(x), exponent);
        non_finite = _mm256_sub_epi32(non_finite, _mm256_cmpeq_epi32(e, exponent));
        let is_zero = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(x, zero_ps));
        zeros = _mm256_sub_epi32(zeros, is_zero);
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x));
        s0 = _mm256_add_pd(s0, lo);
        s1 = _mm256_add_pd(s1, hi);
        q0 = _mm256_fmadd_pd(lo, lo, q0);
        q1 = _mm256_fmadd_pd(hi, hi, q1);
        a0 = _mm256_add_pd(a0, _mm256_and_pd(lo, abs_pd));
        a1 = _mm256_add_pd(a1, _mm256_and_pd(hi, abs_pd));
        i += 8;
    }
    let tail = &xs[body..];
    if hsum_epi32(non_finite) > 0 || tail.iter().any(|x| !x.is_finite()) {
        return moments_slow(xs);
    }
    let mut lanes = [0f32; 8];
    let mut m = Moments {
        count: xs.len() as u64,
        ..Moments::default()
    };
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmin) };
    m.min = lanes.iter().copied().fold(f32::INFINITY, f32::min);
    // SAFETY: as above.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
    m.max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m.sum = hsum_pd(s0, s1);
    m.sum_sq = hsum_pd(q0, q1);
    m.sum_abs = hsum_pd(a0, a1);
    m.zeros = hsum_epi32(zeros);
    for &x in tail {
        add_finite(&mut m, x);
    }
    m
}

/// Second pass over one chunk: histogram bins and σ-outlier counts.
#[target_feature(enable = "avx2,fma")]
pub(super) fn tally(b: &Binner, xs: &[f32], t: &mut Tally) {
    t.start_chunk();
    let bins = b.bins;
    let body = xs.len() / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    let first = _mm256_set1_ps(b.first);
    let scale = _mm256_set1_ps(b.scale);
    let margin_lo = _mm256_set1_ps(EDGE_MARGIN);
    let margin_hi = _mm256_set1_ps(1.0 - EDGE_MARGIN);
    let infinity = _mm256_set1_ps(f32::INFINITY);
    let minus_one = _mm256_set1_epi32(-1);
    let bins_v = _mm256_set1_epi32(bins as i32);
    let (hi3, lo3) = (_mm256_set1_ps(b.hi[0]), _mm256_set1_ps(b.lo[0]));
    let (hi6, lo6) = (_mm256_set1_ps(b.hi[1]), _mm256_set1_ps(b.lo[1]));
    let mut beyond3 = _mm256_setzero_si256();
    let mut beyond6 = _mm256_setzero_si256();
    let mut guess = [0i32; 8];
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= body <= xs.len().
        let x = unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) };
        let magnitude = _mm256_andnot_ps(sign, x);
        let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(magnitude, infinity);
        let out3 = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi3),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo3),
        );
        let out6 = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, hi6),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo6),
        );
        beyond3 = _mm256_sub_epi32(beyond3, _mm256_castps_si256(_mm256_and_ps(finite, out3)));
        beyond6 = _mm256_sub_epi32(beyond6, _mm256_castps_si256(_mm256_and_ps(finite, out6)));
        let v = if b.abs { magnitude } else { x };
        let f = _mm256_mul_ps(_mm256_sub_ps(v, first), scale);
        // Truncation toward zero; NaN and out-of-range give i32::MIN (rejected below).
        let g = _mm256_cvttps_epi32(f);
        let frac = _mm256_sub_ps(f, _mm256_cvtepi32_ps(g));
        let in_range = _mm256_and_si256(
            _mm256_cmpgt_epi32(g, minus_one),
            _mm256_cmpgt_epi32(bins_v, g),
        );
        let off_edge = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(frac, margin_lo),
            _mm256_cmp_ps::<_CMP_LT_OQ>(frac, margin_hi),
        );
        let ok = _mm256_and_ps(
            _mm256_castsi256_ps(in_range),
            _mm256_and_ps(off_edge, finite),
        );
        let mask = _mm256_movemask_ps(ok);
        // SAFETY: `guess` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(guess.as_mut_ptr().cast(), g) };
        if mask == 0xff {
            for (j, &g) in guess.iter().enumerate() {
                t.scratch[(j % SPLIT) * bins + g as usize] += 1;
            }
        } else {
            for (j, &x) in xs[i..i + 8].iter().enumerate() {
                let bin = if mask & (1 << j) != 0 {
                    Some(guess[j] as usize)
                } else {
                    b.bin_of(x)
                };
                if let Some(bin) = bin {
                    t.scratch[(j % SPLIT) * bins + bin] += 1;
                }
            }
        }
        i += 8;
    }
    let mut beyond = [hsum_epi32(beyond3) as u32, hsum_epi32(beyond6) as u32];
    tally_values(b, &xs[body..], &mut t.scratch, &mut beyond);
    t.end_chunk(beyond);
}

#[cfg(test)]
mod tests {
    use super::super::{HistogramRange, Tally, moments_kernel, tally_kernel};
    use super::*;

    fn data() -> Vec<f32> {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut xs: Vec<f32> = (0..10_007)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect();
        xs[3] = 0.0;
        xs[100] = -0.0;
        xs
    }

    #[test]
    fn avx2_moments_match_the_plain_kernel() {
        if !super::super::use_avx2() {
            return;
        }
        let mut xs = data();
        for _ in 0..2 {
            // SAFETY: checked above that the CPU has AVX2 and FMA.
            let fast = unsafe { moments(&xs) };
            let plain = moments_kernel(&xs);
            assert_eq!(
                (fast.count, fast.nan, fast.inf, fast.zeros),
                (plain.count, plain.nan, plain.inf, plain.zeros)
            );
            assert_eq!((fast.min, fast.max), (plain.min, plain.max));
            for (a, b) in [
                (fast.sum, plain.sum),
                (fast.sum_sq, plain.sum_sq),
                (fast.sum_abs, plain.sum_abs),
            ] {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
            }
            xs[17] = f32::NAN; // second round: the non-finite fallback
            xs[9000] = f32::NEG_INFINITY;
        }
    }

    #[test]
    fn avx2_tally_matches_the_plain_kernel() {
        if !super::super::use_avx2() {
            return;
        }
        let mut xs = data();
        xs[50] = f32::INFINITY;
        xs[51] = f32::NAN;
        let m = moments_kernel(&xs);
        let (n, mean) = (m.finite() as f64, m.sum / m.finite() as f64);
        let std = (m.sum_sq / n - mean * mean).sqrt();
        // Values exactly on edges exercise the exact fallback.
        let (lo, hi) = (f64::from(m.min), f64::from(m.max));
        for k in 0..64 {
            xs[200 + k] = (lo + (hi - lo) * k as f64 / 64.0) as f32;
        }
        for (bins, range) in [
            (256, HistogramRange::Signed),
            (64, HistogramRange::Signed),
            (100, HistogramRange::Abs),
        ] {
            let (first, last) = if range == HistogramRange::Abs {
                (0.0, lo.abs().max(hi.abs()))
            } else {
                (lo, hi)
            };
            let b = Binner::new(first, last, bins, range, mean, std);
            let (mut fast, mut plain) = (Tally::new(bins), Tally::new(bins));
            // SAFETY: checked above that the CPU has AVX2 and FMA.
            unsafe { tally(&b, &xs, &mut fast) };
            tally_kernel(&b, &xs, &mut plain);
            assert_eq!(fast.counts, plain.counts, "{bins} {range:?}");
            assert_eq!(fast.beyond, plain.beyond);
        }
    }
}
