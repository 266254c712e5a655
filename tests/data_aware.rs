//! Data-aware pruning (Wanda, SparseGPT) against float64 numpy implementations
//! written from the papers (tests/fixtures/data_aware.py), on the digit CNN's real
//! layers and calibration samples, and the errors bad calibration settings get.

mod common;

use std::path::{Path, PathBuf};

use common::{CNN_ARCH, fixture, mnist_spec, reference_script, slimscope};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `slimscope apply MODEL --recipe RECIPE FLAG DATA -o OUT`: its exit code and stderr.
fn apply(model: &Path, recipe: &Path, flag: &str, data: &Path, out: &Path) -> (i32, String) {
    let (code, _, stderr) = slimscope(&[
        "apply",
        s(model),
        "--recipe",
        s(recipe),
        flag,
        s(data),
        "-o",
        s(out),
    ]);
    (code, stderr)
}

fn recipe(dir: &Path, name: &str, prune: &str, calibration: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("version = 1\n[[rule]]\nmatch = \"*\"\nprune = {prune}\n{calibration}"),
    )
    .expect("recipe");
    path
}

/// Both networks slimscope runs (the state_dict through its spec, the ONNX graph
/// itself) give the weights numpy computes from onnxruntime's activations: the
/// same non-zero pattern, and SparseGPT's updated weights within float rounding
/// (1e-5 of the layer's largest weight; the two runtimes' convolutions differ in the
/// last bits). Rows that are not whole N:M groups (the first convolution's nine
/// taps) stay dense in both.
#[test]
fn wanda_and_sparsegpt_prune_as_the_papers_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mnist_spec(dir.path());
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, CNN_ARCH).expect("spec");
    let onnx = fixture("digit_cnn.onnx");
    let sources: [(PathBuf, Vec<&str>); 2] = [
        // Kept shapes: a shrunk export would drop the filters whose every outgoing
        // weight the next layer pruned (inputs never seen non-zero), equivalent but
        // not comparable weight by weight.
        (
            fixture("digit_cnn.pth"),
            vec!["--arch", s(&arch), "--keep-shapes"],
        ),
        (onnx.clone(), vec![]),
    ];
    let cases = [
        ("wanda", "sparsity = 0.5", "0.5"),
        ("wanda", "n = 2, m = 4", "2:4"),
        ("sparsegpt", "sparsity = 0.6", "0.6"),
        ("sparsegpt", "n = 2, m = 4", "2:4"),
    ];
    for (k, (method, args, pattern)) in cases.iter().enumerate() {
        let r = recipe(
            dir.path(),
            &format!("r{k}"),
            &format!("{{ method = \"{method}\", {args} }}"),
            "[calibration]\nsamples = 64\n",
        );
        for (model, extra) in &sources {
            let out = dir.path().join(format!("out{k}.onnx"));
            let mut cli = vec!["apply", s(model), "--recipe", s(&r), "--data", s(&data)];
            cli.extend(extra.iter().copied());
            cli.extend(["-o", s(&out), "--force"]);
            let (code, _, stderr) = slimscope(&cli);
            assert_eq!(code, 0, "{stderr}");
            let report = reference_script(
                "data_aware.py",
                &[
                    s(&onnx),
                    s(&out),
                    s(&fixture("mnist_5k.csv.gz")),
                    "64",
                    method,
                    pattern,
                ],
            );
            let layers = report.as_object().expect("layers");
            assert_eq!(layers.len(), 5, "{report}");
            for (name, l) in layers {
                let at = format!("{method} {pattern} {} {name}: {l}", model.display());
                // The export records which samples it learnt from.
                let recorded = &l["recorded_calibration"];
                assert_eq!(recorded["samples"], 64, "{at}");
                assert_eq!(recorded["data_sha256"], l["samples_sha256"], "{at}");
                let differs = l["mask_differs"].as_f64().expect("fraction");
                assert!(differs <= 1e-3, "{at}");
                let (ours, theirs) = (&l["sparsity_ours"], &l["sparsity_reference"]);
                let (ours, theirs) = (ours.as_f64().expect("s"), theirs.as_f64().expect("s"));
                assert!((ours - theirs).abs() <= 1e-3, "{at}");
                if let Some(d) = l["max_difference"].as_f64() {
                    assert!(d <= 1e-5, "{at}");
                }
                assert!(l["rows_agreeing"].as_f64().expect("rows") >= 0.95, "{at}");
                if *pattern == "2:4" && name == "conv_layers.0.weight" {
                    assert_eq!(ours, 0.0, "{at}");
                } else {
                    assert!(ours >= 0.44, "{at}"); // round(4.5) = 4 of a conv0 row's 9
                }
            }
        }
    }
}

/// `eval --json`: (samples, correct) of the compressed model.
fn top1(model: &Path, data: &Path, recipe: &Path) -> (u64, u64) {
    let (code, stdout, stderr) = slimscope(&[
        "eval",
        s(model),
        "--data",
        s(data),
        "--recipe",
        s(recipe),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let c = &v["compressed"];
    let n = c["samples"].as_u64().expect("samples");
    (
        n,
        (c["top1"].as_f64().expect("top1") * n as f64).round() as u64,
    )
}

/// The papers' ordering, measured: at 80 % sparsity of every weight matrix,
/// SparseGPT's weight updates keep far more of the digit CNN's accuracy than
/// magnitude pruning (measured here: 84 % against 52 % top-1), and eval measures
/// both data-aware rows on the samples calibration did not see.
#[test]
fn sparsegpt_keeps_more_accuracy_than_magnitude_at_high_sparsity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mnist_spec(dir.path());
    let model = fixture("digit_cnn.onnx");
    let magnitude = recipe(
        dir.path(),
        "magnitude",
        "{ method = \"magnitude\", sparsity = 0.8 }",
        "",
    );
    let sparsegpt = recipe(
        dir.path(),
        "sparsegpt",
        "{ method = \"sparsegpt\", sparsity = 0.8 }",
        "",
    );
    let (n_mag, mag) = top1(&model, &data, &magnitude);
    let (n_sgpt, sgpt) = top1(&model, &data, &sparsegpt);
    assert_eq!(n_mag, 5000);
    assert_eq!(n_sgpt, 5000 - 128, "128 samples kept apart by default");
    let (mag, sgpt) = (mag as f64 / n_mag as f64, sgpt as f64 / n_sgpt as f64);
    assert!(sgpt > mag + 0.15, "SparseGPT {sgpt}, magnitude {mag}");
}

/// Bad calibration settings: one line naming the recipe or the problem, exit 2.
#[test]
fn bad_calibration_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mnist_spec(dir.path());
    let model = fixture("digit_cnn.onnx");
    let out = dir.path().join("out.onnx");
    let cases = [
        (
            "both",
            "{ method = \"wanda\", sparsity = 0.5, n = 2, m = 4 }",
            "",
            true,
            "give `sparsity`, or `n` and `m`",
        ),
        (
            "nm",
            "{ method = \"sparsegpt\", n = 5, m = 4 }",
            "",
            true,
            "N:M needs 0 < N <= M",
        ),
        (
            "zero",
            "{ method = \"wanda\", sparsity = 0.5 }",
            "[calibration]\nsamples = 0\n",
            true,
            "samples must be at least 1",
        ),
        (
            "damp",
            "{ method = \"sparsegpt\", sparsity = 0.5 }",
            "[calibration]\ndampening = 2.0\n",
            true,
            "dampening",
        ),
        (
            "many",
            "{ method = \"wanda\", sparsity = 0.5 }",
            "[calibration]\nsamples = 5000\n",
            true,
            "too few to keep 5000 apart",
        ),
        (
            "nodata",
            "{ method = \"wanda\", sparsity = 0.5 }",
            "",
            false,
            "give --calibration FILE, or --data",
        ),
        (
            "singular",
            "{ method = \"sparsegpt\", sparsity = 0.5 }",
            "[calibration]\nsamples = 1\ndampening = 0.0\n",
            true,
            "not positive definite even with dampening 0",
        ),
        (
            "act",
            "{ method = \"none\" }\nquant = { format = \"int\", bits = 4, act_order = true }",
            "",
            true,
            "act_order is a GPTQ setting",
        ),
        (
            "awq",
            "{ method = \"none\" }\nquant = { format = \"int\", bits = 4, method = \"awq\" }",
            "",
            true,
            "AWQ folds its per-input scales into the norm or projection before each weight, \
             which slimscope does for the blocks of llama-family GGUFs",
        ),
    ];
    for (name, prune, calibration, with_data, want) in cases {
        let r = recipe(dir.path(), name, prune, calibration);
        let mut cli = vec!["apply", s(&model), "--recipe", s(&r), "-o", s(&out)];
        if with_data {
            cli.extend(["--data", s(&data)]);
        }
        let (code, _, stderr) = slimscope(&cli);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(!out.exists(), "{name}: nothing written");
    }
}

/// GPTQ on every grid the recipe offers (per channel, per tensor, groups of 32, act
/// order with both) gives the codes a float64 numpy GPTQ written from the paper
/// computes from onnxruntime's activations (the first convolution, whose 9-value
/// rows are not whole groups of 32, is left to round-to-nearest by the recipe).
#[test]
fn gptq_quantizes_as_the_paper_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mnist_spec(dir.path());
    let onnx = fixture("digit_cnn.onnx");
    let cases = [
        ("granularity = \"channel\"", "4:channel"),
        ("granularity = \"tensor\"", "3:tensor"),
        ("granularity = \"group\", group_size = 32", "4:group32"),
        (
            "granularity = \"channel\", act_order = true",
            "3:channel:act",
        ),
        (
            "granularity = \"group\", group_size = 32, act_order = true",
            "4:group32:act",
        ),
    ];
    for (k, (grid, pattern)) in cases.iter().enumerate() {
        let bits = &pattern[..1];
        let r = dir.path().join(format!("g{k}.toml"));
        std::fs::write(
            &r,
            format!(
                "version = 1\n[[rule]]\nregex = '^(conv_layers\\.[36]|fc_layers\\.[02])\\.weight$'\n\
                 quant = {{ format = \"int\", bits = {bits}, {grid}, method = \"gptq\" }}\n\
                 [calibration]\nsamples = 64\n"
            ),
        )
        .expect("recipe");
        let out = dir.path().join(format!("g{k}.safetensors"));
        let (code, stderr) = apply(&onnx, &r, "--data", &data, &out);
        assert_eq!(code, 0, "{stderr}");
        let report = reference_script(
            "data_aware.py",
            &[
                s(&onnx),
                s(&out),
                s(&fixture("mnist_5k.csv.gz")),
                "64",
                "gptq",
                pattern,
            ],
        );
        let layers = report.as_object().expect("layers");
        assert_eq!(layers.len(), 5, "{report}");
        assert_eq!(
            report["conv_layers.0.weight"]["untouched"], true,
            "{report}"
        );
        for (name, l) in layers.iter().filter(|(n, _)| *n != "conv_layers.0.weight") {
            let at = format!("{pattern} {name}: {l}");
            assert!(l["rows_agreeing"].as_f64() >= Some(0.99), "{at}");
            assert!(l["max_difference"].as_f64() <= Some(1e-5), "{at}");
            // GPTQ really moves codes away from round-to-nearest.
            if let Some(moved) = l["rtn_differ"].as_f64() {
                assert!(moved > 0.05, "{at}");
            }
        }
    }
}

/// At two bits per channel, GPTQ keeps the digit CNN working where round-to-nearest
/// breaks it (measured here: 98.5 % against 36.0 % top-1), and the QDQ `.onnx`
/// export of GPTQ's codes scores in onnxruntime what slimscope measured, on the
/// same 4,872 samples.
#[test]
fn gptq_rescues_two_bit_weights_and_onnxruntime_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mnist_spec(dir.path());
    let model = fixture("digit_cnn.onnx");
    let write = |name: &str, method: &str| {
        let r = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &r,
            format!(
                "version = 1\n[[rule]]\nmatch = \"*.weight\"\n\
                 quant = {{ format = \"int\", bits = 2, granularity = \"channel\", method = \"{method}\" }}\n"
            ),
        )
        .expect("recipe");
        r
    };
    let (rtn, gptq) = (write("rtn", "rtn"), write("gptq", "gptq"));
    let (n_rtn, c_rtn) = top1(&model, &data, &rtn);
    let (n_gptq, c_gptq) = top1(&model, &data, &gptq);
    assert_eq!((n_rtn, n_gptq), (5000, 4872));
    let (a_rtn, a_gptq) = (c_rtn as f64 / 5000.0, c_gptq as f64 / 4872.0);
    assert!(
        a_gptq > a_rtn + 0.3,
        "GPTQ {a_gptq}, round-to-nearest {a_rtn}"
    );
    let out = dir.path().join("gptq.onnx");
    let (code, stderr) = apply(&model, &gptq, "--data", &data, &out);
    assert_eq!(code, 0, "{stderr}");
    let ort = reference_script(
        "run_onnx.py",
        &[s(&out), s(&fixture("mnist_5k.csv.gz")), "128"],
    );
    assert_eq!(ort["samples"], 4872, "{ort}");
    assert_eq!(ort["ops"]["DequantizeLinear"], 5, "{ort}");
    let theirs = ort["correct"].as_u64().expect("correct");
    assert!(
        theirs.abs_diff(c_gptq) <= 3,
        "onnxruntime {theirs}, slimscope {c_gptq}"
    );
}

/// The same methods on a real ONNX model from another exporter: PaddleOCR's text
/// angle classifier (MobileNetV3: depthwise convolutions with one Hessian per group,
/// every weight a `Constant` node, a MatMul head stored [in, out]), calibrated on
/// deterministic images (the same inputs for both implementations; no accuracy is
/// claimed from them): its 54 weights equal numpy's. Act order sorts inputs by
/// their Hessian diagonal, and a depthwise filter's nine taps can tie to the last
/// bits, where the two implementations' summation orders may pick different orders:
/// a few codes per thousand may differ, nothing more.
#[test]
fn every_method_matches_numpy_on_paddleocrs_classifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("images.npz");
    reference_script("make_images.py", &[s(&data), "48", "3", "48", "192", "7"]);
    let model = fixture("ppocr_cls.onnx");
    let cases = [
        (
            "prune = { method = \"sparsegpt\", sparsity = 0.5 }",
            "sparsegpt",
            "0.5",
        ),
        (
            "prune = { method = \"wanda\", n = 2, m = 4 }",
            "wanda",
            "2:4",
        ),
        (
            "quant = { format = \"int\", bits = 4, method = \"gptq\", act_order = true }",
            "gptq",
            "4:channel:act",
        ),
        (
            "quant = { format = \"int\", bits = 3, granularity = \"tensor\", method = \"gptq\" }",
            "gptq",
            "3:tensor",
        ),
    ];
    for (k, (rule, method, pattern)) in cases.iter().enumerate() {
        let r = dir.path().join(format!("p{k}.toml"));
        std::fs::write(
            &r,
            format!("version = 1\n[[rule]]\nmatch = \"*\"\n{rule}\n[calibration]\nsamples = 16\n"),
        )
        .expect("recipe");
        let out = dir.path().join(format!("p{k}.safetensors"));
        let (code, stderr) = apply(&model, &r, "--data", &data, &out);
        assert_eq!(code, 0, "{stderr}");
        let report = reference_script(
            "data_aware.py",
            &[s(&model), s(&out), s(&data), "16", method, pattern],
        );
        let layers = report.as_object().expect("layers");
        assert_eq!(layers.len(), 54, "{method} {pattern}");
        let (mut off, mut count) = (0, 0);
        for (name, l) in layers {
            let at = format!("{method} {pattern} {name}: {l}");
            off += l["values_off"].as_u64().expect("off");
            count += l["count"].as_u64().expect("count");
            if *method != "gptq" {
                let d = l["max_difference"].as_f64().expect("some rows agree");
                assert!(d <= 1e-5, "{at}");
                assert!(
                    l["mask_differs"].as_f64().expect("fraction") <= 1e-3,
                    "{at}"
                );
            }
            assert!(
                l["values_off"].as_u64() <= Some(l["count"].as_u64().expect("n") / 50),
                "{at}"
            );
            assert_eq!(
                l["recorded_calibration"]["data_sha256"], l["samples_sha256"],
                "{at}"
            );
        }
        assert!(
            off * 1000 <= count * 2,
            "{method} {pattern}: {off} of {count} off"
        );
    }
}

/// On SmolLM2 (a llama GGUF), calibrated on a text block by block: Wanda, SparseGPT
/// and GPTQ (an integer grid and ggml's Q4_0 blocks) give the weights numpy computes from a float64 llama forward pass of its
/// own over gguf-py's dequantized weights (the query, output, gate and down
/// projections of the first two blocks, the second block's inputs from the first
/// compressed; 16 windows of 128 tokens). Our pass runs in float32; measured, the
/// masks and GPTQ's codes are identical and SparseGPT's updated weights within
/// 7.4e-7 of the layer's largest; the bounds leave float32 room: masks within 0.1 %,
/// values within 1e-5.
#[test]
fn data_aware_methods_on_a_llama_gguf_match_numpys_forward_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gguf, text, ids_path) = llama_calibration(dir.path());
    let weights = r"regex = '^blk\.[01]\.(attn_q|attn_output|ffn_gate|ffn_down)\.weight$'";
    let cases = [
        (
            "prune = { method = \"wanda\", sparsity = 0.5 }\nquant = { format = \"f32\" }",
            "wanda",
            "0.5",
        ),
        (
            "prune = { method = \"sparsegpt\", n = 2, m = 4 }\nquant = { format = \"f32\" }",
            "sparsegpt",
            "2:4",
        ),
        (
            "quant = { format = \"int\", bits = 4, granularity = \"channel\", method = \"gptq\" }",
            "gptq",
            "4:channel",
        ),
        (
            "quant = { format = \"gguf\", type = \"Q4_0\", method = \"gptq\" }",
            "gptq",
            "4:q4_0",
        ),
    ];
    for (k, (rule, method, pattern)) in cases.iter().enumerate() {
        let r = dir.path().join(format!("r{k}.toml"));
        // ggml's blocks refit every 32 inputs from the updated row, so one code that
        // float32 rounds the other way moves the rest of its row, and the next block
        // learns from slightly different inputs: Q4_0 is compared on the first block.
        let weights = if *pattern == "4:q4_0" {
            weights.replace("[01]", "0")
        } else {
            weights.to_owned()
        };
        std::fs::write(
            &r,
            format!("version = 1\n[[rule]]\n{weights}\n{rule}\n[calibration]\nsamples = 16\n"),
        )
        .expect("recipe");
        let out = dir.path().join(format!("out{k}.gguf"));
        let (code, stderr) = apply(&gguf, &r, "--calibration", &text, &out);
        assert_eq!(code, 0, "{stderr}");
        let report = reference_script(
            "data_aware.py",
            &[s(&gguf), s(&out), s(&ids_path), "16", method, pattern],
        );
        let layers = report.as_object().expect("layers");
        eprintln!("{method} {pattern}: {report}");
        let count = if *pattern == "4:q4_0" { 4 } else { 8 };
        assert_eq!(layers.len(), count, "{report}");
        for (name, l) in layers {
            let at = format!("{method} {pattern} {name}: {l}");
            let recorded = &l["recorded_calibration"];
            assert_eq!(recorded["samples"], 16, "{at}");
            assert_eq!(recorded["data_sha256"], l["samples_sha256"], "{at}");
            assert!(l["mask_differs"].as_f64() <= Some(1e-3), "{at}");
            assert!(l["rows_agreeing"].as_f64() >= Some(0.99), "{at}");
            if *pattern == "4:q4_0" {
                // Measured: three layers identical, 0.3 % of ffn_down's values (4 rows).
                assert!(l["values_differ"].as_f64() <= Some(0.01), "{at}");
            } else {
                assert!(l["max_difference"].as_f64() <= Some(1e-5), "{at}");
            }
            if *method == "gptq" {
                assert!(l["rtn_differ"].as_f64() > Some(0.05), "{at}");
            } else {
                let ours = l["sparsity_ours"].as_f64().expect("sparsity");
                assert!((ours - 0.5).abs() < 1e-3, "{at}");
            }
        }
    }
}

/// SmolLM2, its calibration text and the text's token windows as JSON (written into
/// `dir`), for the numpy references to pick the same windows from.
fn llama_calibration(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let gguf = fixture("smollm2_q4_1.gguf");
    let text = fixture("calibration/twenty_newsgroups.rst");
    let model = slimscope::Model::open(&gguf).expect("model");
    let windows = slimscope::eval::causal_lm::calibration_windows(&model, &text).expect("text");
    let ids: Vec<Vec<u32>> = windows
        .x
        .chunks(windows.sample_len())
        .map(|w| w.iter().map(|&t| t as u32).collect())
        .collect();
    assert!(ids.len() >= 16, "{} windows", ids.len());
    let ids_path = dir.join("windows.json");
    std::fs::write(&ids_path, serde_json::to_string(&ids).expect("json")).expect("ids");
    (gguf, text, ids_path)
}

/// AWQ on SmolLM2's first two blocks against tests/fixtures/awq.py, a float64 numpy
/// AWQ written from the paper and llm-awq's search: the same α per shared input (or
/// one numpy finds as good), the same rescaled and rounded weights and norms.
#[test]
fn awq_on_a_llama_gguf_matches_numpys_search_and_folding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gguf, text, ids_path) = llama_calibration(dir.path());
    let r = dir.path().join("awq.toml");
    std::fs::write(
        &r,
        "version = 1\n[[rule]]\nregex = '^blk\\.[01]\\.(attn_[qkv]|attn_output|ffn_gate|ffn_up|ffn_down)\\.weight$'\n\
         quant = { format = \"int\", bits = 4, granularity = \"group\", group_size = 64, \
         method = \"awq\" }\n[calibration]\nsamples = 16\n",
    )
    .expect("recipe");
    let out = dir.path().join("awq.gguf");
    let (code, stderr) = apply(&gguf, &r, "--calibration", &text, &out);
    assert_eq!(code, 0, "{stderr}");
    let report = reference_script(
        "awq.py",
        &[s(&gguf), s(&out), s(&ids_path), "16", "4", "64"],
    );
    eprintln!("awq: {report}");
    let tensors = report.as_object().expect("tensors");
    // Seven projections and two norms in each of the two blocks.
    assert_eq!(tensors.len(), 18, "{report}");
    let mut scaled = 0;
    for (name, t) in tensors {
        let at = format!("{name}: {t}");
        let number = |key: &str| t[key].as_f64().unwrap_or_else(|| panic!("{key}: {at}"));
        assert!(number("values_off") <= 1e-4, "{at}");
        if name.contains("_norm") {
            assert!(number("max_difference") <= 1e-6, "{at}");
        }
        if name.contains("attn_output") {
            // Grouped-query attention: the value projection cannot absorb its scales.
            assert_eq!(t["rescaled"], false, "{at}");
        } else if !name.contains("_norm") {
            assert_eq!(t["rescaled"], true, "{at}");
            assert!(number("loss_at_theirs") <= 1.0 + 1e-4, "{at}");
            if number("alpha_theirs") > 0.0 {
                scaled += 1;
                assert!(number("loss_rounding") > 1.0, "{at}");
            }
        }
    }
    // Every one of the 12 rescaled projections chose α > 0 on this text.
    assert!(scaled >= 10, "AWQ rescaled only {scaled} weights: {report}");
}

/// Calibrating a language model on a file that cannot serve: one line, exit 2.
#[test]
fn bad_language_model_calibration_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = fixture("smollm2_q4_1.gguf");
    let text = fixture("calibration/twenty_newsgroups.rst");
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Far too short to fill one window.").expect("text");
    let wanda = dir.path().join("wanda.toml");
    std::fs::write(
        &wanda,
        "version = 1\n[[rule]]\nmatch = \"blk.0.ffn_down.weight\"\n\
         prune = { method = \"wanda\", sparsity = 0.5 }\n[calibration]\nsamples = 200\n",
    )
    .expect("recipe");
    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        "version = 1\n[[rule]]\nmatch = \"blk.0.ffn_down.weight\"\n\
         prune = { method = \"magnitude\", sparsity = 0.5 }\n",
    )
    .expect("recipe");
    let embd = dir.path().join("embd.toml");
    std::fs::write(
        &embd,
        "version = 1\n[[rule]]\nmatch = \"token_embd.weight\"\n\
         prune = { method = \"wanda\", sparsity = 0.5 }\n[calibration]\nsamples = 2\n",
    )
    .expect("recipe");
    let mixed = dir.path().join("mixed.toml");
    std::fs::write(
        &mixed,
        "version = 1\n[[rule]]\nmatch = \"blk.0.attn_q.weight\"\n\
         quant = { format = \"int\", bits = 4, method = \"awq\" }\n\
         [[rule]]\nmatch = \"blk.0.attn_k.weight\"\n\
         prune = { method = \"magnitude\", sparsity = 0.5 }\n[calibration]\nsamples = 2\n",
    )
    .expect("recipe");
    let out = dir.path().join("out.gguf");
    let cases: [(&Path, &Path, &str); 5] = [
        (&wanda, &text, "fewer than the 200 the recipe calibrates on"),
        (&wanda, &short, "fewer than the 200"),
        (
            &plain,
            &text,
            "--calibration is for recipes with data-aware methods",
        ),
        (
            &embd,
            &text,
            "is not a block's attention or feed-forward projection",
        ),
        (
            &mixed,
            &text,
            "tensor `blk.0.attn_k.weight`: AWQ rescales blk.0.attn_q.weight, \
             blk.0.attn_k.weight, blk.0.attn_v.weight and `blk.0.attn_norm.weight`, which \
             makes their input; pruning, GPTQ or an importance matrix on one of them",
        ),
    ];
    for (recipe, calibration, want) in cases {
        let (code, stderr) = apply(&gguf, recipe, "--calibration", calibration, &out);
        let at = format!("{} {}: {stderr}", recipe.display(), calibration.display());
        assert_eq!(code, 2, "{at}");
        assert!(stderr.contains(want), "{at}");
        assert_eq!(stderr.trim().lines().count(), 1, "{at}");
        assert!(!out.exists(), "{at}");
    }
    let (code, _, stderr) = slimscope(&["eval", s(&gguf), "--calibration", s(&text)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("calibrates nothing"), "{stderr}");
    let (code, _, stderr) = slimscope(&["eval", s(&gguf), "--imatrix", s(&text)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("there is no recipe"), "{stderr}");
}
