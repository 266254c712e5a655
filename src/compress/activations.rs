//! Activation quantization settings (a recipe's `[activations]` section) and the
//! arithmetic that turns observed ranges into scales, as onnxruntime's quantization
//! tools compute them. The graph rewriting that simulates it and writes it into ONNX
//! exports is `net::qdq`.
//!
//! ```toml
//! [activations]
//! mode = "static"          # or "dynamic": int8 activations computed at run time
//! dtype = "uint8"          # static only: uint8 (asymmetric) or int8 (symmetric)
//! observer = "minmax"      # static only: minmax, or percentile (with `percentile`)
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

/// Histogram bins of the percentile observer (onnxruntime's default).
pub const HISTOGRAM_BINS: usize = 2048;

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
    /// onnxruntime's `compute_scale_zp` does: uint8 `(rmax − rmin)/255` with
    /// `zp = round(−rmin/scale)`; int8 symmetric `absmax/127`, `zp = 0`; a range of
    /// width 0 gets scale 1.
    pub fn from_range(min: f32, max: f32, dtype: ActivationType) -> QuantParams {
        let (mut lo, mut hi) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
        let (qmin, qmax) = match dtype {
            ActivationType::Uint8 => (0.0, 255.0),
            ActivationType::Int8 => {
                let a = lo.abs().max(hi.abs());
                (lo, hi) = (-a, a);
                (-127.0, 127.0)
            }
        };
        let mut scale = (hi - lo) / (qmax - qmin);
        if !(scale > 0.0 && scale.is_finite()) {
            scale = 1.0;
        }
        let scale = scale as f32;
        let zero_point = (qmin - lo / f64::from(scale)).round_ties_even() as i32;
        QuantParams {
            scale,
            zero_point,
            dtype,
        }
    }
}

/// The streamed statistics of one activation tensor over the calibration samples.
#[derive(Debug, Clone)]
pub struct RangeObserver {
    pub min: f32,
    pub max: f32,
    /// Counts over [`HISTOGRAM_BINS`] equal bins of `[0, absmax]` (int8: |x|) or of
    /// `[min, max]` (uint8), filled in a second pass once the range is known.
    histogram: Vec<u64>,
}

impl Default for RangeObserver {
    fn default() -> Self {
        RangeObserver {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            histogram: Vec::new(),
        }
    }
}

impl RangeObserver {
    /// First pass: the range.
    pub fn observe_range(&mut self, xs: &[f32]) {
        for &x in xs {
            if x.is_finite() {
                self.min = self.min.min(x);
                self.max = self.max.max(x);
            }
        }
    }

    /// The histogram's edges: `[0, absmax]` for symmetric int8, else `[min, max]`.
    fn edges(&self, dtype: ActivationType) -> (f64, f64) {
        match dtype {
            ActivationType::Int8 => (0.0, f64::from(self.min.abs().max(self.max.abs()))),
            ActivationType::Uint8 => (f64::from(self.min), f64::from(self.max)),
        }
    }

    /// Second pass (percentile only): count `xs` into the histogram.
    pub fn observe_histogram(&mut self, xs: &[f32], dtype: ActivationType) {
        if self.histogram.is_empty() {
            self.histogram = vec![0; HISTOGRAM_BINS];
        }
        let (lo, hi) = self.edges(dtype);
        let width = (hi - lo) / HISTOGRAM_BINS as f64;
        for &x in xs.iter().filter(|x| x.is_finite()) {
            let v = match dtype {
                ActivationType::Int8 => f64::from(x.abs()),
                ActivationType::Uint8 => f64::from(x),
            };
            let bin = if width > 0.0 {
                (((v - lo) / width) as usize).min(HISTOGRAM_BINS - 1)
            } else {
                0
            };
            self.histogram[bin] += 1;
        }
    }

    /// The calibrated parameters: the full range (minmax), or the range holding
    /// `percentile` % of the values (onnxruntime's `HistogramCollector`: |x| for
    /// symmetric types, the tails cut evenly on both sides otherwise).
    pub fn params(&self, spec: &ActivationSpec) -> QuantParams {
        let dtype = spec.dtype();
        if !self.min.is_finite() || !self.max.is_finite() {
            return QuantParams::from_range(0.0, 0.0, dtype);
        }
        if spec.observer() == Observer::Minmax || self.histogram.is_empty() {
            return QuantParams::from_range(self.min, self.max, dtype);
        }
        let total: u64 = self.histogram.iter().sum();
        let (lo, hi) = self.edges(dtype);
        let width = (hi - lo) / HISTOGRAM_BINS as f64;
        // The upper edge of the first bin whose cumulative share reaches `share`.
        let edge_at = |share: f64| -> f64 {
            let mut cumulative = 0u64;
            for (i, &c) in self.histogram.iter().enumerate() {
                cumulative += c;
                if cumulative as f64 >= share * total as f64 {
                    return lo + width * (i + 1) as f64;
                }
            }
            hi
        };
        let p = spec.percentile() / 100.0;
        match dtype {
            ActivationType::Int8 => {
                let t = edge_at(p) as f32;
                QuantParams::from_range(-t, t, dtype)
            }
            ActivationType::Uint8 => {
                let cut = (1.0 - p) / 2.0;
                // The lower threshold is the lower edge of its bin.
                let low = (edge_at(cut) - width).max(lo);
                QuantParams::from_range(low as f32, edge_at(1.0 - cut) as f32, dtype)
            }
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

    /// 100,000 values 0..1 and one outlier of 1,000: the 99.9th percentile of |x|
    /// ignores the outlier (within a bin of 1000/2048), minmax keeps it.
    #[test]
    fn the_percentile_observer_ignores_outliers() {
        let mut xs: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        xs.push(1000.0);
        let spec = |observer, percentile| ActivationSpec {
            mode: Mode::Static,
            dtype: Some(ActivationType::Int8),
            observer: Some(observer),
            percentile,
            calibration: None,
        };
        let mut o = RangeObserver::default();
        o.observe_range(&xs);
        let minmax = o.params(&spec(Observer::Minmax, None));
        assert_eq!(minmax.scale, (1000.0f64 / 127.0) as f32);
        o.observe_histogram(&xs, ActivationType::Int8);
        let p = o.params(&spec(Observer::Percentile, Some(99.9)));
        // Bins of width 1000/2048: the first two hold 48,828 values each, the third
        // (to 3 × 1000/2048) the rest below 1, so 99.9 % of 100,001 is reached there.
        let t = 3.0 * 1000.0 / 2048.0;
        assert_eq!(p.scale, (2.0 * t / 254.0) as f32);
        assert_eq!(p.zero_point, 0);
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
