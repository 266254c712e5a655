//! Trade-off curves in the app: sweeps run as jobs on the app's pool, their points
//! filling the plots as they arrive — accuracy (or weight SQNR, without data) against
//! sparsity, against bits per weight, and model size against accuracy with the Pareto
//! front — plus the jobs list with progress, ETA and cancel buttons.

use std::sync::Arc;
use std::time::Duration;

use egui_plot::{AxisHints, Legend, Line, LineStyle, Plot, PlotPoints, Points};

use crate::app::Command;
use crate::compress::apply::TensorCache;
use crate::eval::causal_lm::LanguageMetrics;
use crate::eval::evaluator::Evaluator;
use crate::jobs::{JobEvent, JobHandle, Pool, spawn_job};
use crate::measure::evaluation::Evaluation;
use crate::model::Model;
use crate::sweep::analysis::{
    HeatCell, Heatmap, LayerSensitivity, best_allocation, heatmap, pareto_front, quality,
    sensitivity,
};
use crate::sweep::{
    Axis, Point, PointResult, SweepContext, full_global_points, per_layer_points, sweepable_layers,
};

/// Per-layer sparsity levels: 10–90%, the same in the heatmap and the measured
/// sensitivity, so measured cells refine the heatmap's.
const LAYER_LEVELS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Which sweep a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepKind {
    /// Every pruning method at 0–95% and int8…int2 per channel.
    Curves,
    /// Each layer alone at 10–90% magnitude sparsity.
    Sensitivity,
    /// Each layer alone at 10–90% sparsity and int8…int2, weight fidelity only: quick
    /// on any model, with or without data.
    Heatmap,
    /// One average sparsity spread over the layers three ways, measured side by side.
    Allocation,
}

impl SweepKind {
    pub fn label(self) -> &'static str {
        match self {
            SweepKind::Curves => "Sparsity & bit-width curves",
            SweepKind::Sensitivity => "Layer sensitivity",
            SweepKind::Heatmap => "Layer fidelity heatmap",
            SweepKind::Allocation => "Allocation",
        }
    }

    /// Its points (allocations are built from a sensitivity ranking instead).
    pub fn points(self, model: &Model) -> Vec<Point> {
        match self {
            SweepKind::Curves if crate::eval::causal_lm::is_causal_lm(model) => {
                crate::sweep::language_points()
            }
            SweepKind::Curves => full_global_points(),
            SweepKind::Sensitivity => {
                per_layer_points(&sweepable_layers(model), &LAYER_LEVELS, &[])
            }
            SweepKind::Heatmap => {
                per_layer_points(&sweepable_layers(model), &LAYER_LEVELS, &[8, 6, 4, 3, 2])
            }
            SweepKind::Allocation => Vec::new(),
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
    pub runs: Vec<SweepRun>,
    pub view: CurvesView,
    /// The allocation slider: average sparsity, percent.
    pub target_pct: f64,
    /// The level last asked to allocate (a typed level is asked once typed).
    allocated_pct: Option<f64>,
    /// Where the plots were drawn last frame (points), for saving them as PNG.
    pub plots_rect: Option<egui::Rect>,
    /// What the plots and the heatmap draw, derived from the points (see [`Snapshot`]).
    snapshot: Option<(SnapshotKey, Arc<Snapshot>)>,
    /// A newer snapshot being derived on a worker, and when the last one started.
    deriving: Option<(SnapshotKey, JobHandle<Snapshot>)>,
    last_derived: Option<std::time::Instant>,
    /// Why the last curves sweep left the data-aware methods out, if it did.
    pub data_aware_note: Option<String>,
}

/// What a snapshot was derived from: runs, points, baseline (bits).
type SnapshotKey = (usize, usize, Option<u64>);

/// Per-layer sensitivity lines drawn on the sparsity plot (the most sensitive
/// first); every layer is in the Layers view's heatmap.
pub const LAYER_LINES: usize = 8;

/// While points stream in, the plots are re-derived at most this often: a sweep of
/// thousands of points costs the UI a few derivations a second, not one per frame.
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Everything the curves tab draws, derived once from the points (not every frame).
pub struct Snapshot {
    /// The points the plots show (only measured ones when any are).
    pub results: Vec<PointResult>,
    pub measured: bool,
    /// Layers by sensitivity over the points shown.
    pub ranking: Vec<LayerSensitivity>,
    /// Layers by sensitivity over every point (measured drops where there are some,
    /// weight SQNR elsewhere): what allocations use.
    pub all_ranking: Vec<LayerSensitivity>,
    sparsity_lines: Vec<(String, Vec<[f64; 2]>)>,
    bits_lines: Vec<(String, Vec<[f64; 2]>)>,
    layer_lines: Vec<(String, Vec<[f64; 2]>)>,
    /// (x, y, index into `results`) of each clickable point, per plot.
    by_sparsity: Vec<([f64; 2], usize)>,
    by_bits: Vec<([f64; 2], usize)>,
    by_size: Vec<([f64; 2], usize)>,
    front: Vec<[f64; 2]>,
    /// A language model's perplexity (log10: pruning can multiply it a hundredfold)
    /// and KL divergence per curve, against the whole model's bits per weight (empty
    /// for other models).
    perplexity_lines: Vec<(String, Vec<[f64; 2]>)>,
    kl_lines: Vec<(String, Vec<[f64; 2]>)>,
    /// What the quality shown is (see [`crate::eval::Metrics::quality_name`]).
    quality_name: &'static str,
    /// Every point, measured or not (the heatmap and allocation use them all).
    pub all: Vec<PointResult>,
    pub heatmap: Heatmap,
}

impl Snapshot {
    fn new(all: Vec<PointResult>, baseline_top1: Option<f64>) -> Snapshot {
        let measured = all.iter().any(|r| r.metrics.is_some());
        let results: Vec<PointResult> = all
            .iter()
            .filter(|r| !measured || r.metrics.is_some())
            .cloned()
            .collect();
        let ranking = sensitivity(&results, "layer magnitude", baseline_top1);
        let mut per_layer: std::collections::HashMap<&str, Vec<[f64; 2]>> =
            std::collections::HashMap::new();
        let shown: std::collections::HashSet<&str> = ranking
            .iter()
            .take(LAYER_LINES)
            .map(|s| s.layer.as_str())
            .collect();
        for r in &results {
            if let Some(layer) = r.point.layer.as_deref()
                && r.point.axis == Axis::Sparsity
                && shown.contains(layer)
            {
                per_layer
                    .entry(layer)
                    .or_default()
                    .push([x_of(r), y_of(r, measured)]);
            }
        }
        let layer_lines = ranking
            .iter()
            .take(LAYER_LINES)
            .filter_map(|s| {
                let mut pts = per_layer.remove(s.layer.as_str())?;
                pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
                Some((format!("layer {}", s.layer), pts))
            })
            .collect();
        let on_axis = |axis: Axis| -> Vec<([f64; 2], usize)> {
            results
                .iter()
                .enumerate()
                .filter(|(_, r)| r.point.axis == axis)
                .map(|(i, r)| ([x_of(r), y_of(r, measured)], i))
                .collect()
        };
        let global: Vec<usize> = (0..results.len())
            .filter(|&i| results[i].point.layer.is_none())
            .collect();
        let global_results: Vec<PointResult> = global.iter().map(|&i| results[i].clone()).collect();
        let size_of = |r: &PointResult| [r.bytes as f64 / 1e6, y_of(r, measured)];
        let front = pareto_front(&global_results)
            .into_iter()
            .map(|k| size_of(&global_results[k]))
            .collect();
        let by_size = global.iter().map(|&i| (size_of(&results[i]), i)).collect();
        let heatmap = heatmap(&all, baseline_top1);
        let all_ranking = sensitivity(&all, "layer magnitude", baseline_top1);
        let language_line = |value: fn(&LanguageMetrics) -> f64| {
            let mut by_curve: Vec<(String, Vec<[f64; 2]>)> = Vec::new();
            for r in global.iter().map(|&i| &results[i]) {
                let Some(l) = r.metrics.and_then(|m| m.language()) else {
                    continue;
                };
                let xy = [r.bits_per_weight, value(&l)];
                match by_curve.iter_mut().find(|(c, _)| *c == r.point.curve) {
                    Some((_, pts)) => pts.push(xy),
                    None => by_curve.push((r.point.curve.clone(), vec![xy])),
                }
            }
            for (_, pts) in &mut by_curve {
                pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
            }
            by_curve
        };
        Snapshot {
            perplexity_lines: language_line(|l| l.perplexity.log10()),
            kl_lines: language_line(|l| l.kl_divergence),
            quality_name: results
                .iter()
                .find_map(|r| r.metrics.map(|m| m.quality_name()))
                .unwrap_or("top-1"),
            sparsity_lines: lines(&results, Axis::Sparsity, measured),
            bits_lines: lines(&results, Axis::Bits, measured),
            layer_lines,
            by_sparsity: on_axis(Axis::Sparsity),
            by_bits: on_axis(Axis::Bits),
            by_size,
            front,
            results,
            measured,
            ranking,
            all_ranking,
            all,
            heatmap,
        }
    }
}

/// What the curves tab shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurvesView {
    /// Accuracy against sparsity and bits, size against accuracy.
    Plots,
    /// The layers × levels heatmap and the sparsity allocation.
    Layers,
}

impl Curves {
    /// The worker pool sweeps (and training) run on.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn new(pool: Arc<Pool>) -> Self {
        Curves {
            pool,
            runs: Vec::new(),
            view: CurvesView::Plots,
            target_pct: 70.0,
            allocated_pct: None,
            plots_rect: None,
            snapshot: None,
            deriving: None,
            last_derived: None,
            data_aware_note: None,
        }
    }

    /// Forget everything (a new model was opened); running sweeps are cancelled.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.snapshot = None;
        self.deriving = None;
        self.data_aware_note = None;
    }

    /// Start a sweep of `kind` over `points`; a running one of the same kind is
    /// replaced (latest wins).
    pub fn start(
        &mut self,
        kind: SweepKind,
        points: Vec<Point>,
        model: Arc<Model>,
        cache: Arc<TensorCache>,
        accuracy: Option<Arc<Evaluator>>,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        let total = points.len();
        let measured = accuracy.is_some();
        let job = self.pool.submit_latest::<(), (usize, PointResult), _>(
            kind.label(),
            notify,
            move |progress| {
                let ctx = SweepContext {
                    model: &model,
                    accuracy: accuracy.as_deref(),
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
                        run.state = RunState::Failed(m.to_string());
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

    fn snapshot_key(&self, baseline_top1: Option<f64>) -> SnapshotKey {
        (
            self.runs.len(),
            self.runs.iter().map(|r| r.results.len()).sum(),
            baseline_top1.map(f64::to_bits),
        )
    }

    /// Whether what the tab draws is derived from every point there is (tests wait
    /// for this).
    pub fn is_settled(&self, baseline_top1: Option<f64>) -> bool {
        let key = self.snapshot_key(baseline_top1);
        self.snapshot.as_ref().is_some_and(|(k, _)| *k == key) && self.deriving.is_none()
    }

    /// What the tab draws. When points have arrived it is re-derived on a worker (at
    /// most every [`SNAPSHOT_EVERY`] while a sweep streams them in); until then the
    /// previous one is drawn, so a sweep of thousands of points costs the UI thread
    /// one copy of the points a few times a second.
    pub fn snapshot(&mut self, ctx: &egui::Context, baseline_top1: Option<f64>) -> Arc<Snapshot> {
        if let Some((key, job)) = &self.deriving
            && let Some(end) = job.try_end()
        {
            if let JobEvent::Finished(snap) = end {
                self.snapshot = Some((*key, Arc::new(snap)));
            }
            self.deriving = None;
        }
        let key = self.snapshot_key(baseline_top1);
        let stale = self.snapshot.as_ref().is_none_or(|(k, _)| *k != key);
        if stale && self.deriving.is_none() {
            let wait = self
                .last_derived
                .filter(|_| self.any_running())
                .map_or(std::time::Duration::ZERO, |at| {
                    SNAPSHOT_EVERY.saturating_sub(at.elapsed())
                });
            if wait.is_zero() {
                let all = self.all_results();
                let waker = ctx.clone();
                self.deriving = Some((
                    key,
                    spawn_job(
                        "curves",
                        move || waker.request_repaint(),
                        move |_| Ok(Snapshot::new(all, baseline_top1)),
                    ),
                ));
                self.last_derived = Some(std::time::Instant::now());
            } else {
                ctx.request_repaint_after(wait);
            }
        }
        match &self.snapshot {
            Some((_, snap)) => snap.clone(),
            None => Arc::new(Snapshot::new(Vec::new(), baseline_top1)),
        }
    }

    /// Every point measured so far, newest runs last.
    pub fn all_results(&self) -> Vec<PointResult> {
        self.runs
            .iter()
            .flat_map(|r| r.results.iter().cloned())
            .collect()
    }
}

/// The jobs list: progress, ETA and cancel for running sweeps; how the newest run of
/// each kind ended (older ones are counted, their points stay on the plots).
fn jobs_ui(ui: &mut egui::Ui, curves: &mut Curves) {
    let mut cancel = None;
    let mut ended_kinds: Vec<SweepKind> = Vec::new();
    let mut older = 0;
    for (i, run) in curves.runs.iter().enumerate().rev() {
        if !run.is_running() && run.state != RunState::Queued {
            if ended_kinds.contains(&run.kind) {
                older += 1;
                continue;
            }
            ended_kinds.push(run.kind);
        }
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
    if older > 0 {
        ui.weak(format!(
            "{older} earlier run(s) ended; their points stay on the plots"
        ));
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

/// A plot of the curves tab: labelled axes, no scroll-zoom (the tab scrolls). The
/// main plots draw their legend above themselves ([`legend_row`]), off the data;
/// the others put egui_plot's in `corner`.
fn plot(id: &str, height: f32, x: &str, y: &str, corner: egui_plot::Corner) -> Plot<'static> {
    Plot::new(id.to_owned())
        .height(height)
        .legend(Legend::default().position(corner))
        .custom_x_axes(vec![axis_x(x)])
        .custom_y_axes(vec![axis_y(y)])
        .allow_scroll(false)
}

/// One of the three main plots: [`plot`] with its legend drawn above it instead.
fn main_plot<'a>(id: &str, height: f32, x: &str, y: &str) -> Plot<'a> {
    Plot::new(id.to_owned())
        .height(height)
        .custom_x_axes(vec![axis_x(x)])
        .custom_y_axes(vec![axis_y(y)])
        .allow_scroll(false)
}

/// Curve `i`'s colour (Tableau 10, distinguishable and colour-blind tolerant) and
/// marker shape: a line and its points share them, so the legend shows the colour.
fn series(i: usize) -> (egui::Color32, egui_plot::MarkerShape) {
    use egui_plot::MarkerShape::{Circle, Diamond, Down, Square, Up};
    const COLORS: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    const SHAPES: [egui_plot::MarkerShape; 5] = [Circle, Square, Diamond, Up, Down];
    let (r, g, b) = COLORS[i % COLORS.len()];
    (egui::Color32::from_rgb(r, g, b), SHAPES[i % SHAPES.len()])
}

/// A marker of `shape` in `color` around `c`, as the plots draw it.
fn paint_marker(
    painter: &egui::Painter,
    c: egui::Pos2,
    r: f32,
    shape: egui_plot::MarkerShape,
    color: egui::Color32,
) {
    use egui::pos2;
    use egui_plot::MarkerShape as M;
    let polygon = |points: Vec<egui::Pos2>| {
        painter.add(egui::Shape::convex_polygon(
            points,
            color,
            egui::Stroke::NONE,
        ));
    };
    match shape {
        M::Square => {
            painter.rect_filled(
                egui::Rect::from_center_size(c, egui::vec2(1.6 * r, 1.6 * r)),
                0.0,
                color,
            );
        }
        M::Diamond => polygon(vec![
            pos2(c.x, c.y - r),
            pos2(c.x + r, c.y),
            pos2(c.x, c.y + r),
            pos2(c.x - r, c.y),
        ]),
        M::Up => polygon(vec![
            pos2(c.x, c.y - r),
            pos2(c.x + r, c.y + r),
            pos2(c.x - r, c.y + r),
        ]),
        M::Down => polygon(vec![
            pos2(c.x - r, c.y - r),
            pos2(c.x + r, c.y - r),
            pos2(c.x, c.y + r),
        ]),
        _ => {
            painter.circle_filled(c, r, color);
        }
    }
}

/// A plot's legend as a row above it, so it never covers the data: `names` in the
/// curves' colours, then the `extras` markers.
fn legend_row(
    ui: &mut egui::Ui,
    names: &mut dyn Iterator<Item = String>,
    extras: &[(&str, egui_plot::MarkerShape)],
) {
    let mut entries: Vec<(String, egui::Color32, egui_plot::MarkerShape)> = names
        .enumerate()
        .map(|(i, name)| {
            let (c, s) = series(i);
            (name, c, s)
        })
        .collect();
    entries.extend(
        extras
            .iter()
            .map(|(name, shape)| ((*name).to_owned(), CURRENT_COLOR, *shape)),
    );
    ui.horizontal_wrapped(|ui| {
        for (name, color, shape) in &entries {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
            paint_marker(ui.painter(), rect.center(), 5.0, *shape, *color);
            ui.label(name);
            ui.add_space(6.0);
        }
    });
}

/// Curve `i`: its line and its points, in its colour and marker.
fn draw_curve(plot: &mut egui_plot::PlotUi<'_>, i: usize, name: &str, pts: &[[f64; 2]]) {
    let (color, shape) = series(i);
    plot.line(Line::new(name.to_owned(), PlotPoints::from(pts.to_vec())).color(color));
    plot.points(
        Points::new(name.to_owned(), PlotPoints::from(pts.to_vec()))
            .color(color)
            .shape(shape)
            .filled(true)
            .radius(3.5),
    );
}

/// A main plot's hover text: [`point_hover`] of the point under the pointer.
fn hover_text<'a>(
    snap: &'a Snapshot,
    points: &'a [([f64; 2], usize)],
    quality: &'static str,
) -> impl Fn(&egui_plot::HoverPosition<'_>) -> Option<String> + 'a {
    move |h| match h {
        egui_plot::HoverPosition::NearDataPoint { position, .. } => {
            point_hover(&snap.results, points, quality, *position)
        }
        egui_plot::HoverPosition::Elsewhere { .. } => None,
    }
}

/// The hover text of the point at `position` of one of the main plots: its curve and
/// level, quality, size and bits per weight (`None` off the sweep's points).
fn point_hover(
    results: &[PointResult],
    points: &[([f64; 2], usize)],
    quality: &str,
    position: egui_plot::PlotPoint,
) -> Option<String> {
    let (_, i) = points
        .iter()
        .find(|(xy, _)| xy[0] == position.x && xy[1] == position.y)?;
    let r = results.get(*i)?;
    let level = match r.point.axis {
        crate::sweep::Axis::Sparsity => format!("{:.0}% sparse", 100.0 * r.point.level),
        crate::sweep::Axis::Bits => match r.point.config.format {
            crate::compress::config::Format::Gguf(q) => q.name().to_owned(),
            _ => format!("{} bits", r.point.level),
        },
    };
    let layer = r
        .point
        .layer
        .as_ref()
        .map_or(String::new(), |l| format!(" · {l} alone"));
    Some(format!(
        "{} · {level}{layer}\n{quality}: {:.2}\n{} · {:.2} bits/weight",
        r.point.curve,
        position.y,
        crate::units::human_bytes(r.bytes),
        r.bits_per_weight
    ))
}

/// A recovered configuration on the curves, beside its one-shot point (top-1 as a
/// fraction, on the held-out part of the data training never saw).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoveredMarker {
    pub sparsity_pct: f64,
    pub bytes: u64,
    pub one_shot_top1: f64,
    pub recovered_top1: f64,
}

/// Recovered points (up-triangles) and their one-shot points (down-triangles) at the
/// x each marker gives.
fn recovered_points(
    plot: &mut egui_plot::PlotUi<'_>,
    markers: &[RecoveredMarker],
    x: impl Fn(&RecoveredMarker) -> f64,
) {
    if markers.is_empty() {
        return;
    }
    let at = |y: fn(&RecoveredMarker) -> f64| -> Vec<[f64; 2]> {
        markers.iter().map(|m| [x(m), 100.0 * y(m)]).collect()
    };
    plot.points(
        Points::new("one-shot", PlotPoints::from(at(|m| m.one_shot_top1)))
            .radius(6.0)
            .color(CURRENT_COLOR)
            .shape(egui_plot::MarkerShape::Down),
    );
    plot.points(
        Points::new(
            "recovered (fine-tuned)",
            PlotPoints::from(at(|m| m.recovered_top1)),
        )
        .radius(6.0)
        .color(CURRENT_COLOR)
        .shape(egui_plot::MarkerShape::Up),
    );
}

/// Pixels within which a click picks a point.
const CLICK_RADIUS: f32 = 10.0;

/// The point (its index) nearest a click on this plot, if one is close.
fn clicked_point(plot: &egui_plot::PlotUi<'_>, points: &[([f64; 2], usize)]) -> Option<usize> {
    let response = plot.response();
    if !response.clicked() {
        return None;
    }
    let pointer = response.interact_pointer_pos()?;
    let on_screen: Vec<egui::Pos2> = points
        .iter()
        .map(|(xy, _)| plot.screen_from_plot(egui_plot::PlotPoint::new(xy[0], xy[1])))
        .collect();
    nearest(&on_screen, pointer, CLICK_RADIUS).map(|i| points[i].1)
}

/// The index of the position nearest `pointer`, if within `radius`.
fn nearest(positions: &[egui::Pos2], pointer: egui::Pos2, radius: f32) -> Option<usize> {
    positions
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.distance(pointer)))
        .filter(|&(_, d)| d <= radius)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The current configuration's marker at `at`.
fn current_marker(at: [f64; 2]) -> Points<'static> {
    Points::new("current", PlotPoints::from(vec![at]))
        .radius(6.0)
        .color(CURRENT_COLOR)
        .filled(true)
        .shape(egui_plot::MarkerShape::Diamond)
}

/// The curves tab.
pub struct CurvesPanel<'a> {
    pub curves: &'a mut Curves,
    pub can_measure: bool,
    pub current: Option<&'a Evaluation>,
    pub baseline_top1: Option<f64>,
    pub recovered: &'a [RecoveredMarker],
}

impl super::Panel for CurvesPanel<'_> {
    fn ui(self, ui: &mut egui::Ui, actions: &mut Vec<Command>) {
        let CurvesPanel {
            curves,
            can_measure,
            current,
            baseline_top1,
            recovered,
        } = self;
        ui.horizontal(|ui| {
            for kind in [SweepKind::Curves, SweepKind::Sensitivity, SweepKind::Heatmap] {
                let tip = match kind {
                    SweepKind::Curves => "Every pruning method at 0–95% sparsity (global and per-tensor magnitude, random, structured rows, 2:4) and int8…int2 per channel; with data a network runs on, Wanda, SparseGPT and GPTQ too, learning from 128 samples kept apart (every point is then measured on the rest). For a llama GGUF: GGUF Q8_0, Q4_0, Q4_K, Q3_K, Q2_K and magnitude 10–50%, each measured on the text (perplexity, KL)",
                    SweepKind::Sensitivity => "Each layer alone magnitude-pruned to 10–90%, the others untouched: which layers can take it (measured on the data when attached)",
                    _ => "Each layer alone at 10–90% sparsity and int8…int2: weight SQNR, no data needed, seconds for any model; measured sensitivity refines it",
                };
                if ui.button(format!("Run: {}", kind.label())).on_hover_text(tip).clicked() {
                    actions.push(Command::StartSweep(kind));
                }
            }
        });
        if !can_measure {
            ui.label("No data attached: the curves show weight SQNR (dB), a fidelity proxy, not accuracy. Attach a data set to measure accuracy.");
        }
        if let Some(note) = &curves.data_aware_note {
            ui.weak(note);
        }
        jobs_ui(ui, curves);
        let snap = curves.snapshot(ui.ctx(), baseline_top1);
        ui.horizontal(|ui| {
            let any = !snap.all.is_empty();
            if ui
                .add_enabled(any, egui::Button::new("Save results…"))
                .on_hover_text("Every measured point with its recipe, as JSON (.json) or CSV (.csv), as `slimscope sweep -o` writes them")
                .clicked()
            {
                actions.push(Command::SaveResultsDialog);
            }
            if ui
                .add_enabled(any && curves.view == CurvesView::Plots, egui::Button::new("Save plots as PNG…"))
                .on_hover_text("The three plots as they are on screen")
                .clicked()
            {
                actions.push(Command::SavePlotsDialog);
            }
        });
        ui.horizontal(|ui| {
            ui.selectable_value(&mut curves.view, CurvesView::Plots, "Plots")
                .on_hover_text("Accuracy against sparsity and bits; size against accuracy");
            ui.selectable_value(&mut curves.view, CurvesView::Layers, "Layers")
                .on_hover_text(
                    "Layers × levels heatmap; one average sparsity allocated over the layers",
                );
        });
        match curves.view {
            CurvesView::Plots => {
                let top = ui.cursor().min;
                plots_ui(ui, &snap, current, recovered, actions);
                curves.plots_rect = Some(egui::Rect::from_min_max(top, ui.min_rect().max));
            }
            CurvesView::Layers => layers_ui(ui, curves, &snap, actions),
        }
    }
}

/// Colour of the markers that are not curves (the current configuration, recovered
/// points).
const CURRENT_COLOR: egui::Color32 = egui::Color32::from_rgb(230, 230, 60);

/// The three plots. With data, only measured points are drawn (fidelity-only heatmap
/// points belong to the heatmap). Each curve has its own colour and marker, the
/// legend sits above its plot, and hovering a point says what it is.
fn plots_ui(
    ui: &mut egui::Ui,
    snap: &Snapshot,
    current: Option<&Evaluation>,
    recovered: &[RecoveredMarker],
    actions: &mut Vec<Command>,
) {
    let measured = snap.measured || !recovered.is_empty();
    ui.label(format!(
        "{} points measured · hover a point to see it, click it to make its configuration the current one",
        snap.results.len()
    ));
    if snap.results.is_empty() && recovered.is_empty() {
        return;
    }
    let mut chosen: Option<usize> = None;
    let y_label = match (measured, snap.quality_name) {
        (true, "top-1 agreement") => "top-1 agreement (%)",
        (true, "mean cosine") => "mean cosine to the original (×100)",
        (true, _) => "top-1 accuracy (%)",
        _ => "weight SQNR (dB, fidelity)",
    };
    let rows = if snap.kl_lines.is_empty() { 3.0 } else { 4.0 };
    // Tall enough for a y label every few ticks (the tab scrolls).
    let height = ((ui.available_height() - 100.0) / rows).max(190.0);
    // On the plots' own axis: accuracy where points are measured, else fidelity.
    let current_top1 = current.and_then(|e| {
        if measured {
            e.accuracy.map(|(_, m)| 100.0 * m.quality())
        } else {
            Some(e.totals.weight_sqnr_db().min(80.0))
        }
    });
    let curve = draw_curve;
    // The markers besides the curves, for the legends.
    let mut extras: Vec<(&str, egui_plot::MarkerShape)> = Vec::new();
    if current.is_some() && current_top1.is_some() {
        extras.push(("current", egui_plot::MarkerShape::Diamond));
    }
    if measured && !recovered.is_empty() {
        extras.push(("one-shot", egui_plot::MarkerShape::Down));
        extras.push(("recovered (fine-tuned)", egui_plot::MarkerShape::Up));
    }
    let legend = |ui: &mut egui::Ui, names: &mut dyn Iterator<Item = String>| {
        legend_row(ui, names, &extras);
    };

    // Accuracy vs sparsity: global curves solid, the most sensitive layers dashed.
    legend(ui, &mut snap.sparsity_lines.iter().map(|(n, _)| n.clone()));
    main_plot("vs sparsity", height, "sparsity (%)", y_label)
        .label_formatter(hover_text(snap, &snap.by_sparsity, y_label))
        .show(ui, |plot| {
            for (i, (name, pts)) in snap.sparsity_lines.iter().enumerate() {
                curve(plot, i, name, pts);
            }
            for (name, pts) in &snap.layer_lines {
                plot.line(
                    Line::new(name.clone(), PlotPoints::from(pts.clone()))
                        .style(LineStyle::dashed_loose()),
                );
            }
            if let (Some(e), Some(y)) = (current, current_top1) {
                // At what the configuration effectively prunes (overrides included).
                plot.points(current_marker([100.0 * e.matrix_sparsity, y]));
            }
            if measured {
                recovered_points(plot, recovered, |m| m.sparsity_pct);
            }
            chosen = chosen
                .take()
                .or_else(|| clicked_point(plot, &snap.by_sparsity));
        });
    if snap.ranking.len() > LAYER_LINES {
        ui.label(format!(
            "Dashed: the {LAYER_LINES} most sensitive of {} layers alone; all of them are in the Layers view.",
            snap.ranking.len()
        ));
    }
    // No current-configuration marker here: its nominal bits are not a point.
    legend_row(ui, &mut snap.bits_lines.iter().map(|(n, _)| n.clone()), &[]);
    main_plot("vs bits", height, "bits per weight (nominal)", y_label)
        .label_formatter(hover_text(snap, &snap.by_bits, y_label))
        .show(ui, |plot| {
            for (i, (name, pts)) in snap.bits_lines.iter().enumerate() {
                curve(plot, i, name, pts);
            }
            chosen = chosen.take().or_else(|| clicked_point(plot, &snap.by_bits));
        });
    legend(
        ui,
        &mut ["configurations", "Pareto front"]
            .into_iter()
            .map(str::to_owned),
    );
    main_plot("size vs accuracy", height, "model size (MB)", y_label)
        .label_formatter(hover_text(snap, &snap.by_size, y_label))
        .show(ui, |plot| {
            let all: Vec<[f64; 2]> = snap.by_size.iter().map(|(xy, _)| *xy).collect();
            let (c0, s0) = series(0);
            let (c1, _) = series(1);
            plot.points(
                Points::new("configurations", PlotPoints::from(all))
                    .color(c0)
                    .shape(s0)
                    .filled(true)
                    .radius(3.0),
            );
            plot.line(
                Line::new("Pareto front", PlotPoints::from(snap.front.clone()))
                    .color(c1)
                    .width(2.0),
            );
            if let (Some(e), Some(y)) = (current, current_top1) {
                plot.points(current_marker([e.totals.bytes_after as f64 / 1e6, y]));
            }
            if measured {
                recovered_points(plot, recovered, |m| m.bytes as f64 / 1e6);
            }
            chosen = chosen.take().or_else(|| clicked_point(plot, &snap.by_size));
        });
    if !snap.kl_lines.is_empty() {
        language_plots_ui(ui, snap, height);
    }
    if let Some(i) = chosen {
        actions.push(Command::UseConfig(snap.results[i].point.config.clone()));
    }
    sensitive_layers_line(ui, snap);
}

/// The five layers whose pruning alone costs most, in one line.
fn sensitive_layers_line(ui: &mut egui::Ui, snap: &Snapshot) {
    if !snap.ranking.is_empty() {
        ui.label(format!(
            "Most sensitive layers (mean {} drop over 10–90%): {}",
            if snap.measured {
                snap.quality_name
            } else {
                "weight-SQNR"
            },
            snap.ranking
                .iter()
                .take(5)
                .map(|s| format!(
                    "{} {:.2}{}",
                    s.layer,
                    if snap.measured {
                        100.0 * s.score
                    } else {
                        s.score
                    },
                    if snap.measured { " pts" } else { " dB" }
                ))
                .collect::<Vec<_>>()
                .join(" · ")
        ));
    }
}

/// A language model's perplexity and KL divergence against the whole model's bits
/// per weight, side by side.
fn language_plots_ui(ui: &mut egui::Ui, snap: &Snapshot, height: f32) {
    let x = "bits per weight (whole model)";
    let draw = |plot: &mut egui_plot::PlotUi<'_>, lines: &[(String, Vec<[f64; 2]>)]| {
        for (i, (name, pts)) in lines.iter().enumerate() {
            draw_curve(plot, i, name, pts);
        }
    };
    ui.columns(2, |cols| {
        let perplexity = |v: f64| {
            let p = 10f64.powf(v);
            if p < 100.0 {
                format!("{p:.1}")
            } else {
                format!("{p:.0}")
            }
        };
        Plot::new("perplexity")
            .height(height)
            .legend(Legend::default().position(egui_plot::Corner::RightTop))
            .custom_x_axes(vec![axis_x(x)])
            .custom_y_axes(vec![
                axis_y("perplexity of the text (log scale)")
                    .formatter(move |m, _| perplexity(m.value)),
            ])
            .label_formatter(move |hover| match hover {
                egui_plot::HoverPosition::NearDataPoint {
                    plot_name,
                    position,
                    ..
                } => Some(format!(
                    "{plot_name}\n{:.3} bits/weight\nperplexity {}",
                    position.x,
                    perplexity(position.y)
                )),
                egui_plot::HoverPosition::Elsewhere { .. } => None,
            })
            .allow_scroll(false)
            .show(&mut cols[0], |plot| draw(plot, &snap.perplexity_lines));
        plot(
            "kl divergence",
            height,
            x,
            "KL divergence (nats/token)",
            egui_plot::Corner::RightTop,
        )
        .show(&mut cols[1], |plot| draw(plot, &snap.kl_lines));
    });
}

/// Green (harmless) to red (harmful) for `t` in 0–1.
fn heat_color(t: f64) -> egui::Color32 {
    let t = t.clamp(0.0, 1.0) as f32;
    let (g, y, r) = (
        [70.0, 150.0, 80.0],
        [210.0, 180.0, 60.0],
        [200.0, 60.0, 60.0],
    );
    let mix = |a: [f32; 3], b: [f32; 3], u: f32| {
        egui::Color32::from_rgb(
            (a[0] + (b[0] - a[0]) * u) as u8,
            (a[1] + (b[1] - a[1]) * u) as u8,
            (a[2] + (b[2] - a[2]) * u) as u8,
        )
    };
    if t < 0.5 {
        mix(g, y, 2.0 * t)
    } else {
        mix(y, r, 2.0 * t - 1.0)
    }
}

/// A cell's text and colour: a measured top-1 drop (5 points or more is red), else
/// weight SQNR (40 dB or more is green, 5 dB or less red).
fn cell_look(cell: &HeatCell) -> (String, egui::Color32) {
    match cell.top1_drop {
        Some(d) => (format!("{:.1}", 100.0 * d), heat_color(100.0 * d / 5.0)),
        None if cell.sqnr_db.is_finite() => (
            format!("{:.0}dB", cell.sqnr_db),
            heat_color((40.0 - cell.sqnr_db) / 35.0),
        ),
        None => ("exact".into(), heat_color(0.0)),
    }
}

/// The layers view: the heatmap, then the allocation slider and its measured results.
fn layers_ui(ui: &mut egui::Ui, curves: &mut Curves, snap: &Snapshot, actions: &mut Vec<Command>) {
    let map = &snap.heatmap;
    if map.is_empty() {
        ui.label("Run the layer fidelity heatmap (seconds, no data needed) or the layer sensitivity sweep to fill this view.");
        return;
    }
    ui.label("Each layer alone at each level. Cells show the measured top-1 drop in points where measured, else weight SQNR in dB (a fidelity proxy, not accuracy). Most sensitive layers first.");
    heatmap_ui(ui, map);
    ui.separator();
    allocation_ui(ui, curves, snap, actions);
}

fn heatmap_ui(ui: &mut egui::Ui, map: &Heatmap) {
    let (name_w, cell_w, row_h) = (220.0, 46.0, 18.0);
    let font = egui::FontId::monospace(11.0);
    let name = |ui: &mut egui::Ui, text: &str| {
        ui.allocate_ui_with_layout(
            egui::vec2(name_w, row_h),
            egui::Layout::left_to_right(egui::Align::Center),
            |ui| {
                ui.set_min_width(name_w);
                ui.add(egui::Label::new(text).truncate());
            },
        );
    };
    // Wide maps scroll sideways, header and rows together; long ones scroll down.
    egui::ScrollArea::horizontal()
        .id_salt("heatmap columns")
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                name(ui, "");
                for c in &map.columns {
                    ui.add_sized([cell_w, row_h], egui::Label::new(c.heading()));
                }
            });
            egui::ScrollArea::vertical()
                .id_salt("heatmap rows")
                .max_height(360.0)
                .show_rows(ui, row_h, map.layers.len(), |ui, rows| {
                    for i in rows {
                        ui.horizontal(|ui| {
                            name(ui, &map.layers[i]);
                            for (c, cell) in map.columns.iter().zip(&map.cells[i]) {
                                let (rect, response) = ui.allocate_exact_size(
                                    egui::vec2(cell_w, row_h),
                                    egui::Sense::hover(),
                                );
                                let Some(cell) = cell else {
                                    continue;
                                };
                                let (text, color) = cell_look(cell);
                                response.widget_info(|| {
                                    egui::WidgetInfo::labeled(
                                        egui::Role::Label,
                                        true,
                                        format!("{} {}: {text}", map.layers[i], c.heading()),
                                    )
                                });
                                ui.painter().rect_filled(rect.shrink(1.0), 2.0, color);
                                ui.painter().text(
                                    rect.center(),
                                    egui::Align2::CENTER_CENTER,
                                    &text,
                                    font.clone(),
                                    egui::Color32::BLACK,
                                );
                                response.on_hover_text(format!(
                                    "{} alone, {} ({})\nweight SQNR {:.1} dB{}",
                                    map.layers[i],
                                    c.heading(),
                                    c.curve,
                                    cell.sqnr_db,
                                    cell.top1_drop.map_or(
                                        String::from("\naccuracy not measured"),
                                        |d| format!(
                                            "\ntop-1 drop {:.2} points (measured)",
                                            100.0 * d
                                        )
                                    )
                                ));
                            }
                        });
                    }
                });
            // Room for the sideways scroll bar, which would cover the last row.
            ui.add_space(10.0);
        });
}

fn allocation_ui(
    ui: &mut egui::Ui,
    curves: &mut Curves,
    snap: &Snapshot,
    actions: &mut Vec<Command>,
) {
    let ranking = &snap.all_ranking;
    if ranking.is_empty() {
        ui.label(
            "Allocation needs per-layer sparsity points: run the heatmap or the sensitivity sweep.",
        );
        return;
    }
    let measured = ranking.iter().all(|s| s.measured);
    ui.horizontal(|ui| {
        let slider = ui
            .add(
                egui::Slider::new(&mut curves.target_pct, 0.0..=95.0)
                    .suffix(" %")
                    .text("Average sparsity to allocate"),
            )
            .on_hover_text(format!(
                "Spread this average sparsity over the layers three ways — by {} sensitivity, one global magnitude threshold, and uniformly — and measure each",
                if measured { "measured" } else { "weight-SQNR (proxy)" }
            ));
        // Not while a level is being typed: each keystroke would start a
        // measurement (and the growing jobs list would move the field away).
        let typing = ui.ctx().egui_wants_keyboard_input();
        let asked = curves.allocated_pct == Some(curves.target_pct);
        if (slider.changed() || curves.allocated_pct.is_some()) && !typing && !asked {
            curves.allocated_pct = Some(curves.target_pct);
            actions.push(Command::Allocate(curves.target_pct / 100.0));
        }
    });
    let target = curves.target_pct / 100.0;
    let current: Vec<&PointResult> = curves
        .runs
        .iter()
        .rev()
        .filter(|r| r.kind == SweepKind::Allocation)
        .flat_map(|r| r.results.iter())
        .filter(|r| (r.point.level - target).abs() < 1e-9)
        .collect();
    if current.is_empty() {
        ui.label("Move the slider to measure the allocations at that sparsity.");
        return;
    }
    let mut seen = Vec::new();
    let rows: Vec<PointResult> = current
        .into_iter()
        .filter(|r| {
            let new = !seen.contains(&r.point.curve);
            seen.push(r.point.curve.clone());
            new
        })
        .cloned()
        .collect();
    let best = best_allocation(&rows).map(|b| b.point.curve.clone());
    egui::Grid::new("allocations").striped(true).show(ui, |ui| {
        for h in ["allocation", "sparsity", "quality", "size", ""] {
            ui.strong(h);
        }
        ui.end_row();
        for r in &rows {
            let is_best = best.as_ref() == Some(&r.point.curve);
            ui.label(format!(
                "{}{}",
                r.point.curve.trim_start_matches("allocation: "),
                if is_best { " (best)" } else { "" }
            ));
            ui.label(format!("{:.1} %", 100.0 * r.sparsity));
            ui.label(match r.metrics {
                Some(m) => format!("top-1 {:.2} %", 100.0 * m.top1),
                None => format!("SQNR {:.1} dB (fidelity)", r.weight_sqnr_db),
            });
            ui.label(format!("{:.3} MB", r.bytes as f64 / 1e6));
            if ui
                .button("Use")
                .on_hover_text(
                    "Make this allocation the current configuration (per-layer overrides)",
                )
                .clicked()
            {
                actions.push(Command::UseConfig(r.point.config.clone()));
            }
            ui.end_row();
        }
    });
}

#[cfg(test)]
mod tests {
    use egui::pos2;

    #[test]
    fn a_click_picks_the_nearest_point_within_reach() {
        let points = [pos2(10.0, 10.0), pos2(30.0, 10.0), pos2(19.0, 10.0)];
        assert_eq!(super::nearest(&points, pos2(21.0, 12.0), 10.0), Some(2));
        assert_eq!(super::nearest(&points, pos2(29.0, 10.0), 10.0), Some(1));
        assert_eq!(super::nearest(&points, pos2(60.0, 60.0), 10.0), None);
        assert_eq!(super::nearest(&[], pos2(0.0, 0.0), 10.0), None);
    }
}
