//! numpy's side of unpickling: dtypes, arrays and scalars rebuilt from the arguments and state
//! a pickle gives numpy's constructors and `__setstate__`, as values already in the arena.
//!
//! The VM decides *when* (which opcode, which allow-listed global); this module knows *what* the
//! values mean in numpy's layout. It only reads the arena and never the stream, so it cannot
//! consume bytes or recurse into the VM.

use super::{DType, DTypeKind, Field, MAX_DTYPE_NESTING, NdArray};
use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::value::{Node, Pickle, Value};

/// Reads numpy objects out of a pickle's arena, for the opcode at `offset`.
pub(crate) struct Reconstruct<'p> {
    pub(super) pk: &'p Pickle,
    /// The load's budget: copies made while building (a record dtype's fields) are charged.
    pub(super) budget: &'p Budget,
    /// Offset of the opcode being interpreted: every error names it, as the VM's own errors do.
    pub(super) offset: usize,
}

/// A numpy scalar: a plain value where the pickle format has one, else a one-element array
/// (complex numbers, strings, records) that the VM stores in the arena.
pub(crate) enum Scalar {
    /// A float, int or bool (or, for dtype `O`, the object itself).
    Value(Value),
    /// Anything without a plain value.
    Array(NdArray),
}

impl<'p> Reconstruct<'p> {
    pub(crate) fn new(pk: &'p Pickle, offset: usize, budget: &'p Budget) -> Reconstruct<'p> {
        Reconstruct { pk, budget, offset }
    }

    fn malformed(&self, message: impl Into<String>) -> Error {
        Error::Malformed {
            offset: self.offset,
            message: message.into(),
        }
    }

    fn bad_array(&self, message: String) -> Error {
        Error::BadArray {
            offset: self.offset,
            message,
        }
    }

    /// `numpy.dtype(code, ...)`: a dtype from its type string; BUILD completes it.
    pub(crate) fn dtype_from_code(&self, code: Value) -> Result<DType> {
        let code = self
            .pk
            .as_str(code)
            .ok_or_else(|| self.malformed("numpy.dtype needs a type string"))?;
        DType::from_code(code)
            .ok_or_else(|| self.malformed(format!("unknown numpy dtype {code:?}")))
    }

    /// `numpy.core.multiarray.scalar(dtype, bytes)`.
    pub(crate) fn scalar(&self, dtype: Value, data: Value) -> Result<Scalar> {
        let dtype = self.dtype_of(dtype)?;
        if dtype.kind == DTypeKind::Object {
            return Ok(Scalar::Value(data));
        }
        let bytes = match self.pk.get(data) {
            Some(Node::Bytes(b)) => b.clone(),
            // Protocol 2 under Python 2 wrote the bytes as a latin-1 str.
            Some(Node::Str(s)) => s.chars().map(|c| c as u32 as u8).collect(),
            _ => return Err(self.malformed("numpy scalar without its bytes")),
        };
        let array =
            NdArray::from_raw(dtype, vec![1], false, bytes).map_err(|m| self.bad_array(m))?;
        Ok(Scalar::Value(match array.dtype.kind {
            DTypeKind::Float => Value::Float(array.to_f64().map_err(|m| self.malformed(m))?[0]),
            DTypeKind::Bool => Value::Bool(array.to_i64().map_err(|m| self.malformed(m))?[0] != 0),
            DTypeKind::Int | DTypeKind::UInt => match array.to_i64() {
                Ok(v) => Value::Int(v[0]),
                Err(_) => Value::Float(array.to_f64().map_err(|m| self.malformed(m))?[0]),
            },
            _ => return Ok(Scalar::Array(array)),
        }))
    }

    /// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` (protocol 5, in-band).
    pub(crate) fn frombuffer(
        &self,
        buffer: Value,
        dtype: Value,
        shape: Value,
        order: Value,
    ) -> Result<NdArray> {
        let buf = self
            .pk
            .as_bytes(buffer)
            .ok_or_else(|| self.malformed("_frombuffer needs a buffer"))?
            .to_vec();
        let dtype = self.dtype_of(dtype)?;
        let shape = self.shape_of(shape)?;
        let fortran = self.pk.as_str(order) == Some("F");
        NdArray::from_raw(dtype, shape, fortran, buf).map_err(|m| self.bad_array(m))
    }

    pub(super) fn dtype_of(&self, v: Value) -> Result<DType> {
        match self.pk.get(v) {
            Some(Node::DType(d)) => Ok(d.clone()),
            _ => Err(self.malformed(format!(
                "expected a numpy dtype, found {}",
                self.pk.describe(v)
            ))),
        }
    }

    pub(super) fn shape_of(&self, v: Value) -> Result<Vec<usize>> {
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

    /// numpy's dtype `__setstate__`: byte order, record fields and the size of flexible types,
    /// applied to the dtype `numpy.dtype(code)` created.
    pub(crate) fn dtype_state(&self, base: &DType, state: Value) -> Result<DType> {
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
                // Each field copies its dtype: a record of records of records multiplies.
                if fdtype.nesting() >= MAX_DTYPE_NESTING {
                    return Err(self.malformed(format!(
                        "record dtypes nested more than {MAX_DTYPE_NESTING} deep"
                    )));
                }
                self.budget
                    .charge(fdtype.heap_bytes() + std::mem::size_of::<Field>() + name_s.len())
                    .map_err(|e| Error::Memory {
                        limit: e.limit,
                        offset: self.offset,
                    })?;
                let offset =
                    usize::try_from(offset).map_err(|_| self.malformed("negative field offset"))?;
                fields.push(Field {
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
    pub(crate) fn array_state(&self, state: Value) -> Result<NdArray> {
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
        let bad = |m: String| self.bad_array(m);
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
}
