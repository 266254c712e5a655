//! ONNX QDQ exports with quantized activations (W8A8 static, W8 + dynamic activations,
//! W4A8), from the digit CNN as a state_dict with its spec and as an ONNX graph:
//! onnxruntime (the runtime users deploy with, pinned in the fixture step) runs each
//! export on MNIST and its top-1 agrees with the figure slimscope simulated; numpy
//! decodes the stored integer weights to exactly the values slimscope evaluated;
//! tract runs the static export with the accuracy slimscope reported; settings that
//! cannot work are one clear error each.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{CNN_ARCH, fixture, mnist_spec, reference_script, slimscope};
use slimscope::Model;
use slimscope::compress::apply::apply_recipe;
use slimscope::compress::recipe::Recipe;
use slimscope::eval::evaluator::Evaluator;
use slimscope::eval::{Network, data};

const WEIGHTS_INT8: &str = r#"version = 1
[[rule]]
match = "*.weight"
quant = { format = "int", bits = 8, granularity = "channel" }
"#;

/// (name, recipe, samples kept apart for calibration)
fn cases() -> Vec<(&'static str, String, usize)> {
    vec![
        (
            "w8a8-static",
            format!("{WEIGHTS_INT8}[activations]\nmode = \"static\"\n"),
            256,
        ),
        (
            "w8-dynamic",
            format!("{WEIGHTS_INT8}[activations]\nmode = \"dynamic\"\n"),
            0,
        ),
        (
            "w4a8-static-int8-percentile",
            format!(
                "{}[activations]\nmode = \"static\"\ndtype = \"int8\"\nobserver = \"percentile\"\npercentile = 99.9\ncalibration = 128\n",
                WEIGHTS_INT8.replace("bits = 8", "bits = 4")
            ),
            128,
        ),
    ]
}

struct Setup {
    dir: tempfile::TempDir,
    data: PathBuf,
    arch: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = mnist_spec(dir.path());
    let arch = dir.path().join("cnn.toml");
    std::fs::write(&arch, CNN_ARCH).expect("write the spec");
    Setup { dir, data, arch }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The model argument(s): the state_dict with its spec, or the ONNX graph.
fn sources(setup: &Setup) -> Vec<(PathBuf, Vec<String>)> {
    vec![
        (
            fixture("digit_cnn.pth"),
            vec!["--arch".into(), s(&setup.arch).into()],
        ),
        (fixture("digit_cnn.onnx"), vec![]),
    ]
}

/// `slimscope eval --json` of `recipe`: (samples, correct) of the compressed model.
fn simulated(model: &Path, extra: &[String], data: &Path, recipe: &Path) -> (usize, usize) {
    let mut args = vec![
        "eval",
        s(model),
        "--data",
        s(data),
        "--recipe",
        s(recipe),
        "--json",
    ];
    args.extend(extra.iter().map(String::as_str));
    let (code, stdout, stderr) = slimscope(&args);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let c = &json["compressed"];
    let n = c["samples"].as_u64().expect("samples") as usize;
    let top1 = c["top1"].as_f64().expect("top1");
    (n, (top1 * n as f64).round() as usize)
}

fn export(model: &Path, extra: &[String], data: &Path, recipe: &Path, out: &Path) -> String {
    let mut args = vec![
        "apply",
        s(model),
        "--recipe",
        s(recipe),
        "--data",
        s(data),
        "-o",
        s(out),
    ];
    args.extend(extra.iter().map(String::as_str));
    let (code, stdout, stderr) = slimscope(&args);
    assert_eq!(code, 0, "{stderr}");
    stdout
}

#[test]
fn qdq_exports_score_in_onnxruntime_what_slimscope_simulated() {
    let setup = setup();
    for (k, (model, extra)) in sources(&setup).into_iter().enumerate() {
        for (name, text, calibration) in cases() {
            let recipe = setup.dir.path().join(format!("{name}.toml"));
            std::fs::write(&recipe, &text).expect("write the recipe");
            let (n, ours) = simulated(&model, &extra, &setup.data, &recipe);
            assert_eq!(
                n,
                5000 - calibration,
                "{name}: the evaluation leaves the calibration out"
            );
            let out = setup.dir.path().join(format!("{name}-{k}.onnx"));
            let printed = export(&model, &extra, &setup.data, &recipe, &out);
            let on_disk = std::fs::metadata(&out).expect("export").len();
            let ort = reference_script(
                "run_onnx.py",
                &[
                    s(&out),
                    s(&fixture("mnist_5k.csv.gz")),
                    &calibration.to_string(),
                ],
            );
            let label = format!("{} {name}", model.display());
            assert_eq!(ort["samples"].as_u64(), Some(n as u64), "{label}");
            let theirs = ort["correct"].as_u64().expect("correct") as usize;
            // Two runtimes round x/scale their own ways (tract multiplies by the
            // reciprocal): a few images may differ, no more.
            assert!(
                ours.abs_diff(theirs) <= 3,
                "{label}: slimscope {ours}/{n}, onnxruntime {theirs}/{n}"
            );
            // Really quantized, not a float model renamed: one quantizer per weighted
            // layer's input (3 conv + 2 linear), five weight decoders.
            let ops = &ort["ops"];
            let quantizer = if calibration == 0 {
                "DynamicQuantizeLinear"
            } else {
                "QuantizeLinear"
            };
            assert_eq!(ops[quantizer].as_u64(), Some(5), "{label}: {ops}");
            assert_eq!(ops["DequantizeLinear"].as_u64(), Some(10), "{label}: {ops}");
            // 4-bit codes take opset 21's int4 in the graph slimscope generates from
            // the spec (k = 0); the ONNX model's older opset keeps a byte per code.
            let four_bit = name.starts_with("w4") && k == 0;
            let (code_type, code_bytes) = if four_bit {
                ("INT4", 390_410 / 2)
            } else {
                ("INT8", 390_410)
            };
            let types = &ort["initializer_types"];
            for w in ["conv_layers.0.weight", "fc_layers.0.weight"] {
                assert_eq!(
                    types[format!("{w}_quantized")],
                    code_type,
                    "{label}: {types}"
                );
                assert!(
                    types.get(w).is_none(),
                    "{label}: a float copy of {w} remains"
                );
            }
            // Weights at one byte (or half a byte) each plus biases and a few scales:
            // 390,410 weights, 490 f32 bias values; the float model is 1.56 MB.
            assert!(
                (code_bytes + 490 * 4..code_bytes + 490 * 4 + 12_000).contains(&on_disk),
                "{label}: {on_disk} B"
            );
            assert!(
                printed.contains(&slimscope::units::human_bytes(on_disk)),
                "{label}: the size printed is the file's:\n{printed}"
            );
        }
    }
}

/// numpy's `(q − zp)·scale` in float32 over the stored codes equals slimscope's float
/// export of the same recipe bit for bit, for symmetric int8 per channel and
/// asymmetric uint4 per tensor.
#[test]
fn stored_codes_decode_to_the_values_slimscope_evaluated() {
    let setup = setup();
    let text = format!(
        "{WEIGHTS_INT8}[[rule]]\nmatch = \"fc_layers.2.weight\"\nquant = {{ format = \"int\", bits = 4, granularity = \"tensor\", symmetric = false }}\n"
    );
    let recipe = setup.dir.path().join("weights.toml");
    std::fs::write(&recipe, text).expect("write the recipe");
    let floats = setup.dir.path().join("weights.safetensors");
    let (code, _, stderr) = slimscope(&[
        "apply",
        s(&fixture("digit_cnn.pth")),
        "--recipe",
        s(&recipe),
        "-o",
        s(&floats),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let out = setup.dir.path().join("weights.onnx");
    let extra = ["--arch".to_owned(), s(&setup.arch).to_owned()];
    export(
        &fixture("digit_cnn.pth"),
        &extra,
        &setup.data,
        &recipe,
        &out,
    );
    let ort = reference_script(
        "run_onnx.py",
        &[s(&out), s(&fixture("mnist_5k.csv.gz")), "0", s(&floats)],
    );
    let decoded = ort["decoded"].as_object().expect("decoded");
    assert_eq!(decoded.len(), 5, "{decoded:?}");
    for (name, d) in decoded {
        assert_eq!(d["equal"], true, "{name}: {d}");
    }
    let fc2 = &decoded["fc_layers.2.weight"];
    // A generated graph takes opset 21's 4-bit type for 4-bit codes.
    assert_eq!(fc2["dtype"], "uint4");
    assert!(fc2["codes_min"].as_i64() >= Some(0) && fc2["codes_max"].as_i64() <= Some(15));
    let fc0 = &decoded["fc_layers.0.weight"];
    assert_eq!(fc0["dtype"], "int8");
    assert!(fc0["codes_min"].as_i64() >= Some(-127) && fc0["codes_max"].as_i64() == Some(127));
    // Weights alone: onnxruntime's top-1 is the float model's to within an image
    // (fixtures.md: 0.9970 on all 5,000).
    let correct = ort["correct"].as_u64().expect("correct");
    assert!((4980..=4990).contains(&correct), "{correct}");
}

/// tract, opening the static export as any ONNX model, scores exactly what slimscope
/// simulated for the recipe (the same graph; the weights decode to the same floats).
#[test]
fn tract_runs_the_static_export_as_slimscope_measured_it() {
    let setup = setup();
    let (_, text, calibration) = cases().remove(0);
    let recipe_path = setup.dir.path().join("w8a8.toml");
    std::fs::write(&recipe_path, &text).expect("write the recipe");
    let recipe = Recipe::parse(&text, &recipe_path).expect("recipe");
    let data = data::load(&setup.data).expect("data");
    let activations = recipe.activations.clone().expect("activations");

    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let (network, _) = Network::resolve(&model, Some(&setup.arch), &data).expect("network");
    let evaluator =
        Evaluator::with_calibration(Arc::new(network), &data, calibration).expect("evaluator");
    let applied = apply_recipe(&model, &recipe).expect("apply");
    let simulated = evaluator
        .measure_with(&model, &applied, Some(&activations), 256, |_, _| true)
        .expect("simulated");

    let out = setup.dir.path().join("w8a8.onnx");
    let extra = ["--arch".to_owned(), s(&setup.arch).to_owned()];
    export(
        &fixture("digit_cnn.pth"),
        &extra,
        &setup.data,
        &recipe_path,
        &out,
    );
    let exported = Model::open(&out).expect("the export opens");
    let (network, _) = Network::resolve(&exported, None, &data).expect("its graph");
    let evaluator =
        Evaluator::with_calibration(Arc::new(network), &data, calibration).expect("evaluator");
    let deployed = evaluator
        .measure(&exported, &[], 256, |_, _| true)
        .expect("tract runs the export");
    assert_eq!(deployed.samples, simulated.samples);
    assert_eq!(deployed.top1, simulated.top1);
    assert!(
        (deployed.loss - simulated.loss).abs() < 1e-4,
        "{deployed:?} {simulated:?}"
    );
}

#[test]
fn activation_settings_that_cannot_work_are_clear_errors() {
    let setup = setup();
    let write = |name: &str, text: &str| {
        let p = setup.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let pth = fixture("digit_cnn.pth");
    let static_recipe = write(
        "static.toml",
        &format!("{WEIGHTS_INT8}[activations]\nmode = \"static\"\n"),
    );
    let cases: Vec<(Vec<String>, &str, Vec<&str>)> = vec![
        // Activations need an output that carries them.
        (
            vec![
                "apply".into(),
                s(&pth).into(),
                "--recipe".into(),
                s(&static_recipe).into(),
                "-o".into(),
                s(&setup.dir.path().join("o.safetensors")).into(),
            ],
            "static.toml",
            vec!["only an .onnx output"],
        ),
        // Static calibration needs data.
        (
            vec![
                "apply".into(),
                s(&pth).into(),
                "--recipe".into(),
                s(&static_recipe).into(),
                "--arch".into(),
                s(&setup.arch).into(),
                "-o".into(),
                s(&setup.dir.path().join("o.onnx")).into(),
            ],
            "static.toml",
            vec!["give --data"],
        ),
        // Dynamic quantization has no dtype to choose.
        (
            vec![
                "eval".into(),
                s(&pth).into(),
                "--data".into(),
                s(&setup.data).into(),
                "--recipe".into(),
                s(&write(
                    "dyn.toml",
                    "version = 1\n[activations]\nmode = \"dynamic\"\ndtype = \"int8\"\n",
                ))
                .into(),
            ],
            "dyn.toml",
            vec!["static\" only"],
        ),
        // An unknown observer names the line.
        (
            vec![
                "eval".into(),
                s(&pth).into(),
                "--data".into(),
                s(&setup.data).into(),
                "--recipe".into(),
                s(&write(
                    "kl.toml",
                    "version = 1\n[activations]\nmode = \"static\"\nobserver = \"kl\"\n",
                ))
                .into(),
            ],
            "kl.toml:4",
            vec!["minmax", "percentile"],
        ),
        // More calibration samples than the data holds.
        (
            vec![
                "eval".into(),
                s(&pth).into(),
                "--data".into(),
                s(&setup.data).into(),
                "--recipe".into(),
                s(&write(
                    "big.toml",
                    "version = 1\n[activations]\nmode = \"static\"\ncalibration = 6000\n",
                ))
                .into(),
            ],
            "mnist_5k.csv.gz",
            vec!["5000 samples", "6000 apart"],
        ),
        // A language model's activations are ggml's business.
        (
            vec![
                "eval".into(),
                s(&fixture("smollm2_q4_1.gguf")).into(),
                "--recipe".into(),
                s(&write(
                    "lm.toml",
                    "version = 1\n[activations]\nmode = \"dynamic\"\n",
                ))
                .into(),
            ],
            "smollm2_q4_1.gguf",
            vec!["ggml's CPU kernels already quantize activations"],
        ),
    ];
    for (args, names, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = slimscope(&args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "{args:?}: one line: {line}");
        assert!(line.contains(names), "{args:?}: {line}");
        for s in says {
            assert!(line.contains(s), "{args:?}: `{s}` in {line}");
        }
    }
    assert!(
        !setup.dir.path().join("o.onnx").exists()
            && !setup.dir.path().join("o.safetensors").exists(),
        "nothing written"
    );
}

/// PaddleOCR's classifier imports opset 11: per-channel DequantizeLinear needs 13, so
/// asking for it is refused with what to do, and per-tensor codes are written.
#[test]
fn per_channel_codes_need_opset_13() {
    let setup = setup();
    // Four blank 3 × 48 × 192 images: the export needs the input's free dimensions.
    let csv = setup.dir.path().join("blank.csv");
    let row = format!("{}0\n", "0,".repeat(3 * 48 * 192));
    std::fs::write(&csv, row.repeat(4)).expect("write");
    let spec = setup.dir.path().join("blank.toml");
    std::fs::write(
        &spec,
        format!(
            "file = {:?}\nlabel = \"last\"\nshape = [3, 48, 192]\n",
            s(&csv)
        ),
    )
    .expect("write");
    let model = fixture("ppocr_cls.onnx");
    let recipe = |granularity: &str| {
        let p = setup.dir.path().join(format!("{granularity}.toml"));
        std::fs::write(
            &p,
            format!(
                "version = 1\n[[rule]]\nmatch = \"*\"\nquant = {{ format = \"int\", bits = 8, granularity = \"{granularity}\" }}\n"
            ),
        )
        .expect("write");
        p
    };
    let out = setup.dir.path().join("cls.onnx");
    let run = |r: &Path| {
        slimscope(&[
            "apply",
            s(&model),
            "--recipe",
            s(r),
            "--data",
            s(&spec),
            "-o",
            s(&out),
        ])
    };
    let (code, _, stderr) = run(&recipe("channel"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("ppocr_cls.onnx")
            && stderr.contains("from opset 13")
            && stderr.contains("per tensor"),
        "{stderr}"
    );
    assert!(!out.exists());
    let (code, _, stderr) = run(&recipe("tensor"));
    assert_eq!(code, 0, "{stderr}");
    let written = Model::open(&out).expect("the export opens");
    let int8 = written
        .tensors
        .iter()
        .filter(|t| t.name.ends_with("_quantized"))
        .count();
    assert!(int8 > 50, "{int8} weights stored as codes");
}

/// `slimscope bench MODEL --recipe R` serves both artifacts in fresh processes: the
/// compressed one is byte for byte the file `apply` writes (its size on disk is the
/// size shown), the figures are well-formed, and a DynamicQuantizeLinear graph, which
/// tract cannot plan, is reported as not servable there instead of failing the run.
#[test]
fn bench_serves_the_artifacts_apply_writes() {
    let setup = setup();
    let arch = s(&setup.arch).to_owned();
    for (name, text, _) in cases().into_iter().take(2) {
        let recipe = setup.dir.path().join(format!("{name}.toml"));
        std::fs::write(&recipe, &text).expect("write the recipe");
        let out = setup.dir.path().join(format!("{name}.onnx"));
        let extra = ["--arch".to_owned(), arch.clone()];
        export(
            &fixture("digit_cnn.pth"),
            &extra,
            &setup.data,
            &recipe,
            &out,
        );
        let (code, stdout, stderr) = slimscope(&[
            "bench",
            s(&fixture("digit_cnn.pth")),
            "--arch",
            &arch,
            "--data",
            s(&setup.data),
            "--recipe",
            s(&recipe),
            "--seconds",
            "0.05",
            "--batch",
            "64",
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let json: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        let on_disk = std::fs::metadata(&out).expect("export").len();
        assert_eq!(
            json["compressed"]["bytes_on_disk"].as_u64(),
            Some(on_disk),
            "{name}"
        );
        let original = &json["original"];
        assert_eq!(
            original["bytes_on_disk"].as_u64().map(|b| b > 1_500_000),
            Some(true)
        );
        let latency = &original["served"]["latency"];
        let (p50, p99) = (latency["p50_ms"].as_f64(), latency["p99_ms"].as_f64());
        assert!(p50.is_some_and(|v| v > 0.0) && p99 >= p50, "{latency}");
        assert!(latency["runs"].as_u64() >= Some(100));
        assert_eq!(original["served"]["throughput"]["batch"], 64);
        if cfg!(target_os = "linux") {
            let peak = original["served"]["peak_rss"].as_u64().expect("peak RSS");
            assert!(peak > 10 << 20, "{peak}");
        }
        let compressed = &json["compressed"];
        if name.contains("dynamic") {
            let why = compressed["unavailable"]
                .as_str()
                .expect("not servable on tract");
            assert!(why.contains("DequantizeLinear"), "{why}");
        } else {
            assert!(compressed["served"]["throughput"]["per_second"].as_f64() > Some(0.0));
        }
    }
}

/// Structured pruning (half the filters and neurons by L2 norm) with int8 weights.
const STRUCTURED: &str = r#"version = 1
[[rule]]
match = "*.weight"
prune = { method = "structured", sparsity = 0.5, axis = 0, norm = "l2" }
quant = { format = "int", bits = 8, granularity = "channel" }

[[rule]]
match = "fc_layers.2.weight"
prune = { method = "none" }
"#;

/// A structurally pruned export is smaller for real: the zeroed filters and neurons
/// are gone, with the next layer's inputs, and onnxruntime gives the shrunk file the
/// scores of the masked one (`--keep-shapes`) on 400 images, to float rounding. The
/// weights stay int8 codes; the filters whose constant output a padded convolution
/// would see are kept, and said.
#[test]
fn structured_pruning_shrinks_the_export_and_keeps_its_scores() {
    let setup = setup();
    let recipe = setup.dir.path().join("structured.toml");
    std::fs::write(&recipe, STRUCTURED).expect("recipe");
    let extra = vec!["--arch".to_owned(), s(&setup.arch).to_owned()];
    let model = fixture("digit_cnn.pth");
    let shrunk = setup.dir.path().join("shrunk.onnx");
    let stdout = export(&model, &extra, &setup.data, &recipe, &shrunk);
    assert!(
        stdout.contains("`fc_layers.0.weight` [256, 1152] -> [128, 576]"),
        "{stdout}"
    );
    assert!(stdout.contains("pads its input"), "{stdout}");
    let masked = setup.dir.path().join("masked.onnx");
    let mut keep = extra.clone();
    keep.push("--keep-shapes".into());
    export(&model, &keep, &setup.data, &recipe, &masked);
    let mnist = fixture("mnist_5k.csv.gz");
    let cmp = reference_script(
        "compare_onnx.py",
        &[s(&masked), s(&shrunk), s(&mnist), "400"],
    );
    let diff = cmp["max_abs_diff"].as_f64().expect("diff");
    let scale = cmp["max_abs_score"].as_f64().expect("scale");
    assert!(diff <= 1e-5 * scale.max(1.0), "{cmp}");
    assert_eq!(cmp["same_top1"], 400, "{cmp}");
    let (before, after) = (
        cmp["params_a"].as_u64().expect("params"),
        cmp["params_b"].as_u64().expect("params"),
    );
    assert!(after * 3 < before, "{after} of {before} parameters");
    let size = |p: &Path| std::fs::metadata(p).expect("file").len();
    assert!(
        size(&shrunk) * 3 < size(&masked),
        "{} vs {}",
        size(&shrunk),
        size(&masked)
    );
    let report = reference_script("run_onnx.py", &[s(&shrunk), s(&mnist), "0"]);
    for layer in ["conv_layers.3", "fc_layers.0"] {
        assert_eq!(
            report["initializer_types"][format!("{layer}.weight_quantized")],
            "INT8",
            "{report}"
        );
    }
}

/// W8A8 on the shrunk network: onnxruntime's top-1 stays within three images of what
/// slimscope simulated on the masked one (the removed filters' constants are folded
/// exactly instead of passing through an activation quantizer).
#[test]
fn a_shrunk_w8a8_export_scores_what_slimscope_simulated() {
    let setup = setup();
    let recipe = setup.dir.path().join("structured_a8.toml");
    std::fs::write(
        &recipe,
        format!("{STRUCTURED}\n[activations]\nmode = \"static\"\n"),
    )
    .expect("recipe");
    let extra = vec!["--arch".to_owned(), s(&setup.arch).to_owned()];
    let model = fixture("digit_cnn.pth");
    let (samples, correct) = simulated(&model, &extra, &setup.data, &recipe);
    let out = setup.dir.path().join("shrunk_a8.onnx");
    export(&model, &extra, &setup.data, &recipe, &out);
    let mnist = fixture("mnist_5k.csv.gz");
    let report = reference_script("run_onnx.py", &[s(&out), s(&mnist), "256"]);
    assert_eq!(report["samples"], samples);
    let ort = report["correct"].as_u64().expect("correct") as usize;
    assert!(
        ort.abs_diff(correct) <= 3,
        "onnxruntime {ort} vs slimscope {correct}"
    );
}

/// 4-bit weights per channel (int4) and in groups of 32 along the rows (uint4,
/// opset 21's blocked DequantizeLinear): the spec's export stores them in those
/// types, numpy decodes them to slimscope's values bit for bit, onnxruntime's top-1
/// is the simulated one within three images, and the file is far smaller than the
/// int8 export's. The ONNX source (opset below 21) keeps a byte per code, and says so.
#[test]
fn four_bit_and_group_codes_take_opset_21_types() {
    let setup = setup();
    let text = WEIGHTS_INT8.replace("bits = 8", "bits = 4")
        + "[[rule]]\nmatch = \"fc_layers.0.weight\"\nquant = { format = \"int\", bits = 4, granularity = \"group\", group_size = 32, symmetric = false }\n";
    let recipe = setup.dir.path().join("w4.toml");
    std::fs::write(&recipe, &text).expect("recipe");
    let eight = setup.dir.path().join("w8.toml");
    std::fs::write(&eight, WEIGHTS_INT8).expect("recipe");
    let model = fixture("digit_cnn.pth");
    let floats = setup.dir.path().join("w4.safetensors");
    let (code, _, stderr) =
        slimscope(&["apply", s(&model), "--recipe", s(&recipe), "-o", s(&floats)]);
    assert_eq!(code, 0, "{stderr}");
    let extra = vec!["--arch".to_owned(), s(&setup.arch).to_owned()];
    let out = setup.dir.path().join("w4.onnx");
    export(&model, &extra, &setup.data, &recipe, &out);
    let out8 = setup.dir.path().join("w8.onnx");
    export(&model, &extra, &setup.data, &eight, &out8);
    let mnist = fixture("mnist_5k.csv.gz");
    let ort = reference_script("run_onnx.py", &[s(&out), s(&mnist), "0", s(&floats)]);
    let decoded = ort["decoded"].as_object().expect("decoded");
    assert_eq!(decoded.len(), 5, "{decoded:?}");
    for (name, d) in decoded {
        assert_eq!(d["equal"], true, "{name}: {d}");
        let want = if name == "fc_layers.0.weight" {
            "uint4"
        } else {
            "int4"
        };
        assert_eq!(d["dtype"], want, "{name}");
    }
    let (_, correct) = simulated(&model, &extra, &setup.data, &recipe);
    let ort_correct = ort["correct"].as_u64().expect("correct") as usize;
    assert!(
        ort_correct.abs_diff(correct) <= 3,
        "{ort_correct} vs {correct}"
    );
    let size = |p: &Path| std::fs::metadata(p).expect("file").len();
    assert!(
        size(&out) * 10 < size(&out8) * 7,
        "{} vs {}",
        size(&out),
        size(&out8)
    );
    // The ONNX model imports an older opset: a byte per code, said on the way.
    let from_onnx = setup.dir.path().join("w4_from_onnx.onnx");
    let stdout = export(
        &fixture("digit_cnn.onnx"),
        &[],
        &setup.data,
        &recipe,
        &from_onnx,
    );
    assert!(stdout.contains("codes stored one per byte"), "{stdout}");
}

/// Every observer against onnxruntime's own calibrators (`create_calibrator` with
/// MinMax, Percentile and Entropy on the same 64 samples of the digit CNN's ONNX
/// graph, symmetric for int8), and the MSE observer against a float64 numpy
/// implementation of its definition on onnxruntime's activations: the activation
/// scales slimscope writes agree to float rounding (the two runtimes' convolutions
/// differ in the last bits) and the zero points exactly, and the observers really
/// differ from one another.
#[test]
fn observers_calibrate_what_onnxruntime_calibrates() {
    let setup = setup();
    let mnist = fixture("mnist_5k.csv.gz");
    let model = fixture("digit_cnn.onnx");
    let mut scales: std::collections::HashMap<(String, String), f64> = Default::default();
    for observer in ["minmax", "percentile", "entropy", "mse"] {
        for dtype in ["uint8", "int8"] {
            let recipe = setup.dir.path().join(format!("{observer}-{dtype}.toml"));
            std::fs::write(
                &recipe,
                format!(
                    "{WEIGHTS_INT8}[activations]\nmode = \"static\"\ndtype = \"{dtype}\"\nobserver = \"{observer}\"\ncalibration = 64\n"
                ),
            )
            .expect("recipe");
            let out = setup.dir.path().join(format!("{observer}-{dtype}.onnx"));
            export(&model, &[], &setup.data, &recipe, &out);
            let report = reference_script(
                "ort_calibrate.py",
                &[s(&model), s(&out), s(&mnist), "64", observer, dtype],
            );
            let tensors = report.as_object().expect("tensors");
            assert_eq!(tensors.len(), 5, "{report}");
            for (name, t) in tensors {
                let (ours, theirs) = (&t["ours"], &t["theirs"]);
                let (a, b) = (
                    ours[0].as_f64().expect("scale"),
                    theirs[0].as_f64().expect("scale"),
                );
                assert!(
                    (a - b).abs() <= 2e-6 * b,
                    "{observer} {dtype} {name}: slimscope {a}, onnxruntime {b}"
                );
                assert_eq!(ours[1], theirs[1], "{observer} {dtype} {name}: zero point");
                scales.insert((format!("{observer}-{dtype}"), name.clone()), a);
            }
        }
    }
    // The percentile and entropy windows cut the first pooled activations' tails.
    let at = |setting: &str| scales[&(setting.to_owned(), "pool0".to_owned())];
    assert!(at("percentile-uint8") < at("minmax-uint8"));
    assert!(at("entropy-uint8") < 0.7 * at("minmax-uint8"));
    assert!(at("entropy-int8") < 0.7 * at("minmax-int8"));
    // Least squared error clips the long tail too, less than entropy does.
    for dtype in ["uint8", "int8"] {
        let (mse, minmax) = (at(&format!("mse-{dtype}")), at(&format!("minmax-{dtype}")));
        assert!(mse < minmax, "{dtype}: mse {mse} vs minmax {minmax}");
    }
}
