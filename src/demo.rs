//! The bundled demo (`assets/demo`: the digit CNN, 5,000 MNIST images, their
//! architecture and data specs) and evaluation text (`assets/text`). Compiled into
//! the binary and written to a cache folder on first use, so the app opens on it
//! wherever it runs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const FILES: [(&str, &[u8]); 6] = [
    (
        "digit_cnn.pth",
        include_bytes!("../assets/demo/digit_cnn.pth"),
    ),
    (
        "mnist_5k.csv.gz",
        include_bytes!("../assets/demo/mnist_5k.csv.gz"),
    ),
    (
        "digit_cnn.arch.toml",
        include_bytes!("../assets/demo/digit_cnn.arch.toml"),
    ),
    (
        "mnist_5k.toml",
        include_bytes!("../assets/demo/mnist_5k.toml"),
    ),
    (
        "eval_text.txt",
        include_bytes!("../assets/text/eval_text.txt"),
    ),
    (
        "sentence_pairs.tsv",
        include_bytes!("../assets/text/sentence_pairs.tsv"),
    ),
];

/// Where the demo's files are on disk.
#[derive(Debug, Clone)]
pub struct Demo {
    pub model: PathBuf,
    pub data: PathBuf,
    pub arch: PathBuf,
    /// The text language models are measured on (written for this project).
    pub text: PathBuf,
    /// Sentence pairs scored for similarity, for sentence encoders (written for this
    /// project).
    pub sentences: PathBuf,
}

/// The demo's files, written (atomically) to a per-version cache folder if missing.
pub fn files() -> Result<Demo> {
    let dir = std::env::temp_dir().join(format!("slimscope-demo-{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        write(&dir, &path, bytes)?;
    }
    Ok(Demo {
        model: dir.join("digit_cnn.pth"),
        data: dir.join("mnist_5k.toml"),
        arch: dir.join("digit_cnn.arch.toml"),
        text: dir.join("eval_text.txt"),
        sentences: dir.join("sentence_pairs.tsv"),
    })
}

fn write(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = crate::export::output_temp_file(dir)?;
    std::fs::write(tmp.path(), bytes).map_err(|e| Error::io(path, e))?;
    tmp.persist(path)
}
