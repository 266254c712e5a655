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

/// Names in natural order: runs of digits compare as numbers, so `blk.2` comes
/// before `blk.10` (the rest compares as text).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (m, n) = (run(x), run(y));
                // Compare the numbers without parsing them (any length): leading
                // zeros off, then the length, then the digits; then the zeros.
                let strip = |d: &[u8]| {
                    let z = d.iter().take_while(|&&c| c == b'0').count();
                    (d.len() - z, z)
                };
                let ((lx, zx), (ly, zy)) = (strip(&x[..m]), strip(&y[..n]));
                let by_value = lx
                    .cmp(&ly)
                    .then_with(|| x[m - lx..m].cmp(&y[n - ly..n]))
                    .then(zx.cmp(&zy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (&x[m..], &y[n..]);
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
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

    /// Hand-ordered: llama.cpp's block names and a few edge cases.
    #[test]
    fn names_sort_in_natural_order() {
        let mut names = vec![
            "blk.10.attn_q.weight",
            "blk.2.attn_q.weight",
            "blk.1.ffn_up.weight",
            "blk.1.attn_q.weight",
            "output.weight",
            "blk.02.x",
            "blk.2.attn_k.weight",
        ];
        names.sort_by(|a, b| super::natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "blk.1.attn_q.weight",
                "blk.1.ffn_up.weight",
                "blk.2.attn_k.weight",
                "blk.2.attn_q.weight",
                "blk.02.x",
                "blk.10.attn_q.weight",
                "output.weight",
            ]
        );
    }
}
