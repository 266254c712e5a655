//! AVX2 versions of the Q8_0 and Q4_0 block quantizers, selected at run time. They
//! produce exactly the bytes of the plain code in `mod.rs` (the tests below compare
//! them on awkward and random blocks; the integration tests compare both with
//! gguf-py):
//! - max |x| is an integer max over the sign-cleared bit patterns (ordered like the
//!   values for non-negative floats), NaN lanes masked to 0 as `f32::max` ignores NaN;
//! - Q4_0's signed extreme is the first lane whose |x| equals that max;
//! - `round` (half away from zero) is `trunc(y + copysign(0.49999997, y))`, exactly
//!   as LLVM lowers it, and the float→int conversion is x86's `cvttps2dq`, which is
//!   what C's cast compiles to (NaN and overflow give `0x8000_0000`), keeping the
//!   low byte.

use std::arch::x86_64::*;

use half::f16;

use super::{BLOCK, inverse};

/// The four 8-lane vectors of one 32-value block.
#[inline]
#[target_feature(enable = "avx2")]
fn load(x: &[f32]) -> [__m256; 4] {
    assert!(x.len() >= BLOCK);
    let p = x.as_ptr();
    // SAFETY: `x` holds at least 32 floats (checked above); loadu needs no alignment.
    unsafe {
        [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ]
    }
}

/// |x| bit patterns with NaN lanes set to 0.
#[inline]
#[target_feature(enable = "avx2")]
fn abs_bits(v: __m256) -> __m256i {
    let b = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(b, _mm256_set1_epi32(0x7f80_0000));
    _mm256_andnot_si256(nan, b)
}

/// The largest |x| bit pattern of the block, broadcast, and the four |x| vectors.
#[inline]
#[target_feature(enable = "avx2")]
fn absmax_bits(v: &[__m256; 4]) -> ([__m256i; 4], u32) {
    let a = [
        abs_bits(v[0]),
        abs_bits(v[1]),
        abs_bits(v[2]),
        abs_bits(v[3]),
    ];
    let m = _mm256_max_epu32(_mm256_max_epu32(a[0], a[1]), _mm256_max_epu32(a[2], a[3]));
    let m = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    (a, _mm_cvtsi128_si32(m) as u32)
}

/// `f32::round` of every lane (half away from zero).
#[inline]
#[target_feature(enable = "avx2")]
fn round_half_away(y: __m256) -> __m256 {
    let sign = _mm256_and_ps(y, _mm256_set1_ps(-0.0));
    let half = _mm256_or_ps(_mm256_set1_ps(0.499_999_97), sign);
    _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_add_ps(y, half))
}

/// The low bytes of C's `(int)` of 8 lanes, in order.
#[inline]
#[target_feature(enable = "avx2")]
fn low_bytes(y: __m256) -> __m128i {
    let i = _mm256_cvttps_epi32(y);
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let b = _mm256_shuffle_epi8(i, pick);
    _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b))
}

/// Two 8-byte halves into one 16-byte vector.
#[inline]
#[target_feature(enable = "avx2")]
fn join(lo: __m128i, hi: __m128i) -> __m128i {
    _mm_unpacklo_epi64(lo, hi)
}

/// Q8_0: `d = amax/127`, `q = round(x/d)`; 2 + 32 bytes.
#[target_feature(enable = "avx2")]
pub fn q8_0(x: &[f32], out: &mut [u8]) {
    assert!(out.len() >= 2 + BLOCK);
    let v = load(x);
    let (_, amax) = absmax_bits(&v);
    let d = f32::from_bits(amax) / 127.0;
    let id = _mm256_set1_ps(inverse(d));
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let q = |k: usize| low_bytes(round_half_away(_mm256_mul_ps(v[k], id)));
    let (a, b) = (join(q(0), q(1)), join(q(2), q(3)));
    // SAFETY: `out` has 34 bytes (checked above); storeu needs no alignment.
    unsafe {
        _mm_storeu_si128(out.as_mut_ptr().add(2).cast(), a);
        _mm_storeu_si128(out.as_mut_ptr().add(18).cast(), b);
    }
}

/// Q4_0: `d = max/-8` (the signed extreme, first wins), `q = min(15, trunc(x/d + 8.5))`,
/// value j in the low nibble of byte j and value j + 16 in its high nibble; 2 + 16 bytes.
#[target_feature(enable = "avx2")]
pub fn q4_0(x: &[f32], out: &mut [u8]) {
    assert!(out.len() >= 2 + BLOCK / 2);
    let v = load(x);
    let (a, amax) = absmax_bits(&v);
    let max = if amax == 0 {
        0.0
    } else {
        let target = _mm256_set1_epi32(amax as i32);
        let hits = |k: usize| {
            _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(a[k], target))) as u32
        };
        let mask = hits(0) | hits(1) << 8 | hits(2) << 16 | hits(3) << 24;
        x[mask.trailing_zeros() as usize]
    };
    let d = max / -8.0;
    let id = _mm256_set1_ps(inverse(d));
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let bias = _mm256_set1_ps(8.5);
    let q = |k: usize| low_bytes(_mm256_add_ps(_mm256_mul_ps(v[k], id), bias));
    let fifteen = _mm_set1_epi8(15);
    let lo = _mm_min_epu8(join(q(0), q(1)), fifteen);
    let hi = _mm_min_epu8(join(q(2), q(3)), fifteen);
    let packed = _mm_or_si128(lo, _mm_slli_epi16::<4>(hi));
    // SAFETY: `out` has 18 bytes (checked above).
    unsafe { _mm_storeu_si128(out.as_mut_ptr().add(2).cast(), packed) };
}

#[cfg(test)]
mod tests {
    /// Awkward blocks (zeros, -0, ties of |max| with either sign first, NaN, ±∞,
    /// subnormals whose 1/d overflows, halves that round away from zero) and random
    /// ones: the AVX2 bytes equal the plain bytes.
    #[test]
    fn avx2_blocks_equal_plain_blocks() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        let mut blocks: Vec<[f32; 32]> = vec![[0.0; 32], [-0.0; 32], [0.125; 32]];
        let mut tie = [0.01f32; 32];
        tie[3] = -0.5;
        tie[20] = 0.5;
        blocks.push(tie);
        tie[3] = 0.5;
        tie[20] = -0.5;
        blocks.push(tie);
        let mut odd = [0.0f32; 32];
        odd[0] = f32::NAN;
        odd[1] = 1.0;
        odd[2] = -3.0;
        blocks.push(odd);
        let mut inf = [0.5f32; 32];
        inf[7] = f32::INFINITY;
        inf[9] = f32::NEG_INFINITY;
        blocks.push(inf);
        blocks.push(std::array::from_fn(|i| 1e-40 * i as f32));
        blocks.push(std::array::from_fn(|i| (i as f32 - 15.5) * 127.0 / 15.5));
        blocks.push(std::array::from_fn(|i| (i as f32 - 16.0) / 2.0));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            blocks.push(std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            }));
        }
        for (b, x) in blocks.iter().enumerate() {
            let (mut plain, mut fast) = ([0u8; 34], [0u8; 34]);
            super::super::q8_0_plain(x, &mut plain);
            // SAFETY: AVX2 is available (checked above).
            unsafe { super::q8_0(x, &mut fast) };
            assert_eq!(plain, fast, "Q8_0 block {b}: {x:?}");
            let (mut plain, mut fast) = ([0u8; 18], [0u8; 18]);
            super::super::q4_0_plain(x, &mut plain);
            // SAFETY: as above.
            unsafe { super::q4_0(x, &mut fast) };
            assert_eq!(plain, fast, "Q4_0 block {b}: {x:?}");
        }
    }
}
