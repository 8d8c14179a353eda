//! Errors of table reading and writing, naming the file, column and line.

use std::path::Path;

/// What went wrong with a table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The extension names no supported format.
    #[error("{0}: unknown table format (use a .csv or .parquet file)")]
    UnknownFormat(String),
    /// A CSV file that does not parse.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: String,
        /// What was wrong, with the line.
        message: String,
    },
    /// A Parquet file that does not read or write.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: String,
        /// The Parquet library's message.
        message: String,
    },
    /// A table the pipeline wrote whose columns are not what its schema says.
    #[error("{path}: {message}")]
    Schema {
        /// The file (or store key).
        path: String,
        /// Which column is missing or of the wrong type.
        message: String,
    },
    /// A column named in a request is not in the table.
    #[error("no column `{column}` (the table has: {available})")]
    NoColumn {
        /// The name asked for.
        column: String,
        /// The names the table has.
        available: String,
    },
    /// A feature value that is missing or not a number.
    #[error("{position}, column `{column}`: {message}")]
    BadValue {
        /// Where (line of a CSV, row of a Parquet file).
        position: String,
        /// The column.
        column: String,
        /// What was wrong.
        message: String,
    },
    /// An Arrow operation failed (a type the table cannot convert).
    #[error("{0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
