//! numpy dtypes and arrays as they appear in pickles: parsed from their descriptors and raw bytes,
//! checked against each other, and read back as plain Rust vectors.
//!
//! Everything that knows numpy's layout lives under this module, so the VM does not: it hands
//! `reconstruct` the arguments and state of numpy's constructors, and `joblib` the stream that
//! carries joblib's inline array data; `npy` reads the `.npy` files skops archives hold.

mod joblib;
mod npy;
mod reconstruct;

use std::fmt;

use crate::value::Value;

pub(crate) use joblib::InlineData;
pub(crate) use npy::{NpyError, read_npy};
pub(crate) use reconstruct::{Reconstruct, Scalar};

/// Reads a number of type `$t` from exactly `size_of::<$t>()` bytes in the given byte order;
/// `return None` from the caller when the slice has another length.
macro_rules! read_num {
    ($t:ty, $b:expr, $little:expr) => {{
        let arr: [u8; std::mem::size_of::<$t>()] = $b.try_into().ok()?;
        if $little {
            <$t>::from_le_bytes(arr)
        } else {
            <$t>::from_be_bytes(arr)
        }
    }};
}

/// How deep record dtypes may nest (numpy itself allows 32 levels of nested structure).
pub(crate) const MAX_DTYPE_NESTING: usize = 32;

/// The kind of a dtype (numpy's `dtype.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeKind {
    /// `b`
    Bool,
    /// `i`
    Int,
    /// `u`
    UInt,
    /// `f`
    Float,
    /// `c`
    Complex,
    /// `S`: fixed-size bytes.
    Bytes,
    /// `U`: fixed-size UCS-4 text.
    Unicode,
    /// `V`: raw or structured records.
    Void,
    /// `O`: Python objects.
    Object,
    /// `M` / `m`: datetime64 / timedelta64.
    Time,
}

/// A field of a structured dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field dtype.
    pub dtype: DType,
    /// Byte offset inside a record.
    pub offset: usize,
}

/// A numpy dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct DType {
    /// Kind.
    pub kind: DTypeKind,
    /// Bytes per element.
    pub itemsize: usize,
    /// Byte order of multi-byte numbers (`false` for big-endian).
    pub little_endian: bool,
    /// Fields of a structured dtype, in `names` order; empty otherwise.
    pub fields: Vec<Field>,
}

impl DType {
    /// How many levels of record structure the dtype has (1 for a plain dtype). Bounded when
    /// dtypes are built, so the recursion here is too.
    pub fn nesting(&self) -> usize {
        1 + self
            .fields
            .iter()
            .map(|f| f.dtype.nesting())
            .max()
            .unwrap_or(0)
    }

    /// Bytes the dtype holds on the heap: its fields, recursively.
    pub fn heap_bytes(&self) -> usize {
        self.fields.capacity() * std::mem::size_of::<Field>()
            + self
                .fields
                .iter()
                .map(|f| f.name.capacity() + f.dtype.heap_bytes())
                .sum::<usize>()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = match self.kind {
            DTypeKind::Bool => 'b',
            DTypeKind::Int => 'i',
            DTypeKind::UInt => 'u',
            DTypeKind::Float => 'f',
            DTypeKind::Complex => 'c',
            DTypeKind::Bytes => 'S',
            DTypeKind::Unicode => 'U',
            DTypeKind::Void => 'V',
            DTypeKind::Object => 'O',
            DTypeKind::Time => 'M',
        };
        if self.fields.is_empty() {
            write!(f, "{code}{}", self.itemsize)
        } else {
            let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
            write!(f, "record{{{}}}", names.join(","))
        }
    }
}

impl DType {
    /// Parses the type string numpy passes to `numpy.dtype(...)` in a pickle (`'f8'`, `'i8'`,
    /// `'O8'`, `'V64'`, `'U5'`, ...). Byte order and record fields come later, from BUILD.
    pub fn from_code(code: &str) -> Option<DType> {
        let code = code.trim_start_matches(['<', '>', '|', '=']);
        let mut chars = code.chars();
        let letter = chars.next()?;
        let digits = chars.as_str();
        let n: usize = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let (kind, itemsize) = match letter {
            '?' => (DTypeKind::Bool, 1),
            'b' if n <= 1 => (DTypeKind::Bool, 1),
            'i' => (DTypeKind::Int, n),
            'u' => (DTypeKind::UInt, n),
            'f' => (DTypeKind::Float, n),
            'c' => (DTypeKind::Complex, n),
            'S' | 'a' => (DTypeKind::Bytes, n),
            'U' => (DTypeKind::Unicode, n * 4),
            'V' => (DTypeKind::Void, n),
            'O' => (DTypeKind::Object, 8),
            'M' | 'm' => (DTypeKind::Time, 8),
            _ => return None,
        };
        let valid = match kind {
            DTypeKind::Int | DTypeKind::UInt => matches!(itemsize, 1 | 2 | 4 | 8),
            DTypeKind::Float => matches!(itemsize, 2 | 4 | 8 | 16),
            DTypeKind::Complex => matches!(itemsize, 8 | 16 | 32),
            _ => true,
        };
        valid.then_some(DType {
            kind,
            itemsize,
            little_endian: true,
            fields: Vec::new(),
        })
    }

    /// Whether the elements are numbers this crate can convert to `f64` / `i64`.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self.kind,
            DTypeKind::Bool | DTypeKind::Int | DTypeKind::UInt | DTypeKind::Float
        ) && self.fields.is_empty()
    }

    /// Reads element `bytes` (exactly `itemsize` long) as f64.
    fn read_f64(&self, b: &[u8]) -> Option<f64> {
        Some(match (self.kind, self.itemsize) {
            (DTypeKind::Float, 8) => read_num!(f64, b, self.little_endian),
            (DTypeKind::Float, 4) => f64::from(read_num!(f32, b, self.little_endian)),
            (DTypeKind::Float, _) => return None,
            _ => {
                // Integers (and bools) convert the way numpy casts them to float64.
                return match (self.kind, self.itemsize) {
                    (DTypeKind::UInt, 8) => Some(read_num!(u64, b, self.little_endian) as f64),
                    _ => self.read_i64(b).map(|i| i as f64),
                };
            }
        })
    }

    /// Reads element `bytes` as i64 (integers and bools only).
    fn read_i64(&self, b: &[u8]) -> Option<i64> {
        let le = self.little_endian;
        Some(match (self.kind, self.itemsize) {
            (DTypeKind::Int, 8) => read_num!(i64, b, le),
            (DTypeKind::Int, 4) => i64::from(read_num!(i32, b, le)),
            (DTypeKind::Int, 2) => i64::from(read_num!(i16, b, le)),
            (DTypeKind::Int, 1) => i64::from(b[0] as i8),
            (DTypeKind::UInt, 8) => i64::try_from(read_num!(u64, b, le)).ok()?,
            (DTypeKind::UInt, 4) => i64::from(read_num!(u32, b, le)),
            (DTypeKind::UInt, 2) => i64::from(read_num!(u16, b, le)),
            (DTypeKind::UInt, 1) | (DTypeKind::Bool, 1) => i64::from(b[0]),
            _ => return None,
        })
    }
}

/// The elements of an array.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// Raw element bytes in C order.
    Raw(Vec<u8>),
    /// Python objects (dtype `O`), in C order.
    Objects(Vec<Value>),
}

/// A numpy array, always stored in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: ArrayData,
}

/// Number of elements of a shape, or `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl NdArray {
    /// Builds an array from raw bytes, checking the size and converting Fortran order to C order.
    fn from_raw(
        dtype: DType,
        shape: Vec<usize>,
        fortran: bool,
        raw: Vec<u8>,
    ) -> Result<NdArray, String> {
        if dtype.kind == DTypeKind::Object {
            return Err("object arrays carry Python objects, not raw bytes".into());
        }
        let count = element_count(&shape).ok_or("shape overflows")?;
        let expected = count
            .checked_mul(dtype.itemsize)
            .ok_or("byte size overflows")?;
        if raw.len() != expected {
            return Err(format!(
                "shape {shape:?} of {dtype} needs {expected} bytes, the data has {}",
                raw.len()
            ));
        }
        let raw = if fortran && shape.len() > 1 {
            fortran_to_c(&raw, &shape, dtype.itemsize)
        } else {
            raw
        };
        Ok(NdArray {
            dtype,
            shape,
            data: ArrayData::Raw(raw),
        })
    }

    /// Builds an object array.
    fn from_objects(
        dtype: DType,
        shape: Vec<usize>,
        fortran: bool,
        items: Vec<Value>,
    ) -> Result<NdArray, String> {
        let count = element_count(&shape).ok_or("shape overflows")?;
        if items.len() != count {
            return Err(format!(
                "shape {shape:?} needs {count} objects, the data has {}",
                items.len()
            ));
        }
        let items = if fortran && shape.len() > 1 {
            let mut out = Vec::with_capacity(count);
            for c in c_to_fortran_index(&shape) {
                out.push(items[c]);
            }
            out
        } else {
            items
        };
        Ok(NdArray {
            dtype,
            shape,
            data: ArrayData::Objects(items),
        })
    }

    /// Bytes the array holds on the heap: its elements, shape and dtype.
    pub fn heap_bytes(&self) -> usize {
        let data = match &self.data {
            ArrayData::Raw(raw) => raw.capacity(),
            ArrayData::Objects(v) => v.capacity().saturating_mul(std::mem::size_of::<Value>()),
        };
        data + self.shape.capacity() * std::mem::size_of::<usize>() + self.dtype.heap_bytes()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(0)
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The elements as f64 in C order (numbers and bools only).
    pub fn to_f64(&self) -> Result<Vec<f64>, String> {
        let ArrayData::Raw(raw) = &self.data else {
            return Err(format!("expected a numeric array, found {}", self.dtype));
        };
        if !self.dtype.is_numeric() {
            return Err(format!("expected a numeric array, found {}", self.dtype));
        }
        if self.dtype.kind == DTypeKind::Float
            && self.dtype.itemsize == 8
            && self.dtype.little_endian
        {
            return Ok(raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect());
        }
        raw.chunks_exact(self.dtype.itemsize)
            .map(|c| self.dtype.read_f64(c))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("cannot read {} elements as numbers", self.dtype))
    }

    /// The elements as i64 in C order (integers and bools only).
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let ArrayData::Raw(raw) = &self.data else {
            return Err(format!("expected an integer array, found {}", self.dtype));
        };
        raw.chunks_exact(self.dtype.itemsize.max(1))
            .map(|c| self.dtype.read_i64(c))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("expected an integer array, found {}", self.dtype))
    }

    /// One field of a structured (record) array, as f64 per record.
    pub fn field_f64(&self, name: &str) -> Result<Vec<f64>, String> {
        self.field_map(name, |dt, b| dt.read_f64(b))
    }

    /// One field of a structured (record) array, as i64 per record.
    pub fn field_i64(&self, name: &str) -> Result<Vec<i64>, String> {
        self.field_map(name, |dt, b| dt.read_i64(b))
    }

    fn field_map<T>(
        &self,
        name: &str,
        read: impl Fn(&DType, &[u8]) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        let ArrayData::Raw(raw) = &self.data else {
            return Err("expected a record array".into());
        };
        let field = self
            .dtype
            .fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("record array has no field `{name}`"))?;
        let size = field.dtype.itemsize;
        if field.offset + size > self.dtype.itemsize {
            return Err(format!("field `{name}` lies outside its record"));
        }
        raw.chunks_exact(self.dtype.itemsize.max(1))
            .map(|rec| read(&field.dtype, &rec[field.offset..field.offset + size]))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("field `{name}` of type {} is not numeric", field.dtype))
    }

    /// The Python objects of an object array.
    pub fn objects(&self) -> Option<&[Value]> {
        match &self.data {
            ArrayData::Objects(items) => Some(items),
            ArrayData::Raw(_) => None,
        }
    }

    /// The strings of a fixed-size unicode (`U`) array, trailing NULs removed.
    pub fn unicode_strings(&self) -> Option<Vec<String>> {
        let ArrayData::Raw(raw) = &self.data else {
            return None;
        };
        if self.dtype.kind != DTypeKind::Unicode {
            return None;
        }
        raw.chunks_exact(self.dtype.itemsize.max(4))
            .map(|c| {
                c.chunks_exact(4)
                    .map(|u| {
                        let arr: [u8; 4] = u.try_into().expect("4-byte chunk");
                        if self.dtype.little_endian {
                            u32::from_le_bytes(arr)
                        } else {
                            u32::from_be_bytes(arr)
                        }
                    })
                    .take_while(|&u| u != 0)
                    .map(char::from_u32)
                    .collect::<Option<String>>()
            })
            .collect()
    }
}

/// For each C-order position, the index of the same element in Fortran order.
fn c_to_fortran_index(shape: &[usize]) -> impl Iterator<Item = usize> + '_ {
    let count = element_count(shape).unwrap_or(0);
    let mut index = vec![0usize; shape.len()];
    (0..count).map(move |i| {
        if i > 0 {
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        let mut f = 0;
        let mut stride = 1;
        for (d, &n) in shape.iter().enumerate() {
            f += index[d] * stride;
            stride *= n;
        }
        f
    })
}

fn fortran_to_c(raw: &[u8], shape: &[usize], itemsize: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for f in c_to_fortran_index(shape) {
        out.extend_from_slice(&raw[f * itemsize..(f + 1) * itemsize]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_converted_to_c_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let fortran: Vec<u8> = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let dtype = DType::from_code("f8").unwrap();
        let a = NdArray::from_raw(dtype, vec![2, 3], true, fortran).unwrap();
        assert_eq!(a.to_f64().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let dtype = DType::from_code("f8").unwrap();
        let err = NdArray::from_raw(dtype, vec![3], false, vec![0; 16]).unwrap_err();
        assert!(err.contains("needs 24 bytes"), "{err}");
    }

    #[test]
    fn big_endian_and_narrow_types_read_as_numbers() {
        let mut dtype = DType::from_code("i4").unwrap();
        dtype.little_endian = false;
        let a =
            NdArray::from_raw(dtype, vec![2], false, vec![0, 0, 0, 7, 255, 255, 255, 254]).unwrap();
        assert_eq!(a.to_i64().unwrap(), vec![7, -2]);
        assert_eq!(a.to_f64().unwrap(), vec![7.0, -2.0]);
    }

    #[test]
    fn type_codes_parse() {
        assert_eq!(DType::from_code("<f8").unwrap().itemsize, 8);
        assert_eq!(DType::from_code("U5").unwrap().itemsize, 20);
        assert_eq!(DType::from_code("O8").unwrap().kind, DTypeKind::Object);
        assert!(DType::from_code("f3").is_none());
        assert!(DType::from_code("x").is_none());
    }
}
