//! Text that came from a file, made safe to print on a terminal.
//!
//! Tensor names, metadata keys and header fragments are chosen by whoever wrote the
//! file: raw control bytes in them could move the cursor, rewrite the terminal's
//! title or hide text. Everything the CLI prints from a file goes through
//! [`printable`], which leaves ordinary text untouched.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{Error, Result};

/// The largest settings file (recipe, data or architecture spec) read: real ones are
/// a few kilobytes, and a settings file must never be a way to exhaust memory.
pub const MAX_SETTINGS_BYTES: u64 = 16 << 20;

/// `s` with control characters (C0, DEL, C1) and bidirectional overrides escaped as
/// `\u{..}` (`\n`, `\t`, `\r` as themselves, escaped), so it prints on one line
/// exactly as the characters it holds.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A small text file (a recipe, a spec), refused in one line if it is larger than
/// [`MAX_SETTINGS_BYTES`] or not UTF-8 — never echoed.
pub fn read_settings(path: &Path) -> Result<String> {
    read_text(path, MAX_SETTINGS_BYTES)
}

/// A UTF-8 text file of at most `max_bytes`, read only if it is a regular file (a pipe
/// or device could block or never end); refused in one line otherwise, never echoed.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String> {
    let Some(bytes) = crate::bounded::read_file_at_most(path, max_bytes)? else {
        return Err(Error::InvalidSetting(format!(
            "{}: larger than {} MiB, more than slimscope reads from such a file",
            path.display(),
            max_bytes >> 20
        )));
    };
    String::from_utf8(bytes).map_err(|e| {
        Error::InvalidSetting(format!(
            "{}: not a UTF-8 text file (byte {} is not UTF-8)",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// A TOML parse error as one line: `line N: message`, without the quoted snippet
/// (which would echo the file's contents).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(1, |head| head.matches('\n').count() + 1);
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_escaped_and_plain_text_is_untouched() {
        assert!(matches!(printable("conv1.weight"), Cow::Borrowed(_)));
        assert_eq!(printable("bl\u{1b}[2Jk"), "bl\\u{1b}[2Jk");
        assert_eq!(printable("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("gewichte.ä"), "gewichte.ä");
    }
}
