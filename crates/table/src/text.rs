//! A text column as Parquet readers hand it over, plain or dictionary-encoded, read without a
//! string per row.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;

/// A text column, plain or dictionary-encoded (as Parquet text is read either way): a row's
/// `key` is its dictionary key (or its row), and `value` the text of a key — no string is
/// built per row.
pub enum Text<'a> {
    /// Plain text: a row's key is its row.
    Plain(&'a arrow_array::StringArray),
    /// Dictionary keys, the dictionary's text, and the dictionary itself.
    Dict(
        &'a arrow_array::PrimitiveArray<Int32Type>,
        &'a arrow_array::StringArray,
        &'a arrow_array::ArrayRef,
    ),
}

impl<'a> Text<'a> {
    /// The column as text, if it is.
    pub fn of(a: &'a arrow_array::ArrayRef) -> Option<Text<'a>> {
        if let Some(s) = a.as_string_opt::<i32>() {
            return Some(Text::Plain(s));
        }
        let d = a.as_dictionary_opt::<Int32Type>()?;
        Some(Text::Dict(
            d.keys(),
            d.values().as_string_opt::<i32>()?,
            d.values(),
        ))
    }

    /// A row's key (`None` for a null).
    pub fn key(&self, i: usize) -> Option<u32> {
        match self {
            Text::Plain(s) => s.is_valid(i).then_some(i as u32),
            Text::Dict(k, _, _) => k.is_valid(i).then(|| k.value(i) as u32),
        }
    }

    /// The text of a key.
    pub fn value(&self, key: u32) -> &'a str {
        match self {
            Text::Plain(s) => s.value(key as usize),
            Text::Dict(_, v, _) => v.value(key as usize),
        }
    }
}

/// Whether a type holds text: strings of any width, or a dictionary of them.
pub fn is_text(t: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType;
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// A text column of any shape (large strings, string views, dictionaries: what pandas 3 and
/// Polars write) as plain `Utf8`, for readers that parse each row's text; any other column is
/// returned as it is.
pub fn plain_text(a: &arrow_array::ArrayRef) -> crate::Result<arrow_array::ArrayRef> {
    use arrow_schema::DataType;
    Ok(match a.data_type() {
        DataType::Utf8 => a.clone(),
        t if is_text(t) => arrow_cast::cast(a, &DataType::Utf8)?,
        _ => a.clone(),
    })
}

/// A text column in the two shapes the readers here work with: `Utf8`, or a dictionary of
/// `Int32` keys over `Utf8`. Large strings and string views (what pandas 3 and Polars write),
/// and dictionaries of other key or value types, are cast to them; any other column is
/// returned as it is.
pub fn normalize_text(a: &arrow_array::ArrayRef) -> crate::Result<arrow_array::ArrayRef> {
    use arrow_schema::DataType;
    Ok(match a.data_type() {
        DataType::LargeUtf8 | DataType::Utf8View => arrow_cast::cast(a, &DataType::Utf8)?,
        DataType::Dictionary(k, v)
            if is_text(v) && !(**k == DataType::Int32 && **v == DataType::Utf8) =>
        {
            arrow_cast::cast(
                a,
                &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            )?
        }
        _ => a.clone(),
    })
}
