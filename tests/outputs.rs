//! Outputs: loadable by the format's own reader, byte-identical run to run and at any
//! thread count, created with the ordinary file mode, never an input, and nothing left
//! behind by an interrupted export.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, mnist_spec, reference_script, slimscope};
use slimscope::Model;

const RECIPE: &str = "version = 1\n\n[[rule]]\nmatch = \"*.weight\"\nprune = { method = \"magnitude\", sparsity = 0.5, scope = \"global\" }\nquant = { format = \"int\", bits = 4, granularity = \"channel\" }\n";

fn recipe(dir: &Path) -> PathBuf {
    let path = dir.join("r.toml");
    std::fs::write(&path, RECIPE).expect("recipe");
    path
}

/// A recipe in `dir` that changes nothing: the model is written as it is.
fn none_recipe(dir: &Path) -> PathBuf {
    let path = dir.join("none.toml");
    std::fs::write(
        &path,
        "version = 1\n\n[[rule]]\nmatch = \"*\"\nprune = { method = \"none\" }\n",
    )
    .expect("recipe");
    path
}

/// `slimscope apply` with `threads` compute threads; panics unless it succeeds.
fn apply(model: &Path, recipe: &Path, out: &Path, threads: usize) {
    let output = Command::new(env!("CARGO_BIN_EXE_slimscope"))
        .args(["apply", "--force"])
        .arg(model)
        .arg("--recipe")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("run slimscope");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("slimscope-partial") || n.starts_with(".tmp"))
        .collect()
}

#[test]
fn exports_are_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = recipe(dir.path());
    for ext in ["safetensors", "gguf"] {
        let (a, b, c) = (
            dir.path().join(format!("a.{ext}")),
            dir.path().join(format!("b.{ext}")),
            dir.path().join(format!("c.{ext}")),
        );
        apply(&fixture("digit_cnn.pth"), &recipe, &a, 2);
        apply(&fixture("digit_cnn.pth"), &recipe, &b, 2);
        apply(&fixture("digit_cnn.pth"), &recipe, &c, 1);
        let read = |p: &Path| std::fs::read(p).expect("read export");
        assert!(
            read(&a) == read(&b),
            "two identical runs wrote different .{ext} files"
        );
        assert!(
            read(&a) == read(&c),
            "1 and 2 threads wrote different .{ext} files"
        );
    }
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn a_safetensors_export_loads_in_the_safetensors_package_with_our_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("m.safetensors");
    apply(&fixture("digit_cnn.pth"), &recipe(dir.path()), &out, 2);
    let read = reference_script("read_safetensors.py", &[out.to_str().expect("utf-8")]);
    let ours = Model::open(&out).unwrap_or_else(|e| panic!("{e}"));
    let tensors = read["tensors"].as_object().expect("tensors");
    assert_eq!(tensors.len(), ours.tensors.len());
    for (i, t) in ours.tensors.iter().enumerate() {
        let theirs = &tensors[&t.name];
        let shape: Vec<u64> = theirs["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        let sum: f64 = ours
            .tensor_f32(i)
            .expect("values")
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        let want = theirs["sum"].as_f64().expect("sum");
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{}: {sum} vs {want}",
            t.name
        );
    }
    let metadata = read["metadata"].as_object().expect("metadata");
    assert_eq!(metadata["format"], "pt");
    assert!(
        metadata["slimscope_recipe"]
            .as_str()
            .expect("recipe")
            .contains("magnitude")
    );
}

#[cfg(unix)]
#[test]
fn exports_get_the_ordinary_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ordinary = dir.path().join("ordinary.txt");
    std::fs::write(&ordinary, "x").expect("write");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    for ext in ["safetensors", "gguf"] {
        let out = dir.path().join(format!("m.{ext}"));
        apply(&fixture("digit_cnn.pth"), &recipe(dir.path()), &out, 2);
        assert_eq!(mode(&out), mode(&ordinary), ".{ext} export mode");
    }
}

#[test]
fn inspect_figures_do_not_depend_on_the_thread_count() {
    let json = |threads: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_slimscope"))
            .args(["inspect", "--json"])
            .arg(fixture("minilm.safetensors"))
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .expect("run slimscope");
        assert!(out.status.success());
        out.stdout
    };
    assert!(
        json("1") == json("2"),
        "inspect --json differs between 1 and 2 threads"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_an_export_leaves_nothing_behind() {
    // SmolLM2 dequantized to f32 safetensors: 538 MB written, long enough to be
    // interrupted in the middle of writing.
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = none_recipe(dir.path());
    let model = fixture("smollm2_q4_1.gguf");
    let run = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_slimscope"))
            .arg("apply")
            .arg(&model)
            .arg("--recipe")
            .arg(&recipe)
            .arg("-o")
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run slimscope")
    };
    // How long a whole export takes here (the faster of two, the first warms the
    // page cache), to interrupt at fractions of it: writing starts within the first
    // tenth, after the header is planned.
    let full = dir.path().join("full.safetensors");
    let whole = (0..2)
        .map(|_| {
            let start = std::time::Instant::now();
            assert!(run(&full).wait().expect("wait").success());
            std::fs::remove_file(&full).expect("remove");
            start.elapsed()
        })
        .min()
        .expect("two runs");
    let mut removed = 0;
    for (k, fraction) in [0.15, 0.3, 0.45, 0.6].into_iter().enumerate() {
        let out = dir.path().join(format!("m{k}.safetensors"));
        let mut child = run(&out);
        std::thread::sleep(whole.mul_f64(fraction));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let status = child.wait().expect("wait");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        assert!(
            leftovers(dir.path()).is_empty(),
            "after Ctrl-C at {fraction} of the run: {:?}",
            leftovers(dir.path())
        );
        match status.code() {
            // Interrupted: no output at all.
            Some(130) => {
                assert!(!out.exists(), "an interrupted export left {out:?}");
                removed += usize::from(stderr.contains("unfinished output was removed"));
            }
            // Finished before the signal: a complete file.
            Some(0) => {
                Model::open(&out).unwrap_or_else(|e| panic!("{e}"));
                std::fs::remove_file(&out).expect("remove");
            }
            other => panic!("exit {other:?} after Ctrl-C at {fraction} of the run: {stderr}"),
        }
    }
    assert!(
        removed > 0,
        "no Ctrl-C landed while the output was being written"
    );
}

#[test]
fn no_output_may_replace_an_input_even_with_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("cnn.pth");
    std::fs::copy(fixture("digit_cnn.pth"), &model).expect("copy");
    let spec = mnist_spec(dir.path());
    let before = std::fs::read(&model).expect("read");
    let m = model.to_str().expect("utf-8");
    let s = spec.to_str().expect("utf-8");
    // eval --write-arch onto the model, with and without --force.
    for force in [false, true] {
        let mut args = vec!["eval", m, "--data", s, "--write-arch", m];
        if force {
            args.push("--force");
        }
        let (code, _, stderr) = slimscope(&args);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("refusing to overwrite the input"),
            "{stderr}"
        );
    }
    // eval --write-arch onto an existing file without --force.
    let existing = dir.path().join("notes.toml");
    std::fs::write(&existing, "keep me").expect("write");
    let (code, _, stderr) = slimscope(&[
        "eval",
        m,
        "--data",
        s,
        "--write-arch",
        existing.to_str().expect("p"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&existing).expect("read"), "keep me");
    // sweep -o onto its data spec, even with --force.
    let (code, _, stderr) = slimscope(&[
        "sweep",
        m,
        "--data",
        s,
        "--prune",
        "magnitude",
        "--sparsity",
        "0.5",
        "--bits",
        "",
        "-o",
        s,
        "--force",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refusing to overwrite the input"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&model).expect("read"), before);
    assert!(
        std::fs::read_to_string(&spec)
            .expect("spec")
            .contains("label")
    );
}

#[test]
fn an_export_never_replaces_a_shard_of_its_own_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sharded = dir.path().join("sharded");
    std::fs::create_dir(&sharded).expect("mkdir");
    for f in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        std::fs::copy(fixture("sharded").join(f), sharded.join(f)).expect("copy");
    }
    let shard = sharded.join("model-00001-of-00002.safetensors");
    let before = std::fs::read(&shard).expect("read");
    let (code, _, stderr) = slimscope(&[
        "apply",
        "--force",
        sharded
            .join("model.safetensors.index.json")
            .to_str()
            .expect("utf-8"),
        "--recipe",
        recipe(dir.path()).to_str().expect("utf-8"),
        "-o",
        shard.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("refusing to overwrite the input"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&shard).expect("read"), before);
}

#[test]
fn a_tensor_named_like_safetensors_metadata_is_refused_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A .npy names its one tensor after the file.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".to_vec();
    header.resize(128 - 10 - 1, b' ');
    header.push(b'\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header);
    npy.extend([0u8; 8]);
    let model = dir.path().join("__metadata__.npy");
    std::fs::write(&model, npy).expect("write");
    let recipe = none_recipe(dir.path());
    let out = dir.path().join("out.safetensors");
    let (code, _, stderr) = slimscope(&[
        "apply",
        model.to_str().expect("utf-8"),
        "--recipe",
        recipe.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("reserves"), "{stderr}");
    assert!(!out.exists() && leftovers(dir.path()).is_empty());
}
