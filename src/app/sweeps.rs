//! Starting the curves' sweeps from the open document (the points a kind asks for,
//! allocations from the sensitivity so far) and reporting every measured point.

use std::sync::Arc;

use super::{SlimApp, curves};
use crate::model::Model;

impl SlimApp {
    /// Start a sweep of the open model (with the attached data, if any).
    pub fn start_sweep(&mut self, kind: curves::SweepKind) {
        let Some(model) = self.loaded().map(|l| l.model.clone()) else {
            return;
        };
        let mut points = kind.points(&model);
        // Data-aware curves beside the data-free ones, where attached data can
        // calibrate them.
        if kind == curves::SweepKind::Curves
            && self
                .attached()
                .is_some_and(|a| a.evaluator.network().collects_statistics())
        {
            points.extend(crate::sweep::data_aware_points());
        }
        self.start_points(kind, points, model);
    }

    /// Measure the allocations of `target` average sparsity over the layers, by the
    /// sensitivity ranking of the per-layer points so far (latest wins).
    pub fn start_allocation(&mut self, target: f64) {
        let (Some(model), Some(c)) = (self.loaded().map(|l| l.model.clone()), &self.curves) else {
            return;
        };
        let baseline = self.attached().map(|a| a.baseline.quality());
        let ranking =
            crate::sweep::analysis::sensitivity(&c.all_results(), "layer magnitude", baseline);
        let points = crate::sweep::analysis::allocation_points(
            target,
            &crate::sweep::layer_sizes(&model),
            &ranking,
        );
        self.start_points(curves::SweepKind::Allocation, points, model);
    }

    fn start_points(
        &mut self,
        kind: curves::SweepKind,
        points: Vec<crate::sweep::Point>,
        model: Arc<Model>,
    ) {
        // The heatmap is weight fidelity only: seconds, whatever the data.
        let accuracy = self
            .attached()
            .filter(|_| kind != curves::SweepKind::Heatmap)
            .map(|a| a.evaluator.clone());
        let notify = self.notifier();
        if let (Some(c), Some(doc)) = (&mut self.curves, &self.doc) {
            c.start(
                kind,
                points,
                model,
                doc.tensor_cache.clone(),
                accuracy,
                notify,
            );
        }
    }

    /// Every measured point as `slimscope sweep -o` writes them, as CSV or JSON, or
    /// `None` with none measured.
    pub(super) fn results_report(&self, csv: bool) -> Option<String> {
        let curves = self.curves.as_ref()?;
        let results = curves.all_results();
        if results.is_empty() {
            return None;
        }
        let baseline = self.attached().map(|a| a.baseline);
        let ranking = crate::sweep::analysis::sensitivity(
            &results,
            "layer magnitude",
            baseline.map(|b| b.quality()),
        );
        let report = crate::sweep::output::Report::new(
            self.loaded()
                .map(|l| l.model.path.display().to_string())
                .unwrap_or_default(),
            self.attached().map(|a| a.data_path.display().to_string()),
            baseline,
            false,
            &results,
            ranking,
        );
        Some(if csv {
            report.to_csv()
        } else {
            report.to_json()
        })
    }
}
