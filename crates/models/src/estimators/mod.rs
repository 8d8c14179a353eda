//! One module per scikit-learn estimator.

pub mod elliptic;
pub mod iforest;
pub mod lof;
pub mod ocsvm;
pub mod scalers;
pub mod sgd_ocsvm;
