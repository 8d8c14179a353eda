//! REDUCE, NEWOBJ and BUILD on allow-listed globals: the fixed set of constructors the VM
//! interprets in place of calling anything.
//!
//! Each [`GlobalKind`] is handled here by building what Python would have returned, from data
//! alone; numpy's constructors and `__setstate__` are delegated to [`crate::numpy`]. A global
//! that reaches this module has already passed the allow-list at GLOBAL / STACK_GLOBAL.

use super::{JoblibStream, Machine};
use crate::error::Result;
use crate::numpy::Scalar;
use crate::value::{Global, GlobalKind, Node, NodeId, Object, Value};

impl<'a> Machine<'a> {
    fn global_of(&self, v: Value) -> Result<Global> {
        match self.pk.get(v) {
            Some(Node::Global(g)) => Ok(g.clone()),
            _ => Err(self.malformed(format!(
                "expected a class or function, found {}",
                self.pk.describe(v)
            ))),
        }
    }

    /// Interprets NEWOBJ (and `copyreg.__newobj__`-style constructors): an empty instance of an
    /// allow-listed class, or an empty built-in container.
    pub(super) fn new_object(&mut self, cls: Value, args: Vec<Value>) -> Result<Value> {
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
    pub(super) fn call(&mut self, callable: Value, args: Vec<Value>) -> Result<Value> {
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
                let dtype = self.numpy().dtype_from_code(arg(0))?;
                self.push_node(Node::DType(dtype))
            }
            GlobalKind::NumpyScalar => match self.numpy().scalar(arg(0), arg(1))? {
                Scalar::Value(v) => Ok(v),
                Scalar::Array(array) => self.push_node(Node::Array(array)),
            },
            GlobalKind::NumpyFromBuffer => {
                let array = self.numpy().frombuffer(arg(0), arg(1), arg(2), arg(3))?;
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

    /// BUILD: sets an object's state; for numpy arrays and dtypes, completes them. `depth` is
    /// the nesting of the stream being run, for a joblib object array's nested pickle.
    pub(super) fn build(&mut self, id: NodeId, state: Value, depth: usize) -> Result<()> {
        let class_kind = match self.pk.node(id) {
            Node::Object(o) => Some(o.class.kind),
            _ => None,
        };
        match (self.pk.node(id), class_kind) {
            (Node::Object(_), Some(GlobalKind::NumpyNdarray)) => {
                let array = self.numpy().array_state(state)?;
                self.mutate(id, |node| *node = Node::Array(array))
            }
            (Node::Object(_), Some(GlobalKind::JoblibArrayWrapper)) => {
                // The array's data follows this opcode in the stream, outside any opcode.
                let inline = self.numpy().joblib_array(state)?;
                let array = inline.read(&mut JoblibStream {
                    machine: self,
                    depth,
                })?;
                self.mutate(id, |node| *node = Node::Array(array))
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
            (Node::DType(base), _) => {
                let dtype = self.numpy().dtype_state(base, state)?;
                self.mutate(id, |node| *node = Node::DType(dtype))
            }
            (other, _) => {
                let t = other.type_name();
                Err(self.malformed(format!("BUILD on a {t}")))
            }
        }
    }
}
