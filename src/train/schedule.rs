//! Gradual pruning: sparsity that rises over the first part of training instead of
//! all at once, so the network adapts as weights go. The curve is TensorFlow Model
//! Optimization's `PolynomialDecay`:
//!
//! s(t) = s₁ + (s₀ − s₁)·(1 − (t − t₀)/(t₁ − t₀))^power, for t₀ ≤ t ≤ t₁,
//!
//! with masks recomputed every `frequency` steps (and at t₁ exactly).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A polynomial-decay sparsity schedule over optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolynomialDecay {
    /// Sparsity at `begin_step`.
    pub initial: f64,
    /// Sparsity from `end_step` on.
    pub target: f64,
    pub begin_step: usize,
    pub end_step: usize,
    /// 3 in TF-MOT's examples: fast at first, gentle near the target.
    pub power: f64,
    /// Steps between mask updates.
    pub frequency: usize,
}

impl PolynomialDecay {
    /// Check the settings (an impossible schedule is refused with what is wrong).
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidSetting(format!("gradual pruning: {what}")));
        if !(0.0..1.0).contains(&self.initial) || !(0.0..1.0).contains(&self.target) {
            return bad(format!(
                "sparsities must lie in [0, 1): initial {}, target {}",
                self.initial, self.target
            ));
        }
        if self.initial > self.target {
            return bad(format!(
                "the initial sparsity {} exceeds the target {}",
                self.initial, self.target
            ));
        }
        if self.end_step <= self.begin_step || self.frequency == 0 || self.power <= 0.0 {
            return bad(format!(
                "needs begin < end, frequency ≥ 1 and power > 0 (got {}..{}, every {}, power {})",
                self.begin_step, self.end_step, self.frequency, self.power
            ));
        }
        Ok(())
    }

    /// The sparsity at `step`.
    pub fn sparsity(&self, step: usize) -> f64 {
        let t = step.clamp(self.begin_step, self.end_step);
        let p = (t - self.begin_step) as f64 / (self.end_step - self.begin_step) as f64;
        self.target + (self.initial - self.target) * (1.0 - p).powf(self.power)
    }

    /// Whether masks are recomputed at `step` (TF-MOT: every `frequency` steps within
    /// [begin, end]); the end step always updates, so the target is reached exactly.
    pub fn updates_at(&self, step: usize) -> bool {
        (self.begin_step..=self.end_step).contains(&step)
            && ((step - self.begin_step).is_multiple_of(self.frequency) || step == self.end_step)
    }

    /// Whether the target has been reached by `step`.
    pub fn finished(&self, step: usize) -> bool {
        step >= self.end_step
    }
}
