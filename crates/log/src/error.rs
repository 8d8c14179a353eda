//! What can go wrong with the log, naming the file and position.

use std::path::Path;

/// A log error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's message.
        message: String,
        /// The kind of failure.
        kind: std::io::ErrorKind,
    },
    /// A file holds something that is not what the log wrote.
    #[error("{path} at byte {position}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// Byte offset of the bad data.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// Too many bytes are waiting to become durable: try again shortly.
    #[error("overloaded: {pending} bytes are waiting for disk (limit {limit}); retry shortly")]
    Overloaded {
        /// Bytes accepted and not yet durable.
        pending: usize,
        /// The limit.
        limit: usize,
    },
    /// The log is shutting down.
    #[error("the log is closed")]
    Closed,
    /// A read below the first offset the partition still holds.
    #[error(
        "partition {partition}: offset {requested} is no longer held (retention); the first held is {start}"
    )]
    OffsetOutOfRange {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        requested: u64,
        /// The first offset held.
        start: u64,
    },
    /// A partition number past the last partition.
    #[error("no partition {partition} (the log has {partitions})")]
    NoPartition {
        /// The partition asked for.
        partition: u32,
        /// How many there are.
        partitions: u32,
    },
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
}

/// A log result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
            kind: e.kind(),
        }
    }
}
