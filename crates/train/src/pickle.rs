//! Fitted estimators as scikit-learn 1.9.1 pickles them: each object's `__getstate__`, key for
//! key, with the same Python and numpy types, so that `pickle.load` gives an estimator that
//! `decision_function`, `predict` and `score_samples` work on.

use fleetscore_pickle::write::{Py, dumps};

use crate::ocsvm::{FittedOcsvm, Gamma, OneClassSvm};
use crate::scale::{FittedScaler, MinMaxScaler, StandardScaler};

/// The scikit-learn version whose pickles these are.
pub(crate) const SKLEARN_VERSION: &str = "1.9.1";

/// A parameter scikit-learn would hold as a Python int when given its default (an integral
/// value such as `cache_size=200` or `feature_range=(0, 1)`), else as a float.
fn number(v: f64) -> Py {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Py::Int(v as i64)
    } else {
        Py::Float(v)
    }
}

fn version() -> (&'static str, Py) {
    ("_sklearn_version", Py::str(SKLEARN_VERSION))
}

fn standard_scaler(s: &StandardScaler) -> Py {
    let n = s.n_features_in;
    let vector = |v: &Option<Vec<f64>>| match v {
        Some(v) => Py::array_f64(&[n], v),
        None => Py::None,
    };
    // scikit-learn's running count is a float64 when it updated a mean, an int64 otherwise.
    let seen = if s.mean.is_some() {
        Py::float64(s.n_samples_seen as f64)
    } else {
        Py::int64(s.n_samples_seen as i64)
    };
    Py::object(
        "sklearn.preprocessing._data",
        "StandardScaler",
        vec![
            ("with_mean", Py::Bool(s.with_mean)),
            ("with_std", Py::Bool(s.with_std)),
            ("copy", Py::Bool(true)),
            ("n_features_in_", Py::Int(n as i64)),
            ("n_samples_seen_", seen),
            ("mean_", vector(&s.mean)),
            ("var_", vector(&s.var)),
            ("scale_", vector(&s.scale)),
            version(),
        ],
    )
}

fn min_max_scaler(s: &MinMaxScaler) -> Py {
    let n = s.scale.len();
    Py::object(
        "sklearn.preprocessing._data",
        "MinMaxScaler",
        vec![
            (
                "feature_range",
                Py::Tuple(vec![number(s.feature_range.0), number(s.feature_range.1)]),
            ),
            ("copy", Py::Bool(true)),
            ("clip", Py::Bool(false)),
            ("n_features_in_", Py::Int(n as i64)),
            ("n_samples_seen_", Py::Int(s.n_samples_seen as i64)),
            ("scale_", Py::array_f64(&[n], &s.scale)),
            ("min_", Py::array_f64(&[n], &s.min)),
            ("data_min_", Py::array_f64(&[n], &s.data_min)),
            ("data_max_", Py::array_f64(&[n], &s.data_max)),
            ("data_range_", Py::array_f64(&[n], &s.data_range)),
            version(),
        ],
    )
}

fn one_class_svm(m: &OneClassSvm) -> Py {
    let p = &m.params;
    let n_sv = m.support.len();
    let support: Vec<i32> = m.support.iter().map(|&i| i as i32).collect();
    let gamma_param = match p.gamma {
        Gamma::Scale => Py::str("scale"),
        Gamma::Auto => Py::str("auto"),
        Gamma::Value(g) => Py::Float(g),
    };
    // `1.0 / (n_features * X.var())` is a numpy float; 'auto', a number, or the fallback for a
    // zero variance are Python floats.
    let gamma = if m.gamma_from_variance {
        Py::float64(m.gamma)
    } else {
        Py::Float(m.gamma)
    };
    let dual_coef = || Py::array_f64(&[1, n_sv], &m.dual_coef);
    let intercept = || Py::array_f64(&[1], &[m.intercept]);
    let n_iter = m.n_iter.min(i32::MAX as u64) as i32;
    Py::object(
        "sklearn.svm._classes",
        "OneClassSVM",
        vec![
            ("kernel", Py::str(p.kernel.as_str())),
            ("degree", Py::Int(i64::from(p.degree))),
            ("gamma", gamma_param),
            ("coef0", Py::Float(p.coef0)),
            ("tol", Py::Float(p.tol)),
            ("C", Py::Float(0.0)),
            ("nu", Py::Float(p.nu)),
            ("epsilon", Py::Float(0.0)),
            ("shrinking", Py::Bool(p.shrinking)),
            ("probability", Py::Bool(false)),
            ("cache_size", number(p.cache_size)),
            ("class_weight", Py::None),
            ("verbose", Py::Bool(false)),
            ("max_iter", Py::Int(p.max_iter)),
            ("random_state", Py::None),
            ("_sparse", Py::Bool(false)),
            ("n_features_in_", Py::Int(m.n_features as i64)),
            ("_effective_probability", Py::Bool(false)),
            ("_gamma", gamma),
            ("support_", Py::array_i32(&[n_sv], &support)),
            (
                "support_vectors_",
                Py::array_f64(&[n_sv, m.n_features], &m.support_vectors),
            ),
            (
                "_n_support",
                Py::array_i32(&[2], &[n_sv as i32, n_sv as i32]),
            ),
            ("dual_coef_", dual_coef()),
            ("intercept_", intercept()),
            ("_probA", Py::array_f64(&[0], &[])),
            ("_probB", Py::array_f64(&[0], &[])),
            ("fit_status_", Py::Int(i64::from(m.fit_status))),
            ("_num_iter", Py::array_i32(&[1], &[n_iter])),
            (
                "shape_fit_",
                Py::Tuple(vec![
                    Py::Int(m.n_samples as i64),
                    Py::Int(m.n_features as i64),
                ]),
            ),
            ("_intercept_", intercept()),
            ("_dual_coef_", dual_coef()),
            ("n_iter_", Py::Int(i64::from(n_iter))),
            ("offset_", Py::array_f64(&[1], &[m.offset()])),
            version(),
        ],
    )
}

/// The pickle of a fitted pipeline: `Pipeline` with `make_pipeline`'s step names when there
/// is a scaler, else the bare `OneClassSVM`.
pub(crate) fn pipeline(fit: &FittedOcsvm) -> Vec<u8> {
    let svm = one_class_svm(&fit.svm);
    let value = match &fit.scaler {
        None => svm,
        Some(scaler) => {
            let (name, step) = match scaler {
                FittedScaler::Standard(s) => ("standardscaler", standard_scaler(s)),
                FittedScaler::MinMax(s) => ("minmaxscaler", min_max_scaler(s)),
            };
            Py::object(
                "sklearn.pipeline",
                "Pipeline",
                vec![
                    (
                        "steps",
                        Py::List(vec![
                            Py::Tuple(vec![Py::str(name), step]),
                            Py::Tuple(vec![Py::str("oneclasssvm"), svm]),
                        ]),
                    ),
                    ("transform_input", Py::None),
                    ("memory", Py::None),
                    ("verbose", Py::Bool(false)),
                    version(),
                ],
            )
        }
    };
    dumps(&value)
}
