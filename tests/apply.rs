//! `slimscope apply`: a recipe on the real digit CNN, written to safetensors and
//! re-opened. Expectations are computed here, independently: the global magnitude
//! selection by sorting, int8 per-channel grids per row, SQNR in float64.

mod common;

use std::path::Path;

use common::{fixture, fixture_f32s, slimscope};
use slimscope::Model;

const RECIPE: &str = r#"version = 1

[[rule]]
match = "*.weight"
prune = { method = "magnitude", sparsity = 0.5, scope = "global" }
quant = { format = "int", bits = 8, granularity = "channel" }

[[rule]]
regex = '^conv_layers\.0\.'
prune = { method = "none" }
"#;

const PRUNED: [&str; 4] = [
    "conv_layers.3.weight",
    "conv_layers.6.weight",
    "fc_layers.0.weight",
    "fc_layers.2.weight",
];

fn run_apply(dir: &Path) -> (Model, serde_json::Value) {
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, RECIPE).expect("write recipe");
    let out = dir.join("out.safetensors");
    let (code, stdout, stderr) = slimscope(&[
        "apply",
        fixture("digit_cnn.pth").to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    (Model::open(&out).unwrap_or_else(|e| panic!("{e}")), report)
}

fn values(model: &Model, name: &str) -> Vec<f32> {
    let i = model.tensor_index(name).expect("tensor");
    assert_eq!(
        model.tensors[i].dtype,
        slimscope::DType::F32,
        "{name}: written as f32"
    );
    model.tensor_f32(i).unwrap_or_else(|e| panic!("{e}"))
}

fn original(name: &str) -> Vec<f32> {
    let model = Model::open(fixture("digit_cnn.pth")).unwrap_or_else(|e| panic!("{e}"));
    fixture_f32s("digit_cnn.pth", model.tensor_index(name).expect("tensor"))
}

#[test]
fn global_magnitude_then_int8_per_channel_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, report) = run_apply(dir.path());
    // The global selection: the round(0.5·n) smallest |w| over the four tensors,
    // ties by (tensor, position) — all zero in the output.
    let all: Vec<(f64, usize, usize)> = PRUNED
        .iter()
        .enumerate()
        .flat_map(|(t, n)| {
            original(n)
                .into_iter()
                .enumerate()
                .map(move |(i, w)| (f64::from(w.abs()), t, i))
        })
        .collect();
    let mut order = all.clone();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let k = (0.5 * all.len() as f64).round_ties_even() as usize;
    let outputs: Vec<Vec<f32>> = PRUNED.iter().map(|n| values(&out, n)).collect();
    for &(_, t, i) in &order[..k] {
        assert_eq!(outputs[t][i], 0.0, "{}[{i}] should be pruned", PRUNED[t]);
    }
    // int8 per channel: every row is a grid of multiples of absmax(row)/127.
    for (t, name) in PRUNED.iter().enumerate() {
        let row_len = outputs[t].len()
            / out.tensors[out.tensor_index(name).expect("tensor")].shape[0] as usize;
        for row in outputs[t].chunks(row_len) {
            let scale = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            for v in row {
                let q = v / scale;
                assert!(
                    (q - q.round()).abs() < 1e-3 && q.abs() <= 127.0 + 1e-3,
                    "{name}: {v} not on the grid of {scale}"
                );
            }
        }
    }
    // conv_layers.0.weight is quantized but not pruned; biases are untouched.
    let conv0 = values(&out, "conv_layers.0.weight");
    assert!(conv0.iter().filter(|&&v| v == 0.0).count() < conv0.len() / 20);
    assert_eq!(
        values(&out, "fc_layers.0.bias"),
        original("fc_layers.0.bias")
    );
    // The reported SQNR is the float64 figure of the written values.
    for t in report["tensors"].as_array().expect("tensors") {
        let name = t["name"].as_str().expect("name");
        let (x, y) = (original(name), values(&out, name));
        let signal: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
        let noise: f64 = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let sqnr = 10.0 * (signal / noise).log10();
        let reported = t["fidelity"]["sqnr_db"].as_f64().expect("sqnr");
        assert!(
            (sqnr - reported).abs() < 1e-9 * sqnr.abs(),
            "{name}: {sqnr} vs {reported}"
        );
    }
    // The recipe travels with the model.
    let recipe = out
        .metadata
        .iter()
        .find(|(k, _)| k == "slimscope_recipe")
        .map(|(_, v)| v.clone());
    assert_eq!(recipe, Some(serde_json::json!(RECIPE)));
}

#[test]
fn outputs_are_never_overwritten_without_force_and_never_the_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = run_apply(dir.path());
    let out = dir.path().join("out.safetensors");
    let before = std::fs::read(&out).expect("output");
    let recipe = dir.path().join("r.toml");
    let args = |o: &Path, force: bool| {
        let mut a = vec![
            "apply".to_owned(),
            fixture("digit_cnn.pth").display().to_string(),
            "--recipe".into(),
            recipe.display().to_string(),
            "-o".into(),
            o.display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let run = |a: Vec<String>| slimscope(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, _, stderr) = run(args(&out, false));
    assert_eq!(code, 2);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&out).expect("output"), before, "untouched");
    let (code, _, _) = run(args(&out, true));
    assert_eq!(code, 0);
    let input = fixture("digit_cnn.pth");
    let input_bytes = std::fs::read(&input).expect("input");
    let (code, _, stderr) = run(args(&input, true));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refusing to overwrite the input"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&input).expect("input"), input_bytes);
}

#[test]
fn a_bad_recipe_names_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("bad.toml");
    std::fs::write(&recipe, "version = 1\n\n[[rule]]\nmatch = \"*\"\nprune = { method = \"magnitude\", sparsity = 1.5 }\n").expect("write");
    let out = dir.path().join("o.safetensors");
    let (code, _, stderr) = slimscope(&[
        "apply",
        fixture("digit_cnn.pth").to_str().expect("p"),
        "--recipe",
        recipe.to_str().expect("p"),
        "-o",
        out.to_str().expect("p"),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.toml:5: sparsity must be between 0 and 1, got 1.5"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn a_recipe_made_for_another_model_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("r.toml");
    let run = |sha: &str| {
        std::fs::write(
            &recipe,
            format!("version = 1\n\n[source]\nfile = \"handwriting_model.pth\"\nsha256 = \"{sha}\"\n\n[[rule]]\nmatch = \"fc_layers.0.weight\"\nquant = {{ format = \"f16\" }}\n"),
        )
        .expect("write");
        let out = dir.path().join("o.safetensors");
        let _ = std::fs::remove_file(&out);
        let result = slimscope(&[
            "apply",
            fixture("digit_cnn.pth").to_str().expect("p"),
            "--recipe",
            recipe.to_str().expect("p"),
            "-o",
            out.to_str().expect("p"),
        ]);
        (result, out.exists())
    };
    // The pinned sha256 of the fixture (fixtures.md), and one digit off.
    let right = "325e0773529babe8ebb6adf35a82c64e57c5f3518c2adb975865355c74bc4786";
    let ((code, _, stderr), written) = run(right);
    assert_eq!(code, 0, "{stderr}");
    assert!(written);
    let ((code, _, stderr), written) = run(&right.replace("325e", "325f"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("made for `handwriting_model.pth`") && stderr.contains(right),
        "{stderr}"
    );
    assert!(!written, "nothing written on error");
}

#[test]
fn structured_and_n_m_pruning_report_smaller_shapes_and_flops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        "version = 1\n\n[[rule]]\nmatch = \"fc_layers.0.weight\"\nprune = { method = \"structured\", sparsity = 0.6, axis = 0 }\n\n[[rule]]\nmatch = \"fc_layers.2.weight\"\nprune = { method = \"nm\", n = 2, m = 4 }\n",
    )
    .expect("write");
    let out = dir.path().join("o.safetensors");
    let (code, stdout, stderr) = slimscope(&[
        "apply",
        fixture("digit_cnn.pth").to_str().expect("p"),
        "--recipe",
        recipe.to_str().expect("p"),
        "-o",
        out.to_str().expect("p"),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let tensor = |name: &str| {
        report["tensors"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name).cloned())
            .expect("tensor")
    };
    // 256 neurons, round(0.6 · 256) = 154 removed: 102 remain, over 1152 inputs.
    let fc0 = tensor("fc_layers.0.weight");
    assert_eq!(fc0["shape_after"], serde_json::json!([102, 1152]));
    assert_eq!(
        fc0["flops"],
        serde_json::json!([2 * 256 * 1152, 2 * 102 * 1152])
    );
    // 2:4 halves the multiplies of [10, 256]; it does not change the shape.
    let fc2 = tensor("fc_layers.2.weight");
    assert!(fc2.get("shape_after").is_none());
    assert_eq!(fc2["flops"], serde_json::json!([2 * 10 * 256, 10 * 256]));
    let model = Model::open(&out).expect("output");
    let v = values(&model, "fc_layers.0.weight");
    let zero_rows = v
        .chunks(1152)
        .filter(|r| r.iter().all(|&x| x == 0.0))
        .count();
    assert_eq!(zero_rows, 154);
}

/// Outputs get the mode any new file of the user's gets (0666 less the umask), not
/// the owner-only 0600 of a temporary file.
#[cfg(unix)]
#[test]
fn outputs_are_as_readable_as_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ordinary = dir.path().join("ordinary.txt");
    std::fs::write(&ordinary, "x").expect("write");
    let out = dir.path().join("recipe.toml");
    slimscope::export::write_text(&out, "version = 1\n", false).expect("write_text");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&ordinary));
}

/// A recipe over every packable setting: int4 asymmetric groups (pruned too), int8
/// symmetric channels, int3 symmetric and int6 asymmetric per tensor, f16; and
/// pruned float weights (f32 and f16) for the bitmask format.
const PACKED_RECIPE: &str = r#"version = 1

[[rule]]
regex = 'dense\.weight$|(query|key|value)\.weight$'
quant = { format = "int", bits = 4, symmetric = false, granularity = "group", group_size = 32 }

[[rule]]
match = "encoder.layer.0.intermediate.dense.weight"
prune = { method = "magnitude", sparsity = 0.5 }

[[rule]]
match = "encoder.layer.0.attention.self.query.weight"
quant = { format = "int", bits = 8, granularity = "channel" }

[[rule]]
match = "encoder.layer.1.attention.self.key.weight"
quant = { format = "int", bits = 3, granularity = "tensor" }

[[rule]]
match = "encoder.layer.1.attention.self.value.weight"
quant = { format = "int", bits = 6, symmetric = false, granularity = "tensor" }

[[rule]]
regex = 'layer\.2\..*dense\.weight$'
quant = { format = "f16" }

[[rule]]
match = "encoder.layer.2.output.dense.weight"
prune = { method = "magnitude", sparsity = 0.5 }

[[rule]]
match = "encoder.layer.3.output.dense.weight"
prune = { method = "magnitude", sparsity = 0.7 }
quant = { format = "none" }
"#;

/// Export `model` with `recipe` both ways: the compressed-tensors layout into
/// `dir/ct/model.safetensors` (+ config.json) and the f32 values into
/// `dir/fake.safetensors`; then decode the former with numpy as compressed-tensors
/// does. Returns apply's output for the packed file and the decoder's report.
fn packed_and_fake(model: &Path, recipe: &str, dir: &Path) -> (String, serde_json::Value) {
    let recipe_path = dir.join("r.toml");
    std::fs::write(&recipe_path, recipe).expect("write recipe");
    std::fs::create_dir(dir.join("ct")).expect("mkdir");
    let packed = dir.join("ct/model.safetensors");
    let fake = dir.join("fake.safetensors");
    let apply = |out: &Path, layout: &str| {
        let (code, stdout, stderr) = slimscope(&[
            "apply",
            model.to_str().expect("path"),
            "--recipe",
            recipe_path.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
            "--layout",
            layout,
        ]);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let stdout = apply(&packed, "compressed-tensors");
    apply(&fake, "fake-quant");
    let report = common::reference_script(
        "decode_compressed_tensors.py",
        &[packed.to_str().expect("path"), fake.to_str().expect("path")],
    );
    (stdout, report)
}

/// Every tensor of the packed file reproduces slimscope's f32 export bit for bit
/// when decoded as compressed-tensors decodes it; the stored shapes and types are
/// the layout's; the file holds exactly the bytes the layout prescribes (metadata
/// aside), and the size apply prints is the file's.
fn assert_decodes(stdout: &str, report: &serde_json::Value, packed: &Path) {
    assert_eq!(report["format"], "pack-quantized");
    assert_eq!(report["quantization_status"], "compressed");
    assert_decodes_layout(stdout, report, packed);
}

/// [`assert_decodes`] without the quantization's own keys.
fn assert_decodes_layout(stdout: &str, report: &serde_json::Value, packed: &Path) {
    let tensors = report["tensors"].as_object().expect("tensors");
    let wrong: Vec<_> = tensors.iter().filter(|(_, t)| t["equal"] != true).collect();
    assert!(wrong.is_empty(), "differ from the f32 export: {wrong:?}");
    assert_eq!(report["layout_errors"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["unexpected_tensors"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["quant_method"], "compressed-tensors");
    assert_eq!(
        report["metadata_format"], "pt",
        "transformers needs format=pt"
    );
    assert_eq!(
        report["expected_data_bytes"], report["file_data_bytes"],
        "{report}"
    );
    let size = std::fs::metadata(packed).expect("packed file").len();
    assert_eq!(report["file_bytes"], size);
    let shown = format!("-> {} on disk", slimscope::units::human_bytes(size));
    assert!(stdout.contains(&shown), "{shown} not in {stdout}");
}

#[test]
fn compressed_tensors_export_decodes_to_the_evaluated_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = fixture("minilm/model.safetensors");
    let (stdout, report) = packed_and_fake(&model, PACKED_RECIPE, dir.path());
    assert_decodes(&stdout, &report, &dir.path().join("ct/model.safetensors"));
    let tensors = &report["tensors"];
    let stored = |name: &str| tensors[name]["stored"].as_str().unwrap_or("?").to_owned();
    assert_eq!(
        stored("encoder.layer.0.intermediate.dense.weight"),
        "packed"
    );
    assert_eq!(stored("encoder.layer.2.intermediate.dense.weight"), "F16");
    assert_eq!(stored("encoder.layer.2.output.dense.weight"), "sparse");
    assert_eq!(stored("encoder.layer.3.output.dense.weight"), "sparse");
    assert_eq!(report["sparsity_format"], "sparse-bitmask");
    assert_eq!(stored("embeddings.word_embeddings.weight"), "F32");
    // One config group per setting: int4 asym group 32, int8 channel, int3, int6.
    let groups = report["groups"].as_object().expect("groups");
    let mut settings: Vec<_> = groups
        .values()
        .map(|g| {
            (
                g["bits"].as_u64().unwrap_or(0),
                g["strategy"].as_str().unwrap_or("?").to_owned(),
                g["symmetric"].as_bool(),
                g["modules"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    settings.sort();
    // 6 layers × 6 matrices + the pooler = 37 int tensors; 3 in layer 2 are f16
    // and one in layer 3 is float.
    assert_eq!(
        settings,
        vec![
            (3, "tensor".into(), Some(true), 1),
            (4, "group".into(), Some(false), 30),
            (6, "tensor".into(), Some(false), 1),
            (8, "channel".into(), Some(true), 1),
        ]
    );
    // The model's own config.json, with the quantization_config added.
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("ct/config.json")).expect("config.json"),
    )
    .expect("config JSON");
    assert_eq!(config["model_type"], "bert");
    assert_eq!(config["hidden_size"], 384);
    // Against the f32 export, which keeps the original's size.
    let fake = std::fs::metadata(dir.path().join("fake.safetensors"))
        .expect("fake")
        .len();
    let packed = report["file_bytes"].as_u64().expect("size");
    assert!(packed < fake * 7 / 10, "{packed} vs {fake}");
}

/// The digit CNN: asymmetric int4 per channel on the classifier rows (10 rows, so
/// the packed zero points pad a word), pruned; its 4-D convolutions stay f32 with a
/// note, as compressed-tensors packs only 2-D weights.
#[test]
fn compressed_tensors_pads_zero_points_and_keeps_convolutions_dense() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = r#"version = 1

[[rule]]
match = "*.weight"
prune = { method = "magnitude", sparsity = 0.6 }
quant = { format = "int", bits = 4, symmetric = false, granularity = "channel" }
"#;
    let (stdout, report) = packed_and_fake(&fixture("digit_cnn.pth"), recipe, dir.path());
    assert_decodes(&stdout, &report, &dir.path().join("ct/model.safetensors"));
    assert_eq!(report["tensors"]["fc_layers.2.weight"]["stored"], "packed");
    assert_eq!(report["tensors"]["conv_layers.3.weight"]["stored"], "F32");
    assert!(
        stdout.contains("note: `conv_layers.3.weight`: compressed-tensors packs 2-D"),
        "{stdout}"
    );
    let config = std::fs::read_to_string(dir.path().join("ct/config.json")).expect("config");
    let config: serde_json::Value = serde_json::from_str(&config).expect("JSON");
    // No config.json beside a .pth: the quantization_config alone.
    assert_eq!(config.as_object().map(|c| c.len()), Some(1), "{config}");
}

/// Pruning alone: every pruned weight in the bitmask format and a config that
/// compressed-tensors reads as sparsity without quantization (the method and the
/// sparsity config only).
#[test]
fn compressed_tensors_sparse_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = r#"version = 1

[[rule]]
match = "fc_layers.*.weight"
prune = { method = "magnitude", sparsity = 0.8, scope = "global" }
"#;
    let (stdout, report) = packed_and_fake(&fixture("digit_cnn.pth"), recipe, dir.path());
    assert_decodes_layout(&stdout, &report, &dir.path().join("ct/model.safetensors"));
    assert_eq!(report["tensors"]["fc_layers.0.weight"]["stored"], "sparse");
    assert_eq!(report["tensors"]["fc_layers.2.weight"]["stored"], "sparse");
    let config = std::fs::read_to_string(dir.path().join("ct/config.json")).expect("config");
    let config: serde_json::Value = serde_json::from_str(&config).expect("JSON");
    let qc = config["quantization_config"]
        .as_object()
        .expect("quantization_config");
    let mut keys: Vec<_> = qc.keys().collect();
    keys.sort();
    assert_eq!(keys, ["quant_method", "sparsity_config"]);
    // 80 % of the two layers' 297,472 weights, as the global selection rounds it.
    let sparsity = report["global_sparsity"].as_f64().expect("global sparsity");
    assert!((sparsity - 0.8).abs() < 1e-5, "{sparsity}");
}

/// A layout for a format that has none, an export whose config.json would replace
/// the model's own, and an existing config.json: one line, exit 2, nothing written.
#[test]
fn compressed_tensors_bad_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, PACKED_RECIPE).expect("recipe");
    let minilm = fixture("minilm/model.safetensors");
    let run = |out: &Path| {
        slimscope(&[
            "apply",
            minilm.to_str().expect("path"),
            "--recipe",
            recipe.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
            "--layout",
            "compressed-tensors",
        ])
    };
    let (code, _, stderr) = run(&dir.path().join("m.gguf"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--layout is for .safetensors outputs"),
        "{stderr}"
    );
    // Beside the model: its config.json is an input.
    let beside = minilm.with_file_name("packed-by-test.safetensors");
    let (code, _, stderr) = run(&beside);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refusing to overwrite the input"),
        "{stderr}"
    );
    assert!(!beside.exists());
    // An existing config.json is kept unless --force.
    std::fs::write(dir.path().join("config.json"), "{}").expect("config");
    let out = dir.path().join("model.safetensors");
    let (code, _, stderr) = run(&out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("config.json: already exists"), "{stderr}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}
