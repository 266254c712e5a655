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

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Number of f32 values in the workload (default 64 Mi = 256 MiB).
    #[arg(long, default_value_t = 64 << 20)]
    pub elements: usize,
    /// Timed runs per kernel (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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
    let gb = bytes.len() as f64 / 1e9;
    println!(
        "workload: {} f32 ({:.0} MiB), {} threads, median of {} runs",
        args.elements,
        bytes.len() as f64 / (1 << 20) as f64,
        pool.current_num_threads(),
        args.runs
    );
    pool.install(|| -> anyhow::Result<()> {
        let mut copy = vec![0u8; bytes.len()];
        let t = median_seconds(args.runs, || copy.copy_from_slice(&bytes));
        println!(
            "{:<44} {:>7.2} GB/s",
            "memcpy, 1 thread (reference)",
            gb / t
        );
        drop(copy);
        let t = median_seconds(args.runs, || {
            std::hint::black_box(read_only_sum(&bytes));
        });
        println!(
            "{:<44} {:>7.2} GB/s",
            "read-only sum, all threads (ceiling)",
            gb / t
        );
        let options = StatsOptions::default();
        let numel = args.elements as u64;
        let mut failure = None;
        let t = median_seconds(args.runs, || {
            if let Err(e) = stats::compute(DType::F32, &bytes, numel, &options) {
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
            let t = median_seconds(args.runs, || {
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
        // The anchors' layout: 4096 rows (output channels) of the workload.
        let row_len = (args.elements / 4096).max(1);
        if args.elements.is_multiple_of(row_len) {
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
            let t = median_seconds(args.runs, || {
                if let Err(e) = quant::fake_quant_int_into(&values, row_len, &scheme, &mut out) {
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
                rmse(&values, &out)
            );
        }
        for q in [
            GgmlQuant::Q8_0,
            GgmlQuant::Q4_0,
            GgmlQuant::Q4_1,
            GgmlQuant::Q4_K,
            GgmlQuant::Q6_K,
        ] {
            let mut out =
                vec![0u8; values.len() / q.block_len() as usize * q.block_bytes() as usize];
            let mut failure = None;
            let t = median_seconds(args.runs, || {
                if let Err(e) = gguf_blocks::quantize_into(q, &values, &mut out) {
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
                rmse(&values, &decoded)
            );
        }
        Ok(())
    })
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
