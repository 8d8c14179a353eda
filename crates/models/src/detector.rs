//! The two extension points: a [`Transform`] (scalers, pipeline steps before the last) and a
//! [`Detector`] (the final anomaly estimator), both over row-major `f64` batches.

use std::fmt::Debug;

use crate::info::StepInfo;

/// A fitted transformer: rewrites a batch of rows in place.
pub trait Transform: Send + Sync + Debug {
    /// Features per row it expects (and produces).
    fn n_features(&self) -> usize;
    /// Transforms `x`, row-major with [`Transform::n_features`] columns, in place.
    fn transform(&self, x: &mut [f64]);
    /// Description for `models inspect`.
    fn info(&self) -> StepInfo;
    /// Bytes its parameters hold on the heap (what a cache of loaded models is sized by).
    fn heap_bytes(&self) -> usize;
}

/// How scikit-learn turns a decision value into `predict`'s +1 (inlier) / -1 (outlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieRule {
    /// libsvm: inlier when `decision > 0` (0 and NaN are outliers). OneClassSVM.
    PositiveIsInlier,
    /// `is_inlier[decision < 0] = -1`: 0 and NaN are inliers. IsolationForest, LocalOutlierFactor.
    NegativeIsOutlier,
    /// `decision >= 0` is an inlier: 0 is an inlier, NaN an outlier. EllipticEnvelope,
    /// SGDOneClassSVM.
    NonNegativeIsInlier,
}

impl TieRule {
    /// Whether `decision` is an inlier under this rule.
    #[inline]
    pub fn is_inlier(self, decision: f64) -> bool {
        match self {
            TieRule::PositiveIsInlier => decision > 0.0,
            TieRule::NegativeIsOutlier => decision >= 0.0 || decision.is_nan(),
            TieRule::NonNegativeIsInlier => decision >= 0.0,
        }
    }
}

/// A fitted anomaly detector: scores a batch of rows.
pub trait Detector: Send + Sync + Debug {
    /// Features per row it expects.
    fn n_features(&self) -> usize;
    /// scikit-learn's `decision_function` for every row of `x` (row-major) into `out`.
    fn decision_function(&self, x: &[f64], out: &mut [f64]);
    /// scikit-learn's `score_samples` for every row of `x` into `out`.
    fn score_samples(&self, x: &[f64], out: &mut [f64]);
    /// How `predict` reads a decision value.
    fn tie_rule(&self) -> TieRule;
    /// Description for `models inspect`.
    fn info(&self) -> StepInfo;
    /// Bytes its parameters hold on the heap (what a cache of loaded models is sized by).
    fn heap_bytes(&self) -> usize;
}

/// Heap bytes of a vector's buffer.
pub(crate) fn vec_bytes<T>(v: &[T]) -> usize {
    std::mem::size_of_val(v)
}
