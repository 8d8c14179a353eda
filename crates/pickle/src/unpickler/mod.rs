//! The pickle virtual machine: reads opcodes (protocols 0 to 5), keeps the stack, marks and memo,
//! and rebuilds values into the arena. Callables are never called: REDUCE, NEWOBJ and BUILD on
//! an allow-listed global are interpreted by `construct`, which knows a fixed set of constructors,
//! and everything about numpy's layout is behind [`crate::numpy`].

mod construct;
mod decode;
mod memo;
mod opcodes;

use self::decode::{decode_long, decode_quoted_string, decode_raw_unicode_escape};
use self::memo::Memo;
use self::opcodes as op;
use crate::budget::{Budget, GROWTH, Meter};
use crate::error::{Error, Result};
use crate::globals::AllowList;
use crate::numpy::{InlineData, NdArray, Reconstruct};
use crate::value::{Global, Node, NodeId, Pickle, Value};

/// Limits that keep a hostile file from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most nodes (strings, containers, objects, arrays) one file may create.
    pub max_nodes: usize,
    /// Most bytes a compressed file may decompress to.
    pub max_decompressed_bytes: usize,
    /// Deepest nesting of joblib object arrays (each one a pickle inside the pickle).
    pub max_nested_pickles: usize,
    /// Most bytes one load may allocate, everything counted: the decompressed stream, the
    /// pickle machine's stack, marks and memo, every object and what it holds, and what the
    /// model layer builds from them ([`Budget`]).
    pub max_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_nodes: 50_000_000,
            max_decompressed_bytes: 4 << 30,
            max_nested_pickles: 8,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
        }
    }
}

/// The default [`Limits::max_memory_bytes`]: 1 GiB. The largest real model among the test
/// fixtures (the 100-tree IsolationForest pickled with protocol 0, 795 kB) charges 13.3 MB
/// (`fleetscore models bench FILE` prints `load_memory_bytes`): this is 80 times that, room for
/// far larger real models, while a hostile file stays far from exhausting a machine.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 1 << 30;

/// Unpickles one stream: `data` must start at the first opcode.
pub fn unpickle(data: &[u8], allow: &AllowList, limits: &Limits) -> Result<Pickle> {
    let budget = Budget::new(limits.max_memory_bytes);
    unpickle_detect_joblib(data, allow, limits, &budget).map(|(pickle, _)| pickle)
}

/// Like [`unpickle`], and also says whether the stream carried joblib inline arrays.
pub(crate) fn unpickle_detect_joblib(
    data: &[u8],
    allow: &AllowList,
    limits: &Limits,
    budget: &Budget,
) -> Result<(Pickle, bool)> {
    let mut m = Machine {
        data,
        pos: 0,
        op_start: 0,
        allow,
        limits,
        budget,
        slots: Meter::default(),
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
    /// Every allocation the stream causes is charged here first.
    budget: &'a Budget,
    /// What the arena's slots have been charged.
    slots: Meter,
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
    /// What the stack, marks and memo have been charged, together.
    meter: Meter,
}

impl Frame {
    /// Bytes the stack, marks and memo hold.
    fn footprint(&self) -> usize {
        self.stack.capacity() * std::mem::size_of::<Value>()
            + self.marks.capacity() * std::mem::size_of::<usize>()
            + self.memo.footprint()
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

    /// A protocol 0 argument line, as bytes (without its newline).
    fn line_bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
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
        Ok(&rest[..end])
    }

    fn line(&mut self, what: &'static str) -> Result<&'a str> {
        let line = self.line_bytes(what)?;
        std::str::from_utf8(line).map_err(|_| self.malformed(format!("{what} is not UTF-8")))
    }

    /// Charges `bytes` about to be allocated for the opcode being executed.
    fn charge(&self, bytes: usize) -> Result<()> {
        self.budget.charge(bytes).map_err(|e| self.over_budget(e))
    }

    fn over_budget(&self, e: crate::budget::OverBudget) -> Error {
        Error::Memory {
            limit: e.limit,
            offset: self.op_start,
        }
    }

    fn push_node(&mut self, node: Node) -> Result<Value> {
        if self.pk.len() >= self.limits.max_nodes {
            return Err(Error::Limit(format!(
                "more than {} objects in one file",
                self.limits.max_nodes
            )));
        }
        self.charge(node.heap_bytes().saturating_mul(GROWTH))?;
        let v = self.pk.push(node);
        let slots = self.pk.slots_bytes().saturating_mul(GROWTH);
        self.slots
            .update(slots, self.budget)
            .map_err(|e| self.over_budget(e))?;
        Ok(v)
    }

    /// Changes a node in place, charging what it grows by.
    fn mutate<R>(&mut self, id: NodeId, f: impl FnOnce(&mut Node) -> R) -> Result<R> {
        let node = self.pk.node_mut(id);
        let before = node.heap_bytes();
        let r = f(node);
        let after = self.pk.node(id).heap_bytes();
        self.charge(after.saturating_sub(before).saturating_mul(GROWTH))?;
        Ok(r)
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
            // What the last opcode grew the stack, marks or memo by.
            f.meter
                .update(f.footprint().saturating_mul(GROWTH), self.budget)
                .map_err(|e| self.over_budget(e))?;
            self.op_start = self.pos;
            let opcode = self.u8("opcode")?;
            if self.pk.protocol == 0 && op::is_protocol_1(opcode) {
                self.pk.protocol = 1;
            }
            match opcode {
                op::PROTO => {
                    let p = self.u8("protocol")?;
                    if p > 5 {
                        return Err(Error::Unsupported {
                            offset: self.op_start,
                            what: format!("pickle protocol {p} (this reader knows 0 to 5)"),
                        });
                    }
                    self.pk.protocol = self.pk.protocol.max(p);
                }
                // Frames only group opcodes; the data is contiguous either way.
                op::FRAME => {
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
                op::STOP => return self.pop(&mut f),
                op::MARK => f.marks.push(f.stack.len()),
                op::POP => {
                    self.pop(&mut f)?;
                }
                op::POP_MARK => {
                    self.pop_mark(&mut f)?;
                }
                op::DUP => {
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.stack.push(v);
                }
                op::NONE => f.stack.push(Value::None),
                op::NEWTRUE => f.stack.push(Value::Bool(true)),
                op::NEWFALSE => f.stack.push(Value::Bool(false)),
                op::BININT => {
                    let v = i32::from_le_bytes(self.take(4, "BININT")?.try_into().expect("4"));
                    f.stack.push(Value::Int(v.into()));
                }
                op::BININT1 => {
                    let v = self.u8("BININT1")?;
                    f.stack.push(Value::Int(v.into()));
                }
                op::BININT2 => {
                    let v = self.u16("BININT2")?;
                    f.stack.push(Value::Int(v.into()));
                }
                // Also how protocol 0 writes booleans.
                op::INT => {
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
                op::LONG => {
                    let line = self.line("LONG")?;
                    let s = line.trim_end_matches('L');
                    let v: i64 = s.parse().map_err(|_| {
                        self.malformed(format!("LONG {s:?} is not a 64-bit integer"))
                    })?;
                    f.stack.push(Value::Int(v));
                }
                op::LONG1 | op::LONG4 => {
                    let n = if opcode == op::LONG1 {
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
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.take(8, "BINFLOAT")?.try_into().expect("8"));
                    f.stack.push(Value::Float(v));
                }
                op::FLOAT => {
                    let line = self.line("FLOAT")?;
                    let v: f64 = line
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(format!("bad FLOAT {line:?}")))?;
                    f.stack.push(Value::Float(v));
                }
                // Unicode strings.
                op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8 => {
                    let n = match opcode {
                        op::BINUNICODE => u64::from(self.u32("BINUNICODE length")?),
                        op::SHORT_BINUNICODE => u64::from(self.u8("SHORT_BINUNICODE length")?),
                        _ => self.u64("BINUNICODE8 length")?,
                    };
                    let b = self.len_prefixed(n, "string")?;
                    // Python writes lone surrogates with surrogatepass; keep what decodes.
                    let s = String::from_utf8_lossy(b).into_owned();
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                op::UNICODE => {
                    let line = self.line_bytes("UNICODE")?;
                    let s = decode_raw_unicode_escape(line);
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                // Python 2 byte strings, decoded as latin-1 (what numpy and scikit-learn expect).
                op::BINSTRING | op::SHORT_BINSTRING => {
                    let n = if opcode == op::BINSTRING {
                        u64::from(self.u32("BINSTRING length")?)
                    } else {
                        u64::from(self.u8("SHORT_BINSTRING length")?)
                    };
                    let b = self.len_prefixed(n, "string")?;
                    let s: String = b.iter().map(|&c| char::from(c)).collect();
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                op::STRING => {
                    let line = self.line("STRING")?;
                    let s = decode_quoted_string(line)
                        .ok_or_else(|| self.malformed(format!("bad STRING {line:?}")))?;
                    let v = self.push_node(Node::Str(s))?;
                    f.stack.push(v);
                }
                // Bytes (a bytearray is kept as bytes).
                op::BINBYTES | op::SHORT_BINBYTES | op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = match opcode {
                        op::BINBYTES => u64::from(self.u32("BINBYTES length")?),
                        op::SHORT_BINBYTES => u64::from(self.u8("SHORT_BINBYTES length")?),
                        _ => self.u64("BINBYTES8 length")?,
                    };
                    let b = self.len_prefixed(n, "bytes")?.to_vec();
                    let v = self.push_node(Node::Bytes(b))?;
                    f.stack.push(v);
                }
                op::NEXT_BUFFER | op::READONLY_BUFFER => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "out-of-band buffers (pickle protocol 5 with buffer_callback); save the model with in-band data".into(),
                    });
                }
                // Containers.
                op::EMPTY_TUPLE => {
                    let v = self.push_node(Node::Tuple(Vec::new()))?;
                    f.stack.push(v);
                }
                op::TUPLE => {
                    let items = self.pop_mark(&mut f)?;
                    let v = self.push_node(Node::Tuple(items))?;
                    f.stack.push(v);
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(opcode - op::TUPLE1) + 1;
                    if f.stack.len() < n {
                        return Err(self.malformed("TUPLE needs more items than the stack has"));
                    }
                    let items = f.stack.split_off(f.stack.len() - n);
                    let v = self.push_node(Node::Tuple(items))?;
                    f.stack.push(v);
                }
                op::EMPTY_LIST => {
                    let v = self.push_node(Node::List(Vec::new()))?;
                    f.stack.push(v);
                }
                op::LIST => {
                    let items = self.pop_mark(&mut f)?;
                    let v = self.push_node(Node::List(items))?;
                    f.stack.push(v);
                }
                op::EMPTY_DICT => {
                    let v = self.push_node(Node::Dict(Vec::new()))?;
                    f.stack.push(v);
                }
                op::DICT => {
                    let items = self.pop_mark(&mut f)?;
                    let entries = pairs(items)
                        .ok_or_else(|| self.malformed("DICT with an odd number of items"))?;
                    let v = self.push_node(Node::Dict(entries))?;
                    f.stack.push(v);
                }
                op::EMPTY_SET => {
                    let v = self.push_node(Node::Set(Vec::new()))?;
                    f.stack.push(v);
                }
                op::FROZENSET => {
                    let items = self.pop_mark(&mut f)?;
                    let v = self.push_node(Node::Set(items))?;
                    f.stack.push(v);
                }
                op::APPEND => {
                    let item = self.pop(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.extend_list(id, vec![item])?;
                }
                op::APPENDS => {
                    let items = self.pop_mark(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.extend_list(id, items)?;
                }
                op::SETITEM => {
                    let value = self.pop(&mut f)?;
                    let key = self.pop(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.extend_dict(id, vec![(key, value)])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark(&mut f)?;
                    let entries = pairs(items)
                        .ok_or_else(|| self.malformed("SETITEMS with an odd number of items"))?;
                    let id = self.top_id(&f)?;
                    self.extend_dict(id, entries)?;
                }
                op::ADDITEMS => {
                    let items = self.pop_mark(&mut f)?;
                    let id = self.top_id(&f)?;
                    let added = self.mutate(id, |node| match node {
                        Node::Set(s) => {
                            s.extend(items);
                            Ok(())
                        }
                        other => Err(other.type_name()),
                    })?;
                    if let Err(t) = added {
                        return Err(self.malformed(format!("ADDITEMS to a {t}")));
                    }
                }
                // Memo.
                op::PUT => {
                    let line = self.line("PUT")?;
                    let k = line.parse().map_err(|_| self.malformed("bad PUT index"))?;
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.memo.insert(k, v);
                }
                op::BINPUT | op::LONG_BINPUT => {
                    let k = if opcode == op::BINPUT {
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
                op::MEMOIZE => {
                    let k = f.memo.len() as u32;
                    let v = *f
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed("stack is empty"))?;
                    f.memo.insert(k, v);
                }
                op::GET | op::BINGET | op::LONG_BINGET => {
                    let k: u32 = match opcode {
                        op::GET => {
                            let line = self.line("GET")?;
                            line.parse().map_err(|_| self.malformed("bad GET index"))?
                        }
                        op::BINGET => u32::from(self.u8("BINGET")?),
                        _ => self.u32("LONG_BINGET")?,
                    };
                    let v = f
                        .memo
                        .get(k)
                        .ok_or_else(|| self.malformed(format!("memo key {k} was never stored")))?;
                    f.stack.push(v);
                }
                // Globals: the only way a pickle can name code, so the allow-list is checked here.
                op::GLOBAL => {
                    let module = self.line("GLOBAL module")?;
                    let name = self.line("GLOBAL name")?;
                    let g = self.global(module, name)?;
                    let v = self.push_node(Node::Global(g))?;
                    f.stack.push(v);
                }
                op::STACK_GLOBAL => {
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
                op::REDUCE => {
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
                op::NEWOBJ | op::NEWOBJ_EX => {
                    if opcode == op::NEWOBJ_EX {
                        // Keyword arguments are kept with the positional ones.
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
                op::BUILD => {
                    let state = self.pop(&mut f)?;
                    let id = self.top_id(&f)?;
                    self.build(id, state, depth)?;
                }
                op::INST | op::OBJ => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "INST/OBJ (protocol 0/1 class instantiation); save the model with pickle protocol 2 or newer".into(),
                    });
                }
                op::PERSID | op::BINPERSID => {
                    return Err(Error::Unsupported {
                        offset: self.op_start,
                        what: "persistent ids".into(),
                    });
                }
                op::EXT1 | op::EXT2 | op::EXT4 => {
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
        let added = self.mutate(id, |node| match node {
            Node::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => Err(other.type_name()),
        })?;
        added.map_err(|t| self.malformed(format!("APPEND to a {t}")))
    }

    fn extend_dict(&mut self, id: NodeId, entries: Vec<(Value, Value)>) -> Result<()> {
        let added = self.mutate(id, |node| match node {
            Node::Dict(d) => {
                d.extend(entries);
                Ok(())
            }
            other => Err(other.type_name()),
        })?;
        added.map_err(|t| self.malformed(format!("SETITEM on a {t}")))
    }

    /// numpy's reconstruction, reading the arena for the opcode being executed.
    fn numpy(&self) -> Reconstruct<'_> {
        Reconstruct::new(&self.pk, self.op_start, self.budget)
    }
}

/// The machine's stream, lent to joblib's inline array reader: raw bytes straight after the
/// wrapper's BUILD, or a whole pickle nested in this one, run by the same machine (one arena, so
/// the nested objects are shared) with a stack and memo of its own.
struct JoblibStream<'m, 'a> {
    machine: &'m mut Machine<'a>,
    /// Nesting of the stream the BUILD was in (0 for the file's own pickle).
    depth: usize,
}

impl InlineData for JoblibStream<'_, '_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8]> {
        self.machine.take(n, what)
    }

    fn nested_array(&mut self) -> Result<NdArray> {
        let m = &mut *self.machine;
        if self.depth + 1 > m.limits.max_nested_pickles {
            return Err(Error::Limit(format!(
                "joblib object arrays nested more than {} deep",
                m.limits.max_nested_pickles
            )));
        }
        let saved = m.op_start;
        let v = m.run(self.depth + 1)?;
        m.op_start = saved;
        match m.pk.get(v) {
            Some(Node::Array(a)) => {
                m.charge(a.heap_bytes())?;
                Ok(a.clone())
            }
            _ => Err(m.malformed("joblib object array is not an array")),
        }
    }
}

fn pairs(items: Vec<Value>) -> Option<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    Some(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(bytes: &[u8]) -> Result<Pickle> {
        unpickle(bytes, &AllowList::new(), &Limits::default())
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
}
