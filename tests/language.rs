//! Language models: SmolLM2-135M's GGUF run by candle-transformers' quantized llama,
//! its tokenizer built from the GGUF metadata, checked against fixtures.md's token
//! ids, a float64 numpy forward pass over gguf-py's dequantized weights
//! (reference.py), and the published " Paris" continuation.

mod common;

use std::sync::Arc;

use common::{fixture, reference, slimscope};
use slimscope::Model;
use slimscope::compress::apply::apply_recipe;
use slimscope::compress::recipe::Recipe;
use slimscope::eval::causal_lm::{self, CausalLm};
use slimscope::eval::data::Dataset;
use slimscope::eval::evaluator::Evaluator;
use slimscope::eval::{Metrics, Network, load_data};

fn smollm2() -> Model {
    Model::open(fixture("smollm2_q4_1.gguf")).unwrap_or_else(|e| panic!("{e}"))
}

/// A recipe quantizing every block weight of SmolLM2 to `gguf_type`.
fn requantized(
    model: &Model,
    gguf_type: &str,
) -> Vec<(usize, slimscope::compress::apply::AppliedTensor)> {
    let text = format!(
        "version = 1\n[[rule]]\nmatch = \"blk.*.weight\"\nquant = {{ format = \"gguf\", type = \"{gguf_type}\" }}\n"
    );
    let path = std::path::Path::new("requantize.toml");
    let recipe = Recipe::parse(&text, path).unwrap_or_else(|e| panic!("{e}"));
    apply_recipe(model, &recipe).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_tokenizer_from_gguf_metadata_gives_the_published_ids() {
    let model = smollm2();
    let tokenizer = causal_lm::tokenizer(&model).unwrap_or_else(|e| panic!("{e}"));
    let ids = causal_lm::encode(&model, &tokenizer, "The capital of France is").expect("encode");
    // fixtures.md
    assert_eq!(ids, [504, 3575, 282, 4649, 314]);
    // reference.py looks the tokens up in the GGUF's vocabulary by their strings.
    let want: Vec<u32> = reference()["smollm2"]["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    let ids = causal_lm::encode(
        &model,
        &tokenizer,
        "The capital of France is Paris. It is known for its",
    )
    .expect("encode");
    assert_eq!(ids, want);
    // SmolLM's pre-tokenizer splits digits one by one (llama.cpp's `smollm`).
    let ids = causal_lm::encode(&model, &tokenizer, "1874").expect("encode");
    assert_eq!(ids.len(), 4, "{ids:?}");
}

#[test]
fn greedy_continuation_of_the_capital_of_france_begins_with_paris() {
    let model = smollm2();
    let text = causal_lm::generate(&model, &[], "The capital of France is", 4)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(text.starts_with(" Paris"), "{text:?}");
    // The same through the command line, with a Q8_0 re-quantization.
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("q8.toml");
    std::fs::write(
        &recipe,
        "version = 1\n[[rule]]\nmatch = \"blk.*.weight\"\nquant = { format = \"gguf\", type = \"Q8_0\" }\n",
    )
    .expect("write");
    let model_path = fixture("smollm2_q4_1.gguf");
    let (code, out, err) = slimscope(&[
        "generate",
        model_path.to_str().expect("utf-8"),
        "--prompt",
        "The capital of France is",
        "-n",
        "3",
        "--recipe",
        recipe.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("The capital of France is Paris"), "{out}");
}

/// One window holding the reference sentence's ids.
fn sentence(ids: &[u32]) -> Dataset {
    Dataset {
        source: "reference sentence".into(),
        x: ids.iter().map(|&t| t as f32).collect(),
        labels: vec![0],
        sample_shape: vec![ids.len()],
    }
}

#[test]
fn next_token_loss_matches_a_float64_numpy_forward_pass() {
    let model = smollm2();
    let r = &reference()["smollm2"];
    let ids: Vec<u32> = r["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    let nll: Vec<f64> = r["nll"]
        .as_array()
        .expect("nll")
        .iter()
        .map(|v| v.as_f64().expect("nll"))
        .collect();
    let argmax: Vec<u32> = r["argmax"]
        .as_array()
        .expect("argmax")
        .iter()
        .map(|v| v.as_u64().expect("argmax") as u32)
        .collect();
    // numpy's greedy choice after "… France is" is " Paris" (the published fact).
    assert_eq!(argmax[4], ids[5]);
    let lm = CausalLm::new(&model).unwrap_or_else(|e| panic!("{e}"));
    let m = lm
        .measure(&model, &[], false, &sentence(&ids), |_, _| true)
        .unwrap_or_else(|e| panic!("{e}"));
    let want_loss = nll.iter().sum::<f64>() / nll.len() as f64;
    let want_top1 =
        argmax.iter().zip(&ids[1..]).filter(|(a, b)| a == b).count() as f64 / nll.len() as f64;
    println!(
        "loss {} (numpy f64 {want_loss}), top-1 {} (numpy {want_top1})",
        m.loss, m.top1
    );
    assert_eq!(m.samples, ids.len() - 1);
    // candle quantizes activations to 8 bits for its block products, as llama.cpp
    // does; numpy multiplies the dequantized weights exactly.
    assert!(
        (m.loss - want_loss).abs() < 0.02,
        "{} vs {want_loss}",
        m.loss
    );
    assert!((m.top1 - want_top1).abs() < 1e-9);
    let l = m.language().expect("language metrics");
    assert!((l.perplexity - want_loss.exp()).abs() < 0.03 * want_loss.exp());
    assert_eq!((l.kl_divergence, l.top1_agreement), (0.0, 1.0));
}

fn text_file(dir: &std::path::Path, chars: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/text/eval_text.txt"),
    )
    .expect("read the bundled text");
    let cut: String = text.chars().take(chars).collect();
    let path = dir.join("text.txt");
    std::fs::write(&path, cut).expect("write");
    path
}

#[test]
fn kl_divergence_grows_as_fewer_bits_are_kept() {
    let model = Arc::new(smollm2());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = load_data(&model, &text_file(dir.path(), 400)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.len(), 1, "one window");
    let (network, _) = Network::resolve(&model, None, &data).unwrap_or_else(|e| panic!("{e}"));
    let evaluator = Evaluator::new(Arc::new(network), Arc::new(data));
    let measure = |applied: &[(usize, slimscope::compress::apply::AppliedTensor)]| -> Metrics {
        evaluator
            .measure(&model, applied, 64, |_, _| true)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let base = measure(&[]);
    let q8 = measure(&requantized(&model, "Q8_0"));
    let q2 = measure(&requantized(&model, "Q2_K"));
    let lang = |m: &Metrics| m.language().expect("language metrics");
    println!(
        "ppl original {:.3}, Q8_0 {:.3} (KL {:.5}, agree {:.3}), Q2_K {:.3} (KL {:.4}, agree {:.3})",
        lang(&base).perplexity,
        lang(&q8).perplexity,
        lang(&q8).kl_divergence,
        lang(&q8).top1_agreement,
        lang(&q2).perplexity,
        lang(&q2).kl_divergence,
        lang(&q2).top1_agreement
    );
    // Q8_0 over Q4_1 weights: a re-rounding on a 17× finer grid.
    assert!(lang(&q8).kl_divergence < 0.03);
    assert!(lang(&q8).top1_agreement > 0.85);
    assert!((lang(&q8).perplexity / lang(&base).perplexity - 1.0).abs() < 0.05);
    // Q2_K (2.6 bits) loses much of what the model predicted.
    assert!(lang(&q2).kl_divergence > 20.0 * lang(&q8).kl_divergence);
    assert!(lang(&q2).perplexity > 1.5 * lang(&base).perplexity);
    assert!(lang(&q2).top1_agreement < lang(&q8).top1_agreement);
}

#[test]
fn bad_text_and_settings_are_errors_that_say_what_is_wrong() {
    let model = smollm2();
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("data.bin");
    std::fs::write(&binary, [0x66, 0x6f, 0xff, 0xfe]).expect("write");
    let e = load_data(&model, &binary)
        .expect_err("not UTF-8")
        .to_string();
    assert!(e.contains("data.bin") && e.contains("UTF-8"), "{e}");
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Hi").expect("write");
    let e = load_data(&model, &short)
        .expect_err("one token")
        .to_string();
    assert!(e.contains("short.txt") && e.contains("at least 2"), "{e}");
    let data = load_data(&model, &text_file(dir.path(), 100)).expect("text");
    let arch = dir.path().join("arch.toml");
    let e = Network::resolve(&model, Some(&arch), &data)
        .err()
        .expect("no spec for a GGUF llama")
        .to_string();
    assert!(
        e.contains("arch.toml") && e.contains("language model"),
        "{e}"
    );
    // The digit CNN is not a language model.
    let cnn = Model::open(fixture("digit_cnn.pth")).unwrap_or_else(|e| panic!("{e}"));
    let e = CausalLm::new(&cnn).err().expect("not llama").to_string();
    assert!(e.contains("digit_cnn.pth"), "{e}");
}

#[test]
fn requantization_curves_run_as_a_sweep_and_cancel() {
    use slimscope::compress::apply::TensorCache;
    use slimscope::jobs::CancelToken;
    use slimscope::sweep::{SweepContext, language_points, run};
    let model = smollm2();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = load_data(&model, &text_file(dir.path(), 300)).unwrap_or_else(|e| panic!("{e}"));
    let (network, _) = Network::resolve(&model, None, &data).unwrap_or_else(|e| panic!("{e}"));
    let evaluator = Evaluator::new(Arc::new(network), Arc::new(data));
    let cache = TensorCache::new(1 << 30);
    let ctx = SweepContext {
        model: &model,
        accuracy: Some(&evaluator),
        cache: &cache,
    };
    let all = language_points();
    let names: Vec<String> = all.iter().map(|p| p.recipe.clone()).collect();
    for t in ["Q8_0", "Q4_0", "Q4_K", "Q3_K", "Q2_K"] {
        assert!(names.iter().any(|r| r.contains(t)), "{t} missing");
    }
    assert!(all.iter().any(|p| p.curve.contains("magnitude")));
    let points: Vec<_> = all
        .into_iter()
        .filter(|p| p.recipe.contains("Q8_0") || p.recipe.contains("Q4_0"))
        .collect();
    assert_eq!(points.len(), 2);
    let streamed = std::sync::Mutex::new(0);
    let results = run(
        &ctx,
        &points,
        &CancelToken::default(),
        |_, _| *streamed.lock().expect("lock") += 1,
        |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(*streamed.lock().expect("lock"), 2);
    let lang = |i: usize| {
        results[i]
            .as_ref()
            .and_then(|r| r.metrics)
            .and_then(|m| m.language())
            .expect("language metrics")
    };
    let (q8, q4) = if points[0].recipe.contains("Q8_0") {
        (0, 1)
    } else {
        (1, 0)
    };
    let bits = |i: usize| results[i].as_ref().expect("measured").bits_per_weight;
    assert!(bits(q4) < bits(q8));
    assert!(lang(q4).kl_divergence > lang(q8).kl_divergence);
    // A cancelled sweep returns what it has, without error.
    let cancel = CancelToken::default();
    cancel.cancel();
    let cancelled =
        run(&ctx, &points, &cancel, |_, _| {}, |_, _| {}).expect("cancel is not an error");
    assert!(cancelled.iter().all(Option::is_none));
}

#[test]
fn a_gguf_slimscope_wrote_runs_and_keeps_its_answer() {
    // Q4_K on every block: rows of 576 fall back to Q5_0 as llama.cpp does; ffn_down
    // (1,536 per row) becomes real Q4_K super-blocks.
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("q4k.toml");
    std::fs::write(
        &recipe,
        "version = 1\n[[rule]]\nmatch = \"blk.*.weight\"\nquant = { format = \"gguf\", type = \"Q4_K\" }\n",
    )
    .expect("write");
    let out = dir.path().join("smollm2.Q4_K.gguf");
    let source = fixture("smollm2_q4_1.gguf");
    let (code, _, err) = slimscope(&[
        "apply",
        source.to_str().expect("utf-8"),
        "--recipe",
        recipe.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let written = Model::open(&out).unwrap_or_else(|e| panic!("{e}"));
    let i = written
        .tensor_index("blk.0.ffn_down.weight")
        .expect("tensor");
    assert_eq!(written.tensors[i].dtype.to_string(), "Q4_K");
    let text = causal_lm::generate(&written, &[], "The capital of France is", 3)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(text.starts_with(" Paris"), "{text:?}");
}

/// `slimscope imatrix`: SmolLM2's importance matrix on the 12-token sentence the
/// float64 numpy forward pass scores. gguf-py reads the file as llama.cpp lays it out
/// (general.type imatrix, chunk count and size, an in_sum2 and a counts tensor per
/// blk.* matmul), and every column's Σx² equals numpy's within 1e-3 of the tensor's
/// largest; `apply --imatrix` takes the file.
#[test]
fn imatrix_of_smollm2_is_the_sums_numpy_computes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("sentence.txt");
    std::fs::write(&text, "The capital of France is Paris. It is known for its").expect("text");
    let out = dir.path().join("smollm2.imatrix.gguf");
    let model = fixture("smollm2_q4_1.gguf");
    let (code, stdout, stderr) = common::slimscope(&[
        "imatrix",
        model.to_str().expect("path"),
        "--data",
        text.to_str().expect("path"),
        "--chunk",
        "12",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("210 importance entries over 1 chunks"),
        "{stdout}"
    );
    let read = common::reference_script("read_gguf.py", &[out.to_str().expect("path")]);
    assert_eq!(read["metadata"]["general.type"], "imatrix");
    assert_eq!(read["metadata"]["imatrix.chunk_count"], 1);
    assert_eq!(read["metadata"]["imatrix.chunk_size"], 12);
    assert_eq!(read["tensors"].as_array().map(Vec::len), Some(420));
    let ours = slimscope::model::imatrix::Imatrix::open(&out).expect("our reader");
    let reference = slimscope::Model::open(fixture("quant/smollm2_in_sum2.npz")).expect("npz");
    assert_eq!(reference.tensors.len(), 210);
    for (i, t) in reference.tensors.iter().enumerate() {
        let theirs = reference.tensor_f32(i).expect("values");
        let mean = ours
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!(mean.len(), theirs.len(), "{}", t.name);
        let largest = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = mean
            .iter()
            .zip(&theirs)
            .map(|(m, s)| (m * 12.0 - s).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-3 * largest, "{}: {worst} of {largest}", t.name);
    }
    let recipe = dir.path().join("q4k.toml");
    std::fs::write(
        &recipe,
        "version = 1\n\n[[rule]]\nmatch = \"blk.*.weight\"\nquant = { format = \"gguf\", type = \"Q4_K\", method = \"imatrix\" }\n",
    )
    .expect("recipe");
    let q = dir.path().join("q4k.gguf");
    let (code, _, stderr) = common::slimscope(&[
        "apply",
        model.to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "--imatrix",
        out.to_str().expect("path"),
        "-o",
        q.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
}
