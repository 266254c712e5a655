//! Speed and memory of a variant, measured: latency at batch 1 (p50/p99), throughput
//! at a batch the user picks, the process's peak memory while the variant is built
//! and run, and how busy the rest of the machine was meanwhile (a timing taken while
//! other work ran is marked noisy rather than reported as if it were quiet). Warm-up
//! runs are excluded; each phase repeats until it has run for its time budget.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::Runner;

/// How long each measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Seconds of timed runs per phase (after warm-up).
    pub seconds: f64,
    /// Runs per phase at least (the p99 needs a hundred).
    pub min_runs: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            seconds: 1.0,
            min_runs: 100,
        }
    }
}

/// Latency of single calls.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub runs: usize,
}

/// Samples (or tokens) per second over repeated batches.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct Throughput {
    pub batch: usize,
    pub per_second: f64,
    pub runs: usize,
}

/// The most resident bytes this process has used (`VmHWM`, Linux; `None`
/// elsewhere): measured in a process that did nothing but load and serve one
/// artifact, its serving memory.
pub fn peak_rss() -> Option<u64> {
    rss().map(|(_, peak)| peak)
}

/// Resident and peak resident bytes of this process (`/proc/self/status`).
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Busy CPU time of the whole machine and of this process, in clock ticks.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start with field 3
    // (the state); utime and stime are fields 14 and 15.
    let f: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((busy, field(14)? + field(15)?))
}

/// How much of the machine other processes used while `f` ran, as a share of its
/// cores (0 = quiet, 1 = every core busy with other work); `None` off Linux.
pub fn others_share<T>(f: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = cpu_ticks();
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed().as_secs_f64();
    let share = (|| {
        let (b0, o0) = before?;
        let (b1, o1) = cpu_ticks()?;
        let ticks = 100.0 * wall * std::thread::available_parallelism().ok()?.get() as f64;
        let others = (b1 - b0).saturating_sub(o1 - o0) as f64;
        Some((others / ticks.max(1.0)).clamp(0.0, 1.0))
    })();
    (out, share)
}

/// A share of the machine used by others above which timings are marked noisy.
pub const NOISY_SHARE: f64 = 0.1;

/// Run `f` (one call of a batch of `batch`) until `budget` is spent, after `warmup`
/// calls; returns every timed call's seconds.
pub fn repeat(
    budget: Budget,
    warmup: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let limit = Duration::from_secs_f64(budget.seconds);
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < budget.min_runs || start.elapsed() < limit {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
        // A very slow variant still ends: at most ten times the budget.
        if start.elapsed() > limit * 10 && !times.is_empty() {
            break;
        }
    }
    Ok(times)
}

/// p50 and p99 of `times` (seconds) in milliseconds.
pub fn latency(mut times: Vec<f64>) -> Latency {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1e3;
    Latency {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        runs: times.len(),
    }
}

/// What one classifier variant measured.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierSpeed {
    pub latency: Latency,
    pub throughput: Throughput,
    /// Share of the machine other processes used meanwhile (see [`others_share`]).
    pub others_cpu_share: Option<f64>,
    pub noisy: bool,
}

/// Time a classifier: `single` (planned for one sample) on `samples[..one]` for
/// latency, `batched` on `batch` samples for throughput. `build` makes both runners
/// (inside the watch on other processes).
pub fn classifier_speed(
    build: impl FnOnce() -> Result<(Box<dyn Runner>, Box<dyn Runner>)>,
    samples: &[f32],
    batch: usize,
    budget: Budget,
) -> Result<ClassifierSpeed> {
    let (result, share) = others_share(|| -> Result<(Latency, Throughput)> {
        let (single, batched) = build()?;
        let len: usize = single.input_shape().iter().product();
        let n = samples.len() / len.max(1);
        if n < batch || batch == 0 {
            return Err(Error::Internal(format!(
                "speed: {n} samples for a batch of {batch}"
            )));
        }
        let mut next = 0;
        let times = repeat(budget, 10, || {
            let x = &samples[next * len..(next + 1) * len];
            next = (next + 1) % n;
            single.logits(x, 1).map(drop)
        })?;
        let latency = latency(times);
        let times = repeat(
            Budget {
                min_runs: 5,
                ..budget
            },
            1,
            || batched.logits(&samples[..batch * len], batch).map(drop),
        )?;
        let total: f64 = times.iter().sum();
        Ok((
            latency,
            Throughput {
                batch,
                per_second: (times.len() * batch) as f64 / total.max(1e-12),
                runs: times.len(),
            },
        ))
    });
    let (latency, throughput) = result?;
    Ok(ClassifierSpeed {
        latency,
        throughput,
        others_cpu_share: share,
        noisy: share.is_some_and(|s| s > NOISY_SHARE),
    })
}

/// Energy counters (RAPL) where the machine exposes them.
pub fn energy_available() -> bool {
    std::path::Path::new("/sys/class/powercap/intel-rapl:0/energy_uj").exists()
}

/// What serving one artifact measured (the JSON a `--serve` child prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Served {
    Classifier {
        latency: Latency,
        throughput: Throughput,
        peak_rss: Option<u64>,
        others_cpu_share: Option<f64>,
        noisy: bool,
    },
    Language {
        prompt_tokens_per_second: f64,
        generation_tokens_per_second: f64,
        prompt_tokens: usize,
        generated_tokens: usize,
        peak_rss: Option<u64>,
        others_cpu_share: Option<f64>,
        noisy: bool,
    },
}

impl Served {
    pub fn peak_rss(&self) -> Option<u64> {
        match self {
            Served::Classifier { peak_rss, .. } | Served::Language { peak_rss, .. } => *peak_rss,
        }
    }
    pub fn noisy(&self) -> bool {
        match self {
            Served::Classifier { noisy, .. } | Served::Language { noisy, .. } => *noisy,
        }
    }
}

/// One variant: its artifact and what serving it measured (or why it cannot be).
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub artifact: String,
    pub bytes_on_disk: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served: Option<Served>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl Variant {
    /// Latency p50 (ms) and throughput (samples/s) of a served classifier.
    pub fn classifier_figures(&self) -> Option<(f64, f64)> {
        match &self.served {
            Some(Served::Classifier {
                latency,
                throughput,
                ..
            }) => Some((latency.p50_ms, throughput.per_second)),
            _ => None,
        }
    }

    /// The time a latency front weighs against quality, in ms: latency p50 at batch 1
    /// for a classifier, the time per generated token for a language model.
    pub fn time_cost(&self) -> Option<f64> {
        self.classifier_figures()
            .map(|(ms, _)| ms)
            .or_else(|| self.generation_speed().map(|t| 1e3 / t.max(1e-9)))
    }

    /// Generation tokens/s of a served language model.
    pub fn generation_speed(&self) -> Option<f64> {
        match &self.served {
            Some(Served::Language {
                generation_tokens_per_second,
                ..
            }) => Some(*generation_tokens_per_second),
            _ => None,
        }
    }
}

/// The speed of a sweep's artifacts: the original's and each point's, served one
/// after another (the sweep's pool already gone), each in a fresh process.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSpeed {
    pub runtime: &'static str,
    pub original: Variant,
    /// One per point, in the points' order.
    pub points: Vec<Variant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived nearest-rank percentiles of 1..=100 ms.
    #[test]
    fn percentiles_of_a_known_sample() {
        let l = latency((1..=100).rev().map(|ms| ms as f64 / 1e3).collect());
        assert_eq!(l.runs, 100);
        // Index round(99·0.5) = 50 (of 0..99) is 51 ms; round(99·0.99) = 98 is 99 ms.
        assert!((l.p50_ms - 51.0).abs() < 1e-9, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 1e-9, "{l:?}");
    }

    /// Memory a process touched shows in its peak. The measurement runs in a
    /// child process running only this test: in the test harness, other
    /// tests' threads allocate and free beside it, so a before/after reading
    /// here would race with them.
    #[test]
    fn the_peak_sees_what_was_touched() {
        const CHILD: &str = "SLIMSCOPE_PEAK_PROBE";
        const NAME: &str = "measure::speed::tests::the_peak_sees_what_was_touched";
        if std::env::var_os(CHILD).is_some() {
            let (before, _) = rss().expect("rss");
            let v = vec![1u8; 64 << 20];
            std::hint::black_box(&v);
            let peak = peak_rss().expect("peak");
            drop(v);
            assert!(peak >= before + (60 << 20), "{before} → {peak}");
            println!("peak probe measured");
            return;
        }
        if rss().is_none() {
            return; // no /proc: nothing to measure
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("run the probe");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("peak probe measured"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
