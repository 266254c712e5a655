//! The UI's frame times, to show that it never blocks.

/// The CPU time of the last frames, to show that the UI never blocks.
#[derive(Debug, Default)]
pub struct FrameTimes {
    seconds: std::collections::VecDeque<f32>,
}

impl FrameTimes {
    /// Frames kept.
    const KEEP: usize = 2000;

    pub fn push(&mut self, seconds: f32) {
        if self.seconds.len() == Self::KEEP {
            self.seconds.pop_front();
        }
        self.seconds.push_back(seconds);
    }

    /// (median, 99th percentile) in milliseconds and the frames counted.
    pub fn percentiles(&self) -> Option<(f64, f64, usize)> {
        if self.seconds.is_empty() {
            return None;
        }
        let mut v: Vec<f32> = self.seconds.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) * 1e3;
        Some((at(0.5), at(0.99), v.len()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_time_percentiles_are_nearest_rank() {
        let mut f = super::FrameTimes::default();
        assert_eq!(f.percentiles(), None);
        for ms in (1..=100).rev() {
            f.push(ms as f32 / 1e3);
        }
        let (p50, p99, n) = f.percentiles().expect("frames");
        // Sorted 1..=100 ms: index round(99·0.5) = 50 → 51 ms; round(99·0.99) = 98 → 99 ms.
        assert!((p50 - 51.0).abs() < 1e-3 && (p99 - 99.0).abs() < 1e-3 && n == 100);
    }
}
