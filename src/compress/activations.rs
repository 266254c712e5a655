//! Activation quantization settings (a recipe's `[activations]` section) and the
//! arithmetic that turns observed ranges into scales, as onnxruntime's quantization
//! tools compute them. The graph rewriting that simulates it and writes it into ONNX
//! exports is `net::qdq`.
//!
//! ```toml
//! [activations]
//! mode = "static"          # or "dynamic": int8 activations computed at run time
//! dtype = "uint8"          # static only: uint8 (asymmetric) or int8 (symmetric)
//! observer = "minmax"      # static only: minmax, percentile (with `percentile`) or
//!                          # entropy, computed as onnxruntime's calibrators do, or
//!                          # mse (the clipped range of least squared error)
//! percentile = 99.999
//! calibration = 256        # static only: samples of the data kept apart to calibrate
//! ```
//!
//! Every weighted layer's input (Conv, Gemm, MatMul with a stored weight) is quantized:
//! - **static**: one scale and zero point per tensor, calibrated on the original model
//!   over `calibration` samples that are then left out of every evaluation in the run;
//! - **dynamic**: ONNX `DynamicQuantizeLinear` per sample (uint8, range through 0), what
//!   onnxruntime's and PyTorch's dynamic quantization do to activations at batch 1.

use serde::{Deserialize, Serialize};

/// What a recipe's `[activations]` section asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationSpec {
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<ActivationType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer: Option<Observer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Static,
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationType {
    /// Asymmetric, codes 0..=255 around a zero point.
    Uint8,
    /// Symmetric, codes −127..=127, zero point 0.
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observer {
    /// The smallest and largest value seen.
    Minmax,
    /// The range holding `percentile` % of the values (a 2048-bin histogram).
    Percentile,
    /// The range whose 8-bit requantization keeps the distribution closest in KL
    /// divergence (TensorRT's calibration, as onnxruntime's `Entropy` computes it).
    Entropy,
    /// The range, of `p·[min, max]` for `p = 1, 0.99, …, 0.21` (GPTQ's clipping
    /// grid, as weights' MSE clip uses), whose quantization has the least squared
    /// error over the calibration values (a 2,048-bin histogram of them).
    Mse,
}

impl ActivationSpec {
    pub const DEFAULT_CALIBRATION: usize = 256;
    pub const DEFAULT_PERCENTILE: f64 = 99.999;

    /// Samples kept apart to calibrate (none for dynamic quantization).
    pub fn calibration_samples(&self) -> usize {
        match self.mode {
            Mode::Static => self.calibration.unwrap_or(Self::DEFAULT_CALIBRATION),
            Mode::Dynamic => 0,
        }
    }

    pub fn dtype(&self) -> ActivationType {
        self.dtype.unwrap_or(ActivationType::Uint8)
    }

    pub fn observer(&self) -> Observer {
        self.observer.unwrap_or(Observer::Minmax)
    }

    pub fn percentile(&self) -> f64 {
        self.percentile.unwrap_or(Self::DEFAULT_PERCENTILE)
    }

    /// What is wrong with the settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.mode == Mode::Dynamic {
            let extra: Vec<&str> = [
                self.dtype.is_some().then_some("dtype"),
                self.observer.is_some().then_some("observer"),
                self.percentile.is_some().then_some("percentile"),
                self.calibration.is_some().then_some("calibration"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !extra.is_empty() {
                return Some(format!(
                    "[activations]: dynamic quantization is uint8 computed per sample at run time \
                     (ONNX DynamicQuantizeLinear); {} applies to mode = \"static\" only",
                    extra.join(", ")
                ));
            }
        }
        if self.calibration == Some(0) {
            return Some("[activations]: calibration needs at least one sample".into());
        }
        if let Some(p) = self.percentile {
            if !(50.0..=100.0).contains(&p) {
                return Some(format!(
                    "[activations]: percentile must be between 50 and 100, got {p}"
                ));
            }
            if self.observer() != Observer::Percentile {
                return Some(
                    "[activations]: percentile is set but the observer is not \"percentile\""
                        .into(),
                );
            }
        }
        None
    }

    /// The settings in a few words, e.g. `A8 static uint8 minmax (256 samples)`.
    pub fn describe(&self) -> String {
        match self.mode {
            Mode::Dynamic => "A8 dynamic uint8 per sample".into(),
            Mode::Static => format!(
                "A8 static {} {} ({} samples)",
                match self.dtype() {
                    ActivationType::Uint8 => "uint8",
                    ActivationType::Int8 => "int8",
                },
                match self.observer() {
                    Observer::Minmax => "minmax".to_owned(),
                    Observer::Percentile => format!("percentile {}", self.percentile()),
                    Observer::Entropy => "entropy".to_owned(),
                    Observer::Mse => "mse".to_owned(),
                },
                self.calibration_samples()
            ),
        }
    }
}

/// A tensor's quantization: `q = saturate(round(x / scale) + zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i32,
    pub dtype: ActivationType,
}

impl QuantParams {
    /// Scale and zero point for the range `[min, max]`, widened to hold 0, as
    /// onnxruntime's `compute_scale_zp` does, float32 steps included: uint8
    /// `(rmax − rmin)/255` (the difference taken in float32, the division in float64)
    /// with `zp = round(0 − rmin/scale)` before the scale is rounded to float32; int8
    /// symmetric `2·absmax/254`, `zp = 0`; a scale below float32's smallest normal
    /// becomes 1 with zero point 0.
    pub fn from_range(min: f32, max: f32, dtype: ActivationType) -> QuantParams {
        let (mut lo, mut hi) = (min.min(0.0), max.max(0.0));
        let (qmin, qmax) = match dtype {
            ActivationType::Uint8 => (0.0, 255.0),
            ActivationType::Int8 => {
                let a = lo.abs().max(hi.abs());
                (lo, hi) = (-a, a);
                (-127.0, 127.0)
            }
        };
        let scale = f64::from(hi - lo) / (qmax - qmin);
        if scale.is_nan() || scale < f64::from(f32::MIN_POSITIVE) {
            return QuantParams {
                scale: 1.0,
                zero_point: 0,
                dtype,
            };
        }
        let zero_point = match dtype {
            ActivationType::Int8 => 0,
            ActivationType::Uint8 => (qmin - f64::from(lo) / scale).round_ties_even() as i32,
        };
        QuantParams {
            scale: scale as f32,
            zero_point,
            dtype,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived: onnxruntime's formulas on small ranges.
    #[test]
    fn scales_and_zero_points_follow_onnxruntime() {
        // uint8 over [−1, 3]: scale 4/255, zp round(255/4) = round(63.75) = 64.
        let p = QuantParams::from_range(-1.0, 3.0, ActivationType::Uint8);
        assert_eq!(p.scale, (4.0f64 / 255.0) as f32);
        assert_eq!(p.zero_point, 64);
        // A ReLU output [0.5, 2] is widened to [0, 2]: zp 0.
        let p = QuantParams::from_range(0.5, 2.0, ActivationType::Uint8);
        assert_eq!((p.scale, p.zero_point), ((2.0f64 / 255.0) as f32, 0));
        // int8 symmetric over [−1, 3]: absmax 3, scale 6/254 = 3/127, zp 0.
        let p = QuantParams::from_range(-1.0, 3.0, ActivationType::Int8);
        assert_eq!((p.scale, p.zero_point), ((6.0f64 / 254.0) as f32, 0));
        // An all-zero tensor: scale 1.
        let p = QuantParams::from_range(0.0, 0.0, ActivationType::Uint8);
        assert_eq!((p.scale, p.zero_point), (1.0, 0));
    }

    #[test]
    fn dynamic_takes_no_static_settings() {
        let spec = ActivationSpec {
            mode: Mode::Dynamic,
            dtype: Some(ActivationType::Int8),
            observer: None,
            percentile: None,
            calibration: None,
        };
        assert!(spec.problem().is_some_and(|p| p.contains("dtype")));
    }
}
