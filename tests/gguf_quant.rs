//! llama.cpp's block formats, byte for byte: our quantizers against gguf-py's
//! `gguf.quants.quantize` (identical to ggml's reference quantizer for these types)
//! on an input with awkward blocks (zeros, constants, ties, an outlier, subnormals),
//! and our dequantization against gguf-py's.

mod common;

use common::{fixture, reference};
use slimscope::compress::gguf_blocks::quantize;
use slimscope::dtype::{DType, GgmlQuant, decode};

fn f32s_of_npy(name: &str) -> Vec<f32> {
    common::fixture_f32s(name, 0)
}

const TYPES: [GgmlQuant; 5] = [
    GgmlQuant::Q8_0,
    GgmlQuant::Q4_0,
    GgmlQuant::Q4_1,
    GgmlQuant::Q5_0,
    GgmlQuant::Q5_1,
];

#[test]
fn quantized_bytes_equal_gguf_py() {
    let x = f32s_of_npy("quant/input.npy");
    for q in TYPES {
        let ours = quantize(q, &x).unwrap_or_else(|e| panic!("{e}"));
        let theirs =
            std::fs::read(fixture(&format!("quant/{}.bin", q.name()))).expect("reference bytes");
        assert_eq!(ours.len(), theirs.len(), "{}", q.name());
        let block = q.block_bytes() as usize;
        for (b, (o, t)) in ours.chunks(block).zip(theirs.chunks(block)).enumerate() {
            assert_eq!(o, t, "{}: block {b} differs from gguf-py", q.name());
        }
    }
}

#[test]
fn dequantized_values_equal_gguf_py_and_errors_order_by_bits() {
    let x = f32s_of_npy("quant/input.npy");
    let mut rmse = Vec::new();
    for q in TYPES {
        let bytes = quantize(q, &x).unwrap_or_else(|e| panic!("{e}"));
        let mut ours = vec![0f32; x.len()];
        decode(DType::Quant(q), &bytes, &mut ours);
        let theirs = f32s_of_npy(&format!("quant/{}.dequantized.npy", q.name()));
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{}: value {i}: {a} vs {b}",
                q.name()
            );
        }
        let err = (ours
            .iter()
            .zip(&x)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
            / x.len() as f64)
            .sqrt();
        let published = reference()["gguf_quant"][q.name()]["rmse"]
            .as_f64()
            .expect("rmse");
        assert!(
            (err - published).abs() <= 1e-9 * published,
            "{}: rmse {err} vs {published}",
            q.name()
        );
        rmse.push(err);
    }
    // Property: more bits, less error (Q8_0 < Q5_x < Q4_x).
    let [q8, q4_0, q4_1, q5_0, q5_1] = rmse[..] else {
        unreachable!()
    };
    assert!(
        q8 < q5_0 && q8 < q5_1 && q5_0 < q4_0 && q5_1 < q4_1,
        "{rmse:?}"
    );
}

#[test]
fn bytes_do_not_depend_on_thread_count() {
    let x = f32s_of_npy("quant/input.npy");
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| quantize(GgmlQuant::Q4_1, &x).unwrap_or_else(|e| panic!("{e}")))
    };
    assert_eq!(run(1), run(2));
}

const K_TYPES: [GgmlQuant; 5] = [
    GgmlQuant::Q2_K,
    GgmlQuant::Q3_K,
    GgmlQuant::Q4_K,
    GgmlQuant::Q5_K,
    GgmlQuant::Q6_K,
];

/// The K-quants against ggml's own compiled `quantize_row_q*_K_ref` (libggml-base
/// 0.13.1 via ctypes): byte for byte, super-block by super-block, on the awkward
/// input and on 256 super-blocks of seven distributions (normal, Laplace, uniform,
/// all-positive, 1e-6 and 100 scales, 90% zeros).
#[test]
fn k_quant_bytes_equal_ggml_reference() {
    for input in ["input", "k_input"] {
        let x = f32s_of_npy(&format!("quant/{input}.npy"));
        for q in K_TYPES {
            let ours = quantize(q, &x).unwrap_or_else(|e| panic!("{e}"));
            let theirs = std::fs::read(fixture(&format!("quant/{input}.{}.bin", q.name())))
                .expect("reference bytes");
            assert_eq!(ours.len(), theirs.len(), "{input} {}", q.name());
            let block = q.block_bytes() as usize;
            let differing: Vec<usize> = ours
                .chunks(block)
                .zip(theirs.chunks(block))
                .enumerate()
                .filter(|(_, (o, t))| o != t)
                .map(|(b, _)| b)
                .collect();
            assert!(
                differing.is_empty(),
                "{input} {}: super-blocks {differing:?} differ from ggml",
                q.name()
            );
        }
    }
}

/// Our K-quant dequantization equals gguf-py's on ggml's bytes, and the error shrinks
/// with every added bit.
#[test]
fn k_quant_dequantization_equals_gguf_py_and_errors_order_by_bits() {
    let x = f32s_of_npy("quant/k_input.npy");
    let mut rmse = Vec::new();
    for q in K_TYPES {
        let bytes =
            std::fs::read(fixture(&format!("quant/k_input.{}.bin", q.name()))).expect("bytes");
        let mut ours = vec![0f32; x.len()];
        decode(DType::Quant(q), &bytes, &mut ours);
        let theirs = f32s_of_npy(&format!("quant/k_input.{}.dequantized.npy", q.name()));
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(a == b, "{}: value {i}: {a} vs {b}", q.name());
        }
        let published = reference()["k_quant"][format!("k_input.{}", q.name())]["rmse"]
            .as_f64()
            .expect("rmse");
        rmse.push(published);
    }
    assert!(rmse.windows(2).all(|w| w[0] > w[1]), "{rmse:?}");
}

/// Quantization with an importance matrix against ggml's own compiled
/// `ggml_quantize_chunk(type, …, imatrix)` (libggml-base 0.13.1 via ctypes, what
/// `llama-quantize --imatrix` runs): every type byte for byte, row by row, on both
/// inputs as rows of 512 with one importance per column (zeros, outliers and a whole
/// zero block among them).
#[test]
fn importance_weighted_bytes_equal_ggml_quantize_chunk() {
    let importance = f32s_of_npy("quant/importance.npy");
    let row = importance.len();
    for input in ["input", "k_input"] {
        let x = f32s_of_npy(&format!("quant/{input}.npy"));
        for q in TYPES.into_iter().chain(K_TYPES) {
            let theirs = std::fs::read(fixture(&format!("quant/{input}.{}.imatrix.bin", q.name())))
                .expect("reference bytes");
            let row_bytes = row / q.block_len() as usize * q.block_bytes() as usize;
            let mut ours = vec![0u8; x.len() / row * row_bytes];
            for (values, out) in x.chunks(row).zip(ours.chunks_mut(row_bytes)) {
                slimscope::compress::importance::quantize_row(q, values, &importance, out);
            }
            assert_eq!(ours.len(), theirs.len(), "{input} {}", q.name());
            let block = q.block_bytes() as usize;
            let differing: Vec<usize> = ours
                .chunks(block)
                .zip(theirs.chunks(block))
                .enumerate()
                .filter(|(_, (o, t))| o != t)
                .map(|(b, _)| b)
                .collect();
            assert!(
                differing.is_empty(),
                "{input} {}: {} of {} blocks differ from ggml, first {:?}",
                q.name(),
                differing.len(),
                ours.len() / block,
                &differing[..differing.len().min(8)]
            );
        }
    }
}
