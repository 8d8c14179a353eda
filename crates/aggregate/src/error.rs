//! Errors of the aggregation.

/// What went wrong, naming the setting, record, key or file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range or does not fit the saved state.
    #[error("aggregate configuration: {0}")]
    Config(String),
    /// A log record is not a reading.
    #[error("partition {partition}, offset {offset}: not a reading: {reason}")]
    Record {
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// Saved state that cannot be read back.
    #[error("corrupt {0}")]
    Corrupt(String),
    /// The log.
    #[error(transparent)]
    Log(#[from] fleetscore_log::Error),
    /// The store.
    #[error(transparent)]
    Store(#[from] fleetscore_store::Error),
    /// A table file.
    #[error(transparent)]
    Table(#[from] fleetscore_table::Error),
    /// Anything else about an input, named.
    #[error("{0}")]
    Invalid(String),
}

/// Results of the aggregation.
pub type Result<T> = std::result::Result<T, Error>;
