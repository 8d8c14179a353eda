//! Errors from fitting a model.

/// Why a model could not be fitted or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The training data cannot give a model (too few rows, a non-finite value).
    #[error("training data: {0}")]
    Data(String),
    /// A hyper-parameter is out of its range.
    #[error("parameter {name}: {reason}")]
    Param {
        /// The parameter, as scikit-learn names it.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
