//! Statistics against a plain float64 reimplementation written here: sums in f64 over
//! the decoded values, bins found by binary search over numpy's float64 edges. The
//! data cross chunk boundaries, sit exactly on bin edges, and come in several dtypes.

use half::{bf16, f16};
use slimscope::dtype::{DType, GgmlQuant};
use slimscope::stats::{CHUNK, HistogramRange, StatsOptions, compute};

/// Relative tolerance for sums taken in a different order.
const SUM_TOL: f64 = 1e-10;

/// Deterministic pseudo-normal values (xorshift + sum of uniforms).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.max(1);
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) as f32 * scale)
        .collect()
}

struct Reference {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
    mean_abs: f64,
    zeros: u64,
    beyond3: u64,
    counts: Vec<u64>,
}

fn reference(xs: &[f32], bins: usize, abs: bool) -> Reference {
    let v: Vec<f64> = xs
        .iter()
        .map(|&x| f64::from(x))
        .filter(|x| x.is_finite())
        .collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (first, last) = if abs {
        (0.0, min.abs().max(max.abs()))
    } else {
        (min, max)
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    let mut counts = vec![0u64; bins];
    for &x in &v {
        let x = if abs { x.abs() } else { x };
        // Last edge ≤ x, the last bin closed.
        let i = edges
            .partition_point(|&e| e <= x)
            .saturating_sub(1)
            .min(bins - 1);
        counts[i] += 1;
    }
    Reference {
        min,
        max,
        mean,
        std,
        mean_abs: v.iter().map(|x| x.abs()).sum::<f64>() / n,
        zeros: v.iter().filter(|&&x| x == 0.0).count() as u64,
        beyond3: v.iter().filter(|&&x| (x - mean).abs() > 3.0 * std).count() as u64,
        counts,
    }
}

fn check(dtype: DType, bytes: &[u8], decoded: &[f32], bins: usize, range: HistogramRange) {
    let s = compute(
        dtype,
        bytes,
        decoded.len() as u64,
        &StatsOptions { bins, range },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = reference(decoded, bins, range == HistogramRange::Abs);
    let ctx = format!("{dtype} bins={bins} {range:?}");
    assert_eq!((s.min, s.max), (r.min, r.max), "{ctx}");
    let spread = r.std + r.mean.abs();
    assert!(
        (s.mean - r.mean).abs() <= SUM_TOL * spread,
        "{ctx}: mean {} vs {}",
        s.mean,
        r.mean
    );
    assert!(
        (s.std - r.std).abs() <= 1e-9 * spread,
        "{ctx}: std {} vs {}",
        s.std,
        r.std
    );
    assert!(
        (s.mean_abs - r.mean_abs).abs() <= SUM_TOL * spread,
        "{ctx}: mean |w|"
    );
    assert_eq!(s.zeros, r.zeros, "{ctx}: zeros");
    assert_eq!(s.beyond_3_sigma, r.beyond3, "{ctx}: >3σ");
    let h = s.histogram.expect("histogram");
    assert_eq!(h.counts, r.counts, "{ctx}: histogram");
    assert_eq!(
        h.total(),
        decoded.iter().filter(|x| x.is_finite()).count() as u64,
        "{ctx}: sums to count"
    );
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn f32_across_chunks_with_values_on_every_edge() {
    let mut xs = values(3 * CHUNK + 12_345, 1, 0.02);
    let (lo, hi) = xs
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    // Values placed exactly on (the f32 roundings of) the 256-bin edges, and zeros.
    for i in 0..=256 {
        xs[i * 97] = lo + (hi - lo) * i as f32 / 256.0;
    }
    xs[5] = 0.0;
    xs[CHUNK + 1] = 0.0;
    let bytes = f32_bytes(&xs);
    for bins in [1, 7, 256, 1000] {
        check(DType::F32, &bytes, &xs, bins, HistogramRange::Signed);
    }
    check(DType::F32, &bytes, &xs, 256, HistogramRange::Abs);
}

#[test]
fn unaligned_f32_bytes_give_the_same_answer() {
    let xs = values(CHUNK + 3, 2, 1.0);
    let mut shifted = vec![0u8];
    shifted.extend(f32_bytes(&xs));
    check(DType::F32, &shifted[1..], &xs, 256, HistogramRange::Signed);
}

#[test]
fn f16_and_bf16() {
    let xs = values(2 * CHUNK + 5, 3, 3.0);
    let h: Vec<f16> = xs.iter().map(|&x| f16::from_f32(x)).collect();
    let decoded: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    let bytes: Vec<u8> = h.iter().flat_map(|v| v.to_le_bytes()).collect();
    check(DType::F16, &bytes, &decoded, 256, HistogramRange::Signed);
    let b: Vec<bf16> = xs.iter().map(|&x| bf16::from_f32(x)).collect();
    let decoded: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
    let bytes: Vec<u8> = b.iter().flat_map(|v| v.to_le_bytes()).collect();
    check(DType::BF16, &bytes, &decoded, 64, HistogramRange::Abs);
}

#[test]
fn q8_0_blocks_decode_as_d_times_q() {
    // ggml's Q8_0: per 32 values an f16 scale d and 32 int8 q; value = d·q.
    let blocks = CHUNK / 32 + 9;
    let qs = values(blocks * 32, 4, 60.0);
    let mut bytes = Vec::new();
    let mut decoded = Vec::new();
    for b in 0..blocks {
        let d = f16::from_f32(0.001 * (1 + b % 7) as f32);
        bytes.extend(d.to_le_bytes());
        for &q in &qs[b * 32..(b + 1) * 32] {
            let q = q.clamp(-127.0, 127.0) as i8;
            bytes.push(q as u8);
            decoded.push(d.to_f32() * f32::from(q));
        }
    }
    check(
        DType::Quant(GgmlQuant::Q8_0),
        &bytes,
        &decoded,
        256,
        HistogramRange::Signed,
    );
}

#[test]
fn nan_in_one_chunk_only_leaves_the_rest_exact() {
    let mut xs = values(2 * CHUNK, 5, 1.0);
    xs[CHUNK + 10] = f32::NAN;
    xs[CHUNK + 11] = f32::INFINITY;
    let s = compute(
        DType::F32,
        &f32_bytes(&xs),
        xs.len() as u64,
        &StatsOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.nan, s.inf), (1, 1));
    check(
        DType::F32,
        &f32_bytes(&xs),
        &xs,
        256,
        HistogramRange::Signed,
    );
}

#[test]
fn thread_count_does_not_change_the_result() {
    let xs = values(5 * CHUNK + 1, 6, 0.02);
    let bytes = f32_bytes(&xs);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            compute(
                DType::F32,
                &bytes,
                xs.len() as u64,
                &StatsOptions::default(),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.histogram, two.histogram);
    assert_eq!(
        (one.min, one.max, one.zeros, one.beyond_3_sigma),
        (two.min, two.max, two.zeros, two.beyond_3_sigma)
    );
    assert!((one.mean - two.mean).abs() <= SUM_TOL * one.std);
}
