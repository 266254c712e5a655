//! llama.cpp's reference block quantizers for Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 —
//! byte for byte what `llama-quantize` writes without an importance matrix
//! (ggml-quants.c `quantize_row_*_ref`, mirrored by gguf-py's `gguf.quants`, which the
//! tests compare against) — and the entry point for the K-quants of
//! [`super::k_quants`]. Dequantization is [`crate::dtype::decode`].
//!
//! The arithmetic is float32 exactly as in C: the scale from the block's extreme
//! value, `id = 1/d` (0 when d is 0), and float→int conversions that truncate. C
//! converts through x86's `cvttss2si`, which turns NaN and out-of-range values
//! (e.g. `0·∞` in a block of subnormals whose `1/d` overflows) into `0x8000_0000`
//! and keeps the low byte; [`c_cast_low_byte`] reproduces that, where Rust's `as`
//! would saturate instead.

use half::f16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

use super::k_quants;
use crate::dtype::GgmlQuant;

/// Values per block of the legacy types (Q8_0 … Q5_1).
pub const BLOCK: usize = 32;
/// Values per parallel work item (8 KiB of f32 input).
const VALUES_PER_TASK: usize = 2048;

/// Why a quantization request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "{0} quantization is not implemented (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K are)"
    )]
    Unsupported(&'static str),
    #[error("{len} values are not a whole number of {block}-value blocks")]
    NotWholeBlocks { len: usize, block: usize },
}

/// Whether [`quantize`] supports `q`.
pub fn supports(q: GgmlQuant) -> bool {
    matches!(
        q,
        GgmlQuant::Q8_0
            | GgmlQuant::Q4_0
            | GgmlQuant::Q4_1
            | GgmlQuant::Q5_0
            | GgmlQuant::Q5_1
            | GgmlQuant::Q2_K
            | GgmlQuant::Q3_K
            | GgmlQuant::Q4_K
            | GgmlQuant::Q5_K
            | GgmlQuant::Q6_K
    )
}

/// Quantize `xs` into ggml blocks of type `q`, on all cores. Deterministic: the
/// bytes do not depend on the thread count.
pub fn quantize(q: GgmlQuant, xs: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    let block = q.block_len() as usize;
    let mut out = vec![0u8; xs.len() / block * q.block_bytes() as usize];
    quantize_into(q, xs, &mut out)?;
    Ok(out)
}

/// [`quantize`] into a caller's buffer of exactly `xs.len() / block_len · block_bytes`
/// bytes (hot loops reuse one buffer instead of paying fresh page faults).
pub fn quantize_into(q: GgmlQuant, xs: &[f32], out: &mut [u8]) -> Result<(), QuantizeError> {
    if !supports(q) {
        return Err(QuantizeError::Unsupported(q.name()));
    }
    let block = q.block_len() as usize;
    if !xs.len().is_multiple_of(block) {
        return Err(QuantizeError::NotWholeBlocks {
            len: xs.len(),
            block,
        });
    }
    let block_bytes = q.block_bytes() as usize;
    assert_eq!(
        out.len(),
        xs.len() / block * block_bytes,
        "output buffer of the wrong length"
    );
    let blocks_per_task = VALUES_PER_TASK / block;
    out.par_chunks_mut(block_bytes * blocks_per_task)
        .zip(xs.par_chunks(block * blocks_per_task))
        .for_each(|(out, xs)| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2.
                return unsafe { blocks_avx2(q, xs, out) };
            }
            blocks(q, xs, out);
        });
    Ok(())
}

/// The block loop compiled for AVX2: the same IEEE arithmetic (bytes are identical),
/// but `round`/`trunc` become single instructions instead of libm calls and the
/// per-block loops vectorize.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn blocks_avx2(q: GgmlQuant, xs: &[f32], out: &mut [u8]) {
    let (len, bytes) = (q.block_len() as usize, q.block_bytes() as usize);
    let each = |f: fn(&[f32], &mut [u8]), xs: &[f32], out: &mut [u8]| {
        for (o, x) in out.chunks_exact_mut(bytes).zip(xs.chunks_exact(len)) {
            f(x, o);
        }
    };
    match q {
        // Safe to call: this function only runs where AVX2 is present.
        GgmlQuant::Q8_0 => each(|x, o| avx2::q8_0(x, o), xs, out),
        GgmlQuant::Q4_0 => each(|x, o| avx2::q4_0(x, o), xs, out),
        _ => blocks(q, xs, out),
    }
}

#[inline(always)]
fn blocks(q: GgmlQuant, xs: &[f32], out: &mut [u8]) {
    let (len, bytes) = (q.block_len() as usize, q.block_bytes() as usize);
    // A direct call per arm (no fn pointer, no closure shim), so each quantizer is
    // inlined into the AVX2 copy of this loop.
    macro_rules! each {
        ($f:path) => {
            for (o, x) in out.chunks_exact_mut(bytes).zip(xs.chunks_exact(len)) {
                $f(x, o);
            }
        };
    }
    match q {
        GgmlQuant::Q8_0 => each!(q8_0_plain),
        GgmlQuant::Q4_0 => each!(q4_0_plain),
        GgmlQuant::Q4_1 => each!(q4_1),
        GgmlQuant::Q5_0 => each!(q5_0),
        GgmlQuant::Q5_1 => each!(q5_1),
        GgmlQuant::Q2_K => each!(k_quants::q2_k),
        GgmlQuant::Q3_K => each!(k_quants::q3_k),
        GgmlQuant::Q4_K => each!(k_quants::q4_k),
        GgmlQuant::Q5_K => each!(k_quants::q5_k),
        _ => each!(k_quants::q6_k),
    }
}

/// `(int)v` as C compiles it on x86 (`cvttss2si`: truncation; NaN and values outside
/// the i32 range become `i32::MIN`), then the low byte — what `(int8_t)v`, `(uint8_t)v`
/// and numpy's `astype(np.uint8)` store.
#[inline]
pub fn c_cast_low_byte(v: f32) -> u8 {
    // Rust's `as` saturates (NaN → 0, which has the same low byte as i32::MIN); only
    // values ≥ 2³¹ need fixing. Branch-free, so block loops vectorize.
    let i = v as i32;
    (if v >= 2_147_483_648.0 { i32::MIN } else { i }) as u8
}

/// The value of largest magnitude, keeping its sign; the first one wins ties.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// Q8_0: `d = amax/127`, `q = round(x/d)` (half away from zero). 2 + 32 bytes.
#[inline(always)]
fn q8_0_plain(x: &[f32], out: &mut [u8]) {
    // max |v| ignoring NaN, over the bit patterns (ordered like the values for
    // non-negative floats): an integer max, which vectorizes.
    let amax = f32::from_bits(x.iter().fold(0u32, |m, v| {
        let b = v.to_bits() & 0x7fff_ffff;
        m.max(if b > 0x7f80_0000 { 0 } else { b })
    }));
    let d = amax / 127.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = c_cast_low_byte((v * id).round());
    }
}

/// Q4_0: `d = max/-8` with `max` the signed extreme, `q = min(15, trunc(x/d + 8.5))`;
/// value `j` in the low nibble of byte `j`, value `j + 16` in its high nibble.
#[inline(always)]
fn q4_0_plain(x: &[f32], out: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..BLOCK / 2 {
        let lo = c_cast_low_byte(x[j] * id + 8.5).min(15);
        let hi = c_cast_low_byte(x[j + BLOCK / 2] * id + 8.5).min(15);
        out[2 + j] = lo | (hi << 4);
    }
}

/// Q4_1: `d = (max − min)/15`, `m = min`, `q = min(15, trunc((x − min)/d + 0.5))`.
#[inline(always)]
fn q4_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    out[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
    for j in 0..BLOCK / 2 {
        let lo = c_cast_low_byte((x[j] - min) * id + 0.5).min(15);
        let hi = c_cast_low_byte((x[j + BLOCK / 2] - min) * id + 0.5).min(15);
        out[4 + j] = lo | (hi << 4);
    }
}

/// Five-bit packing shared by Q5_0/Q5_1: low nibbles as in Q4, the fifth bits of all
/// 32 values in a little-endian u32 `qh` (bit j for value j).
#[inline(always)]
pub(in crate::compress) fn pack5(q: &[u8; BLOCK], qh: &mut [u8], qs: &mut [u8]) {
    let mut bits = 0u32;
    for (j, &v) in q.iter().enumerate() {
        bits |= u32::from((v >> 4) & 1) << j;
    }
    qh.copy_from_slice(&bits.to_le_bytes());
    for j in 0..BLOCK / 2 {
        qs[j] = (q[j] & 0x0f) | ((q[j + BLOCK / 2] & 0x0f) << 4);
    }
}

/// Q5_0: `d = max/-16`, `q = min(31, trunc(x/d + 16.5))`. 2 + 4 + 16 bytes.
#[inline(always)]
fn q5_0(x: &[f32], out: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let q: [u8; BLOCK] = std::array::from_fn(|j| c_cast_low_byte(x[j] * id + 16.5).min(31));
    let (qh, qs) = out[2..].split_at_mut(4);
    pack5(&q, qh, qs);
}

/// Q5_1: `d = (max − min)/31`, `m = min`, `q = min(31, trunc((x − min)/d + 0.5))`.
#[inline(always)]
fn q5_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    out[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
    let q: [u8; BLOCK] = std::array::from_fn(|j| c_cast_low_byte((x[j] - min) * id + 0.5).min(31));
    let (qh, qs) = out[4..].split_at_mut(4);
    pack5(&q, qh, qs);
}

/// Whether GPTQ can quantize onto type `t`'s blocks ([`BlockFit`]): the legacy types
/// of one scale (and minimum) per 32 values.
pub fn fits_with_gptq(t: GgmlQuant) -> bool {
    matches!(
        t,
        GgmlQuant::Q8_0 | GgmlQuant::Q4_0 | GgmlQuant::Q4_1 | GgmlQuant::Q5_0 | GgmlQuant::Q5_1
    )
}

/// One block's grid as ggml's reference quantizer fits it to 32 values (`d` and, for
/// Q4_1/Q5_1, `min`, before float16), for rounding values one at a time as GPTQ does:
/// [`BlockFit::code`] rounds as ggml does, clamped to the type's codes (GPTQ's
/// updated weights may fall outside the block's first range), and
/// [`BlockFit::value`] decodes as ggml does, from the float16 `d` and `min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockFit {
    pub t: GgmlQuant,
    pub d: f32,
    pub min: f32,
    id: f32,
    d16: f32,
    m16: f32,
}

impl BlockFit {
    pub fn of(t: GgmlQuant, x: &[f32]) -> BlockFit {
        let (d, min) = match t {
            GgmlQuant::Q8_0 => (x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0, 0.0),
            GgmlQuant::Q4_0 => (signed_absmax(x) / -8.0, 0.0),
            GgmlQuant::Q5_0 => (signed_absmax(x) / -16.0, 0.0),
            GgmlQuant::Q4_1 => {
                let (min, max) = min_max(x);
                ((max - min) / 15.0, min)
            }
            _ => {
                let (min, max) = min_max(x);
                ((max - min) / 31.0, min)
            }
        };
        BlockFit::refit(t, d, min)
    }

    /// The fit of a block whose `d` and `min` (before float16) are known.
    pub fn refit(t: GgmlQuant, d: f32, min: f32) -> BlockFit {
        BlockFit {
            t,
            d,
            min,
            id: inverse(d),
            d16: f16::from_f32(d).to_f32(),
            m16: f16::from_f32(min).to_f32(),
        }
    }

    /// The code of a value this block decodes to (`value(code_of(value(c))) ==
    /// value(c)`): the packer's way back from GPTQ's values to its codes.
    pub fn code_of(&self, value: f32) -> u8 {
        let step = if self.d16 != 0.0 { 1.0 / self.d16 } else { 0.0 };
        let (c, top) = match self.t {
            GgmlQuant::Q8_0 => return ((value * step).round().clamp(-127.0, 127.0) as i8) as u8,
            GgmlQuant::Q4_0 => (value * step + 8.0, 15.0),
            GgmlQuant::Q5_0 => (value * step + 16.0, 31.0),
            GgmlQuant::Q4_1 => ((value - self.m16) * step, 15.0),
            _ => ((value - self.m16) * step, 31.0),
        };
        c.round().clamp(0.0, top) as u8
    }

    /// The code ggml gives `x` in this block.
    pub fn code(&self, x: f32) -> u8 {
        let (shifted, top) = match self.t {
            GgmlQuant::Q8_0 => return ((x * self.id).round().clamp(-127.0, 127.0) as i8) as u8,
            GgmlQuant::Q4_0 => (x * self.id + 8.5, 15.0),
            GgmlQuant::Q5_0 => (x * self.id + 16.5, 31.0),
            GgmlQuant::Q4_1 => ((x - self.min) * self.id + 0.5, 15.0),
            _ => ((x - self.min) * self.id + 0.5, 31.0),
        };
        // NaN lands on 0, as ggml's C cast of it does.
        shifted.clamp(0.0, top) as u8
    }

    /// What `code` decodes to.
    pub fn value(&self, code: u8) -> f32 {
        match self.t {
            GgmlQuant::Q8_0 => f32::from(code as i8) * self.d16,
            GgmlQuant::Q4_0 => (f32::from(code) - 8.0) * self.d16,
            GgmlQuant::Q5_0 => (f32::from(code) - 16.0) * self.d16,
            _ => f32::from(code) * self.d16 + self.m16,
        }
    }

    /// The block's bytes for the 32 `codes`.
    pub fn pack(&self, codes: &[u8; BLOCK], out: &mut [u8]) {
        out[..2].copy_from_slice(&f16::from_f32(self.d).to_le_bytes());
        let rest = match self.t {
            GgmlQuant::Q8_0 => {
                out[2..2 + BLOCK].copy_from_slice(codes);
                return;
            }
            GgmlQuant::Q4_0 | GgmlQuant::Q5_0 => &mut out[2..],
            _ => {
                out[2..4].copy_from_slice(&f16::from_f32(self.min).to_le_bytes());
                &mut out[4..]
            }
        };
        if matches!(self.t, GgmlQuant::Q4_0 | GgmlQuant::Q4_1) {
            for j in 0..BLOCK / 2 {
                rest[j] = codes[j] | (codes[j + BLOCK / 2] << 4);
            }
        } else {
            let (qh, qs) = rest.split_at_mut(4);
            pack5(codes, qh, &mut qs[..BLOCK / 2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_casts_truncate_and_wrap_like_x86() {
        assert_eq!(c_cast_low_byte(15.9), 15);
        assert_eq!(c_cast_low_byte(-1.5), 0xff);
        assert_eq!(c_cast_low_byte(f32::INFINITY), 0);
        assert_eq!(c_cast_low_byte(f32::NAN), 0);
        assert_eq!(c_cast_low_byte(300.0), 44);
    }

    /// On weights inside a block's first range, [`BlockFit`] rounds and packs as the
    /// reference quantizers do: the same bytes, for every type GPTQ fits.
    #[test]
    fn a_fitted_block_packs_the_reference_bytes() {
        let x: [f32; BLOCK] = std::array::from_fn(|j| ((j * 37 % 29) as f32 - 13.3) * 0.071);
        for t in [
            GgmlQuant::Q8_0,
            GgmlQuant::Q4_0,
            GgmlQuant::Q4_1,
            GgmlQuant::Q5_0,
            GgmlQuant::Q5_1,
        ] {
            let fit = BlockFit::of(t, &x);
            let codes: [u8; BLOCK] = std::array::from_fn(|j| fit.code(x[j]));
            let mut ours = vec![0u8; t.block_bytes() as usize];
            fit.pack(&codes, &mut ours);
            assert_eq!(ours, quantize(t, &x).unwrap_or_default(), "{t:?}");
        }
    }

    #[test]
    fn q8_0_block_by_hand() {
        // amax 127 → d = 1, q = round(x): 2.5 → 3 (half away from zero), -2.5 → -3.
        let mut x = [0f32; BLOCK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = -0.4;
        let q = quantize(GgmlQuant::Q8_0, &x).unwrap_or_default();
        assert_eq!(&q[..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(&q[2..6], &[127, 3, (-3i8) as u8, 0]);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // max = -8 → d = 1: q = min(15, trunc(x + 8.5)); x = -8 → 0, x = 7 → 15.
        let mut x = [0f32; BLOCK];
        x[0] = -8.0;
        x[16] = 7.0;
        x[1] = 1.4;
        let q = quantize(GgmlQuant::Q4_0, &x).unwrap_or_default();
        assert_eq!(&q[..2], &f16::from_f32(1.0).to_le_bytes());
        assert_eq!(q[2], 15 << 4, "x[0] = -8 → 0 (low), x[16] = 7 → 15 (high)");
        assert_eq!(q[3], 9 | (8 << 4));
    }

    #[test]
    fn bad_requests_are_errors() {
        assert_eq!(
            quantize(GgmlQuant::IQ2_XXS, &[0.0; 256]),
            Err(QuantizeError::Unsupported("IQ2_XXS"))
        );
        assert!(matches!(
            quantize(GgmlQuant::Q4_K, &[0.0; 32]),
            Err(QuantizeError::NotWholeBlocks { block: 256, .. })
        ));
        assert!(matches!(
            quantize(GgmlQuant::Q8_0, &[0.0; 33]),
            Err(QuantizeError::NotWholeBlocks { .. })
        ));
    }
}
