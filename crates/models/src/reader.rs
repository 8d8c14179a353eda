//! Typed access to an estimator object inside a loaded pickle, with errors that name the class
//! and attribute.

use fleetscore_pickle::{Budget, Node, Pickle, Value};

use crate::error::{Error, Result};

/// An estimator object in a pickle, with helpers to read its fitted attributes.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a> {
    pub pk: &'a Pickle,
    /// The load's memory budget: every array copied out of the pickle is charged to it.
    pub budget: &'a Budget,
    pub value: Value,
    /// Class name (without module), for messages.
    pub class: &'a str,
}

/// A 2-D f64 matrix in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl<'a> Obj<'a> {
    pub fn new(pk: &'a Pickle, value: Value, budget: &'a Budget) -> Result<Obj<'a>> {
        let object = pk.as_object(value).ok_or_else(|| {
            Error::Unsupported(format!(
                "expected an estimator, found {}",
                pk.describe(value)
            ))
        })?;
        Ok(Obj {
            pk,
            budget,
            value,
            class: &object.class.name,
        })
    }

    pub fn qualified_class(&self) -> String {
        self.pk
            .as_object(self.value)
            .map(|o| o.class.qualified())
            .unwrap_or_default()
    }

    pub fn get(&self, attr: &str) -> Option<Value> {
        self.pk.attr(self.value, attr)
    }

    pub fn require(&self, attr: &str) -> Result<Value> {
        self.get(attr).ok_or_else(|| Error::MissingAttr {
            class: self.class.to_string(),
            attr: attr.to_string(),
        })
    }

    pub fn bad(&self, attr: &str, expected: &str, found: Value) -> Error {
        Error::BadAttr {
            class: self.class.to_string(),
            attr: attr.to_string(),
            expected: expected.to_string(),
            found: self.pk.describe(found),
        }
    }

    /// A float attribute (ints and 1-element arrays accepted, as numpy would).
    pub fn f64(&self, attr: &str) -> Result<f64> {
        let v = self.require(attr)?;
        self.f64_of(attr, v)
    }

    pub fn f64_of(&self, attr: &str, v: Value) -> Result<f64> {
        match v {
            Value::Float(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            Value::Bool(b) => Ok(f64::from(u8::from(b))),
            _ => match self.pk.as_array(v).map(|a| a.to_f64()) {
                Some(Ok(values)) if values.len() == 1 => Ok(values[0]),
                _ => Err(self.bad(attr, "a number", v)),
            },
        }
    }

    pub fn int(&self, attr: &str) -> Result<i64> {
        let v = self.require(attr)?;
        match v {
            Value::Int(i) => Ok(i),
            _ => Err(self.bad(attr, "an integer", v)),
        }
    }

    /// A bool attribute with a default for versions that did not store it.
    pub fn bool_or(&self, attr: &str, default: bool) -> Result<bool> {
        match self.get(attr) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::Int(i)) => Ok(i != 0),
            Some(v) => Err(self.bad(attr, "a bool", v)),
        }
    }

    pub fn str(&self, attr: &str) -> Result<&'a str> {
        let v = self.require(attr)?;
        self.pk
            .as_str(v)
            .ok_or_else(|| self.bad(attr, "a string", v))
    }

    pub fn is_none(&self, attr: &str) -> bool {
        matches!(self.get(attr), None | Some(Value::None))
    }

    /// A numeric array attribute, flattened, as f64.
    pub fn vec_f64(&self, attr: &str) -> Result<Vec<f64>> {
        let v = self.require(attr)?;
        self.vec_f64_of(attr, v)
    }

    /// Charges the copy of `elements` 8-byte values read from attribute `attr`.
    pub fn charge(&self, attr: &str, elements: usize) -> Result<()> {
        self.budget
            .charge(elements.saturating_mul(8))
            .map_err(|e| Error::Memory {
                limit: e.limit,
                class: self.class.to_string(),
                attr: attr.to_string(),
            })
    }

    pub fn vec_f64_of(&self, attr: &str, v: Value) -> Result<Vec<f64>> {
        if let Some(a) = self.pk.as_array(v) {
            self.charge(attr, a.len())?;
            return a
                .to_f64()
                .map_err(|m| self.bad(attr, "a numeric array", v).with_found(m));
        }
        match v {
            Value::Float(f) => Ok(vec![f]),
            Value::Int(i) => Ok(vec![i as f64]),
            _ => Err(self.bad(attr, "a numeric array", v)),
        }
    }

    /// A numeric array attribute as i64 (integer arrays only).
    pub fn vec_i64_of(&self, attr: &str, v: Value) -> Result<Vec<i64>> {
        let a = self
            .pk
            .as_array(v)
            .ok_or_else(|| self.bad(attr, "an integer array", v))?;
        self.charge(attr, a.len())?;
        a.to_i64()
            .map_err(|m| self.bad(attr, "an integer array", v).with_found(m))
    }

    /// A 2-D numeric array attribute (a 1-D one is taken as a single row).
    pub fn matrix(&self, attr: &str) -> Result<Matrix> {
        let v = self.require(attr)?;
        let a = self
            .pk
            .as_array(v)
            .ok_or_else(|| self.bad(attr, "a 2-D array", v))?;
        self.charge(attr, a.len())?;
        let data = a
            .to_f64()
            .map_err(|m| self.bad(attr, "a numeric 2-D array", v).with_found(m))?;
        let (rows, cols) = match a.shape.as_slice() {
            [r, c] => (*r, *c),
            [n] => (1, *n),
            _ => return Err(self.bad(attr, "a 2-D array", v)),
        };
        Ok(Matrix { rows, cols, data })
    }

    /// A list (or tuple) attribute's items.
    pub fn seq(&self, attr: &str) -> Result<&'a [Value]> {
        let v = self.require(attr)?;
        self.pk.as_seq(v).ok_or_else(|| self.bad(attr, "a list", v))
    }

    /// A child estimator stored in an attribute.
    pub fn child(&self, v: Value) -> Result<Obj<'a>> {
        Obj::new(self.pk, v, self.budget)
    }

    /// `feature_names_in_`, if the estimator was fitted on a DataFrame.
    pub fn feature_names(&self) -> Option<Vec<String>> {
        let v = self.get("feature_names_in_")?;
        let a = self.pk.as_array(v)?;
        if let Some(objects) = a.objects() {
            return objects
                .iter()
                .map(|o| self.pk.as_str(*o).map(str::to_string))
                .collect();
        }
        a.unicode_strings()
    }

    /// The node behind an attribute, for inspection.
    pub fn node(&self, v: Value) -> Option<&'a Node> {
        self.pk.get(v)
    }
}

impl Error {
    fn with_found(self, detail: String) -> Error {
        match self {
            Error::BadAttr {
                class,
                attr,
                expected,
                ..
            } => Error::BadAttr {
                class,
                attr,
                expected,
                found: detail,
            },
            other => other,
        }
    }
}
