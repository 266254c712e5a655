//! Integer fake-quantization against numpy running the same documented float32
//! formula (tests/fixtures/reference.py), bit for bit, and the fidelity figures
//! against numpy's float64 ones.

mod common;

use common::reference;
use slimscope::compress::quant::{Clip, Granularity, IntScheme, fake_quant_int, fidelity};

/// Fidelity figures are float64 sums in a different order: this close.
const FIDELITY_TOL: f64 = 1e-9;

fn f32s_of_npy(name: &str) -> Vec<f32> {
    common::fixture_f32s(name, 0)
}

#[test]
fn fake_quant_equals_numpy_bit_for_bit_and_fidelity_agrees() {
    let x = f32s_of_npy("quant/input.npy"); // viewed as [64, 256]
    let mut checked = 0;
    for bits in [8u8, 4, 3, 2] {
        for symmetric in [true, false] {
            for (name, granularity) in [
                ("tensor", Granularity::PerTensor),
                ("channel", Granularity::PerChannel),
                ("group32", Granularity::Group(32)),
            ] {
                let key = format!(
                    "int{bits}_{}_{name}",
                    if symmetric { "sym" } else { "asym" }
                );
                let scheme = IntScheme {
                    bits,
                    symmetric,
                    granularity,
                    clip: Clip::None,
                };
                let ours = fake_quant_int(&x, 256, &scheme).unwrap_or_else(|e| panic!("{e}"));
                let theirs = f32s_of_npy(&format!("quant/{key}.npy"));
                for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    assert!(
                        a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0),
                        "{key}: value {i}: {a} vs {b}"
                    );
                }
                let f = fidelity(&x, &ours);
                let r = &reference()["int_quant"][&key];
                for (ours, field) in [
                    (f.sqnr_db, "sqnr_db"),
                    (f.relative_error, "relative_error"),
                    (f.max_abs_error, "max_abs_error"),
                    (f.cosine, "cosine"),
                ] {
                    let theirs = r[field].as_f64().expect(field);
                    assert!(
                        (ours - theirs).abs() <= FIDELITY_TOL * theirs.abs().max(1.0),
                        "{key}: {field} {ours} vs {theirs}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
}

#[test]
fn finer_scales_and_more_bits_are_more_faithful() {
    let x = f32s_of_npy("quant/input.npy");
    let sqnr = |bits, granularity| {
        let y = fake_quant_int(
            &x,
            256,
            &IntScheme {
                bits,
                symmetric: true,
                granularity,
                clip: Clip::None,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        fidelity(&x, &y).sqnr_db
    };
    for g in [Granularity::PerChannel, Granularity::Group(32)] {
        assert!(
            sqnr(8, g) > sqnr(4, g) && sqnr(4, g) > sqnr(3, g) && sqnr(3, g) > sqnr(2, g),
            "{g:?}"
        );
    }
    // One scale for the whole tensor: the 40.0 outlier (block 3) sets it, and at 4
    // bits and below every ordinary weight rounds to zero, so fidelity plateaus at
    // what the outlier alone carries (≈23 dB) rather than falling further.
    let t = |bits| sqnr(bits, Granularity::PerTensor);
    assert!(t(8) > t(4) && t(4) >= t(3) && t(3) >= t(2));
    assert!((t(4) - t(2)).abs() < 0.5, "plateau: {} vs {}", t(4), t(2));
    for bits in [8, 4, 3] {
        assert!(sqnr(bits, Granularity::Group(32)) > sqnr(bits, Granularity::PerChannel));
        assert!(sqnr(bits, Granularity::PerChannel) > sqnr(bits, Granularity::PerTensor));
    }
}

/// MSE clipping, against a float64 brute force written here: for every row, the
/// squared error of all 80 candidate ranges p·[min, max] (p = 1, 0.99, …, 0.21); ours
/// must reach the least of them, and never do worse than no clipping.
#[test]
fn mse_clipping_finds_the_best_range_per_channel() {
    let x = f32s_of_npy("quant/k_input.npy");
    let row_len = 256;
    for bits in [4u8, 3] {
        for symmetric in [true, false] {
            let scheme = |clip| IntScheme {
                bits,
                symmetric,
                granularity: Granularity::PerChannel,
                clip,
            };
            let clipped = fake_quant_int(&x, row_len, &scheme(Clip::Mse)).expect("quant");
            let plain = fake_quant_int(&x, row_len, &scheme(Clip::None)).expect("quant");
            for (r, row) in x.chunks(row_len).enumerate() {
                let sse = |y: &[f32]| -> f64 {
                    row.iter()
                        .zip(y)
                        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                        .sum()
                };
                let ours = sse(&clipped[r * row_len..(r + 1) * row_len]);
                let none = sse(&plain[r * row_len..(r + 1) * row_len]);
                let (min, max) = row.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| {
                    (a.min(f64::from(v)), b.max(f64::from(v)))
                });
                let best = (0..80)
                    .map(|i| {
                        let p = 1.0 - f64::from(i) / 100.0;
                        let (lo, hi) = (p * min, p * max);
                        row.iter()
                            .map(|&v| {
                                let v = f64::from(v);
                                let y = if symmetric {
                                    let qmax = f64::from((1u32 << (bits - 1)) - 1);
                                    let s = lo.abs().max(hi.abs()) / qmax;
                                    if s == 0.0 {
                                        0.0
                                    } else {
                                        (v / s).round_ties_even().clamp(-qmax, qmax) * s
                                    }
                                } else {
                                    let levels = f64::from((1u32 << bits) - 1);
                                    let s = (hi - lo) / levels;
                                    if s == 0.0 {
                                        lo
                                    } else {
                                        let zp = (-lo / s).round_ties_even().clamp(0.0, levels);
                                        ((v / s).round_ties_even() + zp).clamp(0.0, levels) * s
                                            - zp * s
                                    }
                                };
                                (v - y).powi(2)
                            })
                            .sum::<f64>()
                    })
                    .fold(f64::MAX, f64::min);
                assert!(
                    ours <= none * (1.0 + 1e-9),
                    "row {r}: clipping made it worse"
                );
                assert!(
                    (ours - best).abs() <= 1e-4 * best.max(1e-30),
                    "int{bits} sym={symmetric} row {r}: {ours} vs the best candidate {best}"
                );
            }
            // On heavy-tailed rows clipping pays: the whole tensor gains SQNR.
            let gain = fidelity(&x, &clipped).sqnr_db - fidelity(&x, &plain).sqnr_db;
            assert!(gain > 0.5, "int{bits} sym={symmetric}: gain {gain} dB");
        }
    }
}

/// The integer codes exports store: hand-derived on small tensors, and decoding them
/// as a runtime's DequantizeLinear does, `(q − zp)·scale` in f32, gives back the
/// fake-quant values bit for bit.
#[test]
fn integer_codes_decode_to_the_fake_quant_values() {
    use slimscope::compress::quant::fake_quant_int_grid;
    let scheme = |bits, symmetric, granularity| IntScheme {
        bits,
        symmetric,
        granularity,
        clip: Clip::None,
    };
    let decode = |c: &slimscope::compress::quant::IntCodes, group: usize| -> Vec<u32> {
        c.codes
            .iter()
            .enumerate()
            .map(|(i, &q)| ((q - c.zero_points[i / group]) as f32 * c.scales[i / group]).to_bits())
            .collect()
    };
    // int8 symmetric per tensor: scale 1/127; 0.5·127 = 63.5 rounds to even 64,
    // 0.25·127 = 31.75 to 32.
    let w = [-1.0f32, 0.5, 0.25, 1.0];
    let mut y = [0f32; 4];
    let grid = fake_quant_int_grid(&w, 4, &scheme(8, true, Granularity::PerTensor), &mut y)
        .expect("quant");
    assert_eq!(grid.scales, [1.0 / 127.0]);
    let codes = grid.codes(&y).expect("on the grid");
    assert_eq!(codes.codes, [-127, 64, 32, 127]);
    assert_eq!(codes.zero_points, [0]);
    assert_eq!(decode(&codes, 4), y.map(f32::to_bits));
    // uint4 asymmetric per row: [0, 3] → scale 0.2, zp 0, codes 0, 5, 10, 15; a
    // constant row (scale 0) is given scale |c| and code 1.
    let w = [0.0f32, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0];
    let mut y = [0f32; 8];
    let grid = fake_quant_int_grid(&w, 4, &scheme(4, false, Granularity::PerChannel), &mut y)
        .expect("quant");
    assert_eq!(y[4..], [5.0; 4], "a constant row is kept");
    let codes = grid.codes(&y).expect("on the grid");
    assert_eq!(codes.codes, [0, 5, 10, 15, 1, 1, 1, 1]);
    assert_eq!(codes.scales, [3.0f32 / 15.0, 5.0]);
    assert_eq!(codes.zero_points, [0, 0]);
    assert_eq!(decode(&codes, 4), y.map(f32::to_bits));
    // Values that are not on the grid are refused, not silently rounded.
    let mut off = y;
    off[1] = 1.1;
    assert!(grid.codes(&off).is_none());
}
