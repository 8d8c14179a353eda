//! scikit-learn's `OneClassSVM`, optionally behind a scaler: its parameters as scikit-learn
//! names and validates them, the fit (scaler, γ, libsvm's solver) and the fitted attributes.

use crate::error::{Error, Result};
use crate::numeric::variance_all;
use crate::scale::{FittedScaler, MinMaxScaler, StandardScaler};
use crate::svm::{KernelFn, SolverSettings, solve_one_class};

/// `kernel`: the kernels libsvm computes itself (not `precomputed` or a callable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// `'rbf'`: `exp(−γ |x − y|²)`.
    #[default]
    Rbf,
    /// `'linear'`: `x · y`.
    Linear,
    /// `'poly'`: `(γ x·y + coef0)^degree`.
    Poly,
    /// `'sigmoid'`: `tanh(γ x·y + coef0)`.
    Sigmoid,
}

impl Kernel {
    /// scikit-learn's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kernel::Rbf => "rbf",
            Kernel::Linear => "linear",
            Kernel::Poly => "poly",
            Kernel::Sigmoid => "sigmoid",
        }
    }
}

/// `gamma`: the kernel coefficient of the RBF, polynomial and sigmoid kernels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Gamma {
    /// `'scale'`: `1 / (n_features · X.var())` on the data the SVM sees (after the scaler), or
    /// 1 when that variance is zero.
    #[default]
    Scale,
    /// `'auto'`: `1 / n_features`.
    Auto,
    /// A number, at least 0.
    Value(f64),
}

/// `OneClassSVM`'s parameters, with scikit-learn's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct OcsvmParams {
    /// `kernel` (default `'rbf'`).
    pub kernel: Kernel,
    /// `degree` of the polynomial kernel (default 3, at least 0).
    pub degree: i32,
    /// `gamma` (default `'scale'`).
    pub gamma: Gamma,
    /// `coef0` of the polynomial and sigmoid kernels (default 0).
    pub coef0: f64,
    /// `tol`: the solver's stopping tolerance (default 1e-3, positive).
    pub tol: f64,
    /// `nu`: an upper bound on the fraction of training errors and a lower bound on the
    /// fraction of support vectors, in (0, 1] (default 0.5).
    pub nu: f64,
    /// `shrinking`: use libsvm's shrinking heuristic (default true).
    pub shrinking: bool,
    /// `cache_size`: the kernel cache in MB (default 200, positive).
    pub cache_size: f64,
    /// `max_iter`: the solver's iteration limit, −1 for none (default −1).
    pub max_iter: i64,
}

impl Default for OcsvmParams {
    fn default() -> OcsvmParams {
        OcsvmParams {
            kernel: Kernel::Rbf,
            degree: 3,
            gamma: Gamma::Scale,
            coef0: 0.0,
            tol: 1e-3,
            nu: 0.5,
            shrinking: true,
            cache_size: 200.0,
            max_iter: -1,
        }
    }
}

/// The scaler in front of the SVM, if any.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ScalerSpec {
    /// No scaler: a bare `OneClassSVM`.
    #[default]
    None,
    /// `StandardScaler(with_mean, with_std)`.
    Standard {
        /// Subtract the mean.
        with_mean: bool,
        /// Divide by the standard deviation.
        with_std: bool,
    },
    /// `MinMaxScaler(feature_range=(min, max))`.
    MinMax {
        /// The low end of `feature_range`.
        min: f64,
        /// The high end of `feature_range`, above `min`.
        max: f64,
    },
}

/// A fitted `OneClassSVM`, with the attributes scikit-learn gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct OneClassSvm {
    /// The parameters it was fitted with.
    pub params: OcsvmParams,
    /// `_gamma`: γ as used (resolved from `'scale'` or `'auto'`).
    pub gamma: f64,
    /// Whether `_gamma` came from the data's variance (scikit-learn then holds a numpy float).
    pub gamma_from_variance: bool,
    /// `n_features_in_`.
    pub n_features: usize,
    /// `shape_fit_[0]`: training rows.
    pub n_samples: usize,
    /// `support_`: the training rows that are support vectors, ascending.
    pub support: Vec<usize>,
    /// `support_vectors_`, row-major (after the scaler).
    pub support_vectors: Vec<f64>,
    /// `dual_coef_`: α of each support vector.
    pub dual_coef: Vec<f64>,
    /// `intercept_` = −ρ.
    pub intercept: f64,
    /// `fit_status_`: 0, or 1 when `max_iter` stopped the solver.
    pub fit_status: i32,
    /// `n_iter_`: the solver's iterations.
    pub n_iter: u64,
    /// libsvm's dual objective, `½ αᵀQα`.
    pub objective: f64,
}

impl OneClassSvm {
    /// ρ: the decision function is `Σ α_i K(sv_i, x) − ρ`.
    pub fn rho(&self) -> f64 {
        -self.intercept
    }

    /// `offset_` (= ρ): `score_samples` is `decision_function + offset_`.
    pub fn offset(&self) -> f64 {
        -self.intercept
    }

    pub(crate) fn kernel_fn(&self) -> KernelFn {
        kernel_fn(&self.params, self.gamma)
    }

    /// `decision_function` for each row of `x` (row-major, already scaled), computed as
    /// libsvm's prediction does.
    pub fn decision_function(&self, x: &[f64]) -> Vec<f64> {
        let d = self.n_features;
        let kernel = self.kernel_fn();
        let mut scratch = Vec::with_capacity(d);
        x.chunks_exact(d)
            .map(|row| {
                let mut sum = 0.0;
                for (sv, c) in self.support_vectors.chunks_exact(d).zip(&self.dual_coef) {
                    sum += c * kernel.value(row, sv, &mut scratch);
                }
                sum - self.rho()
            })
            .collect()
    }
}

/// A fitted pipeline: the optional scaler and the SVM.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedOcsvm {
    /// The scaler, when one was asked for.
    pub scaler: Option<FittedScaler>,
    /// The SVM, fitted on the scaled rows.
    pub svm: OneClassSvm,
    /// The fraction of training rows `predict` calls outliers (−1).
    pub train_outlier_fraction: f64,
}

impl FittedOcsvm {
    /// `decision_function` of the pipeline for each row of `x` (row-major, raw).
    pub fn decision_function(&self, x: &[f64]) -> Vec<f64> {
        let mut scaled = x.to_vec();
        if let Some(s) = &self.scaler {
            s.transform(&mut scaled);
        }
        self.svm.decision_function(&scaled)
    }

    /// What the fit measured: `n_support`, `iterations`, `rho`, `train_outlier_fraction`,
    /// `fit_status` (1: stopped by `max_iter`), `gamma`, `objective`, `n_samples`,
    /// `n_features`.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let s = &self.svm;
        vec![
            ("n_support", s.support.len() as f64),
            ("iterations", s.n_iter as f64),
            ("rho", s.rho()),
            ("train_outlier_fraction", self.train_outlier_fraction),
            ("fit_status", f64::from(s.fit_status)),
            ("gamma", s.gamma),
            ("objective", s.objective),
            ("n_samples", s.n_samples as f64),
            ("n_features", s.n_features as f64),
        ]
    }
}

fn param(name: &'static str, reason: String) -> Error {
    Error::Param { name, reason }
}

impl OcsvmParams {
    /// Checks every parameter as scikit-learn's validation (and libsvm's) would.
    pub fn validate(&self) -> Result<()> {
        if !(self.nu > 0.0 && self.nu <= 1.0) {
            return Err(param(
                "nu",
                format!("must be a float in the range (0.0, 1.0], got {}", self.nu),
            ));
        }
        if let Gamma::Value(g) = self.gamma
            && !(g >= 0.0 && g.is_finite())
        {
            return Err(param(
                "gamma",
                format!("must be 'scale', 'auto' or a float in the range [0.0, inf), got {g}"),
            ));
        }
        if !self.coef0.is_finite() {
            return Err(param(
                "coef0",
                format!("must be a finite float, got {}", self.coef0),
            ));
        }
        if !(self.tol > 0.0 && self.tol.is_finite()) {
            return Err(param(
                "tol",
                format!("must be a float in the range (0.0, inf), got {}", self.tol),
            ));
        }
        if self.degree < 0 {
            return Err(param(
                "degree",
                format!("must be an int in the range [0, inf), got {}", self.degree),
            ));
        }
        if !(self.cache_size > 0.0 && self.cache_size.is_finite()) {
            return Err(param(
                "cache_size",
                format!(
                    "must be a float in the range (0.0, inf), got {}",
                    self.cache_size
                ),
            ));
        }
        if self.max_iter < -1 || self.max_iter > i64::from(i32::MAX) {
            return Err(param(
                "max_iter",
                format!(
                    "must be -1 (no limit) or an int in [0, {}], got {}",
                    i32::MAX,
                    self.max_iter
                ),
            ));
        }
        Ok(())
    }
}

impl ScalerSpec {
    fn validate(&self) -> Result<()> {
        if let ScalerSpec::MinMax { min, max } = *self {
            if !(min.is_finite() && max.is_finite()) {
                return Err(param(
                    "feature_range",
                    format!("must be finite, got ({min}, {max})"),
                ));
            }
            if min >= max {
                return Err(param(
                    "feature_range",
                    format!("the minimum must be smaller than the maximum, got ({min}, {max})"),
                ));
            }
        }
        Ok(())
    }
}

fn kernel_fn(params: &OcsvmParams, gamma: f64) -> KernelFn {
    match params.kernel {
        Kernel::Linear => KernelFn::Linear,
        Kernel::Rbf => KernelFn::Rbf { gamma },
        Kernel::Poly => KernelFn::Poly {
            gamma,
            coef0: params.coef0,
            degree: params.degree,
        },
        Kernel::Sigmoid => KernelFn::Sigmoid {
            gamma,
            coef0: params.coef0,
        },
    }
}

/// Checks the rows as scikit-learn's `validate_data` does: at least one row and one feature,
/// every value finite. `stage` says which data is meant (the input, or the scaler's output).
fn check_rows(x: &[f64], n_features: usize, stage: &str) -> Result<usize> {
    if n_features == 0 {
        return Err(Error::Data(format!(
            "{stage} has 0 features; at least 1 is required"
        )));
    }
    if !x.len().is_multiple_of(n_features) {
        return Err(Error::Data(format!(
            "{stage} has {} values, not a whole number of rows of {n_features} features",
            x.len()
        )));
    }
    let rows = x.len() / n_features;
    if rows == 0 {
        return Err(Error::Data(format!(
            "{stage} has 0 rows; at least 1 is required"
        )));
    }
    if let Some(at) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "{stage}: row {}, feature {}: value {} is not finite",
            at / n_features,
            at % n_features,
            x[at]
        )));
    }
    Ok(rows)
}

impl FittedOcsvm {
    /// Fits the scaler (if any) and a `OneClassSVM` on `x` (row-major, `n_features` per row), as
    /// `make_pipeline(scaler, OneClassSVM(**params)).fit(x)` does.
    pub fn fit(
        x: &[f64],
        n_features: usize,
        scaler: ScalerSpec,
        params: &OcsvmParams,
    ) -> Result<FittedOcsvm> {
        params.validate()?;
        scaler.validate()?;
        let rows = check_rows(x, n_features, "the training data")?;
        let fitted_scaler = match scaler {
            ScalerSpec::None => None,
            ScalerSpec::Standard {
                with_mean,
                with_std,
            } => Some(FittedScaler::Standard(StandardScaler::fit(
                x, n_features, with_mean, with_std,
            ))),
            ScalerSpec::MinMax { min, max } => Some(FittedScaler::MinMax(MinMaxScaler::fit(
                x,
                n_features,
                (min, max),
            ))),
        };
        let mut scaled = x.to_vec();
        if let Some(s) = &fitted_scaler {
            s.transform(&mut scaled);
            check_rows(&scaled, n_features, "the scaled training data")?;
        }

        let (gamma, gamma_from_variance) = match params.gamma {
            Gamma::Scale => {
                let var = variance_all(&scaled);
                if var != 0.0 {
                    (1.0 / (n_features as f64 * var), true)
                } else {
                    (1.0, false)
                }
            }
            Gamma::Auto => (1.0 / n_features as f64, false),
            Gamma::Value(g) => (g, false),
        };
        let kernel = kernel_fn(params, gamma);
        let settings = SolverSettings {
            tol: params.tol,
            shrinking: params.shrinking,
            max_iter: u64::try_from(params.max_iter).ok(),
            cache_bytes: params.cache_size * 1_048_576.0,
        };
        let upper = vec![1.0; rows];
        let solution = solve_one_class(&scaled, n_features, kernel, &upper, params.nu, &settings);

        let support: Vec<usize> = (0..rows)
            .filter(|&i| solution.alpha[i].abs() > 0.0)
            .collect();
        let support_vectors: Vec<f64> = support
            .iter()
            .flat_map(|&i| scaled[i * n_features..(i + 1) * n_features].iter().copied())
            .collect();
        let dual_coef: Vec<f64> = support.iter().map(|&i| solution.alpha[i]).collect();
        let intercept = -solution.rho;
        if !intercept.is_finite() || dual_coef.iter().any(|c| !c.is_finite()) {
            return Err(Error::Data(format!(
                "the dual coefficients or intercept are not finite (ρ = {}): with nu = 1 every \
             sample sits at its bound, and very large values need scaling first",
                solution.rho
            )));
        }
        let svm = OneClassSvm {
            params: params.clone(),
            gamma,
            gamma_from_variance,
            n_features,
            n_samples: rows,
            support,
            support_vectors,
            dual_coef,
            intercept,
            fit_status: i32::from(solution.timed_out),
            n_iter: solution.iterations,
            objective: solution.objective,
        };
        let outliers = svm
            .decision_function(&scaled)
            .iter()
            // libsvm's `predict`: an inlier only when the decision is positive (0 and NaN are not).
            .filter(|&&d| d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
            .count();
        Ok(FittedOcsvm {
            scaler: fitted_scaler,
            svm,
            train_outlier_fraction: outliers as f64 / rows as f64,
        })
    }
}
