//! Fits the fleet's anomaly models natively, with the numbers scikit-learn gives: libsvm's
//! one-class SVM behind an optional scaler, and IsolationForest with numpy's `RandomState`
//! reproduced, so a seed gives scikit-learn's trees. Fitted models are written as pickles that
//! scikit-learn itself loads.
//!
//! ```
//! use fleetscore_train::{OcsvmParams, ScalerSpec, fit_ocsvm};
//! // Six rows of two features, row-major.
//! let x = [0.0, 1.0, 0.5, 1.2, 0.2, 0.8, 0.4, 1.1, 0.3, 0.9, 5.0, 5.0];
//! let params = OcsvmParams { nu: 0.2, ..OcsvmParams::default() };
//! let trained = fit_ocsvm(&x, 2, ScalerSpec::Standard { with_mean: true, with_std: true }, &params)
//!     .unwrap();
//! let model = fleetscore_models::Model::from_bytes(&trained.pickle).unwrap();
//! assert_eq!(model.info().estimator, "Pipeline(StandardScaler, OneClassSVM)");
//! ```
#![warn(missing_docs)]

mod error;
pub mod iforest;
mod numeric;
mod ocsvm;
mod pickle;
pub mod rng;
pub mod scale;
mod svm;
pub mod tree;

pub use error::{Error, Result};
pub use iforest::{Contamination, IforestParams, MaxFeatures, MaxSamples, fit_iforest};
pub use ocsvm::{FittedOcsvm, Gamma, Kernel, OcsvmParams, OneClassSvm, ScalerSpec};

/// A fitted model, as scikit-learn would have pickled it, and what the fit measured.
#[derive(Debug, Clone)]
pub struct Trained {
    /// A pickle (protocol 4) that scikit-learn 1.x loads, and fleetscore scores.
    pub pickle: Vec<u8>,
    /// What the fit measured, by name (e.g. `n_support`, `iterations`, `train_outlier_fraction`).
    pub metrics: Vec<(&'static str, f64)>,
}

impl FittedOcsvm {
    /// The pickle scikit-learn 1.9.1 would write for this pipeline: a `Pipeline` named as
    /// `make_pipeline` names its steps when there is a scaler, else the bare `OneClassSVM`.
    pub fn to_pickle(&self) -> Vec<u8> {
        pickle::pipeline(self)
    }
}

/// Fits `make_pipeline(scaler, OneClassSVM(**params))` on `x` (row-major, `n_features` values
/// per row) as scikit-learn 1.9.1 does, and pickles it.
///
/// Errors: [`Error::Param`] for a parameter scikit-learn would refuse, [`Error::Data`] for no
/// rows or features, a non-finite value, or a fit whose coefficients are not finite.
pub fn fit_ocsvm(
    x: &[f64],
    n_features: usize,
    scaler: ScalerSpec,
    params: &OcsvmParams,
) -> Result<Trained> {
    let fitted = FittedOcsvm::fit(x, n_features, scaler, params)?;
    Ok(Trained {
        pickle: fitted.to_pickle(),
        metrics: fitted.metrics(),
    })
}
