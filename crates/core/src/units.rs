//! Quantities users write as a whole number and a unit: sizes here, durations in
//! [`crate::time::parse_duration`]; both split the text the same way.

/// A whole number and what follows it: `("512", "MiB")` from `512MiB`; `what` names the kind of
/// quantity and `example` shows one, for the error.
pub(crate) fn number_and_unit<'a>(
    text: &'a str,
    what: &str,
    example: &str,
) -> Result<(u64, &'a str), String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n = n
        .parse()
        .map_err(|_| format!("`{t}` is not a {what} (like {example})"))?;
    Ok((n, unit.trim()))
}

/// A size in bytes: a whole number with an optional binary unit (`KiB`, `MiB`, `GiB`).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let (n, unit) = number_and_unit(text, "size", "512MiB, 1GiB or 1073741824")?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("`{text}`: unknown unit `{other}` (KiB, MiB, GiB)")),
    };
    n.checked_mul(scale)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_a_number_and_a_binary_unit() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 512MiB "), Ok(512 << 20));
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert!(
            parse_size("2 GB")
                .unwrap_err()
                .contains("unknown unit `GB`")
        );
        assert!(parse_size("big").unwrap_err().contains("is not a size"));
        assert!(
            parse_size("99999999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
