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
    // Words, not a type's name.
    assert!(tail.starts_with(" (values, 8 bins, log scale):"), "{tail}");
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

/// Data of the wrong size is called that, not a failed architecture proposal:
/// sklearn's digits have 64 values, and the digit CNN's weights fit, among others,
/// every side from 24 to 31 (hand-derived: three same-padded 3×3 convolutions with 2×2
/// pools floor each side to ⌊⌊⌊s/2⌋/2⌋/2⌋ = 3, and 128 filters × 3 × 3 = 1,152, the
/// first linear layer's inputs), MNIST's 28 among them.
#[test]
fn data_of_another_size_is_named_as_such() {
    let (code, _, stderr) = slimscope(&[
        "eval",
        &path("digit_cnn.pth"),
        "--data",
        &path("digits.csv.gz"),
    ]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the samples have 64 values (1×8×8)")
            && stderr.contains("1×24×24 to 1×31×31")
            && stderr.contains("is the data for this model?"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid setting"), "{stderr}");
}

/// An integer quant with no granularity is per channel (the default the app starts
/// with), as if written out.
#[test]
fn an_integer_quant_defaults_to_per_channel() {
    use slimscope::compress::recipe::Recipe;
    let origin = std::path::Path::new("r.toml");
    let parse = |quant: &str| {
        let text = format!("version = 1\n[[rule]]\nmatch = \"*\"\nquant = {quant}\n");
        let mut r = Recipe::parse(&text, origin).expect("parses");
        r.rules.iter_mut().for_each(|rule| rule.line = None);
        r
    };
    assert_eq!(
        parse("{ format = \"int\", bits = 8 }"),
        parse("{ format = \"int\", bits = 8, granularity = \"channel\" }")
    );
}

/// Weights inside control-flow subgraphs (silero-vad keeps its 2.3 MB in `If`
/// branches) are said, not silently missing: a hand-made ONNX with one main
/// initializer (2 floats), an `If` whose then-branch holds a 4-float initializer and
/// whose else-branch holds a Constant of 3 floats inside a nested `Loop` body: 2
/// hidden tensors of 16 + 12 = 28 bytes.
#[test]
fn weights_inside_subgraphs_are_counted() {
    use common::{field_bytes, field_varint};
    let tensor = |name: &[u8], values: usize| {
        let mut t = Vec::new();
        field_varint(1, values as u64, &mut t);
        field_varint(2, 1, &mut t);
        field_bytes(8, name, &mut t);
        field_bytes(9, &vec![0u8; 4 * values], &mut t);
        t
    };
    let graph_attr = |name: &[u8], graph: &[u8]| {
        let mut a = Vec::new();
        field_bytes(1, name, &mut a);
        field_bytes(6, graph, &mut a);
        a
    };
    let node = |op: &[u8], attrs: &[Vec<u8>]| {
        let mut n = Vec::new();
        field_bytes(4, op, &mut n);
        for a in attrs {
            field_bytes(5, a, &mut n);
        }
        n
    };
    let mut then_branch = Vec::new();
    field_bytes(5, &tensor(b"then_w", 4), &mut then_branch);
    let mut constant_attr = Vec::new();
    field_bytes(1, b"value", &mut constant_attr);
    field_bytes(5, &tensor(b"c", 3), &mut constant_attr);
    let mut loop_body = Vec::new();
    field_bytes(1, &node(b"Constant", &[constant_attr]), &mut loop_body);
    let mut else_branch = Vec::new();
    field_bytes(
        1,
        &node(b"Loop", &[graph_attr(b"body", &loop_body)]),
        &mut else_branch,
    );
    let mut graph = Vec::new();
    field_bytes(
        1,
        &node(
            b"If",
            &[
                graph_attr(b"then_branch", &then_branch),
                graph_attr(b"else_branch", &else_branch),
            ],
        ),
        &mut graph,
    );
    field_bytes(5, &tensor(b"main_w", 2), &mut graph);
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_bytes(7, &graph, &mut model);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control_flow.onnx");
    std::fs::write(&path, model).expect("write");
    let (code, stdout, stderr) = slimscope(&["inspect", path.to_str().expect("path"), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        report["tensors"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["metadata"]["subgraph_weights"],
        "2 tensors, 28 B inside If/Loop/Scan subgraphs: not listed, not compressed",
        "{report}"
    );
}
