//! Shared helpers for the integration tests: the real fixtures (fetched once per
//! machine by tests/fixtures/fetch.py, under a file lock so parallel test binaries
//! wait for one another) and their independent reference facts.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The fixture cache directory, fetching the fixtures first if needed.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var_os("SLIMSCOPE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target").join("fixtures"));
        std::fs::create_dir_all(&dir).expect("create the fixture directory");
        let lock = File::create(dir.join(".lock")).expect("create the fixture lock");
        lock.lock().expect("lock the fixture directory");
        let status = Command::new("python3")
            .arg(root.join("tests/fixtures/fetch.py"))
            .env("SLIMSCOPE_FIXTURES", &dir)
            .status()
            .expect("run python3 tests/fixtures/fetch.py");
        assert!(status.success(), "fetching the fixtures failed ({status})");
        dir
    })
}

/// A fixture file's path.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The digit CNN as fixtures.md describes it, written by hand.
pub const CNN_ARCH: &str = r#"version = 1
input = [1, 28, 28]

[[layer]]
op = "conv2d"
weight = "conv_layers.0.weight"
bias = "conv_layers.0.bias"
padding = 1
[[layer]]
op = "relu"
[[layer]]
op = "maxpool"
kernel = 2

[[layer]]
op = "conv2d"
weight = "conv_layers.3.weight"
bias = "conv_layers.3.bias"
padding = 1
[[layer]]
op = "relu"
[[layer]]
op = "maxpool"
kernel = 2

[[layer]]
op = "conv2d"
weight = "conv_layers.6.weight"
bias = "conv_layers.6.bias"
padding = 1
[[layer]]
op = "relu"
[[layer]]
op = "maxpool"
kernel = 2

[[layer]]
op = "flatten"
[[layer]]
op = "linear"
weight = "fc_layers.0.weight"
bias = "fc_layers.0.bias"
[[layer]]
op = "relu"
[[layer]]
op = "dropout"
[[layer]]
op = "linear"
weight = "fc_layers.2.weight"
bias = "fc_layers.2.bias"
"#;

/// A data spec in `dir` for the fixture copy of mnist_5k, with the digit CNN's
/// preprocessing (fixtures.md): x/255, then (x − 0.1307)/0.3081, as 1×28×28.
pub fn mnist_spec(dir: &Path) -> PathBuf {
    let spec = dir.join("mnist.toml");
    std::fs::write(
        &spec,
        format!(
            "file = {:?}\nlabel = \"last\"\ndivide = 255.0\nmean = [0.1307]\nstd = [0.3081]\nshape = [1, 28, 28]\n",
            fixture("mnist_5k.csv.gz")
        ),
    )
    .expect("write the mnist data spec");
    spec
}

/// The values of tensor `index` of fixture `file`, as f32 (for F32 tensors).
pub fn fixture_f32s(file: &str, index: usize) -> Vec<f32> {
    let model = slimscope::Model::open(fixture(file)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        model.tensors[index].dtype,
        slimscope::DType::F32,
        "{file}: not an F32 tensor"
    );
    model.tensor_f32(index).unwrap_or_else(|e| panic!("{e}"))
}

/// reference.json: facts computed by numpy / gguf-py / onnx.
pub fn reference() -> &'static serde_json::Value {
    static REF: OnceLock<serde_json::Value> = OnceLock::new();
    REF.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("reference.json"))
            .expect("read reference.json");
        serde_json::from_str(&text).expect("parse reference.json")
    })
}

/// Run the `slimscope` binary; returns (exit code, stdout, stderr).
pub fn slimscope(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slimscope"))
        .args(args)
        .output()
        .expect("run slimscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run one of the fixture step's reference scripts (`tests/fixtures/NAME`) in the
/// pinned reference virtualenv and parse the JSON it prints.
#[allow(dead_code)]
pub fn reference_script(name: &str, args: &[&str]) -> serde_json::Value {
    let python = fixtures().join("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name} output: {e}"))
}

/// Protobuf encoding helpers, for hand-made ONNX files.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
pub fn field_bytes(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend(bytes);
}

/// A varint protobuf field.
pub fn field_varint(tag: u64, v: u64, out: &mut Vec<u8>) {
    varint(tag << 3, out);
    varint(v, out);
}
