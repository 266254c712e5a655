//! The app, driven headless through egui_kittest exactly as a user drives it: files
//! arrive through the same drop path a real drag-and-drop uses, tensors are selected
//! by clicking their row, and what the window shows is read back by label.

#![cfg(feature = "gui")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixture;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use slimscope::app::{Settings, SlimApp};

/// A file dropped on the window.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn harness() -> Harness<'static, SlimApp> {
    harness_with(Settings::default())
}

/// The app as it starts with `settings` (as if restored from a previous run).
fn harness_with(settings: Settings) -> Harness<'static, SlimApp> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 860.0))
        .build_ui_state(
            |ui, app: &mut SlimApp| {
                app.poll();
                app.ui(ui);
            },
            SlimApp::new(settings),
        )
}

fn drop_file(h: &mut Harness<'_, SlimApp>, path: &Path) {
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(path.to_owned())));
    h.step();
}

/// Step frames until `done` holds (workers finish in the background).
fn step_until(h: &mut Harness<'_, SlimApp>, what: &str, done: impl Fn(&SlimApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.run_steps(3);
}

/// Whether the curves tab draws every point measured so far (it derives what it
/// draws on a worker).
fn curves_settled(a: &SlimApp) -> bool {
    let baseline = a.attached().map(|x| x.baseline.quality());
    a.curves().is_some_and(|c| c.is_settled(baseline))
}

/// Open the bundled demo and wait for its data's baseline.
fn open_demo(h: &mut Harness<'_, SlimApp>) {
    h.state_mut().apply(slimscope::app::Command::OpenDemo);
    step_until(h, "the demo and its baseline", |a| {
        a.attached().is_some() && !a.is_attaching() && !a.is_loading()
    });
}

#[test]
fn first_start_says_what_to_drop() {
    let mut h = harness();
    h.run_steps(2);
    h.get_by_label("Drop a model file here");
    h.get_by_label_contains("safetensors · GGUF");
}

#[test]
fn dropping_a_model_shows_its_tensors_histogram_and_statistics() {
    let mut h = harness();
    let path = fixture("digit_cnn.pth");
    drop_file(&mut h, &path);
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    // The first tensor is selected and its histogram shown.
    h.get_by_label("Histogram of conv_layers.0.weight");
    h.get_by_label_contains("390,410 parameters");
    // Select another tensor by clicking its row.
    h.get_by_label("fc_layers.0.weight").click();
    h.run_steps(3);
    h.get_by_label("Histogram of fc_layers.0.weight");
    h.get_by_label_contains("[256, 1152] · F32 · 294,912 values");
    let app = h.state();
    let index = app
        .document()
        .and_then(|d| d.selected)
        .expect("a selection");
    let stats = app
        .loaded()
        .and_then(|l| l.reports[index].stats.clone())
        .expect("stats");
    h.get_by_label(&format!("{:.6}", stats.std));
    assert_eq!(app.settings().recent_files, vec![path]);
}

#[test]
fn the_magnitude_histogram_is_computed_in_the_background() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    h.get_by_label("|w|").click();
    h.run_steps(2);
    assert!(h.state().settings().abs_values);
    step_until(&mut h, "the |w| histogram", |a| {
        a.has_histogram_for_selection()
    });
    h.get_by_label("|w|");
    assert!(h.state().error().is_none());
}

#[test]
fn a_bad_file_shows_an_error_and_the_app_keeps_working() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").expect("write");
    drop_file(&mut h, &bad);
    step_until(&mut h, "the error", |a| a.error().is_some());
    h.get_by_label_contains("broken.gguf");
    h.get_by_label_contains("not a valid GGUF file");
    // The model that was open stays open and usable.
    h.get_by_label("Histogram of conv_layers.0.weight");
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    assert!(h.state().error().is_none());
    // And the next good file opens.
    drop_file(&mut h, &fixture("sample.npz"));
    step_until(&mut h, "the second model", |a| {
        a.loaded()
            .is_some_and(|l| l.model.path.ends_with("sample.npz"))
    });
    h.get_by_label("Histogram of dense.weight");
}

#[test]
fn the_table_filters_and_sorts() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    // Layers first: each a header row with its tensors beneath.
    h.get_by_label("conv_layers.0  (conv)");
    h.get_by_label("fc_layers.0  (linear)");
    h.get_by_label("Group by layer").click();
    h.run_steps(2);
    assert!(
        h.query_by_label("conv_layers.0  (conv)").is_none(),
        "flat after ungrouping"
    );
    h.get_by_label("Params").click();
    h.run_steps(2);
    let app = h.state();
    let loaded = app.loaded().expect("loaded");
    let rows = app
        .document()
        .expect("a model")
        .table
        .tensor_rows(&loaded.reports);
    assert_eq!(
        loaded.reports[rows[0]].info.name, "fc_layers.0.weight",
        "largest first"
    );
    h.state_mut().document_mut().expect("a model").table.filter = "fc_".into();
    h.run_steps(2);
    assert!(h.query_by_label("conv_layers.3.weight").is_none());
    h.get_by_label("fc_layers.2.bias");
    // Grouped again, the filter keeps only the matching layers.
    h.state_mut()
        .document_mut()
        .expect("a model")
        .table
        .group_by_layer = true;
    h.run_steps(2);
    h.get_by_label("fc_layers.2  (linear)");
    assert!(h.query_by_label("conv_layers.3  (conv)").is_none());
}

#[test]
fn a_large_gguf_loads_with_every_block_listed() {
    let mut h = harness();
    drop_file(&mut h, &fixture("smollm2_q4_1.gguf"));
    step_until(&mut h, "SmolLM2 to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    h.get_by_label("Histogram of token_embd.weight");
    h.get_by_label("272 tensors in 32 layers");
    h.get_by_label("general.architecture");
    // The file stores blk.0, blk.1, blk.10, …: the table shows them by number.
    h.get_by_label("blk.2  (block)");
    assert!(h.query_by_label("blk.10  (block)").is_none());
}

/// The "Model size" figure as shown.
fn shown_size(h: &Harness<'_, SlimApp>) -> String {
    let node = h.get_by_label_contains("smaller)");
    let ak = node.accesskit_node();
    ak.label()
        .or_else(|| ak.value())
        .unwrap_or_else(|| format!("{node:?}"))
}

#[test]
fn moving_the_global_slider_changes_the_model_size_shown() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    // Nothing compressed yet: no size figure.
    assert!(h.query_by_label_contains("smaller)").is_none());
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
        .set_value_accesskit(50.0);
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 50.0);
    step_until(&mut h, "the 50% evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some()
    });
    let at_50 = shown_size(&h);
    let e = h.state().evaluation().cloned().expect("evaluation");
    // Independent arithmetic: f32 weights pruned to half need a sparse layout; the
    // figure shown is the evaluation's, and it is smaller than the original.
    assert!(e.totals.bytes_after < e.totals.bytes_before, "{at_50}");
    assert!(
        at_50.contains(&slimscope::units::human_bytes(e.totals.bytes_after)),
        "{at_50}"
    );
    // The selected tensor's histogram shows the compressed overlay and what was zeroed.
    h.get_by_label_contains("weights zeroed");
    // int4 on top: smaller still, and the figure on screen follows.
    h.get_by_value("as stored").click();
    h.run_steps(2);
    h.get_by_label("int4").click();
    h.run_steps(2);
    step_until(&mut h, "the int4 evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some()
    });
    let at_int4 = shown_size(&h);
    assert_ne!(at_50, at_int4);
    let e4 = h.state().evaluation().cloned().expect("evaluation");
    assert!(e4.totals.bytes_after < e.totals.bytes_after);
    assert!(
        e4.totals.weight_sqnr_db() < e.totals.weight_sqnr_db(),
        "int4 on top loses fidelity"
    );
    // Back to 0% and "as stored": nothing to show again.
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
        .set_value_accesskit(0.0);
    h.get_by_value("int4").click();
    h.run_steps(2);
    h.get_by_label("as stored").click();
    step_until(&mut h, "the identity", |a| a.evaluation().is_none());
    assert!(h.query_by_label_contains("smaller)").is_none());
}

#[test]
fn an_export_writes_a_recipe_that_slimscope_apply_reproduces() {
    let mut h = harness();
    let model = fixture("digit_cnn.pth");
    drop_file(&mut h, &model);
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
        .set_value_accesskit(70.0);
    h.get_by_label("global").click();
    h.run_steps(2);
    // Give the selected tensor (conv_layers.0.weight) its own settings: Q8_0 is not
    // possible on rows of 3, so f16.
    h.get_by_label_contains("Own settings for conv_layers.0.weight")
        .click();
    h.run_steps(2);
    assert!(
        h.state()
            .config()
            .overrides
            .contains_key("conv_layers.0.weight")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cnn.slim.safetensors");
    // The file dialog's answer arrives as this command.
    h.state_mut()
        .apply(slimscope::app::Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    h.get_by_label_contains("Exported");
    let recipe = dir.path().join("cnn.slim.recipe.toml");
    let text = std::fs::read_to_string(&recipe).expect("recipe written");
    assert!(text.contains("sha256 = \"325e0773"), "{text}");
    assert!(text.contains("scope = \"global\""), "{text}");
    // slimscope apply with that recipe writes the same values.
    let again = dir.path().join("again.safetensors");
    let (code, _, stderr) = common::slimscope(&[
        "apply",
        model.to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "-o",
        again.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The app's typed recipe and the recipe file it wrote are one recipe: the two
    // exports are the same bytes, embedded recipe and summary included.
    assert!(
        std::fs::read(&out).expect("export") == std::fs::read(&again).expect("apply output"),
        "the app's export and `slimscope apply` of its recipe differ"
    );
    let a = slimscope::Model::open(&out).expect("export re-opens");
    let b = slimscope::Model::open(&again).expect("apply output");
    assert_eq!(a.tensors.len(), b.tensors.len());
    for i in 0..a.tensors.len() {
        assert_eq!(a.tensors[i].name, b.tensors[i].name);
        assert_eq!(
            a.tensor_f32(i).expect("values"),
            b.tensor_f32(i).expect("values"),
            "{}",
            a.tensors[i].name
        );
    }
    // 70% of the weights outside the override are zero.
    let fc = a.tensor_index("fc_layers.0.weight").expect("tensor");
    let v = a.tensor_f32(fc).expect("values");
    assert!(v.iter().filter(|&&x| x == 0.0).count() > v.len() / 2);
}

#[test]
fn the_demo_opens_evaluated_and_95_percent_sparsity_costs_accuracy() {
    let mut h = harness();
    open_demo(&mut h);
    h.get_by_label("Histogram of conv_layers.0.weight");
    h.get_by_label_contains("mnist_5k.toml · 5,000 samples · 10 classes");
    // The published figure for this model on these images (fixtures.md): 0.9970.
    h.get_by_label_contains("top-1 99.70%");
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
        .set_value_accesskit(95.0);
    h.run_steps(2);
    step_until(&mut h, "the 95% evaluation with accuracy", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    let (_, m) = h
        .state()
        .evaluation()
        .and_then(|e| e.accuracy)
        .expect("accuracy");
    assert!(
        m.top1 < 0.9,
        "95% per-tensor magnitude pruning should cost accuracy: {m:?}"
    );
    let shown = format!("top-1 {:.2}%", 100.0 * m.top1);
    let node = h.get_by_label_contains(&shown);
    let ak = node.accesskit_node();
    let text = ak.label().or_else(|| ak.value()).unwrap_or_default();
    assert!(text.contains("pts, beyond noise)"), "{text}");
    assert!(text.contains('-'), "accuracy fell: {text}");
    // The 95 % interval, hand-derived: 1.96 · √(p(1 − p)/n) in points, n = 5,000.
    let half = 196.0 * (m.top1 * (1.0 - m.top1) / 5000.0).sqrt();
    assert!(text.contains(&format!("±{half:.2}")), "{text}");
}

#[test]
fn dropping_a_data_spec_on_an_open_model_attaches_and_evaluates_it() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    h.get_by_label_contains("No data attached");
    // The same spec the demo ships, pointing at the fixture copy of the images; no
    // architecture given, so the app proposes one from the weights.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    drop_file(&mut h, &spec);
    step_until(&mut h, "the data to attach", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    // Still the same model: the drop attached data instead of opening a file.
    h.get_by_label("Histogram of conv_layers.0.weight");
    h.get_by_label_contains("mnist.toml · 5,000 samples · 10 classes");
    h.get_by_label_contains("top-1 99.70%");
    h.get_by_label("Architecture (proposed)");
}

#[test]
fn an_onnx_model_is_evaluated_through_its_own_graph_and_a_spec_does_not_apply() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.onnx"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    drop_file(&mut h, &spec);
    step_until(&mut h, "the data to attach", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    h.get_by_label("the model's ONNX graph");
    h.get_by_label_contains("top-1 99.70%");
    // An architecture spec is refused with the reason; the attached data stays.
    let arch = dir.path().join("cnn.arch.toml");
    std::fs::write(
        &arch,
        "version = 1\ninput = [784]\n[[layer]]\nop = \"flatten\"\n",
    )
    .expect("write");
    drop_file(&mut h, &arch);
    step_until(&mut h, "the error", |a| {
        a.error().is_some() && !a.is_attaching()
    });
    let error = h.state().error().map(str::to_owned).unwrap_or_default();
    assert!(
        error.contains("digit_cnn.onnx") && error.contains("own graph"),
        "{error}"
    );
    h.get_by_label_contains("top-1 99.70%");
}

#[test]
fn dropping_an_architecture_spec_replaces_the_proposal_and_a_wrong_one_is_explained() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    drop_file(&mut h, &spec);
    step_until(&mut h, "the data to attach", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    h.get_by_label("proposed from the weights · 13 layers");
    // The demo's spec (with its ReLUs and pools written out) replaces the proposal.
    let arch_text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/digit_cnn.arch.toml"),
    )
    .expect("read the demo spec");
    let arch = dir.path().join("cnn.arch.toml");
    std::fs::write(&arch, &arch_text).expect("write");
    drop_file(&mut h, &arch);
    step_until(&mut h, "the spec to attach", |a| {
        !a.is_attaching() && a.attached().is_some_and(|x| x.arch_path.is_some())
    });
    h.get_by_label("cnn.arch.toml · 13 layers");
    h.get_by_label_contains("top-1 99.70%");
    // Without padding the first linear layer no longer fits: the error names it, and
    // the spec that worked stays attached.
    let bad = dir.path().join("nopad.arch.toml");
    std::fs::write(&bad, arch_text.replace("padding = 1\n", "")).expect("write");
    drop_file(&mut h, &bad);
    step_until(&mut h, "the error", |a| {
        a.error().is_some() && !a.is_attaching()
    });
    let error = h.state().error().map(str::to_owned).unwrap_or_default();
    assert!(
        error.contains("fc_layers.0.weight") && error.contains("1152"),
        "{error}"
    );
    h.get_by_label("cnn.arch.toml · 13 layers");
}

#[test]
fn a_sweep_on_the_demo_fills_the_curves_and_can_be_cancelled() {
    let mut h = harness();
    open_demo(&mut h);
    h.get_by_label("Curves").click();
    h.run_steps(2);
    h.get_by_label("Run: Sparsity & bit-width curves").click();
    h.run_steps(2);
    let points = |a: &SlimApp| {
        a.curves()
            .map_or(0, |c| c.runs.iter().map(|r| r.results.len()).sum::<usize>())
    };
    step_until(&mut h, "three points on the plots", |a| {
        points(a) >= 3 && curves_settled(a)
    });
    // The points are measured accuracy, and the panel counts them.
    let first = h.state().curves().expect("curves").runs[0].results[0].clone();
    assert!(first.metrics.is_some());
    h.get_by_label_contains("points measured");
    h.get_by_label_contains("running");
    h.get_by_label("Cancel").click();
    h.run_steps(2);
    step_until(&mut h, "the sweep to stop", |a| {
        a.curves().is_some_and(|c| !c.any_running()) && curves_settled(a)
    });
    let run = &h.state().curves().expect("curves").runs[0];
    assert_eq!(
        run.state,
        slimscope::app::panels::curves::RunState::Cancelled
    );
    assert!(run.results.len() < run.total, "cancelled before the end");
    h.get_by_label_contains("cancelled");
    // The points measured before the cancel stay.
    assert!(points(h.state()) >= 3);
    // Save them (the dialog's answer arrives as this command): JSON and CSV.
    let dir = tempfile::tempdir().expect("tempdir");
    let measured = points(h.state());
    for name in ["sweep.json", "sweep.csv"] {
        let out = dir.path().join(name);
        h.state_mut()
            .apply(slimscope::app::Command::SaveResults(out.clone()));
        step_until(&mut h, "the results file", |a| {
            a.notice().is_some() || a.error().is_some()
        });
        assert!(h.state().error().is_none(), "{:?}", h.state().error());
        let text = std::fs::read_to_string(&out).expect("written");
        if name.ends_with(".json") {
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v["points"].as_array().map(Vec::len), Some(measured), "{v}");
        } else {
            // Records end at newlines outside quotes (recipes span lines, quoted).
            let mut quoted = false;
            let records = text
                .chars()
                .filter(|&c| {
                    quoted ^= c == '"';
                    c == '\n' && !quoted
                })
                .count();
            assert_eq!(records, measured + 1, "a header and one row per point");
        }
        h.state_mut().apply(slimscope::app::Command::DismissError);
    }
}

#[test]
fn the_layers_view_shows_the_heatmap_and_the_best_measured_allocation_becomes_the_configuration() {
    let mut h = harness();
    open_demo(&mut h);
    h.get_by_label("Curves").click();
    h.run_steps(2);
    h.get_by_label("Run: Layer fidelity heatmap").click();
    h.run_steps(2);
    step_until(&mut h, "the heatmap sweep", |a| {
        a.curves()
            .is_some_and(|c| !c.runs.is_empty() && !c.any_running())
            && curves_settled(a)
    });
    let run = &h.state().curves().expect("curves").runs[0];
    assert_eq!(
        run.state,
        slimscope::app::panels::curves::RunState::Finished
    );
    // 5 layers × (9 sparsities + 5 widths), fidelity only even though data is attached.
    assert_eq!(run.results.len(), 70);
    assert!(run.results.iter().all(|r| r.metrics.is_none()));
    h.get_by_label("Layers").click();
    h.run_steps(2);
    h.get_by_label_contains("weight SQNR in dB (a fidelity proxy");
    for heading in ["10%", "90%", "int8", "int2"] {
        h.get_by_label(heading);
    }
    // A cell names its layer and level and shows the weight SQNR.
    let cell = h.get_by_label_contains("conv_layers.0.weight 90%: ");
    let ak = cell.accesskit_node();
    let text = ak.label().or_else(|| ak.value()).unwrap_or_default();
    assert!(text.ends_with("dB"), "{text:?} {ak:?}");
    h.get_by_role_and_label(
        egui::accesskit::Role::Slider,
        "Average sparsity to allocate",
    )
    .set_value_accesskit(80.0);
    h.run_steps(2);
    step_until(&mut h, "three measured allocations", |a| {
        a.curves().is_some_and(|c| {
            !c.any_running()
                && c.runs.iter().any(|r| {
                    r.kind == slimscope::app::panels::curves::SweepKind::Allocation
                        && r.state == slimscope::app::panels::curves::RunState::Finished
                })
        }) && curves_settled(a)
    });
    let curves = h.state().curves().expect("curves");
    let allocation = curves
        .runs
        .iter()
        .rfind(|r| r.kind == slimscope::app::panels::curves::SweepKind::Allocation)
        .expect("allocation run");
    assert_eq!(allocation.results.len(), 3);
    assert!(allocation.results.iter().all(|r| r.metrics.is_some()));
    let best = slimscope::sweep::analysis::best_allocation(&allocation.results)
        .expect("best")
        .clone();
    h.get_by_label_contains("(best)");
    // The best row's "Use" makes its configuration current.
    let order: Vec<String> = allocation
        .results
        .iter()
        .map(|r| r.point.curve.clone())
        .collect();
    let row = order
        .iter()
        .position(|c| *c == best.point.curve)
        .expect("row");
    h.get_all_by_label("Use")
        .nth(row)
        .expect("use button")
        .click();
    h.run_steps(2);
    assert_eq!(*h.state().config(), best.point.config);
}

#[test]
fn returning_the_slider_to_a_measured_level_reuses_its_accuracy() {
    let mut h = harness();
    open_demo(&mut h);
    let measured = |a: &SlimApp| a.attached().map_or(0, |x| x.evaluator.measured());
    let at = |h: &mut Harness<'_, SlimApp>, pct: f64| {
        h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
            .set_value_accesskit(pct);
        h.run_steps(2);
        step_until(h, "the evaluation with accuracy", |a| {
            a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
        });
        h.state().evaluation().cloned().expect("evaluation")
    };
    let before = measured(h.state());
    let first = at(&mut h, 60.0);
    at(&mut h, 80.0);
    assert_eq!(measured(h.state()), before + 2);
    // Back to 60%: the same figures, and nothing new was run through the network.
    let again = at(&mut h, 60.0);
    assert_eq!(measured(h.state()), before + 2);
    assert_eq!(again.accuracy, first.accuracy);
    assert_eq!(again.totals.bytes_after, first.totals.bytes_after);
}

/// A digits MLP trained by the library, written with its spec and data specs: a model
/// small enough to train in seconds inside the app.
fn digits_model(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use slimscope::net::init;
    use slimscope::net::spec::ArchSpec;
    use slimscope::train::{TrainOptions, distill};
    let spec_text = "version = 1\ninput = [64]\n[[layer]]\nop = \"linear\"\nweight = \"fc0.weight\"\nbias = \"fc0.bias\"\nout = 64\n[[layer]]\nop = \"relu\"\n[[layer]]\nop = \"linear\"\nweight = \"fc1.weight\"\nbias = \"fc1.bias\"\nout = 10\n";
    let spec_path = dir.join("mlp.arch.toml");
    std::fs::write(&spec_path, spec_text).expect("spec");
    let data = dir.join("digits.toml");
    std::fs::write(
        &data,
        format!(
            "file = {:?}\nlabel = \"last\"\ndivide = 16.0\nshape = [64]\n",
            fixture("digits.csv.gz")
        ),
    )
    .expect("data spec");
    let spec = ArchSpec::load(&spec_path).expect("spec");
    let all = slimscope::eval::data::load(&data).expect("data");
    let start = init::initialise(&spec, 0).expect("init");
    let options = TrainOptions {
        epochs: 10,
        ..TrainOptions::default()
    };
    let fitted = distill::train(&spec, &start, &all, None, &options, &mut |_| true).expect("train");
    let model = dir.join("mlp.safetensors");
    slimscope::train::trainable::write_weights(
        &spec,
        &fitted.weights,
        &spec_path,
        &serde_json::json!({}),
        &model,
        false,
    )
    .expect("write");
    (model, spec_path, data)
}

#[test]
fn recover_and_distill_in_the_training_tab_put_the_recovered_point_on_the_curves() {
    use slimscope::app::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, spec, data) = digits_model(dir.path());
    let mut h = harness();
    drop_file(&mut h, &model);
    step_until(&mut h, "the model", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    drop_file(&mut h, &data);
    step_until(&mut h, "the data", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    drop_file(&mut h, &spec);
    step_until(&mut h, "the spec", |a| {
        a.attached().is_some_and(|x| x.arch_path.is_some()) && !a.is_attaching()
    });
    h.get_by_label("Training").click();
    h.run_steps(2);
    h.get_by_label_contains("held out");
    // Nothing compressed yet: Recover is not offered.
    h.get_by_label_contains("nothing compressed yet");
    h.state_mut()
        .document_mut()
        .expect("a model")
        .config
        .sparsity_pct = 90.0;
    step_until(&mut h, "the 90 % evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    h.state_mut().training_mut().recover.epochs = 4;
    h.get_by_label("Recover").click();
    h.run_steps(2);
    assert!(h.state().training().is_running());
    step_until(&mut h, "the recovery", |a| !a.training().is_running());
    assert_eq!(h.state().training().status, None);
    h.get_by_label("recovered");
    h.get_by_label("one-shot");
    let r = &h.state().training().recoveries[0];
    assert!(
        r.held_out.recovered.top1 > r.held_out.one_shot.top1,
        "recovery helped"
    );
    assert_eq!(r.mask_violations, 0);
    // The recovered point and its one-shot point go on the curves.
    let markers = h.state().training().markers();
    assert_eq!(markers.len(), 1);
    assert_eq!(markers[0].sparsity_pct, 90.0);
    assert!(markers[0].recovered_top1 > markers[0].one_shot_top1);
    // Only held-out figures go on the curves: the rest of the data trained it.
    assert_eq!(markers[0].recovered_top1, r.held_out.recovered.top1);
    assert_eq!(markers[0].one_shot_top1, r.held_out.one_shot.top1);
    h.get_by_label("Curves").click();
    h.run_steps(2);
    h.get_by_label("Training").click();
    h.run_steps(2);

    // Save it (the dialog's answer arrives as this command) and re-open it.
    let out = dir.path().join("mlp.recovered.safetensors");
    h.state_mut().apply(Command::SaveRecovered(out.clone()));
    step_until(&mut h, "the save", |a| {
        a.notice().is_some() || a.error().is_some()
    });
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let saved = slimscope::Model::open(&out).expect("re-open");
    let w = saved
        .tensor_f32(saved.tensor_index("fc0.weight").expect("fc0"))
        .expect("values");
    let zeros = w.iter().filter(|&&v| v == 0.0).count() as f64 / w.len() as f64;
    assert!((zeros - 0.9).abs() < 0.01, "sparsity {zeros}");
    assert!(dir.path().join("mlp.recovered.recipe.toml").exists());

    // Cancelling a run keeps nothing and says so.
    h.state_mut().training_mut().recover.epochs = 1000;
    h.get_by_label("Recover").click();
    h.run_steps(2);
    // The status bar shows the run from any tab.
    h.get_by_label("Stop training");
    assert!(h.get_all_by_label_contains("Recovering").count() >= 1);
    h.get_by_label("Cancel").click();
    step_until(&mut h, "the cancel", |a| !a.training().is_running());
    h.get_by_label_contains("cancelled");
    assert_eq!(h.state().training().recoveries.len(), 1);

    // Distil into a 16-unit student.
    let student = dir.path().join("student.toml");
    std::fs::write(
        &student,
        "version = 1\ninput = [64]\n[[layer]]\nop = \"linear\"\nweight = \"s0.weight\"\nbias = \"s0.bias\"\nout = 16\n[[layer]]\nop = \"relu\"\n[[layer]]\nop = \"linear\"\nweight = \"s1.weight\"\nbias = \"s1.bias\"\nout = 10\n",
    )
    .expect("student spec");
    h.state_mut().apply(Command::ChooseStudent(student));
    h.state_mut().training_mut().distill.epochs = 3;
    h.run_steps(2);
    h.get_by_label("Distill").click();
    h.run_steps(2);
    step_until(&mut h, "the distillation", |a| !a.training().is_running());
    assert_eq!(h.state().training().status, None);
    h.get_by_label("student (distilled)");
    h.get_by_label("student (labels only)");
    // Both students have 64·16 + 16 + 16·10 + 10 parameters.
    assert_eq!(h.get_all_by_label("1,210").count(), 2);

    // A student made from the model itself: half of the hidden neurons structurally
    // pruned, then removed (the class layer keeps its 10 outputs).
    h.state_mut().document_mut().expect("a model").config = slimscope::compress::config::Config {
        method: slimscope::compress::config::Method::Structured,
        sparsity_pct: 50.0,
        ..Default::default()
    };
    h.state_mut().training_mut().distill.from_current = true;
    // The tab's words change when the figures arrive: click once they are in.
    step_until(&mut h, "the structured evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    h.get_by_label("Distill").click();
    h.run_steps(2);
    step_until(&mut h, "the shrunk distillation", |a| {
        !a.training().is_running()
    });
    assert_eq!(h.state().training().status, None);
    // 64·32 + 32 + 32·10 + 10
    assert_eq!(h.get_all_by_label("2,410").count(), 2);
    let out = dir.path().join("shrunk.safetensors");
    h.state_mut().apply(Command::SaveStudent(out.clone()));
    step_until(&mut h, "the save", |a| {
        a.notice().is_some_and(|n| n.contains("shrunk")) || a.error().is_some()
    });
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let spec = slimscope::net::spec::ArchSpec::load(&dir.path().join("shrunk.arch.toml"))
        .expect("the student's spec beside it");
    let saved = slimscope::Model::open(&out).expect("re-open");
    let runner = slimscope::net::sequential_runner(
        &spec,
        &slimscope::net::weights::ModelWeights::new(&saved, &[]),
        &out,
    )
    .expect("the saved student runs with its spec");
    assert_eq!(runner.classes(), 10);
    let fc0 = saved.tensor_index("fc0.weight").expect("fc0");
    assert_eq!(saved.tensors[fc0].shape, [32, 64]);
}

#[test]
fn ctrl_z_and_ctrl_shift_z_walk_configuration_changes_and_f1_lists_them() {
    use egui::{Key, Modifiers};
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let sparsity = |h: &Harness<'_, SlimApp>| h.state().config().sparsity_pct;
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
        .set_value_accesskit(70.0);
    h.run_steps(2);
    h.get_by_label("global").click();
    h.run_steps(2);
    assert!(h.state().config().global_scope);
    // Undo the scope, then the slider; redo both; the Edit menu offers the same.
    h.key_combination_modifiers(Modifiers::COMMAND, &[Key::Z]);
    h.run_steps(2);
    assert!(!h.state().config().global_scope);
    assert_eq!(sparsity(&h), 70.0);
    h.key_combination_modifiers(Modifiers::COMMAND, &[Key::Z]);
    h.run_steps(2);
    assert_eq!(sparsity(&h), 0.0);
    h.key_combination_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, &[Key::Z]);
    h.run_steps(2);
    assert_eq!(sparsity(&h), 70.0);
    h.key_combination_modifiers(Modifiers::COMMAND, &[Key::Y]);
    h.run_steps(2);
    assert!(h.state().config().global_scope);
    assert!(!h.state().document().expect("a model").history.can_redo());
    h.get_by_label("Edit").click();
    h.run_steps(2);
    h.get_by_label("Undo").click();
    h.run_steps(2);
    assert!(!h.state().config().global_scope);
    // F1 opens the shortcuts.
    h.key_press(Key::F1);
    h.run_steps(2);
    h.get_by_label("Keyboard shortcuts");
    h.get_by_label("Undo the last configuration change");
    h.key_press(Key::F1);
    h.run_steps(2);
    assert!(!h.state().show_help());
}

#[test]
fn settings_theme_and_each_models_last_configuration_persist() {
    let mut h = harness();
    h.run_steps(1);
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    // The hint explains what to try until dismissed.
    h.get_by_label_contains("drag the Sparsity slider");
    h.get_by_label("Got it").click();
    h.run_steps(2);
    assert!(h.state().settings().hint_dismissed);
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
        .set_value_accesskit(60.0);
    h.run_steps(2);
    h.get_by_label("View").click();
    h.run_steps(2);
    h.get_by_label("Light theme").click();
    h.run_steps(2);
    assert_eq!(h.state().settings().theme, slimscope::app::Theme::Light);
    assert_eq!(h.ctx.theme(), egui::Theme::Light);
    // What eframe stores at exit, read back by a new app (a restart).
    let saved = serde_json::to_string(&h.state().settings()).expect("settings serialize");
    let settings: Settings = serde_json::from_str(&saved).expect("settings deserialize");
    let mut again = Harness::builder()
        .with_size(egui::vec2(1400.0, 860.0))
        .build_ui_state(
            |ui, app: &mut SlimApp| {
                app.poll();
                app.ui(ui);
            },
            SlimApp::new(settings),
        );
    drop_file(&mut again, &fixture("digit_cnn.pth"));
    step_until(&mut again, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    assert_eq!(again.state().config().sparsity_pct, 60.0);
    again.get_by_label_contains("Restored the configuration you last used");
    assert!(
        again
            .query_by_label_contains("drag the Sparsity slider")
            .is_none()
    );
    assert_eq!(again.ctx.theme(), egui::Theme::Light);
    // The restore is one undo away from none.
    again.state_mut().apply(slimscope::app::Command::Undo);
    again.run_steps(2);
    assert_eq!(again.state().config().sparsity_pct, 0.0);
}

#[test]
fn pinned_configurations_compare_side_by_side_and_either_can_be_used_again() {
    let mut h = harness();
    open_demo(&mut h);
    let settle = |h: &mut Harness<'_, SlimApp>, pct: f64| {
        h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
            .set_value_accesskit(pct);
        h.run_steps(2);
        step_until(h, "the figures of the configuration", |a| {
            a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
        });
    };
    settle(&mut h, 50.0);
    h.get_by_label("Pin for comparison").click();
    h.run_steps(2);
    settle(&mut h, 90.0);
    h.get_by_label("Pin for comparison").click();
    h.run_steps(3);
    // The Compare tab opens on the two pins, A = #1 (50%), B = #2 (90%).
    h.get_by_label("A: #1");
    h.get_by_label("B: #2");
    h.get_by_label("Magnitude 50% · as stored");
    h.get_by_label("Magnitude 90% · as stored");
    let pinned = &h.state().document().expect("a model").compare.pinned;
    let (a, b) = (&pinned[0].evaluation, &pinned[1].evaluation);
    assert!(b.totals.bytes_after < a.totals.bytes_after);
    let delta = 100.0 * (b.accuracy.expect("B").1.top1 - a.accuracy.expect("A").1.top1);
    h.get_by_label(&format!("{delta:+.2} pts"));
    h.get_by_label("Tensors: 5 compressed by either, 5 compressed differently");
    // The tensor's row (beside its row in the layer table).
    assert!(h.get_all_by_label("conv_layers.0.weight").count() >= 2);
    // Use A again; Ctrl+Z returns to 90%.
    h.get_by_label("Use A").click();
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 50.0);
    h.state_mut().apply(slimscope::app::Command::Undo);
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 90.0);
}

/// The whole workflow on the bundled demo, as a new user walks it: explore with the
/// slider, pin two configurations and compare them, go back with undo, export, meet
/// a corrupt file on the way without losing anything, then re-open the export and
/// find it compressed as chosen.
#[test]
fn the_whole_workflow_on_the_demo_from_open_to_a_reopened_export() {
    use slimscope::app::Command;
    let mut h = harness();
    open_demo(&mut h);
    let dir = tempfile::tempdir().expect("tempdir");
    let settle = |h: &mut Harness<'_, SlimApp>, pct: f64| {
        h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
            .set_value_accesskit(pct);
        h.run_steps(2);
        step_until(h, "the configuration's figures", |a| {
            a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
        });
    };
    // Explore and choose: two pins, compared; A (60%) is kept.
    settle(&mut h, 60.0);
    h.get_by_label("Pin for comparison").click();
    h.run_steps(2);
    settle(&mut h, 95.0);
    h.get_by_label("Pin for comparison").click();
    h.run_steps(3);
    h.get_by_label("Compare").click();
    h.run_steps(2);
    h.get_by_label("Use A").click();
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 60.0);
    h.state_mut().apply(Command::Undo);
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 95.0);
    h.state_mut().apply(Command::Redo);
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 60.0);

    // A corrupt file in the middle: an error naming it, nothing lost.
    let bad = dir.path().join("truncated.safetensors");
    std::fs::write(&bad, [200u8, 0, 0, 0, 0, 0, 0, 0, b'{']).expect("write");
    drop_file(&mut h, &bad);
    step_until(&mut h, "the error", |a| a.error().is_some());
    h.get_by_label_contains("truncated.safetensors");
    assert_eq!(h.state().config().sparsity_pct, 60.0);
    assert!(h.state().attached().is_some());
    h.get_by_label("Dismiss").click();
    h.run_steps(2);

    // Export (the dialog's answer arrives as this command), then re-open it.
    let out = dir.path().join("digits.slim.safetensors");
    h.state_mut().apply(Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    drop_file(&mut h, &out);
    step_until(&mut h, "the export to open", |a| {
        a.loaded()
            .is_some_and(|l| l.model.path == out && !a.is_loading())
    });
    let model = &h.state().loaded().expect("model").model;
    let i = model.tensor_index("fc_layers.0.weight").expect("tensor");
    let w = model.tensor_f32(i).expect("values");
    let zeros = w.iter().filter(|&&v| v == 0.0).count() as f64 / w.len() as f64;
    assert!((zeros - 0.6).abs() < 0.01, "sparsity {zeros}");
    assert!(dir.path().join("digits.slim.recipe.toml").exists());
}

#[test]
fn a_restored_configuration_is_measured_once_the_data_arrives() {
    let demo = slimscope::demo::files().expect("demo files");
    let restored = slimscope::compress::config::Config {
        sparsity_pct: 70.0,
        ..Default::default()
    };
    let settings = Settings {
        last_configs: vec![(demo.model.clone(), restored.clone())],
        ..Settings::default()
    };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 860.0))
        .build_ui_state(
            |ui, app: &mut SlimApp| {
                app.poll();
                app.ui(ui);
            },
            SlimApp::new(settings),
        );
    open_demo(&mut h);
    assert_eq!(*h.state().config(), restored);
    // The configuration was evaluated before the data was attached; it is measured
    // again on the data, not shown as "same as the original".
    step_until(&mut h, "accuracy of the restored configuration", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    h.get_by_label_contains("noise) · loss");
}

/// The workflow on a real model: all-MiniLM-L6-v2 opens with the bundled sentence
/// pairs attached, the slider's configurations are measured as embedding fidelity,
/// pinned, compared, undone and redone, a corrupt file changes nothing, and the
/// export re-opens as an encoder whose own figures are those the app showed.
#[test]
fn the_workflow_on_a_real_sentence_encoder_from_open_to_a_reopened_export() {
    use slimscope::app::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    // The export is re-opened from here, with the encoder's config and tokenizer.
    for f in ["config.json", "tokenizer.json", "sentence_bert_config.json"] {
        std::fs::copy(fixture("minilm").join(f), dir.path().join(f)).expect("copy");
    }
    let mut h = harness();
    drop_file(&mut h, &fixture("minilm/model.safetensors"));
    step_until(&mut h, "the encoder and its sentences", |a| {
        a.attached().is_some() && !a.is_attaching() && !a.is_loading()
    });
    h.get_by_label_contains("64 sentences · 32 scored pairs");
    h.get_by_label_contains("Spearman 0.86");
    let settle = |h: &mut Harness<'_, SlimApp>, pct: f64| {
        h.get_by_role_and_label(egui::accesskit::Role::Slider, "Sparsity")
            .set_value_accesskit(pct);
        h.run_steps(2);
        step_until(h, "the configuration's figures", |a| {
            a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
        });
    };
    settle(&mut h, 30.0);
    let shown = |h: &Harness<'_, SlimApp>| {
        h.state()
            .evaluation()
            .and_then(|e| e.accuracy)
            .and_then(|(_, m)| m.embedding())
            .expect("embedding figures")
    };
    let at30 = shown(&h);
    assert!(at30.mean_cosine < 1.0 && at30.mean_cosine > 0.5, "{at30:?}");
    h.get_by_label_contains("mean cosine 0.");
    h.get_by_label("Pin for comparison").click();
    h.run_steps(2);
    settle(&mut h, 70.0);
    assert!(shown(&h).mean_cosine < at30.mean_cosine);
    h.get_by_label("Pin for comparison").click();
    h.run_steps(3);
    h.get_by_label("Compare").click();
    h.run_steps(2);
    h.get_by_label("Use A").click();
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 30.0);
    h.state_mut().apply(Command::Undo);
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 70.0);
    h.state_mut().apply(Command::Redo);
    h.run_steps(2);
    assert_eq!(h.state().config().sparsity_pct, 30.0);
    step_until(&mut h, "the 30% figures again", |a| {
        a.evaluation_is_current()
    });

    let bad = dir.path().join("cut.safetensors");
    std::fs::write(&bad, [8u8, 0, 0, 0, 0, 0, 0, 0, b'{', b'"']).expect("write");
    drop_file(&mut h, &bad);
    step_until(&mut h, "the error", |a| a.error().is_some());
    h.get_by_label_contains("cut.safetensors");
    assert_eq!(h.state().config().sparsity_pct, 30.0);
    h.get_by_label("Dismiss").click();
    h.run_steps(2);

    let out = dir.path().join("model.safetensors");
    h.state_mut().apply(Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    drop_file(&mut h, &out);
    step_until(&mut h, "the export to open and be measured", |a| {
        a.loaded().is_some_and(|l| l.model.path == out)
            && a.attached().is_some()
            && !a.is_attaching()
            && !a.is_loading()
    });
    let model = &h.state().loaded().expect("model").model;
    let i = model
        .tensor_index("encoder.layer.0.intermediate.dense.weight")
        .expect("tensor");
    let w = model.tensor_f32(i).expect("values");
    let zeros = w.iter().filter(|&&v| v == 0.0).count() as f64 / w.len() as f64;
    assert!((zeros - 0.3).abs() < 0.01, "sparsity {zeros}");
    // The exported model's own Spearman is the one shown for its configuration.
    let reopened = h.state().attached().expect("attached").baseline;
    let spearman = reopened
        .embedding()
        .and_then(|e| e.spearman)
        .expect("spearman");
    assert!((spearman - at30.spearman.expect("spearman")).abs() < 1e-6);
}

/// A restored configuration whose evaluation failed (an override of a tensor the file
/// no longer has) is measured again, and fails visibly again, when the model is
/// reopened: a failure belongs to the model as it was opened, not to its path.
#[test]
fn reopening_a_model_whose_restored_configuration_failed_measures_it_again() {
    let path = fixture("digit_cnn.pth");
    let mut restored = slimscope::compress::config::Config {
        sparsity_pct: 30.0,
        ..Default::default()
    };
    restored.overrides.insert(
        "ghost.weight".into(),
        slimscope::compress::config::Override {
            sparsity_pct: 50.0,
            format: slimscope::compress::config::Format::Keep,
        },
    );
    let mut h = harness_with(Settings {
        last_configs: vec![(path.clone(), restored)],
        ..Settings::default()
    });
    for open in ["first", "second"] {
        drop_file(&mut h, &path);
        step_until(
            &mut h,
            &format!("the {open} open's failed evaluation"),
            |a| a.error().is_some_and(|e| e.contains("ghost")),
        );
        h.state_mut().apply(slimscope::app::Command::DismissError);
    }
}

/// A data set with NaN and ±inf features attaches, and the Accuracy panel says how
/// many there are (they make the model's outputs NaN).
#[test]
fn non_finite_features_are_named_under_the_accuracy_figures() {
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let row = |odd: bool, label: u32| {
        let mut pixels = vec!["0"; 784];
        if odd {
            pixels[5] = "nan";
            pixels[6] = "inf";
        }
        format!("{},{label}\n", pixels.join(","))
    };
    let csv = dir.path().join("odd.csv");
    std::fs::write(&csv, row(true, 3) + &row(false, 7)).expect("write csv");
    let spec = dir.path().join("odd.toml");
    std::fs::write(
        &spec,
        format!("file = {csv:?}\nlabel = \"last\"\ndivide = 255.0\nshape = [1, 28, 28]\n"),
    )
    .expect("write spec");
    drop_file(&mut h, &spec);
    step_until(&mut h, "the data to attach", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    h.get_by_label_contains("1 NaN and 1 ±inf feature values");
}

/// Selecting a tensor shows its own settings but never edits them: an override off the
/// sliders' 1 % steps (an allocation's, a restored one) and a global level off them
/// stay bit-identical through selection and redraws (the sliders used to round them
/// on display, changing size and accuracy without the user touching anything).
#[test]
fn selecting_any_tensor_leaves_the_configuration_bit_identical() {
    let path = fixture("digit_cnn.pth");
    let mut restored = slimscope::compress::config::Config {
        sparsity_pct: 41.37,
        ..Default::default()
    };
    restored.overrides.insert(
        "fc_layers.0.weight".into(),
        slimscope::compress::config::Override {
            sparsity_pct: 95.8,
            format: slimscope::compress::config::Format::Keep,
        },
    );
    let mut h = harness_with(Settings {
        last_configs: vec![(path.clone(), restored.clone())],
        ..Settings::default()
    });
    drop_file(&mut h, &path);
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    assert_eq!(h.state().config(), &restored);
    let tensors = h.state().loaded().expect("model").model.tensors.len();
    for i in 0..tensors {
        h.state_mut()
            .apply(slimscope::app::Command::SelectTensor(i));
        h.run_steps(3);
        assert_eq!(h.state().config(), &restored, "after selecting tensor {i}");
    }
}

/// The export dialog's ONNX answer on the demo with half its filters and neurons
/// structurally pruned: the app writes the shrunk QDQ model `slimscope apply` writes
/// and says its size on disk; onnxruntime gives it the scores of the masked model
/// (`apply --keep-shapes` with the recipe the app wrote beside it) on 200 images,
/// with far fewer parameters.
#[test]
fn an_onnx_export_from_the_app_is_the_shrunk_masked_model() {
    let mut h = harness();
    open_demo(&mut h);
    assert!(h.state().can_export_onnx());
    h.state_mut().document_mut().expect("a model").config = slimscope::compress::config::Config {
        method: slimscope::compress::config::Method::Structured,
        sparsity_pct: 50.0,
        ..Default::default()
    };
    h.run_steps(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo.slim.onnx");
    h.state_mut()
        .apply(slimscope::app::Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let size = std::fs::metadata(&out).expect("export").len();
    h.get_by_label_contains(&format!(
        "({} on disk)",
        slimscope::units::human_bytes(size)
    ));
    let recipe = dir.path().join("demo.slim.recipe.toml");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let masked = dir.path().join("masked.onnx");
    let s = |p: &std::path::Path| p.to_str().expect("path").to_owned();
    let (code, _, stderr) = common::slimscope(&[
        "apply",
        &s(&demo.join("digit_cnn.pth")),
        "--arch",
        &s(&demo.join("digit_cnn.arch.toml")),
        "--data",
        &s(&demo.join("mnist_5k.toml")),
        "--recipe",
        &s(&recipe),
        "-o",
        &s(&masked),
        "--keep-shapes",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let cmp = common::reference_script(
        "compare_onnx.py",
        &[
            &s(&masked),
            &s(&out),
            &s(&fixture("mnist_5k.csv.gz")),
            "200",
        ],
    );
    let diff = cmp["max_abs_diff"].as_f64().expect("diff");
    let scale = cmp["max_abs_score"].as_f64().expect("scale");
    assert!(diff <= 1e-5 * scale.max(1.0), "{cmp}");
    assert_eq!(cmp["same_top1"], 200, "{cmp}");
    let (before, after) = (
        cmp["params_a"].as_u64().expect("params"),
        cmp["params_b"].as_u64().expect("params"),
    );
    assert!(after * 2 < before, "{after} of {before} parameters");
}

/// W8A8 static, set with the app's own controls: the app measures it on the samples
/// calibration leaves out (the original too, on the same samples), and its `.onnx`
/// export is a QDQ model onnxruntime scores within three images of the app's figure
/// on those samples.
#[test]
fn activations_set_in_the_app_are_measured_where_onnxruntime_runs_them() {
    let mut h = harness();
    open_demo(&mut h);
    h.state_mut().document_mut().expect("a model").config = slimscope::compress::config::Config {
        format: slimscope::compress::config::Format::Int {
            bits: 8,
            granularity: slimscope::compress::config::IntGranularity::Channel,
            mse_clip: false,
        },
        ..Default::default()
    };
    h.run_steps(2);
    // The activation picker, as a user clicks it.
    h.get_by_value("float (not quantized)").click();
    h.run_steps(2);
    h.get_by_label("uint8 static").click();
    h.run_steps(2);
    let activations = h.state().config().activations.clone().expect("set");
    assert_eq!(activations.calibration_samples(), 256);
    step_until(&mut h, "the W8A8 evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    let e = h.state().evaluation().expect("evaluation").clone();
    let (_, m) = e.accuracy.expect("accuracy");
    let (kept, original) = e.kept_apart.expect("calibration kept apart");
    assert_eq!(kept, 256);
    assert_eq!((m.samples, original.samples), (4744, 4744));
    h.get_by_label("256 samples kept apart");
    h.get_by_label_contains("(on 4,744)");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo.w8a8.onnx");
    h.state_mut()
        .apply(slimscope::app::Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let recipe = std::fs::read_to_string(dir.path().join("demo.w8a8.recipe.toml")).expect("recipe");
    assert!(
        recipe.contains("[activations]\nmode = \"static\""),
        "{recipe}"
    );
    let ort = common::reference_script(
        "run_onnx.py",
        &[
            out.to_str().expect("path"),
            fixture("mnist_5k.csv.gz").to_str().expect("path"),
            "256",
        ],
    );
    assert_eq!(ort["samples"], 4744, "{ort}");
    assert!(ort["ops"]["QuantizeLinear"].as_u64() > Some(0), "{ort}");
    let theirs = ort["correct"].as_u64().expect("correct") as usize;
    let ours = (m.top1 * m.samples as f64).round() as usize;
    assert!(
        theirs.abs_diff(ours) <= 3,
        "onnxruntime {theirs} vs the app {ours}"
    );
    // A format no runtime reads activations from is refused, not silently dropped.
    h.state_mut().apply(slimscope::app::Command::Export(
        dir.path().join("demo.safetensors"),
    ));
    step_until(&mut h, "the refused export", |a| !a.is_exporting());
    let error = h.state().error().expect("refused").to_owned();
    assert!(error.contains("only an .onnx export carries"), "{error}");
}

/// Compare measures speed: the original's, a pin's and the current configuration's
/// exports are each served by a fresh slimscope process; every figure lands in the
/// table, the pin's file on disk is exactly the file File > Export writes for it,
/// and the Pareto row agrees with the figures shown.
#[test]
fn compare_measures_the_exports_speed_beside_the_original() {
    use slimscope::compress::config::{Config, Format, IntGranularity, Method};
    let mut h = harness();
    h.state_mut()
        .set_serving_program(env!("CARGO_BIN_EXE_slimscope").into());
    open_demo(&mut h);
    let int8 = Format::Int {
        bits: 8,
        granularity: IntGranularity::Channel,
        mse_clip: false,
    };
    let shrunk = Config {
        method: Method::Structured,
        sparsity_pct: 50.0,
        format: int8,
        ..Default::default()
    };
    let evaluated = |a: &SlimApp| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    };
    h.state_mut().document_mut().expect("a model").config = shrunk.clone();
    step_until(&mut h, "the shrunk evaluation", evaluated);
    h.state_mut().apply(slimscope::app::Command::Pin);
    h.state_mut().document_mut().expect("a model").config = Config {
        format: int8,
        ..Default::default()
    };
    step_until(&mut h, "the W8 evaluation", evaluated);
    h.run_steps(2);
    h.get_by_label("Measure speed").click();
    h.run_steps(1);
    assert!(h.state().is_measuring_speed());
    let start = Instant::now();
    while h.state().is_measuring_speed() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out measuring"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(3);
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let doc = h.state().document().expect("a model");
    let speeds = &doc.speeds;
    let original = speeds.original.clone().expect("the original");
    let pin = speeds.of(&shrunk).expect("the pin").clone();
    let (ms, rate) = pin.classifier_figures().expect("served");
    assert!(ms > 0.0 && rate > 0.0, "{pin:?}");
    assert!(pin.served.as_ref().and_then(|s| s.peak_rss()) > Some(0));
    assert!(
        pin.bytes_on_disk < original.bytes_on_disk / 2,
        "{pin:?} vs {original:?}"
    );
    // Shown (the original's latency may round to the same three decimals).
    assert!(h.get_all_by_label_contains(&format!("{ms:.3} ms")).count() >= 1);
    h.get_by_label_contains("Original on tract");
    // The Pareto row, recomputed by hand from the figures: the pin is dominated only
    // if the original or the current configuration is at least as accurate, no
    // larger and no slower (and better in one).
    let quality = |e: &slimscope::measure::evaluation::Evaluation| e.accuracy.expect("acc").1.top1;
    let current = doc.evaluation.clone().expect("current");
    let current_speed = speeds.of(&current.config).expect("current speed").clone();
    let pin_q = quality(&doc.compare.pinned[0].evaluation);
    let others = [
        (
            "the original",
            doc.attached.as_ref().expect("data").baseline.top1,
            &original,
        ),
        ("current", quality(&current), &current_speed),
    ];
    let dominator = others.iter().find(|(_, q, v)| {
        let (t, _) = v.classifier_figures().expect("served");
        let no_worse = *q >= pin_q && v.bytes_on_disk <= pin.bytes_on_disk && t <= ms;
        no_worse && (*q > pin_q || v.bytes_on_disk < pin.bytes_on_disk || t < ms)
    });
    let expected = dominator.map_or("on the front".to_owned(), |(name, ..)| {
        format!("dominated by {name}")
    });
    assert!(
        h.query_all_by_label(&expected).next().is_some(),
        "no \"{expected}\" in the Pareto row"
    );
    // The pin's served file is the file File > Export writes for it.
    h.state_mut()
        .apply(slimscope::app::Command::UseConfig(shrunk.clone()));
    step_until(&mut h, "the shrunk evaluation", evaluated);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pin.onnx");
    h.state_mut()
        .apply(slimscope::app::Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    assert_eq!(
        std::fs::metadata(&out).expect("export").len(),
        pin.bytes_on_disk
    );
}

/// With no file dialog (none opens here: no desktop portal), File > Export still
/// exports: the window's own path field takes the path, its button writes the model
/// and its recipe, *Save recipe* writes the recipe alone, and the command line it
/// shows, run in a shell, writes the same file byte for byte.
#[test]
fn a_user_with_no_file_dialog_exports_from_the_path_field() {
    let mut h = harness();
    open_demo(&mut h);
    h.state_mut().document_mut().expect("a model").config = slimscope::compress::config::Config {
        method: slimscope::compress::config::Method::Structured,
        sparsity_pct: 50.0,
        format: slimscope::compress::config::Format::Int {
            bits: 8,
            granularity: slimscope::compress::config::IntGranularity::Channel,
            mse_clip: false,
        },
        ..Default::default()
    };
    h.run_steps(2);
    // Ctrl+E, as a user presses it.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::E);
    // A window fades in over a few frames.
    h.run_steps(5);
    assert_eq!(
        h.state().prompt_title(),
        Some("Export the compressed model")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("typed.slim.onnx");
    let field = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Path");
    field.focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    // Typed as safetensors, then switched to ONNX with the format buttons.
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Path")
        .type_text(out.with_extension("safetensors").to_str().expect("path"));
    h.run_steps(2);
    h.get_by_label("ONNX").click();
    h.run_steps(2);
    let node = h.get_by_label_contains("slimscope apply ");
    let ak = node.accesskit_node();
    let shown = ak.label().or_else(|| ak.value()).expect("the command line");
    assert!(
        shown.contains(&format!("-o {}", out.display()))
            && shown.contains("--arch")
            && shown.contains("--data"),
        "{shown}"
    );
    h.get_by_label("Save recipe").click();
    h.run_steps(1);
    h.get_by_label("Export").click();
    h.run_steps(1);
    assert!(h.state().prompt_title().is_none());
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let recipe = dir.path().join("typed.slim.recipe.toml");
    assert!(recipe.exists() && out.exists());
    // The shown command, in a shell, writes the same bytes elsewhere.
    let again = dir.path().join("again.onnx");
    let command = shown.replace(out.to_str().expect("path"), again.to_str().expect("path"));
    let command = command.replace(
        again.with_extension("recipe.toml").to_str().expect("path"),
        recipe.to_str().expect("path"),
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_slimscope"));
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command.replacen("slimscope", bin.to_str().expect("path"), 1))
        .status()
        .expect("sh");
    assert!(status.success(), "{command}");
    assert_eq!(
        std::fs::read(&out).expect("export"),
        std::fs::read(&again).expect("again"),
        "{command}"
    );
}

/// Ctrl+O and *Attach data…* work with no file dialog too: the path typed in the
/// window opens the model and attaches its data.
#[test]
fn a_user_with_no_file_dialog_opens_a_model_and_attaches_data() {
    let mut h = harness();
    h.run_steps(1);
    let type_path = |h: &mut Harness<'_, SlimApp>, path: &Path| {
        // A window fades in over a few frames.
        h.run_steps(5);
        let field = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Path");
        field.focus();
        h.run_steps(1);
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Path")
            .type_text(path.to_str().expect("path"));
        h.run_steps(2);
    };
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O);
    h.run_steps(2);
    assert_eq!(h.state().prompt_title(), Some("Open a model"));
    type_path(&mut h, &fixture("digit_cnn.pth"));
    h.get_by_label("Open").click();
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    h.get_by_label("Attach data…").click();
    h.run_steps(2);
    assert_eq!(
        h.state().prompt_title(),
        Some("Attach a labelled data set or an architecture spec")
    );
    type_path(&mut h, &spec);
    h.get_by_label("Attach").click();
    step_until(&mut h, "the data", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    assert_eq!(h.state().attached().expect("data").data_path, spec);
}

/// On a language model the exact sizes show at once after a format change, and the
/// perplexity follows with its own progress: the size on screen while the text is
/// being measured is the final evaluation's.
#[test]
fn a_language_models_sizes_show_before_its_perplexity() {
    let mut h = harness();
    drop_file(&mut h, &fixture("smollm2_q4_1.gguf"));
    let wait = |h: &mut Harness<'_, SlimApp>, what: &str, done: &dyn Fn(&SlimApp) -> bool| {
        let start = Instant::now();
        while !done(h.state()) {
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "timed out waiting for {what}"
            );
            h.step();
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait(&mut h, "SmolLM2 and its baseline", &|a| {
        a.attached().is_some() && !a.is_attaching() && !a.is_loading()
    });
    h.state_mut().document_mut().expect("a model").config = slimscope::compress::config::Config {
        format: slimscope::compress::config::Format::Gguf(slimscope::dtype::GgmlQuant::Q8_0),
        ..Default::default()
    };
    wait(&mut h, "the sizes", &|a| a.evaluation().is_some());
    assert!(
        h.state().evaluation().is_some_and(|e| e.accuracy.is_none())
            && h.state().document().is_some_and(|d| d.is_evaluating()),
        "the sizes came with the perplexity, not before it"
    );
    h.run_steps(2);
    // The file is Q4_1 already: said, as llama.cpp says it.
    h.get_by_label("Re-quantizes weights already stored as Q4_1");
    let early = shown_size(&h);
    wait(&mut h, "the perplexity", &|a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    h.run_steps(2);
    assert_eq!(shown_size(&h), early);
    h.get_by_label_contains("nats/token");
}

/// With only a per-tensor override (fc_layers.0.weight at 95 %), the app says what the
/// configuration effectively does: hand-derived, torch's count round(0.95 · 294,912)
/// = 280,166 zeros over the five weight matrices' 389,920 values (288 + 18,432 +
/// 73,728 + 294,912 + 2,560) is 71.85 %; the current marker sits there, and the
/// Training tab says so instead of "Magnitude 0% · as stored".
#[test]
fn an_override_only_configuration_is_described_by_what_it_does() {
    let mut h = harness();
    open_demo(&mut h);
    let mut config = slimscope::compress::config::Config::default();
    config.overrides.insert(
        "fc_layers.0.weight".into(),
        slimscope::compress::config::Override {
            sparsity_pct: 95.0,
            format: slimscope::compress::config::Format::Keep,
        },
    );
    h.state_mut().document_mut().expect("a model").config = config;
    step_until(&mut h, "the evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    let e = h.state().evaluation().expect("evaluation");
    let want = 280_166.0 / 389_920.0;
    assert!(
        (e.matrix_sparsity - want).abs() < 1e-12,
        "{} vs {want}",
        e.matrix_sparsity
    );
    h.get_by_label("Training").click();
    h.run_steps(3);
    h.get_by_label_contains(
        "1 tensor(s) with their own settings — effectively 71.9% of the weight matrices zero",
    );
}

/// SparseGPT picked in the method picker as a user picks it: the app learns from
/// 128 samples of the attached data kept apart (the original re-measured on the
/// other 4,872), and the weights it exports are those a float64 numpy SparseGPT
/// written from the paper computes from onnxruntime's activations on those samples.
#[test]
fn sparsegpt_picked_in_the_app_prunes_as_the_paper_does() {
    let mut h = harness();
    open_demo(&mut h);
    h.state_mut().document_mut().expect("a model").config = slimscope::compress::config::Config {
        sparsity_pct: 60.0,
        ..Default::default()
    };
    h.run_steps(2);
    h.get_by_value("Magnitude").click();
    h.run_steps(2);
    h.get_by_label("SparseGPT").click();
    h.run_steps(2);
    assert_eq!(
        h.state().config().method,
        slimscope::compress::config::Method::SparseGpt
    );
    step_until(&mut h, "the SparseGPT evaluation", |a| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    });
    let e = h.state().evaluation().expect("evaluation").clone();
    let (_, m) = e.accuracy.expect("accuracy");
    let (kept, original) = e.kept_apart.expect("calibration kept apart");
    assert_eq!((kept, m.samples, original.samples), (128, 4872, 4872));
    h.get_by_label("128 samples kept apart");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo.sparsegpt.safetensors");
    h.state_mut()
        .apply(slimscope::app::Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let report = common::reference_script(
        "data_aware.py",
        &[
            fixture("digit_cnn.onnx").to_str().expect("path"),
            out.to_str().expect("path"),
            fixture("mnist_5k.csv.gz").to_str().expect("path"),
            "128",
            "sparsegpt",
            "0.6",
        ],
    );
    let layers = report.as_object().expect("layers");
    assert_eq!(layers.len(), 5, "{report}");
    for (name, l) in layers {
        assert!(
            l["mask_differs"].as_f64().expect("fraction") <= 1e-3,
            "{name}: {l}"
        );
        assert!(
            l["rows_agreeing"].as_f64().expect("fraction") >= 0.95,
            "{name}: {l}"
        );
        let d = l["max_difference"].as_f64().expect("some rows agree");
        assert!(d <= 1e-5, "{name}: {l}");
    }
}

/// GPTQ ticked beside an int2 format: the app learns from 128 samples kept apart,
/// keeps the digit CNN working where rounding to nearest breaks it, and its `.onnx`
/// export (GPTQ's codes behind DequantizeLinear) scores in onnxruntime what the app
/// shows, on the same samples.
#[test]
fn gptq_ticked_in_the_app_is_what_onnxruntime_scores() {
    use slimscope::compress::config::{Config, Format, IntGranularity};
    let mut h = harness();
    open_demo(&mut h);
    h.state_mut().document_mut().expect("a model").config = Config {
        format: Format::Int {
            bits: 2,
            granularity: IntGranularity::Channel,
            mse_clip: false,
        },
        ..Default::default()
    };
    let evaluated = |a: &SlimApp| {
        a.evaluation_is_current() && a.evaluation().is_some_and(|e| e.accuracy.is_some())
    };
    step_until(&mut h, "the int2 evaluation", evaluated);
    let rtn = h
        .state()
        .evaluation()
        .and_then(|e| e.accuracy)
        .expect("accuracy")
        .1;
    h.get_by_label("GPTQ (data-aware)").click();
    h.run_steps(2);
    assert!(h.state().config().gptq);
    step_until(&mut h, "the GPTQ evaluation", evaluated);
    let e = h.state().evaluation().expect("evaluation").clone();
    let (_, gptq) = e.accuracy.expect("accuracy");
    assert_eq!(e.kept_apart.map(|(n, _)| n), Some(128));
    assert!(
        gptq.top1 > rtn.top1 + 0.3,
        "GPTQ {} vs nearest {}",
        gptq.top1,
        rtn.top1
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo.gptq.onnx");
    h.state_mut()
        .apply(slimscope::app::Command::Export(out.clone()));
    step_until(&mut h, "the export", |a| !a.is_exporting());
    assert!(h.state().error().is_none(), "{:?}", h.state().error());
    let recipe = std::fs::read_to_string(dir.path().join("demo.gptq.recipe.toml")).expect("recipe");
    assert!(recipe.contains("method = \"gptq\""), "{recipe}");
    let ort = common::reference_script(
        "run_onnx.py",
        &[
            out.to_str().expect("path"),
            fixture("mnist_5k.csv.gz").to_str().expect("path"),
            "128",
        ],
    );
    assert_eq!(ort["samples"], 4872, "{ort}");
    let theirs = ort["correct"].as_u64().expect("correct") as usize;
    let ours = (gptq.top1 * gptq.samples as f64).round() as usize;
    assert!(
        theirs.abs_diff(ours) <= 3,
        "onnxruntime {theirs} vs the app {ours}"
    );
}

#[test]
fn curves_add_the_data_aware_methods_only_where_the_data_can_spare_their_samples() {
    use slimscope::app::panels::curves::SweepKind;
    let data_free = slimscope::sweep::full_global_points().len();
    let data_aware = slimscope::sweep::data_aware_points().len();
    // The demo's 5,000 images: Wanda, SparseGPT and GPTQ join the curves, and every
    // point, the dense one too, is measured on the 4,872 not kept apart.
    let mut h = harness();
    open_demo(&mut h);
    h.get_by_label("Curves").click();
    h.run_steps(2);
    h.get_by_label("Run: Sparsity & bit-width curves").click();
    h.run_steps(2);
    // (total points, points measured, samples of the first measured point)
    let run = |a: &SlimApp| {
        a.curves()
            .and_then(|c| c.runs.iter().find(|r| r.kind == SweepKind::Curves))
            .map(|r| {
                let samples = r.results.first().and_then(|p| p.metrics.map(|m| m.samples));
                (r.total, r.results.len(), samples)
            })
    };
    assert_eq!(run(h.state()).map(|r| r.0), Some(data_free + data_aware));
    assert!(
        h.state()
            .curves()
            .expect("curves")
            .data_aware_note
            .is_none()
    );
    step_until(&mut h, "a measured point", |a| {
        run(a).is_some_and(|r| r.1 > 0)
    });
    assert_eq!(run(h.state()).and_then(|r| r.2), Some(4872));
    h.get_by_label("Cancel").click();
    h.run_steps(2);
    drop(h);

    // 100 images cannot spare 128: the data-free curves run on all of them and the
    // tab says why the data-aware ones are missing.
    let mut h = harness();
    drop_file(&mut h, &fixture("digit_cnn.pth"));
    step_until(&mut h, "the model to load", |a| {
        a.loaded().is_some() && !a.is_loading()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    let text = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, format!("{text}limit = 100\n")).expect("write the spec");
    drop_file(&mut h, &spec);
    step_until(&mut h, "the data to attach", |a| {
        a.attached().is_some() && !a.is_attaching()
    });
    h.get_by_label("Curves").click();
    h.run_steps(2);
    h.get_by_label("Run: Sparsity & bit-width curves").click();
    h.run_steps(2);
    assert_eq!(run(h.state()).map(|r| r.0), Some(data_free));
    h.get_by_label_contains("Data-aware curves (Wanda, SparseGPT, GPTQ) left out: ");
    step_until(&mut h, "a measured point", |a| {
        run(a).is_some_and(|r| r.1 > 0)
    });
    assert_eq!(run(h.state()).and_then(|r| r.2), Some(100));
    h.get_by_label("Cancel").click();
    h.run_steps(2);
}
