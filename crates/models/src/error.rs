//! Errors of model loading and scoring: each names the estimator, attribute or value at fault.

/// What went wrong loading or scoring a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a pickle, joblib or skops file this reader accepts (refused global or
    /// type, corrupt, ...).
    #[error(transparent)]
    Pickle(#[from] fleetscore_pickle::Error),
    /// The file holds something other than a supported estimator.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// An estimator lacks an attribute scoring needs (not fitted, or an unexpected version).
    #[error("{class} has no `{attr}` (is it fitted?)")]
    MissingAttr {
        /// Estimator class.
        class: String,
        /// Attribute name.
        attr: String,
    },
    /// An attribute has the wrong type or shape.
    #[error("{class}.{attr}: expected {expected}, found {found}")]
    BadAttr {
        /// Estimator class.
        class: String,
        /// Attribute name.
        attr: String,
        /// What scoring needs.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// Building the estimator from the file would allocate more than the load's memory
    /// budget (the arrays it copies count, however often the file shares them).
    #[error(
        "limit exceeded: building {class} needs more than {limit} bytes of memory (the per-file budget, Limits::max_memory_bytes); stopped at its `{attr}`"
    )]
    Memory {
        /// The budget, in bytes.
        limit: usize,
        /// Estimator class.
        class: String,
        /// The attribute being copied.
        attr: String,
    },
    /// The input has a different number of features than the model was fitted with.
    #[error("the model expects {expected} features, the input has {found}")]
    FeatureCount {
        /// Features the model was fitted with.
        expected: usize,
        /// Features given.
        found: usize,
    },
    /// The input buffer's length is not a multiple of the number of features.
    #[error("input of {len} values is not a whole number of rows of {n_features} features")]
    Shape {
        /// Values given.
        len: usize,
        /// Features per row.
        n_features: usize,
    },
    /// NaN or infinity in the input (scikit-learn refuses them too).
    #[error("row {row}, feature {feature}: value {value} is not finite")]
    NonFinite {
        /// Zero-based row within the batch.
        row: usize,
        /// Zero-based feature index.
        feature: usize,
        /// The value.
        value: f64,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
