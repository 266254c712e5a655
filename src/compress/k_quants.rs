//! llama.cpp's reference K-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): what
//! `llama-quantize` writes without an importance matrix (ggml-quants.c
//! `quantize_row_q*_K_ref`). gguf-py has no K-quant quantizer, so the tests compare
//! these bytes with ggml's own compiled `quantize_row_q*_K_ref` (from a pinned wheel
//! that ships `libggml-base.so`) and the dequantized values with gguf-py's.
//!
//! A super-block is 256 values in sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K,
//! Q5_K). Each sub-block gets a least-squares scale (and min) from a small search;
//! the sub-block scales are then themselves quantized to 4, 6 or 8 bits against one
//! f16 super-scale, and every value is re-rounded against the scale it will really
//! be decoded with. All arithmetic is f32 in C's evaluation order (no fused
//! multiply-adds, sums in index order), because a different rounding flips bytes.

use half::f16;

/// Values per super-block.
pub const QK_K: usize = 256;
/// Below this, a group counts as all zeros.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the 1.5·2²³ trick, bit for bit
/// (including what it makes of values outside ±2²² and of NaN).
#[inline]
pub(super) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The value of largest magnitude (sign kept; the first wins ties) and the magnitude.
#[inline]
pub(super) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// f32 → f16 bits and the f32 the decoder will see.
#[inline]
pub(super) fn half(v: f32) -> ([u8; 2], f32) {
    let h = f16::from_f32(v);
    (h.to_le_bytes(), h.to_f32())
}

/// Symmetric levels `L ∈ [0, 2·nmax)` with a weighted least-squares scale,
/// searching 19 candidate scales around `-nmax/max` (`make_qx_quants`, rmse_type 1):
/// value `i` (of value `v`) weighs `weight(i, v)`, `v²` without an importance matrix
/// and the importance weights with one.
#[inline]
pub(super) fn make_qx_quants_by(
    nmax: i32,
    x: &[f32],
    levels: &mut [i8],
    weight: impl Fn(usize, f32) -> f32,
) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (i, &v) in x.iter().enumerate() {
            let l = level(iscale, v) as f32;
            let w = weight(i, v);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let iscale = -(nmax as f32) / max;
    for (o, &v) in levels.iter_mut().zip(x) {
        *o = (level(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in levels.iter_mut().zip(x) {
                *o = (nmax + level(iscale, v)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric levels with coordinate-descent refinement of single levels
/// (`make_q3_quants` with `do_rmse`). Levels come back offset by `nmax`.
#[inline]
fn make_q3_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (o, &v) in levels.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *o = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (o, &v) in levels.iter_mut().zip(x) {
            let w = v * v;
            let old = f32::from(*o);
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != i32::from(*o) {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *o = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for o in levels.iter_mut() {
        *o += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Asymmetric levels `L ∈ [0, nmax]` with `x ≈ scale·L − min`, fitted by weighted
/// least squares over `nstep + 1` candidate scales (`make_qkx2_quants`). Returns
/// `(scale, min)`; the search moves `min` as it goes, exactly as ggml does.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let error = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        best_error += weights[i] * error(scale * l as f32 + min - x[i]);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                cur_error += weights[i] * error(this_scale * f32::from(aux[i]) + this_min - x[i]);
            }
            if cur_error < best_error {
                levels.copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Two bits per value (and a 4-bit scale and min per 16 values): `scales[16]`,
/// `qs[64]`, `d`, `dmin` — 84 bytes.
#[inline]
pub fn q2_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        let (scale, min) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut levels[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let (sb, rest) = out.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    let mut d = 0f32;
    let mut dmin = 0f32;
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            sb[j] = nearest_int(iscale * scales[j]) as u8;
        }
        let (bytes, v) = half(max_scale / 15.0);
        dd[..2].copy_from_slice(&bytes);
        d = v;
    } else {
        sb.fill(0);
        dd[..2].copy_from_slice(&half(0.0).0);
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            sb[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        let (bytes, v) = half(max_min / 15.0);
        dd[2..].copy_from_slice(&bytes);
        dmin = v;
    } else {
        dd[2..].copy_from_slice(&half(0.0).0);
    }
    q2_k_finish(x, sb, (d, dmin), &mut levels, qs);
}

/// Q2_K's last steps, shared with the importance-weighted quantizer: every value
/// re-rounded against the scale and min it will be decoded with (`d`, `dmin` and
/// the 4-bit pairs in `sb`), then packed four to a byte into `qs`.
#[inline]
pub(super) fn q2_k_finish(
    x: &[f32],
    sb: &[u8],
    (d, dmin): (f32, f32),
    levels: &mut [u8; QK_K],
    qs: &mut [u8],
) {
    for j in 0..16 {
        let d = d * f32::from(sb[j] & 0xf);
        if d == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(sb[j] >> 4);
        for ii in 0..16 {
            levels[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(levels, qs);
}

/// Four 2-bit values per byte: value `j + 32·k` of each 128 in bits `2k..2k+2` of byte j.
#[inline]
pub(super) fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for l in 0..32 {
            qs[j / 4 + l] = levels[j + l]
                | (levels[j + l + 32] << 2)
                | (levels[j + l + 64] << 4)
                | (levels[j + l + 96] << 6);
        }
    }
}

/// Three bits per value (2 low bits + a high-bit mask) and a 6-bit signed scale per
/// 16 values: `hmask[32]`, `qs[64]`, `scales[12]`, `d` — 110 bytes.
#[inline]
pub fn q3_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut levels[16 * j..16 * j + 16]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sb, dd) = rest.split_at_mut(12);
    sb.fill(0);
    let mut d_all = 0f32;
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            let l = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
            let l = l as u8;
            if j < 8 {
                sb[j] = l & 0xf;
            } else {
                sb[j - 8] |= (l & 0xf) << 4;
            }
            sb[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        let (bytes, v) = half(1.0 / iscale);
        dd.copy_from_slice(&bytes);
        d_all = v;
    } else {
        dd.copy_from_slice(&half(0.0).0);
    }
    q3_k_finish(x, sb, d_all, &mut levels, hmask, qs);
}

/// Q3_K's last steps, shared with the importance-weighted quantizer: every value
/// re-rounded against its decoded 6-bit scale (`sb`, times `d_all`), then split
/// into the high-bit mask `hmask` and two low bits packed into `qs`.
#[inline]
pub(super) fn q3_k_finish(
    x: &[f32],
    sb: &[u8],
    d_all: f32,
    levels: &mut [i8; QK_K],
    hmask: &mut [u8],
    qs: &mut [u8],
) {
    for j in 0..16 {
        let low = if j < 8 { sb[j] & 0xf } else { sb[j - 8] >> 4 };
        let sc = (low | (((sb[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            levels[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    hmask.fill(0);
    let mut unsigned = [0u8; QK_K];
    for (j, (&l, u)) in levels.iter().zip(unsigned.iter_mut()).enumerate() {
        let mut l = l as u8;
        if l > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            l -= 4;
        }
        *u = l;
    }
    pack_2bit(&unsigned, qs);
}

/// ggml's 12-byte packing of eight 6-bit scales and eight 6-bit mins.
#[inline]
pub(super) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], sb: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            sb[j] = ls[j];
            sb[j + 4] = lm[j];
        } else {
            sb[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            sb[j - 4] |= (ls[j] >> 4) << 6;
            sb[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// Scale and min of sub-block j from the 12-byte packing (`get_scale_min_k4`).
#[inline]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The shared part of Q4_K and Q5_K: per 32 values an asymmetric fit weighted by
/// `rms + |x|`, 6-bit scales and mins, then levels re-rounded against the decoded
/// scales. Writes `d`, `dmin`, `scales[12]` to `head` and returns the levels.
#[inline]
fn qkx_levels(x: &[f32], nmax: i32, rmin: f32, nstep: i32, head: &mut [u8]) -> [u8; QK_K] {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        let (scale, min) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    let (dd, sb) = head.split_at_mut(4);
    pack_scale_min_k4(&ls, &lm, sb);
    let (d_bytes, d) = half(max_scale / 63.0);
    let (m_bytes, dmin) = half(max_min / 63.0);
    dd[..2].copy_from_slice(&d_bytes);
    dd[2..].copy_from_slice(&m_bytes);
    requantize_k45(x, sb, (d, dmin), nmax, &mut levels);
    levels
}

/// Q4_K's and Q5_K's values re-rounded against the scale and min each will be
/// decoded with (`d`, `dmin` and the 6-bit pairs packed in `sb`).
#[inline]
pub(super) fn requantize_k45(
    x: &[f32],
    sb: &[u8],
    (d, dmin): (f32, f32),
    nmax: i32,
    levels: &mut [u8; QK_K],
) {
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, sb);
        let d = d * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m);
        for ii in 0..32 {
            levels[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Four bits per value, 6-bit scale and min per 32 values: `d`, `dmin`,
/// `scales[12]`, `qs[128]` — 144 bytes.
#[inline]
pub fn q4_k(x: &[f32], out: &mut [u8]) {
    let (head, qs) = out.split_at_mut(16);
    let levels = qkx_levels(x, 15, -1.0, 20, head);
    pack_q4_k(&levels, qs);
}

/// Q4_K's `qs`: values `l` and `l + 32` of every 64 in one byte.
#[inline]
pub(super) fn pack_q4_k(levels: &[u8; QK_K], qs: &mut [u8]) {
    for (chunk, q) in levels.chunks_exact(64).zip(qs.chunks_exact_mut(32)) {
        for l in 0..32 {
            q[l] = chunk[l] | (chunk[l + 32] << 4);
        }
    }
}

/// Five bits per value (4 low bits + a high-bit plane), 6-bit scale and min per 32
/// values: `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]` — 176 bytes.
#[inline]
pub fn q5_k(x: &[f32], out: &mut [u8]) {
    let (head, rest) = out.split_at_mut(16);
    let levels = qkx_levels(x, 31, -0.5, 15, head);
    pack_q5_k(&levels, rest);
}

/// Q5_K's `qh[32]` (the fifth bits) and `qs[128]` (the low nibbles, as Q4_K's).
#[inline]
pub(super) fn pack_q5_k(levels: &[u8; QK_K], rest: &mut [u8]) {
    let (qh, qs) = rest.split_at_mut(32);
    qh.fill(0);
    for (n, (chunk, q)) in levels
        .chunks_exact(64)
        .zip(qs.chunks_exact_mut(32))
        .enumerate()
    {
        let (m1, m2) = (1u8 << (2 * n), 2u8 << (2 * n));
        for j in 0..32 {
            let (mut l1, mut l2) = (chunk[j], chunk[j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            q[j] = l1 | (l2 << 4);
        }
    }
}

/// Six bits per value (4 low + 2 high), 8-bit signed scale per 16 values:
/// `ql[128]`, `qh[64]`, `scales[16]`, `d` — 210 bytes.
#[inline]
pub fn q6_k(x: &[f32], out: &mut [u8]) {
    q6_k_by(x, out, |_, v| v * v)
}

/// [`q6_k`] with value `i` of the super-block weighted by `weight(i, x_i)` in the
/// sub-block fits (an importance matrix's weights, see `super::importance`).
#[inline]
pub(super) fn q6_k_by(x: &[f32], out: &mut [u8], weight: impl Fn(usize, f32) -> f32) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let scale = make_qx_quants_by(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut levels[16 * ib..16 * ib + 16],
            |i, v| weight(16 * ib + i, v),
        );
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    out.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let (ql, rest) = out.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (sb, dd) = rest.split_at_mut(16);
    let iscale = -128.0 / max_scale;
    let (bytes, d_all) = half(1.0 / iscale);
    dd.copy_from_slice(&bytes);
    for ib in 0..16 {
        sb[ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d_all * f32::from(sb[j] as i8);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            levels[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for (chunk, (ql, qh)) in levels
        .chunks_exact(128)
        .zip(ql.chunks_exact_mut(64).zip(qh.chunks_exact_mut(32)))
    {
        let l = |i: usize| chunk[i] as u8;
        for i in 0..32 {
            ql[i] = (l(i) & 0xf) | ((l(i + 64) & 0xf) << 4);
            ql[i + 32] = (l(i + 32) & 0xf) | ((l(i + 96) & 0xf) << 4);
            qh[i] = (l(i) >> 4)
                | ((l(i + 32) >> 4) << 2)
                | ((l(i + 64) >> 4) << 4)
                | ((l(i + 96) >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(1e6 + 0.7), 1_000_001);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 47, 5, 62];
        let lm = [63, 2, 0, 40, 31, 16, 59, 1];
        let mut sb = [0u8; 12];
        pack_scale_min_k4(&ls, &lm, &mut sb);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &sb), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
