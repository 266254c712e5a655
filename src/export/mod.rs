//! Writing results. Every write is atomic (a temporary file in the destination's
//! directory, then a rename), never touches the input, and refuses to replace an
//! existing file unless asked to.

mod compressed_tensors;
mod gguf;
mod llama_quantize;
mod onnx;
mod safetensors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use compressed_tensors::{CompressedTensorsExport, write_compressed_tensors};
pub use gguf::{encode_gguf, tensor_bytes as gguf_tensor_bytes, write_gguf};
pub use llama_quantize::LlamaQuantize;
pub use onnx::{OnnxExport, OnnxSettings, calibration_set, export_network, write_onnx};
pub use safetensors::write_safetensors;

use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::Model;

/// The container formats slimscope writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Safetensors,
    Gguf,
    /// An ONNX QDQ model ([`write_onnx`]): needs the network's graph.
    Onnx,
}

impl OutputFormat {
    /// The format `path`'s extension names.
    pub fn of(path: &Path) -> Result<OutputFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("gguf") => Ok(OutputFormat::Gguf),
            Some(e) if e.eq_ignore_ascii_case("safetensors") => Ok(OutputFormat::Safetensors),
            Some(e) if e.eq_ignore_ascii_case("onnx") => Ok(OutputFormat::Onnx),
            _ => Err(Error::InvalidSetting(format!(
                "{}: the output must end in .safetensors, .gguf or .onnx",
                path.display()
            ))),
        }
    }
}

/// Sizes before and after, and the per-tensor report: what `apply --json` prints and
/// what exports embed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary<'a> {
    /// The model's tensors as stored.
    pub bytes_before: u64,
    /// The same with the compressed tensors in their storage formats (an estimate
    /// for formats not written; see each tensor's report).
    pub bytes_after: u64,
    pub tensors: Vec<&'a AppliedTensor>,
}

impl Summary<'_> {
    /// The summary as JSON with every object's keys sorted: the bytes exports embed
    /// (and `apply --json` prints, indented), the same run to run.
    pub fn to_json(&self, pretty: bool) -> String {
        // Through a `Value`, whose maps keep keys sorted.
        let value = serde_json::to_value(self).unwrap_or_default();
        if pretty {
            serde_json::to_string_pretty(&value).unwrap_or_default()
        } else {
            value.to_string()
        }
    }
}

/// The [`Summary`] of `applied` on `model`.
pub fn summary<'a>(model: &Model, applied: &'a [(usize, AppliedTensor)]) -> Summary<'a> {
    let totals = crate::measure::Totals::of(model, applied);
    Summary {
        bytes_before: totals.bytes_before,
        bytes_after: totals.bytes_after,
        tensors: applied.iter().map(|(_, t)| t).collect(),
    }
}

/// Write the compressed model to `out` in the format its extension names, with the
/// recipe and the summary embedded in its metadata.
pub fn write_model(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    recipe: &str,
    out: &Path,
    force: bool,
) -> Result<()> {
    write_model_with(model, applied, recipe, &[], out, force)
}

/// [`write_model`] with more GGUF metadata (`gguf_extra`, for a `.gguf` output).
pub fn write_model_with(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    recipe: &str,
    gguf_extra: &[(&str, String)],
    out: &Path,
    force: bool,
) -> Result<()> {
    let format = OutputFormat::of(out)?;
    check_output(model, out, force)?;
    match format {
        OutputFormat::Gguf => {
            let mut extra = embedded(model, applied, recipe).to_vec();
            extra.extend_from_slice(gguf_extra);
            write_gguf(model, applied, &extra, out, force)
        }
        OutputFormat::Safetensors => write_safetensors(
            model,
            applied,
            safetensors_metadata(model, applied, recipe),
            out,
            force,
        ),
        OutputFormat::Onnx => Err(Error::InvalidSetting(format!(
            "{}: an ONNX export is written from the network's graph; use `slimscope apply` \
             with --arch or --data",
            out.display()
        ))),
    }
}

/// A safetensors export's `__metadata__`: `format = pt` (transformers refuses a file
/// without it), the recipe and the summary.
pub fn safetensors_metadata(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    recipe: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_owned(), "pt".to_owned()),
        ("slimscope_recipe".to_owned(), recipe.to_owned()),
        (
            "slimscope_summary".to_owned(),
            summary(model, applied).to_json(false),
        ),
    ])
}

/// The recipe and the summary, as GGUF and ONNX exports embed them in their metadata.
pub fn embedded(
    model: &Model,
    applied: &[(usize, AppliedTensor)],
    recipe: &str,
) -> [(&'static str, String); 2] {
    [
        ("slimscope.recipe", recipe.to_owned()),
        ("slimscope.summary", summary(model, applied).to_json(false)),
    ]
}

/// llama.cpp's own metadata for a GGUF quantized with an importance matrix
/// (`llama-quantize --imatrix` writes the same keys).
pub fn imatrix_metadata(
    importance: &crate::model::imatrix::Imatrix,
) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            "quantize.imatrix.file",
            importance.path.display().to_string(),
        ),
        (
            "quantize.imatrix.entries_count",
            importance.entries.len().to_string(),
        ),
        (
            "quantize.imatrix.chunks_count",
            importance.chunks.to_string(),
        ),
    ];
    if let Some(d) = importance.datasets.first() {
        out.push(("quantize.imatrix.dataset", d.clone()));
    }
    out
}

/// Write `text` to `out` atomically (a recipe beside an export).
pub fn write_text(out: &Path, text: &str, force: bool) -> Result<()> {
    write_bytes(out, text.as_bytes(), force)
}

/// Write `bytes` to `out` atomically (an image, a report).
pub fn write_bytes(out: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if out.exists() && !force {
        return Err(Error::InvalidSetting(format!(
            "{}: already exists (use --force to replace it)",
            out.display()
        )));
    }
    let tmp = temp_file_beside(out)?;
    std::fs::write(tmp.path(), bytes).map_err(|e| Error::io(out, e))?;
    persist(tmp, out, force)
}

/// Refuse to write `out` over the model's own file, or over an existing file unless
/// `force`.
pub fn check_output(model: &Model, out: &Path, force: bool) -> Result<()> {
    // Every file the model's bytes come from: its shards, its external data.
    let mut inputs: Vec<&Path> = vec![&model.path];
    for t in &model.tensors {
        if !inputs.contains(&t.origin.file.as_path()) {
            inputs.push(&t.origin.file);
        }
    }
    check_output_paths(&inputs, out, force)
}

/// The rule every output follows: never one of the command's `inputs` (the model, its
/// data, recipe or spec; through any link), never an existing file unless `force`.
pub fn check_output_paths(inputs: &[&Path], out: &Path, force: bool) -> Result<()> {
    if let Ok(real_out) = out.canonicalize()
        && let Some(input) = inputs
            .iter()
            .find(|i| i.canonicalize().is_ok_and(|i| i == real_out))
    {
        return Err(Error::InvalidSetting(format!(
            "{}: refusing to overwrite the input ({})",
            out.display(),
            input.display()
        )));
    }
    if out.is_dir() {
        return Err(Error::InvalidSetting(format!(
            "{}: is a directory; give a file name to write",
            out.display()
        )));
    }
    if out.exists() && !force {
        return Err(Error::InvalidSetting(format!(
            "{}: already exists (use --force to replace it)",
            out.display()
        )));
    }
    Ok(())
}

/// A temporary file in `out`'s directory, so that the final rename is atomic. Its
/// name says what it is (`model.gguf.slimscope-partial.XXXXXX`), and it is removed
/// when dropped unfinished, or by [`remove_partial_outputs`] on Ctrl-C.
fn temp_file_beside(out: &Path) -> Result<PartialFile> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    PartialFile::new(dir, &name)
}

/// A temporary file in `dir` that becomes an output: created with the mode an
/// ordinary new file gets (0666 less the umask), not tempfile's private 0600, so
/// an export is as readable as anything else the user writes.
pub(crate) fn output_temp_file(dir: &Path) -> Result<PartialFile> {
    PartialFile::new(dir, "output")
}

/// Outputs being written: the temporary files [`remove_partial_outputs`] deletes.
static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn partial_list() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PARTIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Delete every output still being written (for a Ctrl-C handler that is about to
/// end the process, so an interrupted export leaves nothing behind). Returns how
/// many there were.
pub fn remove_partial_outputs() -> usize {
    let mut list = partial_list();
    for path in list.iter() {
        let _ = std::fs::remove_file(path);
    }
    std::mem::take(&mut *list).len()
}

/// A temporary output file, registered for [`remove_partial_outputs`] until it is
/// persisted or dropped.
pub(crate) struct PartialFile {
    /// Always `Some` until persisted.
    tmp: Option<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl PartialFile {
    fn new(dir: &Path, name: &str) -> Result<PartialFile> {
        let mut builder = tempfile::Builder::new();
        let prefix = format!("{name}.slimscope-partial.");
        builder.prefix(&prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        // Created and registered under the lock, so a Ctrl-C cannot fall between.
        let mut list = partial_list();
        let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
        let path = tmp.path().to_owned();
        list.push(path.clone());
        Ok(PartialFile {
            tmp: Some(tmp),
            path,
        })
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    /// The open file, to write into.
    pub(crate) fn as_file(&self) -> Result<&std::fs::File> {
        self.tmp
            .as_ref()
            .map(|t| t.as_file())
            .ok_or_else(|| Error::Internal("the output was already finished".into()))
    }
    /// Move the finished file to `out`.
    pub(crate) fn persist(mut self, out: &Path) -> Result<()> {
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| Error::Internal("the output was already finished".into()))?;
        // Renamed and unregistered under the lock: a Ctrl-C sees either the
        // temporary file (and removes it) or the finished output, never half of one.
        let mut list = partial_list();
        let path = self.path.clone();
        let persisted = tmp.persist(out).map_err(|e| Error::io(out, e.error));
        list.retain(|p| *p != path);
        // Before `self` drops (its `Drop` takes the lock too).
        drop(list);
        persisted.map(|_| ())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Removed (by `tmp`'s own drop) and unregistered under the lock.
        let mut list = partial_list();
        self.tmp = None;
        let path = &self.path;
        list.retain(|p| p != path);
    }
}

/// Move the finished temporary file to `out` (unless `out` appeared meanwhile and
/// `force` is off).
fn persist(tmp: PartialFile, out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        return Err(Error::InvalidSetting(format!(
            "{}: appeared while writing; not replaced",
            out.display()
        )));
    }
    tmp.persist(out)
}
