//! fp16 / bf16 / fp8 rounding against numpy (float16) and ml_dtypes (bfloat16,
//! float8_e4m3fn, float8_e5m2), value for value. ml_dtypes overflows to NaN/∞ where
//! slimscope saturates fp8 by design: those values are checked against the format's
//! largest finite value instead.

mod common;

use slimscope::compress::float::{FloatFormat, fake_quant_float};

fn f32s_of_npy(name: &str) -> Vec<f32> {
    common::fixture_f32s(name, 0)
}

#[test]
fn float_formats_round_like_numpy_and_ml_dtypes() {
    let x = f32s_of_npy("quant/float_input.npy");
    for (format, file, max) in [
        (FloatFormat::F16, "f16", f32::INFINITY),
        (FloatFormat::BF16, "bf16", f32::INFINITY),
        (FloatFormat::F8E4M3, "f8_e4m3", 448.0),
        (FloatFormat::F8E5M2, "f8_e5m2", 57344.0),
    ] {
        let ours = fake_quant_float(&x, format);
        let theirs = f32s_of_npy(&format!("quant/{file}.npy"));
        let mut saturated = 0;
        for (i, ((a, b), v)) in ours.iter().zip(&theirs).zip(&x).enumerate() {
            if b.is_finite() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{file}: {v} → {a}, reference {b} (value {i})"
                );
            } else {
                // Overflow in the reference: ours saturates (fp8) or overflows too (fp16).
                assert!(
                    *a == max.copysign(*v) || (a.is_infinite() && max.is_infinite()),
                    "{file}: {v} → {a}"
                );
                saturated += 1;
            }
        }
        if format == FloatFormat::F8E4M3 {
            assert!(saturated >= 4, "the awkward values include e4m3 overflows");
        }
    }
}
