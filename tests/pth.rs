//! PyTorch checkpoints read as torch defines them: views of shared storages (slices,
//! `chunk`, transposes, tied weights) read from the right elements, and every
//! storage type listed. The files are written by tests/fixtures/torch_like.py with
//! Python's own pickle exactly as `torch.save` lays them out; the expected values are
//! numpy's `as_strided` over each storage (torch's documented view semantics).

mod common;

use common::reference_script;
use slimscope::Model;

fn dtype_name(numpy: &str) -> &'static str {
    match numpy {
        "float64" => "F64",
        "float32" => "F32",
        "float16" => "F16",
        "int64" => "I64",
        "int32" => "I32",
        "int16" => "I16",
        "int8" => "I8",
        "uint8" => "U8",
        "bool" => "BOOL",
        other => panic!("unexpected numpy dtype {other}"),
    }
}

#[test]
fn torch_views_and_storage_types_read_as_torch_defines_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = reference_script("torch_like.py", &[dir.path().to_str().expect("utf-8")]);
    let cases = cases.as_array().expect("a list of cases");
    assert!(
        cases.len() >= 5,
        "the generator wrote {} cases",
        cases.len()
    );
    for case in cases {
        let file = case["file"].as_str().expect("file");
        let model = Model::open(dir.path().join(file)).unwrap_or_else(|e| panic!("{e}"));
        let expected = case["tensors"].as_object().expect("tensors");
        let names: Vec<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
        let want: Vec<&str> = expected.keys().map(String::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, want, "{file}: every tensor listed, none dropped");
        for (name, e) in expected {
            let i = model.tensor_index(name).expect("listed");
            let info = &model.tensors[i];
            let shape: Vec<u64> = e["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim"))
                .collect();
            assert_eq!(info.shape, shape, "{file}: `{name}` shape");
            assert_eq!(
                info.dtype.name(),
                dtype_name(e["dtype"].as_str().expect("dtype")),
                "{file}: `{name}` dtype"
            );
            let values = model.tensor_f32(i).unwrap_or_else(|err| panic!("{err}"));
            let want: Vec<f64> = e["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| v.as_f64().expect("number"))
                .collect();
            // Every value is exactly representable in its storage type and in f32.
            let got: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            assert_eq!(got, want, "{file}: `{name}` values");
        }
    }
}

#[test]
fn a_slice_of_a_storage_reads_its_own_elements() {
    // The case the issue names: storage [0..7] saved as t[1:3] reads [1, 2].
    let dir = tempfile::tempdir().expect("tempdir");
    reference_script("torch_like.py", &[dir.path().to_str().expect("utf-8")]);
    let model = Model::open(dir.path().join("slice.pth")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        model.tensor_f32(0).unwrap_or_else(|e| panic!("{e}")),
        [1.0, 2.0]
    );
}
