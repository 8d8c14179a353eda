//! A safe reader for Python pickles, joblib files and skops files, as scikit-learn models are
//! saved.
//!
//! It rebuilds data (numbers, strings, containers, numpy arrays, dtypes and scalars) and inert
//! instances of the classes on an [`AllowList`]. It never executes code: REDUCE and NEWOBJ on an
//! allowed global are interpreted by a fixed set of constructors, and any other global is refused
//! at the opcode that names it, before anything is built from it. A skops file (a zip archive,
//! recognised by its magic bytes) is decoded into the same object graph under the same
//! allow-list and budget.
//!
//! ```
//! use fleetscore_pickle::{load, AllowList, Limits};
//! // pickle.dumps({'a': [1, 2.5]}, protocol=2)
//! let bytes = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00es.";
//! let file = load(bytes, &AllowList::new(), &Limits::default()).unwrap();
//! let list = file.pickle.dict_get(file.pickle.root(), "a").unwrap();
//! assert_eq!(file.pickle.as_seq(list).unwrap().len(), 2);
//! ```
#![warn(missing_docs)]

mod budget;
mod container;
mod error;
mod globals;
mod numpy;
mod skops;
mod unpickler;
mod value;
pub mod write;

pub use budget::{Budget, OverBudget};
pub use container::{Compression, compress, decompress, detect};
pub use error::{Error, Result};
pub use globals::AllowList;
pub use numpy::{ArrayData, DType, DTypeKind, Field, NdArray};
pub use skops::Skops;
pub use unpickler::{DEFAULT_MAX_MEMORY_BYTES, Limits, unpickle};
pub use value::{Global, Node, NodeId, Object, Pickle, Value};

/// A loaded file: its object graph and how it was stored.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The object graph.
    pub pickle: Pickle,
    /// The compression around the pickle stream.
    pub compression: Compression,
    /// Whether the stream carried joblib's inline arrays (written by `joblib.dump`).
    pub joblib: bool,
    /// Set when the file was a skops archive (`skops.io.dump`) rather than a pickle stream; then
    /// `compression` is `None` and the graph's `protocol` 0.
    pub skops: Option<Skops>,
}

impl Loaded {
    /// A human-readable description of the format, e.g. `joblib (zlib), protocol 4` or
    /// `skops (deflate), protocol 2`.
    pub fn format(&self) -> String {
        if let Some(s) = &self.skops {
            return match s.compression.as_slice() {
                [] => format!("skops, protocol {}", s.protocol),
                c => format!("skops ({}), protocol {}", c.join(", "), s.protocol),
            };
        }
        let outer = match (self.joblib, self.compression) {
            (true, Compression::None) => "joblib".to_string(),
            (true, c) => format!("joblib ({})", c.name()),
            (false, Compression::None) => "pickle".to_string(),
            (false, c) => format!("pickle ({})", c.name()),
        };
        format!("{outer}, protocol {}", self.pickle.protocol)
    }
}

/// Loads a pickle, joblib or skops file's bytes: a zip archive is read as a skops file;
/// anything else has its compression detected and undone, then is unpickled; all within a
/// budget of [`Limits::max_memory_bytes`].
pub fn load(bytes: &[u8], allow: &AllowList, limits: &Limits) -> Result<Loaded> {
    load_within(bytes, allow, limits, &Budget::new(limits.max_memory_bytes))
}

/// Like [`load`], charging `budget`, which the caller goes on charging for what it builds from
/// the loaded values (so one file has one budget, whoever allocates).
pub fn load_within(
    bytes: &[u8],
    allow: &AllowList,
    limits: &Limits,
    budget: &Budget,
) -> Result<Loaded> {
    if skops::is_zip(bytes) {
        let (pickle, skops) = skops::load(bytes, allow, limits, budget)?;
        return Ok(Loaded {
            pickle,
            compression: Compression::None,
            joblib: false,
            skops: Some(skops),
        });
    }
    let compression = detect(bytes)?;
    let (pickle, joblib) = if compression == Compression::None {
        unpickler::unpickle_detect_joblib(bytes, allow, limits, budget)?
    } else {
        // The decompressed stream is charged too: it is held while the machine runs.
        let most = limits.max_decompressed_bytes.min(budget.remaining());
        let data = decompress(bytes, compression, most).map_err(|e| match e {
            Error::Limit(_) if most < limits.max_decompressed_bytes => Error::Memory {
                limit: budget.limit(),
                offset: 0,
            },
            other => other,
        })?;
        budget.charge(data.len()).map_err(|e| Error::Memory {
            limit: e.limit,
            offset: 0,
        })?;
        unpickler::unpickle_detect_joblib(&data, allow, limits, budget)?
    };
    Ok(Loaded {
        pickle,
        compression,
        joblib,
        skops: None,
    })
}
