//! Errors of fleet jobs. Task errors say whether a retry can help ([`Error::retry`]); retry
//! logic reads that, never the message.

/// What went wrong in a fleet job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (network, permissions, missing object).
    #[error(transparent)]
    Store(#[from] fleetscore_store::Error),
    /// A table could not be read or written.
    #[error(transparent)]
    Table(#[from] fleetscore_table::Error),
    /// A model could not be loaded or scored.
    #[error(transparent)]
    Model(#[from] fleetscore_models::Error),
    /// The coordinator database failed.
    #[error("coordinator database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The PostgreSQL coordinator failed (after reconnecting for a while, if the connection
    /// was lost).
    #[error("coordinator database (PostgreSQL): {0}")]
    Postgres(String),
    /// A stored record that does not parse.
    #[error("{what}: {message}")]
    Corrupt {
        /// The record.
        what: String,
        /// What was wrong.
        message: String,
    },
    /// A request that cannot be satisfied as asked (bad argument, unknown id, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RetryHint {
    /// A transient failure (I/O, network, a lost lease): try again.
    Retry,
    /// The input itself is bad (a corrupt file, a refused model): another attempt fails the same.
    DoNotRetry,
}

impl Error {
    /// Whether a retry can help with this error.
    pub fn retry(&self) -> RetryHint {
        match self {
            Error::Store(fleetscore_store::Error::NotFound(_)) => RetryHint::DoNotRetry,
            Error::Store(_) | Error::Db(_) | Error::Postgres(_) => RetryHint::Retry,
            Error::Table(fleetscore_table::Error::Io { .. }) => RetryHint::Retry,
            Error::Table(_) | Error::Model(_) | Error::Corrupt { .. } | Error::Invalid(_) => {
                RetryHint::DoNotRetry
            }
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
