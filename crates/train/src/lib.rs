//! Fits the fleet's anomaly models natively, with the numbers scikit-learn gives: libsvm's
//! one-class SVM behind an optional scaler, and IsolationForest with numpy's `RandomState`
//! reproduced, so a seed gives scikit-learn's trees. Fitted models are written as pickles that
//! scikit-learn itself loads.
#![warn(missing_docs)]

mod error;
mod numeric;
mod ocsvm;
pub mod scale;
mod svm;

pub use error::{Error, Result};
pub use ocsvm::{FittedOcsvm, Gamma, Kernel, OcsvmParams, OneClassSvm, ScalerSpec, fit};

/// A fitted model, as scikit-learn would have pickled it, and what the fit measured.
#[derive(Debug, Clone)]
pub struct Trained {
    /// A pickle (protocol 4) that scikit-learn 1.x loads, and fleetscore scores.
    pub pickle: Vec<u8>,
    /// What the fit measured, by name (e.g. `n_support`, `iterations`, `train_outlier_fraction`).
    pub metrics: Vec<(&'static str, f64)>,
}
