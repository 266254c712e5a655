//! A bounded, iterative unpickler for the `data.pkl` of PyTorch checkpoints.
//!
//! Checkpoints come from the internet, so the pickle is hostile until proven
//! otherwise. This reader interprets the opcodes `torch.save` emits (protocols 2–5)
//! without importing or running any Python: globals are only names, and the only
//! callables given meaning are the handful torch uses to rebuild tensors and ordered
//! dicts. It is built so that no file can crash it, exhaust memory or hang it:
//! - values live in one arena and refer to each other by index, so the memo and `DUP`
//!   share values instead of copying them (a "billion laughs" pickle stays linear);
//! - nothing recurses: nesting depth is only a number of marks on a stack;
//! - every length from the file is checked against the bytes that remain before any
//!   allocation, and the arena has a hard cap on its number of values;
//! - every index and conversion is checked, so malformed arguments are errors.
//!
//! Reference: CPython's `Lib/pickle.py` (opcode table, `load_*` semantics) and
//! torch's `torch/serialization.py` / `torch/_utils.py` (what `torch.save` writes).

use std::collections::HashMap;

/// Memory the reader may hold, as a multiple of the pickle's length plus a constant:
/// every value, string, list and mark it keeps is charged, so no pickle can make it
/// hold more than a few times its own size, however it nests, shares or repeats.
const BUDGET_PER_INPUT_BYTE: u64 = 4;
const BUDGET_BASE: u64 = 64 << 20;
/// torch's (and numpy's) limit on dimensions.
pub(crate) const MAX_DIMS: usize = 64;
/// The longest text line (`GLOBAL`'s module and name, text `INT`) accepted.
const MAX_LINE: usize = 4096;

/// Index of a value in the arena.
type Id = u32;

/// A storage named by a tensor: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Storage {
    /// The storage class, e.g. `FloatStorage`; it fixes the element type.
    pub class: String,
    /// The zip member under `<archive>/data/` that holds the storage's bytes.
    pub key: String,
    /// Number of elements the storage holds.
    pub numel: u64,
}

/// A tensor as `torch._utils._rebuild_tensor_v2` rebuilds it: a view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorView {
    pub storage: Storage,
    /// Offset of the first element in the storage, in elements (torch's convention).
    pub offset: u64,
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// What the checkpoint holds: its tensors by name, in the dict's order.
#[derive(Debug)]
pub(crate) struct StateDict {
    /// The key the tensors were found under (`state_dict`, …), if not the top level.
    pub key: Option<&'static str>,
    pub tensors: Vec<(String, TensorView)>,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool,
    Int(i64),
    /// An integer beyond i64 (kept only to say so if it is used as a size).
    BigInt,
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set,
    Global {
        module: String,
        name: String,
    },
    Storage(Box<Storage>),
    Tensor(Box<TensorView>),
    /// The result of calling or instantiating a global slimscope gives no meaning to.
    Object {
        module: String,
        name: String,
    },
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) | Value::BigInt => "an int",
            Value::Float => "a float",
            Value::Str(_) => "a string",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Set => "a set",
            Value::Global { .. } => "a global",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
            Value::Object { .. } => "an object",
        }
    }
}

/// Read the tensors of a pickled state_dict (or of a checkpoint dict holding one
/// under one of `keys`). Errors are one line, with the byte position where it helps.
pub(crate) fn read_state_dict(pickle: &[u8], keys: &[&'static str]) -> Result<StateDict, String> {
    let mut machine = Machine::new(pickle);
    let root = machine.run()?;
    machine.state_dict(root, keys)
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    values: Vec<Value>,
    stack: Vec<Id>,
    /// Stack lengths at each MARK (CPython's metastack).
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Bytes charged so far, and the most that may be.
    held: u64,
    budget: u64,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Machine {
            input,
            pos: 0,
            values: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            held: 0,
            budget: BUDGET_BASE + BUDGET_PER_INPUT_BYTE * input.len() as u64,
        }
    }

    /// Account for `bytes` more held memory, refusing the pickle past its budget.
    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.held += bytes as u64;
        if self.held > self.budget {
            return Err(self.err(format!(
                "the pickle would take more than {} MiB to read (a state_dict takes a fraction of its own size)",
                self.budget >> 20
            )));
        }
        Ok(())
    }

    fn err(&self, what: impl std::fmt::Display) -> String {
        format!("data.pkl: {what} (at byte {})", self.pos)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let remaining = (self.input.len() - self.pos) as u64;
        if n > remaining {
            return Err(self.err(format!(
                "a field claims {n} bytes but only {remaining} remain (truncated)"
            )));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.input[start..self.pos])
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .take(MAX_LINE + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("a text field has no end of line"))?;
        let text =
            std::str::from_utf8(&rest[..end]).map_err(|_| self.err("a text field is not UTF-8"))?;
        self.pos += end + 1;
        Ok(text)
    }
    fn text(&mut self, n: u64) -> Result<String, String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("a string is not valid UTF-8"))
    }

    fn alloc(&mut self, v: Value) -> Result<Id, String> {
        let extra = match &v {
            Value::Str(s) => s.len(),
            Value::Tuple(items) | Value::List(items) => 4 * items.len(),
            Value::Dict(pairs) => 8 * pairs.len(),
            Value::Global { module, name } | Value::Object { module, name } => {
                module.len() + name.len()
            }
            Value::Storage(st) => size_of::<Storage>() + st.class.len() + st.key.len(),
            Value::Tensor(t) => {
                size_of::<TensorView>()
                    + t.storage.class.len()
                    + t.storage.key.len()
                    + 8 * (t.shape.len() + t.stride.len())
            }
            _ => 0,
        };
        self.charge(size_of::<Value>() + extra + size_of::<Id>())?;
        if self.values.len() >= Id::MAX as usize {
            return Err(self.err("too many objects"));
        }
        self.values.push(v);
        Ok((self.values.len() - 1) as Id)
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        let id = self.alloc(v)?;
        self.stack.push(id);
        Ok(())
    }
    fn pop(&mut self) -> Result<Id, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.err("an opcode pops across a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err("pop from an empty stack"))
    }
    fn top(&self) -> Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("the stack is empty"))
    }
    /// Everything pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }
    fn get(&self, id: Id) -> &Value {
        // Ids are only ever made by `alloc`, so they are in range.
        &self.values[id as usize]
    }
    fn memo_get(&mut self, key: u64) -> Result<(), String> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.err(format!("memo entry {key} was never stored")))?;
        self.charge(size_of::<Id>())?;
        self.stack.push(id);
        Ok(())
    }
    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let id = self.top()?;
        self.charge(32)?;
        self.memo.insert(key, id);
        Ok(())
    }

    /// Run to STOP; returns the pickled object. Opcodes are handled in the families
    /// CPython's `Lib/pickle.py` documents them in.
    fn run(&mut self) -> Result<Id, String> {
        loop {
            let op = self.u8()?;
            match op {
                b'.' => return self.pop(),
                0x97 | 0x98 => {
                    return Err(self.err("out-of-band pickle buffers are not used by torch.save"));
                }
                _ => {}
            }
            let handled = self.framing_op(op)?
                || self.scalar_op(op)?
                || self.container_op(op)?
                || self.memo_op(op)?
                || self.object_op(op)?;
            if !handled {
                return Err(self.err(format!("unsupported pickle opcode 0x{op:02x}")));
            }
        }
    }

    /// Protocol, framing, marks and stack manipulation.
    /// Returns whether `op` was one of them.
    fn framing_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            0x80 => {
                let version = self.u8()?;
                if version > 5 {
                    return Err(self.err(format!("unknown pickle protocol {version}")));
                }
            }
            0x95 => {
                self.le::<8>()?; // FRAME: a length hint only
            }
            b'(' => {
                self.charge(size_of::<usize>())?;
                self.marks.push(self.stack.len());
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let id = self.top()?;
                self.charge(size_of::<Id>())?;
                self.stack.push(id);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// None, booleans, numbers, strings and bytes.
    /// Returns whether `op` was one of them.
    fn scalar_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool)?,
            0x89 => self.push(Value::Bool)?,
            b'J' => {
                let v = i32::from_le_bytes(self.le()?);
                self.push(Value::Int(v.into()))?
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v.into()))?
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?);
                self.push(Value::Int(v.into()))?
            }
            0x8a => {
                let n = self.u8()?;
                let bytes = self.take(n.into())?;
                self.push(long(bytes))?
            }
            0x8b => {
                let n = i32::from_le_bytes(self.le()?);
                let n = u64::try_from(n).map_err(|_| self.err("negative LONG4 length"))?;
                let bytes = self.take(n)?;
                self.push(long(bytes))?
            }
            b'I' | b'L' => {
                // Protocol 0 spells True/False as `I01`/`I00`: ints suffice here.
                let line = self.line()?.trim_end_matches('L');
                self.push(line.parse().map_or(Value::BigInt, Value::Int))?
            }
            b'G' => {
                self.le::<8>()?;
                self.push(Value::Float)?
            }
            b'F' => {
                self.line()?;
                self.push(Value::Float)?
            }
            b'X' => {
                let n = u32::from_le_bytes(self.le()?);
                let s = self.text(n.into())?;
                self.push(Value::Str(s))?
            }
            0x8c => {
                let n = self.u8()?;
                let s = self.text(n.into())?;
                self.push(Value::Str(s))?
            }
            0x8d => {
                let n = u64::from_le_bytes(self.le()?);
                let s = self.text(n)?;
                self.push(Value::Str(s))?
            }
            // BINSTRING, SHORT_BINSTRING (Python 2 str), BINBYTES, SHORT_BINBYTES,
            // BINBYTES8, BYTEARRAY8: only their length matters here.
            b'T' | b'B' => {
                let n = u32::from_le_bytes(self.le()?);
                self.take(n.into())?;
                self.push(Value::Bytes)?
            }
            b'U' | b'C' => {
                let n = self.u8()?;
                self.take(n.into())?;
                self.push(Value::Bytes)?
            }
            0x8e | 0x96 => {
                let n = u64::from_le_bytes(self.le()?);
                self.take(n)?;
                self.push(Value::Bytes)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Tuples, lists, dicts and sets, built and extended.
    /// Returns whether `op` was one of them.
    fn container_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b')' => self.push(Value::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))?
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n
                    || self.marks.last().is_some_and(|&m| m + n > self.stack.len())
                {
                    return Err(self.err("TUPLE takes more items than the stack holds"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items))?
            }
            b']' => self.push(Value::List(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))?
            }
            b'}' => self.push(Value::Dict(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                let pairs =
                    pairs(&items).ok_or_else(|| self.err("DICT with an odd number of items"))?;
                self.push(Value::Dict(pairs))?
            }
            0x8f => self.push(Value::Set)?,
            0x91 => {
                self.pop_mark()?;
                self.push(Value::Set)?
            }
            0x90 => {
                self.pop_mark()?;
                if !matches!(self.get(self.top()?), Value::Set) {
                    return Err(self.err("ADDITEMS onto something that is not a set"));
                }
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_dict(vec![(key, value)])?
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = pairs(&items)
                    .ok_or_else(|| self.err("SETITEMS with an odd number of items"))?;
                self.extend_dict(pairs)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The memo: GET and PUT in their three spellings, and MEMOIZE.
    /// Returns whether `op` was one of them.
    fn memo_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'h' => {
                let key = self.u8()?;
                self.memo_get(key.into())?
            }
            b'j' => {
                let key = u32::from_le_bytes(self.le()?);
                self.memo_get(key.into())?
            }
            b'g' => {
                let key = self
                    .line()?
                    .parse()
                    .map_err(|_| self.err("bad GET index"))?;
                self.memo_get(key)?
            }
            b'q' => {
                let key = self.u8()?;
                self.memo_put(key.into())?
            }
            b'r' => {
                let key = u32::from_le_bytes(self.le()?);
                self.memo_put(key.into())?
            }
            b'p' => {
                let key = self
                    .line()?
                    .parse()
                    .map_err(|_| self.err("bad PUT index"))?;
                self.memo_put(key)?
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Globals, persistent ids (storages), calls, instances and BUILD.
    /// Returns whether `op` was one of them.
    fn object_op(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'c' => {
                let module = self.line()?.to_owned();
                let name = self.line()?.to_owned();
                self.push(Value::Global { module, name })?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.get(module), self.get(name)) {
                    (Value::Str(m), Value::Str(n)) => {
                        let g = Value::Global {
                            module: m.clone(),
                            name: n.clone(),
                        };
                        self.push(g)?
                    }
                    _ => return Err(self.err("STACK_GLOBAL of non-strings")),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.push(Value::Storage(Box::new(storage)))?
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.call(callable, args, 0)?;
                self.stack.push(v);
            }
            0x81 => {
                let _args = self.pop()?;
                let class = self.pop()?;
                let v = self.instantiate(class)?;
                self.push(v)?
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let _args = self.pop()?;
                let class = self.pop()?;
                let v = self.instantiate(class)?;
                self.push(v)?
            }
            b'b' => {
                // BUILD sets an object's state (a tensor's or an OrderedDict's
                // attributes): nothing slimscope reads.
                self.pop()?;
                self.top()?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn extend_list(&mut self, items: Vec<Id>) -> Result<(), String> {
        self.charge(size_of::<Id>() * items.len())?;
        let top = self.top()?;
        match &mut self.values[top as usize] {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            // torch never appends to anything else; accept and ignore (CPython calls
            // `.append`/`.extend` on whatever object it is).
            Value::Object { .. } => Ok(()),
            other => {
                let kind = other.kind();
                Err(self.err(format!("APPEND onto {kind}")))
            }
        }
    }

    fn extend_dict(&mut self, items: Vec<(Id, Id)>) -> Result<(), String> {
        self.charge(2 * size_of::<Id>() * items.len())?;
        let top = self.top()?;
        match &mut self.values[top as usize] {
            Value::Dict(dict) => {
                dict.extend(items);
                Ok(())
            }
            Value::Object { .. } => Ok(()),
            other => {
                let kind = other.kind();
                Err(self.err(format!("SETITEM onto {kind}")))
            }
        }
    }

    fn global(&self, id: Id) -> Result<(&str, &str), String> {
        match self.get(id) {
            Value::Global { module, name } => Ok((module, name)),
            other => Err(self.err(format!("a call of {}, not of a global", other.kind()))),
        }
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`; only the class name is kept.
    fn instantiate(&self, class: Id) -> Result<Value, String> {
        let (module, name) = self.global(class)?;
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Value::Dict(Vec::new()),
            _ => Value::Object {
                module: module.to_owned(),
                name: name.to_owned(),
            },
        })
    }

    /// REDUCE: `callable(*args)`, for the callables torch uses to rebuild tensors.
    fn call(&mut self, callable: Id, args: Id, depth: u8) -> Result<Id, String> {
        let (module, name) = self.global(callable)?;
        let (module, name) = (module.to_owned(), name.to_owned());
        // Only the first four arguments are ever read: copy those ids, not the tuple.
        let (count, args) = match self.get(args) {
            Value::Tuple(items) => (
                items.len(),
                items.iter().take(4).copied().collect::<Vec<_>>(),
            ),
            other => {
                return Err(self.err(format!(
                    "`{module}.{name}` called with {} as its arguments",
                    other.kind()
                )));
            }
        };
        let arg = |i: usize| -> Result<Id, String> {
            args.get(i)
                .copied()
                .ok_or_else(|| self.err(format!("`{module}.{name}` called with {count} arguments")))
        };
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => {
                let view = self.tensor_view(arg(0)?, arg(1)?, arg(2)?, arg(3)?)?;
                self.alloc(Value::Tensor(Box::new(view)))
            }
            // nn.Parameter(data, requires_grad, hooks): the tensor itself.
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                let data = arg(0)?;
                match self.get(data) {
                    Value::Tensor(_) => Ok(data),
                    other => Err(self.err(format!("a Parameter of {}", other.kind()))),
                }
            }
            // Tensor subclasses: `_rebuild_from_type_v2(func, type, args, state)` calls
            // `func(*args)`; one level of it is all torch writes.
            ("torch._tensor", "_rebuild_from_type_v2") if depth == 0 => {
                let (func, inner) = (arg(0)?, arg(2)?);
                self.call(func, inner, depth + 1)
            }
            ("collections", "OrderedDict") => {
                let mut dict = Vec::new();
                if let Some(&items) = args.first() {
                    let Value::List(items) = self.get(items) else {
                        return Err(self.err("OrderedDict of something other than a list"));
                    };
                    for &item in items {
                        match self.get(item) {
                            Value::Tuple(kv) if kv.len() == 2 => dict.push((kv[0], kv[1])),
                            _ => return Err(self.err("OrderedDict items that are not pairs")),
                        }
                    }
                }
                self.alloc(Value::Dict(dict))
            }
            _ => self.alloc(Value::Object { module, name }),
        }
    }

    /// BINPERSID: torch's `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&self, pid: Id) -> Result<Storage, String> {
        let bad = || {
            self.err("a persistent id that is not torch's ('storage', type, key, location, numel)")
        };
        let Value::Tuple(items) = self.get(pid) else {
            return Err(bad());
        };
        let [tag, class, key, _location, numel] = items.as_slice() else {
            return Err(bad());
        };
        if !matches!(self.get(*tag), Value::Str(s) if s == "storage") {
            return Err(bad());
        }
        let class = match self.get(*class) {
            Value::Global { name, .. } => name.clone(),
            _ => return Err(bad()),
        };
        let key = match self.get(*key) {
            Value::Str(s) => s.clone(),
            _ => return Err(bad()),
        };
        let numel = self.count(*numel, "a storage's element count")?;
        Ok(Storage { class, key, numel })
    }

    fn count(&self, id: Id, what: &str) -> Result<u64, String> {
        match self.get(id) {
            Value::Int(v) => {
                u64::try_from(*v).map_err(|_| self.err(format!("{what} is negative ({v})")))
            }
            Value::BigInt => Err(self.err(format!("{what} is too large"))),
            other => Err(self.err(format!("{what} is {}, not an int", other.kind()))),
        }
    }

    fn ints(&self, id: Id, what: &str) -> Result<Vec<u64>, String> {
        match self.get(id) {
            Value::Tuple(items) | Value::List(items) => {
                items.iter().map(|&i| self.count(i, what)).collect()
            }
            other => Err(self.err(format!("{what} is {}, not a tuple", other.kind()))),
        }
    }

    fn tensor_view(
        &self,
        storage: Id,
        offset: Id,
        size: Id,
        stride: Id,
    ) -> Result<TensorView, String> {
        let Value::Storage(storage) = self.get(storage) else {
            return Err(self.err("a tensor rebuilt from something that is not a storage"));
        };
        let shape = self.ints(size, "a tensor dimension")?;
        let stride = self.ints(stride, "a tensor stride")?;
        if shape.len() > MAX_DIMS {
            return Err(self.err(format!(
                "a tensor with {} dimensions (torch allows at most {MAX_DIMS})",
                shape.len()
            )));
        }
        if shape.len() != stride.len() {
            return Err(self.err(format!(
                "a tensor with {} dimensions and {} strides",
                shape.len(),
                stride.len()
            )));
        }
        Ok(TensorView {
            storage: (**storage).clone(),
            offset: self.count(offset, "a storage offset")?,
            shape,
            stride,
        })
    }

    /// The tensors of the top-level dict, or of the dict under the first of `keys`
    /// that holds tensors.
    fn state_dict(&self, root: Id, keys: &[&'static str]) -> Result<StateDict, String> {
        let Value::Dict(top) = self.get(root) else {
            return Err(format!(
                "data.pkl: the checkpoint is {}, not a dict of tensors (a state_dict)",
                self.get(root).kind()
            ));
        };
        let mut candidates = vec![(None, top.as_slice())];
        for &key in keys {
            let found = top
                .iter()
                .find(|(k, _)| matches!(self.get(*k), Value::Str(s) if s == key));
            if let Some(&(_, value)) = found
                && let Value::Dict(inner) = self.get(value)
            {
                candidates.push((Some(key), inner.as_slice()));
            }
        }
        // The first dict holding tensors is the state_dict; a tensor in it that
        // slimscope cannot rebuild is an error, never a silent omission.
        for (key, dict) in candidates {
            match self.tensors(dict)? {
                (_, Some(problem)) => return Err(problem),
                (tensors, None) if !tensors.is_empty() => return Ok(StateDict { key, tensors }),
                _ => {}
            }
        }
        Ok(StateDict {
            key: None,
            tensors: Vec::new(),
        })
    }

    /// The tensor entries of one dict, and the first entry that is a tensor torch
    /// rebuilds some way slimscope cannot read (quantized, sparse, nested, …).
    /// Entries that are no tensor at all (numbers, devices, nested dicts of
    /// settings) are not weights.
    #[expect(clippy::type_complexity, reason = "a private helper's pair of results")]
    fn tensors(
        &self,
        dict: &[(Id, Id)],
    ) -> Result<(Vec<(String, TensorView)>, Option<String>), String> {
        let mut out = Vec::new();
        let mut special = None;
        let mut seen = std::collections::HashSet::new();
        for &(key, value) in dict {
            let name = match self.get(key) {
                Value::Str(s) => s,
                _ => continue,
            };
            match self.get(value) {
                Value::Tensor(view) => {
                    if !seen.insert(name.as_str()) {
                        return Err(format!("data.pkl: the tensor name `{name}` appears twice"));
                    }
                    out.push((name.clone(), (**view).clone()));
                }
                Value::Object { module, name: func }
                    if special.is_none() && is_tensor_rebuild(module, func) =>
                {
                    special = Some(format!(
                        "data.pkl: tensor `{name}` is rebuilt by `{module}.{func}` (a quantized, sparse or other special tensor), which slimscope cannot read"
                    ));
                }
                _ => {}
            }
        }
        Ok((out, special))
    }
}

/// Whether `module.func` is one of torch's tensor-rebuilding functions
/// (`torch/_utils.py` `_rebuild_*`, `torch/_tensor.py`), as opposed to other torch
/// objects a checkpoint may hold (`torch.device`, `torch.Size`).
fn is_tensor_rebuild(module: &str, func: &str) -> bool {
    matches!(
        module,
        "torch._utils" | "torch._tensor" | "torch.nested._internal.nested_tensor"
    ) && func.starts_with("_rebuild")
}

/// Python's `decode_long`: little-endian two's complement.
fn long(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        // Fits only if the extra bytes are pure sign extension.
        let sign = if bytes[bytes.len() - 1] & 0x80 != 0 {
            0xff
        } else {
            0
        };
        if bytes[8..].iter().any(|&b| b != sign) || (bytes[7] & 0x80 != 0) != (sign == 0xff) {
            return Value::BigInt;
        }
        return long(&bytes[..8]);
    }
    let mut buf = if bytes[bytes.len() - 1] & 0x80 != 0 {
        [0xff; 8]
    } else {
        [0; 8]
    };
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

fn pairs(items: &[Id]) -> Option<Vec<(Id, Id)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    Some(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_decodes_twos_complement_as_python_does() {
        // pickle.encode_long(255) == b'\xff\x00'; encode_long(-1) == b'\xff'.
        assert!(matches!(long(b"\xff\x00"), Value::Int(255)));
        assert!(matches!(long(b"\xff"), Value::Int(-1)));
        assert!(matches!(long(b"\x00\x80"), Value::Int(-32768)));
        assert!(matches!(long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), Value::BigInt));
        assert!(matches!(long(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), Value::Int(1)));
    }

    #[test]
    fn memo_doubling_stays_linear() {
        // A list, then 2000 rounds of "a tuple of the last value twice": 2^2000 leaves
        // if copied, 2000 values when shared.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..2000u32 {
            p.extend(b"h\x00h\x00\x86q\x00");
            let _ = i;
        }
        p.extend(b"0}.");
        let sd = read_state_dict(&p, &[]).expect("reads");
        assert!(sd.tensors.is_empty());
    }

    #[test]
    fn deep_nesting_is_no_recursion() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', 200_000));
        p.extend(std::iter::repeat_n(b't', 200_000 - 1));
        p.extend(b"0}.");
        // 199,999 tuples closed, one MARK left open: still no crash, a clean result.
        assert!(read_state_dict(&p, &[]).is_ok());
    }
}
