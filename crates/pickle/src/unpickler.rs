//! The pickle virtual machine: reads opcodes (protocols 0 to 5), keeps the stack, marks and memo,
//! and rebuilds values into the arena. Callables are never called: REDUCE on an allow-listed
//! global is interpreted by [`Machine::call`], which knows a fixed set of constructors.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::globals::AllowList;
use crate::numpy::{DType, DTypeKind, NdArray, element_count};
use crate::value::{Global, GlobalKind, Node, NodeId, Object, Pickle, Value};

/// Limits that keep a hostile file from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most nodes (strings, containers, objects, arrays) one file may create.
    pub max_nodes: usize,
    /// Most bytes a compressed file may decompress to.
    pub max_decompressed_bytes: usize,
    /// Deepest nesting of joblib object arrays (each one a pickle inside the pickle).
    pub max_nested_pickles: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_nodes: 50_000_000,
            max_decompressed_bytes: 4 << 30,
            max_nested_pickles: 8,
        }
    }
}

/// Unpickles one stream: `data` must start at the first opcode.
pub fn unpickle(data: &[u8], allow: &AllowList, limits: &Limits) -> Result<Pickle> {
    unpickle_detect_joblib(data, allow, limits).map(|(pickle, _)| pickle)
}

/// Like [`unpickle`], and also says whether the stream carried joblib inline arrays.
pub(crate) fn unpickle_detect_joblib(
    data: &[u8],
    allow: &AllowList,
    limits: &Limits,
) -> Result<(Pickle, bool)> {
    let mut m = Machine {
        data,
        pos: 0,
        op_start: 0,
        allow,
        limits,
        pk: Pickle {
            // Roughly one object per 16 bytes of stream in scikit-learn's pickles: sized once
            // instead of grown by doubling (bounded by the node limit, not by the input).
            nodes: Vec::with_capacity((data.len() / 16).min(limits.max_nodes).min(1 << 16)),
            ..Pickle::default()
        },
        saw_joblib_wrapper: false,
    };
    let root = m.run(0)?;
    m.pk.root = Some(root);
    Ok((m.pk, m.saw_joblib_wrapper))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for error messages.
    op_start: usize,
    allow: &'a AllowList,
    limits: &'a Limits,
    pk: Pickle,
    saw_joblib_wrapper: bool,
}

/// Per-stream state: a joblib object array is a whole pickle nested in the stream, with a stack
/// and memo of its own.
#[derive(Default)]
struct Frame {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Memo,
}

/// The memo. Picklers number entries 0, 1, 2, ..., so they live in a vector; a key far beyond
/// the others (only a hand-made file has one) goes to a map, so no key makes us allocate much.
#[derive(Default)]
struct Memo {
    dense: Vec<Option<Value>>,
    sparse: HashMap<u32, Value>,
    /// Distinct keys stored (what MEMOIZE numbers the next entry with).
    len: usize,
}

impl Memo {
    /// How far past the dense part a key may be and still extend it.
    const MAX_GAP: usize = 1024;

    fn insert(&mut self, k: u32, v: Value) {
        let i = k as usize;
        if i >= self.dense.len() && i <= self.dense.len() + Memo::MAX_GAP {
            self.dense.resize(i + 1, None);
        }
        let previous = match self.dense.get_mut(i) {
            Some(slot) => {
                let old = slot.replace(v);
                // A key stored in the map before the vector reached it moves here.
                old.or_else(|| {
                    if self.sparse.is_empty() {
                        None
                    } else {
                        self.sparse.remove(&k)
                    }
                })
            }
            None => self.sparse.insert(k, v),
        };
        if previous.is_none() {
            self.len += 1;
        }
    }

    fn get(&self, k: u32) -> Option<Value> {
        match self.dense.get(k as usize) {
            Some(slot) => *slot,
            None => self.sparse.get(&k).copied(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl<'a> Machine<'a> {
    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Malformed {
            offset: self.op_start,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let available = self.data.len() - self.pos;
        if n > available {
            return Err(Error::Truncated {
                what,
                offset: self.op_start,
                needed: n,
                available,
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// A length read from the stream, checked against what is left so that a corrupt length never
    /// allocates.
    fn len_prefixed(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.take(n, what)
    }

    fn line(&mut self, what: &'static str) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Error::Truncated {
                what,
                offset: self.op_start,
                needed: rest.len() + 1,
                available: rest.len(),
            })?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end])
            .map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    fn push_node(&mut self, node: Node) -> Result<Value> {
        if self.pk.len() >= self.limits.max_nodes {
            return Err(Error::Limit(format!(
                "more than {} objects in one file",
                self.limits.max_nodes
            )));
        }
        Ok(self.pk.push(node))
    }

    fn pop(&self, f: &mut Frame) -> Result<Value> {
        f.stack
            .pop()
            .ok_or_else(|| self.malformed("stack is empty"))
    }

    fn pop_mark(&self, f: &mut Frame) -> Result<Vec<Value>> {
        let mark = f
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK on the stack"))?;
        if mark > f.stack.len() {
            return Err(self.malformed("MARK above the top of the stack"));
        }
        Ok(f.stack.split_off(mark))
    }

    fn top_id(&self, f: &Frame) -> Result<NodeId> {
        match f.stack.last() {
            Some(Value::Ref(id)) => Ok(*id),
            Some(v) => Err(self.malformed(format!(
                "expected a container on the stack, found {}",
                self.pk.describe(*v)
            ))),
            None => Err(self.malformed("stack is empty")),
        }
    }

    fn global(&self, module: &str, name: &str) -> Result<Global> {
        self.allow
            .resolve(module, name)
            .ok_or_else(|| Error::Forbidden {
                module: module.to_string(),
                name: name.to_string(),
                offset: self.op_start,
            })
    }

    fn run(&mut self, depth: usize) -> Result<Value> {
        let mut f = Frame::default();
        loop {
            self.op_start = self.pos;
            let op = self.u8("opcode")?;
            match op {
                // PROTO
                0x80 => {
                    let p = self.u8("protocol")?;
                    if p > 5 {
                        return Err(Error::Unsupported {
                            offset: self.op_start,
                            what: format!("pickle protocol {p} (this reader knows 0 to 5)"),
                        });
                    }
                    self.pk.protocol = self.pk.protocol.max(p);
                }
                // FRAME: frames only group opcodes; the data is contiguous either way.
                0x95 => {
                    let n = self.u64("frame length")?;
                    let left = (self.data.len() - self.pos) as u64;
                    if n > left {
                        return Err(Error::Truncated {
                            what: "frame",
                            offset: self.op_start,
                            needed: usize::try_from(n).unwrap_or(usize::MAX),
                            available: left as usize,
                        });
                    }
                }
                // STOP
                b'.' => return self.pop(&mut f),
                b'(' => f.marks.push(f.stack.len()),
                b'0' => {
                    self.pop(&mut f)?;
                }
                b'1' => {
                    self.pop_mark(&mut f)?;
                }
                b'2' => {
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.stack.push(v);
                }
                b'N' => f.stack.push(Value::None),
                0x88 => f.stack.push(Value::Bool(true)),
                0x89 => f.stack.push(Value::Bool(false)),
                // BININT, BININT1, BININT2
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4, "BININT")?.try_into().expect("4"));
                    f.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8("BININT1")?;
                    f.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16("BININT2")?;
                    f.stack.push(Value::Int(v.into()));
                }
                // INT (text): also how protocol 0 writes booleans.
                b'I' => {
                    let line = self.line("INT")?;
                    let v = match line {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => Value::Int(
                            s.parse()
                                .map_err(|_| self.malformed(format!("bad INT {s:?}")))?,
                        ),
                    };
                    f.stack.push(v);
                }
                // LONG (text)
                b'L' => {
                    let line = self.line("LONG")?;
                    let s = line.trim_end_matches('L');
                    let v: i64 = s.parse().map_err(|_| {
                        self.malformed(format!("LONG {s:?} is not a 64-bit integer"))
                    })?;
                    f.stack.push(Value::Int(v));
                }
                // LONG1, LONG4
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.u8("LONG1 length")?)
                    } else {
                        let n = i32::from_le_bytes(
                            self.take(4, "LONG4 length")?.try_into().expect("4"),
                        );
                        u64::try_from(n).map_err(|_| self.malformed("negative LONG4 length"))?
                    };
                    let bytes = self.len_prefixed(n, "LONG")?;
                    let v = decode_long(bytes);
                    let v = match v {
                        Some(i) => Value::Int(i),
                        None => self.push_node(Node::BigInt(bytes.to_vec()))?,
                    };
                    f.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8, "BINFLOAT")?.try_into().expect("8"));
                    f.stack.push(Value::Float(v));
                }
                b'F' => {
                    let line = self.line("FLOAT")?;
                    let v: f64 = line
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(format!("bad FLOAT {line:?}")))?;
                    f.stack.push(Value::Float(v));
                }
                // Unicode strings.
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32("BINUNICODE length")?),
                        0x8c => u64::from(self.u8("SHORT_BINUNICODE length")?),
                        _ => self.u64("BINUNICODE8 length")?,
                    };
                    let b = self.len_prefixed(n, "string")?;
                    // Python writes lone surrogates with surrogatepass; keep what decodes.
                    let s = String::from_utf8_lossy(b).into_owned();
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                b'V' => {
                    let line = self.line("UNICODE")?;
                    let s = decode_raw_unicode_escape(line);
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                // Python 2 byte strings, decoded as latin-1 (what numpy and scikit-learn expect).
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        u64::from(self.u32("BINSTRING length")?)
                    } else {
                        u64::from(self.u8("SHORT_BINSTRING length")?)
                    };
                    let b = self.len_prefixed(n, "string")?;
                    let s: String = b.iter().map(|&c| char::from(c)).collect();
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                b'S' => {
                    let line = self.line("STRING")?;
                    let s = decode_quoted_string(line)
                        .ok_or_else(|| self.malformed(format!("bad STRING {line:?}")))?;
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                // Bytes.
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32("BINBYTES length")?),
                        b'C' => u64::from(self.u8("SHORT_BINBYTES length")?),
                        _ => self.u64("BINBYTES8 length")?,
                    };
                    let b = self.len_prefixed(n, "bytes")?.to_vec();
                    let v = self.push_node(Node::Bytes(b))?;
                    f.stack.push(v);
                }
                0x97 | 0x98 => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "out-of-band buffers (pickle protocol 5 with buffer_callback); save the model with in-band data".into(),
                    });
                }
                // Containers.
                b')' => {
                    let v = self.push_node(Node::Tuple(Vec::new()))?;
                    f.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark(&mut f)?;
                    let v = self.push_node(Node::Tuple(items))?;
                    f.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if f.stack.len() < n {
                        return Err(self.malformed("TUPLE needs more items than the stack has"));
                    }
                    let items = f.stack.split_off(f.stack.len() - n);
                    let v = self.push_node(Node::Tuple(items))?;
                    f.stack.push(v);
                }
                b']' => {
                    let v = self.push_node(Node::List(Vec::new()))?;
                    f.stack.push(v);
                }
                b'l' => {
                    let items = self.pop_mark(&mut f)?;
                    let v = self.push_node(Node::List(items))?;
                    f.stack.push(v);
                }
                b'}' => {
                    let v = self.push_node(Node::Dict(Vec::new()))?;
                    f.stack.push(v);
                }
                b'd' => {
                    let items = self.pop_mark(&mut f)?;
                    let entries = pairs(items)
                        .ok_or_else(|| self.malformed("DICT with an odd number of items"))?;
                    let v = self.push_node(Node::Dict(entries))?;
                    f.stack.push(v);
                }
                0x8f => {
                    let v = self.push_node(Node::Set(Vec::new()))?;
                    f.stack.push(v);
                }
                0x91 => {
                    let items = self.pop_mark(&mut f)?;
                    let v = self.push_node(Node::Set(items))?;
                    f.stack.push(v);
                }
                b'a' => {
                    let item = self.pop(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.extend_list(id, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.extend_list(id, items)?;
                }
                b's' => {
                    let value = self.pop(&mut f)?;
                    let key = self.pop(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.extend_dict(id, vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark(&mut f)?;
                    let entries = pairs(items)
                        .ok_or_else(|| self.malformed("SETITEMS with an odd number of items"))?;
                    let id = self.top_id(&f)?;
                    self.extend_dict(id, entries)?;
                }
                0x90 => {
                    let items = self.pop_mark(&mut f)?;
                    let id = self.top_id(&f)?;
                    match self.pk.node_mut(id) {
                        Node::Set(s) => s.extend(items),
                        other => {
                            let t = other.type_name();
                            return Err(self.malformed(format!("ADDITEMS to a {t}")));
                        }
                    }
                }
                // Memo.
                b'p' => {
                    let line = self.line("PUT")?;
                    let k = line.parse().map_err(|_| self.malformed("bad PUT index"))?;
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.memo.insert(k, v);
                }
                b'q' | b'r' => {
                    let k = if op == b'q' {
                        u32::from(self.u8("BINPUT")?)
                    } else {
                        self.u32("LONG_BINPUT")?
                    };
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.memo.insert(k, v);
                }
                0x94 => {
                    let k = f.memo.len() as u32;
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.memo.insert(k, v);
                }
                b'g' | b'h' | b'j' => {
                    let k: u32 = match op {
                        b'g' => {
                            let line = self.line("GET")?;
                            line.parse().map_err(|_| self.malformed("bad GET index"))?
                        }
                        b'h' => u32::from(self.u8("BINGET")?),
                        _ => self.u32("LONG_BINGET")?,
                    };
                    let v = f
                        .memo
                        .get(k)
                        .ok_or_else(|| self.malformed(format!("memo key {k} was never stored")))?;
                    f.stack.push(v);
                }
                // Globals: the only way a pickle can name code, so the allow-list is checked here.
                b'c' => {
                    let module = self.line("GLOBAL module")?;
                    let name = self.line("GLOBAL name")?;
                    let g = self.global(module, name)?;
                    let v = self.push_node(Node::Global(g))?;
                    f.stack.push(v);
                }
                0x93 => {
                    let name = self.pop(&mut f)?;
                    let module = self.pop(&mut f)?;
                    let (Some(module), Some(name)) = (self.pk.as_str(module), self.pk.as_str(name))
                    else {
                        return Err(self.malformed("STACK_GLOBAL needs two strings"));
                    };
                    let (module, name) = (module.to_string(), name.to_string());
                    let g = self.global(&module, &name)?;
                    let v = self.push_node(Node::Global(g))?;
                    f.stack.push(v);
                }
                b'R' => {
                    let args = self.pop(&mut f)?;
                    let callable = self.pop(&mut f)?;
                    let args = self
                        .pk
                        .as_seq(args)
                        .ok_or_else(|| self.malformed("REDUCE arguments are not a tuple"))?
                        .to_vec();
                    let v = self.call(callable, args)?;
                    f.stack.push(v);
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        // NEWOBJ_EX: keyword arguments are kept with the positional ones.
                        let kwargs = self.pop(&mut f)?;
                        if self.pk.as_dict(kwargs).is_none_or(|d| !d.is_empty()) {
                            return Err(self.malformed("NEWOBJ_EX with keyword arguments"));
                        }
                    }
                    let args = self.pop(&mut f)?;
                    let cls = self.pop(&mut f)?;
                    let args = self
                        .pk
                        .as_seq(args)
                        .ok_or_else(|| self.malformed("NEWOBJ arguments are not a tuple"))?
                        .to_vec();
                    let v = self.new_object(cls, args)?;
                    f.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.build(id, state, depth)?;
                }
                b'i' | b'o' => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "INST/OBJ (protocol 0/1 class instantiation); save the model with pickle protocol 2 or newer".into(),
                    });
                }
                b'P' | b'Q' => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "persistent ids".into(),
                    });
                }
                0x82..=0x84 => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "the copyreg extension registry (EXT1/EXT2/EXT4)".into(),
                    });
                }
                other => {
                    return Err(Error::UnknownOpcode {
                        opcode: other,
                        offset: self.op_start,
                    });
                }
            }
        }
    }

    fn extend_list(&mut self, id: NodeId, items: Vec<Value>) -> Result<()> {
        match self.pk.node_mut(id) {
            Node::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => {
                let t = other.type_name();
                Err(self.malformed(format!("APPEND to a {t}")))
            }
        }
    }

    fn extend_dict(&mut self, id: NodeId, entries: Vec<(Value, Value)>) -> Result<()> {
        match self.pk.node_mut(id) {
            Node::Dict(d) => {
                d.extend(entries);
                Ok(())
            }
            other => {
                let t = other.type_name();
                Err(self.malformed(format!("SETITEM on a {t}")))
            }
        }
    }

    fn global_of(&self, v: Value) -> Result<Global> {
        match self.pk.get(v) {
            Some(Node::Global(g)) => Ok(g.clone()),
            _ => Err(self.malformed(format!(
                "expected a class or function, found {}",
                self.pk.describe(v)
            ))),
        }
    }

    fn new_object(&mut self, cls: Value, args: Vec<Value>) -> Result<Value> {
        let g = self.global_of(cls)?;
        match g.kind {
            GlobalKind::Class | GlobalKind::Inert | GlobalKind::JoblibArrayWrapper => {
                if g.kind == GlobalKind::JoblibArrayWrapper {
                    self.saw_joblib_wrapper = true;
                }
                self.push_node(Node::Object(Object {
                    class: g,
                    args,
                    state: None,
                }))
            }
            GlobalKind::Dict => self.push_node(Node::Dict(Vec::new())),
            GlobalKind::List => self.push_node(Node::List(Vec::new())),
            GlobalKind::Set => self.push_node(Node::Set(Vec::new())),
            _ => Err(self.malformed(format!("{} is not a class", g.qualified()))),
        }
    }

    /// Interprets REDUCE: builds what the allow-listed callable would return, without calling
    /// anything.
    fn call(&mut self, callable: Value, args: Vec<Value>) -> Result<Value> {
        let g = self.global_of(callable)?;
        let arg = |i: usize| args.get(i).copied().unwrap_or(Value::None);
        match g.kind {
            GlobalKind::Class | GlobalKind::Inert => self.push_node(Node::Object(Object {
                class: g,
                args,
                state: None,
            })),
            GlobalKind::JoblibArrayWrapper => {
                self.saw_joblib_wrapper = true;
                self.push_node(Node::Object(Object {
                    class: g,
                    args,
                    state: None,
                }))
            }
            GlobalKind::NewObj => {
                let cls = arg(0);
                self.new_object(cls, args.get(1..).unwrap_or_default().to_vec())
            }
            GlobalKind::CopyregReconstructor => {
                let cls = arg(0);
                self.new_object(cls, Vec::new())
            }
            GlobalKind::NumpyReconstruct => {
                let cls = self.global_of(arg(0))?;
                if cls.kind != GlobalKind::NumpyNdarray {
                    return Err(self.malformed(format!(
                        "_reconstruct of {}, expected numpy.ndarray",
                        cls.qualified()
                    )));
                }
                // An empty array; BUILD gives it shape, dtype and data.
                self.push_node(Node::Object(Object {
                    class: cls,
                    args: Vec::new(),
                    state: None,
                }))
            }
            GlobalKind::NumpyDType => {
                let code = self
                    .pk
                    .as_str(arg(0))
                    .ok_or_else(|| self.malformed("numpy.dtype needs a type string"))?;
                let dtype = DType::from_code(code)
                    .ok_or_else(|| self.malformed(format!("unknown numpy dtype {code:?}")))?;
                self.push_node(Node::DType(dtype))
            }
            GlobalKind::NumpyScalar => self.numpy_scalar(arg(0), arg(1)),
            GlobalKind::NumpyFromBuffer => {
                let buf = self
                    .pk
                    .as_bytes(arg(0))
                    .ok_or_else(|| self.malformed("_frombuffer needs a buffer"))?
                    .to_vec();
                let dtype = self.dtype_of(arg(1))?;
                let shape = self.shape_of(arg(2))?;
                let fortran = self.pk.as_str(arg(3)) == Some("F");
                let array =
                    NdArray::from_raw(dtype, shape, fortran, buf).map_err(|m| Error::BadArray {
                        offset: self.op_start,
                        message: m,
                    })?;
                self.push_node(Node::Array(array))
            }
            GlobalKind::CodecsEncode => {
                let s = self
                    .pk
                    .as_str(arg(0))
                    .ok_or_else(|| self.malformed("_codecs.encode needs a str"))?;
                let enc = self.pk.as_str(arg(1)).unwrap_or("utf-8");
                let bytes = match enc {
                    "latin1" | "latin-1" | "iso-8859-1" => s
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).ok())
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| self.malformed("latin-1 text with characters above 255"))?,
                    "utf-8" | "utf8" => s.as_bytes().to_vec(),
                    other => {
                        return Err(self.malformed(format!("_codecs.encode to {other:?}")));
                    }
                };
                self.push_node(Node::Bytes(bytes))
            }
            GlobalKind::Dict => {
                let entries = match self.pk.get(arg(0)) {
                    None => Vec::new(),
                    Some(Node::Dict(d)) => d.clone(),
                    Some(Node::List(items)) | Some(Node::Tuple(items)) => {
                        let mut out = Vec::new();
                        for item in items.clone() {
                            match self.pk.as_seq(item) {
                                Some([k, v]) => out.push((*k, *v)),
                                _ => {
                                    return Err(
                                        self.malformed("dict() of items that are not pairs")
                                    );
                                }
                            }
                        }
                        out
                    }
                    Some(other) => {
                        return Err(self.malformed(format!("dict() of a {}", other.type_name())));
                    }
                };
                self.push_node(Node::Dict(entries))
            }
            GlobalKind::Set | GlobalKind::List => {
                let items = match self.pk.get(arg(0)) {
                    None => Vec::new(),
                    Some(Node::List(i)) | Some(Node::Tuple(i)) | Some(Node::Set(i)) => i.clone(),
                    Some(other) => {
                        return Err(self.malformed(format!("set() of a {}", other.type_name())));
                    }
                };
                let node = if g.kind == GlobalKind::Set {
                    Node::Set(items)
                } else {
                    Node::List(items)
                };
                self.push_node(node)
            }
            GlobalKind::ByteArray => {
                let bytes = match self.pk.get(arg(0)) {
                    None => Vec::new(),
                    Some(Node::Bytes(b)) => b.clone(),
                    Some(Node::Str(s)) => s.chars().map(|c| c as u32 as u8).collect(),
                    Some(other) => {
                        return Err(
                            self.malformed(format!("bytearray() of a {}", other.type_name()))
                        );
                    }
                };
                self.push_node(Node::Bytes(bytes))
            }
            GlobalKind::NumpyNdarray | GlobalKind::Object => {
                Err(self.malformed(format!("{} cannot be called directly", g.qualified())))
            }
        }
    }

    fn numpy_scalar(&mut self, dtype: Value, data: Value) -> Result<Value> {
        let dtype = self.dtype_of(dtype)?;
        if dtype.kind == DTypeKind::Object {
            return Ok(data);
        }
        let bytes = match self.pk.get(data) {
            Some(Node::Bytes(b)) => b.clone(),
            // Protocol 2 under Python 2 wrote the bytes as a latin-1 str.
            Some(Node::Str(s)) => s.chars().map(|c| c as u32 as u8).collect(),
            _ => return Err(self.malformed("numpy scalar without its bytes")),
        };
        let array =
            NdArray::from_raw(dtype, vec![1], false, bytes).map_err(|m| Error::BadArray {
                offset: self.op_start,
                message: m,
            })?;
        Ok(match array.dtype.kind {
            DTypeKind::Float => Value::Float(array.to_f64().map_err(|m| self.malformed(m))?[0]),
            DTypeKind::Bool => Value::Bool(array.to_i64().map_err(|m| self.malformed(m))?[0] != 0),
            DTypeKind::Int | DTypeKind::UInt => match array.to_i64() {
                Ok(v) => Value::Int(v[0]),
                Err(_) => Value::Float(array.to_f64().map_err(|m| self.malformed(m))?[0]),
            },
            _ => self.push_node(Node::Array(array))?,
        })
    }

    fn dtype_of(&self, v: Value) -> Result<DType> {
        match self.pk.get(v) {
            Some(Node::DType(d)) => Ok(d.clone()),
            _ => Err(self.malformed(format!(
                "expected a numpy dtype, found {}",
                self.pk.describe(v)
            ))),
        }
    }

    fn shape_of(&self, v: Value) -> Result<Vec<usize>> {
        if let Value::Int(n) = v {
            return usize::try_from(n)
                .map(|n| vec![n])
                .map_err(|_| self.malformed("negative array dimension"));
        }
        let dims = self.pk.as_seq(v).ok_or_else(|| {
            self.malformed(format!(
                "expected an array shape, found {}",
                self.pk.describe(v)
            ))
        })?;
        dims.iter()
            .map(|d| match d {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => {
                    Err(self.malformed(format!("bad array dimension {}", self.pk.describe(*other))))
                }
            })
            .collect()
    }

    /// BUILD: sets an object's state; for numpy arrays and dtypes, completes them.
    fn build(&mut self, id: NodeId, state: Value, depth: usize) -> Result<()> {
        let class_kind = match self.pk.node(id) {
            Node::Object(o) => Some(o.class.kind),
            _ => None,
        };
        match (self.pk.node(id), class_kind) {
            (Node::Object(_), Some(GlobalKind::NumpyNdarray)) => {
                let array = self.array_from_state(state)?;
                *self.pk.node_mut(id) = Node::Array(array);
                Ok(())
            }
            (Node::Object(_), Some(GlobalKind::JoblibArrayWrapper)) => {
                let array = self.joblib_inline_array(state, depth)?;
                *self.pk.node_mut(id) = Node::Array(array);
                Ok(())
            }
            (Node::Object(o), _) => {
                // Python's default: update the instance dict with the state dict.
                let merged = match (o.state, self.pk.as_dict(state)) {
                    (Some(old), Some(new)) if self.pk.as_dict(old).is_some() => {
                        let new = new.to_vec();
                        if let Value::Ref(old_id) = old {
                            self.extend_dict(old_id, new)?;
                        }
                        old
                    }
                    _ => state,
                };
                if let Node::Object(o) = self.pk.node_mut(id) {
                    o.state = Some(merged);
                }
                Ok(())
            }
            (Node::DType(_), _) => {
                let dtype = self.dtype_state(id, state)?;
                *self.pk.node_mut(id) = Node::DType(dtype);
                Ok(())
            }
            (other, _) => {
                let t = other.type_name();
                Err(self.malformed(format!("BUILD on a {t}")))
            }
        }
    }

    /// numpy's dtype `__setstate__`: byte order, record fields and the size of flexible types.
    fn dtype_state(&self, id: NodeId, state: Value) -> Result<DType> {
        let Node::DType(base) = self.pk.node(id) else {
            unreachable!("checked by the caller")
        };
        let mut dtype = base.clone();
        let items = self
            .pk
            .as_seq(state)
            .ok_or_else(|| self.malformed("dtype state is not a tuple"))?;
        if items.len() < 6 {
            return Err(
                self.malformed(format!("dtype state has {} items, expected 8", items.len()))
            );
        }
        if let Some(order) = self.pk.as_str(items[1]) {
            dtype.little_endian = order != ">";
        }
        if let Some(names) = self.pk.as_seq(items[3]) {
            let fields_dict = items[4];
            let mut fields = Vec::with_capacity(names.len());
            for &name in names {
                let name_s = self
                    .pk
                    .as_str(name)
                    .ok_or_else(|| self.malformed("record field name is not a str"))?;
                let entry = self
                    .pk
                    .as_dict(fields_dict)
                    .and_then(|d| d.iter().find(|(k, _)| self.pk.as_str(*k) == Some(name_s)))
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        self.malformed(format!("record field `{name_s}` has no description"))
                    })?;
                let parts = self
                    .pk
                    .as_seq(entry)
                    .ok_or_else(|| self.malformed("record field description is not a tuple"))?;
                let (Some(&fdtype), Some(&Value::Int(offset))) = (parts.first(), parts.get(1))
                else {
                    return Err(
                        self.malformed(format!("record field `{name_s}` lacks dtype or offset"))
                    );
                };
                let fdtype = self.dtype_of(fdtype)?;
                let offset =
                    usize::try_from(offset).map_err(|_| self.malformed("negative field offset"))?;
                fields.push(crate::numpy::Field {
                    name: name_s.to_string(),
                    dtype: fdtype,
                    offset,
                });
            }
            dtype.fields = fields;
        }
        if let Value::Int(elsize) = items[5]
            && elsize > 0
        {
            dtype.itemsize = elsize as usize;
        }
        for f in &dtype.fields {
            if f.offset
                .checked_add(f.dtype.itemsize)
                .is_none_or(|end| end > dtype.itemsize)
            {
                return Err(self.malformed(format!(
                    "record field `{}` ends past the record size {}",
                    f.name, dtype.itemsize
                )));
            }
        }
        Ok(dtype)
    }

    /// numpy's ndarray `__setstate__`: `(version, shape, dtype, is_fortran, rawdata)`.
    fn array_from_state(&self, state: Value) -> Result<NdArray> {
        let items = self
            .pk
            .as_seq(state)
            .ok_or_else(|| self.malformed("ndarray state is not a tuple"))?;
        let items = match items.len() {
            5 => &items[1..],
            4 => items,
            n => return Err(self.malformed(format!("ndarray state has {n} items, expected 5"))),
        };
        let shape = self.shape_of(items[0])?;
        let dtype = self.dtype_of(items[1])?;
        let fortran = matches!(items[2], Value::Bool(true) | Value::Int(1));
        let bad = |m: String| Error::BadArray {
            offset: self.op_start,
            message: m,
        };
        match self.pk.get(items[3]) {
            Some(Node::Bytes(b)) => {
                NdArray::from_raw(dtype, shape, fortran, b.clone()).map_err(bad)
            }
            Some(Node::Str(s)) => {
                let raw: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
                NdArray::from_raw(dtype, shape, fortran, raw).map_err(bad)
            }
            Some(Node::List(objs)) if dtype.kind == DTypeKind::Object => {
                NdArray::from_objects(dtype, shape, fortran, objs.clone()).map_err(bad)
            }
            _ => Err(bad(format!(
                "array data is {}, expected bytes",
                self.pk.describe(items[3])
            ))),
        }
    }

    /// joblib writes each array as a `NumpyArrayWrapper` whose BUILD is followed by the array's
    /// bytes (after optional alignment padding), or for object arrays by a nested pickle.
    fn joblib_inline_array(&mut self, state: Value, depth: usize) -> Result<NdArray> {
        let get = |k: &str| self.pk.dict_get(state, k);
        let dtype = self.dtype_of(get("dtype").unwrap_or(Value::None))?;
        let shape = self.shape_of(get("shape").unwrap_or(Value::None))?;
        let fortran = get("order").and_then(|o| self.pk.as_str(o)) == Some("F");
        let aligned = matches!(get("numpy_array_alignment_bytes"), Some(Value::Int(_)));
        if dtype.kind == DTypeKind::Object {
            if depth + 1 > self.limits.max_nested_pickles {
                return Err(Error::Limit(format!(
                    "joblib object arrays nested more than {} deep",
                    self.limits.max_nested_pickles
                )));
            }
            let saved = self.op_start;
            let v = self.run(depth + 1)?;
            self.op_start = saved;
            return match self.pk.get(v) {
                Some(Node::Array(a)) => Ok(a.clone()),
                _ => Err(self.malformed("joblib object array is not an array")),
            };
        }
        if aligned {
            let pad = self.u8("joblib alignment padding length")?;
            self.take(usize::from(pad), "joblib alignment padding")?;
        }
        let count = element_count(&shape).ok_or_else(|| self.malformed("array shape overflows"))?;
        let n = count
            .checked_mul(dtype.itemsize)
            .ok_or_else(|| self.malformed("array size overflows"))?;
        let raw = self.take(n, "joblib array data")?.to_vec();
        NdArray::from_raw(dtype, shape, fortran, raw).map_err(|m| Error::BadArray {
            offset: self.op_start,
            message: m,
        })
    }
}

fn pairs(items: Vec<Value>) -> Option<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    Some(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

/// Little-endian two's complement, if it fits in i64.
fn decode_long(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if bytes.len() > 8 {
        // Longer encodings fit only if the extra bytes are sign extension.
        let (low, high) = bytes.split_at(8);
        if high.iter().any(|&b| b != fill) || ((low[7] & 0x80 != 0) != negative) {
            return None;
        }
        return Some(i64::from_le_bytes(low.try_into().expect("8 bytes")));
    }
    let mut buf = [fill; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(buf))
}

/// Protocol 0's `raw-unicode-escape`: only `\uXXXX` and `\UXXXXXXXX` are escapes.
fn decode_raw_unicode_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some('u') | Some('U')) {
            let width = if chars.next() == Some('u') { 4 } else { 8 };
            let hex: String = chars.by_ref().take(width).collect();
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => {
                    out.push('\\');
                    out.push_str(&hex);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Protocol 0's STRING argument: a quoted Python literal with backslash escapes.
fn decode_quoted_string(line: &str) -> Option<String> {
    let q = line.chars().next()?;
    if !(q == '\'' || q == '"') || !line.ends_with(q) || line.len() < 2 {
        return None;
    }
    let inner = &line[1..line.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(bytes: &[u8]) -> Result<Pickle> {
        unpickle(bytes, &AllowList::new(), &Limits::default())
    }

    #[test]
    fn longs_decode_with_sign() {
        assert_eq!(decode_long(&[0xff]), Some(-1));
        assert_eq!(decode_long(&[0x00, 0x01]), Some(256));
        assert_eq!(decode_long(&[0xff; 9]), Some(-1));
        assert_eq!(decode_long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn memo_keys_dense_sparse_and_moved() {
        let mut memo = Memo::default();
        memo.insert(0, Value::Int(10));
        memo.insert(u32::MAX, Value::Int(11));
        memo.insert(3, Value::Int(12));
        assert_eq!(memo.dense.len(), 4, "a small gap extends the vector");
        assert_eq!(memo.sparse.len(), 1, "a far key does not allocate up to it");
        memo.insert(2000, Value::Int(13));
        assert_eq!((memo.get(2000), memo.get(1)), (Some(Value::Int(13)), None));
        // The vector grows over 2000: its entry moves in, and is counted once.
        for k in 4..2001 {
            memo.insert(k, Value::Int(1));
        }
        assert_eq!(memo.get(2000), Some(Value::Int(1)));
        assert_eq!(memo.get(u32::MAX), Some(Value::Int(11)));
        assert_eq!(memo.len(), 2 + 1 + 1997);
    }

    #[test]
    fn memoized_list_stays_shared() {
        // pickle.dumps([x, x]) with x = [] under protocol 2: EMPTY_LIST BINPUT 0, MARK,
        // EMPTY_LIST BINPUT 1, BINGET 1, APPENDS, STOP.
        let bytes = b"\x80\x02]q\x00(]q\x01h\x01e.";
        let pk = load(bytes).unwrap();
        let items = pk.as_seq(pk.root()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1]);
    }

    #[test]
    fn forbidden_global_names_module_name_and_offset() {
        let bytes = b"\x80\x02cos\nsystem\nq\x00.";
        let err = load(bytes).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`os.system`"), "{msg}");
        assert!(msg.contains("byte 2"), "{msg}");
    }

    #[test]
    fn truncated_stream_names_offset() {
        let err = load(b"\x80\x04\x8c\x10abc").unwrap_err();
        assert!(matches!(err, Error::Truncated { offset: 2, .. }), "{err}");
    }

    #[test]
    fn protocol_0_strings_decode() {
        assert_eq!(decode_quoted_string("'a\\x41\\n'").unwrap(), "aA\n");
        assert_eq!(decode_raw_unicode_escape("caf\\u00e9"), "café");
    }
}
