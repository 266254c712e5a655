//! `slimscope imatrix`: llama.cpp's importance matrix of a llama GGUF on a text,
//! written as `llama-imatrix` writes it (for `apply --imatrix` and `llama-quantize
//! --imatrix` alike).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;

use crate::model::Model;

#[derive(Debug, Args)]
pub struct ImatrixArgs {
    /// A llama-family GGUF.
    pub model: PathBuf,
    /// The calibration text (UTF-8), tokenized with the model's own tokenizer.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the importance matrix (GGUF, as `llama-imatrix -o`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Tokens per chunk, each scored from its own start (`llama-imatrix -c`).
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ImatrixArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    crate::export::check_output_paths(&[&args.model, &args.data], &args.output, args.force)?;
    let stop = super::interrupt::cooperate();
    let sums = crate::eval::imatrix::compute(&model, &args.data, args.chunk, |_, _| {
        !stop.load(Ordering::Relaxed)
    })?;
    crate::export::write_bytes(&args.output, &sums.encode_gguf(), args.force)?;
    println!(
        "{} importance entries over {} chunks of {} tokens of {}; wrote {}",
        sums.entries.len(),
        sums.chunks,
        sums.chunk_size,
        args.data.display(),
        args.output.display()
    );
    Ok(())
}
