//! Integer fake-quantization against numpy running the same documented float32
//! formula (tests/fixtures/reference.py), bit for bit, and the fidelity figures
//! against numpy's float64 ones.

mod common;

use common::reference;
use slimscope::compress::quant::{Granularity, IntScheme, fake_quant_int, fidelity};

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
