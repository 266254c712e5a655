//! Floating-point storage formats as fake-quantization: fp16 and bf16 (IEEE
//! round-to-nearest-even; overflow becomes ±∞ as in every framework), fp8 e4m3fn and
//! e5m2 (round to nearest, ties to the even code, **saturating** at ±448 / ±57344
//! rather than producing NaN/∞). The fp8 encoders pick the nearest value of the
//! format's own decoded code table ([`crate::dtype`]), so they agree with the decoder
//! by construction.

use std::sync::OnceLock;

use half::{bf16, f16};
use rayon::prelude::*;
use serde::Serialize;

use crate::dtype::{f8e4m3_to_f32, f8e5m2_to_f32};

/// A floating-point storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatFormat {
    F16,
    BF16,
    F8E4M3,
    F8E5M2,
}

impl FloatFormat {
    /// Bits per weight.
    pub fn bits(self) -> u32 {
        match self {
            FloatFormat::F16 | FloatFormat::BF16 => 16,
            FloatFormat::F8E4M3 | FloatFormat::F8E5M2 => 8,
        }
    }
}

/// The positive finite values of an fp8 format, ascending (index = code).
fn table(format: FloatFormat) -> &'static [f32] {
    static E4M3: OnceLock<Vec<f32>> = OnceLock::new();
    static E5M2: OnceLock<Vec<f32>> = OnceLock::new();
    match format {
        // 0x7f is NaN; 0x7e = 448 is the largest.
        FloatFormat::F8E4M3 => E4M3.get_or_init(|| (0u8..=0x7e).map(f8e4m3_to_f32).collect()),
        // 0x7c is ∞; 0x7b = 57344 is the largest.
        _ => E5M2.get_or_init(|| (0u8..=0x7b).map(f8e5m2_to_f32).collect()),
    }
}

/// The nearest value of `table` to `x` (ties to the even code), saturating.
fn nearest(table: &[f32], x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let above = table.partition_point(|&v| v < a);
    let value = match (above.checked_sub(1), table.get(above)) {
        (_, Some(&up)) if up == a => up,
        (None, Some(&up)) => up,
        (Some(lo), Some(&up)) => {
            let (dl, du) = (a - table[lo], up - a);
            if dl < du || (dl == du && lo % 2 == 0) {
                table[lo]
            } else {
                up
            }
        }
        (_, None) => table[table.len() - 1], // beyond the largest: saturate
    };
    value.copysign(x)
}

/// Round `w` to `format` and back to f32.
pub fn fake_quant_float(w: &[f32], format: FloatFormat) -> Vec<f32> {
    w.par_iter()
        .map(|&x| match format {
            FloatFormat::F16 => f16::from_f32(x).to_f32(),
            FloatFormat::BF16 => bf16::from_f32(x).to_f32(),
            fp8 => nearest(table(fp8), x),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_by_hand() {
        let q = |x| fake_quant_float(&[x], FloatFormat::F8E4M3)[0];
        assert_eq!(q(1.0), 1.0);
        assert_eq!(q(1.0625), 1.0); // halfway between 1 and 1.125: even code (1.0)
        assert_eq!(q(1.1875), 1.25); // halfway between 1.125 and 1.25: even code (1.25)
        assert_eq!(q(1000.0), 448.0); // saturates
        assert_eq!(q(-1000.0), -448.0);
        assert!(q(f32::NAN).is_nan());
        let e5 = |x| fake_quant_float(&[x], FloatFormat::F8E5M2)[0];
        assert_eq!(e5(1e9), 57344.0);
        assert_eq!(e5(f32::INFINITY), 57344.0);
    }
}
