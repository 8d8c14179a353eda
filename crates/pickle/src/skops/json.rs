//! JSON as Python's `json.loads` reads it (with `NaN`, `Infinity` and integers of any size),
//! parsed straight into a load's arena: objects become dicts with string keys, arrays lists, so
//! every string and container is a node charged to the budget as it grows. No recursion: open
//! containers live on an explicit stack bounded by [`MAX_DEPTH`].

use super::{Arena, Refusal};
use crate::budget::GROWTH;
use crate::value::{Node, Value};

/// Deepest nesting of arrays and objects.
pub(crate) const MAX_DEPTH: usize = 512;
/// Most digits of an integer (CPython's default `sys.int_info.default_max_str_digits`).
const MAX_INT_DIGITS: usize = 4300;

/// Why a JSON text was refused: where (byte offset) and what.
#[derive(Debug)]
pub(crate) enum JsonError {
    Bad { offset: usize, message: String },
    Refused { offset: usize, refusal: Refusal },
}

type Result<T> = std::result::Result<T, JsonError>;

enum Open {
    List(Vec<Value>),
    /// Entries so far and the key waiting for its value.
    Dict(Vec<(Value, Value)>, Option<Value>),
}

struct Parser<'t, 'x, 'b> {
    text: &'t [u8],
    pos: usize,
    arena: &'x mut Arena<'b>,
}

/// Parses one JSON value (surrounded by nothing but white space) into `arena`.
pub(crate) fn parse(text: &[u8], arena: &mut Arena<'_>) -> Result<Value> {
    let mut p = Parser {
        text,
        pos: 0,
        arena,
    };
    let v = p.document()?;
    p.space();
    if p.pos != text.len() {
        return Err(p.bad("extra data after the JSON value"));
    }
    Ok(v)
}

impl Parser<'_, '_, '_> {
    fn bad(&self, message: impl Into<String>) -> JsonError {
        JsonError::Bad {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn refused(&self, refusal: Refusal) -> JsonError {
        JsonError::Refused {
            offset: self.pos,
            refusal,
        }
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// Charges one more item of a container being built.
    fn charge_item(&self, bytes: usize) -> Result<()> {
        self.arena
            .charge(bytes.saturating_mul(GROWTH))
            .map_err(|r| self.refused(r))
    }

    fn document(&mut self) -> Result<Value> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            self.space();
            // A value starts here: a scalar, or a container that opens.
            let value = match self.peek() {
                Some(b'[') => {
                    self.open(&mut stack, Open::List(Vec::new()))?;
                    self.space();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.close(&mut stack)?
                    } else {
                        continue;
                    }
                }
                Some(b'{') => {
                    self.open(&mut stack, Open::Dict(Vec::new(), None))?;
                    self.space();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        self.close(&mut stack)?
                    } else {
                        self.key(&mut stack)?;
                        continue;
                    }
                }
                _ => self.scalar()?,
            };
            // Hand the value to the container it is in, closing containers as they end.
            let mut value = value;
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                match top {
                    Open::List(items) => {
                        self.charge_item(std::mem::size_of::<Value>())?;
                        items.push(value);
                    }
                    Open::Dict(entries, key) => {
                        let k = key.take().expect("a key precedes every value");
                        entries.push((k, value));
                    }
                }
                self.space();
                match (self.peek(), stack.last()) {
                    (Some(b','), Some(Open::List(_))) => {
                        self.pos += 1;
                        break;
                    }
                    (Some(b','), Some(Open::Dict(..))) => {
                        self.pos += 1;
                        self.key(&mut stack)?;
                        break;
                    }
                    (Some(b']'), Some(Open::List(_))) | (Some(b'}'), Some(Open::Dict(..))) => {
                        self.pos += 1;
                        value = self.close(&mut stack)?;
                    }
                    (Some(c), _) => {
                        return Err(self.bad(format!(
                            "expected `,` or the container's end, found {:?}",
                            char::from(c)
                        )));
                    }
                    (None, _) => return Err(self.bad("the JSON text ends inside a container")),
                }
            }
        }
    }

    fn open(&mut self, stack: &mut Vec<Open>, open: Open) -> Result<()> {
        if stack.len() >= MAX_DEPTH {
            return Err(self.bad(format!(
                "arrays and objects nested more than {MAX_DEPTH} deep"
            )));
        }
        self.pos += 1;
        stack.push(open);
        Ok(())
    }

    /// Reads an object key and its colon, charging the entry it starts.
    fn key(&mut self, stack: &mut [Open]) -> Result<()> {
        self.space();
        if self.peek() != Some(b'"') {
            return Err(self.bad("expected a string key"));
        }
        let k = self.string()?;
        self.space();
        if self.peek() != Some(b':') {
            return Err(self.bad("expected `:` after a key"));
        }
        self.pos += 1;
        self.charge_item(2 * std::mem::size_of::<Value>())?;
        if let Some(Open::Dict(_, key)) = stack.last_mut() {
            *key = Some(k);
        }
        Ok(())
    }

    /// Pops the innermost container into the arena (its items were charged as they came).
    fn close(&mut self, stack: &mut Vec<Open>) -> Result<Value> {
        let node = match stack.pop().expect("a container is open") {
            Open::List(items) => Node::List(items),
            Open::Dict(entries, _) => {
                self.check_unique(&entries)?;
                Node::Dict(entries)
            }
        };
        self.arena.push_prepaid(node).map_err(|r| self.refused(r))
    }

    /// Python keeps the last of repeated keys; a skops file never repeats one, and two readers
    /// that pick different ones could be shown different models, so a repeat is refused.
    fn check_unique(&self, entries: &[(Value, Value)]) -> Result<()> {
        if entries.len() < 2 {
            return Ok(());
        }
        let mut keys: Vec<&str> = entries
            .iter()
            .map(|(k, _)| self.arena.pk.as_str(*k).unwrap_or_default())
            .collect();
        keys.sort_unstable();
        match keys.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(self.bad(format!("the key {:?} appears twice in one object", w[0]))),
            None => Ok(()),
        }
    }

    fn scalar(&mut self) -> Result<Value> {
        let rest = &self.text[self.pos..];
        for (word, value) in [
            (&b"null"[..], Value::None),
            (b"true", Value::Bool(true)),
            (b"false", Value::Bool(false)),
            (b"NaN", Value::Float(f64::NAN)),
            (b"Infinity", Value::Float(f64::INFINITY)),
            (b"-Infinity", Value::Float(f64::NEG_INFINITY)),
        ] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(c) => Err(self.bad(format!("unexpected {:?}", char::from(c)))),
            None => Err(self.bad("the JSON text ends where a value should be")),
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        let t = self.text;
        let digits = |mut i: usize| {
            while t.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if t[i] == b'-' {
            i += 1;
        }
        let int_start = i;
        let int_end = digits(i);
        if int_end == int_start || (t[int_start] == b'0' && int_end > int_start + 1) {
            return Err(self.bad("malformed number"));
        }
        i = int_end;
        let mut float = false;
        if t.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return Err(self.bad("malformed number"));
            }
            i = end;
            float = true;
        }
        if let Some(b'e' | b'E') = t.get(i) {
            let mut j = i + 1;
            if let Some(b'+' | b'-') = t.get(j) {
                j += 1;
            }
            let end = digits(j);
            if end == j {
                return Err(self.bad("malformed number"));
            }
            i = end;
            float = true;
        }
        let s = std::str::from_utf8(&t[start..i]).expect("ASCII");
        self.pos = i;
        if float {
            return s
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| self.bad("malformed number"));
        }
        if let Ok(v) = s.parse::<i64>() {
            return Ok(Value::Int(v));
        }
        let digits = &t[int_start..int_end];
        if digits.len() > MAX_INT_DIGITS {
            return Err(self.bad(format!(
                "an integer of {} digits (Python reads at most {MAX_INT_DIGITS})",
                digits.len()
            )));
        }
        let bytes = big_int(digits, start != int_start);
        self.arena
            .push(Node::BigInt(bytes))
            .map_err(|r| self.refused(r))
    }

    fn string(&mut self) -> Result<Value> {
        self.pos += 1; // the opening quote
        let start = self.pos;
        // Where the string ends, so that its buffer is sized (and charged) once.
        let mut end = start;
        loop {
            match self.text.get(end) {
                None => return Err(self.bad("a string is not closed")),
                Some(b'"') => break,
                Some(b'\\') => end += 2,
                Some(_) => end += 1,
            }
        }
        let raw = &self.text[start..end.min(self.text.len())];
        let mut s = String::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let c = raw[i];
            if c < 0x20 {
                self.pos = start + i;
                return Err(self.bad("a control character inside a string"));
            }
            if c != b'\\' {
                // A run of plain bytes, checked as UTF-8 once.
                let run_end = raw[i..]
                    .iter()
                    .position(|&b| b == b'\\' || b < 0x20)
                    .map_or(raw.len(), |p| i + p);
                match std::str::from_utf8(&raw[i..run_end]) {
                    Ok(run) => s.push_str(run),
                    Err(_) => {
                        self.pos = start + i;
                        return Err(self.bad("a string is not UTF-8"));
                    }
                }
                i = run_end;
                continue;
            }
            self.pos = start + i;
            let esc = *raw.get(i + 1).ok_or_else(|| self.bad("a bad escape"))?;
            i += 2;
            match esc {
                b'"' => s.push('"'),
                b'\\' => s.push('\\'),
                b'/' => s.push('/'),
                b'b' => s.push('\u{8}'),
                b'f' => s.push('\u{c}'),
                b'n' => s.push('\n'),
                b'r' => s.push('\r'),
                b't' => s.push('\t'),
                b'u' => {
                    let hi = self.hex4(raw, i)?;
                    i += 4;
                    let c = if (0xD800..0xDC00).contains(&hi)
                        && raw.get(i..i + 2) == Some(b"\\u")
                        && let Ok(lo) = self.hex4(raw, i + 2)
                        && (0xDC00..0xE000).contains(&lo)
                    {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                    } else {
                        char::from_u32(hi)
                    };
                    // A lone surrogate (Python allows it) has no Rust `char`.
                    s.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                other => {
                    return Err(self.bad(format!("a bad escape `\\{}`", char::from(other))));
                }
            }
        }
        self.pos = end + 1;
        self.arena.push(Node::Str(s)).map_err(|r| self.refused(r))
    }

    fn hex4(&self, raw: &[u8], at: usize) -> Result<u32> {
        raw.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.bad("a bad `\\u` escape"))
    }
}

/// A decimal integer as little-endian two's complement bytes (how pickle's LONG1 carries an
/// integer beyond 64 bits, and how [`Node::BigInt`] holds it).
fn big_int(digits: &[u8], negative: bool) -> Vec<u8> {
    let mut mag: Vec<u8> = vec![0];
    for &d in digits {
        let mut carry = u32::from(d - b'0');
        for b in mag.iter_mut() {
            let v = u32::from(*b) * 10 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push(carry as u8);
            carry >>= 8;
        }
    }
    while mag.len() > 1 && mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.last().is_some_and(|&b| b >= 0x80) {
        mag.push(0);
    }
    if negative {
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = u16::from(!*b) + carry;
            *b = v as u8;
            carry = v >> 8;
        }
    }
    mag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;

    fn parse_str(text: &str) -> std::result::Result<(crate::Pickle, Value), String> {
        let budget = Budget::new(1 << 20);
        let mut arena = Arena::new(&budget, 1000);
        match parse(text.as_bytes(), &mut arena) {
            Ok(v) => Ok((arena.pk, v)),
            Err(JsonError::Bad { offset, message }) => Err(format!("{offset}: {message}")),
            Err(JsonError::Refused { offset, .. }) => Err(format!("{offset}: refused")),
        }
    }

    #[test]
    fn python_json_reads_back() {
        let (pk, v) = parse_str(
            r#" {"a": [1, -2.5e3, true, null, NaN, -Infinity], "b\u00e9\ud83d\ude00": "x\"\n"} "#,
        )
        .unwrap();
        let a = pk.dict_get(v, "a").unwrap();
        let items = pk.as_seq(a).unwrap();
        assert_eq!(items[0], Value::Int(1));
        assert_eq!(items[1], Value::Float(-2500.0));
        assert_eq!(items[2], Value::Bool(true));
        assert_eq!(items[3], Value::None);
        assert!(matches!(items[4], Value::Float(f) if f.is_nan()));
        assert_eq!(items[5], Value::Float(f64::NEG_INFINITY));
        assert_eq!(pk.as_str(pk.dict_get(v, "bé😀").unwrap()), Some("x\"\n"));
    }

    #[test]
    fn big_integers_are_twos_complement() {
        assert_eq!(big_int(b"128", false), vec![0x80, 0x00]);
        assert_eq!(big_int(b"128", true), vec![0x80, 0xff]);
        assert_eq!(
            big_int(b"18446744073709551616", false),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        let (pk, v) = parse_str("-9223372036854775809").unwrap();
        match pk.get(v) {
            Some(Node::BigInt(b)) => {
                assert_eq!(b, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_text_is_refused_with_the_offset() {
        for (text, want) in [
            ("[1, 2", "ends inside"),
            ("[1 2]", "expected `,`"),
            ("{\"a\": 1, \"a\": 2}", "appears twice"),
            ("01", "malformed number"),
            ("\"a\u{1}\"", "control character"),
            ("[1] x", "extra data"),
            ("{1: 2}", "string key"),
            ("\"\\q\"", "bad escape"),
        ] {
            let err = parse_str(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(parse_str(&deep).unwrap_err().contains("nested more than"));
    }
}
