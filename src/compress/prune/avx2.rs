//! AVX2 versions of the two passes of the sampled magnitude select ([`super::Window`]),
//! eight keys per instruction: counts and mask bits come from compares and
//! `movemask`; only lanes inside the (narrow) window fall to scalar code. They
//! compute exactly what the plain versions compute (tested below).

use std::arch::x86_64::*;

use super::{Window, key};

/// Keys (|x| bit patterns) of 8 values at `p`.
///
/// # Safety
/// `p` must point to 8 readable floats and the CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn keys(p: *const f32) -> __m256i {
    // SAFETY: the caller guarantees 8 readable floats; loadu needs no alignment.
    let v = unsafe { _mm256_loadu_si256(p.cast()) };
    _mm256_and_si256(v, _mm256_set1_epi32(0x7fff_ffff))
}

/// Lanes whose `key − lo` (wrapping) is at most `width`, as a bit mask.
#[inline]
#[target_feature(enable = "avx2")]
fn inside(k: __m256i, lo: __m256i, width: __m256i) -> u32 {
    let d = _mm256_sub_epi32(k, lo);
    let ok = _mm256_cmpeq_epi32(_mm256_min_epu32(d, width), d);
    _mm256_movemask_ps(_mm256_castsi256_ps(ok)) as u32
}

/// [`Window::count_plain`], 8 lanes at a time.
#[target_feature(enable = "avx2")]
pub fn count(w: &Window, values: &[f32], hist: &mut [u32]) -> u64 {
    let (lo, width) = (
        _mm256_set1_epi32(w.lo as i32),
        _mm256_set1_epi32(w.width as i32),
    );
    let mut below = _mm256_setzero_si256();
    let body = values.len() / 8 * 8;
    for (c, group) in values[..body].chunks_exact(8).enumerate() {
        // SAFETY: `group` holds 8 floats.
        let k = unsafe { keys(group.as_ptr()) };
        // Keys are < 2³¹, so the signed compare orders them correctly.
        below = _mm256_sub_epi32(below, _mm256_cmpgt_epi32(lo, k));
        let mut hits = inside(k, lo, width);
        while hits != 0 {
            let j = hits.trailing_zeros() as usize;
            let d = key(values[c * 8 + j]).wrapping_sub(w.lo);
            hist[(d >> w.shift) as usize] += 1;
            hits &= hits - 1;
        }
    }
    let mut lanes = [0u32; 8];
    // SAFETY: `lanes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), below) };
    lanes.iter().map(|&l| u64::from(l)).sum::<u64>() + w.count_plain(&values[body..], hist)
}

/// [`Window::mask_plain`], one 64-bit mask word from 8 compares.
#[target_feature(enable = "avx2")]
pub fn mask(
    w: &Window,
    values: &[f32],
    words: &mut [u64],
    offset: usize,
    found: &mut Vec<(u32, usize)>,
) {
    let (lo, width) = (
        _mm256_set1_epi32(w.lo as i32),
        _mm256_set1_epi32(w.width as i32),
    );
    let whole = values.len() / 64;
    for (n, word) in words[..whole].iter_mut().enumerate() {
        let mut keep = 0u64;
        for g in 0..8 {
            let at = n * 64 + g * 8;
            // SAFETY: word n covers values n·64 .. n·64 + 64, all inside `values`.
            let k = unsafe { keys(values.as_ptr().add(at)) };
            let pruned = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(lo, k))) as u64;
            keep |= (!pruned & 0xff) << (g * 8);
            let mut hits = inside(k, lo, width);
            while hits != 0 {
                let j = at + hits.trailing_zeros() as usize;
                found.push((key(values[j]), offset + j));
                hits &= hits - 1;
            }
        }
        *word = keep;
    }
    w.mask_plain(
        &values[whole * 64..],
        &mut words[whole..],
        offset + whole * 64,
        found,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_passes_equal_plain_passes() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut values: Vec<f32> = (0..10_007)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect();
        values[3] = f32::NAN;
        values[64] = 0.0;
        values[65] = -0.0;
        values[100] = f32::INFINITY;
        let sorted = {
            let mut k: Vec<u32> = values.iter().map(|&x| key(x)).collect();
            k.sort_unstable();
            k
        };
        for (a, b, shift) in [(0, 10_006, 3), (2_000, 2_100, 0), (5_000, 9_000, 1)] {
            let w = Window {
                lo: sorted[a],
                width: sorted[b] - sorted[a],
                shift,
            };
            let buckets = (w.width >> shift) as usize + 1;
            let (mut h1, mut h2) = (vec![0u32; buckets], vec![0u32; buckets]);
            // SAFETY: AVX2 is available (checked above).
            let fast = unsafe { count(&w, &values, &mut h1) };
            assert_eq!(fast, w.count_plain(&values, &mut h2));
            assert_eq!(h1, h2);
            let words = values.len().div_ceil(64);
            let (mut m1, mut m2) = (vec![0u64; words], vec![0u64; words]);
            let (mut f1, mut f2) = (Vec::new(), Vec::new());
            // SAFETY: as above.
            unsafe { mask(&w, &values, &mut m1, 7, &mut f1) };
            w.mask_plain(&values, &mut m2, 7, &mut f2);
            assert_eq!(m1, m2);
            assert_eq!(f1, f2);
        }
    }
}
