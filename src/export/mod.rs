//! Writing results. Every write is atomic (a temporary file in the destination's
//! directory, then a rename), never touches the input, and refuses to replace an
//! existing file unless asked to.

mod gguf;
mod safetensors;

use std::collections::HashMap;
use std::path::Path;

pub use gguf::{encode_gguf, write_gguf};
pub use safetensors::write_safetensors;

use crate::compress::apply::AppliedTensor;
use crate::error::{Error, Result};
use crate::model::Model;

/// The container formats slimscope writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Safetensors,
    Gguf,
}

impl OutputFormat {
    /// The format `path`'s extension names.
    pub fn of(path: &Path) -> Result<OutputFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("gguf") => Ok(OutputFormat::Gguf),
            Some(e) if e.eq_ignore_ascii_case("safetensors") => Ok(OutputFormat::Safetensors),
            _ => Err(Error::InvalidSetting(format!(
                "{}: the output must end in .safetensors or .gguf",
                path.display()
            ))),
        }
    }
}

/// Sizes before and after, and the per-tensor report: what `apply --json` prints and
/// what exports embed.
pub fn summary(model: &Model, applied: &[(usize, AppliedTensor)]) -> serde_json::Value {
    let before: u64 = model.tensors.iter().map(|t| t.size_bytes).sum();
    let after: u64 = before - applied.iter().map(|(_, t)| t.bytes_before).sum::<u64>()
        + applied.iter().map(|(_, t)| t.bytes_after).sum::<u64>();
    let report: Vec<&AppliedTensor> = applied.iter().map(|(_, t)| t).collect();
    serde_json::json!({ "bytes_before": before, "bytes_after": after, "tensors": report })
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
    let format = OutputFormat::of(out)?;
    check_output(model, out, force)?;
    let summary = summary(model, applied).to_string();
    match format {
        OutputFormat::Gguf => write_gguf(
            model,
            applied,
            &[
                ("slimscope.recipe", recipe.to_owned()),
                ("slimscope.summary", summary),
            ],
            out,
            force,
        ),
        OutputFormat::Safetensors => write_safetensors(
            model,
            applied,
            HashMap::from([
                ("format".to_owned(), "pt".to_owned()),
                ("slimscope_recipe".to_owned(), recipe.to_owned()),
                ("slimscope_summary".to_owned(), summary),
            ]),
            out,
            force,
        ),
    }
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
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(&model.path, out) {
        return Err(Error::InvalidSetting(format!(
            "{}: refusing to overwrite the input model",
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

/// A temporary file in `out`'s directory, so that the final rename is atomic.
fn temp_file_beside(out: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    output_temp_file(dir)
}

/// A temporary file in `dir` that becomes an output: created with the mode an
/// ordinary new file gets (0666 less the umask), not tempfile's private 0600, so
/// an export is as readable as anything else the user writes.
pub(crate) fn output_temp_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

/// Move the finished temporary file to `out` (unless `out` appeared meanwhile and
/// `force` is off).
fn persist(tmp: tempfile::NamedTempFile, out: &Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        return Err(Error::InvalidSetting(format!(
            "{}: appeared while writing; not replaced",
            out.display()
        )));
    }
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(())
}
