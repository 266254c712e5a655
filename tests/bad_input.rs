//! Bad input never panics, aborts or hangs: every case below is a clear error that
//! names the file and the problem (the CLI exits with code 2 and says it on stderr),
//! or, for odd but valid data (NaN weights, empty tensors), a clear report.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{field_bytes, field_varint, fixture, slimscope};
use slimscope::{Error, Model, StatsOptions};

/// A fresh temporary directory for one test's files.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// Opening `path` fails with a message naming the file and containing `problem`, and
/// `slimscope inspect` exits with code 2 and the same message on stderr.
fn assert_clear_error(path: &Path, problem: &str) -> Error {
    let err = Model::open(path).expect_err("bad input must not open");
    let message = err.to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    assert!(
        message.contains(name),
        "error does not name the file: {message}"
    );
    assert!(
        message.contains(problem),
        "error does not say `{problem}`: {message}"
    );
    let (code, stdout, stderr) = slimscope(&["inspect", path.to_str().expect("utf-8 path")]);
    assert_eq!(code, 2, "exit code for {message}; stderr: {stderr}");
    assert!(stdout.is_empty(), "nothing on stdout on error: {stdout}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(name) && stderr.contains(problem),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "a panic escaped: {stderr}");
    err
}

// ---- tiny writers for hand-made files ----------------------------------------------

/// A safetensors file from (name, dtype, shape, data) entries, with `header_extra`
/// JSON appended inside the header object.
fn safetensors(tensors: &[(&str, &str, &[u64], &[u8])]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (k, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        let begin = data.len();
        data.extend_from_slice(bytes);
        if k > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}",
            data.len()
        ));
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn f32s(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// GGUF v3 bytes: no metadata, the given tensor infos (raw name bytes, ne, type,
/// offset), then `data` after 32-byte alignment.
fn gguf(tensor_count: u64, infos: &[(&[u8], &[u64], u32, u64)], data: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensor_count.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    for (name, ne, ty, offset) in infos {
        out.extend((name.len() as u64).to_le_bytes());
        out.extend(*name);
        out.extend((ne.len() as u32).to_le_bytes());
        ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.extend(data);
    out
}

/// An ONNX model with one FLOAT initializer of `dims` holding `raw` bytes.
fn onnx_with_initializer(dims: &[u64], raw: &[u8]) -> Vec<u8> {
    let mut tensor = Vec::new();
    dims.iter().for_each(|&d| field_varint(1, d, &mut tensor));
    field_varint(2, 1, &mut tensor);
    field_bytes(8, b"w", &mut tensor);
    field_bytes(9, raw, &mut tensor);
    let mut graph = Vec::new();
    field_bytes(5, &tensor, &mut graph);
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_bytes(7, &graph, &mut model);
    model
}

fn truncated_copy(dir: &Path, fixture_name: &str, keep: usize) -> PathBuf {
    let bytes = std::fs::read(fixture(fixture_name)).expect("read fixture");
    write(
        dir,
        &format!("truncated_{}", fixture_name.replace('/', "_")),
        &bytes[..keep.min(bytes.len())],
    )
}

// ---- truncated files ---------------------------------------------------------------

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = tempdir();
    assert_clear_error(
        &truncated_copy(dir.path(), "minilm.safetensors", 1_000_000),
        "truncated",
    );
    assert_clear_error(
        &truncated_copy(dir.path(), "minilm.safetensors", 100),
        "header claims",
    );
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let dir = tempdir();
    let path = truncated_copy(dir.path(), "smollm2_q4_1.gguf", 5_000_000);
    assert!(matches!(
        assert_clear_error(&path, "but the file holds"),
        Error::TensorOutOfBounds { .. }
    ));
    // Cut inside the tensor infos, and so short that the counts are lies.
    assert_clear_error(
        &truncated_copy(dir.path(), "smollm2_q4_1.gguf", 1_780_000),
        "header ends early",
    );
    assert_clear_error(
        &truncated_copy(dir.path(), "smollm2_q4_1.gguf", 1000),
        "more than a 1000-byte file",
    );
}

#[test]
fn truncated_pth_is_a_clear_error() {
    let dir = tempdir();
    assert_clear_error(
        &truncated_copy(dir.path(), "digit_cnn.pth", 700_000),
        "not a valid",
    );
}

#[test]
fn truncated_onnx_is_a_clear_error() {
    let dir = tempdir();
    assert_clear_error(
        &truncated_copy(dir.path(), "ppocr_cls.onnx", 300_000),
        "protobuf decoding failed",
    );
}

#[test]
fn truncated_npz_and_npy_are_clear_errors() {
    let dir = tempdir();
    assert_clear_error(
        &truncated_copy(dir.path(), "sample.npz", 4000),
        "not a valid",
    );
    let npy = truncated_copy(dir.path(), "sample_half.npy", 200);
    assert!(matches!(
        assert_clear_error(&npy, "but the file holds"),
        Error::TensorOutOfBounds { .. }
    ));
}

// ---- headers that claim absurd sizes or offsets ------------------------------------

#[test]
fn safetensors_header_claiming_absurd_length_is_a_clear_error() {
    let dir = tempdir();
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend(b"{}");
    assert_clear_error(
        &write(dir.path(), "huge_header.safetensors", &bytes),
        "header claims",
    );
}

#[test]
fn safetensors_offsets_beyond_the_data_are_a_clear_error() {
    let dir = tempdir();
    let header = r#"{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 16]);
    assert_clear_error(
        &write(dir.path(), "bad_offsets.safetensors", &bytes),
        "safetensors",
    );
}

#[test]
fn gguf_claiming_absurd_tensor_count_is_a_clear_error() {
    let dir = tempdir();
    let bytes = gguf(1 << 60, &[], &[]);
    assert_clear_error(&write(dir.path(), "count.gguf", &bytes), "more than a");
}

#[test]
fn gguf_tensor_offset_beyond_the_file_is_a_clear_error() {
    let dir = tempdir();
    let bytes = gguf(1, &[(b"w", &[32], 0, 1 << 40)], &[0u8; 128]);
    let err = assert_clear_error(
        &write(dir.path(), "offset.gguf", &bytes),
        "but the file holds",
    );
    assert!(matches!(err, Error::TensorOutOfBounds { ref name, .. } if name == "w"));
}

#[test]
fn gguf_shape_that_overflows_is_a_clear_error() {
    let dir = tempdir();
    let bytes = gguf(1, &[(b"w", &[1 << 40, 1 << 40], 0, 0)], &[]);
    assert_clear_error(&write(dir.path(), "overflow.gguf", &bytes), "absurd");
}

#[test]
fn gguf_metadata_array_claiming_absurd_length_is_a_clear_error() {
    let dir = tempdir();
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(4u64.to_le_bytes());
    bytes.extend(b"toks");
    bytes.extend(9u32.to_le_bytes()); // array
    bytes.extend(8u32.to_le_bytes()); // of strings
    bytes.extend(u64::MAX.to_le_bytes());
    assert_clear_error(&write(dir.path(), "array.gguf", &bytes), "claims an array");
}

#[test]
fn gguf_with_unsupported_block_type_is_listed_without_statistics() {
    // IQ2_XXS (type 16): listed with its size, but no dequantizer — not a refusal.
    let dir = tempdir();
    let bytes = gguf(1, &[(b"iq", &[256], 16, 0)], &[0u8; 66]);
    let path = write(dir.path(), "iq.gguf", &bytes);
    let model = Model::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (model.tensors[0].dtype.name(), model.tensors[0].size_bytes),
        ("IQ2_XXS", 66)
    );
    let err = model
        .tensor_stats(0, &StatsOptions::default())
        .expect_err("no decoder");
    assert!(
        err.to_string().contains("iq.gguf") && err.to_string().contains("IQ2_XXS"),
        "{err}"
    );
    let (code, _, stderr) = slimscope(&["inspect", path.to_str().expect("path")]);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("warning") && stderr.contains("statistics unavailable"),
        "{stderr}"
    );
}

#[test]
fn onnx_tensor_whose_data_does_not_fit_its_shape_is_a_clear_error() {
    let dir = tempdir();
    let bytes = onnx_with_initializer(&[1_000_000_000], &[0, 0, 128, 63]);
    assert_clear_error(&write(dir.path(), "short.onnx", &bytes), "needs 4000000000");
}

#[test]
fn npy_header_with_absurd_shape_is_a_clear_error() {
    let dir = tempdir();
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((dict.len() as u16).to_le_bytes());
    bytes.extend(dict.as_bytes());
    bytes.extend([0u8; 8]);
    assert_clear_error(&write(dir.path(), "huge.npy", &bytes), "but the file holds");
}

#[test]
fn hostile_pickle_inside_a_pth_zip_is_a_clear_error() {
    let dir = tempdir();
    let path = dir.path().join("hostile.pth");
    let file = std::fs::File::create(&path).expect("create");
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).expect("entry");
    // PROTO 2, then GLOBAL os.system and garbage: must be refused, never executed.
    zip.write_all(b"\x80\x02cos\nsystem\n\x85\xff\xfe")
        .expect("write");
    zip.finish().expect("finish");
    assert_clear_error(&path, "not a valid PyTorch checkpoint");
}

// ---- not a model at all --------------------------------------------------------------

#[test]
fn unknown_format_is_a_clear_error() {
    let dir = tempdir();
    let path = write(dir.path(), "notes.bin", b"hello, this is not a model\n");
    assert!(matches!(
        assert_clear_error(&path, "unknown model format"),
        Error::UnknownFormat { .. }
    ));
}

#[test]
fn a_directory_is_a_clear_error() {
    let dir = tempdir();
    let sub = dir.path().join("model_dir");
    std::fs::create_dir(&sub).expect("mkdir");
    assert!(matches!(
        assert_clear_error(&sub, "is a directory"),
        Error::IsDirectory { .. }
    ));
}

#[test]
fn a_zero_length_file_is_a_clear_error() {
    let dir = tempdir();
    let path = write(dir.path(), "empty.safetensors", b"");
    assert!(matches!(
        assert_clear_error(&path, "empty"),
        Error::EmptyFile { .. }
    ));
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = tempdir();
    assert_clear_error(&dir.path().join("nowhere.gguf"), "No such file");
}

#[test]
fn non_utf8_tensor_names_are_clear_errors() {
    let dir = tempdir();
    let bytes = gguf(1, &[(b"w\xff\xfe", &[32], 0, 0)], &[0u8; 128]);
    assert_clear_error(&write(dir.path(), "name.gguf", &bytes), "not valid UTF-8");
    // A safetensors header must be UTF-8 JSON.
    let header = b"{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend(header);
    st.extend([0u8; 4]);
    assert_clear_error(&write(dir.path(), "name.safetensors", &st), "safetensors");
}

// ---- odd but valid data: reported, not refused ----------------------------------------

#[test]
fn nan_and_inf_weights_are_counted_and_reported() {
    let dir = tempdir();
    let values = [1.0, f32::NAN, 3.0, f32::INFINITY, -1.0, f32::NEG_INFINITY];
    let bytes = safetensors(&[("w", "F32", &[2, 3], &f32s(&values))]);
    let path = write(dir.path(), "nan.safetensors", &bytes);
    let model = Model::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let s = model
        .tensor_stats(0, &StatsOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.nan, s.inf, s.min, s.max, s.mean), (1, 2, -1.0, 3.0, 1.0));
    assert_eq!(s.histogram.map(|h| h.total()), Some(3));
    let (code, stdout, stderr) = slimscope(&["inspect", path.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("nan.safetensors") && stderr.contains("1 NaN and 2 infinite"),
        "{stderr}"
    );
    assert!(stdout.contains("w "), "{stdout}");
}

#[test]
fn zero_element_tensors_open_and_report_empty() {
    let dir = tempdir();
    let bytes = safetensors(&[
        ("empty", "F32", &[0, 4], &[]),
        ("one", "F16", &[1], &[0, 60]),
    ]);
    let path = write(dir.path(), "zero.safetensors", &bytes);
    let model = Model::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let s = model
        .tensor_stats(0, &StatsOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.count, 0);
    assert!(s.histogram.is_none());
    let one = model
        .tensor_stats(1, &StatsOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((one.min, one.max), (1.0, 1.0), "f16 0x3c00 is 1.0");
    let (code, stdout, _) = slimscope(&["inspect", "--json", path.to_str().expect("path")]);
    assert_eq!(code, 0);
    let json: serde_json::Value =
        serde_json::from_str(&stdout).expect("valid JSON even with NaN figures");
    assert_eq!(json["tensors"][0]["stats"]["count"], 0);
    assert!(json["tensors"][0]["stats"]["mean"].is_null());
}

#[test]
fn bad_bins_setting_is_a_clear_error() {
    let (code, _, stderr) = slimscope(&[
        "inspect",
        "--bins",
        "0",
        fixture("digit_cnn.pth").to_str().expect("path"),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bins"), "{stderr}");
}

// ---- data sets and settings: refused in one line, never reinterpreted -----------------

/// A data spec in `dir` for `file` with the digit CNN's preprocessing and `extra` lines.
fn digit_spec(dir: &Path, file: &Path, extra: &str) -> PathBuf {
    let spec = dir.join("data.toml");
    std::fs::write(
        &spec,
        format!(
            "file = {file:?}\nlabel = \"last\"\ndivide = 255.0\nmean = [0.1307]\nstd = [0.3081]\n{extra}\n"
        ),
    )
    .expect("write spec");
    spec
}

fn eval_digit_cnn(data: &Path) -> (i32, String, String) {
    slimscope(&[
        "eval",
        fixture("digit_cnn.pth").to_str().expect("path"),
        "--data",
        data.to_str().expect("path"),
    ])
}

/// CSV rows of 784 pixel values and a label.
fn digit_rows(rows: &[(Vec<String>, u32)]) -> String {
    rows.iter()
        .map(|(pixels, label)| format!("{},{label}\n", pixels.join(",")))
        .collect()
}

fn zero_pixels() -> Vec<String> {
    vec!["0".to_owned(); 784]
}

#[test]
fn a_data_shape_that_does_not_match_the_models_input_is_refused() {
    let dir = tempdir();
    let csv = write(
        dir.path(),
        "two.csv",
        digit_rows(&[(zero_pixels(), 1), (zero_pixels(), 7)]).as_bytes(),
    );
    let spec = digit_spec(dir.path(), &csv, "shape = [1, 14, 56]");
    let (code, _, stderr) = eval_digit_cnn(&spec);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("shape [1, 14, 56] but the model takes [1, 28, 28]"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_data_set_without_samples_is_refused_not_scored_zero() {
    let dir = tempdir();
    let header = (0..784)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(",")
        + ",label\n";
    let csv = write(dir.path(), "header_only.csv", header.as_bytes());
    let (code, _, stderr) = eval_digit_cnn(&digit_spec(dir.path(), &csv, "shape = [1, 28, 28]"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("header_only.csv") && stderr.contains("no samples"),
        "{stderr}"
    );
    let csv = write(
        dir.path(),
        "two.csv",
        digit_rows(&[(zero_pixels(), 1), (zero_pixels(), 7)]).as_bytes(),
    );
    let (code, _, stderr) = eval_digit_cnn(&digit_spec(
        dir.path(),
        &csv,
        "shape = [1, 28, 28]\nlimit = 0",
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("limit = 0"), "{stderr}");
}

#[test]
fn zero_sized_shapes_are_refused_not_divided_by() {
    let dir = tempdir();
    let csv = write(
        dir.path(),
        "two.csv",
        digit_rows(&[(zero_pixels(), 1), (zero_pixels(), 7)]).as_bytes(),
    );
    let (code, _, stderr) = eval_digit_cnn(&digit_spec(dir.path(), &csv, "shape = [0, 28, 28]"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a sample shape"), "{stderr}");
}

#[test]
fn nan_and_inf_features_are_counted_in_a_warning() {
    let dir = tempdir();
    let mut odd = zero_pixels();
    odd[3] = "nan".into();
    odd[9] = "inf".into();
    odd[10] = "-inf".into();
    let csv = write(
        dir.path(),
        "odd.csv",
        digit_rows(&[(odd, 1), (zero_pixels(), 7)]).as_bytes(),
    );
    let (code, _, stderr) = eval_digit_cnn(&digit_spec(dir.path(), &csv, "shape = [1, 28, 28]"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("1 NaN and 2 ±inf feature values"),
        "{stderr}"
    );
}

#[test]
fn idx_files_of_every_element_type_are_read_and_unknown_types_refused() {
    let dir = tempdir();
    // Two 2×2 float32 (type 0x0D) images, big-endian, and two u8 labels.
    let values = [0.5f32, -1.25, 3.0, 255.0, 1.0, 2.0, 4.0, 8.0];
    let mut images = vec![0, 0, 0x0d, 3];
    for d in [2u32, 2, 2] {
        images.extend(d.to_be_bytes());
    }
    values.iter().for_each(|v| images.extend(v.to_be_bytes()));
    let mut labels = vec![0, 0, 0x08, 1];
    labels.extend(2u32.to_be_bytes());
    labels.extend([3, 9]);
    write(dir.path(), "images.idx", &images);
    write(dir.path(), "labels.idx", &labels);
    let spec = write(
        dir.path(),
        "idx.toml",
        b"file = \"images.idx\"\nlabels = \"labels.idx\"\n",
    );
    let data = slimscope::eval::data::load(&spec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.x, values, "float IDX values, as written");
    assert_eq!(data.labels, [3, 9]);
    assert_eq!(data.sample_shape, [2, 2]);
    images[2] = 0x0a;
    write(dir.path(), "images.idx", &images);
    let err = slimscope::eval::data::load(&spec).expect_err("type 0x0a is not IDX");
    assert!(
        err.to_string().contains("unknown IDX element type 0x0a"),
        "{err}"
    );
}

#[test]
fn a_data_spec_never_echoes_the_file_it_names() {
    let dir = tempdir();
    let secret = write(dir.path(), "secret.txt", b"a,b,c\nhunter2-password,x,y\n");
    let spec = write(
        dir.path(),
        "spec.toml",
        format!("file = {secret:?}\n").as_bytes(),
    );
    let err = slimscope::eval::data::load(&spec).expect_err("not a data set");
    assert!(
        !err.to_string().contains("hunter2"),
        "the error echoes the file: {err}"
    );
    assert!(err.to_string().contains("secret.txt"), "{err}");
}

#[test]
fn levels_out_of_range_and_absurd_ranges_are_refused_before_measuring() {
    let model = fixture("digit_cnn.pth");
    let m = model.to_str().expect("path");
    for (args, says) in [
        (
            vec!["--per-layer", "--layer-sparsity", "5"],
            "outside 0–0.99",
        ),
        (vec!["--sparsity", "0:inf:1"], "finite"),
        (vec!["--sparsity", "0:0.9:1e-12"], "more than 1000 levels"),
        (vec!["--sparsity", "nan"], "finite"),
    ] {
        let mut all = vec!["sweep", m, "--bits", ""];
        all.extend(&args);
        let (code, _, stderr) = slimscope(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn generating_past_the_context_is_refused() {
    let (code, _, stderr) = slimscope(&[
        "generate",
        fixture("smollm2_q4_1.gguf").to_str().expect("path"),
        "--prompt",
        "Hello",
        "-n",
        "18446744073709551615",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("longer than the 4096 positions"),
        "{stderr}"
    );
}

#[test]
fn a_huge_match_pattern_is_refused() {
    let dir = tempdir();
    let recipe = write(
        dir.path(),
        "huge.toml",
        format!("version = 1\n\n[[rule]]\nmatch = \"{}\"\nprune = {{ method = \"magnitude\", sparsity = 0.5 }}\n", "a*".repeat(500_000)).as_bytes(),
    );
    let (code, _, stderr) = slimscope(&[
        "apply",
        fixture("digit_cnn.pth").to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "-o",
        dir.path().join("out.safetensors").to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at most 4096"), "{stderr}");
    assert!(stderr.len() < 2000, "the error echoes the whole pattern");
}

#[test]
fn escape_bytes_in_names_never_reach_the_terminal() {
    let dir = tempdir();
    // The header spells the control characters as JSON escapes; the name holds them raw.
    let bytes = safetensors(&[(
        "evil\\u001b]0;title\\u0007\\u001b[2J",
        "F32",
        &[1],
        &f32s(&[1.0]),
    )]);
    let path = write(dir.path(), "evil.safetensors", &bytes);
    let (code, stdout, stderr) = slimscope(&["inspect", path.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains("evil\\u{1b}]0;title\\u{7}\\u{1b}[2J"),
        "{stdout}"
    );
    let (code, _, stderr) = slimscope(&[
        "inspect",
        path.to_str().expect("path"),
        "--histogram",
        "nothing\u{1b}[2J",
    ]);
    assert_eq!(code, 2);
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[cfg(unix)]
#[test]
fn a_sentence_encoders_companion_files_may_not_lead_outside_its_folder() {
    let dir = tempdir();
    let model = dir.path().join("model.safetensors");
    std::os::unix::fs::symlink(fixture("minilm/model.safetensors"), &model).expect("link");
    std::fs::copy(
        fixture("minilm/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy");
    // config.json is a link to a file elsewhere: it must not be read.
    std::os::unix::fs::symlink(
        fixture("minilm/config.json"),
        dir.path().join("config.json"),
    )
    .expect("link");
    let (code, _, stderr) = slimscope(&["embed", model.to_str().expect("path")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("config.json") && stderr.contains("outside the model's folder"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[cfg(unix)]
#[test]
fn pipes_and_devices_are_refused_without_blocking() {
    let dir = tempdir();
    let fifo = dir.path().join("model.safetensors");
    let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("c path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let f = fifo.to_str().expect("utf-8");
    let cnn = fixture("digit_cnn.pth");
    let cnn = cnn.to_str().expect("utf-8");
    for args in [
        vec!["inspect", f],
        vec!["inspect", "/dev/zero"],
        vec!["eval", cnn, "--data", f],
        vec!["apply", cnn, "--recipe", f, "-o", "/nonexistent/x.gguf"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_slimscope"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run slimscope");
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} blocked on a pipe or device");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
}
