//! The object graph a pickle rebuilds: an arena of nodes addressed by index, so that shared
//! references stay shared, cycles are harmless and nothing recurses when the graph is dropped.

use crate::numpy::{DType, NdArray};

/// Index of a [`Node`] in a [`Pickle`]'s arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub(crate) u32);

/// A Python value: scalars inline, everything else a reference into the arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float (also numpy float scalars).
    Float(f64),
    /// Anything else.
    Ref(NodeId),
}

/// A reference to an allow-listed global (class or function), canonicalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// Canonical module, e.g. `sklearn.svm._classes` even if the file said `sklearn.svm.classes`.
    pub module: String,
    /// Name inside the module.
    pub name: String,
    /// How REDUCE / NEWOBJ treat it.
    pub(crate) kind: GlobalKind,
}

impl Global {
    /// `module.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// The handful of callables the reader knows how to "call" without executing anything, and the
/// classes it rebuilds as inert [`Object`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobalKind {
    /// An allow-listed class: instances become [`Object`]s holding their arguments and state.
    Class,
    /// `numpy.core.multiarray._reconstruct`: an empty array that BUILD fills.
    NumpyReconstruct,
    /// `numpy.core.numeric._frombuffer`: an array from a buffer (protocol 5).
    NumpyFromBuffer,
    /// `numpy.core.multiarray.scalar`: a numpy scalar from its dtype and bytes.
    NumpyScalar,
    /// `numpy.dtype`.
    NumpyDType,
    /// `numpy.ndarray`: only ever an argument of `_reconstruct`.
    NumpyNdarray,
    /// joblib's `NumpyArrayWrapper`: after BUILD, the array's bytes follow inline in the stream.
    JoblibArrayWrapper,
    /// `_codecs.encode(str, 'latin1')`: how protocol 2 writes `bytes`.
    CodecsEncode,
    /// `copyreg._reconstructor(cls, base, state)`.
    CopyregReconstructor,
    /// `copyreg.__newobj__(cls, *args)` and look-alikes (`newObj(cls)` of scikit-learn's trees).
    NewObj,
    /// `collections.OrderedDict` and `builtins.dict`.
    Dict,
    /// `builtins.set` / `builtins.frozenset`.
    Set,
    /// `builtins.list`.
    List,
    /// `builtins.bytearray` / `builtins.bytes`.
    ByteArray,
    /// `builtins.object`: only ever an argument of `copyreg._reconstructor`.
    Object,
    /// `builtins.slice` / `builtins.complex` and similar pure constructors kept as inert objects.
    Inert,
}

/// An instance of an allow-listed class, rebuilt without running any of its code.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The class.
    pub class: Global,
    /// Arguments it was created with (REDUCE / NEWOBJ).
    pub args: Vec<Value>,
    /// Its state (usually the instance `__dict__`), set by BUILD.
    pub state: Option<Value>,
}

/// A node of the arena.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `str`.
    Str(String),
    /// `bytes` or `bytearray`.
    Bytes(Vec<u8>),
    /// An integer beyond 64 bits, little-endian two's complement.
    BigInt(Vec<u8>),
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `list`.
    List(Vec<Value>),
    /// `dict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// `set` / `frozenset`.
    Set(Vec<Value>),
    /// A global reference.
    Global(Global),
    /// An instance of an allow-listed class.
    Object(Object),
    /// A numpy array.
    Array(NdArray),
    /// A numpy dtype.
    DType(DType),
}

impl Node {
    /// Bytes the node holds on the heap (beyond its own slot in the arena): what a load's
    /// [`Budget`](crate::Budget) is charged for it.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let values = |n: usize| n.saturating_mul(size_of::<Value>());
        match self {
            Node::Str(s) => s.capacity(),
            Node::Bytes(b) | Node::BigInt(b) => b.capacity(),
            Node::Tuple(v) | Node::List(v) | Node::Set(v) => values(v.capacity()),
            Node::Dict(d) => values(d.capacity()).saturating_mul(2),
            Node::Global(g) => g.module.capacity() + g.name.capacity(),
            Node::Object(o) => {
                o.class.module.capacity() + o.class.name.capacity() + values(o.args.capacity())
            }
            Node::Array(a) => a.heap_bytes(),
            Node::DType(d) => d.heap_bytes(),
        }
    }

    /// A short Python-ish name of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::BigInt(_) => "int",
            Node::Tuple(_) => "tuple",
            Node::List(_) => "list",
            Node::Dict(_) => "dict",
            Node::Set(_) => "set",
            Node::Global(_) => "global",
            Node::Object(_) => "object",
            Node::Array(_) => "numpy.ndarray",
            Node::DType(_) => "numpy.dtype",
        }
    }
}

/// A loaded pickle: the arena and the value the stream returned.
#[derive(Debug, Clone, Default)]
pub struct Pickle {
    pub(crate) nodes: Vec<Node>,
    pub(crate) root: Option<Value>,
    /// The protocol the stream was written with: the highest its PROTO opcodes declared, or
    /// for a stream without one (protocols 0 and 1 have none), 1 if it uses protocol 1's binary
    /// opcodes and 0 if it is text only.
    pub protocol: u8,
}

impl Pickle {
    /// The value the stream returned with STOP.
    pub fn root(&self) -> Value {
        self.root.unwrap_or(Value::None)
    }

    /// The node behind a reference.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// The node behind a value, if it is a reference.
    pub fn get(&self, value: Value) -> Option<&Node> {
        match value {
            Value::Ref(id) => Some(self.node(id)),
            _ => None,
        }
    }

    /// Number of nodes in the arena.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub(crate) fn push(&mut self, node: Node) -> Value {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        Value::Ref(id)
    }

    /// Bytes the arena's own slots take (its capacity, not its length).
    pub(crate) fn slots_bytes(&self) -> usize {
        self.nodes
            .capacity()
            .saturating_mul(std::mem::size_of::<Node>())
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0 as usize]
    }

    /// The string behind a value.
    pub fn as_str(&self, value: Value) -> Option<&str> {
        match self.get(value)? {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes behind a value (`bytes` or `bytearray`).
    pub fn as_bytes(&self, value: Value) -> Option<&[u8]> {
        match self.get(value)? {
            Node::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_seq(&self, value: Value) -> Option<&[Value]> {
        match self.get(value)? {
            Node::Tuple(items) | Node::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a dict.
    pub fn as_dict(&self, value: Value) -> Option<&[(Value, Value)]> {
        match self.get(value)? {
            Node::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The object behind a value.
    pub fn as_object(&self, value: Value) -> Option<&Object> {
        match self.get(value)? {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The numpy array behind a value.
    pub fn as_array(&self, value: Value) -> Option<&NdArray> {
        match self.get(value)? {
            Node::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Looks a string key up in a dict value.
    pub fn dict_get(&self, dict: Value, key: &str) -> Option<Value> {
        self.as_dict(dict)?
            .iter()
            .find(|(k, _)| self.as_str(*k) == Some(key))
            .map(|(_, v)| *v)
    }

    /// An object's attribute: looks `name` up in its state dict (or in the dict half of a
    /// `(dict, slots)` state tuple).
    pub fn attr(&self, object: Value, name: &str) -> Option<Value> {
        let state = self.as_object(object)?.state?;
        if let Some(v) = self.dict_get(state, name) {
            return Some(v);
        }
        let parts = self.as_seq(state)?;
        parts.iter().find_map(|p| self.dict_get(*p, name))
    }

    /// The state dict's entries of an object (empty when it has none).
    pub fn attrs(&self, object: Value) -> Vec<(String, Value)> {
        let Some(state) = self.as_object(object).and_then(|o| o.state) else {
            return Vec::new();
        };
        let dicts: Vec<Value> = match self.get(state) {
            Some(Node::Dict(_)) => vec![state],
            Some(Node::Tuple(parts)) => parts.clone(),
            _ => Vec::new(),
        };
        dicts
            .into_iter()
            .filter_map(|d| self.as_dict(d))
            .flatten()
            .filter_map(|(k, v)| Some((self.as_str(*k)?.to_string(), *v)))
            .collect()
    }

    /// A short description of a value for error messages: its type, and for objects the class.
    pub fn describe(&self, value: Value) -> String {
        match value {
            Value::None => "None".into(),
            Value::Bool(b) => format!("bool {b}"),
            Value::Int(i) => format!("int {i}"),
            Value::Float(f) => format!("float {f}"),
            Value::Ref(id) => match self.node(id) {
                Node::Object(o) => format!("{} object", o.class.qualified()),
                Node::Global(g) => format!("global {}", g.qualified()),
                Node::Str(s) if s.len() <= 40 => format!("str {s:?}"),
                Node::Array(a) => format!("array of {} with shape {:?}", a.dtype, a.shape),
                other => other.type_name().to_string(),
            },
        }
    }
}
