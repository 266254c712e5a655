//! llama.cpp's importance matrices (`llama-imatrix` output), in both file forms,
//! read as `llama-quantize --imatrix` reads them: per weight tensor, the mean of
//! `x_j²` over the calibration tokens for every input column `j`.
//!
//! - GGUF (`general.type = imatrix`): tensors `<name>.in_sum2` (Σx², one row per
//!   matrix) and `<name>.counts` (tokens per matrix); the importance is
//!   `in_sum2 / counts`, or 1 where a matrix saw no token.
//! - Legacy `.dat`: `i32 n_entries`, then per entry `i32 len`, the name, `i32 ncall`,
//!   `i32 nval` and `nval` f32 values (already averaged, times `ncall`), then
//!   optionally `i32 chunks`, `i32 len` and the dataset's name. Parsed here with every
//!   length checked against the file, so a hostile file gets one line, not a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One importance matrix.
#[derive(Debug, Clone)]
pub struct Imatrix {
    pub path: PathBuf,
    /// Importance per input column, by weight tensor name (matrices of a 3-D
    /// expert tensor one after another).
    pub entries: HashMap<String, Vec<f32>>,
    /// The calibration texts it was computed on, as the file names them.
    pub datasets: Vec<String>,
    /// Calibration chunks it covers (0 where the file does not say).
    pub chunks: u64,
    /// sha256 of the file, for exports' provenance and cache keys.
    pub sha256: String,
}

impl Imatrix {
    /// Read the importance matrix at `path` (GGUF or legacy `.dat`).
    pub fn open(path: &Path) -> Result<Imatrix> {
        let bytes = crate::model::map_file(path)?;
        let sha256 = crate::checksum::sha256_file(path)?;
        let corrupt = |problem: String| Error::Corrupt {
            path: path.to_owned(),
            format: "imatrix",
            problem,
        };
        let (entries, datasets, chunks) = if bytes.starts_with(b"GGUF") {
            read_gguf(path)?
        } else {
            read_legacy(&bytes).map_err(corrupt)?
        };
        if entries.is_empty() {
            return Err(corrupt("it holds no importance entries".into()));
        }
        Ok(Imatrix {
            path: path.to_owned(),
            entries,
            datasets,
            chunks,
            sha256,
        })
    }

    /// The importance of `tensor`'s input columns, if the matrix has it.
    pub fn get(&self, tensor: &str) -> Option<&[f32]> {
        self.entries.get(tensor).map(Vec::as_slice)
    }

    /// Identifies the file's content (the first bytes of its sha256).
    pub fn key(&self) -> u64 {
        u64::from_str_radix(&self.sha256[..16], 16).unwrap_or_default()
    }
}

/// An importance matrix as collected, before averaging: what `llama-imatrix` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Sums {
    /// Per weight tensor: Σx² of each input column, and the tokens counted.
    pub entries: std::collections::BTreeMap<String, (Vec<f32>, f32)>,
    /// The calibration text's name.
    pub dataset: String,
    pub chunks: u32,
    pub chunk_size: u32,
}

impl Sums {
    /// The file `llama-imatrix` writes (GGUF, `general.type = imatrix`): per entry
    /// `<name>.in_sum2` (F32, ne = [columns, 1]) and `<name>.counts` (F32, [1, 1]) in
    /// name order, and the datasets, chunk count and chunk size. Byte-reproducible.
    pub fn encode_gguf(&self) -> Vec<u8> {
        const ALIGN: usize = 32;
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((2 * self.entries.len() as u64).to_le_bytes());
        out.extend(4u64.to_le_bytes());
        string(&mut out, "general.type");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "imatrix");
        string(&mut out, "imatrix.datasets");
        out.extend(9u32.to_le_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        string(&mut out, &self.dataset);
        for (key, v) in [
            ("imatrix.chunk_count", self.chunks),
            ("imatrix.chunk_size", self.chunk_size),
        ] {
            string(&mut out, key);
            out.extend(4u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        let mut data: Vec<u8> = Vec::new();
        for (name, (sums, count)) in &self.entries {
            for (suffix, values, ne0) in [
                ("in_sum2", sums.as_slice(), sums.len()),
                ("counts", std::slice::from_ref(count), 1),
            ] {
                string(&mut out, &format!("{name}.{suffix}"));
                out.extend(2u32.to_le_bytes());
                out.extend((ne0 as u64).to_le_bytes());
                out.extend(1u64.to_le_bytes());
                out.extend(0u32.to_le_bytes());
                out.extend((data.len() as u64).to_le_bytes());
                for v in values {
                    data.extend(v.to_le_bytes());
                }
                data.resize(data.len().next_multiple_of(ALIGN), 0);
            }
        }
        out.resize(out.len().next_multiple_of(ALIGN), 0);
        out.extend(data);
        out
    }
}

type Read = (HashMap<String, Vec<f32>>, Vec<String>, u64);

fn read_gguf(path: &Path) -> Result<Read> {
    let model = crate::Model::open(path)?;
    let corrupt = |problem: String| Error::Corrupt {
        path: path.to_owned(),
        format: "imatrix",
        problem,
    };
    let meta = |key: &str| model.metadata.iter().find(|(k, _)| k == key).map(|e| &e.1);
    if meta("general.type").and_then(|v| v.as_str()) != Some("imatrix") {
        return Err(corrupt(
            "a GGUF without general.type = imatrix: not an importance matrix".into(),
        ));
    }
    let mut entries = HashMap::new();
    for (i, t) in model.tensors.iter().enumerate() {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts_name = format!("{name}.counts");
        let Some(c) = model.tensor_index(&counts_name) else {
            return Err(corrupt(format!("`{}` has no `{counts_name}`", t.name)));
        };
        let sums = model.tensor_f32(i)?;
        let counts = model.tensor_f32(c)?;
        if counts.is_empty() || !sums.len().is_multiple_of(counts.len()) {
            return Err(corrupt(format!(
                "`{}` holds {} values for {} matrices",
                t.name,
                sums.len(),
                counts.len()
            )));
        }
        let per = sums.len() / counts.len();
        let mut values = Vec::with_capacity(sums.len());
        for (row, &count) in sums.chunks(per.max(1)).zip(&counts) {
            if count > 0.0 {
                values.extend(row.iter().map(|&s| s / count));
            } else {
                // llama.cpp: a matrix that got no input weighs every column alike.
                values.extend(std::iter::repeat_n(1.0, row.len()));
            }
        }
        entries.insert(name.to_owned(), values);
    }
    let datasets = match meta("imatrix.datasets") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let chunks = meta("imatrix.chunk_count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Ok((entries, datasets, chunks))
}

/// Reads little-endian fields off a byte slice, every read bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated: {what} at byte {} needs {n} bytes, {} are left",
                self.at,
                self.bytes.len() - self.at
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i32(&mut self, what: &str) -> std::result::Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn read_legacy(bytes: &[u8]) -> std::result::Result<Read, String> {
    let mut c = Cursor { bytes, at: 0 };
    let n = c.i32("the entry count")?;
    if n < 1 {
        return Err(format!(
            "{n} entries: not a llama.cpp importance matrix (GGUF or legacy .dat)"
        ));
    }
    let mut entries = HashMap::new();
    for e in 0..n {
        let len = c.i32("a name's length")?;
        if !(1..=4096).contains(&len) {
            return Err(format!("entry {e}: a name of {len} bytes"));
        }
        let name = std::str::from_utf8(c.take(len as usize, "a name")?)
            .map_err(|_| format!("entry {e}: the name is not UTF-8"))?
            .to_owned();
        let ncall = c.i32("a call count")?;
        let nval = c.i32("a value count")?;
        if nval < 1 {
            return Err(format!("`{name}`: {nval} values"));
        }
        let raw = c.take(nval as usize * 4, "the values")?;
        let mut values: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if ncall > 0 {
            for v in &mut values {
                *v /= ncall as f32;
            }
        }
        if entries.insert(name.clone(), values).is_some() {
            return Err(format!("`{name}` appears twice"));
        }
    }
    let (mut chunks, mut datasets) = (0, Vec::new());
    if c.at < bytes.len() {
        chunks = c.i32("the chunk count")?.max(0) as u64;
        let len = c.i32("the dataset name's length")?;
        if !(0..=65536).contains(&len) {
            return Err(format!("a dataset name of {len} bytes"));
        }
        let name = c.take(len as usize, "the dataset name")?;
        datasets.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok((entries, datasets, chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], tail: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, ncall, values) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((values.len() as i32).to_le_bytes());
            for v in *values {
                b.extend(v.to_le_bytes());
            }
        }
        if let Some((chunks, dataset)) = tail {
            b.extend(chunks.to_le_bytes());
            b.extend((dataset.len() as i32).to_le_bytes());
            b.extend(dataset.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_files_read_as_llama_quantize_reads_them() {
        let b = legacy(
            &[
                ("blk.0.attn_q.weight", 4, &[8.0, 2.0]),
                ("output.weight", 0, &[3.0]),
            ],
            Some((10, "wiki.train.raw")),
        );
        let (entries, datasets, chunks) = read_legacy(&b).expect("valid");
        // Values are divided by the call count (ncall 0: kept as stored).
        assert_eq!(entries["blk.0.attn_q.weight"], vec![2.0, 0.5]);
        assert_eq!(entries["output.weight"], vec![3.0]);
        assert_eq!((datasets, chunks), (vec!["wiki.train.raw".to_owned()], 10));
    }

    #[test]
    fn hostile_legacy_files_are_refused_with_the_reason() {
        let good = legacy(&[("w", 1, &[1.0, 2.0])], None);
        for cut in 0..good.len() {
            assert!(read_legacy(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[13..17].copy_from_slice(&i32::MAX.to_le_bytes());
        let e = read_legacy(&huge).expect_err("too many values");
        assert!(e.contains("truncated"), "{e}");
        let twice = legacy(&[("w", 1, &[1.0]), ("w", 1, &[1.0])], None);
        assert!(
            read_legacy(&twice)
                .expect_err("duplicate")
                .contains("twice")
        );
        assert!(read_legacy(&(-3i32).to_le_bytes()).is_err());
    }
}
