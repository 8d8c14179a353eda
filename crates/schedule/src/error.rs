//! Errors of schedules and the scheduler.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A definition or request that cannot be satisfied as asked.
    #[error("{0}")]
    Invalid(String),
    /// The coordinator, the store or a run failed.
    #[error(transparent)]
    Jobs(#[from] fleetscore_jobs::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] fleetscore_store::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
