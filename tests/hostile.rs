//! The hostile-input suite: crafted files of every format (truncations, absurd
//! counts, offsets and shapes, duplicate names, bombs, deep and exponential pickles,
//! symlinks out of the model's folder) and a seeded mutation fuzzer over the real
//! fixtures. Every case runs `slimscope inspect` in its own process, under a memory
//! limit and a time limit, and must end in one of two ways:
//! - exit 0 (the file was readable), or
//! - exit 2 with exactly one line on stderr, `error: …FILE…: problem`;
//!
//! never a panic, an abort, a signal, a hang or a second line. Cases with a known
//! answer also check it (the message for refusals, values elsewhere).

mod common;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{field_bytes, field_varint, fixture};

/// Wall-clock limit of one case (a debug build, two cores shared by two workers).
const TIME_LIMIT: Duration = Duration::from_secs(30);
/// Address-space limit of one case: a safety net so a regression cannot take the
/// machine's memory; the resident-set bound below is the real check.
const ADDRESS_SPACE_LIMIT: u64 = 6 << 30;
/// The most resident memory any case may use.
const MAX_RSS_KIB: i64 = 768 << 10;
/// Mutated copies per fixture.
const MUTATIONS_PER_FIXTURE: u64 = 400;

/// What a case must end in.
#[derive(Clone, Debug)]
enum Expect {
    /// Either outcome, as long as it is a clean one.
    Any,
    /// A refusal whose message contains this text.
    Refused(&'static str),
    /// Opens and inspects.
    Opens,
}

struct Case {
    /// The format and what was done to it, for the report.
    format: &'static str,
    label: String,
    /// Files of the case, written into its own folder.
    files: Vec<(String, Vec<u8>)>,
    /// Symbolic links (name → target) made beside them.
    links: Vec<(String, PathBuf)>,
    /// The file to inspect.
    open: String,
    expect: Expect,
    /// When set, makes the bytes of `open` as the case runs (mutated copies, big
    /// files), so the suite never holds every case in memory at once: a child
    /// process's peak-memory figure starts from its parent's at fork time.
    make: Option<Maker>,
}

type Maker = Box<dyn Fn() -> Vec<u8> + Send>;

impl Case {
    fn one(
        format: &'static str,
        label: impl Into<String>,
        name: &str,
        bytes: Vec<u8>,
        expect: Expect,
    ) -> Case {
        Case {
            format,
            label: label.into(),
            files: vec![(name.to_owned(), bytes)],
            links: Vec::new(),
            open: name.to_owned(),
            expect,
            make: None,
        }
    }
    fn lazy(
        format: &'static str,
        label: impl Into<String>,
        name: &str,
        make: Maker,
        expect: Expect,
    ) -> Case {
        Case {
            make: Some(make),
            ..Case::one(format, label, name, Vec::new(), expect)
        }
    }
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
    timed_out: bool,
    /// Peak resident memory of the case's process.
    max_rss_kib: i64,
}

#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports its peak memory"
)]
fn run_inspect(path: &Path) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slimscope"));
    command
        .arg("inspect")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = command.spawn().expect("run slimscope");
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::Builder::new()
        .name("case-stderr".into())
        .spawn(move || {
            let mut text = Vec::new();
            // Bounded: a runaway stream of messages is itself a failure.
            let _ = (&mut pipe).take(64 << 10).read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
        .expect("spawn the stderr reader");
    let pid = child.id() as libc::pid_t;
    let mut timed_out = false;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child, writing into locals; std's `Child` is not
        // waited on afterwards (its pid is reaped here).
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break;
        }
        assert!(
            done == 0,
            "wait4 failed: {}",
            std::io::Error::last_os_error()
        );
        if start.elapsed() > TIME_LIMIT && !timed_out {
            timed_out = true;
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Outcome {
        code,
        stderr: reader.join().unwrap_or_default(),
        elapsed,
        timed_out,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Why a case's outcome is not acceptable, if it is not.
fn judge(case: &Case, out: &Outcome) -> Option<String> {
    if out.timed_out {
        return Some(format!("took more than {TIME_LIMIT:?}"));
    }
    if out.max_rss_kib > MAX_RSS_KIB {
        return Some(format!(
            "used {} MiB of resident memory (bound {} MiB)",
            out.max_rss_kib >> 10,
            MAX_RSS_KIB >> 10
        ));
    }
    if out.stderr.contains("panicked") || out.stderr.contains("RUST_BACKTRACE") {
        return Some(format!("panicked: {}", out.stderr.trim()));
    }
    let lines: Vec<&str> = out.stderr.lines().collect();
    match out.code {
        Some(0) => {
            if let Expect::Refused(what) = case.expect {
                return Some(format!("opened, but should be refused with `{what}`"));
            }
            // Warnings (NaN weights, …) are fine on success; nothing else.
            if let Some(l) = lines.iter().find(|l| !l.starts_with("warning: ")) {
                return Some(format!("exit 0 with stray stderr: {l}"));
            }
            None
        }
        Some(2) => {
            if matches!(case.expect, Expect::Opens) {
                return Some(format!("refused, but should open: {}", out.stderr.trim()));
            }
            if lines.len() != 1 {
                return Some(format!("{} lines on stderr: {:?}", lines.len(), out.stderr));
            }
            let line = lines[0];
            if !line.starts_with("error: ") {
                return Some(format!("not an `error:` line: {line}"));
            }
            let names_a_file = case
                .files
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(case.links.iter().map(|(n, _)| n.as_str()))
                .any(|n| line.contains(n));
            if !names_a_file {
                return Some(format!("the error names none of the case's files: {line}"));
            }
            if let Expect::Refused(what) = case.expect
                && !line.contains(what)
            {
                return Some(format!("refused without saying `{what}`: {line}"));
            }
            if line.chars().any(|c| c.is_control()) {
                return Some(format!(
                    "raw control characters reach the terminal: {line:?}"
                ));
            }
            None
        }
        other => Some(format!(
            "exit {other:?} (killed by a signal or aborted): {}",
            out.stderr.trim()
        )),
    }
}

/// Run every case on two workers; panic with every failure, and print a per-format
/// tally with the slowest case.
fn run_all(cases: Vec<Case>) {
    let root = tempfile::tempdir().expect("tempdir");
    let queue = Mutex::new(cases.into_iter().enumerate().collect::<Vec<_>>());
    let failures = Mutex::new(Vec::new());
    let tally = Mutex::new(std::collections::BTreeMap::<
        &'static str,
        (usize, usize, Duration, i64),
    >::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some((i, case)) = queue.lock().expect("queue").pop() else {
                        break;
                    };
                    let dir = root.path().join(format!("case{i}"));
                    std::fs::create_dir_all(&dir).expect("case dir");
                    if let Some(make) = &case.make {
                        std::fs::write(dir.join(&case.open), make()).expect("write case");
                    }
                    for (name, bytes) in case.files.iter().filter(|_| case.make.is_none()) {
                        let path = dir.join(name);
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).expect("dir");
                        }
                        std::fs::write(path, bytes).expect("write case");
                    }
                    for (name, target) in &case.links {
                        std::os::unix::fs::symlink(target, dir.join(name)).expect("symlink");
                    }
                    let out = run_inspect(&dir.join(&case.open));
                    let verdict = judge(&case, &out);
                    {
                        let mut t = tally.lock().expect("tally");
                        let e = t.entry(case.format).or_default();
                        e.0 += 1;
                        e.1 += usize::from(out.code == Some(2));
                        e.2 = e.2.max(out.elapsed);
                        e.3 = e.3.max(out.max_rss_kib);
                    }
                    if let Some(why) = verdict {
                        failures
                            .lock()
                            .expect("failures")
                            .push(format!("[{}] {}: {why}", case.format, case.label));
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
            });
        }
    });
    for (format, (n, refused, slowest, peak)) in tally.into_inner().expect("tally") {
        eprintln!(
            "hostile: {format:<12} {n:>5} cases, {refused:>5} refused, {:>5} opened, slowest {slowest:.2?}, peak memory {} MiB",
            n - refused,
            peak >> 10
        );
    }
    let failures = failures.into_inner().expect("failures");
    assert!(
        failures.is_empty(),
        "{} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- writers for hand-made files ----------------------------------------------------

fn f32s(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// A GGUF file, field by field.
#[derive(Default, Clone)]
struct Gguf {
    version: u32,
    kv: Vec<(Vec<u8>, u32, Vec<u8>)>,
    /// (name, ne, ggml type, offset)
    tensors: Vec<(Vec<u8>, Vec<u64>, u32, u64)>,
    /// Overrides of the two counts.
    counts: Option<(u64, u64)>,
    data: Vec<u8>,
}

fn gguf_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend(s);
    v
}

impl Gguf {
    fn new() -> Gguf {
        Gguf {
            version: 3,
            ..Gguf::default()
        }
    }
    fn kv_u32(mut self, key: &str, v: u32) -> Gguf {
        self.kv
            .push((key.as_bytes().to_vec(), 4, v.to_le_bytes().to_vec()));
        self
    }
    fn tensor(mut self, name: &[u8], ne: &[u64], ty: u32, offset: u64) -> Gguf {
        self.tensors.push((name.to_vec(), ne.to_vec(), ty, offset));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        let (tc, kc) = self
            .counts
            .unwrap_or((self.tensors.len() as u64, self.kv.len() as u64));
        out.extend(tc.to_le_bytes());
        out.extend(kc.to_le_bytes());
        for (k, ty, v) in &self.kv {
            out.extend(gguf_str(k));
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        for (name, ne, ty, offset) in &self.tensors {
            out.extend(gguf_str(name));
            out.extend((ne.len() as u32).to_le_bytes());
            ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.extend(&self.data);
        out
    }
}

/// A zip archive of (member, bytes), stored or deflated.
fn zip_of(members: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(false);
    for (name, bytes) in members {
        zip.start_file(*name, options).expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// A torch-style checkpoint: `data.pkl` plus storages.
fn pth(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let mut members: Vec<(String, &[u8])> = vec![("archive/data.pkl".into(), pickle)];
    members.push(("archive/byteorder".into(), b"little"));
    for (k, b) in storages {
        members.push((format!("archive/data/{k}"), b));
    }
    let refs: Vec<(&str, &[u8])> = members.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    zip_of(&refs, false)
}

/// Pickle opcodes as torch.save writes them (protocol 2).
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Pickle {
        Pickle(b"\x80\x02".to_vec())
    }
    fn op(mut self, bytes: &[u8]) -> Pickle {
        self.0.extend(bytes);
        self
    }
    fn str(mut self, s: &str) -> Pickle {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    fn int(mut self, v: i64) -> Pickle {
        if (0..256).contains(&v) {
            self.0.push(b'K');
            self.0.push(v as u8);
        } else {
            self.0.push(0x8a);
            self.0.push(8);
            self.0.extend(v.to_le_bytes());
        }
        self
    }
    fn ints(mut self, vs: &[i64]) -> Pickle {
        self.0.push(b'(');
        for &v in vs {
            self = self.int(v);
        }
        self.0.push(b't');
        self
    }
    fn global(mut self, module: &str, name: &str) -> Pickle {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }
    /// `_rebuild_tensor_v2(('storage', class, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`.
    fn tensor(
        self,
        class: &str,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> Pickle {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .op(b"(")
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(b"\x89")
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    /// A state_dict `{name: tensor}` from (name, tensor-pickling closure) items.
    fn state_dict(items: Vec<(&str, TensorWriter)>) -> Vec<u8> {
        let mut p = Pickle::new()
            .global("collections", "OrderedDict")
            .op(b")R(");
        for (name, t) in items {
            p = t(p.str(name));
        }
        p.op(b"u.").0
    }
}

type TensorWriter = Box<dyn Fn(Pickle) -> Pickle>;

fn boxed(f: impl Fn(Pickle) -> Pickle + 'static) -> TensorWriter {
    Box::new(f)
}

fn one_f32_tensor(offset: i64, size: &'static [i64], stride: &'static [i64]) -> TensorWriter {
    Box::new(move |p: Pickle| p.tensor("FloatStorage", "0", 8, offset, size, stride))
}

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut header = dict.into_bytes();
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.resize(total - 10 - 1, b' ');
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend(data);
    out
}

/// A TensorProto: FLOAT `dims`, named `name`, with raw bytes or external data.
fn onnx_tensor(name: &str, dims: &[u64], raw: Option<&[u8]>, external: &[(&str, &str)]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        field_varint(1, d, &mut t);
    }
    field_varint(2, 1, &mut t);
    field_bytes(8, name.as_bytes(), &mut t);
    if let Some(raw) = raw {
        field_bytes(9, raw, &mut t);
    }
    for (k, v) in external {
        let mut e = Vec::new();
        field_bytes(1, k.as_bytes(), &mut e);
        field_bytes(2, v.as_bytes(), &mut e);
        field_bytes(13, &e, &mut t);
    }
    if !external.is_empty() {
        field_varint(14, 1, &mut t);
    }
    t
}

fn onnx_model(initializers: &[Vec<u8>]) -> Vec<u8> {
    let mut graph = Vec::new();
    field_bytes(2, b"g", &mut graph);
    for t in initializers {
        field_bytes(5, t, &mut graph);
    }
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_bytes(7, &graph, &mut model);
    model
}

// ---- the crafted cases ----------------------------------------------------------------

fn safetensors_cases() -> Vec<Case> {
    let good = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let data = f32s(&[1.0, 2.0, 3.0, 4.0]);
    let mut cases = vec![Case::one(
        "safetensors",
        "valid",
        "m.safetensors",
        safetensors_raw(good, &data),
        Expect::Opens,
    )];
    let whole = safetensors_raw(good, &data);
    for keep in 0..whole.len() {
        cases.push(Case::one(
            "safetensors",
            format!("truncated to {keep}"),
            "m.safetensors",
            whole[..keep].to_vec(),
            Expect::Any,
        ));
    }
    let headers: Vec<(&str, String)> = vec![
        ("huge shape", r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#.into()),
        ("overlapping", r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#.into()),
        ("reversed offsets", r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#.into()),
        ("offset past u64", r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551615]}}"#.into()),
        ("unknown dtype", r#"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#.into()),
        ("negative dim", r#"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#.into()),
        ("deep JSON", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
        ("metadata not strings", r#"{"__metadata__":{"a":{"b":1}},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.into()),
        ("duplicate key", r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.into()),
        ("escape bytes in a name", "{\"\\u001b[2J\\u0007x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}".into()),
        ("not JSON", "{\u{1b}]0;pwned\u{7}".into()),
        ("empty object", "{}".into()),
    ];
    for (label, header) in headers {
        cases.push(Case::one(
            "safetensors",
            label,
            "m.safetensors",
            safetensors_raw(&header, &data),
            Expect::Any,
        ));
    }
    // A header length of 2^63.
    let mut absurd = (1u64 << 63).to_le_bytes().to_vec();
    absurd.extend(b"{}");
    cases.push(Case::one(
        "safetensors",
        "header length 2^63",
        "m.safetensors",
        absurd,
        Expect::Refused("header"),
    ));
    cases
}

/// `elsewhere` is a folder outside every case's folder, for the targets of links.
fn sharded_cases(elsewhere: &Path) -> Vec<Case> {
    let name_outside = "shard.safetensors";
    let shard = safetensors_raw(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &f32s(&[1.0]),
    );
    let index = |name: &str| {
        format!(r#"{{"weight_map":{{"w":{}}}}}"#, serde_json::json!(name)).into_bytes()
    };
    let mut cases = vec![Case {
        format: "sharded",
        label: "valid".into(),
        files: vec![
            ("m.index.json".into(), index("s.safetensors")),
            ("s.safetensors".into(), shard.clone()),
        ],
        links: Vec::new(),
        open: "m.index.json".into(),
        expect: Expect::Opens,
        make: None,
    }];
    for name in [
        ".",
        "/",
        "../",
        "..",
        "",
        "/etc/passwd",
        "../s.safetensors",
        "sub/../../x",
    ] {
        cases.push(Case {
            format: "sharded",
            label: format!("shard named {name:?}"),
            files: vec![
                ("m.index.json".into(), index(name)),
                ("s.safetensors".into(), shard.clone()),
            ],
            links: Vec::new(),
            open: "m.index.json".into(),
            make: None,
            expect: Expect::Refused("shard"),
        });
    }
    // A shard that is a symlink out of the folder (the target is a real shard, so
    // only the containment rule can refuse it).
    let outside = elsewhere.join(name_outside);
    std::fs::write(&outside, &shard).expect("write outside shard");
    cases.push(Case {
        format: "sharded",
        label: "shard symlinked outside the folder".into(),
        files: vec![("m.index.json".into(), index("s.safetensors"))],
        links: vec![("s.safetensors".into(), outside.clone())],
        open: "m.index.json".into(),
        make: None,
        expect: Expect::Refused("outside the model's folder"),
    });
    // A symlink inside the folder is fine.
    cases.push(Case {
        format: "sharded",
        label: "shard symlinked inside the folder".into(),
        files: vec![
            ("m.index.json".into(), index("s.safetensors")),
            ("real.safetensors".into(), shard),
        ],
        links: vec![("s.safetensors".into(), PathBuf::from("real.safetensors"))],
        open: "m.index.json".into(),
        make: None,
        expect: Expect::Opens,
    });
    cases.push(Case::one(
        "sharded",
        "huge index claims",
        "m.index.json",
        br#"{"weight_map":{"w":"s.safetensors"}, "metadata": {"total_size": 1e400}}"#.to_vec(),
        Expect::Any,
    ));
    cases
}

fn gguf_cases() -> Vec<Case> {
    let data = f32s(&[1.0; 16]);
    let valid = Gguf {
        data: data.clone(),
        ..Gguf::new()
            .kv_u32("general.alignment", 32)
            .tensor(b"a", &[4], 0, 0)
            .tensor(b"b", &[4], 0, 32)
    };
    let mut cases = vec![Case::one(
        "gguf",
        "valid",
        "m.gguf",
        valid.bytes(),
        Expect::Opens,
    )];
    let whole = valid.bytes();
    for keep in (0..whole.len()).step_by(3) {
        cases.push(Case::one(
            "gguf",
            format!("truncated to {keep}"),
            "m.gguf",
            whole[..keep].to_vec(),
            Expect::Any,
        ));
    }
    let refused: Vec<(&str, Gguf, &'static str)> = vec![
        (
            "duplicate tensor name",
            Gguf {
                data: data.clone(),
                ..Gguf::new()
                    .tensor(b"a", &[4], 0, 0)
                    .tensor(b"a", &[4], 0, 32)
            },
            "appears twice",
        ),
        (
            "duplicate key",
            Gguf {
                data: data.clone(),
                ..Gguf::new()
                    .kv_u32("k", 1)
                    .kv_u32("k", 2)
                    .tensor(b"a", &[4], 0, 0)
            },
            "appears twice",
        ),
        (
            "overlapping data",
            Gguf {
                data: data.clone(),
                ..Gguf::new()
                    .tensor(b"a", &[8], 0, 0)
                    .tensor(b"b", &[4], 0, 0)
            },
            "previous tensors end",
        ),
        (
            "unaligned offset",
            Gguf {
                data: data.clone(),
                ..Gguf::new().tensor(b"a", &[4], 0, 4)
            },
            "alignment",
        ),
        (
            "gap before a tensor",
            Gguf {
                data: [data.clone(), data.clone()].concat(),
                ..Gguf::new().tensor(b"a", &[4], 0, 32)
            },
            "previous tensors end",
        ),
        (
            "absurd tensor count",
            Gguf {
                counts: Some((1 << 60, 0)),
                ..Gguf::new()
            },
            "more than a",
        ),
        (
            "absurd key count",
            Gguf {
                counts: Some((0, u64::MAX)),
                ..Gguf::new()
            },
            "more than a",
        ),
        (
            "five dimensions",
            Gguf {
                data: data.clone(),
                ..Gguf::new().tensor(b"a", &[1, 1, 1, 1, 4], 0, 0)
            },
            "dimensions",
        ),
        (
            "shape overflow",
            Gguf {
                data: data.clone(),
                ..Gguf::new().tensor(b"a", &[1 << 40, 1 << 40], 0, 0)
            },
            "absurd",
        ),
        (
            "unknown type",
            Gguf {
                data: data.clone(),
                ..Gguf::new().tensor(b"a", &[4], 9999, 0)
            },
            "unknown ggml type",
        ),
        (
            "offset beyond the file",
            Gguf {
                data: data.clone(),
                ..Gguf::new().tensor(b"a", &[4], 0, 1 << 40)
            },
            "the file holds",
        ),
        (
            "version 1",
            Gguf {
                version: 1,
                ..Gguf::new()
            },
            "version 1",
        ),
        (
            "version 99",
            Gguf {
                version: 99,
                ..Gguf::new()
            },
            "unknown GGUF version",
        ),
        (
            "not UTF-8 name",
            Gguf {
                data: data.clone(),
                ..Gguf::new().tensor(b"\xff\xfe", &[4], 0, 0)
            },
            "UTF-8",
        ),
    ];
    for (label, g, what) in refused {
        cases.push(Case::one(
            "gguf",
            label,
            "m.gguf",
            g.bytes(),
            Expect::Refused(what),
        ));
    }
    // Metadata shapes: a string of 2^62 bytes, arrays of absurd length, nested arrays,
    // unknown value types, an alignment that is not a power of two, escape bytes.
    let kv_cases: Vec<(&str, Vec<u8>, u32, Vec<u8>)> = vec![
        (
            "huge string",
            b"k".to_vec(),
            8,
            (1u64 << 62).to_le_bytes().to_vec(),
        ),
        (
            "huge array",
            b"k".to_vec(),
            9,
            [4u32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat(),
        ),
        (
            "nested arrays",
            b"k".to_vec(),
            9,
            [
                9u32.to_le_bytes().to_vec(),
                1u64.to_le_bytes().to_vec(),
                9u32.to_le_bytes().to_vec(),
                1u64.to_le_bytes().to_vec(),
                9u32.to_le_bytes().to_vec(),
                1u64.to_le_bytes().to_vec(),
                9u32.to_le_bytes().to_vec(),
                0u64.to_le_bytes().to_vec(),
            ]
            .concat(),
        ),
        ("unknown value type", b"k".to_vec(), 77, vec![0; 8]),
        (
            "alignment 3",
            b"general.alignment".to_vec(),
            4,
            3u32.to_le_bytes().to_vec(),
        ),
        (
            "alignment as a u64",
            b"general.alignment".to_vec(),
            10,
            32u64.to_le_bytes().to_vec(),
        ),
        (
            "alignment 0",
            b"general.alignment".to_vec(),
            4,
            0u32.to_le_bytes().to_vec(),
        ),
        (
            "escape bytes in a key",
            b"\x1b[31mred\x07".to_vec(),
            4,
            1u32.to_le_bytes().to_vec(),
        ),
    ];
    for (label, key, ty, value) in kv_cases {
        let mut g = Gguf::new();
        g.kv.push((key, ty, value));
        cases.push(Case::one("gguf", label, "m.gguf", g.bytes(), Expect::Any));
    }
    // 200,000 one-tensor layers (an MoE-sized listing) must stay fast: linear grouping.
    let mut many = Gguf::new();
    for i in 0..200_000u64 {
        many.tensors
            .push((format!("expert.{i}.w").into_bytes(), vec![1], 0, 0));
    }
    many.tensors
        .iter_mut()
        .enumerate()
        .for_each(|(i, t)| t.3 = 32 * i as u64);
    many.data = vec![0; 32 * 200_000];
    cases.push(Case::one(
        "gguf",
        "200,000 one-tensor layers",
        "m.gguf",
        many.bytes(),
        Expect::Opens,
    ));
    cases
}

fn pth_cases() -> Vec<Case> {
    let storage = f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let st = |p: Vec<u8>| pth(&p, &[("0", &storage)]);
    let mut cases = vec![Case::one(
        "pth",
        "valid view",
        "m.pth",
        st(Pickle::state_dict(vec![(
            "t",
            one_f32_tensor(1, &[2], &[1]),
        )])),
        Expect::Opens,
    )];
    let refused: Vec<(&str, Vec<u8>, &'static str)> = vec![
        (
            "view past its storage",
            st(Pickle::state_dict(vec![(
                "t",
                one_f32_tensor(7, &[2], &[1]),
            )])),
            "claims bytes",
        ),
        (
            "huge stride",
            st(Pickle::state_dict(vec![(
                "t",
                one_f32_tensor(0, &[2, 2], &[i64::MAX, 1]),
            )])),
            "claims bytes",
        ),
        (
            "strides that overflow",
            st(Pickle::state_dict(vec![(
                "t",
                one_f32_tensor(0, &[3, 3], &[i64::MAX, i64::MAX]),
            )])),
            "strides",
        ),
        (
            "shape that overflows",
            st(Pickle::state_dict(vec![(
                "t",
                one_f32_tensor(0, &[1 << 40, 1 << 40], &[1, 1]),
            )])),
            "absurd",
        ),
        (
            "negative size",
            st(Pickle::state_dict(vec![(
                "t",
                one_f32_tensor(0, &[-1], &[1]),
            )])),
            "negative",
        ),
        (
            "stride-0 view of terabytes",
            st(Pickle::state_dict(vec![(
                "t",
                one_f32_tensor(0, &[1 << 20, 1 << 20], &[0, 0]),
            )])),
            "contiguous",
        ),
        (
            "missing storage",
            pth(
                &Pickle::state_dict(vec![("t", one_f32_tensor(0, &[2], &[1]))]),
                &[],
            ),
            "storage",
        ),
        (
            "duplicate names",
            st(Pickle::state_dict(vec![
                ("t", one_f32_tensor(0, &[2], &[1])),
                ("t", one_f32_tensor(2, &[2], &[1])),
            ])),
            "twice",
        ),
        (
            "complex storage",
            st(Pickle::state_dict(vec![(
                "t",
                boxed(|p: Pickle| p.tensor("ComplexFloatStorage", "0", 4, 0, &[4], &[1])),
            )])),
            "ComplexFloatStorage",
        ),
        (
            "quantized tensor",
            st(Pickle::new()
                .global("collections", "OrderedDict")
                .op(b")R(")
                .str("q")
                .global("torch._utils", "_rebuild_qtensor")
                .op(b")R")
                .op(b"u.")
                .0),
            "_rebuild_qtensor",
        ),
        (
            "wrong argument types",
            st(Pickle::new()
                .op(b"}(")
                .str("t")
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b"(")
                .str("x")
                .int(0)
                .int(0)
                .int(0)
                .op(b"tR")
                .op(b"u.")
                .0),
            "not a storage",
        ),
        (
            "too few arguments",
            st(Pickle::new()
                .op(b"}(")
                .str("t")
                .global("torch._utils", "_rebuild_tensor_v2")
                .op(b")R")
                .op(b"u.")
                .0),
            "arguments",
        ),
        (
            "os.system global",
            st(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.".to_vec()),
            "not a dict",
        ),
        ("unknown opcode", st(b"\x80\x02\xff.".to_vec()), "opcode"),
        (
            "truncated pickle",
            st(Pickle::state_dict(vec![("t", one_f32_tensor(0, &[2], &[1]))])[..40].to_vec()),
            "data.pkl",
        ),
        ("memo never stored", st(b"\x80\x02h\x07.".to_vec()), "memo"),
        (
            "string longer than the pickle",
            st(b"\x80\x02X\xff\xff\xff\xff".to_vec()),
            "remain",
        ),
        ("no tensors", st(b"\x80\x02}.".to_vec()), "no tensors"),
        (
            "no data.pkl",
            zip_of(&[("archive/other", b"x")], false),
            "data.pkl",
        ),
        (
            "big-endian",
            zip_of(
                &[
                    (
                        "archive/data.pkl",
                        &Pickle::state_dict(vec![("t", one_f32_tensor(0, &[2], &[1]))]),
                    ),
                    ("archive/byteorder", b"big"),
                    ("archive/data/0", &storage),
                ],
                false,
            ),
            "byte order",
        ),
    ];
    for (label, bytes, what) in refused {
        cases.push(Case::one(
            "pth",
            label,
            "m.pth",
            bytes,
            Expect::Refused(what),
        ));
    }
    // 2,000 names viewing one 1 MiB storage: 2 GB to scan from a 1 MB file.
    let mib = vec![0u8; 1 << 20];
    let mut aliased = Pickle::new()
        .global("collections", "OrderedDict")
        .op(b")R(");
    for i in 0..2000 {
        aliased =
            aliased
                .str(&format!("t{i}"))
                .tensor("FloatStorage", "0", 1 << 18, 0, &[1 << 18], &[1]);
    }
    cases.push(Case::one(
        "pth",
        "2,000 names viewing one storage",
        "m.pth",
        pth(&aliased.op(b"u.").0, &[("0", &mib)]),
        Expect::Refused("many times over"),
    ));
    // One 4 MB key in a memoized storage tuple, loaded 200 times: 800 MB if copied.
    let mut amplify = Pickle::new()
        .op(b"(")
        .str("storage")
        .global("torch", "FloatStorage")
        .str(&"k".repeat(4 << 20))
        .str("cpu")
        .int(1)
        .op(b"tq\x05");
    for _ in 0..200 {
        amplify = amplify.op(b"h\x05Q0");
    }
    cases.push(Case::one(
        "pth",
        "memoized 4 MB key loaded 200 times",
        "m.pth",
        st(amplify.op(b"}.").0),
        Expect::Refused("MiB to read"),
    ));
    // A hundred dimensions: more than torch allows.
    let dims: &'static [i64] = Box::leak(vec![1i64; 100].into_boxed_slice());
    cases.push(Case::one(
        "pth",
        "100 dimensions",
        "m.pth",
        st(Pickle::state_dict(vec![(
            "t",
            one_f32_tensor(0, dims, dims),
        )])),
        Expect::Refused("dimensions"),
    ));
    // Other torch objects beside the state_dict (a device) are not tensors.
    let with_device = one_f32_tensor(0, &[2], &[1])(
        Pickle::new()
            .op(b"}(")
            .str("device")
            .global("torch", "device")
            .str("cpu")
            .op(b"\x85R")
            .str("state_dict")
            .op(b"}(")
            .str("t"),
    )
    .op(b"uu.")
    .0;
    cases.push(Case::one(
        "pth",
        "a torch.device beside the state_dict",
        "m.pth",
        st(with_device),
        Expect::Opens,
    ));
    // 200,000-deep nesting: an iterative unpickler has no stack to overflow.
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 200_000));
    deep.extend(std::iter::repeat_n(b'a', 199_999));
    deep.extend(b"0}.");
    cases.push(Case::one(
        "pth",
        "200,000-deep nesting",
        "m.pth",
        st(deep),
        Expect::Refused("no tensors"),
    ));
    let mut deep_marks = b"\x80\x02".to_vec();
    deep_marks.extend(std::iter::repeat_n(b'(', 500_000));
    deep_marks.extend(b".");
    cases.push(Case::one(
        "pth",
        "500,000 open marks",
        "m.pth",
        st(deep_marks),
        Expect::Any,
    ));
    // "Billion laughs": each step a list of the previous one twice, memoized.
    let mut laughs = b"\x80\x02]q\x00".to_vec();
    for _ in 0..60 {
        laughs.extend(b"(h\x00h\x00lq\x00");
    }
    laughs.extend(b"0}.");
    cases.push(Case::one(
        "pth",
        "memo doubling (2^60 leaves)",
        "m.pth",
        st(laughs),
        Expect::Refused("no tensors"),
    ));
    // The same with a state_dict whose tensor sits under the bomb.
    let mut bomb_dict = Pickle::new().op(b"}(").str("bomb").op(b"]q\x00");
    for _ in 0..60 {
        bomb_dict = bomb_dict.op(b"(h\x00h\x00lq\x00");
    }
    bomb_dict = bomb_dict.str("t");
    let bomb_dict = one_f32_tensor(0, &[2], &[1])(bomb_dict).op(b"u.").0;
    cases.push(Case::one(
        "pth",
        "a tensor beside a memo bomb",
        "m.pth",
        st(bomb_dict),
        Expect::Opens,
    ));
    // A pickle claiming 4 GiB.
    cases.push(Case::one(
        "pth",
        "absurd integers",
        "m.pth",
        st(Pickle::state_dict(vec![(
            "t",
            boxed(|p: Pickle| {
                p.tensor(
                    "FloatStorage",
                    "0",
                    i64::MAX,
                    i64::MAX,
                    &[i64::MAX],
                    &[i64::MAX],
                )
            }),
        )])),
        Expect::Refused("absurd"),
    ));
    cases
}

fn npz_cases() -> Vec<Case> {
    let good = npy("<f4", "(2,)", &f32s(&[1.0, 2.0]));
    let mut cases = vec![
        Case::one("npy", "valid", "a.npy", good.clone(), Expect::Opens),
        Case::one(
            "npz",
            "valid",
            "a.npz",
            zip_of(&[("x.npy", &good)], false),
            Expect::Opens,
        ),
        Case::one(
            "npz",
            "valid deflated",
            "a.npz",
            zip_of(&[("x.npy", &good)], true),
            Expect::Opens,
        ),
    ];
    for keep in 0..good.len() {
        cases.push(Case::one(
            "npy",
            format!("truncated to {keep}"),
            "a.npy",
            good[..keep].to_vec(),
            Expect::Any,
        ));
    }
    let headers = [
        (
            "absurd shape",
            "<f4",
            "(4294967296, 4294967296, 4294967296)",
        ),
        ("2^63 elements", "<f4", "(9223372036854775807,)"),
        ("big-endian", ">f4", "(2,)"),
        ("object dtype", "|O", "(2,)"),
        ("unicode dtype", "<U8", "(2,)"),
        ("negative dim", "<f4", "(-2,)"),
        ("garbage shape", "<f4", "(2,,x)"),
    ];
    for (label, descr, shape) in headers {
        let bytes = npy(descr, shape, &f32s(&[1.0, 2.0]));
        cases.push(Case::one("npy", label, "a.npy", bytes.clone(), Expect::Any));
        cases.push(Case::one(
            "npz",
            label,
            "a.npz",
            zip_of(&[("x.npy", &bytes)], true),
            Expect::Any,
        ));
    }
    cases.push(Case::one(
        "npy",
        "a descr starting with a multi-byte character",
        "a.npy",
        npy("é<f4", "(2,)", &f32s(&[1.0, 2.0])),
        Expect::Refused("not supported"),
    ));
    let many_dims = format!("({})", vec!["1"; 100].join(", "));
    cases.push(Case::one(
        "npy",
        "100 dimensions",
        "a.npy",
        npy("<f4", &many_dims, &f32s(&[1.0])),
        Expect::Refused("dimensions"),
    ));
    // A small deflated member that declares 2^63 bytes in its header (a bomb).
    let bomb = npy("<f4", "(2305843009213693952,)", &[0; 64]);
    cases.push(Case::one(
        "npz",
        "member declaring 2^63 bytes",
        "a.npz",
        zip_of(&[("x.npy", &bomb)], true),
        Expect::Any,
    ));
    // 1 GiB of zeros deflated to ~1 MB: honest, and inspected in bounded memory.
    cases.push(Case::lazy(
        "npz",
        "1 GiB of zeros deflated (streamed)",
        "a.npz",
        Box::new(zeros_npz),
        Expect::Opens,
    ));
    cases.push(Case::one(
        "npz",
        "no arrays",
        "a.npz",
        zip_of(&[("readme.txt", b"hi")], false),
        Expect::Any,
    ));
    cases.push(Case::one(
        "npy",
        "escape bytes in the header",
        "a.npy",
        npy("\u{1b}[2J", "(2,)", &f32s(&[1.0, 2.0])),
        Expect::Any,
    ));
    cases
}

/// An npz holding 1 GiB of zeros, deflated to ~1 MB, written in 1 MiB pieces: an
/// honest member that only streaming reads in bounded memory.
fn zeros_npz() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("x.npy", options).expect("zip entry");
    zip.write_all(&npy("<f4", "(268435456,)", &[]))
        .expect("header");
    let piece = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        zip.write_all(&piece).expect("zeros");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// `elsewhere` is a folder outside every case's folder, for the targets of links.
fn onnx_cases(elsewhere: &Path) -> Vec<Case> {
    let name_outside = "private.key";
    let raw = f32s(&[1.0, 2.0]);
    let mut cases = vec![Case::one(
        "onnx",
        "valid",
        "m.onnx",
        onnx_model(&[onnx_tensor("w", &[2], Some(&raw), &[])]),
        Expect::Opens,
    )];
    cases.push(Case::one(
        "onnx",
        "duplicate initializers",
        "m.onnx",
        onnx_model(&[
            onnx_tensor("w", &[2], Some(&raw), &[]),
            onnx_tensor("w", &[2], Some(&raw), &[]),
        ]),
        Expect::Refused("appears twice"),
    ));
    cases.push(Case::one(
        "onnx",
        "dims that overflow",
        "m.onnx",
        onnx_model(&[onnx_tensor("w", &[1 << 40, 1 << 40], Some(&raw), &[])]),
        Expect::Any,
    ));
    cases.push(Case::one(
        "onnx",
        "data shorter than dims",
        "m.onnx",
        onnx_model(&[onnx_tensor("w", &[1000], Some(&raw), &[])]),
        Expect::Any,
    ));
    for location in ["../secret.bin", "/etc/passwd", ".", "", "a/../../b"] {
        cases.push(Case {
            format: "onnx",
            label: format!("external data at {location:?}"),
            files: vec![(
                "m.onnx".into(),
                onnx_model(&[onnx_tensor("w", &[2], None, &[("location", location)])]),
            )],
            links: Vec::new(),
            open: "m.onnx".into(),
            make: None,
            expect: Expect::Refused("external data file"),
        });
    }
    let outside = elsewhere.join(name_outside);
    std::fs::write(&outside, b"PRIVATE KEY PRIVATE").expect("write outside");
    cases.push(Case {
        format: "onnx",
        label: "external data symlinked outside the folder".into(),
        files: vec![(
            "m.onnx".into(),
            onnx_model(&[onnx_tensor("w", &[2], None, &[("location", "w.bin")])]),
        )],
        links: vec![("w.bin".into(), outside)],
        open: "m.onnx".into(),
        make: None,
        expect: Expect::Refused("outside the model's folder"),
    });
    cases.push(Case {
        format: "onnx",
        label: "external data beside the model".into(),
        files: vec![
            (
                "m.onnx".into(),
                onnx_model(&[onnx_tensor(
                    "w",
                    &[2],
                    None,
                    &[("location", "w.bin"), ("offset", "0"), ("length", "8")],
                )]),
            ),
            ("w.bin".into(), raw.clone()),
        ],
        links: Vec::new(),
        open: "m.onnx".into(),
        make: None,
        expect: Expect::Opens,
    });
    cases.push(Case::one(
        "onnx",
        "bad external offset",
        "m.onnx",
        onnx_model(&[onnx_tensor(
            "w",
            &[2],
            None,
            &[("location", "m.onnx"), ("offset", "99999999999999999999")],
        )]),
        Expect::Any,
    ));
    cases
}

// ---- the mutation fuzzer --------------------------------------------------------------

/// xorshift64*: a seeded generator, so a failing case can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `bytes`: a few byte flips, an "interesting" value written over a
/// length or offset, a splice, or a truncation. Mutations favour the first 64 kB,
/// where the headers are.
fn mutate(bytes: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = bytes.to_vec();
    let spot = |rng: &mut Rng, len: usize| {
        if rng.below(4) == 0 {
            rng.below(len)
        } else {
            rng.below(len.min(65536))
        }
    };
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            break;
        }
        match rng.below(6) {
            0 => {
                let at = spot(&mut rng, out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = spot(&mut rng, out.len());
                out[at] = [0x00, 0xff, 0x7f, 0x80, 0x01, b'(', b'.', b'q'][rng.below(8)];
            }
            2 => {
                let at = spot(&mut rng, out.len());
                let v: [u8; 8] = [
                    u64::MAX,
                    1 << 63,
                    1 << 32,
                    0,
                    u64::from(u32::MAX),
                    (out.len() as u64) * 2,
                    1 << 40,
                    7,
                ][rng.below(8)]
                .to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4)].min(out.len() - at);
                out[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => {
                let (from, to) = (spot(&mut rng, out.len()), spot(&mut rng, out.len()));
                let n = rng.below(64).min(out.len() - from.max(to));
                out.copy_within(from..from + n, to);
            }
            4 => {
                let at = spot(&mut rng, out.len());
                let n = rng.below(16).min(out.len() - at);
                out.drain(at..at + n);
            }
            _ => {
                let keep = spot(&mut rng, out.len());
                out.truncate(keep);
            }
        }
    }
    out
}

/// The real fixtures the fuzzer mutates, and the name each copy gets. The SmolLM2
/// GGUF is cut to its first 4 MiB (its whole header, the tokenizer included): every
/// copy then still exercises the metadata and tensor-info parsers, without writing
/// 100 MB per case.
fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let read = |name: &str| std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut gguf = Vec::new();
    std::fs::File::open(fixture("smollm2_q4_1.gguf"))
        .and_then(|f| f.take(4 << 20).read_to_end(&mut gguf))
        .expect("read the GGUF's header");
    vec![
        ("pth", "m.pth", read("digit_cnn.pth")),
        ("npz", "m.npz", read("sample.npz")),
        ("npz", "c.npz", read("sample_compressed.npz")),
        ("npy", "m.npy", read("sample_half.npy")),
        ("onnx", "m.onnx", read("ppocr_cls.onnx")),
        ("onnx", "d.onnx", read("digit_cnn.onnx")),
        ("gguf", "m.gguf", gguf),
        ("gguf", "q.gguf", small_export("gguf")),
        ("safetensors", "m.safetensors", small_export("safetensors")),
    ]
}

/// The digit CNN as safetensors, or as a Q8_0 GGUF, written by slimscope (and checked
/// elsewhere against the safetensors package and gguf-py): real-shaped files small
/// enough to copy hundreds of times.
fn small_export(ext: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("r.toml");
    let rule = if ext == "gguf" {
        "match = \"fc_layers.*.weight\"\nquant = { format = \"gguf\", type = \"Q8_0\" }"
    } else {
        "match = \"*\"\nprune = { method = \"none\" }"
    };
    std::fs::write(&recipe, format!("version = 1\n\n[[rule]]\n{rule}\n")).expect("recipe");
    let out = dir.path().join(format!("m.{ext}"));
    let (code, _, stderr) = common::slimscope(&[
        "apply",
        fixture("digit_cnn.pth").to_str().expect("utf-8"),
        "--recipe",
        recipe.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::read(out).expect("read the export")
}

#[test]
fn crafted_hostile_files_end_cleanly() {
    let mut cases = Vec::new();
    cases.extend(safetensors_cases());
    let elsewhere = tempfile::tempdir().expect("a folder outside the cases");
    cases.extend(sharded_cases(elsewhere.path()));
    cases.extend(gguf_cases());
    cases.extend(pth_cases());
    cases.extend(npz_cases());
    cases.extend(onnx_cases(elsewhere.path()));
    run_all(cases);
}

#[test]
fn mutated_real_fixtures_end_cleanly() {
    let mut cases = Vec::new();
    for (format, name, bytes) in fuzz_seeds() {
        let bytes = std::sync::Arc::new(bytes);
        for seed in 1..=MUTATIONS_PER_FIXTURE {
            let bytes = bytes.clone();
            let make: Maker = Box::new(move || mutate(&bytes, seed));
            cases.push(Case::lazy(
                format,
                format!("{name} mutation seed {seed}"),
                name,
                make,
                Expect::Any,
            ));
        }
    }
    run_all(cases);
}
