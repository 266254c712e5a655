//! Element types of stored tensors, and decoding them to `f32`.
//!
//! One enum covers every format: plain numeric types (safetensors, NumPy, PyTorch,
//! ONNX) and ggml's block-quantized types (GGUF). Decoding works on a run of whole
//! elements (whole blocks for ggml types) so statistics can stream a tensor in chunks
//! without materialising it. Block dequantization is candle's reference code, the same
//! arithmetic as ggml and gguf-py (tests check it against gguf-py's values).

use candle_core::quantized::k_quants as kq;
use half::{bf16, f16};
use serde::Serialize;

/// ggml's quantized block types, with their on-disk type ids (ggml.h `enum ggml_type`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[expect(non_camel_case_types, reason = "ggml's own spelling of the type names")]
pub enum GgmlQuant {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    IQ1_M,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

impl GgmlQuant {
    /// (name, ggml type id, weights per block, bytes per block) — gguf-py's
    /// `GGML_QUANT_SIZES`, which mirrors ggml's type traits.
    const TABLE: [(GgmlQuant, &'static str, u32, u64, u64); 24] = [
        (GgmlQuant::Q4_0, "Q4_0", 2, 32, 18),
        (GgmlQuant::Q4_1, "Q4_1", 3, 32, 20),
        (GgmlQuant::Q5_0, "Q5_0", 6, 32, 22),
        (GgmlQuant::Q5_1, "Q5_1", 7, 32, 24),
        (GgmlQuant::Q8_0, "Q8_0", 8, 32, 34),
        (GgmlQuant::Q8_1, "Q8_1", 9, 32, 36),
        (GgmlQuant::Q2_K, "Q2_K", 10, 256, 84),
        (GgmlQuant::Q3_K, "Q3_K", 11, 256, 110),
        (GgmlQuant::Q4_K, "Q4_K", 12, 256, 144),
        (GgmlQuant::Q5_K, "Q5_K", 13, 256, 176),
        (GgmlQuant::Q6_K, "Q6_K", 14, 256, 210),
        (GgmlQuant::Q8_K, "Q8_K", 15, 256, 292),
        (GgmlQuant::IQ2_XXS, "IQ2_XXS", 16, 256, 66),
        (GgmlQuant::IQ2_XS, "IQ2_XS", 17, 256, 74),
        (GgmlQuant::IQ3_XXS, "IQ3_XXS", 18, 256, 98),
        (GgmlQuant::IQ1_S, "IQ1_S", 19, 256, 50),
        (GgmlQuant::IQ4_NL, "IQ4_NL", 20, 32, 18),
        (GgmlQuant::IQ3_S, "IQ3_S", 21, 256, 110),
        (GgmlQuant::IQ2_S, "IQ2_S", 22, 256, 82),
        (GgmlQuant::IQ4_XS, "IQ4_XS", 23, 256, 136),
        (GgmlQuant::IQ1_M, "IQ1_M", 29, 256, 56),
        (GgmlQuant::TQ1_0, "TQ1_0", 34, 256, 54),
        (GgmlQuant::TQ2_0, "TQ2_0", 35, 256, 66),
        (GgmlQuant::MXFP4, "MXFP4", 39, 32, 17),
    ];

    fn row(self) -> &'static (GgmlQuant, &'static str, u32, u64, u64) {
        // The table lists every variant exactly once, in declaration order.
        &Self::TABLE[self as usize]
    }

    /// ggml's name for the type, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        self.row().1
    }
    /// ggml's numeric type id.
    pub fn type_id(self) -> u32 {
        self.row().2
    }
    /// Weights per block.
    pub fn block_len(self) -> u64 {
        self.row().3
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.row().4
    }
    /// The quantized type with ggml type id `id`, if it is one.
    pub fn from_type_id(id: u32) -> Option<Self> {
        Self::TABLE.iter().find(|r| r.2 == id).map(|r| r.0)
    }
    /// Whether slimscope can turn this type's blocks back into numbers.
    pub fn can_decode(self) -> bool {
        use GgmlQuant::*;
        matches!(
            self,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K
        )
    }
}

/// The element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    /// fp8 e4m3 ("fn": no infinities, NaN is S.1111.111).
    F8E4M3,
    /// fp8 e5m2 (IEEE-like, the top byte of an f16).
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    /// A ggml block-quantized type (GGUF).
    Quant(GgmlQuant),
    /// A type the format names but slimscope cannot interpret (listed, not decoded).
    Other(&'static str),
}

impl DType {
    /// Short upper-case name, as safetensors / ggml spell it (`F32`, `BF16`, `Q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U64 => "U64",
            DType::U32 => "U32",
            DType::U16 => "U16",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
            DType::Quant(q) => q.name(),
            DType::Other(name) => name,
        }
    }

    /// (elements per block, bytes per block): (1, size) for plain types.
    /// `None` for [`DType::Other`], whose layout is unknown.
    pub fn block(self) -> Option<(u64, u64)> {
        let size = match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::U8 | DType::Bool => 1,
            DType::Quant(q) => return Some((q.block_len(), q.block_bytes())),
            DType::Other(_) => return None,
        };
        Some((1, size))
    }

    /// Bytes that `numel` elements take, or `None` if `numel` is not a whole number of
    /// blocks, the layout is unknown, or the size overflows.
    pub fn size_bytes(self, numel: u64) -> Option<u64> {
        let (len, bytes) = self.block()?;
        if !numel.is_multiple_of(len) {
            return None;
        }
        (numel / len).checked_mul(bytes)
    }

    /// Whether [`decode`] can turn this type into numbers.
    pub fn can_decode(self) -> bool {
        match self {
            DType::Quant(q) => q.can_decode(),
            DType::Other(_) => false,
            _ => true,
        }
    }

    /// Whether the values are floating point (weights) rather than integers/indices.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64
                | DType::F32
                | DType::F16
                | DType::BF16
                | DType::F8E4M3
                | DType::F8E5M2
                | DType::Quant(_)
        )
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Decode fp8 e4m3fn (bias 7, no infinities; 0x7f/0xff are NaN).
pub fn f8e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0x0f);
    let mant = f32::from(b & 0x07);
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * mant / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + mant / 8.0) * 2f32.powi(exp - 7)
    }
}

/// Decode fp8 e5m2: exactly the upper byte of an IEEE half.
pub fn f8e5m2_to_f32(b: u8) -> f32 {
    f16::from_bits(u16::from(b) << 8).to_f32()
}

/// Decode `out.len()` elements of `dtype` from `bytes` (little-endian) into `out`.
///
/// Contract (checked by callers at the boundary, asserted here in debug builds):
/// `bytes.len() == dtype.size_bytes(out.len())` and `dtype.can_decode()`.
pub fn decode(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(Some(bytes.len() as u64), dtype.size_bytes(out.len() as u64));
    fn each<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(N)) {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            *o = f(a);
        }
    }
    match dtype {
        DType::F32 => each(bytes, out, f32::from_le_bytes),
        DType::F64 => each(bytes, out, |a| f64::from_le_bytes(a) as f32),
        DType::F16 => each(bytes, out, |a| f16::from_le_bytes(a).to_f32()),
        DType::BF16 => each(bytes, out, |a| bf16::from_le_bytes(a).to_f32()),
        DType::F8E4M3 => each(bytes, out, |[b]| f8e4m3_to_f32(b)),
        DType::F8E5M2 => each(bytes, out, |[b]| f8e5m2_to_f32(b)),
        DType::I64 => each(bytes, out, |a| i64::from_le_bytes(a) as f32),
        DType::I32 => each(bytes, out, |a| i32::from_le_bytes(a) as f32),
        DType::I16 => each(bytes, out, |a| f32::from(i16::from_le_bytes(a))),
        DType::I8 => each(bytes, out, |[b]| f32::from(b as i8)),
        DType::U64 => each(bytes, out, |a| u64::from_le_bytes(a) as f32),
        DType::U32 => each(bytes, out, |a| u32::from_le_bytes(a) as f32),
        DType::U16 => each(bytes, out, |a| f32::from(u16::from_le_bytes(a))),
        DType::U8 => each(bytes, out, |[b]| f32::from(b)),
        DType::Bool => each(bytes, out, |[b]| f32::from(u8::from(b != 0))),
        DType::Quant(q) => decode_blocks(q, bytes, out),
        DType::Other(_) => debug_assert!(false, "decode called on an undecodable type"),
    }
}

fn decode_blocks(q: GgmlQuant, bytes: &[u8], out: &mut [f32]) {
    use GgmlQuant::*;
    match q {
        Q4_0 => blocks::<kq::BlockQ4_0>(bytes, out),
        Q4_1 => blocks::<kq::BlockQ4_1>(bytes, out),
        Q5_0 => blocks::<kq::BlockQ5_0>(bytes, out),
        Q5_1 => blocks::<kq::BlockQ5_1>(bytes, out),
        Q8_0 => blocks::<kq::BlockQ8_0>(bytes, out),
        Q2_K => blocks::<kq::BlockQ2K>(bytes, out),
        Q3_K => blocks::<kq::BlockQ3K>(bytes, out),
        Q4_K => blocks::<kq::BlockQ4K>(bytes, out),
        Q5_K => blocks::<kq::BlockQ5K>(bytes, out),
        Q6_K => blocks::<kq::BlockQ6K>(bytes, out),
        Q8_K => blocks::<kq::BlockQ8K>(bytes, out),
        _ => debug_assert!(false, "decode called on an undecodable ggml type"),
    }
}

/// Reinterpret raw ggml bytes as candle's `#[repr(C)]` block structs (the on-disk
/// layout) and dequantize them. Bytes that are not aligned for the block type are
/// copied into an aligned buffer first.
fn blocks<B: kq::GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    let n = bytes.len() / size;
    debug_assert_eq!(n * size, bytes.len());
    if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()) {
        // SAFETY: the block types are plain `#[repr(C)]` structs of f16/f32/ints and
        // byte arrays (every bit pattern is valid); the pointer is aligned for `B` and
        // `n * size_of::<B>()` bytes are in bounds.
        let xs = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) };
        B::to_float(xs, out);
    } else {
        let mut aligned: Vec<B> = (0..n).map(|_| B::zeros()).collect();
        // SAFETY: `aligned` owns exactly `n * size` writable bytes and does not overlap
        // `bytes`; any bit pattern is a valid block (see above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                aligned.as_mut_ptr().cast::<u8>(),
                n * size,
            );
        }
        B::to_float(&aligned, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_table_is_in_declaration_order() {
        for (i, row) in GgmlQuant::TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i, "{}", row.1);
        }
    }

    #[test]
    fn candle_block_structs_match_ggml_sizes() {
        assert_eq!(
            std::mem::size_of::<kq::BlockQ4_0>() as u64,
            GgmlQuant::Q4_0.block_bytes()
        );
        assert_eq!(
            std::mem::size_of::<kq::BlockQ8_0>() as u64,
            GgmlQuant::Q8_0.block_bytes()
        );
        assert_eq!(
            std::mem::size_of::<kq::BlockQ4K>() as u64,
            GgmlQuant::Q4_K.block_bytes()
        );
        assert_eq!(
            std::mem::size_of::<kq::BlockQ6K>() as u64,
            GgmlQuant::Q6_K.block_bytes()
        );
        assert_eq!(
            std::mem::size_of::<kq::BlockQ8K>() as u64,
            GgmlQuant::Q8_K.block_bytes()
        );
    }

    #[test]
    fn fp8_decoding_matches_the_ocp_tables() {
        // Hand-derived from the OCP 8-bit float spec: e4m3fn max is 448, min normal 2^-6.
        assert_eq!(f8e4m3_to_f32(0x7e), 448.0);
        assert_eq!(f8e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(f8e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f8e4m3_to_f32(0xb8), -1.0);
        assert!(f8e4m3_to_f32(0x7f).is_nan());
        // e5m2: max 57344, 0x7c is +inf.
        assert_eq!(f8e5m2_to_f32(0x7b), 57344.0);
        assert_eq!(f8e5m2_to_f32(0x7c), f32::INFINITY);
        assert_eq!(f8e5m2_to_f32(0x3c), 1.0);
    }

    #[test]
    fn q8_0_block_decodes_by_hand() {
        // d = 0.5 (f16 0x3800), qs = 0, 1, -1, 2, ... : value = d * q.
        let mut block = vec![0x00, 0x38];
        let qs: Vec<i8> = (0..32)
            .map(|i| if i % 2 == 0 { i / 2 } else { -(i / 2) })
            .collect();
        block.extend(qs.iter().map(|&q| q as u8));
        let mut out = vec![0f32; 32];
        decode(DType::Quant(GgmlQuant::Q8_0), &block, &mut out);
        for (o, q) in out.iter().zip(&qs) {
            assert_eq!(*o, 0.5 * f32::from(*q));
        }
        // The same bytes one byte off alignment decode identically.
        let mut shifted = vec![0u8];
        shifted.extend(&block);
        let mut out2 = vec![0f32; 32];
        decode(DType::Quant(GgmlQuant::Q8_0), &shifted[1..], &mut out2);
        assert_eq!(out, out2);
    }
}
