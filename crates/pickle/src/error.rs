//! Errors of the pickle and skops readers: every one names the byte offset, zip member, schema
//! node or global that was wrong.

/// What went wrong while reading a pickle or joblib file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream references a global that is not on the allow-list. Nothing was built from it.
    #[error(
        "refused global `{module}.{name}` at byte {offset}: only allow-listed numpy and scikit-learn classes are loaded, nothing from the file is executed"
    )]
    Forbidden {
        /// Module part of the global, as written in the file.
        module: String,
        /// Name part of the global, as written in the file.
        name: String,
        /// Byte offset of the opcode that referenced it (in the decompressed stream).
        offset: usize,
    },
    /// The stream ended before an opcode or its argument was complete.
    #[error(
        "truncated pickle: {what} at byte {offset} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it started.
        offset: usize,
        /// How many bytes it needed.
        needed: usize,
        /// How many bytes were left.
        available: usize,
    },
    /// A byte that is no pickle opcode.
    #[error("corrupt pickle: unknown opcode 0x{opcode:02x} at byte {offset}")]
    UnknownOpcode {
        /// The byte.
        opcode: u8,
        /// Where it was.
        offset: usize,
    },
    /// The opcodes are valid but do not make sense together (wrong types, empty stack, ...).
    #[error("corrupt pickle at byte {offset}: {message}")]
    Malformed {
        /// Where the problem was noticed.
        offset: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// A valid pickle feature that this reader does not support (persistent ids, extension
    /// registry, out-of-band buffers, ...).
    #[error("unsupported pickle feature at byte {offset}: {what}")]
    Unsupported {
        /// Where it was.
        offset: usize,
        /// What it was.
        what: String,
    },
    /// A numpy array whose description does not match its data.
    #[error("bad numpy array at byte {offset}: {message}")]
    BadArray {
        /// Offset of the opcode that completed the array.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// A compressed joblib file that does not decompress.
    #[error("{codec} decompression failed: {message}")]
    Decompress {
        /// The compression format recognised from the file's magic bytes.
        codec: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Loading would allocate more than the per-load memory budget.
    #[error(
        "limit exceeded: loading needs more than {limit} bytes of memory (the per-file budget, Limits::max_memory_bytes); stopped at byte {offset}"
    )]
    Memory {
        /// The budget, in bytes.
        limit: usize,
        /// Offset of the opcode that would have passed it (in the decompressed stream).
        offset: usize,
    },
    /// A skops file (a zip archive of `schema.json` and `.npy` arrays) whose archive, schema or
    /// arrays are malformed, unsafe or not supported.
    #[error("bad skops file: {at}: {message}")]
    Skops {
        /// Where: a zip member, a byte of `schema.json`, or the path to a schema node
        /// (`model.estimators_[3].tree_`).
        at: String,
        /// What was wrong.
        message: String,
    },
    /// A skops schema names a type or function that is not on the allow-list, or a node kind
    /// that would call code. Nothing was built from it.
    #[error(
        "refused type `{name}` ({loader}) at {at}: only allow-listed numpy and scikit-learn classes are loaded, nothing from the file is executed"
    )]
    SkopsForbidden {
        /// `module.name` as the file spells it.
        name: String,
        /// The skops node kind (`__loader__`) that named it.
        loader: String,
        /// The path to the schema node.
        at: String,
    },
    /// Loading a skops file would allocate more than the per-load memory budget.
    #[error(
        "limit exceeded: loading needs more than {limit} bytes of memory (the per-file budget, Limits::max_memory_bytes); stopped at {at}"
    )]
    SkopsMemory {
        /// The budget, in bytes.
        limit: usize,
        /// Where: a zip member, a byte of `schema.json`, or the path to a schema node.
        at: String,
    },
    /// A file larger than the configured limits once decompressed, or with more objects than allowed.
    #[error("limit exceeded: {0}")]
    Limit(String),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
