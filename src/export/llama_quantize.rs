//! The llama-quantize invocation that rebuilds a mixed GGUF configuration with
//! llama.cpp itself (`tools/quantize`): a `--tensor-type-file` naming every weight's
//! type, the token-embedding and output types, and the base type.
//!
//! llama-quantize reads each `pattern=type` of the file as a regex (lower-cased)
//! searched in the tensor names; the base type's mixture picks a type for each
//! quantized weight first, and a matching pattern replaces it — unless the mixture's
//! own pick needed a fallback (rows that are not whole K-quant super-blocks), when
//! llama-quantize keeps its fallback. So the base is the type most weights have
//! (rows that do not fit it are named in the caveats), every pattern is anchored to
//! one tensor's exact name, and `token_embd.weight` and `output.weight` get their own
//! options, which apply after the mixture whatever it chose.

use crate::compress::apply::AppliedTensor;
use crate::dtype::DType;
use crate::model::Model;

/// How to rebuild a GGUF export with llama-quantize.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaQuantize {
    /// The base type (llama-quantize's positional `type`).
    pub base: &'static str,
    /// `(anchored pattern, type)` for every other quantizable weight.
    pub tensor_types: Vec<(String, &'static str)>,
    pub token_embedding_type: Option<&'static str>,
    pub output_tensor_type: Option<&'static str>,
    /// The source holds block-quantized weights (`--allow-requantize`).
    pub requantize: bool,
    /// Where llama-quantize may not follow the file.
    pub caveats: Vec<String>,
}

/// Whether llama-quantize quantizes a tensor at all: weights of rank ≥ 2 (its
/// `quantize &= ggml_n_dims(tensor) >= 2` and the `weight` suffix; norms are 1-D).
fn quantizable(name: &str, shape: &[u64]) -> bool {
    name.ends_with("weight") && shape.len() >= 2
}

/// `name` as a regex that matches it alone (ECMAScript, as `std::regex` reads it).
fn anchored(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    out.push('^');
    for c in name.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('$');
    out
}

impl LlamaQuantize {
    /// The invocation that rebuilds `model` with `applied`'s types, or `None` when no
    /// weight takes a block type (nothing for llama-quantize to do) or `model` is not
    /// a GGUF (llama-quantize reads GGUF only).
    pub fn of(model: &Model, applied: &[(usize, AppliedTensor)]) -> Option<LlamaQuantize> {
        if model.format != crate::model::Format::Gguf {
            return None;
        }
        let by_index: std::collections::HashMap<usize, &AppliedTensor> =
            applied.iter().map(|(i, t)| (*i, t)).collect();
        // (name, last dimension, type written) of every weight llama-quantize touches.
        let weights: Vec<(&str, u64, DType)> = model
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| quantizable(&t.name, &t.shape))
            .map(|(i, t)| {
                let written = by_index.get(&i).map_or(t.dtype, |a| a.stored);
                (
                    t.name.as_str(),
                    t.shape.last().copied().unwrap_or(0),
                    written,
                )
            })
            .collect();
        let special = |n: &str| n == "token_embd.weight" || n == "output.weight";
        // The base: the block type most of the other weights have.
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for (name, _, d) in &weights {
            if let DType::Quant(q) = d
                && !special(name)
            {
                match counts.iter_mut().find(|(n, _)| *n == q.name()) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((q.name(), 1)),
                }
            }
        }
        // With only token_embd / output in block types, theirs is the base.
        if counts.is_empty() {
            for (_, _, d) in weights.iter().filter(|(n, _, _)| special(n)) {
                if let DType::Quant(q) = d {
                    counts.push((q.name(), 1));
                }
            }
        }
        let (base, _) = counts
            .iter()
            .copied()
            .max_by_key(|&(n, c)| (c, std::cmp::Reverse(n)))?;
        let block = weights
            .iter()
            .find_map(|(_, _, d)| match d {
                DType::Quant(q) if q.name() == base => Some(q.block_len()),
                _ => None,
            })
            .unwrap_or(1);
        let mut out = LlamaQuantize {
            base,
            tensor_types: Vec::new(),
            token_embedding_type: None,
            output_tensor_type: None,
            requantize: model
                .tensors
                .iter()
                .any(|t| quantizable(&t.name, &t.shape) && matches!(t.dtype, DType::Quant(_))),
            caveats: Vec::new(),
        };
        for &(name, last, d) in &weights {
            let ty = d.name();
            match name {
                "token_embd.weight" => out.token_embedding_type = Some(ty),
                "output.weight" => out.output_tensor_type = Some(ty),
                _ => {
                    if name.chars().any(|c| c.is_ascii_uppercase()) {
                        out.caveats.push(format!(
                            "`{name}` has upper-case letters; llama-quantize lower-cases patterns, so its entry cannot match"
                        ));
                    }
                    if !last.is_multiple_of(block) {
                        out.caveats.push(format!(
                            "`{name}`: rows of {last} are not whole {base} blocks; llama-quantize \
                             keeps its own fallback there instead of {ty}"
                        ));
                    }
                    out.tensor_types.push((anchored(name), ty));
                }
            }
        }
        let learnt: Vec<&str> = applied
            .iter()
            .filter(|(_, t)| t.calibration.is_some())
            .map(|(_, t)| t.name.as_str())
            .collect();
        if let Some(first) = learnt.first() {
            let others = match learnt.len() {
                1 => " holds".to_owned(),
                n => format!(" and {} more hold", n - 1),
            };
            out.caveats.push(format!(
                "`{first}`{others} values a data-aware method learnt from calibration data \
                 (Wanda, SparseGPT, GPTQ, AWQ); llama-quantize writes their types from the \
                 original's values, not these"
            ));
        }
        Some(out)
    }

    /// The `--tensor-type-file`: one `pattern=type` per line.
    pub fn tensor_type_file(&self) -> String {
        self.tensor_types
            .iter()
            .map(|(p, t)| format!("{p}={t}\n"))
            .collect()
    }

    /// The command line, with `types_file` the file [`Self::tensor_type_file`] went to.
    pub fn command(&self, source: &str, out: &str, types_file: &str) -> String {
        let mut words = vec!["llama-quantize".to_owned()];
        if self.requantize {
            words.push("--allow-requantize".into());
        }
        if let Some(t) = self.token_embedding_type {
            words.push(format!("--token-embedding-type {t}"));
        }
        if let Some(t) = self.output_tensor_type {
            words.push(format!("--output-tensor-type {t}"));
        }
        words.push(format!("--tensor-type-file {}", quote(types_file)));
        words.extend([quote(source), quote(out), self.base.to_owned()]);
        words.join(" ")
    }
}

/// `s` quoted for a POSIX shell when it needs it.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+=:,@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-checked: dots and other regex characters are escaped, the name anchored.
    #[test]
    fn patterns_match_one_name() {
        assert_eq!(anchored("blk.0.attn_q.weight"), r"^blk\.0\.attn_q\.weight$");
        assert_eq!(anchored("a+b(c)"), r"^a\+b\(c\)$");
        assert_eq!(quote("/tmp/x y.gguf"), "'/tmp/x y.gguf'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("out/model.Q5_0.gguf"), "out/model.Q5_0.gguf");
    }
}
