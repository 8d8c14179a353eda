//! Decoders for opcode arguments that are more than a fixed-size number: LONG1/LONG4's
//! two's complement bytes and protocol 0's escaped text lines.

/// Little-endian two's complement, if it fits in i64.
pub(super) fn decode_long(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if bytes.len() > 8 {
        // Longer encodings fit only if the extra bytes are sign extension.
        let (low, high) = bytes.split_at(8);
        if high.iter().any(|&b| b != fill) || ((low[7] & 0x80 != 0) != negative) {
            return None;
        }
        return Some(i64::from_le_bytes(low.try_into().expect("8 bytes")));
    }
    let mut buf = [fill; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(buf))
}

/// Protocol 0's `raw-unicode-escape`: bytes are Latin-1 characters, except `\uXXXX` and
/// `\UXXXXXXXX`, which are escapes (Python's pickler escapes every backslash, NUL, newline,
/// carriage return and `\x1a` this way, so the line never holds them raw).
pub(super) fn decode_raw_unicode_escape(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' && matches!(line.get(i + 1), Some(b'u') | Some(b'U')) {
            let width = if line[i + 1] == b'u' { 4 } else { 8 };
            let escaped = line
                .get(i + 2..i + 2 + width)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32);
            if let Some(ch) = escaped {
                out.push(ch);
                i += 2 + width;
                continue;
            }
        }
        out.push(char::from(b));
        i += 1;
    }
    out
}

/// Protocol 0's STRING argument: a quoted Python literal with backslash escapes.
pub(super) fn decode_quoted_string(line: &str) -> Option<String> {
    let q = line.chars().next()?;
    if !(q == '\'' || q == '"') || !line.ends_with(q) || line.len() < 2 {
        return None;
    }
    let inner = &line[1..line.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_decode_with_sign() {
        assert_eq!(decode_long(&[0xff]), Some(-1));
        assert_eq!(decode_long(&[0x00, 0x01]), Some(256));
        assert_eq!(decode_long(&[0xff; 9]), Some(-1));
        assert_eq!(decode_long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn protocol_0_strings_decode() {
        assert_eq!(decode_quoted_string("'a\\x41\\n'").unwrap(), "aA\n");
        assert_eq!(decode_raw_unicode_escape(b"caf\\u00e9"), "café");
        // Latin-1 bytes stand for themselves (Python writes é as the byte 0xe9).
        assert_eq!(
            decode_raw_unicode_escape(b"caf\xe9 \\u005c\\U0001f600"),
            "café \\😀"
        );
    }
}
