//! skops files (`skops.io.dump`), the format scikit-learn recommends for models from untrusted
//! sources: a zip archive holding `schema.json` — a tree of nodes, each naming its
//! `__module__`, `__class__` and `__loader__` (the skops node kind) with its `content` — and an
//! `.npy` member per numpy array.
//!
//! The schema is decoded into the same arena a pickle builds, so the model layer reads both
//! alike, under the same guarantees: every class a node names is resolved through the same
//! [`AllowList`] as a pickle's globals (a class that is not on it is refused, naming it, before
//! anything is built from it), node kinds that would call code (bound methods, partials,
//! `operator` getters) are refused, and every member, string, container and array is charged to
//! the load's [`Budget`] before it is allocated. Nothing is ever imported or called.
//!
//! `__id__` is skops's memo: the first node with an id is built, later nodes with the same id
//! share it (as skops's loader does); a node that refers to one of its own ancestors is refused
//! as a cycle.

mod json;
mod zip;

use std::collections::{HashMap, HashSet};

use self::json::JsonError;
use self::zip::{Archive, Method, ZipError};
use crate::budget::{Budget, GROWTH, Meter};
use crate::error::{Error, Result};
use crate::globals::AllowList;
use crate::numpy::{ArrayData, DType, DTypeKind, NdArray, NpyError, read_npy};
use crate::unpickler::Limits;
use crate::value::{GlobalKind, Node, Pickle, Value};

pub(crate) use self::zip::is_zip;

/// Deepest nesting of schema nodes (a Pipeline of estimators is about 6 levels).
const MAX_DEPTH: usize = 128;

/// The skops protocols this reader knows (skops 0.6 wrote 0; 0.10 and later write 2).
const PROTOCOLS: std::ops::RangeInclusive<i64> = 0..=2;

/// What a skops file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skops {
    /// The skops format's protocol (`schema.json`'s `protocol`).
    pub protocol: i64,
    /// The skops version that wrote the file (`_skops_version`), when recorded.
    pub version: Option<String>,
    /// The compressions of its members other than `stored` (`deflate`, `bzip2`, `lzma`).
    pub compression: Vec<&'static str>,
}

/// A charge or node that a load may not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the budget of `limit` bytes.
    Memory { limit: usize },
    /// More than `max` nodes.
    Nodes { max: usize },
}

/// An arena being built, charging the budget for every node and the arena's own growth.
pub(crate) struct Arena<'b> {
    pub(crate) pk: Pickle,
    budget: &'b Budget,
    slots: Meter,
    max_nodes: usize,
}

impl<'b> Arena<'b> {
    pub(crate) fn new(budget: &'b Budget, max_nodes: usize) -> Arena<'b> {
        Arena {
            pk: Pickle::default(),
            budget,
            slots: Meter::default(),
            max_nodes,
        }
    }

    pub(crate) fn charge(&self, bytes: usize) -> std::result::Result<(), Refusal> {
        self.budget
            .charge(bytes)
            .map_err(|e| Refusal::Memory { limit: e.limit })
    }

    /// Adds a node, charging what it holds (as a growable buffer) and the arena's growth.
    pub(crate) fn push(&mut self, node: Node) -> std::result::Result<Value, Refusal> {
        self.charge(node.heap_bytes().saturating_mul(GROWTH))?;
        self.push_prepaid(node)
    }

    /// Adds a node whose contents were charged as they were gathered.
    pub(crate) fn push_prepaid(&mut self, node: Node) -> std::result::Result<Value, Refusal> {
        if self.pk.len() >= self.max_nodes {
            return Err(Refusal::Nodes {
                max: self.max_nodes,
            });
        }
        let v = self.pk.push(node);
        let slots = self.pk.slots_bytes().saturating_mul(GROWTH);
        self.slots
            .update(slots, self.budget)
            .map_err(|e| Refusal::Memory { limit: e.limit })?;
        Ok(v)
    }
}

/// Loads a skops file's bytes (a zip archive) into an object graph, within `budget`.
pub(crate) fn load(
    bytes: &[u8],
    allow: &AllowList,
    limits: &Limits,
    budget: &Budget,
) -> Result<(Pickle, Skops)> {
    let archive = Archive::open(bytes, budget).map_err(zip_error)?;
    if !archive.contains("schema.json") {
        return Err(Error::Skops {
            at: "the zip archive".into(),
            message: "it has no schema.json member, so it is not a skops file".into(),
        });
    }
    let schema = archive
        .read("schema.json", budget, limits.max_decompressed_bytes)
        .map_err(zip_error)?;
    let mut scratch = Arena::new(budget, limits.max_nodes);
    let root = json::parse(&schema, &mut scratch).map_err(|e| json_error(e, "schema.json"))?;
    let json = &scratch.pk;
    let protocol = match json.dict_get(root, "protocol") {
        Some(Value::Int(p)) if PROTOCOLS.contains(&p) => p,
        Some(Value::Int(p)) => {
            return Err(Error::Skops {
                at: "schema.json".into(),
                message: format!(
                    "skops protocol {p} is not one this reader knows ({} to {})",
                    PROTOCOLS.start(),
                    PROTOCOLS.end()
                ),
            });
        }
        _ => {
            return Err(Error::Skops {
                at: "schema.json".into(),
                message: "no integer `protocol` at its top: not a skops schema".into(),
            });
        }
    };
    let version = json
        .dict_get(root, "_skops_version")
        .and_then(|v| json.as_str(v))
        .map(str::to_string);
    let mut d = Decoder {
        json,
        out: Arena::new(budget, limits.max_nodes),
        archive: &archive,
        allow,
        limits,
        protocol,
        memo: HashMap::new(),
        open: HashSet::new(),
        path: vec!["model".into()],
    };
    let value = d.node(root, 0)?;
    let mut pk = d.out.pk;
    pk.root = Some(value);
    let compression = archive
        .methods()
        .into_iter()
        .filter(|m| *m != Method::Stored)
        .map(Method::name)
        .collect();
    Ok((
        pk,
        Skops {
            protocol,
            version,
            compression,
        },
    ))
}

fn zip_error(e: ZipError) -> Error {
    match e {
        ZipError::Bad {
            member: Some(m),
            message,
        } => Error::Skops {
            at: format!("zip member `{m}`"),
            message,
        },
        ZipError::Bad {
            member: None,
            message,
        } => Error::Skops {
            at: "the zip archive".into(),
            message,
        },
        ZipError::Memory { member, limit } => Error::SkopsMemory {
            limit,
            at: format!("zip member `{member}`"),
        },
    }
}

fn json_error(e: JsonError, what: &str) -> Error {
    match e {
        JsonError::Bad { offset, message } => Error::Skops {
            at: format!("{what} byte {offset}"),
            message,
        },
        JsonError::Refused { offset, refusal } => {
            refusal_error(refusal, format!("{what} byte {offset}"))
        }
    }
}

fn refusal_error(r: Refusal, at: String) -> Error {
    match r {
        Refusal::Memory { limit } => Error::SkopsMemory { limit, at },
        Refusal::Nodes { max } => Error::Limit(format!("more than {max} objects in one file")),
    }
}

/// Decodes schema nodes (already parsed into `json`) into `out`.
struct Decoder<'a, 'b> {
    json: &'a Pickle,
    out: Arena<'b>,
    archive: &'a Archive<'a>,
    allow: &'a AllowList,
    limits: &'a Limits,
    protocol: i64,
    /// Nodes built, by their `__id__`.
    memo: HashMap<i64, Value>,
    /// Ids of the nodes being built (this node's ancestors).
    open: HashSet<i64>,
    /// Where the node being built sits, for messages: `model`, `.steps`, `[1]`, ...
    path: Vec<String>,
}

/// How the node kinds that hold instances build them.
enum Instance {
    /// `ObjectNode`: the class's instance with `content` as its state.
    Object,
    /// `TreeNode`, `LossNode`: created from `__reduce__`'s arguments, then given `content`.
    Reduce,
    /// `ConstructorFromReduceNode`: the class called with `content` as its arguments.
    Constructor,
    /// `RandomStateNode`: a `RandomState` given `content` as its state.
    RandomState,
}

impl<'a> Decoder<'a, '_> {
    /// The path to the node being built; a very deep one is shortened in the middle.
    fn at(&self) -> String {
        const KEEP: usize = 6;
        if self.path.len() <= 2 * KEEP {
            return self.path.concat();
        }
        let n = self.path.len();
        format!(
            "{}…({} levels)…{}",
            self.path[..KEEP].concat(),
            n - 2 * KEEP,
            self.path[n - KEEP..].concat()
        )
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Skops {
            at: self.at(),
            message: message.into(),
        }
    }

    fn push(&mut self, node: Node) -> Result<Value> {
        self.out.push(node).map_err(|r| refusal_error(r, self.at()))
    }

    fn charge(&self, bytes: usize) -> Result<()> {
        self.out
            .charge(bytes)
            .map_err(|r| refusal_error(r, self.at()))
    }

    fn field(&self, state: Value, key: &str) -> Option<Value> {
        self.json.dict_get(state, key)
    }

    fn require(&self, state: Value, key: &str, loader: &str) -> Result<Value> {
        self.field(state, key)
            .ok_or_else(|| self.err(format!("the {loader} has no `{key}`")))
    }

    fn str_field(&self, state: Value, key: &str, loader: &str) -> Result<&'a str> {
        let v = self.require(state, key, loader)?;
        let json: &'a Pickle = self.json;
        json.as_str(v)
            .ok_or_else(|| self.err(format!("the {loader}'s `{key}` is not a string")))
    }

    /// Builds a child node at `segment` of the path.
    fn child(&mut self, state: Value, segment: String, depth: usize) -> Result<Value> {
        self.path.push(segment);
        let v = self.node(state, depth + 1)?;
        self.path.pop();
        Ok(v)
    }

    /// `module.class` of a node, and the allow-listed global it resolves to.
    fn class(&self, state: Value, loader: &str) -> Result<(String, Option<crate::value::Global>)> {
        let module = self.str_field(state, "__module__", loader)?;
        let class = self.str_field(state, "__class__", loader)?;
        Ok((
            format!("{module}.{class}"),
            self.allow.resolve(module, class),
        ))
    }

    fn forbidden(&self, name: String, loader: &str) -> Error {
        Error::SkopsForbidden {
            name,
            loader: loader.to_string(),
            at: self.at(),
        }
    }

    /// Requires the node's type to be one of `allowed` (`module.class`).
    fn builtin(&self, state: Value, loader: &str, allowed: &[&str]) -> Result<()> {
        let (name, _) = self.class(state, loader)?;
        if allowed.contains(&name.as_str()) {
            Ok(())
        } else {
            Err(self.forbidden(name, loader))
        }
    }

    fn node(&mut self, state: Value, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("schema nodes nested more than {MAX_DEPTH} deep")));
        }
        if self.json.as_dict(state).is_none() {
            return Err(self.err(format!(
                "expected a skops node (an object with `__loader__`), found {}",
                self.json.describe(state)
            )));
        }
        let id = match self.field(state, "__id__") {
            None | Some(Value::None) | Some(Value::Int(0)) => None,
            Some(Value::Int(id)) => Some(id),
            Some(other) => {
                return Err(self.err(format!(
                    "`__id__` is {}, not an integer",
                    self.json.describe(other)
                )));
            }
        };
        let loader = self.str_field(state, "__loader__", "node")?.to_string();
        if let Some(id) = id {
            if let Some(&v) = self.memo.get(&id) {
                return Ok(v);
            }
            if self.open.contains(&id) {
                return Err(self.err(format!(
                    "the {loader} refers to its own ancestor (`__id__` {id}): cycles are refused"
                )));
            }
            if loader == "CachedNode" {
                return Err(self.err(format!(
                    "the CachedNode refers to `__id__` {id}, which no earlier node has"
                )));
            }
            self.open.insert(id);
        }
        let v = self.build(state, &loader, depth)?;
        if let Some(id) = id {
            self.open.remove(&id);
            self.memo.insert(id, v);
        }
        Ok(v)
    }

    fn build(&mut self, state: Value, loader: &str, depth: usize) -> Result<Value> {
        match loader {
            "JsonNode" => {
                let content = self.str_field(state, "content", loader)?;
                let at = self.at();
                json::parse(content.as_bytes(), &mut self.out)
                    .map_err(|e| json_error(e, &format!("{at} (JSON content)")))
            }
            "DictNode" => self.dict(state, depth),
            "ListNode" | "TupleNode" | "SetNode" => {
                let allowed: &[&str] = match loader {
                    "ListNode" => &["builtins.list"],
                    "TupleNode" => &["builtins.tuple"],
                    _ => &["builtins.set", "builtins.frozenset"],
                };
                self.builtin(state, loader, allowed)?;
                let items = self.items(state, loader, depth)?;
                self.charge(items.len().saturating_mul(std::mem::size_of::<Value>()))?;
                let node = match loader {
                    "ListNode" => Node::List(items),
                    "TupleNode" => Node::Tuple(items),
                    _ => Node::Set(items),
                };
                self.out
                    .push_prepaid(node)
                    .map_err(|r| refusal_error(r, self.at()))
            }
            "NdArrayNode" => self.ndarray(state, depth),
            "DTypeNode" => {
                self.builtin(state, loader, &["numpy.dtype"])?;
                let content = self.require(state, "content", loader)?;
                let array = self.child(content, ".<dtype>".into(), depth)?;
                match self.out.pk.as_array(array) {
                    Some(a) => {
                        let dtype = a.dtype.clone();
                        self.push(Node::DType(dtype))
                    }
                    None => Err(self.err("the DTypeNode's content is not an array")),
                }
            }
            "ObjectNode" => self.instance(state, loader, Instance::Object, depth),
            "TreeNode" | "LossNode" => self.instance(state, loader, Instance::Reduce, depth),
            "ConstructorFromReduceNode" => {
                self.instance(state, loader, Instance::Constructor, depth)
            }
            "RandomStateNode" => self.instance(state, loader, Instance::RandomState, depth),
            "TypeNode" | "FunctionNode" => {
                let (name, global) = if loader == "FunctionNode" && self.protocol == 0 {
                    // Protocol 0 named the function in its content.
                    let content = self.require(state, "content", loader)?;
                    let module = self.str_field(content, "module_path", loader)?;
                    let function = self.str_field(content, "function", loader)?;
                    (
                        format!("{module}.{function}"),
                        self.allow.resolve(module, function),
                    )
                } else {
                    self.class(state, loader)?
                };
                match global {
                    Some(g) => self.push(Node::Global(g)),
                    None => Err(self.forbidden(name, loader)),
                }
            }
            "BytesNode" | "BytearrayNode" => {
                let file = self.str_field(state, "file", loader)?.to_string();
                let data = self.member(&file)?;
                let data = data.to_vec();
                self.push(Node::Bytes(data))
            }
            "SliceNode" => {
                self.builtin(state, loader, &["builtins.slice"])?;
                let content = self.require(state, "content", loader)?;
                let mut args = Vec::with_capacity(3);
                for key in ["start", "stop", "step"] {
                    match self.field(content, key) {
                        Some(v @ (Value::Int(_) | Value::None)) => args.push(v),
                        _ => {
                            return Err(self.err(format!(
                                "the SliceNode's `{key}` is not an integer or null"
                            )));
                        }
                    }
                }
                let class = self
                    .allow
                    .resolve("builtins", "slice")
                    .expect("slice is a built-in");
                self.push(Node::Object(crate::value::Object {
                    class,
                    args,
                    state: None,
                }))
            }
            "CachedNode" => Err(self.err("a CachedNode without an `__id__`")),
            // Node kinds that call code, or build types that are never on the allow-list.
            "MethodNode"
            | "PartialNode"
            | "OperatorFuncNode"
            | "DefaultDictNode"
            | "MaskedArrayNode"
            | "RandomGeneratorNode"
            | "SparseMatrixNode"
            | "_DictWithDeprecatedKeysNode" => {
                let (mut name, _) = self.class(state, loader)?;
                if loader == "MethodNode"
                    && let Some(f) = self
                        .field(state, "content")
                        .and_then(|c| self.field(c, "func"))
                        .and_then(|f| self.json.as_str(f))
                {
                    name = format!("{name}.{f}");
                }
                Err(self.forbidden(name, loader))
            }
            other => {
                let name = self
                    .class(state, other)
                    .map(|(n, _)| format!(" for `{n}`"))
                    .unwrap_or_default();
                Err(self.err(format!(
                    "unknown skops node kind `{other}`{name} (this reader knows skops protocols {} to {})",
                    PROTOCOLS.start(),
                    PROTOCOLS.end()
                )))
            }
        }
    }

    /// A member's contents, refused when the schema names a member the archive lacks.
    fn member(&self, file: &str) -> Result<std::borrow::Cow<'_, [u8]>> {
        if !self.archive.contains(file) {
            return Err(self.err(format!(
                "refers to zip member `{file}`, which the archive lacks"
            )));
        }
        self.archive
            .read(file, self.out.budget, self.limits.max_decompressed_bytes)
            .map_err(|e| match zip_error(e) {
                Error::Skops { at, message } => Error::Skops {
                    at: format!("{} ({at})", self.at()),
                    message,
                },
                Error::SkopsMemory { limit, at } => Error::SkopsMemory {
                    limit,
                    at: format!("{} ({at})", self.at()),
                },
                other => other,
            })
    }

    /// The nodes of a `content` list.
    fn items(&mut self, state: Value, loader: &str, depth: usize) -> Result<Vec<Value>> {
        let content = self.require(state, "content", loader)?;
        let json = self.json;
        let Some(list) = json.as_seq(content) else {
            return Err(self.err(format!("the {loader}'s `content` is not a list")));
        };
        let mut items = Vec::with_capacity(list.len());
        for (i, &item) in list.iter().enumerate() {
            items.push(self.child(item, format!("[{i}]"), depth)?);
        }
        Ok(items)
    }

    fn dict(&mut self, state: Value, depth: usize) -> Result<Value> {
        let loader = "DictNode";
        self.builtin(state, loader, &["builtins.dict", "collections.OrderedDict"])?;
        let json = self.json;
        let content = self.require(state, "content", loader)?;
        let Some(entries) = json.as_dict(content) else {
            return Err(self.err("the DictNode's `content` is not an object"));
        };
        // skops keeps each key's Python type apart: the JSON keys are strings.
        let key_types = self.require(state, "key_types", loader)?;
        let types = json
            .dict_get(key_types, "content")
            .and_then(|c| json.as_seq(c))
            .ok_or_else(|| self.err("the DictNode's `key_types` is not a ListNode"))?;
        if types.len() != entries.len() {
            return Err(self.err(format!(
                "the DictNode has {} keys and {} key types",
                entries.len(),
                types.len()
            )));
        }
        self.charge(
            entries
                .len()
                .saturating_mul(2 * std::mem::size_of::<Value>()),
        )?;
        let mut out = Vec::with_capacity(entries.len());
        for (&(k, v), &t) in entries.iter().zip(types) {
            let key = json.as_str(k).expect("JSON keys are strings");
            let key_type = match (
                json.dict_get(t, "__loader__").and_then(|l| json.as_str(l)),
                json.dict_get(t, "__module__").and_then(|m| json.as_str(m)),
                json.dict_get(t, "__class__").and_then(|c| json.as_str(c)),
            ) {
                (Some("TypeNode"), Some(m), Some(c)) => format!("{m}.{c}"),
                _ => return Err(self.err(format!("the key type of {key:?} is not a TypeNode"))),
            };
            let key_value = match key_type.as_str() {
                "builtins.str" => self.push(Node::Str(key.to_string()))?,
                "builtins.int" => Value::Int(
                    key.parse()
                        .map_err(|_| self.err(format!("the key {key:?} is not an integer")))?,
                ),
                "builtins.float" => Value::Float(
                    key.parse()
                        .map_err(|_| self.err(format!("the key {key:?} is not a float")))?,
                ),
                other => {
                    return Err(self.err(format!(
                        "the key {key:?} has type `{other}` (str, int and float keys are read)"
                    )));
                }
            };
            let segment = if key.chars().all(|c| c.is_alphanumeric() || c == '_') {
                format!(".{key}")
            } else {
                format!("[{key:?}]")
            };
            let value = self.child(v, segment, depth)?;
            out.push((key_value, value));
        }
        self.out
            .push_prepaid(Node::Dict(out))
            .map_err(|r| refusal_error(r, self.at()))
    }

    fn instance(
        &mut self,
        state: Value,
        loader: &str,
        how: Instance,
        depth: usize,
    ) -> Result<Value> {
        let (name, global) = self.class(state, loader)?;
        let class = match global {
            Some(g) if g.kind == GlobalKind::Class => g,
            _ => return Err(self.forbidden(name, loader)),
        };
        // A TreeNode always builds scikit-learn's Tree, whatever else it names.
        if loader == "TreeNode" && class.qualified() != "sklearn.tree._tree.Tree" {
            return Err(self.forbidden(name, loader));
        }
        if loader == "RandomStateNode" && class.qualified() != "numpy.random.mtrand.RandomState" {
            return Err(self.forbidden(name, loader));
        }
        let content = self.field(state, "content");
        let (args, state_value) = match how {
            Instance::Object | Instance::RandomState => {
                let s = match content {
                    Some(c) => Some(self.child(c, String::new(), depth)?),
                    None => None,
                };
                (Vec::new(), s)
            }
            Instance::Reduce => {
                // skops reads the state before the arguments.
                let c = self.require(state, "content", loader)?;
                let s = self.child(c, String::new(), depth)?;
                let reduce = self.require(state, "__reduce__", loader)?;
                let a = self.require(reduce, "args", loader)?;
                let a = self.child(a, ".__reduce__".into(), depth)?;
                let args = self.args(a)?;
                // An empty state is not applied.
                let empty = match self.out.pk.get(s) {
                    Some(Node::Dict(d)) => d.is_empty(),
                    Some(Node::Tuple(t)) => t.is_empty(),
                    _ => s == Value::None,
                };
                (args, if empty { None } else { Some(s) })
            }
            Instance::Constructor => {
                let c = self.require(state, "content", loader)?;
                let a = self.child(c, String::new(), depth)?;
                (self.args(a)?, None)
            }
        };
        self.charge(args.len().saturating_mul(std::mem::size_of::<Value>()))?;
        self.push(Node::Object(crate::value::Object {
            class,
            args,
            state: state_value,
        }))
    }

    fn args(&self, a: Value) -> Result<Vec<Value>> {
        match self.out.pk.get(a) {
            Some(Node::Tuple(items) | Node::List(items)) => Ok(items.clone()),
            _ => Err(self.err(format!(
                "the arguments are {}, not a tuple",
                self.out.pk.describe(a)
            ))),
        }
    }

    fn ndarray(&mut self, state: Value, depth: usize) -> Result<Value> {
        let loader = "NdArrayNode";
        let (name, _) = self.class(state, loader)?;
        let kind = self.str_field(state, "type", loader)?.to_string();
        match kind.as_str() {
            "numpy" => {
                let scalar = scalar_kind(&name);
                if name != "numpy.ndarray" && scalar.is_none() {
                    return Err(self.forbidden(name, loader));
                }
                let file = self.str_field(state, "file", loader)?.to_string();
                let data = self.member(&file)?;
                let array = read_npy(&data, self.out.budget).map_err(|e| match e {
                    NpyError::Bad(m) => self.err(format!("zip member `{file}`: {m}")),
                    NpyError::Memory { limit } => Error::SkopsMemory {
                        limit,
                        at: format!("{} (zip member `{file}`)", self.at()),
                    },
                })?;
                drop(data);
                match scalar {
                    None => {
                        self.charge(
                            array.shape.capacity() * std::mem::size_of::<usize>()
                                + array.dtype.heap_bytes(),
                        )?;
                        self.out
                            .push_prepaid(Node::Array(array))
                            .map_err(|r| refusal_error(r, self.at()))
                    }
                    Some(kind) => self.scalar(&name, kind, &array),
                }
            }
            "json" => {
                if name != "numpy.ndarray" {
                    return Err(self.forbidden(name, loader));
                }
                let items = self.items(state, loader, depth)?;
                let shape_state = self.require(state, "shape", loader)?;
                let shape = self.child(shape_state, ".shape".into(), depth)?;
                let shape = self.shape(shape)?;
                let items = self.flatten(items, &shape)?;
                let dtype = DType::from_code("O").expect("object dtype");
                self.push(Node::Array(NdArray {
                    dtype,
                    shape,
                    data: ArrayData::Objects(items),
                }))
            }
            other => Err(self.err(format!("an NdArrayNode of unknown type {other:?}"))),
        }
    }

    /// A numpy scalar (skops saves one as a 0-d array): a plain value, as a pickle gives it.
    fn scalar(&mut self, name: &str, kind: DTypeKind, array: &NdArray) -> Result<Value> {
        if array.len() != 1 {
            return Err(self.err(format!(
                "a {name} scalar holds an array of shape {:?}",
                array.shape
            )));
        }
        let bad = |m: String| self.err(format!("a {name} scalar: {m}"));
        Ok(match kind {
            DTypeKind::Float => Value::Float(array.to_f64().map_err(bad)?[0]),
            DTypeKind::Bool => Value::Bool(array.to_i64().map_err(bad)?[0] != 0),
            _ => match array.to_i64() {
                Ok(v) => Value::Int(v[0]),
                Err(_) => Value::Float(array.to_f64().map_err(bad)?[0]),
            },
        })
    }

    fn shape(&self, v: Value) -> Result<Vec<usize>> {
        let dims = self
            .out
            .pk
            .as_seq(v)
            .ok_or_else(|| self.err("the object array's shape is not a tuple"))?;
        dims.iter()
            .map(|d| match d {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => Err(self.err(format!(
                    "bad array dimension {}",
                    self.out.pk.describe(*other)
                ))),
            })
            .collect()
    }

    /// An object array's elements in C order: skops writes `tolist()`, nested lists for more
    /// than one dimension.
    fn flatten(&self, items: Vec<Value>, shape: &[usize]) -> Result<Vec<Value>> {
        let Some((&first, rest)) = shape.split_first() else {
            return Err(self.err("a 0-d object array"));
        };
        if items.len() != first {
            return Err(self.err(format!(
                "shape {shape:?} needs {first} rows, the array has {}",
                items.len()
            )));
        }
        let mut level = items;
        for &n in rest {
            self.charge(
                level
                    .len()
                    .saturating_mul(n)
                    .saturating_mul(std::mem::size_of::<Value>()),
            )?;
            let mut next = Vec::new();
            for v in level {
                match self.out.pk.as_seq(v) {
                    Some(row) if row.len() == n => next.extend_from_slice(row),
                    _ => {
                        return Err(self.err(format!(
                            "shape {shape:?}: a row is {}, not a list of {n}",
                            self.out.pk.describe(v)
                        )));
                    }
                }
            }
            level = next;
        }
        Ok(level)
    }
}

/// The numpy scalar types skops saves as 0-d arrays, by the kind of value they become.
fn scalar_kind(name: &str) -> Option<DTypeKind> {
    let t = name.strip_prefix("numpy.")?;
    Some(match t {
        "float16" | "float32" | "float64" | "half" | "single" | "double" => DTypeKind::Float,
        "bool" | "bool_" => DTypeKind::Bool,
        "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64"
        | "intc" | "uintc" | "intp" | "uintp" | "longlong" | "ulonglong" => DTypeKind::Int,
        _ => return None,
    })
}
