//! `slimscope bench`: speed of slimscope's kernels on the standard workload of
//! ../shared/perf-anchors.md (64 Mi f32 weights, normal(0, 0.02)), in GB/s of f32
//! input, median of several runs, beside a memcpy measured in the same run (the
//! machine is noisy: compare ratios, not absolute times).

use std::time::Instant;

use clap::Args;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::compress::{gguf_blocks, prune, quant};
use crate::dtype::{DType, GgmlQuant};
use crate::stats::{self, StatsOptions};

pub mod variants;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A model to measure (with --recipe, beside its compressed variant): latency,
    /// throughput, tokens/s, peak memory and size on disk in the runtime that would
    /// serve it. Without one, the kernel, forward, sweep and training benchmarks run.
    pub model: Option<std::path::PathBuf>,
    /// The architecture spec of a state_dict model.
    #[arg(long)]
    pub arch: Option<std::path::PathBuf>,
    /// The compressed variant to measure beside the original.
    #[arg(long)]
    pub recipe: Option<std::path::PathBuf>,
    /// Samples to time on (and to calibrate static activation quantization).
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Samples per throughput call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Seconds of timed runs per phase.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// A language model's prompt length, in tokens (prompt processing).
    #[arg(long, default_value_t = 128)]
    pub prompt: usize,
    /// Tokens a language model generates (generation speed).
    #[arg(long, default_value_t = 32)]
    pub generate: usize,
    /// Print the model's figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Internal: serve the one artifact MODEL in this process and print its figures
    /// as JSON (what `bench MODEL` runs for each variant).
    #[arg(long, hide = true)]
    pub serve: bool,
    /// Number of f32 values in the workload (default 64 Mi = 256 MiB).
    #[arg(long, default_value_t = 64 << 20)]
    pub elements: usize,
    /// Timed runs per kernel (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only time the sweeps on the bundled demo (the digit CNN and mnist_5k): the full
    /// global sweep and per-layer sensitivity, as benches/torch_sweep.py does in PyTorch.
    #[arg(long)]
    pub sweeps: bool,
    /// Only time the unstructured sparse kernels against the dense ones (candle's) on
    /// linear and convolution layers over a range of sparsities: where skipping zeros
    /// starts to pay on this machine.
    #[arg(long)]
    pub sparse: bool,
    /// Only time training: the anchors' MLP and LeNet on 10k random samples (one epoch
    /// of forward, backward and AdamW, batch 64), and one epoch of recovery on the
    /// bundled demo, as benches/torch_train.py does in PyTorch.
    #[arg(long)]
    pub training: bool,
}

/// The standard workload: seeded normal(0, 0.02) values.
pub fn workload(elements: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let normal = Normal::new(0.0f32, 0.02).unwrap_or_else(|_| unreachable!("valid parameters"));
    (0..elements).map(|_| normal.sample(&mut rng)).collect()
}

/// Median seconds of `runs` calls of `f` (after one warm-up call).
pub fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Sum of the bytes read as f32: one streaming read on all threads, the memory
/// bandwidth ceiling a single-pass kernel could reach on this machine.
fn read_only_sum(bytes: &[u8]) -> f32 {
    use rayon::prelude::*;
    bytes
        .par_chunks(1 << 18)
        .map(|c| {
            let mut acc = [0f32; 16];
            for w in c.chunks_exact(64) {
                for (a, b) in acc.iter_mut().zip(w.chunks_exact(4)) {
                    *a += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            acc.iter().sum::<f32>()
        })
        .sum()
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(model) = &args.model {
        let variant = variants::VariantArgs {
            model,
            arch: args.arch.as_deref(),
            recipe: args.recipe.as_deref(),
            data: args.data.as_deref(),
            batch: args.batch,
            seconds: args.seconds,
            prompt: args.prompt,
            generate: args.generate,
            json: args.json,
        };
        return if args.serve {
            variants::serve(&variant)
        } else {
            variants::run(&variant)
        };
    }
    if args.sweeps {
        return sweep_benchmarks(args.threads);
    }
    if args.training {
        return training_benchmarks();
    }
    if args.sparse {
        return sparse_benchmarks(args.runs);
    }
    let mut builder =
        rayon::ThreadPoolBuilder::new().thread_name(|i| format!("slimscope-bench-{i}"));
    if let Some(n) = args.threads {
        builder = builder.num_threads(n);
    }
    let pool = builder.build()?;
    eprintln!("generating {} normal(0, 0.02) f32 values…", args.elements);
    let values = workload(args.elements);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    drop(values);
    println!(
        "workload: {} f32 ({:.0} MiB), {} threads, median of {} runs",
        args.elements,
        bytes.len() as f64 / (1 << 20) as f64,
        pool.current_num_threads(),
        args.runs
    );
    pool.install(|| -> anyhow::Result<()> {
        kernel_benchmarks(&bytes, args.runs)?;
        forward_benchmarks(args.runs)
    })?;
    sweep_benchmarks(args.threads)?;
    training_benchmarks()
}

/// The per-tensor kernels over the workload's `bytes` (f32): memory ceilings,
/// statistics and pruning, then the quantizers.
fn kernel_benchmarks(bytes: &[u8], runs: usize) -> anyhow::Result<()> {
    let gb = bytes.len() as f64 / 1e9;
    let mut copy = vec![0u8; bytes.len()];
    let t = median_seconds(runs, || copy.copy_from_slice(bytes));
    println!(
        "{:<44} {:>7.2} GB/s",
        "memcpy, 1 thread (reference)",
        gb / t
    );
    drop(copy);
    let t = median_seconds(runs, || {
        std::hint::black_box(read_only_sum(bytes));
    });
    println!(
        "{:<44} {:>7.2} GB/s",
        "read-only sum, all threads (ceiling)",
        gb / t
    );
    let options = StatsOptions::default();
    let numel = (bytes.len() / 4) as u64;
    let mut failure = None;
    let t = median_seconds(runs, || {
        if let Err(e) = stats::compute(DType::F32, bytes, numel, &options) {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        anyhow::bail!("statistics failed: {e}");
    }
    println!(
        "{:<44} {:>7.2} GB/s  ({:.1} ms)",
        "stats + histogram (256 bins, [min,max])",
        gb / t,
        t * 1e3
    );
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for target in [0.5, 0.9] {
        let mut failure = None;
        let t = median_seconds(runs, || {
            if let Err(e) = prune::magnitude_global(&[&values], target) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            anyhow::bail!("pruning failed: {e}");
        }
        let label = format!("global magnitude prune {:.0}% (exact mask)", target * 100.0);
        println!("{label:<44} {:>7.2} GB/s  ({:.1} ms)", gb / t, t * 1e3);
    }
    quant_benchmarks(&values, gb, runs)
}

/// The integer and ggml block quantizers over `values` (`gb` GB of f32).
fn quant_benchmarks(values: &[f32], gb: f64, runs: usize) -> anyhow::Result<()> {
    // The anchors' layout: 4096 rows (output channels) of the workload.
    let row_len = (values.len() / 4096).max(1);
    if values.len().is_multiple_of(row_len) {
        let scheme = quant::IntScheme {
            bits: 8,
            symmetric: true,
            granularity: quant::Granularity::PerChannel,
            clip: quant::Clip::None,
        };
        // One output buffer for all runs: a fresh 256 MiB costs 20-165 ms of page
        // faults (perf-anchors.md), which would be measured instead of the kernel.
        let mut out = vec![0f32; values.len()];
        let mut failure = None;
        let t = median_seconds(runs, || {
            if let Err(e) = quant::fake_quant_int_into(values, row_len, &scheme, &mut out) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            anyhow::bail!("int8 fake-quant failed: {e}");
        }
        let label = "int8 per-channel symmetric fake-quant";
        println!(
            "{label:<44} {:>7.2} GB/s  ({:.1} ms)  RMSE {:.3e}",
            gb / t,
            t * 1e3,
            rmse(values, &out)
        );
    }
    for q in [
        GgmlQuant::Q8_0,
        GgmlQuant::Q4_0,
        GgmlQuant::Q4_1,
        GgmlQuant::Q4_K,
        GgmlQuant::Q6_K,
    ] {
        let mut out = vec![0u8; values.len() / q.block_len() as usize * q.block_bytes() as usize];
        let mut failure = None;
        let t = median_seconds(runs, || {
            if let Err(e) = gguf_blocks::quantize_into(q, values, &mut out) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            anyhow::bail!("{} quantization failed: {e}", q.name());
        }
        let mut decoded = vec![0f32; values.len()];
        crate::dtype::decode(DType::Quant(q), &out, &mut decoded);
        let label = format!("{} quantize (llama.cpp reference, exact)", q.name());
        println!(
            "{label:<44} {:>7.2} GB/s  ({:.1} ms)  RMSE {:.3e}",
            gb / t,
            t * 1e3,
            rmse(values, &decoded)
        );
    }
    Ok(())
}

/// Training throughput: one epoch (10,000 random samples, batch 64, forward +
/// backward + AdamW, 10% held out to validate) of the anchors' MLP and LeNet, and one
/// epoch of recovery of the demo CNN at 90% magnitude + int8 per channel on mnist_5k.
fn training_benchmarks() -> anyhow::Result<()> {
    use crate::compress::recipe::Recipe;
    use crate::eval::data::{self, Dataset};
    use crate::net::init;
    use crate::net::spec::ArchSpec;
    use crate::train::{TrainOptions, distill, finetune};

    let (mlp, lenet) = bench_specs();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let normal = Normal::new(0.0f32, 1.0).unwrap_or_else(|_| unreachable!("valid parameters"));
    let options = TrainOptions {
        epochs: 1,
        ..TrainOptions::default()
    };
    for (label, text) in [
        ("train: MLP 784-512-256-10, 10k samples, batch 64", mlp),
        ("train: LeNet-5-like CNN, 10k samples, batch 64", lenet),
    ] {
        let spec = ArchSpec::parse(&with_widths(&text), std::path::Path::new("(bench)"))?;
        let data = Dataset {
            source: "random inputs".into(),
            x: (0..10_000 * 784).map(|_| normal.sample(&mut rng)).collect(),
            labels: (0..10_000u32).map(|i| i % 10).collect(),
            sample_shape: spec.input.clone(),
        };
        let start_weights = init::initialise(&spec, 0)?;
        let start = Instant::now();
        distill::train(&spec, &start_weights, &data, None, &options, &mut |_| true)?;
        let t = start.elapsed().as_secs_f64();
        println!("{label:<56} {:>7.0} samples/s ({t:.1} s)", 9_000.0 / t);
    }
    let demo = crate::demo::files()?;
    let model = crate::model::Model::open(&demo.model)?;
    let spec = ArchSpec::load(&demo.arch)?;
    let train = data::load(&demo.data)?;
    let text = "version = 1\n[[rule]]\nmatch = \"*.weight\"\nprune = { method = \"magnitude\", sparsity = 0.9 }\nquant = { format = \"int\", bits = 8, granularity = \"channel\" }\n";
    let origin = std::path::Path::new("(bench)");
    let recipe = Recipe::parse(text, origin)?;
    let plans = recipe.plan(&model)?;
    let start = Instant::now();
    finetune::recover(&model, &spec, &plans, &train, &options, None, &mut |_| true)?;
    let t = start.elapsed().as_secs_f64();
    println!(
        "{:<56} {:>7.0} samples/s ({t:.1} s)",
        "recover: digit CNN 90% + int8, 1 epoch of mnist_5k",
        4_500.0 / t
    );
    Ok(())
}

/// Give every linear and convolution layer of a bench spec its `out` (and `kernel`),
/// read from the tensor shapes the forward benchmarks use.
fn with_widths(text: &str) -> String {
    let widths = [
        ("mlp0", "out = 512"),
        ("mlp1", "out = 256"),
        ("mlp2", "out = 10"),
        ("c1", "out = 6\nkernel = 5"),
        ("c2", "out = 16\nkernel = 5"),
        ("fc0", "out = 120"),
        ("fc1", "out = 84"),
        ("fc2", "out = 10"),
    ];
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if let Some(rest) = line.strip_prefix("bias = \"") {
            let name = rest.trim_end_matches(".bias\"");
            if let Some((_, w)) = widths.iter().find(|(n, _)| *n == name) {
                out.push_str(w);
                out.push('\n');
            }
        }
    }
    out
}

/// Wall time of the sweeps benches/torch_sweep.py runs in PyTorch, on the bundled demo:
/// 4 pruning methods × 20 levels + 2:4 + int8…int2 per channel (86 points), and each
/// of the 5 layers alone at 10…90 % and 99 % (50 points), all on 5,000 images.
fn sweep_benchmarks(threads: Option<usize>) -> anyhow::Result<()> {
    use std::sync::Arc;

    use crate::compress::apply::TensorCache;
    use crate::eval::evaluator::Evaluator;
    use crate::eval::{Network, data};
    use crate::jobs::{CancelToken, Pool};
    use crate::net::spec::ArchSpec;
    use crate::sweep::{self, SweepContext};

    let demo = crate::demo::files()?;
    let model = crate::model::Model::open(&demo.model)?;
    let data = Arc::new(data::load(&demo.data)?);
    let network = Arc::new(Network::Sequential(ArchSpec::load(&demo.arch)?));
    let mut layer_levels: Vec<f64> = (1..10).map(|i| f64::from(i) * 0.1).collect();
    layer_levels.push(0.99);
    let pool = Pool::new(1, threads.unwrap_or(0))?;
    for (label, points) in [
        (
            "sweep: global curves (digit CNN, mnist_5k)",
            sweep::full_global_points(),
        ),
        (
            "sweep: per-layer sensitivity (digit CNN, mnist_5k)",
            sweep::per_layer_points(&sweep::sweepable_layers(&model), &layer_levels, &[]),
        ),
    ] {
        // Each sweep starts cold: nothing cached from the other.
        let evaluator = Evaluator::new(network.clone(), data.clone());
        let cache = TensorCache::new(1 << 30);
        let ctx = SweepContext {
            model: &model,
            accuracy: Some(&evaluator),
            cache: &cache,
        };
        let start = Instant::now();
        pool.install(|| sweep::run(&ctx, &points, &CancelToken::default(), |_, _| {}, |_, _| {}))?;
        let t = start.elapsed().as_secs_f64();
        println!(
            "{label:<56} {:>3} points in {t:>6.1} s ({:.2} s/point, {} evaluated)",
            points.len(),
            t / points.len() as f64,
            evaluator.measured()
        );
    }
    Ok(())
}

/// The anchors' evaluation workloads: 10,000 inputs in batches of 1,000 through an
/// MLP 784-512-256-10 and a LeNet-5-like CNN with random weights, forward + argmax.
fn forward_benchmarks(runs: usize) -> anyhow::Result<()> {
    use std::collections::HashMap;

    use crate::eval::data::Dataset;
    use crate::net::Runner;
    use crate::net::candle::Sequential;
    use crate::net::onnx::OnnxGraph;
    use crate::net::spec::ArchSpec;

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let normal = Normal::new(0.0f32, 0.05).unwrap_or_else(|_| unreachable!("valid parameters"));
    let mut weights: HashMap<String, (Vec<f32>, Vec<usize>)> = HashMap::new();
    let mut add = |name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
        weights.insert(name.to_owned(), (v, shape.to_vec()));
    };
    for (i, (o, inp)) in [(512, 784), (256, 512), (10, 256)].into_iter().enumerate() {
        add(&format!("mlp{i}.weight"), &[o, inp]);
        add(&format!("mlp{i}.bias"), &[o]);
    }
    add("c1.weight", &[6, 1, 5, 5]);
    add("c1.bias", &[6]);
    add("c2.weight", &[16, 6, 5, 5]);
    add("c2.bias", &[16]);
    for (i, (o, inp)) in [(120, 400), (84, 120), (10, 84)].into_iter().enumerate() {
        add(&format!("fc{i}.weight"), &[o, inp]);
        add(&format!("fc{i}.bias"), &[o]);
    }
    let (mlp, lenet) = bench_specs();
    let inputs: Vec<f32> = (0..10_000 * 784).map(|_| normal.sample(&mut rng)).collect();
    let data = Dataset {
        source: "random inputs".into(),
        x: inputs,
        labels: (0..10_000u32).map(|i| i % 10).collect(),
        sample_shape: vec![784],
    };
    for (label, text) in [
        ("MLP 784-512-256-10, 10k inputs, batch 1000", mlp),
        ("LeNet-5-like CNN, 10k inputs, batch 1000", lenet),
    ] {
        let origin = std::path::Path::new("(bench)");
        let spec = ArchSpec::parse(&text, origin)?;
        // Evaluation: a first convolution over few channels computed directly, the
        // rest on tract; tract alone and candle (what training will use) beside it.
        let eval = crate::net::sequential_runner(&spec, &weights, origin)?;
        let tract = OnnxGraph::from_spec(&spec, &weights, origin)?.runner(&[])?;
        let candle = Sequential::build(&spec, &weights)?;
        for (engine, runner) in [
            ("eval", eval.as_ref()),
            ("tract alone", &tract as &dyn Runner),
            ("candle", &candle as &dyn Runner),
        ] {
            let mut failure = None;
            let t = median_seconds(runs, || {
                if let Err(e) = crate::eval::evaluate(runner, &data, 1000, |_, _| true) {
                    failure = Some(e);
                }
            });
            if let Some(e) = failure {
                anyhow::bail!("{label}: {e}");
            }
            println!(
                "{:<56} {:>7.1}k samples/s",
                format!("{label} ({engine})"),
                10.0 / t
            );
        }
    }
    Ok(())
}

/// The sparse kernels ([`crate::net::sparse`]) against candle's dense ones on the
/// anchors' MLP's first layer, the digit CNN's first linear layer and its middle
/// convolution, with weights of normal values pruned by magnitude: per layer and
/// batch, each sparsity's time beside the dense one and the lowest sparsity at
/// which sparse is at least as fast.
fn sparse_benchmarks(runs: usize) -> anyhow::Result<()> {
    use candle_core::{Device, Tensor};

    use crate::net::sparse::{ConvShape, CsrMatrix};

    const LEVELS: [f64; 7] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99];
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let normal = Normal::new(0.0f32, 0.05).unwrap_or_else(|_| unreachable!("valid parameters"));
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| normal.sample(&mut rng)).collect() };
    let pruned = |w: &[f32], sparsity: f64| -> anyhow::Result<Vec<f32>> {
        let mask = prune::magnitude(w, sparsity)?;
        let mut w = w.to_vec();
        mask.apply(&mut w);
        Ok(w)
    };
    let engine = |e: candle_core::Error| anyhow::anyhow!("candle: {e}");
    println!(
        "sparse (CSR, batch-contiguous) vs dense (candle), {} threads, median of {runs} runs",
        rayon::current_num_threads()
    );
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>8} {:>10}",
        "layer", "sparsity", "dense ms", "sparse ms", "speedup", "max |diff|"
    );
    let report = |label: &str, times: &[(f64, f64, f64, f64)]| {
        for &(s, dense, sparse, diff) in times {
            println!(
                "{label:<44} {:>8.0}% {:>10.3} {:>10.3} {:>7.2}x {diff:>10.1e}",
                100.0 * s,
                1e3 * dense,
                1e3 * sparse,
                dense / sparse
            );
        }
        // The lowest level from which every sparser one is at least as fast (a
        // single lucky level does not count).
        let even = (0..times.len())
            .find(|&i| times[i..].iter().all(|t| t.2 <= t.1))
            .map(|i| times[i].0);
        println!(
            "{label:<44} sparse pays from {}",
            even.map_or("no level measured".to_owned(), |s| format!(
                "{:.0}% sparsity",
                100.0 * s
            ))
        );
    };
    for (name, rows, cols) in [
        ("MLP fc 512x784", 512usize, 784usize),
        ("digit CNN fc 256x1152", 256, 1152),
    ] {
        let w = random(rows * cols);
        let bias = random(rows);
        for batch in [1usize, 1000] {
            let x = random(batch * cols);
            let xt = Tensor::from_slice(&x, (batch, cols), &Device::Cpu).map_err(engine)?;
            let bt = Tensor::from_slice(&bias, rows, &Device::Cpu).map_err(engine)?;
            let mut times = Vec::new();
            for s in LEVELS {
                let ws = pruned(&w, s)?;
                let wt = Tensor::from_slice(&ws, (rows, cols), &Device::Cpu)
                    .and_then(|t| t.t())
                    .and_then(|t| t.contiguous())
                    .map_err(engine)?;
                let dense_out = |_: ()| -> candle_core::Result<Vec<f32>> {
                    xt.matmul(&wt)?.broadcast_add(&bt)?.flatten_all()?.to_vec1()
                };
                let dense = median_seconds(runs, || {
                    let _ = std::hint::black_box(dense_out(()));
                });
                let csr = CsrMatrix::from_dense(&ws, rows, cols);
                let sparse = median_seconds(runs, || {
                    std::hint::black_box(csr.linear(&x, batch, Some(&bias)));
                });
                let want = dense_out(()).map_err(engine)?;
                let got = csr.linear(&x, batch, Some(&bias));
                times.push((s, dense, sparse, max_diff(&want, &got)));
            }
            report(&format!("{name}, batch {batch}"), &times);
        }
    }
    let shape = ConvShape {
        out: 64,
        input: 32,
        kernel: (3, 3),
        padding: 1,
        size: (14, 14),
    };
    let k = shape.input * 9;
    let w = random(shape.out * k);
    let bias = random(shape.out);
    for batch in [1usize, 64] {
        let x = random(batch * shape.input * 14 * 14);
        let xt =
            Tensor::from_slice(&x, (batch, shape.input, 14, 14), &Device::Cpu).map_err(engine)?;
        let bt = Tensor::from_slice(&bias, (1, shape.out, 1, 1), &Device::Cpu).map_err(engine)?;
        let mut times = Vec::new();
        for s in LEVELS {
            let ws = pruned(&w, s)?;
            let wt = Tensor::from_slice(&ws, (shape.out, shape.input, 3, 3), &Device::Cpu)
                .map_err(engine)?;
            let dense_out = |_: ()| -> candle_core::Result<Vec<f32>> {
                xt.conv2d(&wt, 1, 1, 1, 1)?
                    .broadcast_add(&bt)?
                    .flatten_all()?
                    .to_vec1()
            };
            let dense = median_seconds(runs, || {
                let _ = std::hint::black_box(dense_out(()));
            });
            let csr = CsrMatrix::from_dense(&ws, shape.out, k);
            let sparse = median_seconds(runs, || {
                std::hint::black_box(shape.sparse(&csr, &x, batch, Some(&bias)));
            });
            let want = dense_out(()).map_err(engine)?;
            let got = shape.sparse(&csr, &x, batch, Some(&bias));
            times.push((s, dense, sparse, max_diff(&want, &got)));
        }
        report(
            &format!("conv 64x32x3x3 on 32x14x14, batch {batch}"),
            &times,
        );
    }
    Ok(())
}

/// The largest |a − b|.
fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from((x - y).abs()))
        .fold(
            if a.len() == b.len() {
                0.0
            } else {
                f64::INFINITY
            },
            f64::max,
        )
}

/// The anchors' MLP 784-512-256-10 and LeNet-5-like CNN as architecture specs.
fn bench_specs() -> (String, String) {
    let linear = |name: &str| {
        format!("[[layer]]\nop = \"linear\"\nweight = \"{name}.weight\"\nbias = \"{name}.bias\"\n")
    };
    let relu = "[[layer]]\nop = \"relu\"\n";
    let mlp = format!(
        "version = 1\ninput = [784]\n{}{relu}{}{relu}{}",
        linear("mlp0"),
        linear("mlp1"),
        linear("mlp2")
    );
    let lenet = format!(
        "version = 1\ninput = [1, 28, 28]\n\
         [[layer]]\nop = \"conv2d\"\nweight = \"c1.weight\"\nbias = \"c1.bias\"\npadding = 2\n{relu}\
         [[layer]]\nop = \"maxpool\"\nkernel = 2\n\
         [[layer]]\nop = \"conv2d\"\nweight = \"c2.weight\"\nbias = \"c2.bias\"\n{relu}\
         [[layer]]\nop = \"maxpool\"\nkernel = 2\n[[layer]]\nop = \"flatten\"\n{}{relu}{}{relu}{}",
        linear("fc0"),
        linear("fc1"),
        linear("fc2")
    );
    (mlp, lenet)
}

/// Root-mean-square error of `y` against `x`, in float64 (the anchors report it).
fn rmse(x: &[f32], y: &[f32]) -> f64 {
    let sum: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    (sum / x.len().max(1) as f64).sqrt()
}
