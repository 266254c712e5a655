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
