//! joblib's `NumpyArrayWrapper`: the array's description in the wrapper's BUILD state, and the
//! array's data, which `joblib.dump` writes into the pickle stream right after that BUILD.
//!
//! The data is not a pickle opcode, so the VM hands this module its stream through
//! [`InlineData`] for exactly the bytes the description accounts for (or, for object arrays, for
//! the nested pickle that holds them).

use super::reconstruct::Reconstruct;
use super::{DType, DTypeKind, NdArray, element_count};
use crate::error::{Error, Result};
use crate::value::Value;

/// What reading an array's inline data needs from the pickle stream it is embedded in.
pub(crate) trait InlineData {
    /// The next `n` bytes of the stream; `what` names them in a truncation error.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8]>;

    /// Runs the pickle that follows in the stream (how joblib writes an object array, whose
    /// elements are Python objects) and returns the array it holds.
    fn nested_array(&mut self) -> Result<NdArray>;
}

/// An array joblib wrote inline, as its wrapper's state describes it.
///
/// It holds no borrow of the arena, so the VM can lend its stream (and itself, for a nested
/// pickle) to [`JoblibArray::read`].
pub(crate) struct JoblibArray {
    /// Offset of the wrapper's BUILD opcode: errors name it, as the VM's own errors do.
    offset: usize,
    dtype: DType,
    shape: Vec<usize>,
    fortran: bool,
    /// Newer joblib pads the data so that it starts aligned; one length byte says how much.
    aligned: bool,
}

impl Reconstruct<'_> {
    /// The wrapper's state: a dict with `dtype`, `shape`, `order` and, when the data is padded,
    /// `numpy_array_alignment_bytes`.
    pub(crate) fn joblib_array(&self, state: Value) -> Result<JoblibArray> {
        let get = |k: &str| self.pk.dict_get(state, k);
        let dtype = self.dtype_of(get("dtype").unwrap_or(Value::None))?;
        let shape = self.shape_of(get("shape").unwrap_or(Value::None))?;
        let fortran = get("order").and_then(|o| self.pk.as_str(o)) == Some("F");
        let aligned = matches!(get("numpy_array_alignment_bytes"), Some(Value::Int(_)));
        Ok(JoblibArray {
            offset: self.offset,
            dtype,
            shape,
            fortran,
            aligned,
        })
    }
}

impl JoblibArray {
    /// Reads the array's data from the stream, right after the wrapper's BUILD.
    pub(crate) fn read(self, stream: &mut impl InlineData) -> Result<NdArray> {
        if self.dtype.kind == DTypeKind::Object {
            return stream.nested_array();
        }
        if self.aligned {
            let pad = stream.take(1, "joblib alignment padding length")?[0];
            stream.take(usize::from(pad), "joblib alignment padding")?;
        }
        let count =
            element_count(&self.shape).ok_or_else(|| self.malformed("array shape overflows"))?;
        let n = count
            .checked_mul(self.dtype.itemsize)
            .ok_or_else(|| self.malformed("array size overflows"))?;
        let raw = stream.take(n, "joblib array data")?.to_vec();
        NdArray::from_raw(self.dtype, self.shape, self.fortran, raw).map_err(|m| Error::BadArray {
            offset: self.offset,
            message: m,
        })
    }

    fn malformed(&self, message: &str) -> Error {
        Error::Malformed {
            offset: self.offset,
            message: message.to_string(),
        }
    }
}
