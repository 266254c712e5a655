//! Writing results. Every write is atomic (a temporary file in the destination's
//! directory, then a rename), never touches the input, and refuses to replace an
//! existing file unless asked to.

mod gguf;
mod safetensors;

use std::path::Path;

pub use gguf::write_gguf;
pub use safetensors::write_safetensors;

use crate::error::{Error, Result};
use crate::model::Model;

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
    tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))
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
