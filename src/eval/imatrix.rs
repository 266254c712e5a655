//! Computing llama.cpp's importance matrix of a llama-family GGUF on a text, as
//! `llama-imatrix` does: for every matrix multiplication with a `blk.*` weight, the
//! sum of `x_j²` over all tokens for each input column `j`, and the number of tokens.
//!
//! The inputs come from the forward pass of [`llama_inputs`]. The text is cut into
//! chunks of `chunk` tokens, each scored from its own start, as `llama-imatrix -c`
//! does.

use std::collections::{BTreeMap, HashMap};

use candle_core::Tensor;

use super::{causal_lm, llama_inputs};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::imatrix::Sums;

/// The importance matrix of `model` (a llama GGUF) over the UTF-8 text at `text`,
/// in chunks of `chunk` tokens (the last, shorter chunk is dropped as llama.cpp
/// does). `progress(done, total)` counts layers and returns false to cancel.
pub fn compute(
    model: &Model,
    text: &std::path::Path,
    chunk: usize,
    progress: impl FnMut(usize, usize) -> bool,
) -> Result<Sums> {
    if !causal_lm::is_causal_lm(model) {
        return Err(Error::Unsupported {
            path: model.path.clone(),
            what: "an importance matrix is computed for GGUFs of the llama family".into(),
        });
    }
    let body = crate::text::read_text(text, 64 << 20)?;
    let ids = causal_lm::encode(model, &causal_lm::tokenizer(model)?, &body)?;
    if chunk < 2 {
        return Err(Error::InvalidSetting(format!(
            "chunks of {chunk} tokens: at least 2 are needed"
        )));
    }
    let chunks: Vec<&[u32]> = ids.chunks_exact(chunk).collect();
    if chunks.is_empty() {
        return Err(Error::Data {
            path: text.to_owned(),
            problem: format!(
                "the text has {} tokens, fewer than one chunk of {chunk}",
                ids.len()
            ),
        });
    }
    let mut record = Record {
        model,
        sums: HashMap::new(),
    };
    llama_inputs::run(model, text, &chunks, &mut record, progress)?;
    let entries: BTreeMap<String, (Vec<f32>, f32)> = record
        .sums
        .into_iter()
        .map(|(name, (s, n))| (name, (s.iter().map(|&v| v as f32).collect(), n as f32)))
        .collect();
    Ok(Sums {
        entries,
        dataset: text
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        chunks: chunks.len() as u32,
        chunk_size: chunk as u32,
    })
}

/// Σx² per column and the token count of every weight's input.
struct Record<'a> {
    model: &'a Model,
    sums: HashMap<String, (Vec<f64>, u64)>,
}

impl llama_inputs::Hooks for Record<'_> {
    fn observe(&mut self, names: &[String], x: &Tensor) -> Result<()> {
        let model = self.model;
        let sq: Vec<f32> = x
            .sqr()
            .and_then(|s| s.sum(0))
            .and_then(|s| s.to_vec1())
            .map_err(|e| Error::Engine {
                context: format!("{}: the importance matrix", model.path.display()),
                cause: e.to_string(),
            })?;
        for name in names {
            let entry = self
                .sums
                .entry(name.clone())
                .or_insert_with(|| (vec![0.0; sq.len()], 0));
            for (s, v) in entry.0.iter_mut().zip(&sq) {
                *s += f64::from(*v);
            }
            entry.1 += x.dims()[0] as u64;
        }
        Ok(())
    }
}
