//! numpy's `.npy` format (versions 1 to 3), as `numpy.save(..., allow_pickle=False)` writes
//! it and skops stores every array: a magic string, a header that is a Python dict literal
//! (`descr`, `fortran_order`, `shape`), then the raw elements.
//!
//! The header is parsed as data, never evaluated; it is limited to numpy's own 10,000 bytes.
//! Object dtypes (whose elements would be pickles) are refused; shapes are checked for overflow
//! and against the load's budget before any element is copied.

use super::{DType, DTypeKind, Field, MAX_DTYPE_NESTING, NdArray, element_count};
use crate::budget::Budget;

/// numpy's `max_header_size` default: longer headers are refused as unsafe to parse.
const MAX_HEADER: usize = 10_000;

/// Why an `.npy` member was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum NpyError {
    /// Malformed, or something this reader does not load.
    Bad(String),
    /// The array would pass the load's memory budget (`limit` bytes).
    Memory { limit: usize },
}

fn bad<T>(message: impl Into<String>) -> Result<T, NpyError> {
    Err(NpyError::Bad(message.into()))
}

/// Reads an `.npy` file's bytes into an array in C order.
pub(crate) fn read_npy(bytes: &[u8], budget: &Budget) -> Result<NdArray, NpyError> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return bad("not a .npy array (no \\x93NUMPY magic)");
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        _ => {
            return bad(format!(
                ".npy format version {major}.{minor} (1.0 to 3.0 are read)"
            ));
        }
    };
    if len > MAX_HEADER {
        return bad(format!(
            "a .npy header of {len} bytes (numpy itself refuses more than {MAX_HEADER})"
        ));
    }
    let Some(header) = bytes.get(start..start + len) else {
        return bad("the .npy header runs past the end of the member");
    };
    let header: String = if major == 3 {
        std::str::from_utf8(header)
            .map_err(|_| NpyError::Bad("the .npy header is not UTF-8".into()))?
            .to_string()
    } else {
        header.iter().map(|&b| char::from(b)).collect()
    };
    let (dtype, fortran, shape) = parse_header(&header)?;
    if dtype.kind == DTypeKind::Object {
        return bad(
            "object dtype: its elements would be pickled Python objects, which are never loaded",
        );
    }
    let count =
        element_count(&shape).ok_or_else(|| NpyError::Bad(format!("shape {shape:?} overflows")))?;
    let needed = count
        .checked_mul(dtype.itemsize)
        .ok_or_else(|| NpyError::Bad(format!("shape {shape:?} of {dtype} overflows")))?;
    // The copy, and for Fortran order the reordered copy, are charged before they are made.
    let copies = if fortran && shape.len() > 1 { 2 } else { 1 };
    budget
        .charge(needed.saturating_mul(copies))
        .map_err(|e| NpyError::Memory { limit: e.limit })?;
    let data = &bytes[start + len..];
    if data.len() != needed {
        return bad(format!(
            "shape {shape:?} of {dtype} needs {needed} bytes, the member holds {}",
            data.len()
        ));
    }
    NdArray::from_raw(dtype, shape, fortran, data.to_vec()).map_err(NpyError::Bad)
}

/// The header dict's three keys, exactly as numpy requires them.
fn parse_header(text: &str) -> Result<(DType, bool, Vec<usize>), NpyError> {
    let mut p = Lit {
        s: text.as_bytes(),
        pos: 0,
    };
    let lit = p.value(0)?;
    p.space();
    if p.pos != p.s.len() {
        return bad("the .npy header has text after its dict");
    }
    let Py::Dict(entries) = lit else {
        return bad("the .npy header is not a dict");
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (k, v) in entries {
        match (k, v) {
            (Py::Str(k), v) if k == "descr" => descr = Some(v),
            (Py::Str(k), Py::Bool(b)) if k == "fortran_order" => fortran = Some(b),
            (Py::Str(k), Py::Tuple(dims)) if k == "shape" => {
                shape = Some(
                    dims.into_iter()
                        .map(|d| match d {
                            Py::Int(n) if n >= 0 => usize::try_from(n)
                                .map_err(|_| NpyError::Bad(format!("dimension {n} overflows"))),
                            other => bad(format!("bad array dimension {other:?}")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            (k, _) => return bad(format!("unexpected .npy header entry {k:?}")),
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return bad("the .npy header lacks `descr`, `fortran_order` or `shape`");
    };
    Ok((dtype_of(&descr, 0)?, fortran, shape))
}

/// A dtype from its `descr`: a type string, or a list of `(name, descr[, shape])` fields.
fn dtype_of(descr: &Py, depth: usize) -> Result<DType, NpyError> {
    if depth >= MAX_DTYPE_NESTING {
        return bad(format!(
            "record dtypes nested more than {MAX_DTYPE_NESTING} deep"
        ));
    }
    match descr {
        Py::Str(code) => type_code(code),
        Py::List(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            let mut offset = 0usize;
            for f in fields {
                let Py::Tuple(parts) = f else {
                    return bad(format!("bad record field {f:?}"));
                };
                let (name, fdescr, sub) = match parts.as_slice() {
                    [Py::Str(n), d] => (n, d, None),
                    [Py::Str(n), d, Py::Tuple(s)] => (n, d, Some(s)),
                    _ => return bad(format!("bad record field {f:?} (titles are not read)")),
                };
                let mut dtype = dtype_of(fdescr, depth + 1)?;
                if let Some(sub) = sub {
                    // A sub-array field: kept as its raw bytes.
                    let mut n = 1usize;
                    for d in sub {
                        let Py::Int(d) = d else {
                            return bad(format!("bad sub-array shape {sub:?}"));
                        };
                        n = usize::try_from(*d)
                            .ok()
                            .and_then(|d| n.checked_mul(d))
                            .ok_or_else(|| NpyError::Bad(format!("bad sub-array shape {sub:?}")))?;
                    }
                    dtype = DType {
                        kind: DTypeKind::Void,
                        itemsize: dtype
                            .itemsize
                            .checked_mul(n)
                            .ok_or_else(|| NpyError::Bad("sub-array size overflows".into()))?,
                        little_endian: dtype.little_endian,
                        fields: Vec::new(),
                    };
                }
                let size = dtype.itemsize;
                // Unnamed void fields are padding (how numpy writes aligned records).
                let padding = name.is_empty() && dtype.kind == DTypeKind::Void;
                if !padding {
                    if name.is_empty() {
                        return bad("a record field without a name");
                    }
                    if out.iter().any(|f: &Field| &f.name == name) {
                        return bad(format!("the record field `{name}` appears twice"));
                    }
                    out.push(Field {
                        name: name.clone(),
                        dtype,
                        offset,
                    });
                }
                offset = offset
                    .checked_add(size)
                    .ok_or_else(|| NpyError::Bad("record size overflows".into()))?;
            }
            Ok(DType {
                kind: DTypeKind::Void,
                itemsize: offset,
                little_endian: true,
                fields: out,
            })
        }
        other => bad(format!("bad dtype description {other:?}")),
    }
}

/// A type string such as `<f8`, `|u1`, `>i4`, `|V7`, `<U5` or `<M8[ns]`.
fn type_code(code: &str) -> Result<DType, NpyError> {
    let little = !code.starts_with('>');
    let base = code.trim_start_matches(['<', '>', '|', '=']);
    // datetime64 / timedelta64 carry a unit: `M8[ns]`.
    let base = match base.find('[') {
        Some(i) if matches!(base.as_bytes()[0], b'M' | b'm') && base.ends_with(']') => &base[..i],
        _ => base,
    };
    let mut dtype = DType::from_code(base)
        .ok_or_else(|| NpyError::Bad(format!("unknown numpy dtype {code:?}")))?;
    dtype.little_endian = little;
    Ok(dtype)
}

/// The Python literals a `.npy` header holds.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

/// A reader of Python literals (strings, integers, `True`/`False`/`None`, tuples, lists, dicts).
struct Lit<'s> {
    s: &'s [u8],
    pos: usize,
}

impl Lit<'_> {
    fn space(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, NpyError> {
        bad(format!("bad .npy header at character {}: {what}", self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Py, NpyError> {
        if depth > MAX_DTYPE_NESTING * 2 + 4 {
            return self.err("nested too deep");
        }
        self.space();
        let Some(&c) = self.s.get(self.pos) else {
            return self.err("ends early");
        };
        match c {
            b'\'' | b'"' => self.string(c),
            b'(' | b'[' | b'{' => {
                self.pos += 1;
                let close = match c {
                    b'(' => b')',
                    b'[' => b']',
                    _ => b'}',
                };
                let mut items = Vec::new();
                let mut entries = Vec::new();
                let mut trailing_comma = false;
                loop {
                    self.space();
                    if self.s.get(self.pos) == Some(&close) {
                        self.pos += 1;
                        break;
                    }
                    let v = self.value(depth + 1)?;
                    if c == b'{' {
                        self.space();
                        if self.s.get(self.pos) != Some(&b':') {
                            return self.err("expected `:`");
                        }
                        self.pos += 1;
                        entries.push((v, self.value(depth + 1)?));
                    } else {
                        items.push(v);
                    }
                    self.space();
                    match self.s.get(self.pos) {
                        Some(b',') => {
                            self.pos += 1;
                            trailing_comma = true;
                        }
                        Some(&x) if x == close => {
                            self.pos += 1;
                            trailing_comma = false;
                            break;
                        }
                        _ => return self.err("expected `,` or a closing bracket"),
                    }
                }
                Ok(match c {
                    // `(3)` is the integer 3 in Python; a tuple needs its comma.
                    b'(' if items.len() == 1 && !trailing_comma => items.pop().expect("one item"),
                    b'(' => Py::Tuple(items),
                    b'[' => Py::List(items),
                    _ => Py::Dict(entries),
                })
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.pos += 1;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).expect("ASCII");
                // Python 2 wrote long integers with an `L`.
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                text.parse()
                    .map(Py::Int)
                    .or_else(|_| self.err("bad integer"))
            }
            _ => {
                for (word, v) in [
                    (&b"True"[..], Py::Bool(true)),
                    (b"False", Py::Bool(false)),
                    (b"None", Py::None),
                ] {
                    if self.s[self.pos..].starts_with(word) {
                        self.pos += word.len();
                        return Ok(v);
                    }
                }
                self.err("unexpected character")
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<Py, NpyError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return self.err("a string is not closed");
            };
            self.pos += 1;
            match c {
                _ if c == quote => return Ok(Py::Str(out)),
                b'\\' => {
                    let Some(&e) = self.s.get(self.pos) else {
                        return self.err("a string is not closed");
                    };
                    self.pos += 1;
                    match e {
                        b'\\' | b'\'' | b'"' => out.push(char::from(e)),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'x' => {
                            let h = self
                                .s
                                .get(self.pos..self.pos + 2)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u8::from_str_radix(h, 16).ok());
                            let Some(h) = h else {
                                return self.err("a bad `\\x` escape");
                            };
                            self.pos += 2;
                            out.push(char::from(h));
                        }
                        _ => return self.err("an escape this reader does not know"),
                    }
                }
                // The header was decoded to chars byte by byte (latin-1) or checked as UTF-8;
                // bytes of a multi-byte character are taken as they come.
                _ => {
                    let rest = std::str::from_utf8(&self.s[self.pos - 1..]).ok();
                    match rest.and_then(|r| r.chars().next()) {
                        Some(ch) => {
                            out.push(ch);
                            self.pos += ch.len_utf8() - 1;
                        }
                        None => out.push(char::from(c)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn arrays_in_c_and_fortran_order_read_back() {
        let budget = Budget::new(1 << 20);
        let data = f64s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let c = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            &data,
        );
        let a = read_npy(&c, &budget).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_f64().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let f = npy(
            "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
            &data,
        );
        let a = read_npy(&f, &budget).unwrap();
        assert_eq!(a.to_f64().unwrap(), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        let s = npy(
            "{'descr': '>i4', 'fortran_order': False, 'shape': (), }",
            &[0, 0, 1, 0],
        );
        assert_eq!(read_npy(&s, &budget).unwrap().to_i64().unwrap(), vec![256]);
    }

    #[test]
    fn records_with_padding_read_by_field() {
        let budget = Budget::new(1 << 20);
        let mut data = Vec::new();
        for (l, t) in [(1i64, 0.5f64), (-1, 0.25)] {
            data.extend_from_slice(&l.to_le_bytes());
            data.extend_from_slice(&t.to_le_bytes());
            data.extend_from_slice(&[7, 0, 0, 0]);
        }
        let h = "{'descr': [('left_child', '<i8'), ('threshold', '<f8'), ('flag', '|u1'), ('', '|V3')], 'fortran_order': False, 'shape': (2,), }";
        let a = read_npy(&npy(h, &data), &budget).unwrap();
        assert_eq!(a.dtype.itemsize, 20);
        assert_eq!(a.field_i64("left_child").unwrap(), vec![1, -1]);
        assert_eq!(a.field_f64("threshold").unwrap(), vec![0.5, 0.25]);
        assert_eq!(a.field_i64("flag").unwrap(), vec![7, 7]);
    }

    #[test]
    fn hostile_headers_are_refused_with_the_reason() {
        let budget = Budget::new(1 << 20);
        let cases = [
            (
                "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                "object dtype",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
                "overflows",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                "needs 24 bytes",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}",
                "unexpected",
            ),
            ("{'descr': '<f8', 'shape': (3,), }", "lacks"),
            ("__import__('os').system('x')", "unexpected character"),
            (
                "{'descr': 'q9', 'fortran_order': False, 'shape': (3,), }",
                "unknown numpy dtype",
            ),
        ];
        for (h, want) in cases {
            match read_npy(&npy(h, &[0; 8]), &budget) {
                Err(NpyError::Bad(m)) => assert!(m.contains(want), "{h}: {m}"),
                other => panic!("{h}: {other:?}"),
            }
        }
        let big = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }",
            &[],
        );
        assert_eq!(
            read_npy(&big, &budget),
            Err(NpyError::Memory { limit: 1 << 20 })
        );
    }
}
