//! The Thrift compact protocol writer, and the file's metadata (`FileMetaData`: schema, the
//! row groups' column chunks, column orders) written with it.

use super::encoding::{uleb, zigzag};
use super::page::Chunk;

// Parquet enum values (parquet.thrift).
const CONVERTED_UTF8: i32 = 0;
const CONVERTED_DATE: i32 = 6;
const CONVERTED_TIMESTAMP_MILLIS: i32 = 9;
const CONVERTED_TIMESTAMP_MICROS: i32 = 10;
const CONVERTED_INT_8: i32 = 15;
const REQUIRED: i32 = 0;
const OPTIONAL: i32 = 1;
const CODEC_UNCOMPRESSED: i32 = 0;

/// A leaf column as the schema declares it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Leaf<'a> {
    pub(super) name: &'a str,
    /// Its physical type (`INT32`, `DOUBLE`, ...).
    pub(super) physical: i32,
    /// Whether it may hold nulls (and its pages carry definition levels).
    pub(super) optional: bool,
    pub(super) logical: Logical,
}

/// The logical type annotating a leaf's physical type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Logical {
    /// None: the physical type says it all.
    Plain,
    /// An integer of `bits` bits.
    Int { bits: i8, signed: bool },
    /// A time since the epoch in `unit`s (1: milli-, 2: micro-, 3: nanoseconds), adjusted to
    /// UTC or local.
    Timestamp { unit: i16, utc: bool },
    /// Days since the epoch.
    Date,
    /// UTF-8 text.
    String,
}

/// A row group: its rows and one chunk per leaf, in schema order.
pub(super) struct RowGroup {
    pub(super) rows: usize,
    pub(super) chunks: Vec<Chunk>,
}

pub(super) fn file_metadata(
    out: &mut Vec<u8>,
    leaves: &[Leaf<'_>],
    groups: &[RowGroup],
    key_value: &[(&str, &str)],
) {
    let mut t = Thrift::new(out);
    t.i32(1, 1);
    // The schema: a root group, then one leaf per column.
    t.list_begin(2, leaves.len() + 1, T_STRUCT);
    t.struct_begin();
    t.binary(4, b"schema");
    t.i32(5, leaves.len() as i32);
    t.stop();
    for leaf in leaves {
        t.struct_begin();
        t.i32(1, leaf.physical);
        t.i32(3, if leaf.optional { OPTIONAL } else { REQUIRED });
        t.binary(4, leaf.name.as_bytes());
        logical_type(&mut t, leaf.logical);
        t.stop();
    }
    let rows: usize = groups.iter().map(|g| g.rows).sum();
    t.i64(3, rows as i64);
    t.list_begin(4, groups.len(), T_STRUCT);
    for (ordinal, group) in groups.iter().enumerate() {
        t.struct_begin();
        t.list_begin(1, leaves.len(), T_STRUCT);
        for (leaf, chunk) in leaves.iter().zip(&group.chunks) {
            column_chunk(&mut t, leaf, chunk);
        }
        let total: i64 = group.chunks.iter().map(|c| c.size).sum();
        t.i64(2, total);
        t.i64(3, group.rows as i64);
        let first = group.chunks.first();
        t.i64(
            5,
            first.map_or(4, |c| c.dictionary_offset.unwrap_or(c.data_offset)),
        );
        t.i64(6, total);
        t.i16(7, ordinal as i16);
        t.stop();
    }
    if !key_value.is_empty() {
        t.list_begin(5, key_value.len(), T_STRUCT);
        for (key, value) in key_value {
            t.struct_begin();
            t.binary(1, key.as_bytes());
            t.binary(2, value.as_bytes());
            t.stop();
        }
    }
    t.binary(
        6,
        concat!("fleetscore version ", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    // Min/max follow each type's own order.
    t.list_begin(7, leaves.len(), T_STRUCT);
    for _ in leaves {
        t.struct_begin();
        t.begin(1);
        t.end();
        t.stop();
    }
    t.stop();
}

/// A schema element's converted type (the legacy annotation, where there is one) and logical
/// type.
fn logical_type(t: &mut Thrift<'_>, logical: Logical) {
    match logical {
        Logical::Plain => {}
        Logical::Int { bits, signed } => {
            if bits == 8 && signed {
                t.i32(6, CONVERTED_INT_8);
            }
            t.begin(10);
            t.begin(10);
            t.i8(1, bits);
            t.bool(2, signed);
            t.end();
            t.end();
        }
        Logical::Timestamp { unit, utc } => {
            // The legacy annotations mean UTC-adjusted milli- or microseconds only.
            match (unit, utc) {
                (1, true) => t.i32(6, CONVERTED_TIMESTAMP_MILLIS),
                (2, true) => t.i32(6, CONVERTED_TIMESTAMP_MICROS),
                _ => {}
            }
            t.begin(10);
            t.begin(8);
            t.bool(1, utc);
            t.begin(2);
            t.begin(unit);
            t.end();
            t.end();
            t.end();
            t.end();
        }
        Logical::Date => {
            t.i32(6, CONVERTED_DATE);
            t.begin(10);
            t.begin(6);
            t.end();
            t.end();
        }
        Logical::String => {
            t.i32(6, CONVERTED_UTF8);
            t.begin(10);
            t.begin(1);
            t.end();
            t.end();
        }
    }
}

fn column_chunk(t: &mut Thrift<'_>, leaf: &Leaf<'_>, chunk: &Chunk) {
    t.struct_begin();
    t.i64(2, 0);
    t.begin(3);
    t.i32(1, leaf.physical);
    t.list_begin(2, chunk.encodings.len(), T_I32);
    for &e in &chunk.encodings {
        t.list_i32(e);
    }
    t.list_begin(3, 1, T_BINARY);
    t.list_binary(leaf.name.as_bytes());
    t.i32(4, CODEC_UNCOMPRESSED);
    t.i64(5, chunk.values);
    t.i64(6, chunk.size);
    t.i64(7, chunk.size);
    t.i64(9, chunk.data_offset);
    if let Some(d) = chunk.dictionary_offset {
        t.i64(11, d);
    }
    t.begin(12);
    t.i64(3, chunk.nulls);
    if let (Some(min), Some(max)) = (&chunk.min, &chunk.max) {
        t.binary(5, max);
        t.binary(6, min);
    }
    if let Some(n) = chunk.nan_count {
        t.i64(9, n);
    }
    t.end();
    t.end();
    t.stop();
}

/// Thrift compact protocol, just what the Parquet metadata needs: structs are written field by
/// field in increasing id order; `begin`/`end` open and close a nested struct field,
/// `struct_begin`/`stop` a struct that is a list element.
pub(super) struct Thrift<'a> {
    out: &'a mut Vec<u8>,
    last: Vec<i16>,
}

const T_BOOL_TRUE: u8 = 1;
const T_BOOL_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I16: u8 = 4;
const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_STRUCT: u8 = 12;

impl<'a> Thrift<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Thrift<'a> {
        Thrift { out, last: vec![0] }
    }

    fn field(&mut self, id: i16, kind: u8) {
        let last = self.last.last_mut().expect("inside a struct");
        let delta = id - *last;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | kind);
        } else {
            self.out.push(kind);
            uleb(self.out, zigzag(id as i64));
        }
        *last = id;
    }

    pub(super) fn bool(&mut self, id: i16, v: bool) {
        self.field(id, if v { T_BOOL_TRUE } else { T_BOOL_FALSE });
    }

    pub(super) fn i8(&mut self, id: i16, v: i8) {
        self.field(id, T_BYTE);
        self.out.push(v as u8);
    }

    pub(super) fn i16(&mut self, id: i16, v: i16) {
        self.field(id, T_I16);
        uleb(self.out, zigzag(v as i64));
    }

    pub(super) fn i32(&mut self, id: i16, v: i32) {
        self.field(id, T_I32);
        uleb(self.out, zigzag(v as i64));
    }

    pub(super) fn i64(&mut self, id: i16, v: i64) {
        self.field(id, T_I64);
        uleb(self.out, zigzag(v));
    }

    pub(super) fn binary(&mut self, id: i16, v: &[u8]) {
        self.field(id, T_BINARY);
        self.list_binary(v);
    }

    /// Opens a struct-valued field.
    pub(super) fn begin(&mut self, id: i16) {
        self.field(id, T_STRUCT);
        self.last.push(0);
    }

    /// Closes the struct opened by [`Thrift::begin`].
    pub(super) fn end(&mut self) {
        self.stop();
    }

    /// Opens a struct that is a list element.
    pub(super) fn struct_begin(&mut self) {
        self.last.push(0);
    }

    /// Ends the current struct.
    pub(super) fn stop(&mut self) {
        self.out.push(0);
        self.last.pop();
    }

    /// A list field of `len` elements of `kind`: structs (each written between
    /// `struct_begin` and `stop`), or scalars written with the `list_*` calls.
    pub(super) fn list_begin(&mut self, id: i16, len: usize, kind: u8) {
        self.field(id, T_LIST);
        if len < 15 {
            self.out.push(((len as u8) << 4) | kind);
        } else {
            self.out.push(0xf0 | kind);
            uleb(self.out, len as u64);
        }
    }

    pub(super) fn list_i32(&mut self, v: i32) {
        uleb(self.out, zigzag(v as i64));
    }

    pub(super) fn list_binary(&mut self, v: &[u8]) {
        uleb(self.out, v.len() as u64);
        self.out.extend_from_slice(v);
    }
}
