//! Labelled data sets for evaluation: CSV and CSV.gz (label column by index or name),
//! MNIST IDX (.gz) image + label files, NumPy .npz (`x`, `y`). A data file opens with
//! no preprocessing; a small TOML data spec names the file and how to prepare it:
//!
//! ```toml
//! file = "mnist_5k.csv.gz"    # relative to this spec
//! label = "last"              # "last", "first", a column index, or a header name
//! divide = 255.0              # x / divide, then (x − mean[c]) / std[c] per channel c
//! mean = [0.1307]
//! std = [0.3081]
//! shape = [1, 28, 28]         # one sample's shape (the model's input)
//! # labels = "t10k-labels-idx1-ubyte.gz"   # IDX only: the label file
//! # skip = 1000                            # leave out the first N samples
//! # limit = 1000                           # then keep the first N only
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Samples, row-major, with their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file the samples came from (for messages).
    pub source: PathBuf,
    /// `labels.len() × sample_len` values.
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
    /// One sample's shape.
    pub sample_shape: Vec<usize>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }
    /// A warning naming how many feature values are NaN or ±inf, if any are: they
    /// pass through every model as NaN, so users must hear of them (as `inspect`
    /// reports non-finite weights).
    pub fn non_finite_warning(&self) -> Option<String> {
        let nan = self.x.iter().filter(|v| v.is_nan()).count();
        let inf = self.x.iter().filter(|v| v.is_infinite()).count();
        (nan + inf > 0).then(|| {
            format!(
                "{}: {nan} NaN and {inf} ±inf feature values (of {}); they make the model's outputs NaN",
                self.source.display(),
                self.x.len()
            )
        })
    }

    /// One more than the largest label.
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// `n` samples spread evenly over the set (the `k`-th at `⌊(k + ½)·len/n⌋`, so a
    /// set sorted by class gives every class its share) kept apart for calibration,
    /// and the rest to evaluate on: `(evaluation, calibration)`. At least one
    /// sample must be left to evaluate.
    pub fn split_apart(&self, n: usize) -> Result<(Dataset, Dataset)> {
        let total = self.len();
        if n == 0 || n >= total {
            return Err(Error::Data {
                path: self.source.clone(),
                problem: format!(
                    "holds {total} samples: too few to keep {n} apart for calibration and \
                     evaluate on the rest (lower the recipe's [calibration] samples or [activations] \
                     calibration)"
                ),
            });
        }
        let mut apart = vec![false; total];
        for k in 0..n {
            apart[((2 * k + 1) * total) / (2 * n)] = true;
        }
        let len = self.sample_len();
        let part = |keep: bool| {
            let picked: Vec<usize> = (0..total).filter(|&i| apart[i] == keep).collect();
            Dataset {
                source: self.source.clone(),
                x: picked
                    .iter()
                    .flat_map(|&i| self.x[i * len..(i + 1) * len].iter().copied())
                    .collect(),
                labels: picked.iter().map(|&i| self.labels[i]).collect(),
                sample_shape: self.sample_shape.clone(),
            }
        };
        Ok((part(false), part(true)))
    }
}

/// Which CSV column holds the label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(untagged)]
pub enum LabelColumn {
    Index(usize),
    /// `"last"`, `"first"`, or a header name.
    Named(String),
    #[default]
    #[serde(skip)]
    Last,
}

/// A TOML data spec (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub file: PathBuf,
    #[serde(default)]
    pub labels: Option<PathBuf>,
    #[serde(default)]
    pub label: LabelColumn,
    #[serde(default)]
    pub divide: Option<f32>,
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub std: Vec<f32>,
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    #[serde(default)]
    pub skip: Option<usize>,
    #[serde(default)]
    pub limit: Option<usize>,
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Open a data file, or a `.toml` data spec, as a data set.
pub fn load(path: &Path) -> Result<Dataset> {
    let is_spec = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if !is_spec {
        return load_file(path, None, &LabelColumn::Last);
    }
    let text = crate::text::read_settings(path)?;
    let spec: DataSpec =
        toml::from_str(&text).map_err(|e| bad(path, crate::text::toml_error(&text, &e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = dir.join(&spec.file);
    let labels = spec.labels.as_ref().map(|l| dir.join(l));
    let mut data = load_file(&file, labels.as_deref(), &spec.label)?;
    if let Some(skip) = spec.skip {
        if skip >= data.len() {
            return Err(bad(
                path,
                format!(
                    "skip = {skip} leaves no samples ({} has {})",
                    file.display(),
                    data.len()
                ),
            ));
        }
        data.x.drain(..skip * data.sample_len());
        data.labels.drain(..skip);
    }
    if let Some(limit) = spec.limit {
        if limit == 0 {
            return Err(bad(path, "limit = 0 keeps no samples"));
        }
        let n = limit.min(data.len());
        data.x.truncate(n * data.sample_len());
        data.labels.truncate(n);
    }
    prepare(&mut data, &spec, path)?;
    Ok(data)
}

/// A data set with no samples, or samples of no values, measures nothing: refuse it
/// rather than report 0 %.
fn check_not_empty(data: &Dataset) -> Result<()> {
    if data.is_empty() {
        return Err(bad(&data.source, "holds no samples"));
    }
    if data.sample_len() == 0 {
        return Err(bad(
            &data.source,
            "its samples hold no values (only a label column)",
        ));
    }
    Ok(())
}

/// Apply a spec's reshape, scaling and normalisation.
fn prepare(data: &mut Dataset, spec: &DataSpec, path: &Path) -> Result<()> {
    if let Some(shape) = &spec.shape {
        if shape.is_empty() || shape.contains(&0) {
            return Err(bad(path, format!("shape {shape:?} is not a sample shape")));
        }
        let want = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(path, format!("shape {shape:?} is absurdly large")))?;
        if want != data.sample_len() {
            return Err(bad(
                path,
                format!(
                    "shape {shape:?} holds {want} values but each sample of {} has {}",
                    data.source.display(),
                    data.sample_len()
                ),
            ));
        }
        data.sample_shape = shape.clone();
    }
    if let Some(d) = spec.divide {
        if !(d.is_finite() && d != 0.0) {
            return Err(bad(
                path,
                format!("divide must be a non-zero number, got {d}"),
            ));
        }
        data.x.iter_mut().for_each(|v| *v /= d);
    }
    if spec.mean.is_empty() && spec.std.is_empty() {
        return Ok(());
    }
    let channels = if data.sample_shape.len() > 1 {
        data.sample_shape[0]
    } else {
        1
    };
    let per = |v: &[f32], name: &str, default: f32| -> Result<Vec<f32>> {
        match v.len() {
            0 => Ok(vec![default; channels]),
            1 => Ok(vec![v[0]; channels]),
            n if n == channels => Ok(v.to_vec()),
            n => Err(bad(
                path,
                format!("{name} has {n} values; the samples have {channels} channel(s)"),
            )),
        }
    };
    let mean = per(&spec.mean, "mean", 0.0)?;
    let std = per(&spec.std, "std", 1.0)?;
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(bad(path, "std must be non-zero"));
    }
    let len = data.sample_len().max(1);
    let plane = len / channels;
    for sample in data.x.chunks_mut(len) {
        for (c, values) in sample.chunks_mut(plane.max(1)).enumerate() {
            values.iter_mut().for_each(|v| *v = (*v - mean[c]) / std[c]);
        }
    }
    Ok(())
}

/// The largest data file read (after un-gzipping): data sets are held in memory, and
/// a small gzip "bomb" must not be able to exhaust it.
const MAX_DATA_BYTES: u64 = 4 << 30;

/// The file's bytes, un-gzipped when they are gzip.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let too_large = || {
        bad(
            path,
            format!(
                "holds more than {} GiB of data; keep a data set under that",
                MAX_DATA_BYTES >> 30
            ),
        )
    };
    let raw = crate::bounded::read_file_at_most(path, MAX_DATA_BYTES)?.ok_or_else(too_large)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    crate::bounded::read_at_most(
        flate2::read::MultiGzDecoder::new(raw.as_slice()),
        MAX_DATA_BYTES,
    )
    .map_err(|e| bad(path, format!("not a valid gzip file ({e})")))?
    .ok_or_else(too_large)
}

fn load_file(path: &Path, labels: Option<&Path>, column: &LabelColumn) -> Result<Dataset> {
    let data = load_any(path, labels, column)?;
    check_not_empty(&data)?;
    Ok(data)
}

fn load_any(path: &Path, labels: Option<&Path>, column: &LabelColumn) -> Result<Dataset> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".npz") {
        return load_npz(path);
    }
    let bytes = read_maybe_gz(path)?;
    // IDX starts with two zero bytes, which no text file does.
    if bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0 {
        let labels =
            labels.ok_or_else(|| bad(path, "an IDX image file needs `labels` (the label file)"))?;
        return load_idx(path, &bytes, labels);
    }
    load_csv(path, &bytes, column)
}

fn load_csv(path: &Path, bytes: &[u8], column: &LabelColumn) -> Result<Dataset> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad(path, "not text (UTF-8) CSV"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    let first: Vec<&str> = lines
        .peek()
        .ok_or_else(|| bad(path, "no rows"))?
        .split(',')
        .map(str::trim)
        .collect();
    let header = first.iter().any(|f| f.parse::<f64>().is_err());
    let names: Vec<String> = if header {
        lines.next();
        first.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    let columns = first.len();
    let label_at = match column {
        LabelColumn::Last => columns - 1,
        LabelColumn::Index(i) if *i < columns => *i,
        LabelColumn::Index(i) => {
            return Err(bad(
                path,
                format!("label column {i} does not exist ({columns} columns)"),
            ));
        }
        LabelColumn::Named(n) if n == "last" => columns - 1,
        LabelColumn::Named(n) if n == "first" => 0,
        LabelColumn::Named(n) => names.iter().position(|h| h == n).ok_or_else(|| {
            bad(
                path,
                if header {
                    format!("no column named `{n}` in the header")
                } else {
                    format!("no header row to find column `{n}` in")
                },
            )
        })?,
    };
    let mut x = Vec::new();
    let mut labels = Vec::new();
    for (r, line) in lines.enumerate() {
        let row = r + 1 + usize::from(header);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(bad(
                path,
                format!(
                    "row {row} has {} columns, the first has {columns}",
                    fields.len()
                ),
            ));
        }
        for (c, f) in fields.iter().enumerate() {
            // The field itself is not quoted: the file may not be a data set at all.
            let v: f64 = f
                .parse()
                .map_err(|_| bad(path, format!("row {row}, column {c} is not a number")))?;
            if c == label_at {
                if v < 0.0 || v.fract() != 0.0 || v > f64::from(u32::MAX) {
                    return Err(bad(
                        path,
                        format!("row {row}: the label is not a class number (0, 1, 2, …)"),
                    ));
                }
                labels.push(v as u32);
            } else {
                x.push(v as f32);
            }
        }
    }
    Ok(Dataset {
        source: path.to_owned(),
        x,
        labels,
        sample_shape: vec![columns - 1],
    })
}

/// Bytes per element of IDX type code `code` (LeCun's MNIST page: 0x08 ubyte,
/// 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double; all big-endian).
fn idx_elem_bytes(code: u8) -> Option<usize> {
    Some(match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        _ => return None,
    })
}

/// An IDX file: magic (0, 0, type, dims), big-endian u32 dimensions, then the data,
/// decoded to f32 values.
fn idx(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>, u8)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an IDX file"));
    }
    let code = bytes[2];
    let elem = idx_elem_bytes(code)
        .ok_or_else(|| bad(path, format!("unknown IDX element type 0x{code:02x}")))?;
    let dims = bytes[3] as usize;
    let head = 4 + 4 * dims;
    if dims == 0 || bytes.len() < head {
        return Err(bad(path, "the IDX header ends early"));
    }
    let shape: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(path, "absurd IDX dimensions"))?;
    let data = &bytes[head..];
    if n.checked_mul(elem) != Some(data.len()) {
        return Err(bad(
            path,
            format!(
                "the IDX header says {n} values of {elem} bytes, the file holds {} bytes of data",
                data.len()
            ),
        ));
    }
    let values = data
        .chunks_exact(elem)
        .map(|b| match code {
            0x08 => f32::from(b[0]),
            0x09 => f32::from(b[0] as i8),
            0x0B => f32::from(i16::from_be_bytes([b[0], b[1]])),
            0x0C => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f32,
            0x0D => f32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        })
        .collect();
    Ok((shape, values, code))
}

fn load_idx(path: &Path, bytes: &[u8], labels: &Path) -> Result<Dataset> {
    let (shape, x, _) = idx(path, bytes)?;
    let (lshape, lvalues, lcode) = idx(labels, &read_maybe_gz(labels)?)?;
    if lshape.len() != 1 || shape.first() != lshape.first() {
        return Err(bad(
            labels,
            format!(
                "{} labels for {} images in {}",
                lshape.first().copied().unwrap_or(0),
                shape.first().copied().unwrap_or(0),
                path.display()
            ),
        ));
    }
    if matches!(lcode, 0x0D | 0x0E) {
        return Err(bad(labels, "IDX labels must be integers, not floats"));
    }
    let labels_out = lvalues
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 {
                Ok(v as u32)
            } else {
                Err(bad(labels, format!("label {i} is negative")))
            }
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(Dataset {
        source: path.to_owned(),
        x,
        labels: labels_out,
        sample_shape: shape[1..].to_vec(),
    })
}

fn load_npz(path: &Path) -> Result<Dataset> {
    let model = crate::model::Model::open(path)?;
    let find = |name: &str| {
        model.tensor_index(name).ok_or_else(|| {
            bad(
                path,
                format!("no array `{name}` (a labelled .npz holds `x` and `y`)"),
            )
        })
    };
    let (xi, yi) = (find("x")?, find("y")?);
    let x = model.tensor_f32(xi)?;
    let y = model.tensor_f32(yi)?;
    let shape: Vec<usize> = model.tensors[xi]
        .shape
        .iter()
        .map(|&d| d as usize)
        .collect();
    let n = y.len();
    if shape.first() != Some(&n) {
        return Err(bad(
            path,
            format!("x has shape {shape:?} but y has {n} labels"),
        ));
    }
    let labels = y
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v.fract() == 0.0 {
                Ok(v as u32)
            } else {
                Err(bad(path, format!("y[{i}] = {v} is not a class number")))
            }
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(Dataset {
        source: path.to_owned(),
        x,
        labels,
        sample_shape: shape[1..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::Dataset;

    /// Hand-derived: of 10 samples, 3 kept apart are the ⌊(2k + 1)·10/6⌋-th: 1, 5, 8.
    #[test]
    fn calibration_samples_are_spread_over_the_set() {
        let data = Dataset {
            source: "d.csv".into(),
            x: (0..20).map(|v| v as f32).collect(),
            labels: (0..10).collect(),
            sample_shape: vec![2],
        };
        let (rest, apart) = data.split_apart(3).expect("split");
        assert_eq!(apart.labels, [1, 5, 8]);
        assert_eq!(apart.x, [2.0, 3.0, 10.0, 11.0, 16.0, 17.0]);
        assert_eq!(rest.labels, [0, 2, 3, 4, 6, 7, 9]);
        assert!(data.split_apart(10).is_err() && data.split_apart(0).is_err());
    }
}
