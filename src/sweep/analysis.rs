//! What a sweep's results say: the Pareto front of size against quality, per-layer
//! sensitivity rankings, and a sparsity target allocated over layers by measured
//! sensitivity.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Axis, PointResult};
use crate::compress::config::{Config, Format, Override};

/// A point's quality: [`crate::eval::Metrics::quality`] (top-1 accuracy, or a
/// language model's top-1 agreement) when measured, else weight SQNR (a proxy).
pub fn quality(r: &PointResult) -> f64 {
    r.metrics.map_or(r.weight_sqnr_db, |m| m.quality())
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
    front_of(results, order)
}

/// Indices of the results no other result beats on both latency (`latency[i]`, ms;
/// `None` where it was not measured, left out) and quality, fastest first.
pub fn latency_front(results: &[PointResult], latency: &[Option<f64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..results.len())
        .filter(|&i| {
            latency
                .get(i)
                .copied()
                .flatten()
                .is_some_and(f64::is_finite)
        })
        .collect();
    let ms = |i: usize| latency[i].unwrap_or(f64::INFINITY);
    order.sort_by(|&a, &b| {
        ms(a)
            .total_cmp(&ms(b))
            .then(quality(&results[b]).total_cmp(&quality(&results[a])))
    });
    front_of(results, order)
}

/// The Pareto front of `order` (cheapest first, among equal costs the best first):
/// each result better than every cheaper one.
fn front_of(results: &[PointResult], order: Vec<usize>) -> Vec<usize> {
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

/// For each of `points` (a quality to maximise, then costs to minimise, such as
/// bytes on disk and latency), the first point that dominates it: as good in every
/// figure and better in one; `None` for the Pareto front. Quadratic in the points:
/// for the handful a user pins, not for sweeps.
pub fn dominated_by<const N: usize>(points: &[(f64, [f64; N])]) -> Vec<Option<usize>> {
    let dominates = |(qa, ca): &(f64, [f64; N]), (qb, cb): &(f64, [f64; N])| {
        let no_worse = qa >= qb && ca.iter().zip(cb).all(|(a, b)| a <= b);
        let better = qa > qb || ca.iter().zip(cb).any(|(a, b)| a < b);
        no_worse && better
    };
    points
        .iter()
        .map(|p| points.iter().position(|other| dominates(other, p)))
        .collect()
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
            // Measured points, where a layer has any, outrank fidelity-only ones of
            // another sweep (the heatmap's).
            if baseline.is_some() && points.iter().any(|p| p.metrics.is_some()) {
                points.retain(|p| p.metrics.is_some());
            }
            points.sort_by(|a, b| a.point.level.total_cmp(&b.point.level));
            let measured = baseline.is_some() && points.iter().all(|p| p.metrics.is_some());
            let drops: Vec<(f64, f64)> = points
                .iter()
                .map(|p| {
                    let drop = match (measured, baseline, p.metrics) {
                        (true, Some(b), Some(m)) => b - m.quality(),
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

/// A column of the sensitivity heatmap: one per-layer curve at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeatColumn {
    pub curve: String,
    pub axis: Axis,
    pub level: f64,
}

impl HeatColumn {
    /// A short heading: `50%` for sparsity, `int4` for bits.
    pub fn heading(&self) -> String {
        match self.axis {
            Axis::Sparsity => format!("{}%", (100.0 * self.level).round()),
            Axis::Bits => format!("int{}", self.level),
        }
    }
}

/// What one layer alone, compressed to one level, costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeatCell {
    /// Weight fidelity of the layer's tensor (a proxy, available for any model).
    pub sqnr_db: f64,
    /// Baseline top-1 minus the point's, where accuracy was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_drop: Option<f64>,
}

/// Layers × levels of the per-layer points: weight SQNR everywhere (data-free, quick
/// on any model), refined by the measured accuracy drop wherever a point was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    /// Most sensitive first: by mean measured drop where measured, else by SQNR.
    pub layers: Vec<String>,
    /// Sparsity columns by level, then bit-width columns from most bits down.
    pub columns: Vec<HeatColumn>,
    /// `cells[layer][column]`; `None` where that point was not run.
    pub cells: Vec<Vec<Option<HeatCell>>>,
}

impl Heatmap {
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// The heatmap of the per-layer points among `results` (points of several sweeps
/// merge: a measured point refines the SQNR-only one of the same layer and level).
/// `baseline` is the uncompressed top-1, needed for drops.
pub fn heatmap(results: &[PointResult], baseline: Option<f64>) -> Heatmap {
    let per_layer: Vec<&PointResult> = results.iter().filter(|r| r.point.layer.is_some()).collect();
    let mut columns: Vec<HeatColumn> = Vec::new();
    for r in &per_layer {
        let c = HeatColumn {
            curve: r.point.curve.clone(),
            axis: r.point.axis,
            level: r.point.level,
        };
        if !columns.contains(&c) {
            columns.push(c);
        }
    }
    columns.sort_by(|a, b| match (a.axis, b.axis) {
        (Axis::Sparsity, Axis::Bits) => std::cmp::Ordering::Less,
        (Axis::Bits, Axis::Sparsity) => std::cmp::Ordering::Greater,
        (Axis::Sparsity, Axis::Sparsity) => a.curve.cmp(&b.curve).then(a.level.total_cmp(&b.level)),
        (Axis::Bits, Axis::Bits) => a.curve.cmp(&b.curve).then(b.level.total_cmp(&a.level)),
    });
    let mut layers: Vec<String> = Vec::new();
    for r in &per_layer {
        if let Some(l) = &r.point.layer
            && !layers.contains(l)
        {
            layers.push(l.clone());
        }
    }
    let mut cells = vec![vec![None::<HeatCell>; columns.len()]; layers.len()];
    for r in &per_layer {
        let Some(li) = layers
            .iter()
            .position(|l| Some(l) == r.point.layer.as_ref())
        else {
            continue;
        };
        let Some(ci) = columns.iter().position(|c| {
            c.curve == r.point.curve && c.axis == r.point.axis && c.level == r.point.level
        }) else {
            continue;
        };
        let drop = match (baseline, r.metrics) {
            (Some(b), Some(m)) => Some(b - m.quality()),
            _ => None,
        };
        let cell = &mut cells[li][ci];
        *cell = Some(HeatCell {
            sqnr_db: r.weight_sqnr_db,
            top1_drop: drop.or(cell.and_then(|c| c.top1_drop)),
        });
    }
    // Rank as `sensitivity` does, on the pruning columns where there are any: mean
    // measured drop first (layers with any), then mean SQNR deficit below 60 dB.
    let ranked: Vec<bool> = {
        let any = columns.iter().any(|c| c.axis == Axis::Sparsity);
        columns
            .iter()
            .map(|c| !any || c.axis == Axis::Sparsity)
            .collect()
    };
    let key = |row: &[Option<HeatCell>]| {
        let cells = || {
            row.iter()
                .zip(&ranked)
                .filter(|(_, r)| **r)
                .filter_map(|(c, _)| *c)
        };
        let drops: Vec<f64> = cells().filter_map(|c| c.top1_drop).collect();
        let deficits: Vec<f64> = cells().map(|c| (60.0 - c.sqnr_db).max(0.0)).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        (!drops.is_empty(), mean(&drops), mean(&deficits))
    };
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by(|&a, &b| {
        let (ma, da, sa) = key(&cells[a]);
        let (mb, db, sb) = key(&cells[b]);
        mb.cmp(&ma)
            .then(db.total_cmp(&da))
            .then(sb.total_cmp(&sa))
            .then(layers[a].cmp(&layers[b]))
    });
    Heatmap {
        layers: order.iter().map(|&i| layers[i].clone()).collect(),
        cells: order.iter().map(|&i| cells[i].clone()).collect(),
        columns,
    }
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

impl Allocation {
    pub const ALL: [Allocation; 3] = [
        Allocation::Sensitivity,
        Allocation::GlobalThreshold,
        Allocation::Uniform,
    ];

    /// The curve name of its points.
    pub fn curve(self) -> &'static str {
        match self {
            Allocation::Uniform => "allocation: uniform",
            Allocation::GlobalThreshold => "allocation: global threshold",
            Allocation::Sensitivity => "allocation: by sensitivity",
        }
    }
}

/// One point per allocation of `target` average sparsity over `layers` (name,
/// parameters), to measure side by side: the user picks the best measured one.
pub fn allocation_points(
    target: f64,
    layers: &[(String, u64)],
    ranking: &[LayerSensitivity],
) -> Vec<super::Point> {
    Allocation::ALL
        .iter()
        .map(|&how| {
            super::Point::new(
                how.curve().into(),
                Axis::Sparsity,
                target,
                None,
                allocate(how, target, layers, ranking),
            )
        })
        .collect()
}

/// Of measured allocation points, the best: highest quality, then fewest bytes.
pub fn best_allocation(results: &[PointResult]) -> Option<&PointResult> {
    results
        .iter()
        .filter(|r| r.point.curve.starts_with("allocation: "))
        .max_by(|a, b| {
            quality(a)
                .total_cmp(&quality(b))
                .then(b.bytes.cmp(&a.bytes))
        })
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

#[cfg(test)]
mod tests {
    use super::dominated_by;

    /// Hand-derived: (top-1, [MB, ms]). B is better than A in every figure; C is
    /// smaller than B but less accurate (a trade-off, not dominated); D ties B in
    /// everything (no better in any: not dominated by B, nor B by it); E is C made
    /// slower.
    #[test]
    fn the_front_of_three_figures_by_hand() {
        let points = [
            (0.90, [2.0, 1.0]), // A
            (0.95, [1.5, 0.8]), // B
            (0.92, [0.5, 0.8]), // C
            (0.95, [1.5, 0.8]), // D
            (0.92, [0.5, 0.9]), // E
        ];
        assert_eq!(
            dominated_by(&points),
            vec![Some(1), None, None, None, Some(2)]
        );
    }
}
