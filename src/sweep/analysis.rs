//! What a sweep's results say: the Pareto front of size against quality, per-layer
//! sensitivity rankings, and a sparsity target allocated over layers by measured
//! sensitivity.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Axis, PointResult};
use crate::compress::config::{Config, Format, Override};

/// A point's quality: top-1 accuracy when measured, else weight SQNR (a proxy).
pub fn quality(r: &PointResult) -> f64 {
    r.metrics.map_or(r.weight_sqnr_db, |m| m.top1)
}

/// Indices of the results no other result beats on both size (fewer bytes) and
/// quality (see [`quality`]), smallest first.
pub fn pareto_front(results: &[PointResult]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..results.len()).collect();
    // Smallest first; among equal sizes the best first, so it alone can be on the front.
    order.sort_by(|&a, &b| {
        results[a]
            .bytes
            .cmp(&results[b].bytes)
            .then(quality(&results[b]).total_cmp(&quality(&results[a])))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        let q = quality(&results[i]);
        if q > best {
            front.push(i);
            best = q;
        }
    }
    front
}

/// How much one layer's compression alone costs, level by level.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    pub layer: String,
    pub curve: String,
    /// (level, drop): baseline quality minus the point's, in accuracy (fraction) when
    /// measured, else in weight SQNR dB below the best level's.
    pub drops: Vec<(f64, f64)>,
    /// Mean drop over the levels: the ranking key.
    pub score: f64,
    /// Whether the drops are measured accuracy (else weight fidelity).
    pub measured: bool,
}

/// Rank the layers of per-layer points (those with a `layer`) of `curve` by their mean
/// drop from `baseline` (the uncompressed model's top-1), most sensitive first. Without
/// accuracy, the drop is the fall of weight SQNR from 60 dB (a layer pruned to SQNR
/// ≥ 60 dB is as good as untouched), so layers still rank, labelled as fidelity.
pub fn sensitivity(
    results: &[PointResult],
    curve: &str,
    baseline: Option<f64>,
) -> Vec<LayerSensitivity> {
    let mut by_layer: BTreeMap<&str, Vec<&PointResult>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.point.curve == curve) {
        if let Some(l) = &r.point.layer {
            by_layer.entry(l).or_default().push(r);
        }
    }
    let mut out: Vec<LayerSensitivity> = by_layer
        .into_iter()
        .map(|(layer, mut points)| {
            points.sort_by(|a, b| a.point.level.total_cmp(&b.point.level));
            let measured = baseline.is_some() && points.iter().all(|p| p.metrics.is_some());
            let drops: Vec<(f64, f64)> = points
                .iter()
                .map(|p| {
                    let drop = match (measured, baseline, p.metrics) {
                        (true, Some(b), Some(m)) => b - m.top1,
                        _ => (60.0 - p.weight_sqnr_db).max(0.0),
                    };
                    (p.point.level, drop)
                })
                .collect();
            let score = drops.iter().map(|d| d.1).sum::<f64>() / drops.len().max(1) as f64;
            LayerSensitivity {
                layer: layer.to_owned(),
                curve: curve.to_owned(),
                drops,
                score,
                measured,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.layer.cmp(&b.layer)));
    out
}

/// How one average sparsity is spread over layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// Every layer the same sparsity.
    Uniform,
    /// One magnitude threshold across all layers.
    GlobalThreshold,
    /// Sparsity in inverse proportion to each layer's measured sensitivity.
    Sensitivity,
}

/// Layers sparser than this are not allocated more: 99% leaves a layer nearly empty.
const MAX_LAYER_SPARSITY: f64 = 0.99;

/// A configuration reaching `target` average sparsity (weighted by parameters) over
/// `layers` (name, parameter count), spread as `how` says. `ranking` (from
/// [`sensitivity`]) is needed for [`Allocation::Sensitivity`]; a layer missing from
/// it counts as the most sensitive one.
pub fn allocate(
    how: Allocation,
    target: f64,
    layers: &[(String, u64)],
    ranking: &[LayerSensitivity],
) -> Config {
    let target = target.clamp(0.0, MAX_LAYER_SPARSITY);
    match how {
        Allocation::GlobalThreshold => super::SweepMethod::Global.config(target),
        Allocation::Uniform => per_layer(layers.iter().map(|(n, _)| (n.clone(), target))),
        Allocation::Sensitivity => {
            let worst = ranking.iter().map(|s| s.score).fold(0.0, f64::max);
            // A floor keeps insensitive layers from dividing by zero: 1% of the worst.
            let floor = (worst * 0.01).max(1e-6);
            let weights: Vec<f64> = layers
                .iter()
                .map(|(n, _)| {
                    let s = ranking
                        .iter()
                        .find(|r| &r.layer == n)
                        .map_or(worst, |r| r.score);
                    1.0 / s.max(floor)
                })
                .collect();
            let total: f64 = layers.iter().map(|l| l.1 as f64).sum();
            let average = |c: f64| {
                layers
                    .iter()
                    .zip(&weights)
                    .map(|((_, p), w)| *p as f64 * (c * w).min(MAX_LAYER_SPARSITY))
                    .sum::<f64>()
                    / total.max(1.0)
            };
            // average(c) rises with c: bisect for the target.
            let (mut lo, mut hi) = (0.0, 1.0);
            while average(hi) < target && hi < 1e12 {
                hi *= 2.0;
            }
            for _ in 0..100 {
                let mid = 0.5 * (lo + hi);
                if average(mid) < target {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            per_layer(
                layers
                    .iter()
                    .zip(&weights)
                    .map(|((n, _), w)| (n.clone(), (hi * w).min(MAX_LAYER_SPARSITY))),
            )
        }
    }
}

fn per_layer(sparsities: impl Iterator<Item = (String, f64)>) -> Config {
    let mut c = Config::default();
    for (name, s) in sparsities {
        // Whole tenths of a percent: recipes stay readable, the average within 0.1%.
        let pct = (1000.0 * s).round() / 10.0;
        c.overrides.insert(
            name,
            Override {
                sparsity_pct: pct,
                format: Format::Keep,
            },
        );
    }
    c
}

/// The results of one curve, by level (for plots and monotonicity checks).
pub fn curve<'a>(results: &'a [PointResult], curve: &str, axis: Axis) -> Vec<&'a PointResult> {
    let mut points: Vec<&PointResult> = results
        .iter()
        .filter(|r| r.point.curve == curve && r.point.axis == axis && r.point.layer.is_none())
        .collect();
    points.sort_by(|a, b| a.point.level.total_cmp(&b.point.level));
    points
}
