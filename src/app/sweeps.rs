//! Starting the curves' sweeps from the open document (the points a kind asks for,
//! allocations from the sensitivity so far) and reporting every measured point.

use std::sync::Arc;

use super::{SlimApp, curves};
use crate::eval::evaluator::Evaluator;
use crate::model::Model;

/// The evaluation the curves are measured on when they include the data-aware
/// methods: every point (the dense one too) on the data less the calibration samples
/// kept apart, so the curves compare on the same images. Or why the data-aware
/// curves are left out.
fn data_aware_evaluator(
    evaluator: &Arc<Evaluator>,
    model: &Model,
) -> Result<Arc<Evaluator>, String> {
    let left_out = "Data-aware curves (Wanda, SparseGPT, GPTQ) left out";
    if evaluator.network().learns_block_by_block() {
        // The bundled text's four windows cannot spare calibration samples.
        return Err(format!(
            "{left_out}: a language model calibrates on a text of its own, block by \
             block (`slimscope eval MODEL --recipe R --calibration TEXT`)"
        ));
    }
    let layers = evaluator
        .network()
        .calibrated_layers(model)
        .map_err(|e| format!("{left_out}: {e}"))?;
    // The curves' rules cover every sweepable tensor; each must be a layer the data
    // runs through for its inputs to be learned from.
    if let Some(other) = crate::sweep::sweepable_layers(model)
        .into_iter()
        .find(|t| !layers.contains(t))
    {
        return Err(format!(
            "{left_out}: `{other}` is not the weight of a convolution, Gemm or MatMul the \
             data runs through, so its inputs cannot be learned from"
        ));
    }
    evaluator
        .keeping_apart(crate::compress::calibration::CalibrationSpec::DEFAULT_SAMPLES)
        .map_err(|e| format!("{left_out}: {e}"))
}

impl SlimApp {
    /// Start a sweep of the open model (with the attached data, if any).
    pub fn start_sweep(&mut self, kind: curves::SweepKind) {
        let Some(model) = self.loaded().map(|l| l.model.clone()) else {
            return;
        };
        let mut points = kind.points(&model);
        let mut accuracy = None;
        if kind == curves::SweepKind::Curves {
            let data_aware = self
                .attached()
                .filter(|a| a.evaluator.network().collects_statistics())
                .map(|a| data_aware_evaluator(&a.evaluator, &model));
            let note = match data_aware {
                Some(Ok(split)) => {
                    points.extend(crate::sweep::data_aware_points());
                    accuracy = Some(split);
                    None
                }
                Some(Err(why)) => Some(why),
                None => None,
            };
            if let Some(c) = &mut self.curves {
                c.data_aware_note = note;
            }
        }
        self.start_points(kind, points, model, accuracy);
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
        self.start_points(curves::SweepKind::Allocation, points, model, None);
    }

    fn start_points(
        &mut self,
        kind: curves::SweepKind,
        points: Vec<crate::sweep::Point>,
        model: Arc<Model>,
        accuracy: Option<Arc<Evaluator>>,
    ) {
        // The heatmap is weight fidelity only: seconds, whatever the data.
        let accuracy = accuracy.or_else(|| {
            self.attached()
                .filter(|_| kind != curves::SweepKind::Heatmap)
                .map(|a| a.evaluator.clone())
        });
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
