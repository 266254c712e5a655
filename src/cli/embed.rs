//! `slimscope embed MODEL [--recipe R] [--onnx M] [--sentences S] [--json]`: what a
//! recipe (or another export of the same encoder) does to a BERT encoder's sentence
//! embeddings.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::compress::apply::apply_recipe;
use crate::compress::recipe::Recipe;
use crate::eval::embeddings::{
    EmbeddingMetrics, SentenceEncoder, compare, is_sentence_encoder, load_sentences,
};
use crate::model::Model;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The encoder's weights (safetensors), with config.json and tokenizer.json beside
    /// them.
    pub model: PathBuf,
    /// Also embed with the model compressed by this recipe.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Also embed with an ONNX export of the same encoder (e.g. an int8 one).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Sentence pairs, tab-separated with a similarity score (default: the bundled set).
    #[arg(long)]
    pub sentences: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<()> {
    let model = Model::open(&args.model)?;
    if !is_sentence_encoder(&model) {
        anyhow::bail!(
            "{}: not a BERT sentence encoder (config.json with model_type \"bert\" and tokenizer.json are needed beside it)",
            args.model.display()
        );
    }
    let encoder = SentenceEncoder::load(&model)?;
    let set_path = match &args.sentences {
        Some(p) => p.clone(),
        None => crate::demo::files()?.sentences,
    };
    let set = load_sentences(&set_path)?;
    let original = encoder.embed(&model, &[], &set.sentences)?;
    let mut rows: Vec<(String, EmbeddingMetrics)> =
        vec![("original".into(), compare(&original, &original, &set))];
    if let Some(path) = &args.recipe {
        let text = crate::text::read_settings(path)?;
        let recipe = Recipe::parse(&text, path)?;
        recipe.check_source(&args.model)?;
        let applied = apply_recipe(&model, &recipe)?;
        let compressed = encoder.embed(&model, &applied, &set.sentences)?;
        rows.push(("compressed".into(), compare(&original, &compressed, &set)));
    }
    if let Some(path) = &args.onnx {
        let export = Model::open(path)?;
        let embedded = encoder.embed_onnx(&export, &set.sentences)?;
        rows.push(("onnx".into(), compare(&original, &embedded, &set)));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "model": args.model,
            "sentences": set_path,
            "pairs": set.pairs.len(),
            "max_tokens": encoder.max_len,
            "results": rows.iter().map(|(name, m)| serde_json::json!({"name": name, "metrics": m})).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} sentences, {} scored pairs ({}); cosine and similarity changes against the original's embeddings",
        set.sentences.len(),
        set.pairs.len(),
        set_path.display()
    )?;
    writeln!(
        out,
        "{:<12} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "model", "mean cos", "min cos", "mean |Δsim|", "max |Δsim|", "Spearman"
    )?;
    for (name, m) in &rows {
        writeln!(
            out,
            "{name:<12} {:>10.5} {:>10.5} {:>12.5} {:>12.5} {:>9}",
            m.mean_cosine,
            m.min_cosine,
            m.mean_similarity_change,
            m.max_similarity_change,
            m.spearman.map_or("–".into(), |s| format!("{s:.4}"))
        )?;
    }
    Ok(())
}
