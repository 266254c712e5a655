//! Every real fixture opens, and every tensor's listing and statistics agree with
//! facts computed independently (numpy float64 over arrays read by gguf-py, onnx,
//! safetensors' numpy API and a torch-free unpickler; see tests/fixtures/reference.py),
//! plus the published facts in ../shared/fixtures.md.

mod common;

use common::{fixture, reference};
use slimscope::dtype::decode;
use slimscope::{DType, Format, Model, StatsOptions};

/// Sums in a different order differ by a few ulps of the sum; relative to the
/// spread of the values that is far below this.
const MEAN_TOL: f64 = 1e-9;
/// std comes from float64 Σx² − n·mean²: relative error ~1e-12 on these data.
const STD_REL_TOL: f64 = 1e-7;

fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::F16 => "float16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::Bool => "bool",
        other => other.name(),
    }
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("reference lacks {key}: {v}"))
}

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("reference lacks {key}: {v}"))
}

/// Check one model file against its reference entry.
fn check_model(file: &str) {
    let reference = &reference()["models"][file];
    let model = Model::open(fixture(file)).unwrap_or_else(|e| panic!("{e}"));
    let tensors = reference["tensors"].as_array().expect("tensor list");
    assert_eq!(model.tensors.len(), tensors.len(), "{file}: tensor count");
    let params: u64 = model.tensors.iter().map(|t| t.numel).sum();
    assert_eq!(params, u(reference, "params"), "{file}: parameter count");
    let options = StatsOptions::default();
    for r in tensors {
        let name = r["name"].as_str().expect("name");
        let ctx = format!("{file}: `{name}`");
        let i = model
            .tensor_index(name)
            .unwrap_or_else(|| panic!("{ctx}: missing"));
        let t = &model.tensors[i];
        let shape: Vec<u64> = r["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .collect();
        assert_eq!(t.shape, shape, "{ctx}: shape");
        let dtype = if model.format == Format::Gguf {
            t.dtype.name()
        } else {
            numpy_name(t.dtype)
        };
        assert_eq!(dtype, r["dtype"].as_str().expect("dtype"), "{ctx}: dtype");
        assert_eq!(t.numel, u(r, "count"), "{ctx}: count");
        if let Some(offset) = r["offset"].as_u64() {
            assert_eq!(t.origin.offset, Some(offset), "{ctx}: file offset");
            assert_eq!(t.size_bytes, u(r, "bytes"), "{ctx}: bytes");
        }
        // The first values, decoded by our readers, equal the independent reader's.
        let bytes = model.tensor_bytes(i).unwrap_or_else(|e| panic!("{e}"));
        let first: Vec<f64> = r["first"]
            .as_array()
            .expect("first")
            .iter()
            .map(|v| v.as_f64().expect("value"))
            .collect();
        if !first.is_empty() {
            let (block, block_bytes) = t.dtype.block().expect("known layout");
            let n = (block as usize).max(first.len()).min(t.numel as usize);
            let n = n.div_ceil(block as usize) * block as usize;
            let mut out = vec![0f32; n];
            decode(
                t.dtype,
                &bytes[..(n / block as usize) * block_bytes as usize],
                &mut out,
            );
            for (k, (ours, theirs)) in out.iter().zip(&first).enumerate() {
                let ours = f64::from(*ours);
                let tol = if t.dtype == DType::F64 {
                    1e-7 * theirs.abs()
                } else {
                    0.0
                };
                assert!(
                    (ours - theirs).abs() <= tol,
                    "{ctx}: value {k}: {ours} vs {theirs}"
                );
            }
        }
        let s = model
            .tensor_stats(i, &options)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.count, t.numel, "{ctx}");
        if r.get("min").is_none() {
            assert!(
                s.histogram.is_none(),
                "{ctx}: no finite values, no histogram"
            );
            continue;
        }
        assert_eq!(s.nan + s.inf, u(r, "non_finite"), "{ctx}: non-finite");
        let f64_data = t.dtype == DType::F64;
        let exact = |ours: f64, theirs: f64, what: &str| {
            let tol = if f64_data { 1e-7 * theirs.abs() } else { 0.0 };
            assert!(
                (ours - theirs).abs() <= tol,
                "{ctx}: {what} {ours} vs {theirs}"
            );
        };
        exact(s.min, f(r, "min"), "min");
        exact(s.max, f(r, "max"), "max");
        let spread = f(r, "std") + f(r, "mean").abs() + f64::MIN_POSITIVE;
        let tol = if f64_data { 1e-7 } else { MEAN_TOL };
        assert!(
            (s.mean - f(r, "mean")).abs() <= tol * spread,
            "{ctx}: mean {} vs {}",
            s.mean,
            f(r, "mean")
        );
        assert!(
            (s.mean_abs - f(r, "mean_abs")).abs() <= tol * spread,
            "{ctx}: mean |w|"
        );
        assert!(
            (s.std - f(r, "std")).abs() <= STD_REL_TOL.max(tol) * spread,
            "{ctx}: std {} vs {}",
            s.std,
            f(r, "std")
        );
        assert_eq!(s.zeros, u(r, "zeros"), "{ctx}: zeros");
        if !f64_data {
            assert_eq!(s.beyond_3_sigma, u(r, "beyond_3_sigma"), "{ctx}: >3σ");
            assert_eq!(s.beyond_6_sigma, u(r, "beyond_6_sigma"), "{ctx}: >6σ");
        }
        let h = s.histogram.as_ref().expect("histogram");
        assert_eq!(
            h.total(),
            s.count - s.nan - s.inf,
            "{ctx}: histogram sums to the finite count"
        );
        if let (Some(counts), false) = (r["histogram"].as_array(), f64_data) {
            let theirs: Vec<u64> = counts.iter().map(|c| c.as_u64().expect("count")).collect();
            assert_eq!(h.counts, theirs, "{ctx}: histogram differs from numpy's");
        }
    }
}

#[test]
fn digit_cnn_pth_matches_reference() {
    check_model("digit_cnn.pth");
}

#[test]
fn minilm_safetensors_matches_reference() {
    check_model("minilm.safetensors");
}

#[test]
fn smollm2_gguf_matches_gguf_py() {
    check_model("smollm2_q4_1.gguf");
}

#[test]
fn onnx_models_match_the_onnx_package() {
    for file in [
        "minilm_int8.onnx",
        "ppocr_cls.onnx",
        "ppocr_det.onnx",
        "ppocr_rec.onnx",
    ] {
        check_model(file);
    }
}

#[test]
fn numpy_written_npz_npy_and_sharded_safetensors_match_reference() {
    for file in [
        "sample.npz",
        "sample_compressed.npz",
        "sample_half.npy",
        "sharded/model.safetensors.index.json",
    ] {
        check_model(file);
    }
}

// ---- published facts from ../shared/fixtures.md ----------------------------------

#[test]
fn digit_cnn_has_the_published_keys_shapes_and_order() {
    let model = Model::open(fixture("digit_cnn.pth")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.format, Format::Pth);
    let listing: Vec<(&str, Vec<u64>)> = model
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(
        listing,
        vec![
            ("conv_layers.0.weight", vec![32, 1, 3, 3]),
            ("conv_layers.0.bias", vec![32]),
            ("conv_layers.3.weight", vec![64, 32, 3, 3]),
            ("conv_layers.3.bias", vec![64]),
            ("conv_layers.6.weight", vec![128, 64, 3, 3]),
            ("conv_layers.6.bias", vec![128]),
            ("fc_layers.0.weight", vec![256, 1152]),
            ("fc_layers.0.bias", vec![256]),
            ("fc_layers.2.weight", vec![10, 256]),
            ("fc_layers.2.bias", vec![10]),
        ]
    );
    assert_eq!(model.totals().params, 390_410);
    let layers: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        layers,
        [
            "conv_layers.0",
            "conv_layers.3",
            "conv_layers.6",
            "fc_layers.0",
            "fc_layers.2"
        ]
    );
    assert!(model.tensors.iter().all(|t| {
        t.origin
            .member
            .as_deref()
            .is_some_and(|m| m.starts_with("handwriting_model/data/"))
    }));
}

#[test]
fn minilm_has_104_tensors_103_f32_and_position_ids() {
    let model = Model::open(fixture("minilm.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let totals = model.totals();
    assert_eq!(totals.tensors, 104);
    let count = |d: DType| {
        totals
            .by_dtype
            .iter()
            .find(|t| t.dtype == d)
            .map_or(0, |t| t.tensors)
    };
    assert_eq!((count(DType::F32), count(DType::I64)), (103, 1));
    let ids = &model.tensors[model
        .tensor_index("embeddings.position_ids")
        .expect("position_ids")];
    assert_eq!(ids.dtype, DType::I64);
    assert_eq!(
        model.metadata,
        vec![("format".to_owned(), serde_json::json!("pt"))]
    );
}

#[test]
fn smollm2_gguf_has_the_published_layout_and_values() {
    let model = Model::open(fixture("smollm2_q4_1.gguf")).unwrap_or_else(|e| panic!("{e}"));
    let meta = |k: &str| {
        model
            .metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        meta("general.architecture"),
        Some(serde_json::json!("llama"))
    );
    assert_eq!(meta("general.file_type"), Some(serde_json::json!(3)));
    assert_eq!(meta("gguf.alignment"), Some(serde_json::json!(32)));
    assert_eq!(meta("gguf.data_offset"), Some(serde_json::json!(1_785_664)));
    assert_eq!(
        meta("tokenizer.ggml.model"),
        Some(serde_json::json!("gpt2"))
    );
    let totals = model.totals();
    let count = |name: &str| {
        totals
            .by_dtype
            .iter()
            .find(|t| t.dtype.name() == name)
            .map_or(0, |t| t.tensors)
    };
    assert_eq!(
        (totals.tensors, count("Q4_1"), count("Q8_0"), count("F32")),
        (272, 210, 1, 61)
    );
    assert!(
        model.tensor_index("output.weight").is_none(),
        "tied embeddings: no output.weight"
    );
    let embd = &model.tensors[model.tensor_index("token_embd.weight").expect("token_embd")];
    assert_eq!(
        (embd.size_bytes, embd.shape.clone()),
        (30_081_024, vec![49152, 576])
    );
    // gguf-py 0.19.0's dequantized values, as published in fixtures.md (6 decimals).
    let published: [(&str, [f64; 5], f64, f64); 3] = [
        (
            "token_embd.weight",
            [-0.106544, 0.032978, 0.048199, -0.022831, -0.068493],
            -0.000542,
            0.135578,
        ),
        (
            "blk.0.attn_q.weight",
            [-0.096313, 0.157349, -0.096313, -0.730469, 1.171997],
            0.000179,
            0.283946,
        ),
        (
            "output_norm.weight",
            [1.757812, 1.820312, 1.78125, 1.601562, 1.742188],
            1.80266,
            0.294558,
        ),
    ];
    for (name, first, mean, std) in published {
        let i = model.tensor_index(name).expect(name);
        let t = &model.tensors[i];
        let bytes = model.tensor_bytes(i).unwrap_or_else(|e| panic!("{e}"));
        let (block, block_bytes) = t.dtype.block().expect("layout");
        let n = block.max(5) as usize;
        let mut out = vec![0f32; n];
        decode(
            t.dtype,
            &bytes[..(n / block as usize) * block_bytes as usize],
            &mut out,
        );
        for (ours, theirs) in out.iter().zip(first) {
            assert!(
                (f64::from(*ours) - theirs).abs() < 1e-6,
                "{name}: {ours} vs {theirs}"
            );
        }
        let s = model
            .tensor_stats(i, &StatsOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!((s.mean - mean).abs() < 1e-6, "{name}: mean {}", s.mean);
        assert!((s.std - std).abs() < 1e-6, "{name}: std {}", s.std);
    }
    let blocks = model
        .layers
        .iter()
        .filter(|l| l.name.starts_with("blk."))
        .count();
    assert_eq!(blocks, 30, "one layer per transformer block");
}

#[test]
fn onnx_weights_come_from_initializers_and_constant_nodes() {
    let meta = |m: &Model, k: &str| {
        m.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let cls = Model::open(fixture("ppocr_cls.onnx")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        meta(&cls, "initializers"),
        Some(serde_json::json!(0)),
        "Paddle2ONNX stores no initializers"
    );
    assert_eq!(meta(&cls, "constant_nodes"), Some(serde_json::json!(308)));
    assert!(cls.layers.iter().any(|l| l.op.as_deref() == Some("Conv")));
    let int8 = Model::open(fixture("minilm_int8.onnx")).unwrap_or_else(|e| panic!("{e}"));
    let i8s = int8
        .totals()
        .by_dtype
        .iter()
        .find(|d| d.dtype == DType::I8)
        .map_or(0, |d| d.tensors);
    assert_eq!(i8s, 38, "38 INT8 initializers");
    assert!(
        int8.tensors
            .iter()
            .all(|t| t.origin.offset.is_some() || t.size_bytes <= 8),
        "raw_data located in the file"
    );
}
