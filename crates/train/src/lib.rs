//! Fits the fleet's anomaly models natively, with the numbers scikit-learn gives: libsvm's
//! one-class SVM behind an optional scaler, and IsolationForest with numpy's `RandomState`
//! reproduced, so a seed gives scikit-learn's trees. Fitted models are written as pickles that
//! scikit-learn itself loads.
#![warn(missing_docs)]

mod error;

pub use error::{Error, Result};
