//! GGUF export: the SmolLM2 GGUF re-quantized to Q8_0, Q4_0 and Q4_K, and the digit
//! CNN written as a GGUF from a .pth. Every output is read back by gguf-py (an
//! independent reader): all metadata kept (tokenizer included), types and shapes as
//! asked, values equal to what slimscope decodes, and the Q8_0/Q4_0 blocks equal to
//! what gguf-py's own quantizer makes of the same source tensors.

mod common;

use std::path::Path;

use common::{fixture, reference_script, slimscope};
use slimscope::{DType, Model};

fn apply(model: &Path, recipe: &str, out: &Path) -> serde_json::Value {
    let recipe_path = out.with_extension("toml");
    std::fs::write(&recipe_path, recipe).expect("write recipe");
    let (code, stdout, stderr) = slimscope(&[
        "apply",
        model.to_str().expect("path"),
        "--recipe",
        recipe_path.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).expect("JSON report")
}

fn gguf_recipe(block_type: &str) -> String {
    format!(
        "version = 1\n\n[[rule]]\nmatch = \"*.weight\"\nquant = {{ format = \"gguf\", type = \"{block_type}\" }}\n"
    )
}

/// Our decoded values of every tensor against gguf-py's, by first values and sums.
fn assert_values_match(ours: &Model, theirs: &serde_json::Value) {
    for t in theirs["tensors"].as_array().expect("tensors") {
        let name = t["name"].as_str().expect("name");
        let i = ours.tensor_index(name).expect("tensor");
        let values = ours.tensor_f32(i).unwrap_or_else(|e| panic!("{e}"));
        for (k, v) in t["first"].as_array().expect("first").iter().enumerate() {
            assert_eq!(
                f64::from(values[k]),
                v.as_f64().expect("f64"),
                "{name}[{k}]"
            );
        }
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sumsq: f64 = values.iter().map(|&v| f64::from(v).powi(2)).sum();
        for (ours, key) in [(sum, "sum"), (sumsq, "sumsq")] {
            let theirs = t[key].as_f64().expect(key);
            assert!(
                (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0),
                "{name} {key}: {ours} vs {theirs}"
            );
        }
    }
}

#[test]
fn smollm2_requantized_keeps_metadata_and_runs_through_gguf_py() {
    let source = fixture("smollm2_q4_1.gguf");
    let original = Model::open(&source).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    for (block_type, file_type) in [("Q8_0", 7), ("Q4_0", 2)] {
        let out = dir.path().join(format!("smollm2.{block_type}.gguf"));
        let report = apply(&source, &gguf_recipe(block_type), &out);
        let theirs = reference_script(
            "read_gguf.py",
            &[
                out.to_str().expect("path"),
                "--requant",
                source.to_str().expect("path"),
            ],
        );
        let meta = &theirs["metadata"];
        // Everything of the source is still there, the tokenizer included.
        assert_eq!(meta["general.architecture"], "llama");
        assert_eq!(meta["tokenizer.ggml.model"], "gpt2");
        assert_eq!(meta["tokenizer.ggml.tokens"]["array_len"], 49152);
        assert_eq!(
            meta["tokenizer.ggml.merges"]["array_len"],
            original
                .metadata
                .iter()
                .find(|(k, _)| k == "tokenizer.ggml.merges")
                .map(|(_, v)| v["len"].clone())
                .expect("merges")
        );
        assert_eq!(meta["llama.block_count"], 30);
        assert_eq!(meta["general.file_type"], file_type);
        assert!(
            meta["slimscope.recipe"]
                .as_str()
                .is_some_and(|r| r.contains(block_type))
        );
        // Same tensors, same shapes; 2-D weights in the new type, the rest as they were.
        let tensors = theirs["tensors"].as_array().expect("tensors");
        assert_eq!(tensors.len(), 272);
        for (t, info) in tensors.iter().zip(&original.tensors) {
            assert_eq!(t["name"], info.name.as_str());
            let shape: Vec<u64> = serde_json::from_value(t["shape"].clone()).expect("shape");
            assert_eq!(shape, info.shape, "{}", info.name);
            let expected = if info.shape.len() == 2 {
                block_type.to_owned()
            } else {
                "F32".to_owned()
            };
            assert_eq!(t["type"], expected.as_str(), "{}", info.name);
            if info.shape.len() == 2 {
                assert_eq!(
                    t["requant_equal"], true,
                    "{}: our {block_type} blocks differ from gguf-py's",
                    info.name
                );
            }
        }
        // slimscope re-opens it and decodes the same values gguf-py does, which are the
        // values the report was computed from.
        let ours = Model::open(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_values_match(&ours, &theirs);
        let q = ours.tensor_index("blk.0.attn_q.weight").expect("tensor");
        assert_eq!(ours.tensors[q].dtype.to_string(), block_type);
        // candle's GGUF reader (what the LLM runner will use) takes it too.
        let mut file = std::fs::File::open(&out).expect("open");
        let content = candle_core::quantized::gguf_file::Content::read(&mut file)
            .unwrap_or_else(|e| panic!("candle: {e}"));
        assert_eq!(content.tensor_infos.len(), 272);
        let qt = content
            .tensor(&mut file, "blk.0.attn_q.weight", &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("candle: {e}"));
        assert_eq!(format!("{:?}", qt.dtype()), block_type);
        let written: u64 = ours.tensors.iter().map(|t| t.size_bytes).sum();
        let reported = report["bytes_after"].as_u64().expect("bytes_after");
        assert_eq!(
            written, reported,
            "the report's size is the written tensors' size"
        );
    }
}

#[test]
fn k_quants_fall_back_where_rows_are_not_whole_super_blocks() {
    // SmolLM2's hidden size is 576 (2.25 super-blocks): llama.cpp stores those rows
    // of a Q4_K model as Q5_0; ffn_down (rows of 1536) stays Q4_K.
    let source = fixture("smollm2_q4_1.gguf");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("smollm2.Q4_K.gguf");
    let report = apply(&source, &gguf_recipe("Q4_K"), &out);
    let theirs = reference_script("read_gguf.py", &[out.to_str().expect("path")]);
    let ty = |name: &str| {
        theirs["tensors"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .map(|t| t["type"].as_str().unwrap_or_default().to_owned())
            .expect("tensor")
    };
    assert_eq!(ty("blk.3.ffn_down.weight"), "Q4_K");
    assert_eq!(ty("blk.3.attn_q.weight"), "Q5_0");
    assert_eq!(ty("blk.3.attn_norm.weight"), "F32");
    let scheme = report["tensors"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "blk.3.attn_q.weight"))
        .map(|t| t["scheme"].as_str().unwrap_or_default().to_owned())
        .expect("report");
    assert!(scheme.contains("Q4_K needs rows of 256"), "{scheme}");
    let ours = Model::open(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_values_match(&ours, &theirs);
}

#[test]
fn a_pth_model_becomes_a_valid_gguf() {
    // fc weights (rows of 1152 and 128 values) in Q8_0; conv kernels (rows of 3) and
    // biases stay f32; the values decode as gguf-py decodes them.
    let source = fixture("digit_cnn.pth");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cnn.gguf");
    let recipe = "version = 1\n\n[[rule]]\nregex = '^fc_layers\\..*\\.weight$'\nquant = { format = \"gguf\", type = \"Q8_0\" }\n\n[[rule]]\nregex = '^conv_layers\\..*\\.weight$'\nquant = { format = \"f16\" }\n";
    apply(&source, recipe, &out);
    let theirs = reference_script("read_gguf.py", &[out.to_str().expect("path")]);
    assert_eq!(theirs["metadata"]["general.name"], "digit_cnn");
    let ours = Model::open(&out).unwrap_or_else(|e| panic!("{e}"));
    let original = Model::open(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ours.tensors.len(), original.tensors.len());
    for t in &ours.tensors {
        let expected = if t.name.starts_with("fc_layers") && t.name.ends_with("weight") {
            "Q8_0"
        } else if t.name.ends_with("weight") && t.shape.len() > 1 {
            "F16"
        } else {
            "F32"
        };
        assert_eq!(t.dtype.to_string(), expected, "{}", t.name);
        let o = &original.tensors[original.tensor_index(&t.name).expect("tensor")];
        assert_eq!(t.shape, o.shape, "{}", t.name);
    }
    assert_values_match(&ours, &theirs);
    let bias = ours.tensor_index("fc_layers.0.bias").expect("bias");
    let obias = original.tensor_index("fc_layers.0.bias").expect("bias");
    assert_eq!(
        ours.tensor_f32(bias).expect("values"),
        original.tensor_f32(obias).expect("values")
    );
    assert_eq!(ours.tensors[bias].dtype, DType::F32);
}

/// The llama-quantize invocation apply prints and the `--tensor-type-file` it writes
/// beside a GGUF export name every weight's written type: applied as
/// llama-quantize applies them (regex search, last match wins, the token-embedding
/// option for token_embd) to the names gguf-py reads, they give the types gguf-py
/// reads. The configuration mixes Q8_0, Q4_K where rows are whole super-blocks, and
/// its Q5_0 fallback elsewhere, on a Q4_1 source (so --allow-requantize).
#[test]
fn the_llama_quantize_arguments_rebuild_the_mixed_types() {
    let source = fixture("smollm2_q4_1.gguf");
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("mixed.toml");
    std::fs::write(
        &recipe,
        "version = 1\n\n[[rule]]\nmatch = \"*.weight\"\nquant = { format = \"gguf\", type = \"Q4_K\" }\n\n\
         [[rule]]\nmatch = \"blk.0.*\"\nquant = { format = \"gguf\", type = \"Q8_0\" }\n",
    )
    .expect("recipe");
    let out = dir.path().join("smollm2.mixed.gguf");
    let (code, stdout, stderr) = slimscope(&[
        "apply",
        source.to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let types = dir.path().join("smollm2.mixed.gguf.tensor-types.txt");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("llama-quantize "))
        .unwrap_or_else(|| panic!("no llama-quantize line in {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    // token_embd's rows of 576 are not whole Q4_K super-blocks: Q5_0, as llama.cpp.
    let token = words
        .iter()
        .position(|w| *w == "--token-embedding-type")
        .map(|i| words[i + 1])
        .expect("token embedding type");
    assert_eq!(token, "Q5_0");
    assert!(words.contains(&"--allow-requantize"), "{line}");
    assert!(
        !words.contains(&"--output-tensor-type"),
        "tied embeddings: {line}"
    );
    assert_eq!(
        words.last(),
        Some(&"Q5_0"),
        "the most common type is the base"
    );
    assert!(line.contains(types.to_str().expect("path")), "{line}");
    assert!(!stdout.contains("note:"), "no caveat expected: {stdout}");
    let report = reference_script(
        "check_tensor_types.py",
        &[
            out.to_str().expect("path"),
            types.to_str().expect("path"),
            token,
            "-",
            "Q5_0",
        ],
    );
    assert_eq!(report["wrong"], serde_json::json!([]), "{report}");
    assert_eq!(report["ambiguous"], serde_json::json!([]), "{report}");
    // 30 blocks × 7 matrices + token_embd; one entry for each but token_embd.
    assert_eq!(report["checked"], 211);
    assert_eq!(report["entries"], 210);
    // The written file has all three types.
    let text = std::fs::read_to_string(&types).expect("types file");
    for ty in ["=Q8_0", "=Q4_K", "=Q5_0"] {
        assert!(text.contains(ty), "{ty} missing");
    }
    // An existing types file is kept unless --force, and nothing is written then.
    std::fs::remove_file(&out).expect("remove");
    let (code, _, stderr) = slimscope(&[
        "apply",
        source.to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("tensor-types.txt: already exists"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// `apply --imatrix` with a GGUF rule `method = "imatrix"`: SmolLM2's ffn_down
/// re-quantized to Q4_K is byte for byte what ggml's own `ggml_quantize_chunk(Q4_K,
/// …, imatrix)` makes of gguf-py's dequantized values with that importance, from the
/// GGUF imatrix and from the legacy .dat alike; a tensor the matrix has no entry for
/// is quantized as without one and says so; the output carries llama.cpp's
/// `quantize.imatrix.*` keys.
#[test]
fn imatrix_quantization_is_what_llama_quantize_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("imatrix.toml");
    std::fs::write(
        &recipe,
        "version = 1\n\n[[rule]]\nregex = '^blk\\.0\\.(ffn_down|attn_q)\\.weight$'\n\
         quant = { format = \"gguf\", type = \"Q4_K\", method = \"imatrix\" }\n",
    )
    .expect("recipe");
    let model = fixture("smollm2_q4_1.gguf");
    let theirs = std::fs::read(fixture("quant/smollm2.ffn_down.Q4_K.imatrix.bin")).expect("ref");
    for form in ["gguf", "dat"] {
        let out = dir.path().join(format!("out.{form}.gguf"));
        let imatrix = fixture(&format!("quant/smollm2.imatrix.{form}"));
        let (code, stdout, stderr) = slimscope(&[
            "apply",
            model.to_str().expect("path"),
            "--recipe",
            recipe.to_str().expect("path"),
            "--imatrix",
            imatrix.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("Q4_K (imatrix)"), "{stdout}");
        assert!(stdout.contains("no importance entry"), "{stdout}");
        let written = Model::open(&out).expect("the output opens");
        let i = written
            .tensor_index("blk.0.ffn_down.weight")
            .expect("ffn_down");
        let ours = written.tensor_bytes(i).expect("bytes");
        assert_eq!(ours.len(), theirs.len());
        assert!(ours[..] == theirs[..], "{form}: bytes differ from ggml's");
        let meta = |k: &str| {
            written
                .metadata
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            meta("quantize.imatrix.entries_count"),
            Some(serde_json::json!(1))
        );
        assert_eq!(
            meta("quantize.imatrix.chunks_count"),
            Some(serde_json::json!(10))
        );
        assert_eq!(
            meta("quantize.imatrix.dataset"),
            Some(serde_json::json!("slimscope-fixture"))
        );
    }
    // Without the file, one line naming the tensor and what to give; with a file
    // and no imatrix rule, one line too.
    let out = dir.path().join("missing.gguf");
    let (code, _, stderr) = slimscope(&[
        "apply",
        model.to_str().expect("path"),
        "--recipe",
        recipe.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--imatrix FILE"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!out.exists());
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, gguf_recipe("Q4_K")).expect("recipe");
    let (code, _, stderr) = slimscope(&[
        "apply",
        model.to_str().expect("path"),
        "--recipe",
        plain.to_str().expect("path"),
        "--imatrix",
        fixture("quant/smollm2.imatrix.dat").to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no rule"), "{stderr}");
    // A truncated legacy file and a GGUF that is not an imatrix: one line naming it.
    let dat = std::fs::read(fixture("quant/smollm2.imatrix.dat")).expect("dat");
    let cut = dir.path().join("cut.dat");
    std::fs::write(&cut, &dat[..dat.len() / 2]).expect("cut");
    for bad in [cut, model.clone()] {
        let (code, _, stderr) = slimscope(&[
            "apply",
            model.to_str().expect("path"),
            "--recipe",
            recipe.to_str().expect("path"),
            "--imatrix",
            bad.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
        ]);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(bad.to_str().expect("path")), "{stderr}");
        assert!(!out.exists());
    }
}
