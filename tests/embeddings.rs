//! Sentence embeddings: all-MiniLM-L6-v2 (safetensors with its config.json and
//! tokenizer.json) run by candle-transformers' BERT, checked against the similarity
//! the sentence-transformers documentation publishes and fixtures.md's embedding
//! values; its int8 per-channel version compared with the int8 ONNX export of the
//! same network.

mod common;

use common::{fixture, slimscope};
use slimscope::Model;
use slimscope::compress::apply::apply_recipe;
use slimscope::compress::recipe::Recipe;
use slimscope::eval::embeddings::{
    SentenceEncoder, compare, cosine, is_sentence_encoder, load_sentences,
};

fn minilm() -> Model {
    Model::open(fixture("minilm/model.safetensors")).unwrap_or_else(|e| panic!("{e}"))
}

fn bundled_pairs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/text/sentence_pairs.tsv")
}

/// int8 per row on exactly what the ONNX export stores as int8: the 36 linear
/// weights and the word and position embeddings.
const INT8_LIKE_ONNX: &str = r#"version = 1
[[rule]]
regex = '^(encoder\..*\.(query|key|value|dense)|embeddings\.(word|position)_embeddings)\.weight$'
quant = { format = "int", bits = 8, granularity = "channel" }
"#;

#[test]
fn minilm_gives_the_published_similarity_and_values() {
    let model = minilm();
    assert!(is_sentence_encoder(&model));
    let encoder = SentenceEncoder::load(&model).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        encoder.max_len, 256,
        "sentence_bert_config.json's max_seq_length"
    );
    let sentences = [
        "A man is eating food.".to_owned(),
        "A man is eating a piece of bread.".to_owned(),
    ];
    let e = encoder
        .embed(&model, &[], &sentences)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e[0].len(), 384);
    let cos = cosine(&e[0], &e[1]);
    println!("cos = {cos:.4}; first values {:?}", &e[0][..5]);
    // The sentence-transformers documentation: 0.7553.
    assert!((cos - 0.755).abs() < 0.001, "{cos}");
    // fixtures.md (sentence-transformers in PyTorch).
    let want = [0.03324, 0.00441, -0.00628, 0.04838, -0.1387];
    for (got, want) in e[0].iter().zip(want) {
        assert!((f64::from(*got) - want).abs() < 2e-4, "{got} vs {want}");
    }
    let norm: f64 = e[0].iter().map(|&v| f64::from(v).powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-5);
    // Batching and padding do not change an embedding.
    let alone = encoder
        .embed(&model, &[], &sentences[..1])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cosine(&alone[0], &e[0]) > 1.0 - 1e-6);
}

#[test]
fn int8_per_channel_matches_the_int8_onnx_export() {
    let model = minilm();
    let encoder = SentenceEncoder::load(&model).unwrap_or_else(|e| panic!("{e}"));
    let set = load_sentences(&bundled_pairs()).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.pairs.len() >= 30 && set.sentences.len() >= 60);
    let original = encoder
        .embed(&model, &[], &set.sentences)
        .unwrap_or_else(|e| panic!("{e}"));
    let path = std::path::Path::new("int8.toml");
    let recipe = Recipe::parse(INT8_LIKE_ONNX, path).unwrap_or_else(|e| panic!("{e}"));
    let applied = apply_recipe(&model, &recipe).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        applied.len(),
        38,
        "as many tensors as the export's INT8 initializers"
    );
    let ours = compare(
        &original,
        &encoder
            .embed(&model, &applied, &set.sentences)
            .unwrap_or_else(|e| panic!("{e}")),
        &set,
    );
    let export = Model::open(fixture("minilm_int8.onnx")).unwrap_or_else(|e| panic!("{e}"));
    let onnx = compare(
        &original,
        &encoder
            .embed_onnx(&export, &set.sentences)
            .unwrap_or_else(|e| panic!("{e}")),
        &set,
    );
    let base = compare(&original, &original, &set);
    println!("original {base:?}\nslimscope int8 {ours:?}\nONNX int8 {onnx:?}");
    let spearman = base.spearman.expect("scored pairs");
    // Hand scores and the model agree well; int8 keeps it.
    assert!(spearman > 0.75, "{spearman}");
    for m in [ours, onnx] {
        assert!(m.mean_cosine > 0.999 && m.min_cosine > 0.998, "{m:?}");
        assert!(m.mean_similarity_change < 0.005, "{m:?}");
        assert!(
            (m.spearman.expect("scored") - spearman).abs() < 0.02,
            "{m:?}"
        );
    }
    // Two int8 roundings of the same weights land equally close to the original.
    assert!((ours.mean_cosine - onnx.mean_cosine).abs() < 5e-4);
}

#[test]
fn the_cli_reports_original_compressed_and_onnx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("int8.toml");
    std::fs::write(&recipe, INT8_LIKE_ONNX).expect("write");
    let model = fixture("minilm/model.safetensors");
    let onnx = fixture("minilm_int8.onnx");
    let (code, out, err) = slimscope(&[
        "embed",
        model.to_str().expect("utf-8"),
        "--recipe",
        recipe.to_str().expect("utf-8"),
        "--onnx",
        onnx.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    let names: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["original", "compressed", "onnx"]);
    assert_eq!(report["results"][0]["metrics"]["mean_cosine"], 1.0);
    // A model without config.json beside it is refused with the reason.
    let (code, _, err) = slimscope(&[
        "embed",
        fixture("minilm.safetensors").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("minilm.safetensors") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn bad_sentence_files_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pairs.tsv");
    std::fs::write(&path, "# ok\nA cat.\tA dog.\t3\nA cat.\tA bird.\tmany\n").expect("write");
    let e = load_sentences(&path).expect_err("bad score").to_string();
    assert!(
        e.contains("pairs.tsv") && e.contains("line 3") && e.contains("many"),
        "{e}"
    );
    std::fs::write(&path, "a\tb\tc\td\n").expect("write");
    let e = load_sentences(&path).expect_err("four fields").to_string();
    assert!(e.contains("line 1") && e.contains("4 tab-separated"), "{e}");
    std::fs::write(&path, "Only one.\n").expect("write");
    let e = load_sentences(&path).expect_err("one sentence").to_string();
    assert!(e.contains("at least two"), "{e}");
}

#[test]
fn bit_width_curves_of_an_encoder_fall_with_the_bits() {
    use slimscope::compress::apply::TensorCache;
    use slimscope::compress::config::Format;
    use slimscope::eval::evaluator::Evaluator;
    use slimscope::eval::{Network, load_data};
    use slimscope::jobs::CancelToken;
    use slimscope::sweep::{SweepContext, global_points, run};
    use std::sync::Arc;
    let model = minilm();
    let data = load_data(&model, &bundled_pairs()).unwrap_or_else(|e| panic!("{e}"));
    let (network, _) = Network::resolve(&model, None, &data).unwrap_or_else(|e| panic!("{e}"));
    let evaluator = Evaluator::new(Arc::new(network), Arc::new(data));
    let base = evaluator
        .measure(&model, &[], 64, |_, _| true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((base.top1, base.loss), (1.0, 0.0));
    let formats: Vec<Format> = [8, 4, 2]
        .map(|bits| Format::Int {
            bits,
            granularity: slimscope::compress::config::IntGranularity::Channel,
            mse_clip: false,
        })
        .to_vec();
    let points = global_points(&[], &[], &formats);
    let cache = TensorCache::new(1 << 30);
    let ctx = SweepContext {
        model: &model,
        accuracy: Some(&evaluator),
        cache: &cache,
    };
    let results = run(&ctx, &points, &CancelToken::default(), |_, _| {}, |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let cos: Vec<f64> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .and_then(|r| r.metrics)
                .expect("measured")
                .quality()
        })
        .collect();
    println!("mean cosine at int8/int4/int2: {cos:?}");
    assert!(
        cos[0] > 0.999 && cos[0] > cos[1] && cos[1] > cos[2],
        "{cos:?}"
    );
}
