//! Fitting scikit-learn's `StandardScaler` and `MinMaxScaler` with scikit-learn's numbers: the
//! same sums in numpy's order, the same handling of constant features.

use crate::numeric::column_sums;

/// A fitted `StandardScaler`: `x ← (x − mean_) / scale_`, each part as `with_mean` /
/// `with_std` say.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    /// Subtract the mean.
    pub with_mean: bool,
    /// Divide by the standard deviation.
    pub with_std: bool,
    /// `mean_`: computed whenever either flag is set (scikit-learn keeps it even without
    /// `with_mean`), else `None`.
    pub mean: Option<Vec<f64>>,
    /// `var_`: the population variance, when `with_std`.
    pub var: Option<Vec<f64>>,
    /// `scale_`: √`var_`, with 1 for features whose variance is indistinguishable from zero,
    /// when `with_std`.
    pub scale: Option<Vec<f64>>,
    /// `n_samples_seen_`.
    pub n_samples_seen: usize,
    /// `n_features_in_`.
    pub n_features_in: usize,
}

/// A fitted `MinMaxScaler`: `x ← x · scale_ + min_`, mapping each feature's training range onto
/// `feature_range`.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxScaler {
    /// `feature_range`: the (min, max) the training range is mapped to.
    pub feature_range: (f64, f64),
    /// `data_min_`.
    pub data_min: Vec<f64>,
    /// `data_max_`.
    pub data_max: Vec<f64>,
    /// `data_range_` = `data_max_ − data_min_`.
    pub data_range: Vec<f64>,
    /// `scale_` = (max − min) / `data_range_` (a range below 10 ε counts as 1).
    pub scale: Vec<f64>,
    /// `min_` = min − `data_min_` · `scale_`.
    pub min: Vec<f64>,
    /// `n_samples_seen_`.
    pub n_samples_seen: usize,
}

/// A fitted scaler, the first step of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum FittedScaler {
    /// `StandardScaler`.
    Standard(StandardScaler),
    /// `MinMaxScaler`.
    MinMax(MinMaxScaler),
}

impl StandardScaler {
    /// Fits on `x` (row-major, `n_features` per row, at least one row, all finite).
    ///
    /// scikit-learn runs its incremental mean-and-variance update from an empty state: the
    /// column sums give the mean; the variance is the corrected two-pass sum,
    /// `Σ(x − m)² − (Σ(x − m))² / n`, divided by `n`.
    pub fn fit(x: &[f64], n_features: usize, with_mean: bool, with_std: bool) -> StandardScaler {
        let rows = x.len() / n_features;
        if !with_mean && !with_std {
            return StandardScaler {
                with_mean,
                with_std,
                mean: None,
                var: None,
                scale: None,
                n_samples_seen: rows,
                n_features_in: n_features,
            };
        }
        let count = rows as f64;
        let sums = column_sums(x, n_features);
        let mean: Vec<f64> = sums.iter().map(|s| (0.0 + s) / count).collect();
        let (var, scale) = if with_std {
            let center: Vec<f64> = sums.iter().map(|s| s / count).collect();
            let mut centered = x.to_vec();
            for row in centered.chunks_exact_mut(n_features) {
                for (v, c) in row.iter_mut().zip(&center) {
                    *v -= c;
                }
            }
            let correction = column_sums(&centered, n_features);
            for v in centered.iter_mut() {
                *v *= *v;
            }
            let squares = column_sums(&centered, n_features);
            let var: Vec<f64> = squares
                .iter()
                .zip(&correction)
                .map(|(s, c)| (s - c * c / count) / count)
                .collect();
            let scale = var
                .iter()
                .zip(&mean)
                .map(|(&v, &m)| {
                    // Within the two-pass algorithm's rounding error of zero: a constant feature.
                    let eps = f64::EPSILON;
                    let bound = count * eps * v + {
                        let t = count * m * eps;
                        t * t
                    };
                    if v <= bound { 1.0 } else { v.sqrt() }
                })
                .collect();
            (Some(var), Some(scale))
        } else {
            (None, None)
        };
        StandardScaler {
            with_mean,
            with_std,
            mean: Some(mean),
            var,
            scale,
            n_samples_seen: rows,
            n_features_in: n_features,
        }
    }

    /// `transform`, in place: subtract, then divide, as scikit-learn does.
    pub fn transform(&self, x: &mut [f64]) {
        let n_features = self.n_features_in;
        if self.with_mean
            && let Some(mean) = &self.mean
        {
            for row in x.chunks_exact_mut(n_features) {
                for (v, m) in row.iter_mut().zip(mean) {
                    *v -= m;
                }
            }
        }
        if let Some(scale) = &self.scale {
            for row in x.chunks_exact_mut(n_features) {
                for (v, s) in row.iter_mut().zip(scale) {
                    *v /= s;
                }
            }
        }
    }
}

impl MinMaxScaler {
    /// Fits on `x` (row-major, `n_features` per row, at least one row, all finite);
    /// `feature_range.0 < feature_range.1`.
    pub fn fit(x: &[f64], n_features: usize, feature_range: (f64, f64)) -> MinMaxScaler {
        let mut data_min = x[..n_features].to_vec();
        let mut data_max = data_min.clone();
        for row in x.chunks_exact(n_features).skip(1) {
            for ((lo, hi), &v) in data_min.iter_mut().zip(data_max.iter_mut()).zip(row) {
                if v < *lo {
                    *lo = v;
                }
                if v > *hi {
                    *hi = v;
                }
            }
        }
        let data_range: Vec<f64> = data_max.iter().zip(&data_min).map(|(a, b)| a - b).collect();
        let span = feature_range.1 - feature_range.0;
        let scale: Vec<f64> = data_range
            .iter()
            .map(|&r| span / if r < 10.0 * f64::EPSILON { 1.0 } else { r })
            .collect();
        let min = data_min
            .iter()
            .zip(&scale)
            .map(|(d, s)| feature_range.0 - d * s)
            .collect();
        MinMaxScaler {
            feature_range,
            data_min,
            data_max,
            data_range,
            scale,
            min,
            n_samples_seen: x.len() / n_features,
        }
    }

    /// `transform`, in place: multiply, then add (no clipping, scikit-learn's default).
    pub fn transform(&self, x: &mut [f64]) {
        for row in x.chunks_exact_mut(self.scale.len()) {
            for ((v, s), m) in row.iter_mut().zip(&self.scale).zip(&self.min) {
                *v *= s;
                *v += m;
            }
        }
    }
}

impl FittedScaler {
    /// `transform`, in place.
    pub fn transform(&self, x: &mut [f64]) {
        match self {
            FittedScaler::Standard(s) => s.transform(x),
            FittedScaler::MinMax(s) => s.transform(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_features_keep_a_unit_scale() {
        let x = [3.0, 1.0, 3.0, 2.0, 3.0, 4.0];
        let s = StandardScaler::fit(&x, 2, true, true);
        assert_eq!(s.var.as_ref().unwrap()[0], 0.0);
        assert_eq!(s.scale.as_ref().unwrap()[0], 1.0);
        let m = MinMaxScaler::fit(&x, 2, (0.0, 1.0));
        assert_eq!(m.scale[0], 1.0);
        assert_eq!(m.min[0], -3.0);
    }

    #[test]
    fn neither_flag_keeps_only_the_count() {
        let s = StandardScaler::fit(&[1.0, 2.0], 1, false, false);
        assert_eq!(s.mean, None);
        assert_eq!(s.n_samples_seen, 2);
        let mut x = [5.0];
        s.transform(&mut x);
        assert_eq!(x, [5.0]);
    }
}
