//! Reading at most a given number of bytes. Whatever a file, an archive member or a
//! decompressor claims, a read of it stops one byte past its bound, so a lying length,
//! a huge file or a decompression bomb costs no more memory than the bound.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Everything `reader` yields if that is at most `max_bytes`; `None` if it yields
/// more (having read `max_bytes + 1`).
pub fn read_at_most(reader: impl Read, max_bytes: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max_bytes).then_some(bytes))
}

/// The file at `path` if it is a regular file (a pipe or device could block or never
/// end) of at most `max_bytes`; `None` if it is larger.
pub fn read_file_at_most(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>> {
    Error::regular_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_at_most(file, max_bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_bound_and_refuses_one_byte_more() {
        let data = [7u8; 10];
        assert_eq!(
            read_at_most(&data[..], 10).expect("read"),
            Some(data.to_vec())
        );
        assert_eq!(read_at_most(&data[..], 9).expect("read"), None);
        assert_eq!(
            read_at_most(&data[..], u64::MAX).expect("read"),
            Some(data.to_vec())
        );
    }
}
