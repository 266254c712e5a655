//! Trade-off curves in the app: sweeps run as jobs on the app's pool, their points
//! filling the plots as they arrive — accuracy (or weight SQNR, without data) against
//! sparsity, against bits per weight, and model size against accuracy with the Pareto
//! front — plus the jobs list with progress, ETA and cancel buttons.

use std::sync::Arc;
use std::time::Duration;

use egui_plot::{AxisHints, Legend, Line, LineStyle, Plot, PlotPoints, Points};

use super::compress::Evaluation;
use crate::compress::apply::TensorCache;
use crate::compress::config::{Format, IntGranularity};
use crate::eval::Network;
use crate::eval::data::Dataset;
use crate::jobs::{JobEvent, JobHandle, Pool};
use crate::model::Model;
use crate::sweep::analysis::{LayerSensitivity, pareto_front, quality, sensitivity};
use crate::sweep::{
    Axis, Point, PointResult, SweepContext, SweepMethod, global_points, per_layer_points,
    sweepable_layers,
};

/// Which sweep a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepKind {
    /// Every pruning method at 0–95% and int8…int2 per channel.
    Curves,
    /// Each layer alone at 10–90% magnitude sparsity.
    Sensitivity,
}

impl SweepKind {
    pub fn label(self) -> &'static str {
        match self {
            SweepKind::Curves => "Sparsity & bit-width curves",
            SweepKind::Sensitivity => "Layer sensitivity",
        }
    }

    fn points(self, model: &Model) -> Vec<Point> {
        match self {
            SweepKind::Curves => {
                let levels: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.05).collect();
                let formats: Vec<Format> = [8, 6, 4, 3, 2]
                    .map(|bits| Format::Int {
                        bits,
                        granularity: IntGranularity::Channel,
                        mse_clip: false,
                    })
                    .to_vec();
                global_points(&SweepMethod::ALL, &levels, &formats)
            }
            SweepKind::Sensitivity => {
                let levels: Vec<f64> = (1..10).map(|i| f64::from(i) * 0.1).collect();
                per_layer_points(&sweepable_layers(model), &levels, &[])
            }
        }
    }
}

/// How a run ended, or that it is still going.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Queued,
    Running,
    Finished,
    Failed(String),
    Cancelled,
}

/// One sweep and what it has produced so far.
pub struct SweepRun {
    pub kind: SweepKind,
    pub state: RunState,
    pub done: usize,
    pub total: usize,
    pub eta: Option<Duration>,
    /// Points measured so far, in arrival order.
    pub results: Vec<PointResult>,
    /// Whether accuracy was measured (else weight fidelity).
    pub measured: bool,
    job: Option<JobHandle<(), (usize, PointResult)>>,
}

impl SweepRun {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }
}

/// The sweeps of the open model.
pub struct Curves {
    pool: Arc<Pool>,
    cache: Arc<TensorCache>,
    pub runs: Vec<SweepRun>,
}

impl Curves {
    pub fn new(pool: Arc<Pool>) -> Self {
        Curves {
            pool,
            cache: Arc::new(TensorCache::new(1 << 30)),
            runs: Vec::new(),
        }
    }

    /// Forget everything (a new model was opened); running sweeps are cancelled.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.cache = Arc::new(TensorCache::new(1 << 30));
    }

    /// Start a sweep of `kind`; a running one of the same kind is replaced.
    pub fn start(
        &mut self,
        kind: SweepKind,
        model: Arc<Model>,
        accuracy: Option<(Arc<Network>, Arc<Dataset>)>,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        let points = kind.points(&model);
        let total = points.len();
        let measured = accuracy.is_some();
        let cache = self.cache.clone();
        let job = self.pool.submit_latest::<(), (usize, PointResult), _>(
            kind.label(),
            notify,
            move |progress| {
                let ctx = SweepContext {
                    model: &model,
                    accuracy: accuracy.as_ref().map(|(n, d)| (n.as_ref(), d.as_ref())),
                    cache: &cache,
                };
                crate::sweep::run_job(&ctx, &points, progress)
            },
        );
        for r in self
            .runs
            .iter_mut()
            .filter(|r| r.kind == kind && r.is_running())
        {
            r.state = RunState::Cancelled;
            r.job = None;
        }
        self.runs.push(SweepRun {
            kind,
            state: RunState::Queued,
            done: 0,
            total,
            eta: None,
            results: Vec::new(),
            measured,
            job: Some(job),
        });
    }

    /// Drain the runs' events (never blocks).
    pub fn poll(&mut self) {
        for run in &mut self.runs {
            let Some(job) = &run.job else {
                continue;
            };
            let mut ended = false;
            while let Ok(event) = job.events.try_recv() {
                match event {
                    JobEvent::Started => run.state = RunState::Running,
                    JobEvent::Progress { done, total, eta } => {
                        (run.done, run.total, run.eta) = (done, total, eta);
                    }
                    JobEvent::Point((_, r)) => run.results.push(r),
                    JobEvent::Finished(()) => {
                        run.state = RunState::Finished;
                        ended = true;
                    }
                    JobEvent::Failed(m) => {
                        run.state = RunState::Failed(m);
                        ended = true;
                    }
                    JobEvent::Cancelled => {
                        run.state = RunState::Cancelled;
                        ended = true;
                    }
                }
            }
            if ended {
                run.job = None;
            }
        }
    }

    pub fn cancel(&mut self, index: usize) {
        if let Some(job) = self.runs.get(index).and_then(|r| r.job.as_ref()) {
            job.cancel();
        }
    }

    pub fn any_running(&self) -> bool {
        self.runs.iter().any(SweepRun::is_running)
    }

    /// Every point measured so far, newest runs last.
    fn all_results(&self) -> Vec<PointResult> {
        self.runs
            .iter()
            .flat_map(|r| r.results.iter().cloned())
            .collect()
    }
}

/// What the curves panel asks the app to do.
pub enum CurvesAction {
    Start(SweepKind),
}

/// The jobs list: progress, ETA and cancel for running sweeps; how the others ended.
fn jobs_ui(ui: &mut egui::Ui, curves: &mut Curves) {
    let mut cancel = None;
    for (i, run) in curves.runs.iter().enumerate().rev() {
        ui.horizontal(|ui| {
            let state = match &run.state {
                RunState::Queued => "queued".to_owned(),
                RunState::Running => "running".to_owned(),
                RunState::Finished => "finished".to_owned(),
                RunState::Failed(m) => format!("failed: {m}"),
                RunState::Cancelled => "cancelled".to_owned(),
            };
            ui.label(format!("{} — {state}", run.kind.label()));
            let fraction = if run.total == 0 {
                0.0
            } else {
                run.done as f32 / run.total as f32
            };
            let eta = run
                .eta
                .filter(|_| run.is_running())
                .map_or(String::new(), |e| format!(" · ETA {}s", e.as_secs()));
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(180.0)
                    .text(format!("{} of {} points{eta}", run.done, run.total)),
            );
            if run.is_running()
                && ui
                    .button("Cancel")
                    .on_hover_text("Stop this sweep; the points measured so far stay on the plots")
                    .clicked()
            {
                cancel = Some(i);
            }
        });
    }
    if let Some(i) = cancel {
        curves.cancel(i);
    }
}

/// A curve's name and points, for one axis.
fn lines(results: &[PointResult], axis: Axis, measured: bool) -> Vec<(String, Vec<[f64; 2]>)> {
    let mut names: Vec<&str> = results
        .iter()
        .filter(|r| r.point.axis == axis && r.point.layer.is_none())
        .map(|r| r.point.curve.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let mut pts: Vec<[f64; 2]> = results
                .iter()
                .filter(|r| {
                    r.point.curve == name && r.point.axis == axis && r.point.layer.is_none()
                })
                .map(|r| [x_of(r), y_of(r, measured)])
                .collect();
            pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
            pts.dedup_by(|a, b| a[0] == b[0]);
            (name.to_owned(), pts)
        })
        .collect()
}

fn x_of(r: &PointResult) -> f64 {
    match r.point.axis {
        Axis::Sparsity => 100.0 * r.point.level,
        Axis::Bits => r.point.level,
    }
}

/// Accuracy in percent, or weight SQNR in dB (capped: an untouched model is +∞).
fn y_of(r: &PointResult, measured: bool) -> f64 {
    if measured {
        100.0 * quality(r)
    } else {
        r.weight_sqnr_db.min(80.0)
    }
}

/// Axes that label every few ticks even on a narrow plot (egui_plot's default
/// spacing leaves one label).
fn axis_x(label: &str) -> AxisHints<'static> {
    AxisHints::new_x()
        .label(label.to_owned())
        .label_spacing(25.0..=40.0)
}

fn axis_y(label: &str) -> AxisHints<'static> {
    AxisHints::new_y()
        .label(label.to_owned())
        .label_spacing(15.0..=25.0)
}

/// The curves tab.
pub fn ui(
    ui: &mut egui::Ui,
    curves: &mut Curves,
    can_measure: bool,
    current: Option<&Evaluation>,
    baseline_top1: Option<f64>,
    actions: &mut Vec<CurvesAction>,
) {
    ui.horizontal(|ui| {
        for kind in [SweepKind::Curves, SweepKind::Sensitivity] {
            let tip = match kind {
                SweepKind::Curves => "Every pruning method at 0–95% sparsity (global and per-tensor magnitude, random, structured rows, 2:4) and int8…int2 per channel",
                SweepKind::Sensitivity => "Each layer alone magnitude-pruned to 10–90%, the others untouched: which layers can take it",
            };
            if ui.button(format!("Run: {}", kind.label())).on_hover_text(tip).clicked() {
                actions.push(CurvesAction::Start(kind));
            }
        }
    });
    if !can_measure {
        ui.label("No data attached: the curves show weight SQNR (dB), a fidelity proxy, not accuracy. Attach a data set to measure accuracy.");
    }
    jobs_ui(ui, curves);
    let results = curves.all_results();
    let measured =
        curves.runs.iter().any(|r| r.measured) && results.iter().all(|r| r.metrics.is_some());
    ui.label(format!("{} points measured", results.len()));
    if results.is_empty() {
        return;
    }
    let y_label = if measured {
        "top-1 accuracy (%)"
    } else {
        "weight SQNR (dB, fidelity)"
    };
    let height = ((ui.available_height() - 40.0) / 3.0).max(140.0);
    let current_top1 = current
        .and_then(|e| e.accuracy)
        .map(|(_, m)| 100.0 * m.top1);

    // Accuracy vs sparsity: global curves solid, per-layer sensitivity dashed.
    let sensitivity_curves: Vec<LayerSensitivity> =
        sensitivity(&results, "layer magnitude", baseline_top1);
    Plot::new("vs sparsity")
        .height(height)
        .legend(Legend::default())
        .custom_x_axes(vec![axis_x("sparsity (%)")])
        .custom_y_axes(vec![axis_y(y_label)])
        .allow_scroll(false)
        .show(ui, |plot| {
            for (name, pts) in lines(&results, Axis::Sparsity, measured) {
                plot.line(Line::new(name.clone(), PlotPoints::from(pts.clone())));
                plot.points(Points::new(name, PlotPoints::from(pts)).radius(2.5));
            }
            for s in &sensitivity_curves {
                let pts: Vec<[f64; 2]> = results
                    .iter()
                    .filter(|r| r.point.layer.as_deref() == Some(&s.layer))
                    .map(|r| [x_of(r), y_of(r, measured)])
                    .collect();
                let mut pts = pts;
                pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
                plot.line(
                    Line::new(format!("layer {}", s.layer), PlotPoints::from(pts))
                        .style(LineStyle::dashed_loose()),
                );
            }
            if let (Some(e), Some(y)) = (current, current_top1) {
                plot.points(
                    Points::new(
                        "current",
                        PlotPoints::from(vec![[e.config.sparsity_pct, y]]),
                    )
                    .radius(6.0)
                    .shape(egui_plot::MarkerShape::Diamond),
                );
            }
        });
    Plot::new("vs bits")
        .height(height)
        .legend(Legend::default())
        .custom_x_axes(vec![axis_x("bits per weight (nominal)")])
        .custom_y_axes(vec![axis_y(y_label)])
        .allow_scroll(false)
        .show(ui, |plot| {
            for (name, pts) in lines(&results, Axis::Bits, measured) {
                plot.line(Line::new(name.clone(), PlotPoints::from(pts.clone())));
                plot.points(Points::new(name, PlotPoints::from(pts)).radius(2.5));
            }
        });
    let global: Vec<PointResult> = results
        .iter()
        .filter(|r| r.point.layer.is_none())
        .cloned()
        .collect();
    let front = pareto_front(&global);
    Plot::new("size vs accuracy")
        .height(height)
        .legend(Legend::default())
        .custom_x_axes(vec![axis_x("model size (MB)")])
        .custom_y_axes(vec![axis_y(y_label)])
        .allow_scroll(false)
        .show(ui, |plot| {
            let all: Vec<[f64; 2]> = global
                .iter()
                .map(|r| [r.bytes as f64 / 1e6, y_of(r, measured)])
                .collect();
            plot.points(Points::new("configurations", PlotPoints::from(all)).radius(2.5));
            let front_pts: Vec<[f64; 2]> = front
                .iter()
                .map(|&i| [global[i].bytes as f64 / 1e6, y_of(&global[i], measured)])
                .collect();
            plot.line(Line::new("Pareto front", PlotPoints::from(front_pts)).width(2.0));
            if let (Some(e), Some(y)) = (current, current_top1) {
                plot.points(
                    Points::new(
                        "current",
                        PlotPoints::from(vec![[e.bytes_after as f64 / 1e6, y]]),
                    )
                    .radius(6.0)
                    .shape(egui_plot::MarkerShape::Diamond),
                );
            }
        });
    if !sensitivity_curves.is_empty() {
        ui.label(format!(
            "Most sensitive layers (mean {} drop over 10–90%): {}",
            if measured { "top-1" } else { "weight-SQNR" },
            sensitivity_curves
                .iter()
                .take(5)
                .map(|s| format!(
                    "{} {:.2}{}",
                    s.layer,
                    if measured { 100.0 * s.score } else { s.score },
                    if measured { " pts" } else { " dB" }
                ))
                .collect::<Vec<_>>()
                .join(" · ")
        ));
    }
}
