//! The command line as a user runs it: JSON shape, text output, exit codes.

mod common;

use common::{fixture, slimscope};

fn path(name: &str) -> String {
    fixture(name).to_str().expect("utf-8 path").to_owned()
}

#[test]
fn inspect_json_has_the_documented_shape() {
    let (code, stdout, stderr) =
        slimscope(&["inspect", "--json", "--bins", "64", &path("digit_cnn.pth")]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    assert_eq!(json["format"], "pth");
    assert!(json["metadata"].is_object());
    assert_eq!(json["totals"]["params"], 390_410);
    let tensors = json["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), 10);
    let fc = tensors
        .iter()
        .find(|t| t["name"] == "fc_layers.0.weight")
        .expect("fc_layers.0.weight");
    assert_eq!(fc["shape"], serde_json::json!([256, 1152]));
    assert_eq!(fc["dtype"], "F32");
    assert_eq!(fc["params"], 294_912);
    assert_eq!(fc["bytes"], 294_912 * 4);
    for key in [
        "min",
        "max",
        "mean",
        "std",
        "mean_abs",
        "zeros",
        "zero_fraction",
        "beyond_3_sigma",
        "beyond_6_sigma",
        "nan",
        "inf",
    ] {
        assert!(
            fc["stats"][key].is_number(),
            "stats.{key} missing: {}",
            fc["stats"]
        );
    }
    let counts = fc["histogram"]["counts"].as_array().expect("counts");
    assert_eq!(counts.len(), 64);
    assert_eq!(
        counts
            .iter()
            .map(|c| c.as_u64().expect("count"))
            .sum::<u64>(),
        294_912
    );
    assert_eq!(fc["histogram"]["min"], fc["stats"]["min"]);
    assert_eq!(fc["histogram"]["max"], fc["stats"]["max"]);
    assert_eq!(json["layers"][0]["name"], "conv_layers.0");
    assert_eq!(json["layers"][0]["tensors"], serde_json::json!([0, 1]));
}

#[test]
fn inspect_abs_histograms_magnitudes_from_zero() {
    let (code, stdout, _) = slimscope(&["inspect", "--json", "--abs", &path("digit_cnn.pth")]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let h = &json["tensors"][0]["histogram"];
    assert_eq!(h["range"], "abs");
    assert_eq!(h["min"], 0.0);
    let s = &json["tensors"][0]["stats"];
    let max_abs = s["min"]
        .as_f64()
        .expect("min")
        .abs()
        .max(s["max"].as_f64().expect("max").abs());
    assert_eq!(h["max"].as_f64(), Some(max_abs));
}

#[test]
fn inspect_table_lists_every_tensor_and_the_totals() {
    let (code, stdout, _) = slimscope(&["inspect", &path("smollm2_q4_1.gguf")]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("272 tensors in 32 layers, 134515008 parameters"),
        "{}",
        &stdout[..400]
    );
    assert!(stdout.contains("blk.29.ffn_down.weight"));
    assert!(stdout.contains("general.architecture = \"llama\""));
}

#[test]
fn inspect_draws_one_histogram_as_text() {
    let (code, stdout, _) = slimscope(&[
        "inspect",
        &path("digit_cnn.pth"),
        "--bins",
        "8",
        "--histogram",
        "fc_layers.2.weight",
        "--log",
    ]);
    assert_eq!(code, 0);
    let tail = stdout
        .split("histogram of `fc_layers.2.weight`")
        .nth(1)
        .expect("histogram section");
    assert_eq!(tail.lines().filter(|l| l.contains('#')).count(), 8);
    let (code, _, stderr) = slimscope(&["inspect", &path("digit_cnn.pth"), "--histogram", "nope"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no tensor named `nope`"), "{stderr}");
}

#[test]
fn unknown_flags_are_usage_errors() {
    let (code, _, stderr) = slimscope(&["inspect", "--frobnicate", "x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--frobnicate"));
}
