//! Which classes a model file may contain, and how each becomes a [`Transform`] or [`Detector`].
//! This is the loader's whole allow-list: a class not named here is refused when the file names
//! it.

use std::sync::OnceLock;

use fleetscore_pickle::AllowList;

use crate::detector::{Detector, Transform};
use crate::error::{Error, Result};
use crate::estimators::{elliptic, iforest, lof, ocsvm, scalers, sgd_ocsvm};
use crate::reader::Obj;

/// Canonical (scikit-learn 1.x) module and class names of everything a supported model holds.
const CLASSES: &[(&str, &str)] = &[
    ("sklearn.pipeline", "Pipeline"),
    ("sklearn.preprocessing._data", "StandardScaler"),
    ("sklearn.preprocessing._data", "MinMaxScaler"),
    ("sklearn.preprocessing._data", "RobustScaler"),
    ("sklearn.preprocessing._data", "MaxAbsScaler"),
    ("sklearn.svm._classes", "OneClassSVM"),
    (
        "sklearn.linear_model._stochastic_gradient",
        "SGDOneClassSVM",
    ),
    ("sklearn.linear_model._sgd_fast", "Hinge"),
    ("sklearn.ensemble._iforest", "IsolationForest"),
    ("sklearn.tree._classes", "ExtraTreeRegressor"),
    ("sklearn.tree._tree", "Tree"),
    ("sklearn.covariance._elliptic_envelope", "EllipticEnvelope"),
    ("sklearn.neighbors._lof", "LocalOutlierFactor"),
    ("sklearn.neighbors._kd_tree", "KDTree"),
    ("sklearn.neighbors._ball_tree", "BallTree"),
    ("sklearn.metrics._dist_metrics", "EuclideanDistance"),
    ("sklearn.metrics._dist_metrics", "EuclideanDistance64"),
    ("sklearn.metrics._dist_metrics", "ManhattanDistance"),
    ("sklearn.metrics._dist_metrics", "ManhattanDistance64"),
    ("sklearn.metrics._dist_metrics", "ChebyshevDistance"),
    ("sklearn.metrics._dist_metrics", "ChebyshevDistance64"),
    ("sklearn.metrics._dist_metrics", "MinkowskiDistance"),
    ("sklearn.metrics._dist_metrics", "MinkowskiDistance64"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._mt19937", "MT19937"),
];

/// Functions that only create an instance of their first argument.
const CONSTRUCTORS: &[(&str, &str)] = &[
    ("sklearn.neighbors._kd_tree", "newObj"),
    ("sklearn.neighbors._ball_tree", "newObj"),
    ("sklearn.neighbors._binary_tree", "newObj"),
    ("sklearn.metrics._dist_metrics", "newObj"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
];

/// Module paths of older scikit-learn versions (0.19 to 0.23), mapped to today's.
const MODULE_ALIASES: &[(&str, &str)] = &[
    ("sklearn.preprocessing.data", "sklearn.preprocessing._data"),
    ("sklearn.svm.classes", "sklearn.svm._classes"),
    ("sklearn.ensemble.iforest", "sklearn.ensemble._iforest"),
    ("sklearn.tree.tree", "sklearn.tree._classes"),
    (
        "sklearn.covariance.elliptic_envelope",
        "sklearn.covariance._elliptic_envelope",
    ),
    ("sklearn.neighbors.lof", "sklearn.neighbors._lof"),
    ("sklearn.neighbors.kd_tree", "sklearn.neighbors._kd_tree"),
    (
        "sklearn.neighbors.ball_tree",
        "sklearn.neighbors._ball_tree",
    ),
    (
        "sklearn.neighbors.dist_metrics",
        "sklearn.metrics._dist_metrics",
    ),
    (
        "sklearn.neighbors._dist_metrics",
        "sklearn.metrics._dist_metrics",
    ),
    (
        "sklearn.linear_model.stochastic_gradient",
        "sklearn.linear_model._stochastic_gradient",
    ),
    (
        "sklearn.linear_model.sgd_fast",
        "sklearn.linear_model._sgd_fast",
    ),
];

/// The allow-list every model file is loaded with.
pub(crate) fn allow_list() -> &'static AllowList {
    static ALLOW: OnceLock<AllowList> = OnceLock::new();
    ALLOW.get_or_init(|| {
        let mut allow = AllowList::new();
        for (m, n) in CLASSES {
            allow = allow.class(m, n);
        }
        for (m, n) in CONSTRUCTORS {
            allow = allow.constructor(m, n);
        }
        for (old, new) in MODULE_ALIASES {
            allow = allow.module_alias(old, new);
        }
        allow
    })
}

/// A pipeline step turned into something that scores.
pub(crate) enum Built {
    Transform(Box<dyn Transform>),
    Detector(Box<dyn Detector>),
}

/// Builds a transformer or detector from an estimator object.
pub(crate) fn build(obj: &Obj<'_>) -> Result<Built> {
    Ok(match obj.class {
        "StandardScaler" => Built::Transform(Box::new(scalers::ShiftDivide::standard(obj)?)),
        "RobustScaler" => Built::Transform(Box::new(scalers::ShiftDivide::robust(obj)?)),
        "MaxAbsScaler" => Built::Transform(Box::new(scalers::ShiftDivide::max_abs(obj)?)),
        "MinMaxScaler" => Built::Transform(Box::new(scalers::MinMax::new(obj)?)),
        "OneClassSVM" => Built::Detector(Box::new(ocsvm::OneClassSvm::new(obj)?)),
        "SGDOneClassSVM" => Built::Detector(Box::new(sgd_ocsvm::SgdOneClassSvm::new(obj)?)),
        "IsolationForest" => Built::Detector(Box::new(iforest::IsolationForest::new(obj)?)),
        "EllipticEnvelope" => Built::Detector(Box::new(elliptic::EllipticEnvelope::new(obj)?)),
        "LocalOutlierFactor" => Built::Detector(Box::new(lof::LocalOutlierFactor::new(obj)?)),
        other => {
            return Err(Error::Unsupported(format!(
                "{other} is not a scaler or anomaly detector (supported: StandardScaler, MinMaxScaler, RobustScaler, MaxAbsScaler, OneClassSVM, SGDOneClassSVM, IsolationForest, EllipticEnvelope, LocalOutlierFactor, and Pipelines of them)"
            )));
        }
    })
}
