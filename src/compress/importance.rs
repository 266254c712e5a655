//! llama.cpp's block quantizers with an importance matrix: what `llama-quantize
//! --imatrix` writes (ggml-quants.c `quantize_row_*_impl` with `quant_weights`,
//! reached through `ggml_quantize_chunk`). The tests compare the bytes with ggml's own
//! compiled `ggml_quantize_chunk(type, …, imatrix)`.
//!
//! An importance matrix gives every input column of a weight a weight `qw[j]` (the
//! mean of `x_j²` over the calibration tokens, see [`crate::model::imatrix`]). Each
//! block's least-squares fits then weigh value `j` by `qw[j]·√(σ² + x_j²)` instead of
//! by `x_j²` alone (σ² the row's or the super-block's mean square), and the K-quants'
//! sub-block scales are themselves fitted by weighted least squares
//! (`make_qp_quants`). Q8_0 ignores the importance, as ggml does. As in
//! [`super::k_quants`], all arithmetic is f32 in C's evaluation order.

use super::gguf_blocks::{BLOCK, pack5};
use super::k_quants::{
    GROUP_MAX_EPS, QK_K, half, make_qkx2_quants, make_qx_quants_by, nearest_int, pack_q4_k,
    pack_q5_k, pack_scale_min_k4, q2_k_finish, q3_k_finish, requantize_k45,
};
use crate::dtype::GgmlQuant;

/// Quantize one row of a weight (`row.len()` values, whole blocks) with the
/// importance of each of its columns (`importance`, as long as the row) into `out`
/// (the row's blocks). `q` must be one of the types [`super::gguf_blocks::supports`].
pub fn quantize_row(q: GgmlQuant, row: &[f32], importance: &[f32], out: &mut [u8]) {
    debug_assert_eq!(row.len(), importance.len());
    let bytes = q.block_bytes() as usize;
    match q {
        GgmlQuant::Q4_0 | GgmlQuant::Q4_1 | GgmlQuant::Q5_0 | GgmlQuant::Q5_1 => {
            // σ² over the whole row, in index order.
            let mut sum_x2 = 0f32;
            for &v in row {
                sum_x2 += v * v;
            }
            let sigma2 = sum_x2 / row.len() as f32;
            let blocks = row.chunks_exact(BLOCK).zip(importance.chunks_exact(BLOCK));
            for ((x, qw), o) in blocks.zip(out.chunks_exact_mut(bytes)) {
                let weight: [f32; BLOCK] =
                    std::array::from_fn(|j| qw[j] * (sigma2 + x[j] * x[j]).sqrt());
                legacy(q, x, &weight, o);
            }
        }
        GgmlQuant::Q8_0 => super::gguf_blocks::quantize_into(q, row, out)
            .expect("a supported type and whole blocks"),
        _ => {
            let blocks = row.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
            for ((x, qw), o) in blocks.zip(out.chunks_exact_mut(bytes)) {
                match q {
                    GgmlQuant::Q2_K => q2_k(x, qw, o),
                    GgmlQuant::Q3_K => q3_k(x, qw, o),
                    GgmlQuant::Q4_K => q45_k(x, qw, 15, o),
                    GgmlQuant::Q5_K => q45_k(x, qw, 31, o),
                    _ => q6_k(x, qw, o),
                }
            }
        }
    }
}

/// One block of 32 of Q4_0, Q4_1, Q5_0 or Q5_1 with its value weights.
fn legacy(q: GgmlQuant, x: &[f32], weight: &[f32; BLOCK], out: &mut [u8]) {
    let mut levels = [0u8; BLOCK];
    match q {
        GgmlQuant::Q4_0 | GgmlQuant::Q5_0 => {
            let nmax = if q == GgmlQuant::Q4_0 { 8 } else { 16 };
            let mut signed = [0i8; BLOCK];
            let d = make_qx_quants_by(nmax, x, &mut signed, |i, _| weight[i]);
            for (l, &s) in levels.iter_mut().zip(&signed) {
                *l = s as u8;
            }
            out[..2].copy_from_slice(&half(d).0);
            if q == GgmlQuant::Q4_0 {
                for j in 0..BLOCK / 2 {
                    out[2 + j] = levels[j] | (levels[j + 16] << 4);
                }
            } else {
                let (qh, qs) = out[2..].split_at_mut(4);
                pack5(&levels, qh, qs);
            }
        }
        _ => {
            let nmax = if q == GgmlQuant::Q4_1 { 15 } else { 31 };
            let (d, min) = make_qkx2_quants(nmax, x, weight, &mut levels, -0.9, 0.05, 36, false);
            out[..2].copy_from_slice(&half(d).0);
            out[2..4].copy_from_slice(&half(-min).0);
            if q == GgmlQuant::Q4_1 {
                for j in 0..BLOCK / 2 {
                    out[4 + j] = levels[j] | (levels[j + 16] << 4);
                }
            } else {
                let (qh, qs) = out[4..].split_at_mut(4);
                pack5(&levels, qh, qs);
            }
        }
    }
}

/// The mean square of a super-block, times `factor` (ggml's σ²).
fn sigma2(x: &[f32], factor: f32) -> f32 {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    factor * sum_x2 / QK_K as f32
}

/// Weights `qw[j]·√(σ² + x_j²)` of one sub-block and their sum.
fn weights<const N: usize>(x: &[f32], qw: &[f32], sigma2: f32) -> ([f32; N], f32) {
    let w: [f32; N] = std::array::from_fn(|l| qw[l] * (sigma2 + x[l] * x[l]).sqrt());
    let mut sum = 0f32;
    for &v in &w {
        sum += v;
    }
    (w, sum)
}

/// Non-negative levels `L ∈ [0, nmax]` for non-negative `x` (sub-block scales or
/// mins) with a weighted least-squares scale: a search over 9 scales, then up to 5
/// rounds of single-level refinement (`make_qp_quants`).
fn make_qp_quants(nmax: i32, x: &[f32], levels: &mut [u8], qw: &[f32]) -> f32 {
    let max = x.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    if max < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * f32::from(levels[i]);
        best_mse += qw[i] * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..x.len() {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let l = nearest_int(iscale * x[i]).min(nmax);
        levels[i] = l as u8;
        let (w, l) = (qw[i], l as f32);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let (w, old) = (qw[i], f32::from(levels[i]));
            let mut slx = sumlx - w * x[i] * old;
            let mut sl2 = suml2 - w * old * old;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != i32::from(levels[i]) {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        levels[i] = new_l as u8;
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
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// The `S` sub-blocks of `N` values of a super-block each fitted to levels
/// `0..=nmax` with a scale and a min, weighted by importance (the loop
/// `quantize_row_q2_K_impl` and `quantize_row_q4_K_impl` share): their scales,
/// mins and weight sums.
fn fit_with_mins<const N: usize, const S: usize>(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    sigma2: f32,
    levels: &mut [u8],
) -> ([f32; S], [f32; S], [f32; S]) {
    let (mut scales, mut mins, mut sw) = ([0f32; S], [0f32; S], [0f32; S]);
    for j in 0..S {
        let span = N * j..N * j + N;
        let (weight, sum) = weights::<N>(&x[span.clone()], &qw[span.clone()], sigma2);
        sw[j] = sum;
        (scales[j], mins[j]) = make_qkx2_quants(
            nmax,
            &x[span.clone()],
            &weight,
            &mut levels[span],
            -0.9,
            0.05,
            36,
            false,
        );
    }
    (scales, mins, sw)
}

/// Q2_K with importance (`quantize_row_q2_K_impl`): 84 bytes per 256 values.
fn q2_k(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (scales, mins, sw) = fit_with_mins::<16, 16>(x, qw, 3, sigma2(x, 1.0), &mut levels);
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let (sb, rest) = out.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    let (d_bytes, dm) = half(dm);
    let (m_bytes, mm) = half(mm);
    dd[..2].copy_from_slice(&d_bytes);
    dd[2..].copy_from_slice(&m_bytes);
    for j in 0..16 {
        sb[j] = ls[j] | (lm[j] << 4);
    }
    q2_k_finish(x, sb, (dm, mm), &mut levels, qs);
}

/// Q3_K with importance (`quantize_row_q3_K_impl`): 110 bytes per 256 values.
fn q3_k(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    let sigma2 = sigma2(x, 2.0);
    for j in 0..16 {
        let span = 16 * j..16 * j + 16;
        let (weight, sum) = weights::<16>(&x[span.clone()], &qw[span.clone()], sigma2);
        sw[j] = sum;
        scales[j] = make_qx_quants_by(4, &x[span.clone()], &mut levels[span], |i, _| weight[i]);
    }
    let (hmask, rest) = out.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sb, dd) = rest.split_at_mut(12);
    sb.fill(0);
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants_by(32, &scales, &mut ls, |i, _| sw[i]);
    for j in 0..16 {
        let l = ls[j] as u8;
        if j < 8 {
            sb[j] = l & 0xf;
        } else {
            sb[j - 8] |= (l & 0xf) << 4;
        }
        sb[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    let (bytes, d_all) = half(d_block);
    dd.copy_from_slice(&bytes);
    q3_k_finish(x, sb, d_all, &mut levels, hmask, qs);
}

/// Q4_K (`nmax` 15, 144 bytes) or Q5_K (`nmax` 31, 176 bytes) with importance
/// (`quantize_row_q4_K_impl` / `quantize_row_q5_K_impl`).
fn q45_k(x: &[f32], qw: &[f32], nmax: i32, out: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (scales, mins, sw) = fit_with_mins::<32, 8>(x, qw, nmax, sigma2(x, 2.0), &mut levels);
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    let (head, rest) = out.split_at_mut(16);
    let (dd, sb) = head.split_at_mut(4);
    pack_scale_min_k4(&ls.map(|l| l.min(63)), &lm.map(|l| l.min(63)), sb);
    let (d_bytes, d) = half(d_block);
    let (m_bytes, dmin) = half(m_block);
    dd[..2].copy_from_slice(&d_bytes);
    dd[2..].copy_from_slice(&m_bytes);
    requantize_k45(x, sb, (d, dmin), nmax, &mut levels);
    if nmax == 15 {
        pack_q4_k(&levels, rest);
    } else {
        pack_q5_k(&levels, rest);
    }
}

/// Q6_K with importance (`quantize_row_q6_K_impl`): the reference quantizer with the
/// importance itself as the value weights. 210 bytes per 256 values.
fn q6_k(x: &[f32], qw: &[f32], out: &mut [u8]) {
    super::k_quants::q6_k_by(x, out, |i, _| qw[i]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_importance_scales_are_a_weighted_fit() {
        // make_qp_quants on scales that are exact multiples of one step finds it.
        let x: Vec<f32> = (0..8).map(|i| 0.5 * i as f32).collect();
        let mut l = [0u8; 8];
        let d = make_qp_quants(7, &x, &mut l, &[1.0; 8]);
        assert_eq!(l, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!((d - 0.5).abs() < 1e-6, "{d}");
    }
}
