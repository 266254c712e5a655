//! `slimscope eval` and the evaluation library on real data: the digit CNN (.pth) on
//! mnist_5k scores the published 0.9970 (numpy and onnxruntime agree on it,
//! fixtures.md), through the proposed architecture and through a written one;
//! compression moves accuracy the way the literature says; the figures do not depend
//! on batch size or threads; mismatched data and specs are clear errors.

mod common;

use std::path::Path;

use common::{CNN_ARCH, fixture, mnist_spec, slimscope};
use slimscope::Model;
use slimscope::compress::apply::apply_recipe;
use slimscope::compress::recipe::Recipe;
use slimscope::eval::{Metrics, Network, data, evaluate};
use slimscope::net::candle_runner;
use slimscope::net::propose::propose;
use slimscope::net::spec::ArchSpec;

fn evaluate_with(
    model: &Model,
    arch: &ArchSpec,
    recipe: Option<&str>,
    data: &data::Dataset,
) -> Metrics {
    let applied = match recipe {
        Some(text) => {
            let r = Recipe::parse(text, Path::new("r.toml")).expect("recipe");
            apply_recipe(model, &r).expect("apply")
        }
        None => Vec::new(),
    };
    // What `slimscope eval` runs: the spec checked against the weights, run by tract.
    let runner = Network::Sequential(arch.clone())
        .runner(model, &applied)
        .expect("runner");
    evaluate(runner.as_ref(), data, 256, |_, _| true).expect("evaluate")
}

#[test]
fn the_digit_cnn_scores_the_published_accuracy_on_mnist_5k() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = data::load(&mnist_spec(dir.path())).expect("data");
    assert_eq!(data.len(), 5000);
    assert_eq!(data.classes(), 10);
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    // The proposal infers padding 1 and 2×2 max-pools from the 1152-wide first linear
    // layer, and is the architecture written by hand.
    let proposal = propose(&model, data.sample_len()).expect("proposal");
    let written = ArchSpec::parse(CNN_ARCH, Path::new("cnn.toml")).expect("spec");
    let without_dropout: Vec<_> = written
        .layers
        .iter()
        .filter(|l| !matches!(l, slimscope::net::spec::LayerSpec::Dropout))
        .cloned()
        .collect();
    assert_eq!(proposal.spec.layers, without_dropout);
    assert!(proposal.notes.iter().any(|n| n.contains("same padding")));
    let m = evaluate_with(&model, &written, None, &data);
    // 0.9970 = 4,985 of 5,000 (fixtures.md: numpy and onnxruntime).
    assert_eq!((m.top1 * 5000.0).round() as usize, 4985, "{m:?}");
    assert!(m.top5.is_some_and(|t| t > 0.999));
    assert!(m.loss > 0.0 && m.loss < 0.05, "{m:?}");
}

#[test]
fn accuracy_falls_with_sparsity_and_survives_int8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = data::load(&mnist_spec(dir.path())).expect("data");
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let arch = ArchSpec::parse(CNN_ARCH, Path::new("cnn.toml")).expect("spec");
    let base = evaluate_with(&model, &arch, None, &data);
    let prune = |s: f64| {
        format!(
            "version = 1\n[[rule]]\nmatch = \"*.weight\"\nprune = {{ method = \"magnitude\", sparsity = {s}, scope = \"global\" }}\n"
        )
    };
    let half = evaluate_with(&model, &arch, Some(&prune(0.5)), &data);
    let most = evaluate_with(&model, &arch, Some(&prune(0.95)), &data);
    let int8 = evaluate_with(
        &model,
        &arch,
        Some(
            "version = 1\n[[rule]]\nmatch = \"*.weight\"\nquant = { format = \"int\", bits = 8, granularity = \"channel\" }\n",
        ),
        &data,
    );
    assert!(half.top1 >= base.top1 - 0.005, "50%: {half:?} vs {base:?}");
    assert!(most.top1 < half.top1 - 0.2, "95% should collapse: {most:?}");
    assert!(most.loss > half.loss);
    assert!(
        (int8.top1 - base.top1).abs() <= 0.002,
        "int8: {int8:?} vs {base:?}"
    );
}

#[test]
fn figures_do_not_depend_on_batch_size_or_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = data::load(&mnist_spec(dir.path())).expect("data");
    data.x.truncate(700 * 784);
    data.labels.truncate(700);
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let arch = ArchSpec::parse(CNN_ARCH, Path::new("cnn.toml")).expect("spec");
    let runner = candle_runner(&model, &arch, &[]).expect("runner");
    let run = |batch: usize, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| evaluate(&runner, &data, batch, |_, _| true).expect("evaluate"))
    };
    let a = run(256, 2);
    for (batch, threads) in [(1, 2), (333, 2), (700, 1), (64, 1)] {
        let b = run(batch, threads);
        assert_eq!(a.top1, b.top1, "batch {batch}, {threads} threads");
        assert_eq!(a.top5, b.top5);
        assert!(
            (a.loss - b.loss).abs() <= 1e-6 * a.loss,
            "batch {batch}, {threads} threads: loss {} vs {}",
            a.loss,
            b.loss
        );
    }
}

#[test]
fn the_cli_prints_original_and_compressed_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = mnist_spec(dir.path());
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, "version = 1\n[[rule]]\nmatch = \"*.weight\"\nprune = { method = \"magnitude\", sparsity = 0.95, scope = \"global\" }\n").expect("write");
    let arch_out = dir.path().join("arch.toml");
    let (code, stdout, stderr) = slimscope(&[
        "eval",
        fixture("digit_cnn.pth").to_str().expect("p"),
        "--data",
        spec.to_str().expect("p"),
        "--recipe",
        recipe.to_str().expect("p"),
        "--write-arch",
        arch_out.to_str().expect("p"),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["samples"], 5000);
    assert_eq!(report["original"]["top1"].as_f64(), Some(0.997));
    let compressed = report["compressed"]["top1"].as_f64().expect("compressed");
    assert!(compressed < 0.9, "{compressed}");
    // The written architecture runs again as --arch and gives the same figure.
    let (code, stdout, stderr) = slimscope(&[
        "eval",
        fixture("digit_cnn.pth").to_str().expect("p"),
        "--data",
        spec.to_str().expect("p"),
        "--arch",
        arch_out.to_str().expect("p"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("99.70%"), "{stdout}");
}

#[test]
fn mismatched_data_and_specs_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = fixture("digit_cnn.pth");
    let run = |data: &Path, arch: Option<&Path>| {
        let mut args = vec![
            "eval".to_owned(),
            model.display().to_string(),
            "--data".into(),
            data.display().to_string(),
        ];
        if let Some(a) = arch {
            args.extend(["--arch".into(), a.display().to_string()]);
        }
        let (code, _, stderr) = slimscope(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 2, "{stderr}");
        stderr
    };
    // 10 features for a model that takes 784.
    let small = dir.path().join("small.csv");
    std::fs::write(&small, "1,2,3,4,5,6,7,8,9,10,3\n1,2,3,4,5,6,7,8,9,10,4\n").expect("write");
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, CNN_ARCH).expect("write");
    let err = run(&small, Some(&arch));
    assert!(
        err.contains("small.csv") && err.contains("10 values") && err.contains("784"),
        "{err}"
    );
    // A label the 10-class model cannot produce.
    let row = |label: u32| format!("{}{label}\n", "0,".repeat(784));
    let bad_label = dir.path().join("labels.csv");
    std::fs::write(&bad_label, row(3) + &row(12)).expect("write");
    let err = run(&bad_label, Some(&arch));
    assert!(
        err.contains("label 12") && err.contains("10 classes"),
        "{err}"
    );
    // Without padding the flatten width is wrong: the layer and the numbers are named.
    let no_pad = dir.path().join("nopad.toml");
    std::fs::write(&no_pad, CNN_ARCH.replace("padding = 1\n", "")).expect("write");
    let err = run(&bad_label, Some(&no_pad));
    assert!(
        err.contains("fc_layers.0.weight") && err.contains("1152"),
        "{err}"
    );
    // A spec with an unknown operation names its file.
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        "version = 1\ninput = [784]\n[[layer]]\nop = \"teleport\"\n",
    )
    .expect("write");
    let err = run(&bad_label, Some(&unknown));
    assert!(
        err.contains("unknown.toml") && err.contains("teleport"),
        "{err}"
    );
    // A CSV row with a word in it.
    let word = dir.path().join("word.csv");
    std::fs::write(&word, row(1) + &row(1).replacen('0', "x", 1)).expect("write");
    let err = run(&word, Some(&arch));
    assert!(err.contains("word.csv") && err.contains("row 2"), "{err}");
}

#[test]
fn idx_and_headed_csv_files_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    // IDX by hand: 2 images of 2×3 bytes, 2 labels.
    let images = dir.path().join("img-idx3-ubyte");
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
    bytes.extend([0, 1, 2, 3, 4, 5, 255, 254, 253, 252, 251, 250]);
    std::fs::write(&images, bytes).expect("write");
    let labels = dir.path().join("lab-idx1-ubyte");
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 7, 1]).expect("write");
    let spec = dir.path().join("idx.toml");
    std::fs::write(
        &spec,
        "file = \"img-idx3-ubyte\"\nlabels = \"lab-idx1-ubyte\"\ndivide = 255.0\n",
    )
    .expect("write");
    let d = data::load(&spec).expect("idx");
    assert_eq!(d.sample_shape, vec![2, 3]);
    assert_eq!(d.labels, vec![7, 1]);
    assert_eq!(d.x[6], 1.0);
    assert_eq!(d.x[1], 1.0 / 255.0);
    // A CSV with a header, the label named and first.
    let csv = dir.path().join("h.csv");
    std::fs::write(&csv, "digit,a,b\n2,0.5,1.5\n0,2.5,3.5\n").expect("write");
    let spec = dir.path().join("csv.toml");
    std::fs::write(
        &spec,
        "file = \"h.csv\"\nlabel = \"digit\"\nmean = [0.5]\nstd = [2.0]\n",
    )
    .expect("write");
    let d = data::load(&spec).expect("csv");
    assert_eq!(d.labels, vec![2, 0]);
    assert_eq!(d.x, vec![0.0, 0.5, 1.0, 1.5]);
}

#[test]
fn an_npz_data_set_loads_x_and_y() {
    // An .npz written by hand: x float32 [3, 2], y int64 [3] (numpy's .npy v1 format).
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.npz");
    let x: Vec<u8> = [0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let y: Vec<u8> = [2i64, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = std::fs::File::create(&path).expect("create");
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in [
        ("x.npy", npy("<f4", "(3, 2)", &x)),
        ("y.npy", npy("<i8", "(3,)", &y)),
    ] {
        zip.start_file(name, options).expect("member");
        std::io::Write::write_all(&mut zip, &bytes).expect("write");
    }
    zip.finish().expect("finish");
    let d = data::load(&path).expect("npz");
    assert_eq!(d.sample_shape, vec![2]);
    assert_eq!(d.labels, vec![2, 0, 1]);
    assert_eq!(d.x, vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
}

// --- the ONNX runner ----------------------------------------------------------------

/// The digit CNN exported to ONNX by the fixture step (onnx.helper, from the .pth).
fn onnx_cnn() -> Model {
    Model::open(fixture("digit_cnn.onnx")).expect("onnx model")
}

#[test]
fn the_onnx_export_scores_the_published_accuracy_and_matches_onnx_reference_logits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = data::load(&mnist_spec(dir.path())).expect("data");
    let model = onnx_cnn();
    let (network, notes) = Network::resolve(&model, None, &data).expect("network");
    assert!(network.spec().is_none() && notes.is_empty());
    let runner = network.runner(&model, &[]).expect("runner");
    assert_eq!(runner.input_shape(), [1, 28, 28]);
    assert_eq!(runner.classes(), 10);
    let m = evaluate(runner.as_ref(), &data, 256, |_, _| true).expect("evaluate");
    assert_eq!((m.top1 * 5000.0).round() as usize, 4985, "{m:?}");
    // onnx.reference.ReferenceEvaluator's logits for 64 images spread over the classes.
    let r = &common::reference()["digit_cnn_onnx"];
    let index: Vec<usize> = r["index"]
        .as_array()
        .expect("index")
        .iter()
        .map(|v| v.as_u64().expect("u64") as usize)
        .collect();
    let want: Vec<f64> = r["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|v| v.as_f64().expect("f64"))
        .collect();
    let mut batch = Vec::new();
    for (k, &i) in index.iter().enumerate() {
        batch.extend_from_slice(&data.x[i * 784..(i + 1) * 784]);
        assert_eq!(
            u64::from(data.labels[i]),
            r["labels"][k].as_u64().expect("label")
        );
    }
    // The ONNX graph on tract, and the .pth through its spec (first convolution
    // computed directly, the rest on tract): both give onnx's reference logits.
    let pth = Model::open(fixture("digit_cnn.pth")).expect("pth");
    let spec = ArchSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/digit_cnn.arch.toml"),
    )
    .expect("spec");
    let sequential = Network::Sequential(spec).runner(&pth, &[]).expect("runner");
    for (name, runner) in [("onnx", runner.as_ref()), ("spec", sequential.as_ref())] {
        let got = runner.logits(&batch, index.len()).expect("logits");
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "{name}: max |Δlogit| {worst}");
    }
}

#[test]
fn compressed_weights_reach_the_onnx_graph() {
    // The same recipe through the ONNX graph (tract) and the sequential runner
    // (candle): two engines, one set of compressed weights, the same figures.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = data::load(&mnist_spec(dir.path())).expect("data");
    // Every 5th image: all classes, a fifth of the time.
    let keep: Vec<usize> = (0..data.len()).step_by(5).collect();
    data.x = keep
        .iter()
        .flat_map(|&i| data.x[i * 784..(i + 1) * 784].to_vec())
        .collect();
    data.labels = keep.iter().map(|&i| data.labels[i]).collect();
    let onnx = onnx_cnn();
    let pth = Model::open(fixture("digit_cnn.pth")).expect("pth");
    let arch = ArchSpec::parse(CNN_ARCH, Path::new("cnn.toml")).expect("spec");
    let (network, _) = Network::resolve(&onnx, None, &data).expect("network");
    let original = network.runner(&onnx, &[]).expect("runner");
    let base = evaluate(original.as_ref(), &data, 100, |_, _| true).expect("evaluate");
    for recipe in [
        "version = 1\n[[rule]]\nmatch = \"*.weight\"\nprune = { method = \"magnitude\", sparsity = 0.95, scope = \"global\" }\n",
        "version = 1\n[[rule]]\nmatch = \"*.weight\"\nquant = { format = \"int\", bits = 2, granularity = \"tensor\" }\n",
    ] {
        let r = Recipe::parse(recipe, Path::new("r.toml")).expect("recipe");
        let applied = apply_recipe(&onnx, &r).expect("apply");
        let runner = network.runner(&onnx, &applied).expect("runner");
        let via_onnx = evaluate(runner.as_ref(), &data, 100, |_, _| true).expect("evaluate");
        let runner = candle_runner(&pth, &arch, &applied).expect("candle runner");
        let via_candle = evaluate(&runner, &data, 100, |_, _| true).expect("evaluate");
        assert!(
            via_onnx.loss > 2.0 * base.loss,
            "{recipe}: not compressed? {via_onnx:?} vs {base:?}"
        );
        assert_eq!(via_onnx.top1, via_candle.top1, "{recipe}");
        assert!(
            (via_onnx.loss - via_candle.loss).abs() < 1e-4 * via_candle.loss,
            "{recipe}: {via_onnx:?} vs {via_candle:?}"
        );
    }
}

#[test]
fn onnx_figures_do_not_depend_on_batch_size_or_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = data::load(&mnist_spec(dir.path())).expect("data");
    data.x.truncate(333 * 784);
    data.labels.truncate(333);
    let model = onnx_cnn();
    let (network, _) = Network::resolve(&model, None, &data).expect("network");
    let runner = network.runner(&model, &[]).expect("runner");
    let run = |batch: usize, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| evaluate(runner.as_ref(), &data, batch, |_, _| true).expect("evaluate"))
    };
    let a = run(256, 2);
    for (batch, threads) in [(1, 2), (77, 1), (333, 2)] {
        let b = run(batch, threads);
        assert_eq!(a.top1, b.top1, "batch {batch}, {threads} threads");
        assert_eq!(a.loss, b.loss, "batch {batch}, {threads} threads");
    }
}

#[test]
fn onnx_graphs_that_are_not_classifiers_of_the_data_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = mnist_spec(dir.path());
    let run = |model: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            model.to_str().expect("p"),
            "--data",
            spec.to_str().expect("p"),
        ];
        args.extend(extra);
        let (code, _, stderr) = slimscope(&args);
        assert_eq!(code, 2, "{stderr}");
        stderr
    };
    // A sentence encoder: three int64 inputs.
    let err = run(&fixture("minilm_int8.onnx"), &[]);
    assert!(
        err.contains("minilm_int8.onnx") && err.contains("input_ids") && err.contains("one input"),
        "{err}"
    );
    // A 3×48×192 text-angle classifier given 1×28×28 digits.
    let err = run(&fixture("ppocr_cls.onnx"), &[]);
    assert!(
        err.contains("ppocr_cls.onnx") && err.contains("[1, 28, 28]"),
        "{err}"
    );
    // An architecture spec does not apply to an ONNX graph.
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, CNN_ARCH).expect("write");
    let err = run(
        &fixture("digit_cnn.onnx"),
        &["--arch", arch.to_str().expect("p")],
    );
    assert!(
        err.contains("digit_cnn.onnx") && err.contains("own graph"),
        "{err}"
    );
    // A truncated copy.
    let bytes = std::fs::read(fixture("digit_cnn.onnx")).expect("read");
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let err = run(&cut, &[]);
    assert!(err.contains("cut.onnx"), "{err}");
}

#[test]
fn the_cli_evaluates_an_onnx_model_with_a_recipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = mnist_spec(dir.path());
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, "version = 1\n[[rule]]\nmatch = \"*.weight\"\nquant = { format = \"int\", bits = 8, granularity = \"channel\" }\n").expect("write");
    let (code, stdout, stderr) = slimscope(&[
        "eval",
        fixture("digit_cnn.onnx").to_str().expect("p"),
        "--data",
        spec.to_str().expect("p"),
        "--recipe",
        recipe.to_str().expect("p"),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["original"]["top1"].as_f64(), Some(0.997));
    let int8 = report["compressed"]["top1"].as_f64().expect("compressed");
    assert!((int8 - 0.997).abs() <= 0.002, "{int8}");
}

/// The app's evaluation tells the exact sizes first, with no task figures, then the
/// task's progress, then everything: the sizes told early are the final ones, and the
/// final top-1 is the plain evaluation's on the same data.
#[test]
fn an_evaluation_tells_its_sizes_before_its_accuracy() {
    use slimscope::compress::apply::TensorCache;
    use slimscope::compress::config::{Config, Format, IntGranularity};
    use slimscope::measure::evaluation::{Evaluation, Hooks, evaluate as evaluate_config};
    use slimscope::stats::StatsOptions;
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let dir = tempfile::tempdir().expect("tempdir");
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, CNN_ARCH).expect("arch");
    let spec = mnist_spec(dir.path());
    let attached = slimscope::eval::attach::attach(&model, &spec, Some(&arch), 1, |_, _| true)
        .expect("attach");
    let reports = slimscope::inspect::inspect_model(&model, &StatsOptions::default(), |_, _| true)
        .expect("reports");
    let config = Config {
        format: Format::Int {
            bits: 4,
            granularity: IntGranularity::Channel,
            mse_clip: false,
        },
        ..Default::default()
    };
    let events = std::sync::Mutex::new(Vec::<String>::new());
    let early = std::sync::Mutex::new(None::<Evaluation>);
    let mut sizes = |e: &Evaluation| {
        events.lock().expect("lock").push("sizes".into());
        *early.lock().expect("lock") = Some(e.clone());
    };
    let mut progress = |done: usize, total: usize| {
        events.lock().expect("lock").push(format!("{done}/{total}"));
        true
    };
    let cache = TensorCache::new(1 << 28);
    let hooks = Hooks {
        cancelled: &|| false,
        sizes: &mut sizes,
        progress: &mut progress,
    };
    let e = evaluate_config(
        &model,
        &reports,
        &config,
        256,
        &cache,
        Some((1, &attached.evaluator)),
        hooks,
    )
    .expect("evaluate");
    let events = events.into_inner().expect("lock");
    assert_eq!(
        events.first().map(String::as_str),
        Some("sizes"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("5000/5000"),
        "{events:?}"
    );
    let early = early.into_inner().expect("lock").expect("sizes told");
    assert!(early.accuracy.is_none());
    assert_eq!(early.totals, e.totals);
    let (_, m) = e.accuracy.expect("accuracy");
    let applied = apply_recipe(
        &model,
        &config.to_recipe(Path::new("(test)")).expect("recipe"),
    )
    .expect("apply");
    let runner = attached.evaluator.network();
    let Network::Sequential(arch_spec) = runner else {
        panic!("a sequential network");
    };
    let weights = slimscope::net::weights::ModelWeights::new(&model, &applied);
    let plain =
        slimscope::net::sequential_runner(arch_spec, &weights, &model.path).expect("runner");
    let want =
        evaluate(plain.as_ref(), attached.evaluator.data(), 500, |_, _| true).expect("plain");
    assert_eq!(m.top1, want.top1);
}

/// Hand-derived: 4,729 of 4,744 right is p = 0.996838, standard error
/// √(p(1 − p)/n) = 0.000815; the JSON carries it, and 0.9968 vs 0.9970 on 5,000 is
/// within noise while 0.9970 vs 0.9500 is not.
#[test]
fn accuracy_comes_with_its_standard_error() {
    let p = 4729.0 / 4744.0;
    let se = slimscope::eval::binomial_standard_error(p, 4744);
    assert!((se - 0.000_815_1).abs() < 5e-8, "{se}");
    assert!(slimscope::eval::within_noise(
        (p, se),
        (
            0.9970,
            slimscope::eval::binomial_standard_error(0.997, 5000)
        )
    ));
    assert!(!slimscope::eval::within_noise(
        (0.997, 0.00077),
        (0.95, 0.0031)
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, CNN_ARCH).expect("arch");
    let spec = mnist_spec(dir.path());
    let s = |p: &Path| p.to_str().expect("path").to_owned();
    let (code, stdout, stderr) = slimscope(&[
        "eval",
        &s(&fixture("digit_cnn.pth")),
        "--arch",
        &s(&arch),
        "--data",
        &s(&spec),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let original = &report["original"];
    let (p, n) = (
        original["top1"].as_f64().expect("top1"),
        original["samples"].as_f64().expect("samples"),
    );
    let stderr_json = original["top1_stderr"].as_f64().expect("top1_stderr");
    assert!(
        (stderr_json - (p * (1.0 - p) / n).sqrt()).abs() < 1e-15,
        "{original}"
    );
}
