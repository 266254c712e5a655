//! `slimscope inspect MODEL [--json] [--bins N] [--abs] [--histogram NAME [--log]]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::inspect::{InspectReport, TensorReport, inspect_model};
use crate::model::Model;
use crate::stats::{DEFAULT_BINS, HistogramRange, StatsOptions};
use crate::text::printable;
use crate::units::human_bytes;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The model file (format recognised by content).
    pub model: PathBuf,
    /// Print machine-readable JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Histogram bins per tensor.
    #[arg(long, default_value_t = DEFAULT_BINS)]
    pub bins: usize,
    /// Histogram over |w| in [0, max|w|] instead of w in [min, max].
    #[arg(long)]
    pub abs: bool,
    /// Also draw the histogram of this tensor as text.
    #[arg(long, value_name = "TENSOR")]
    pub histogram: Option<String>,
    /// Log-scale bar lengths for --histogram.
    #[arg(long, requires = "histogram")]
    pub log: bool,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    let options = StatsOptions {
        bins: args.bins,
        range: if args.abs {
            HistogramRange::Abs
        } else {
            HistogramRange::Signed
        },
    };
    if let Some(name) = &args.histogram
        && model.tensor_index(name).is_none()
    {
        anyhow::bail!(
            "{}: no tensor named `{}`",
            args.model.display(),
            printable(name)
        );
    }
    let reports = inspect_model(&model, &options, |_, _| true)?;
    for r in &reports {
        if let Some(note) = &r.note {
            eprintln!(
                "warning: {}: tensor `{}`: {note}",
                printable(&args.model.display().to_string()),
                printable(&r.info.name)
            );
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &InspectReport::new(&model, &reports))
            .context("writing JSON")?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &model, &reports)?;
    }
    if let Some(name) = &args.histogram
        && let Some(r) = reports.iter().find(|r| &r.info.name == name)
    {
        print_histogram(&mut out, r, args.log)?;
    }
    Ok(())
}

fn print_table(
    out: &mut impl Write,
    model: &Model,
    reports: &[TensorReport],
) -> std::io::Result<()> {
    let totals = model.totals();
    writeln!(
        out,
        "{}  ({})",
        printable(&model.path.display().to_string()),
        model.format.name()
    )?;
    writeln!(
        out,
        "{} tensors in {} layers, {} parameters, {}",
        totals.tensors,
        model.layers.len(),
        totals.params,
        human_bytes(totals.size_bytes)
    )?;
    for d in &totals.by_dtype {
        writeln!(
            out,
            "  {:<8} {:>5} tensors {:>14} params {:>12}",
            d.dtype.name(),
            d.tensors,
            d.params,
            human_bytes(d.size_bytes)
        )?;
    }
    let name_w = reports
        .iter()
        .map(|r| printable(&r.info.name).chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    writeln!(
        out,
        "\n{:<name_w$} {:<18} {:<7} {:>11} {:>10} {:>7} {:>10} {:>10} {:>10} {:>7} {:>7}",
        "name", "shape", "dtype", "params", "bytes", "zeros%", "min", "max", "std", ">3σ%", ">6σ%"
    )?;
    for r in reports {
        let shape = format!("{:?}", r.info.shape);
        let t = &r.info;
        write!(
            out,
            "{:<name_w$} {:<18} {:<7} {:>11} {:>10}",
            printable(&t.name),
            shape,
            t.dtype.name(),
            t.numel,
            human_bytes(t.size_bytes)
        )?;
        match &r.stats {
            Some(s) if s.count == s.nan + s.inf => writeln!(out, "  (no finite values)")?,
            Some(s) => writeln!(
                out,
                " {:>7.2} {:>10.4} {:>10.4} {:>10.4} {:>7.3} {:>7.4}",
                100.0 * s.zero_fraction,
                s.min,
                s.max,
                s.std,
                100.0 * s.beyond_3_sigma_fraction,
                100.0 * s.beyond_6_sigma_fraction
            )?,
            None => writeln!(out, "  (no statistics)")?,
        }
    }
    if !model.metadata.is_empty() {
        writeln!(out, "\nmetadata:")?;
        for (k, v) in &model.metadata {
            let mut v = printable(&v.to_string()).into_owned();
            if v.len() > 100 {
                v.truncate(v.floor_char_boundary(97));
                v.push_str("...");
            }
            writeln!(out, "  {} = {v}", printable(k))?;
        }
    }
    Ok(())
}

fn print_histogram(out: &mut impl Write, r: &TensorReport, log: bool) -> std::io::Result<()> {
    let Some(h) = r.stats.as_ref().and_then(|s| s.histogram.as_ref()) else {
        return writeln!(out, "\n`{}` has no histogram", printable(&r.info.name));
    };
    let scale = |c: u64| if log { (c as f64 + 1.0).ln() } else { c as f64 };
    let top = h
        .counts
        .iter()
        .map(|&c| scale(c))
        .fold(0.0, f64::max)
        .max(1e-12);
    writeln!(
        out,
        "\nhistogram of `{}` ({}, {} bins{}):",
        printable(&r.info.name),
        match h.range {
            crate::stats::HistogramRange::Signed => "values",
            crate::stats::HistogramRange::Abs => "|w|",
        },
        h.counts.len(),
        if log { ", log scale" } else { "" }
    )?;
    let edges = h.edges();
    for (i, &c) in h.counts.iter().enumerate() {
        let bar = "#".repeat((60.0 * scale(c) / top).round() as usize);
        writeln!(out, "{:>12.5} {:>10} {bar}", edges[i], c)?;
    }
    Ok(())
}
