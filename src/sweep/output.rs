//! Sweep results as JSON (everything, for tools) and CSV (one row per point, for
//! spreadsheets and pandas). Every point carries its recipe, so any of them can be
//! re-applied with `slimscope apply`.

use serde::Serialize;

use super::PointResult;
use super::analysis::{LayerSensitivity, latency_front, pareto_front};
use crate::eval::Metrics;
use crate::measure::speed::SweepSpeed;

/// A whole sweep report.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// What quality means here: `accuracy` (measured) or `weight fidelity` (a proxy).
    pub quality: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Metrics>,
    /// Whether the sweep was cancelled (then `points` holds those finished).
    pub cancelled: bool,
    pub points: &'a [PointResult],
    /// Indices into `points` of the size/quality Pareto front, smallest first.
    pub pareto: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitivity: Vec<LayerSensitivity>,
    /// Measured speed of each point's artifact (`sweep --speed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<SweepSpeed>,
    /// Indices into `points` of the latency/quality Pareto front, fastest first
    /// (latency at batch 1 for classifiers, time per generated token for language
    /// models: [`crate::measure::speed::Variant::time_cost`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pareto_latency: Option<Vec<usize>>,
}

impl<'a> Report<'a> {
    pub fn new(
        model: String,
        data: Option<String>,
        baseline: Option<Metrics>,
        cancelled: bool,
        points: &'a [PointResult],
        sensitivity: Vec<LayerSensitivity>,
    ) -> Self {
        Report {
            model,
            quality: if baseline.is_some() {
                "accuracy"
            } else {
                "weight fidelity"
            },
            data,
            baseline,
            cancelled,
            pareto: pareto_front(points),
            points,
            sensitivity,
            speed: None,
            pareto_latency: None,
        }
    }

    /// The report with each point's measured speed, and its latency Pareto front.
    pub fn with_speed(mut self, speed: SweepSpeed) -> Self {
        let latency: Vec<Option<f64>> = speed
            .points
            .iter()
            .map(crate::measure::speed::Variant::time_cost)
            .collect();
        if latency.iter().any(Option::is_some) {
            self.pareto_latency = Some(latency_front(self.points, &latency));
        }
        self.speed = Some(speed);
        self
    }

    pub fn to_json(&self) -> String {
        // Non-finite SQNR (nothing changed) becomes null, as JSON has no infinity.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One row per point; the recipe is the last column (quoted, newlines kept).
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "curve,axis,level,layer,bytes,bits_per_weight,sparsity,weight_sqnr_db,weight_relative_error,top1,top5,loss,perplexity,kl_divergence,top1_agreement,pareto,",
        );
        if self.speed.is_some() {
            out += "bytes_on_disk,p50_ms,samples_per_second,generation_tokens_per_second,pareto_latency,";
        }
        out += "recipe\n";
        let front = &self.pareto;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for (i, r) in self.points.iter().enumerate() {
            let m = r.metrics;
            let row = [
                quote(&r.point.curve),
                format!("{:?}", r.point.axis).to_lowercase(),
                r.point.level.to_string(),
                quote(r.point.layer.as_deref().unwrap_or("")),
                r.bytes.to_string(),
                format!("{:.4}", r.bits_per_weight),
                format!("{:.6}", r.sparsity),
                if r.weight_sqnr_db.is_finite() {
                    format!("{:.3}", r.weight_sqnr_db)
                } else {
                    "inf".into()
                },
                format!("{:.6e}", r.weight_relative_error),
                opt(m.map(|m| m.top1)),
                opt(m.and_then(|m| m.top5)),
                opt(m.map(|m| m.loss)),
                opt(m.and_then(|m| m.language()).map(|l| l.perplexity)),
                opt(m.and_then(|m| m.language()).map(|l| l.kl_divergence)),
                opt(m.and_then(|m| m.language()).map(|l| l.top1_agreement)),
                front.contains(&i).to_string(),
            ];
            out += &row.join(",");
            out.push(',');
            if let Some(speed) = &self.speed {
                let v = speed.points.get(i);
                let figures = v.and_then(|v| v.classifier_figures());
                let fields = [
                    v.map_or(String::new(), |v| v.bytes_on_disk.to_string()),
                    opt(figures.map(|f| f.0)),
                    opt(figures.map(|f| f.1)),
                    opt(v.and_then(|v| v.generation_speed())),
                    self.pareto_latency
                        .as_ref()
                        .is_some_and(|f| f.contains(&i))
                        .to_string(),
                ];
                out += &fields.join(",");
                out.push(',');
            }
            out += &quote(&r.point.recipe);
            out.push('\n');
        }
        out
    }
}

/// A CSV field, quoted when it needs to be (RFC 4180).
fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
