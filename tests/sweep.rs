//! Sweeps on the real digit CNN and mnist_5k: the curves behave as the pruning
//! literature says (accuracy holds, then collapses; 0% is the baseline exactly; a tiny
//! first convolution is among the most sensitive layers), cancellation keeps what was
//! done and leaves no work running, a failing job does not stop the next one, results
//! do not depend on the thread count, and the analyses match hand-derived cases.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, slimscope};
use slimscope::Model;
use slimscope::compress::apply::{TensorCache, apply, apply_cached};
use slimscope::compress::config::{Config, Format, Override};
use slimscope::compress::recipe::Recipe;
use slimscope::eval::data::{self, Dataset};
use slimscope::eval::evaluator::Evaluator;
use slimscope::eval::{Network, evaluate};
use slimscope::jobs::{CancelToken, JobEvent, Pool};
use slimscope::sweep::analysis::{
    Allocation, LayerSensitivity, allocate, curve, heatmap, pareto_front, sensitivity,
};
use slimscope::sweep::{
    Axis, PointResult, SweepContext, SweepMethod, global_points, per_layer_points, run,
    sweepable_layers,
};

/// mnist_5k with the digit CNN's preprocessing, every `step`-th image (the file is
/// sorted by class, so a stride keeps all ten).
fn mnist(step: usize) -> Dataset {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    let mut d = data::load(&spec).expect("data");
    let keep: Vec<usize> = (0..d.len()).step_by(step).collect();
    d.x = keep
        .iter()
        .flat_map(|&i| d.x[i * 784..(i + 1) * 784].to_vec())
        .collect();
    d.labels = keep.iter().map(|&i| d.labels[i]).collect();
    d
}

fn measured(results: Vec<Option<PointResult>>) -> Vec<PointResult> {
    results
        .into_iter()
        .map(|r| r.expect("every point measured"))
        .collect()
}

#[test]
fn the_global_magnitude_curve_starts_at_the_baseline_and_falls_and_the_first_conv_is_sensitive() {
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let data = mnist(5);
    let (network, _) = Network::resolve(&model, None, &data).expect("network");
    let baseline = evaluate(
        network.runner(&model, &[]).expect("runner").as_ref(),
        &data,
        256,
        |_, _| true,
    )
    .expect("baseline");
    let levels: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.05).collect();
    let mut points = global_points(&[SweepMethod::Global], &levels, &[]);
    let layers = sweepable_layers(&model);
    assert_eq!(layers.len(), 5, "{layers:?}");
    points.extend(per_layer_points(&layers, &[0.5, 0.7, 0.9], &[]));
    let cache = TensorCache::new(1 << 28);
    let evaluator = Evaluator::new(Arc::new(network), Arc::new(data));
    let ctx = SweepContext {
        model: &model,
        accuracy: Some(&evaluator),
        cache: &cache,
    };
    let results =
        measured(run(&ctx, &points, &CancelToken::default(), |_, _| {}, |_, _| {}).expect("sweep"));

    let global = curve(&results, "magnitude (global)", Axis::Sparsity);
    assert_eq!(global.len(), 20);
    // 0% is the uncompressed model: exactly the baseline, not approximately.
    let zero = global[0].metrics.expect("metrics");
    assert_eq!(global[0].point.level, 0.0);
    assert_eq!((zero.top1, zero.loss), (baseline.top1, baseline.loss));
    // Monotone within noise (one image in 1,000 either way is 0.1%).
    let acc: Vec<f64> = global.iter().map(|r| r.metrics.expect("m").top1).collect();
    for i in 0..acc.len() {
        for j in i + 1..acc.len() {
            assert!(acc[j] <= acc[i] + 0.005, "not monotone: {acc:?}");
        }
    }
    // Half the weights cost nothing; 95% costs a lot (the digit CNN is 98% in fc0).
    assert!(acc[10] >= baseline.top1 - 0.005, "{acc:?}");
    assert!(acc[19] < baseline.top1 - 0.05, "{acc:?}");
    // Sizes fall and sparsity follows the level.
    for w in global.windows(2) {
        assert!(w[1].bytes <= w[0].bytes);
    }
    assert!((global[10].sparsity - 0.5).abs() < 0.01);

    let ranking = sensitivity(&results, "layer magnitude", Some(baseline.top1));
    assert_eq!(ranking.len(), 5);
    assert!(ranking.iter().all(|s| s.measured && s.drops.len() == 3));
    let position = ranking
        .iter()
        .position(|s| s.layer == "conv_layers.0.weight")
        .expect("first conv ranked");
    assert!(
        position <= 1,
        "the 288-weight first conv should be among the two most sensitive: {ranking:#?}"
    );
    // fc0 holds 294,912 of the 389,472 weights and shrugs off pruning.
    let fc0 = ranking
        .iter()
        .find(|s| s.layer == "fc_layers.0.weight")
        .expect("fc0");
    assert!(fc0.score < ranking[0].score / 4.0, "{ranking:#?}");
}

/// An independent evaluation of `model` with `recipe` applied: the whole network
/// planned afresh, no cache, no reused activations.
fn evaluate_afresh(
    model: &Model,
    network: &Network,
    data: &Dataset,
    recipe: &str,
) -> slimscope::eval::Metrics {
    let origin = Path::new("(test)");
    let r = Recipe::parse(recipe, origin).expect("recipe");
    let applied = slimscope::compress::apply::apply_recipe(model, &r).expect("apply");
    evaluate(
        network.runner(model, &applied).expect("runner").as_ref(),
        data,
        100,
        |_, _| true,
    )
    .expect("evaluate")
}

#[test]
fn reused_activations_and_repeated_variants_give_the_figures_of_a_fresh_evaluation() {
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let data = Arc::new(mnist(4));
    let (network, _) = Network::resolve(&model, None, &data).expect("network");
    let network = Arc::new(network);
    let evaluator = Evaluator::new(network.clone(), data.clone());
    let cache = TensorCache::new(1 << 28);
    let ctx = SweepContext {
        model: &model,
        accuracy: Some(&evaluator),
        cache: &cache,
    };
    // Every layer alone at 80%: all but the first start from cached activations.
    let layers = sweepable_layers(&model);
    let points = per_layer_points(&layers, &[0.8], &[3]);
    let results =
        measured(run(&ctx, &points, &CancelToken::default(), |_, _| {}, |_, _| {}).expect("sweep"));
    assert!(
        evaluator.prefixes() >= 3,
        "cached cuts: {}",
        evaluator.prefixes()
    );
    for r in &results {
        let got = r.metrics.expect("metrics");
        let want = evaluate_afresh(&model, &network, &data, &r.point.recipe);
        assert_eq!(got.top1, want.top1, "{}", r.point.recipe);
        assert!(
            (got.loss - want.loss).abs() <= 1e-5 * want.loss.abs().max(1e-3),
            "{}: loss {} vs {}",
            r.point.recipe,
            got.loss,
            want.loss
        );
    }
    // 0% of any method changes nothing: one measurement, the model as it is.
    let before = evaluator.measured();
    let zeros = global_points(
        &[
            SweepMethod::Global,
            SweepMethod::Magnitude,
            SweepMethod::Random,
            SweepMethod::Structured,
        ],
        &[0.0],
        &[],
    );
    let zero =
        measured(run(&ctx, &zeros, &CancelToken::default(), |_, _| {}, |_, _| {}).expect("sweep"));
    assert_eq!(evaluator.measured(), before + 1);
    let baseline = evaluate(
        network.runner(&model, &[]).expect("runner").as_ref(),
        &data,
        100,
        |_, _| true,
    )
    .expect("baseline");
    for r in &zero {
        let m = r.metrics.expect("metrics");
        assert_eq!(
            (m.top1, m.loss),
            (baseline.top1, baseline.loss),
            "{}",
            r.point.curve
        );
    }
    // Measuring a point again is served from the cache: nothing new is measured.
    let again =
        slimscope::sweep::measure(&ctx, &points[1], &CancelToken::default()).expect("again");
    assert_eq!(again.metrics, results[1].metrics);
    assert_eq!(evaluator.measured(), before + 1);
}

#[test]
fn the_heatmap_holds_each_layers_weight_sqnr_refined_by_measured_drops() {
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let layers = sweepable_layers(&model);
    let points = per_layer_points(&layers, &[0.5, 0.9], &[]);
    let cache = TensorCache::new(1 << 28);
    let free = SweepContext {
        model: &model,
        accuracy: None,
        cache: &cache,
    };
    let fidelity = measured(
        run(
            &free,
            &points,
            &CancelToken::default(),
            |_, _| {},
            |_, _| {},
        )
        .expect("sweep"),
    );
    let map = heatmap(&fidelity, None);
    assert_eq!(map.layers.len(), 5);
    let headings: Vec<String> = map.columns.iter().map(|c| c.heading()).collect();
    assert_eq!(headings, ["50%", "90%"]);
    // Each cell by hand, in float64: magnitude pruning to s zeroes the round(s·n)
    // smallest |w|, so SQNR = 10·log10(Σw² / Σ of those w²).
    for (layer, row) in map.layers.iter().zip(&map.cells) {
        let index = model.tensor_index(layer).expect("tensor");
        let w: Vec<f64> = model
            .tensor_f32(index)
            .expect("values")
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let mut sq: Vec<f64> = w.iter().map(|v| v * v).collect();
        sq.sort_by(f64::total_cmp);
        let total: f64 = sq.iter().sum();
        for (col, cell) in map.columns.iter().zip(row) {
            let k = (col.level * w.len() as f64).round_ties_even() as usize;
            let want = 10.0 * (total / sq[..k].iter().sum::<f64>()).log10();
            let got = cell.expect("cell").sqnr_db;
            assert!(
                (got - want).abs() < 1e-6,
                "{layer} {}: {got} vs {want}",
                col.heading()
            );
            assert!(cell.expect("cell").top1_drop.is_none());
        }
    }
    // Data-free, the most damaged layer leads: the smallest SQNR at 90%.
    let worst = (0..5)
        .min_by(|&a, &b| {
            map.cells[a][1]
                .expect("c")
                .sqnr_db
                .total_cmp(&map.cells[b][1].expect("c").sqnr_db)
        })
        .expect("rows");
    assert!(worst <= 1, "{:?}", map.layers);

    // Measured points of one layer refine its cells with the top-1 drop.
    let data = Arc::new(mnist(5));
    let (network, _) = Network::resolve(&model, None, &data).expect("network");
    let evaluator = Evaluator::new(Arc::new(network), data);
    let baseline = evaluator
        .measure(&model, &[], 256, |_, _| true)
        .expect("baseline");
    let ctx = SweepContext {
        model: &model,
        accuracy: Some(&evaluator),
        cache: &cache,
    };
    let conv0: Vec<_> = points
        .iter()
        .filter(|p| p.layer.as_deref() == Some("conv_layers.0.weight"))
        .cloned()
        .collect();
    let accuracy =
        measured(run(&ctx, &conv0, &CancelToken::default(), |_, _| {}, |_, _| {}).expect("sweep"));
    let mut all = fidelity.clone();
    all.extend(accuracy.iter().cloned());
    let refined = heatmap(&all, Some(baseline.top1));
    // The measured layer now leads (measured rows rank first) and its cells hold drops.
    assert_eq!(refined.layers[0], "conv_layers.0.weight");
    for (col, cell) in refined.columns.iter().zip(&refined.cells[0]) {
        let r = accuracy
            .iter()
            .find(|r| r.point.level == col.level)
            .expect("measured point");
        let drop = cell.expect("cell").top1_drop.expect("measured");
        assert_eq!(drop, baseline.top1 - r.metrics.expect("m").top1);
    }
    assert!(
        refined.cells[1..]
            .iter()
            .flatten()
            .flatten()
            .all(|c| c.top1_drop.is_none())
    );
}

#[test]
fn a_cancelled_sweep_ends_cancelled_keeps_its_points_and_leaves_nothing_running() {
    let model = Arc::new(Model::open(fixture("digit_cnn.pth")).expect("model"));
    let data = Arc::new(mnist(1));
    let (network, _) = Network::resolve(&model, None, &data).expect("network");
    let network = Arc::new(network);
    let evaluator = Arc::new(Evaluator::new(network.clone(), data.clone()));
    let levels: Vec<f64> = (0..19).map(|i| f64::from(i) * 0.05).collect();
    let points = global_points(&[SweepMethod::Global, SweepMethod::Random], &levels, &[]);
    let pool = Pool::new(1, 2).expect("pool");
    let job = {
        let (model, evaluator, points) = (model.clone(), evaluator.clone(), points.clone());
        pool.submit::<(), (usize, PointResult), _>(
            || {},
            move |progress| {
                let cache = TensorCache::new(1 << 28);
                let ctx = SweepContext {
                    model: &model,
                    accuracy: Some(&evaluator),
                    cache: &cache,
                };
                slimscope::sweep::run_job(&ctx, &points, progress)
            },
        )
    };
    let mut got: Vec<(usize, PointResult)> = Vec::new();
    let mut cancelled_at = None;
    let last = loop {
        let event = job
            .events
            .recv_timeout(Duration::from_secs(60))
            .expect("an event within a minute");
        match event {
            JobEvent::Point(p) => {
                got.push(p);
                if got.len() == 2 {
                    job.cancel();
                    cancelled_at = Some(Instant::now());
                }
            }
            e if e.is_end() => break e,
            _ => {}
        }
    };
    let stopped_in = cancelled_at.expect("cancelled").elapsed();
    assert!(matches!(last, JobEvent::Cancelled), "{last:?}");
    // Points in flight when the flag was raised stop at their next batch.
    assert!(stopped_in < Duration::from_secs(2), "took {stopped_in:?}");
    assert!(got.len() >= 2 && got.len() < points.len());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.running(), 0);
    drop(pool); // joins the worker and compute threads
    // The points kept are real results: the same as measuring them again, afresh.
    let cache = TensorCache::new(1 << 28);
    let fresh = Evaluator::new(network, data);
    let ctx = SweepContext {
        model: &model,
        accuracy: Some(&fresh),
        cache: &cache,
    };
    let (i, kept) = &got[0];
    let again =
        slimscope::sweep::measure(&ctx, &points[*i], &CancelToken::default()).expect("measure");
    assert_eq!(
        kept.metrics,
        again.metrics.map(|m| slimscope::eval::Metrics {
            samples_per_second: kept.metrics.expect("m").samples_per_second,
            ..m
        })
    );
    assert_eq!(kept.bytes, again.bytes);
}

#[test]
fn a_failing_sweep_job_reports_failed_and_the_next_job_runs() {
    let model = Arc::new(Model::open(fixture("digit_cnn.pth")).expect("model"));
    let pool = Pool::new(1, 2).expect("pool");
    let sweep = |layer: &str| {
        let model = model.clone();
        let mut config = Config::default();
        config.overrides.insert(
            layer.to_owned(),
            Override {
                sparsity_pct: 50.0,
                format: Format::Keep,
            },
        );
        let points = per_layer_points(&[layer.to_owned()], &[0.5], &[]);
        pool.submit::<usize, (), _>(
            || {},
            move |_| {
                let cache = TensorCache::new(1 << 20);
                let ctx = SweepContext {
                    model: &model,
                    accuracy: None,
                    cache: &cache,
                };
                let r = run(&ctx, &points, &CancelToken::default(), |_, _| {}, |_, _| {})?;
                Ok(r.len())
            },
        )
    };
    let end = |h: slimscope::jobs::JobHandle<usize>| loop {
        let e = h
            .events
            .recv_timeout(Duration::from_secs(60))
            .expect("event");
        if e.is_end() {
            return e;
        }
    };
    // A recipe rule for a tensor the model does not have is a bad recipe.
    match end(sweep("no.such.weight")) {
        JobEvent::Failed(slimscope::Error::Recipe(e)) => {
            assert!(e.message.contains("matches no tensor"), "{e}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        end(sweep("fc_layers.2.weight")),
        JobEvent::Finished(1)
    ));
}

#[test]
fn the_tensor_cache_gives_what_a_fresh_apply_gives() {
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let cache = TensorCache::new(1 << 28);
    let origin = Path::new("r.toml");
    let global = "version = 1\n[[rule]]\nmatch = \"*.weight\"\nprune = { method = \"magnitude\", sparsity = 0.6, scope = \"global\" }\n";
    // The same global rule with one member also quantized: the other members' results
    // come from the cache, the group's threshold is recomputed for the new one.
    let mixed = format!(
        "{global}[[rule]]\nmatch = \"fc_layers.2.weight\"\nquant = {{ format = \"int\", bits = 4, granularity = \"channel\" }}\n"
    );
    for text in [global, mixed.as_str(), global] {
        let recipe = Recipe::parse(text, origin).expect("recipe");
        let names: Vec<(&str, usize)> = model
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.len()))
            .collect();
        let plans = recipe.resolve(&names).expect("plans");
        let fresh = apply(&model, &plans).expect("apply");
        let cached = apply_cached(&model, &plans, Some(&cache), None).expect("apply cached");
        assert_eq!(fresh.len(), cached.len());
        for ((i, a), (j, b)) in fresh.iter().zip(&cached) {
            assert_eq!(i, j);
            assert_eq!(a.values, b.values, "{}", a.name);
            assert_eq!(a.bytes_after, b.bytes_after);
            assert_eq!(a.scheme, b.scheme);
        }
    }
    // 5 weights of the global rule, plus the quantized fc2 in the second recipe.
    assert_eq!(cache.len(), 6);
}

#[test]
fn the_pareto_front_and_allocations_match_hand_derived_cases() {
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let ctx_cache = TensorCache::new(1 << 20);
    let ctx = SweepContext {
        model: &model,
        accuracy: None,
        cache: &ctx_cache,
    };
    let point = global_points(&[SweepMethod::Global], &[0.5], &[]).remove(0);
    let base = slimscope::sweep::measure(&ctx, &point, &CancelToken::default()).expect("measure");
    // (bytes, top-1): B and D are dominated (C is smaller and better than D; A ties B's
    // size with better accuracy), E is the best and the biggest.
    let mk = |bytes: u64, top1: f64| PointResult {
        bytes,
        metrics: Some(slimscope::eval::Metrics {
            samples: 1,
            top1,
            top5: None,
            loss: 0.0,
            samples_per_second: 1.0,
            task: slimscope::eval::TaskFigures::Classification,
        }),
        ..base.clone()
    };
    let results = [
        mk(100, 0.90),
        mk(100, 0.80),
        mk(50, 0.85),
        mk(70, 0.84),
        mk(300, 0.99),
    ];
    assert_eq!(pareto_front(&results), [2, 0, 4]);

    // Inverse sensitivity by hand: layers a (100 weights, score 0.1) and b (300
    // weights, score 0.3) at 30% average: s = c/score, 100·10c + 300·(10/3)c = 120
    // → c = 0.06, a 60%, b 20%.
    let rank = |layer: &str, score: f64| LayerSensitivity {
        layer: layer.into(),
        curve: "layer magnitude".into(),
        drops: vec![(0.5, score)],
        score,
        measured: true,
    };
    let layers = [("a".to_owned(), 100), ("b".to_owned(), 300)];
    let ranking = [rank("b", 0.3), rank("a", 0.1)];
    let c = allocate(Allocation::Sensitivity, 0.3, &layers, &ranking);
    assert_eq!(c.overrides["a"].sparsity_pct, 60.0);
    assert_eq!(c.overrides["b"].sparsity_pct, 20.0);
    let u = allocate(Allocation::Uniform, 0.3, &layers, &ranking);
    assert_eq!(u.overrides["a"].sparsity_pct, 30.0);
    assert_eq!(u.overrides["b"].sparsity_pct, 30.0);
    let g = allocate(Allocation::GlobalThreshold, 0.3, &layers, &ranking);
    assert!(g.global_scope && g.overrides.is_empty() && g.sparsity_pct == 30.0);
}

#[test]
fn the_cli_gives_the_same_points_with_one_and_two_threads_and_writes_reappliable_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    let model = fixture("digit_cnn.pth");
    let sweep = |jobs: &str, out: &Path| {
        let (code, stdout, stderr) = slimscope(&[
            "sweep",
            model.to_str().expect("p"),
            "--data",
            spec.to_str().expect("p"),
            "--prune",
            "global,2:4",
            "--sparsity",
            "0.5,0.9",
            "--bits",
            "4",
            "--gguf",
            "Q4_0",
            "--jobs",
            jobs,
            "-o",
            out.to_str().expect("p"),
        ]);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let (one, two) = (dir.path().join("one.json"), dir.path().join("two.json"));
    let stdout = sweep("1", &one);
    sweep("2", &two);
    assert!(stdout.contains("baseline: top-1 99.70%"), "{stdout}");
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
    };
    let (a, b) = (read(&one), read(&two));
    let points = a["points"].as_array().expect("points");
    assert_eq!(points.len(), 5);
    for (p, q) in points.iter().zip(b["points"].as_array().expect("points")) {
        for key in ["curve", "level", "bytes", "sparsity", "recipe"] {
            assert_eq!(p[key], q[key], "{key}");
        }
        assert_eq!(p["metrics"]["top1"], q["metrics"]["top1"]);
        assert_eq!(p["metrics"]["loss"], q["metrics"]["loss"]);
    }
    assert_eq!(a["pareto"], b["pareto"]);
    // The CSV holds the same points; a point's recipe re-applied by `slimscope apply`
    // gives the bytes the sweep reported.
    let csv = dir.path().join("s.csv");
    let (code, _, stderr) = slimscope(&[
        "sweep",
        model.to_str().expect("p"),
        "--prune",
        "global",
        "--sparsity",
        "0.9",
        "--bits",
        "",
        "-o",
        csv.to_str().expect("p"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert!(text.starts_with("curve,axis,level,layer,bytes,"));
    let row = text.lines().nth(1).expect("a row");
    let bytes: u64 = row.split(',').nth(4).expect("bytes").parse().expect("u64");
    // The last field, RFC 4180-quoted: "" inside stands for ".
    let quoted = &text[text.find("\"#").expect("quoted recipe") + 1..];
    let mut recipe_text = String::new();
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('"', Some('"')) => {
                recipe_text.push('"');
                chars.next();
            }
            ('"', _) => break,
            (c, _) => recipe_text.push(c),
        }
    }
    assert!(recipe_text.contains("sparsity = 0.9"), "{recipe_text}");
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, &recipe_text).expect("write");
    let out = dir.path().join("out.safetensors");
    let (code, stdout, stderr) = slimscope(&[
        "apply",
        model.to_str().expect("p"),
        "--recipe",
        recipe.to_str().expect("p"),
        "-o",
        out.to_str().expect("p"),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["bytes_after"].as_u64(), Some(bytes), "{report}");
}

#[test]
fn without_data_a_sweep_is_labelled_weight_fidelity() {
    let (code, stdout, stderr) = slimscope(&[
        "sweep",
        fixture("minilm.safetensors").to_str().expect("p"),
        "--prune",
        "magnitude",
        "--sparsity",
        "0.5",
        "--bits",
        "8,4",
        "--per-layer",
        "--layer-sparsity",
        "0.5",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("weight SQNR") && stdout.contains("not accuracy"),
        "{stdout}"
    );
    assert!(stdout.contains("layer sensitivity"), "{stdout}");
    assert!(!stdout.contains("top-1"), "{stdout}");
}

#[test]
fn the_cli_allocates_one_average_sparsity_three_ways_and_names_the_best_measured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::mnist_spec(dir.path());
    let out = dir.path().join("alloc.json");
    let (code, stdout, stderr) = slimscope(&[
        "sweep",
        fixture("digit_cnn.pth").to_str().expect("p"),
        "--data",
        spec.to_str().expect("p"),
        "--prune",
        "",
        "--bits",
        "",
        "--per-layer",
        "--layer-sparsity",
        "0.5,0.9",
        "--allocate",
        "0.8",
        "-o",
        out.to_str().expect("p"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("layer × level, each layer alone: top-1 drop"),
        "{stdout}"
    );
    assert!(stdout.contains("← best"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    let allocations: Vec<&serde_json::Value> = report["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter(|p| {
            p["curve"]
                .as_str()
                .is_some_and(|c| c.starts_with("allocation: "))
        })
        .collect();
    assert_eq!(allocations.len(), 3);
    let top1 = |curve: &str| {
        allocations
            .iter()
            .find(|p| p["curve"] == curve)
            .and_then(|p| p["metrics"]["top1"].as_f64())
            .expect("measured")
    };
    for p in &allocations {
        let s = p["sparsity"].as_f64().expect("sparsity");
        assert!((s - 0.8).abs() < 0.02, "{p}");
    }
    // The first conv (288 weights) cannot take 80%; fc0 (294,912) can take more: the
    // allocation by measured sensitivity keeps more accuracy than a uniform one.
    let (by_sensitivity, uniform) = (
        top1("allocation: by sensitivity"),
        top1("allocation: uniform"),
    );
    assert!(
        by_sensitivity >= uniform,
        "sensitivity {by_sensitivity} vs uniform {uniform}"
    );

    let (code, _, stderr) = slimscope(&[
        "sweep",
        fixture("digit_cnn.pth").to_str().expect("p"),
        "--allocate",
        "0.8",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--per-layer"), "{stderr}");
}

/// `sweep --speed` serves the file `apply` writes for each point: its size on disk
/// is that file's (the recipe the point carries, applied with `slimscope apply -o
/// .onnx`, writes exactly as many bytes), a structurally pruned point's file is
/// smaller than the original's export, and every servable point has a latency and
/// a throughput beside its accuracy (values are timings: only their presence is
/// checked here; `slimscope bench` is where they are compared).
#[test]
fn sweep_speed_serves_each_points_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = common::mnist_spec(dir.path());
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, common::CNN_ARCH).expect("spec");
    let out = dir.path().join("sweep.json");
    let model = fixture("digit_cnn.pth");
    let s = |p: &Path| p.to_str().expect("path").to_owned();
    let (code, stdout, stderr) = slimscope(&[
        "sweep",
        &s(&model),
        "--arch",
        &s(&arch),
        "--data",
        &s(&data),
        "--prune",
        "structured",
        "--sparsity",
        "0.5",
        "--bits",
        "8",
        "--speed",
        "--speed-seconds",
        "0.1",
        "-o",
        &s(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("each artifact served alone"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report")).expect("JSON");
    let points = report["points"].as_array().expect("points");
    let speeds = report["speed"]["points"].as_array().expect("speeds");
    assert_eq!(points.len(), 2);
    assert_eq!(speeds.len(), 2);
    let original = report["speed"]["original"]["bytes_on_disk"]
        .as_u64()
        .expect("original");
    for (i, (p, v)) in points.iter().zip(speeds).enumerate() {
        let recipe = dir.path().join(format!("point{i}.toml"));
        std::fs::write(&recipe, p["recipe"].as_str().expect("recipe")).expect("recipe");
        let onnx = dir.path().join(format!("point{i}.onnx"));
        let (code, _, stderr) = slimscope(&[
            "apply",
            &s(&model),
            "--arch",
            &s(&arch),
            "--data",
            &s(&data),
            "--recipe",
            &s(&recipe),
            "-o",
            &s(&onnx),
        ]);
        assert_eq!(code, 0, "{stderr}");
        let size = std::fs::metadata(&onnx).expect("export").len();
        assert_eq!(v["bytes_on_disk"], size, "point {i}: {v}");
        let served = &v["served"];
        assert!(
            served["latency"]["p50_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0),
            "{v}"
        );
        assert!(
            served["throughput"]["per_second"]
                .as_f64()
                .is_some_and(|r| r > 0.0),
            "{v}"
        );
    }
    let structured = speeds[0]["bytes_on_disk"].as_u64().expect("size");
    assert!(structured * 2 < original, "{structured} vs {original}");
    assert!(
        report["pareto_latency"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
}
