//! Training runs: fitting new versions of the fleet's models on their sensors' history.
//!
//! A training run is planned like a scoring run — the models' buckets in shard tasks on the
//! coordinator, so `fleetscore worker` processes train too — and each task reads its sensors'
//! readings (or closed windows) over the training window once, fits one model per sensor with
//! [`fleetscore_train`] (scikit-learn's numbers), and imports every fit into the registry as the
//! sensor's new current version, its training window, parameters and metrics in its metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use fleetscore_models::ModelInfo;
use fleetscore_train::{
    Contamination, Gamma, IforestParams, Kernel, MaxFeatures, MaxSamples, OcsvmParams, ScalerSpec,
    Trained,
};

/// The scaler in front of a one-class SVM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaler {
    /// None: the SVM sees the raw values.
    None,
    /// `StandardScaler()`.
    Standard,
    /// `MinMaxScaler(feature_range=(min, max))`.
    Minmax {
        /// The range's low end.
        min: f64,
        /// Its high end.
        max: f64,
    },
}

/// An estimator and its hyper-parameters, with scikit-learn's names and value spellings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "estimator", rename_all = "snake_case")]
pub enum Estimator {
    /// `OneClassSVM`, behind an optional scaler.
    Ocsvm {
        /// The scaler before it.
        scaler: Scaler,
        /// `rbf`, `linear`, `poly` or `sigmoid`.
        kernel: String,
        /// ν.
        nu: f64,
        /// `scale`, `auto` or a number.
        gamma: String,
        /// The polynomial kernel's degree.
        degree: i32,
        /// The poly and sigmoid kernels' constant.
        coef0: f64,
        /// The solver's tolerance.
        tol: f64,
        /// libsvm's shrinking heuristic.
        shrinking: bool,
        /// Most solver iterations (-1: no limit).
        max_iter: i64,
    },
    /// `IsolationForest`.
    Iforest {
        /// Trees.
        n_estimators: usize,
        /// `auto`, a row count or a fraction of the rows.
        max_samples: String,
        /// `auto` or the expected share of outliers.
        contamination: String,
        /// A feature count or a fraction of the features.
        max_features: String,
        /// Draw rows with replacement.
        bootstrap: bool,
        /// The seed; `None` uses the run's.
        random_state: Option<u32>,
    },
}

impl Estimator {
    /// scikit-learn's defaults for a one-class SVM behind `scaler`.
    pub fn ocsvm(scaler: Scaler) -> Estimator {
        let d = OcsvmParams::default();
        Estimator::Ocsvm {
            scaler,
            kernel: d.kernel.as_str().to_string(),
            nu: d.nu,
            gamma: "scale".into(),
            degree: d.degree,
            coef0: d.coef0,
            tol: d.tol,
            shrinking: d.shrinking,
            max_iter: d.max_iter,
        }
    }

    /// scikit-learn's defaults for an IsolationForest.
    pub fn iforest() -> Estimator {
        Estimator::Iforest {
            n_estimators: 100,
            max_samples: "auto".into(),
            contamination: "auto".into(),
            max_features: "1.0".into(),
            bootstrap: false,
            random_state: None,
        }
    }

    /// The estimator a model was fitted as, with its hyper-parameters (what `--like current`
    /// reuses), from its loaded info; an error says why it cannot be.
    pub fn like(info: &ModelInfo) -> Result<Estimator, String> {
        // A step's class without its module (a pipeline step's `name` is the step's name).
        let class = |s: &fleetscore_models::StepInfo| -> String {
            s.class.rsplit('.').next().unwrap_or(&s.class).to_string()
        };
        let last = info.steps.last().ok_or("the model has no steps")?;
        let p = |k: &str| last.params.get(k);
        let num = |k: &str, default: f64| p(k).and_then(|v| v.as_f64()).unwrap_or(default);
        let text = |k: &str, default: &str| match p(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => default.to_string(),
        };
        match class(last).as_str() {
            "OneClassSVM" => {
                let scaler = match info.steps.len() {
                    1 => Scaler::None,
                    2 => {
                        let s = &info.steps[0];
                        match class(s).as_str() {
                            "StandardScaler" => {
                                let on = |k: &str| {
                                    s.params.get(k).and_then(|v| v.as_bool()) != Some(false)
                                };
                                if !on("with_mean") || !on("with_std") {
                                    return Err("a StandardScaler without its mean or scale is not trained here".into());
                                }
                                Scaler::Standard
                            }
                            "MinMaxScaler" => {
                                let range =
                                    s.params.get("feature_range").and_then(|v| v.as_array());
                                let at = |i: usize, d: f64| {
                                    range
                                        .and_then(|r| r.get(i))
                                        .and_then(|v| v.as_f64())
                                        .unwrap_or(d)
                                };
                                Scaler::Minmax {
                                    min: at(0, 0.0),
                                    max: at(1, 1.0),
                                }
                            }
                            other => {
                                return Err(format!(
                                    "a {other} before the OneClassSVM is not trained here"
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(format!(
                            "a pipeline of {} steps is not trained here",
                            info.steps.len()
                        ));
                    }
                };
                let d = OcsvmParams::default();
                Ok(Estimator::Ocsvm {
                    scaler,
                    kernel: text("kernel", d.kernel.as_str()),
                    nu: num("nu", d.nu),
                    gamma: text("gamma", "scale"),
                    degree: num("degree", f64::from(d.degree)) as i32,
                    coef0: num("coef0", d.coef0),
                    tol: num("tol", d.tol),
                    shrinking: p("shrinking")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(d.shrinking),
                    max_iter: num("max_iter", d.max_iter as f64) as i64,
                })
            }
            "IsolationForest" if info.steps.len() == 1 => Ok(Estimator::Iforest {
                n_estimators: num("n_estimators", 100.0) as usize,
                max_samples: text("max_samples", "auto"),
                contamination: text("contamination", "auto"),
                max_features: text("max_features", "1.0"),
                bootstrap: p("bootstrap").and_then(|v| v.as_bool()).unwrap_or(false),
                random_state: p("random_state")
                    .and_then(|v| v.as_u64())
                    .and_then(|s| u32::try_from(s).ok()),
            }),
            other => Err(format!(
                "{other} models are not trained here (OneClassSVM, with or without a scaler, and IsolationForest are)"
            )),
        }
    }

    /// The estimator as one line, as `models list` names models.
    pub fn describe(&self) -> String {
        match self {
            Estimator::Ocsvm {
                scaler: Scaler::None,
                ..
            } => "OneClassSVM".into(),
            Estimator::Ocsvm {
                scaler: Scaler::Standard,
                ..
            } => "Pipeline(StandardScaler, OneClassSVM)".into(),
            Estimator::Ocsvm {
                scaler: Scaler::Minmax { .. },
                ..
            } => "Pipeline(MinMaxScaler, OneClassSVM)".into(),
            Estimator::Iforest { .. } => "IsolationForest".into(),
        }
    }

    /// The hyper-parameters by scikit-learn's names, for a model's metadata.
    pub fn params(&self, seed: u32) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        out.insert("estimator".into(), self.describe().into());
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (k, v) in map {
                if k != "estimator" {
                    out.insert(k, v);
                }
            }
        }
        if let Estimator::Iforest {
            random_state: None, ..
        } = self
        {
            out.insert("random_state".into(), seed.into());
        }
        out
    }

    /// Checks every parameter as scikit-learn would, before anything is planned.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Estimator::Ocsvm { .. } => self
                .ocsvm_params()
                .and_then(|(_, p)| p.validate().map_err(|e| e.to_string())),
            Estimator::Iforest { .. } => self
                .iforest_params(0)
                .and_then(|p| p.validate().map_err(|e| e.to_string())),
        }
    }

    fn ocsvm_params(&self) -> Result<(ScalerSpec, OcsvmParams), String> {
        let Estimator::Ocsvm {
            scaler,
            kernel,
            nu,
            gamma,
            degree,
            coef0,
            tol,
            shrinking,
            max_iter,
        } = self
        else {
            return Err("not a OneClassSVM".into());
        };
        let kernel = match kernel.as_str() {
            "rbf" => Kernel::Rbf,
            "linear" => Kernel::Linear,
            "poly" => Kernel::Poly,
            "sigmoid" => Kernel::Sigmoid,
            other => {
                return Err(format!(
                    "kernel {other:?}: one of rbf, linear, poly, sigmoid"
                ));
            }
        };
        let gamma = match gamma.as_str() {
            "scale" => Gamma::Scale,
            "auto" => Gamma::Auto,
            g => Gamma::Value(
                g.parse()
                    .map_err(|_| format!("gamma {g:?}: scale, auto or a number"))?,
            ),
        };
        let scaler = match *scaler {
            Scaler::None => ScalerSpec::None,
            Scaler::Standard => ScalerSpec::Standard {
                with_mean: true,
                with_std: true,
            },
            Scaler::Minmax { min, max } => ScalerSpec::MinMax { min, max },
        };
        Ok((
            scaler,
            OcsvmParams {
                kernel,
                nu: *nu,
                gamma,
                degree: *degree,
                coef0: *coef0,
                tol: *tol,
                shrinking: *shrinking,
                max_iter: *max_iter,
                ..OcsvmParams::default()
            },
        ))
    }

    fn iforest_params(&self, seed: u32) -> Result<IforestParams, String> {
        let Estimator::Iforest {
            n_estimators,
            max_samples,
            contamination,
            max_features,
            bootstrap,
            random_state,
        } = self
        else {
            return Err("not an IsolationForest".into());
        };
        let max_samples = match max_samples.as_str() {
            "auto" => MaxSamples::Auto,
            s if s.contains('.') => MaxSamples::Fraction(
                s.parse()
                    .map_err(|_| format!("max_samples {s:?}: auto, a count or a fraction"))?,
            ),
            s => MaxSamples::Count(
                s.parse()
                    .map_err(|_| format!("max_samples {s:?}: auto, a count or a fraction"))?,
            ),
        };
        let contamination = match contamination.as_str() {
            "auto" => Contamination::Auto,
            c => Contamination::Fraction(
                c.parse()
                    .map_err(|_| format!("contamination {c:?}: auto or a fraction"))?,
            ),
        };
        let max_features = match max_features.as_str() {
            s if s.contains('.') => MaxFeatures::Fraction(
                s.parse()
                    .map_err(|_| format!("max_features {s:?}: a count or a fraction"))?,
            ),
            s => MaxFeatures::Count(
                s.parse()
                    .map_err(|_| format!("max_features {s:?}: a count or a fraction"))?,
            ),
        };
        Ok(IforestParams {
            n_estimators: *n_estimators,
            max_samples,
            contamination,
            max_features,
            bootstrap: *bootstrap,
            random_state: Some(random_state.unwrap_or(seed)),
        })
    }

    /// Fits one model on `x` (row-major, `n_features` columns); `seed` is used when the
    /// estimator has no `random_state` of its own.
    pub fn fit(&self, x: &[f64], n_features: usize, seed: u32) -> Result<Trained, String> {
        match self {
            Estimator::Ocsvm { .. } => {
                let (scaler, params) = self.ocsvm_params()?;
                fleetscore_train::fit_ocsvm(x, n_features, scaler, &params)
                    .map_err(|e| e.to_string())
            }
            Estimator::Iforest { .. } => {
                let params = self.iforest_params(seed)?;
                fleetscore_train::fit_iforest(x, n_features, &params).map_err(|e| e.to_string())
            }
        }
    }
}

/// What a training run's tasks do, carried by each of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainTask {
    /// The estimator to fit; `None`: each model's current estimator and hyper-parameters
    /// (`--like current`).
    pub estimator: Option<Estimator>,
    /// Sensors with fewer rows in the window are skipped, with the reason.
    pub min_rows: usize,
    /// The seed of estimators that draw and have none of their own: the run's, the same for
    /// every model and attempt, so that a retried task fits the same models.
    pub seed: u32,
}

/// The fewest rows a model is fitted on by default.
pub const DEFAULT_MIN_ROWS: usize = 10;
