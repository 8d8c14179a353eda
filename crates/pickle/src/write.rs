//! Writing pickles: a tree of Python values, turned into a protocol 4 stream that Python's own
//! `pickle.loads` (and `joblib.load`) reads.
//!
//! Only what is needed to write fitted scikit-learn estimators as Python itself would pickle
//! them: plain values and containers, module-level names, `callable(*args)`,
//! `cls.__new__(cls, *args)`, `obj.__setstate__(state)`, and numpy arrays, dtypes and scalars in
//! numpy's own reduce form. The stream carries no memo: every value is written where it appears.
//!
//! ```
//! use fleetscore_pickle::write::{dumps, Py};
//! let bytes = dumps(&Py::Dict(vec![(Py::str("a"), Py::List(vec![Py::Int(1), Py::Float(2.5)]))]));
//! let file = fleetscore_pickle::load(&bytes, &Default::default(), &Default::default()).unwrap();
//! let list = file.pickle.dict_get(file.pickle.root(), "a").unwrap();
//! assert_eq!(file.pickle.as_seq(list).unwrap().len(), 2);
//! ```

/// The module numpy's array and scalar constructors are pickled under. numpy 1.x defines it and
/// numpy 2.x keeps it, without a warning, for the pickles older versions wrote.
const NUMPY_MULTIARRAY: &str = "numpy.core.multiarray";

/// A Python value to be pickled.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    /// `None`
    None,
    /// `True` or `False`
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A `tuple`.
    Tuple(Vec<Py>),
    /// A `list`.
    List(Vec<Py>),
    /// A `dict`, its items in order.
    Dict(Vec<(Py, Py)>),
    /// A module-level name, `module.name`: a class or a function.
    Global {
        /// The module, e.g. `sklearn.svm._classes`.
        module: String,
        /// The name in it, e.g. `OneClassSVM`.
        name: String,
    },
    /// `callable(*args)` (pickle's REDUCE).
    Call(Box<Py>, Vec<Py>),
    /// `cls.__new__(cls, *args)` (pickle's NEWOBJ), how Python pickles plain instances.
    New(Box<Py>, Vec<Py>),
    /// `obj.__setstate__(state)`, or `obj.__dict__.update(state)` (pickle's BUILD).
    Build(Box<Py>, Box<Py>),
}

impl Py {
    /// A `str`.
    pub fn str(s: impl Into<String>) -> Py {
        Py::Str(s.into())
    }

    /// The module-level name `module.name`.
    pub fn global(module: &str, name: &str) -> Py {
        Py::Global {
            module: module.to_string(),
            name: name.to_string(),
        }
    }

    /// An instance of `module.class` with `state` as its `__dict__`, as Python pickles an object
    /// of a class without its own `__reduce__` (scikit-learn's estimators: pass their
    /// `__getstate__`, `_sklearn_version` included).
    pub fn object(module: &str, class: &str, state: Vec<(&str, Py)>) -> Py {
        let dict = state.into_iter().map(|(k, v)| (Py::str(k), v)).collect();
        Py::Build(
            Box::new(Py::New(Box::new(Py::global(module, class)), Vec::new())),
            Box::new(Py::Dict(dict)),
        )
    }

    /// The numpy dtype of a plain type code such as `f8`, `f4`, `i8`, `i4`, `u1` or `?`, in
    /// little-endian byte order (numpy's `|` for one-byte types).
    pub fn dtype(code: &str) -> Py {
        let one_byte = matches!(code, "?" | "b1" | "u1" | "i1");
        let order = if one_byte { "|" } else { "<" };
        dtype_with_state(
            code,
            vec![
                Py::Int(3),
                Py::str(order),
                Py::None,
                Py::None,
                Py::None,
                Py::Int(-1),
                Py::Int(-1),
                Py::Int(0),
            ],
        )
    }

    /// A structured numpy dtype: `fields` as (name, type code, byte offset), `itemsize` bytes per
    /// element; `aligned` as numpy's `align=True` marks it (C-struct layout, as scikit-learn's
    /// tree nodes are).
    pub fn struct_dtype(fields: &[(&str, &str, usize)], itemsize: usize, aligned: bool) -> Py {
        let names = fields.iter().map(|(n, _, _)| Py::str(*n)).collect();
        let items = fields
            .iter()
            .map(|(n, code, off)| {
                (
                    Py::str(*n),
                    Py::Tuple(vec![Py::dtype(code), Py::Int(*off as i64)]),
                )
            })
            .collect();
        let alignment = if aligned {
            fields
                .iter()
                .map(|(_, code, _)| code_size(code))
                .max()
                .unwrap_or(1)
        } else {
            1
        };
        // numpy's flags: NPY_USE_GETITEM|NPY_USE_SETITEM (0x10) as every structured dtype has,
        // and NPY_ALIGNED_STRUCT (0x80) when aligned. numpy 1.x keeps them in a signed char and
        // refuses more than 127, so 0x90 is written as numpy 1.x does, -112. numpy 2.x reads that
        // as unaligned, but the dtype still equals the aligned one (same fields, offsets, size).
        let flags = if aligned { (0x10u8 | 0x80) as i8 } else { 0x10 };
        dtype_with_state(
            &format!("V{itemsize}"),
            vec![
                Py::Int(3),
                Py::str("|"),
                Py::None,
                Py::Tuple(names),
                Py::Dict(items),
                Py::Int(itemsize as i64),
                Py::Int(alignment as i64),
                Py::Int(i64::from(flags)),
            ],
        )
    }

    /// A C-ordered numpy array of `dtype` (a [`Py::dtype`] or [`Py::struct_dtype`]) and `shape`,
    /// its elements' bytes in `data` (little-endian).
    pub fn ndarray(dtype: Py, shape: &[usize], data: Vec<u8>) -> Py {
        let empty = Py::Call(
            Box::new(Py::global(NUMPY_MULTIARRAY, "_reconstruct")),
            vec![
                Py::global("numpy", "ndarray"),
                Py::Tuple(vec![Py::Int(0)]),
                Py::Bytes(b"b".to_vec()),
            ],
        );
        let shape = Py::Tuple(shape.iter().map(|&d| Py::Int(d as i64)).collect());
        Py::Build(
            Box::new(empty),
            Box::new(Py::Tuple(vec![
                Py::Int(1),
                shape,
                dtype,
                Py::Bool(false),
                Py::Bytes(data),
            ])),
        )
    }

    /// A float64 array.
    pub fn array_f64(shape: &[usize], values: &[f64]) -> Py {
        Py::ndarray(
            Py::dtype("f8"),
            shape,
            le_bytes(values, |v| v.to_le_bytes()),
        )
    }

    /// A float32 array.
    pub fn array_f32(shape: &[usize], values: &[f32]) -> Py {
        Py::ndarray(
            Py::dtype("f4"),
            shape,
            le_bytes(values, |v| v.to_le_bytes()),
        )
    }

    /// An int64 array (numpy's `intp` on 64-bit platforms).
    pub fn array_i64(shape: &[usize], values: &[i64]) -> Py {
        Py::ndarray(
            Py::dtype("i8"),
            shape,
            le_bytes(values, |v| v.to_le_bytes()),
        )
    }

    /// An int32 array.
    pub fn array_i32(shape: &[usize], values: &[i32]) -> Py {
        Py::ndarray(
            Py::dtype("i4"),
            shape,
            le_bytes(values, |v| v.to_le_bytes()),
        )
    }

    /// A numpy scalar of `dtype` from its bytes (`numpy.float64(1.5)` is
    /// `scalar(dtype("f8"), b"...")`).
    pub fn numpy_scalar(dtype: Py, data: Vec<u8>) -> Py {
        Py::Call(
            Box::new(Py::global(NUMPY_MULTIARRAY, "scalar")),
            vec![dtype, Py::Bytes(data)],
        )
    }

    /// `numpy.float64(v)`.
    pub fn float64(v: f64) -> Py {
        Py::numpy_scalar(Py::dtype("f8"), v.to_le_bytes().to_vec())
    }

    /// `numpy.int64(v)`.
    pub fn int64(v: i64) -> Py {
        Py::numpy_scalar(Py::dtype("i8"), v.to_le_bytes().to_vec())
    }
}

fn dtype_with_state(descr: &str, state: Vec<Py>) -> Py {
    Py::Build(
        Box::new(Py::Call(
            Box::new(Py::global("numpy", "dtype")),
            vec![Py::str(descr), Py::Bool(false), Py::Bool(true)],
        )),
        Box::new(Py::Tuple(state)),
    )
}

/// The size in bytes of a plain type code's element (`f8` → 8, `?` → 1).
fn code_size(code: &str) -> usize {
    code.trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == '?')
        .parse()
        .unwrap_or(1)
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&f(v));
    }
    out
}

/// The pickle (protocol 4) of `value`.
pub fn dumps(value: &Py) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    write(value, &mut out);
    out.push(b'.');
    out
}

fn write_len_prefixed(out: &mut Vec<u8>, bytes: &[u8], short: u8, long: u8, huge: u8) {
    if let Ok(n) = u8::try_from(bytes.len()) {
        out.push(short);
        out.push(n);
    } else if let Ok(n) = u32::try_from(bytes.len()) {
        out.push(long);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(huge);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

fn write_tuple(items: &[Py], out: &mut Vec<u8>) {
    match items.len() {
        0 => out.push(b')'),
        1..=3 => {
            for item in items {
                write(item, out);
            }
            out.push([0x85, 0x86, 0x87][items.len() - 1]);
        }
        _ => {
            out.push(b'(');
            for item in items {
                write(item, out);
            }
            out.push(b't');
        }
    }
}

fn write(value: &Py, out: &mut Vec<u8>) {
    match value {
        Py::None => out.push(b'N'),
        Py::Bool(true) => out.push(0x88),
        Py::Bool(false) => out.push(0x89),
        Py::Int(v) => {
            if let Ok(b) = u8::try_from(*v) {
                out.extend_from_slice(&[b'K', b]);
            } else if let Ok(w) = u16::try_from(*v) {
                out.push(b'M');
                out.extend_from_slice(&w.to_le_bytes());
            } else if let Ok(i) = i32::try_from(*v) {
                out.push(b'J');
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                // LONG1: little-endian two's complement, 8 bytes always suffice for an i64.
                out.extend_from_slice(&[0x8a, 8]);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Py::Float(v) => {
            out.push(b'G');
            out.extend_from_slice(&v.to_be_bytes());
        }
        Py::Str(s) => write_len_prefixed(out, s.as_bytes(), 0x8c, b'X', 0x8d),
        Py::Bytes(b) => write_len_prefixed(out, b, b'C', b'B', 0x8e),
        Py::Tuple(items) => write_tuple(items, out),
        Py::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for item in items {
                    write(item, out);
                }
                out.push(b'e');
            }
        }
        Py::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    write(k, out);
                    write(v, out);
                }
                out.push(b'u');
            }
        }
        Py::Global { module, name } => {
            write(&Py::Str(module.clone()), out);
            write(&Py::Str(name.clone()), out);
            out.push(0x93);
        }
        Py::Call(callable, args) => {
            write(callable, out);
            write_tuple(args, out);
            out.push(b'R');
        }
        Py::New(cls, args) => {
            write(cls, out);
            write_tuple(args, out);
            out.push(0x81);
        }
        Py::Build(obj, state) => {
            write(obj, out);
            write(state, out);
            out.push(b'b');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AllowList, Limits, Value, load};

    fn round_trip(value: &Py) -> crate::Loaded {
        load(&dumps(value), &AllowList::new(), &Limits::default()).unwrap()
    }

    #[test]
    fn scalars_and_containers_read_back() {
        let big = i64::MAX - 3;
        let value = Py::Dict(vec![
            (
                Py::str("ints"),
                Py::List(vec![
                    Py::Int(0),
                    Py::Int(255),
                    Py::Int(256),
                    Py::Int(65_536),
                    Py::Int(-1),
                    Py::Int(big),
                    Py::Int(i64::MIN),
                ]),
            ),
            (Py::str("float"), Py::Float(-2.5e-300)),
            (Py::str("long text"), Py::str("x".repeat(300))),
            (
                Py::str("tuple"),
                Py::Tuple(vec![
                    Py::None,
                    Py::Bool(true),
                    Py::Bool(false),
                    Py::Bytes(vec![1, 2]),
                ]),
            ),
        ]);
        let file = round_trip(&value);
        let p = &file.pickle;
        let ints = p.as_seq(p.dict_get(p.root(), "ints").unwrap()).unwrap();
        assert_eq!(
            ints.to_vec(),
            [0, 255, 256, 65_536, -1, big, i64::MIN]
                .map(Value::Int)
                .to_vec()
        );
        assert_eq!(
            p.dict_get(p.root(), "float").unwrap(),
            Value::Float(-2.5e-300)
        );
        assert_eq!(
            p.as_seq(p.dict_get(p.root(), "tuple").unwrap())
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn arrays_read_back_with_their_dtype_and_shape() {
        let value = Py::Tuple(vec![
            Py::array_f64(&[2, 2], &[1.0, -2.0, 3.5, f64::MIN_POSITIVE]),
            Py::array_i64(&[3], &[-1, 0, i64::MAX]),
            Py::float64(0.25),
        ]);
        let file = round_trip(&value);
        let p = &file.pickle;
        let items = p.as_seq(p.root()).unwrap();
        let a = p.as_array(items[0]).unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(a.to_f64().unwrap(), vec![1.0, -2.0, 3.5, f64::MIN_POSITIVE]);
        assert_eq!(
            p.as_array(items[1]).unwrap().to_i64().unwrap(),
            vec![-1, 0, i64::MAX]
        );
        assert!(matches!(items[2], Value::Float(v) if v == 0.25));
    }

    #[test]
    fn structured_arrays_read_back_by_field() {
        let dtype = Py::struct_dtype(&[("a", "i8", 0), ("b", "f8", 8)], 16, true);
        let mut data = Vec::new();
        for (a, b) in [(7i64, 0.5f64), (-3, 1e9)] {
            data.extend_from_slice(&a.to_le_bytes());
            data.extend_from_slice(&b.to_le_bytes());
        }
        let file = round_trip(&Py::ndarray(dtype, &[2], data));
        let a = file.pickle.as_array(file.pickle.root()).unwrap();
        assert_eq!(a.field_i64("a").unwrap(), vec![7, -3]);
        assert_eq!(a.field_f64("b").unwrap(), vec![0.5, 1e9]);
    }
}
