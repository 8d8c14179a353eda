//! The four scikit-learn scalers: StandardScaler, MinMaxScaler, RobustScaler, MaxAbsScaler. Each
//! applies its fitted per-feature operations in the same order scikit-learn does, so results are
//! bit-identical.

use crate::detector::{Transform, vec_bytes};
use crate::error::{Error, Result};
use crate::info::StepInfo;
use crate::reader::Obj;

/// `x = ((x - offset) / divisor)` per feature, each part optional: StandardScaler, RobustScaler
/// and MaxAbsScaler are all this shape.
#[derive(Debug, Clone)]
pub struct ShiftDivide {
    n_features: usize,
    subtract: Option<Vec<f64>>,
    divide: Option<Vec<f64>>,
    info: StepInfo,
}

impl ShiftDivide {
    fn new(
        obj: &Obj<'_>,
        subtract: Option<(&str, Vec<f64>)>,
        divide: Option<(&str, Vec<f64>)>,
    ) -> Result<ShiftDivide> {
        let lens: Vec<(&str, usize)> = [&subtract, &divide]
            .into_iter()
            .flatten()
            .map(|(name, v)| (*name, v.len()))
            .collect();
        let n_features = match obj.get("n_features_in_") {
            Some(fleetscore_pickle::Value::Int(n)) if n > 0 => n as usize,
            _ => lens.first().map(|(_, n)| *n).ok_or_else(|| {
                Error::Unsupported(format!(
                    "{} neither centers nor scales, and does not say how many features it takes",
                    obj.class
                ))
            })?,
        };
        for (name, len) in lens {
            if len != n_features {
                return Err(Error::BadAttr {
                    class: obj.class.to_string(),
                    attr: name.to_string(),
                    expected: format!("{n_features} values"),
                    found: format!("{len} values"),
                });
            }
        }
        Ok(ShiftDivide {
            n_features,
            subtract: subtract.map(|(_, v)| v),
            divide: divide.map(|(_, v)| v),
            info: StepInfo::of(obj),
        })
    }

    /// StandardScaler: `(x - mean_) / scale_`, as `with_mean` / `with_std` say.
    pub fn standard(obj: &Obj<'_>) -> Result<ShiftDivide> {
        let sub = if obj.bool_or("with_mean", true)? {
            Some(("mean_", obj.vec_f64("mean_")?))
        } else {
            None
        };
        let div = if obj.bool_or("with_std", true)? && !obj.is_none("scale_") {
            Some(("scale_", obj.vec_f64("scale_")?))
        } else {
            None
        };
        ShiftDivide::new(obj, sub, div)
    }

    /// RobustScaler: `(x - center_) / scale_`, as `with_centering` / `with_scaling` say.
    pub fn robust(obj: &Obj<'_>) -> Result<ShiftDivide> {
        let sub = if obj.bool_or("with_centering", true)? {
            Some(("center_", obj.vec_f64("center_")?))
        } else {
            None
        };
        let div = if obj.bool_or("with_scaling", true)? {
            Some(("scale_", obj.vec_f64("scale_")?))
        } else {
            None
        };
        ShiftDivide::new(obj, sub, div)
    }

    /// MaxAbsScaler: `x / scale_`.
    pub fn max_abs(obj: &Obj<'_>) -> Result<ShiftDivide> {
        ShiftDivide::new(obj, None, Some(("scale_", obj.vec_f64("scale_")?)))
    }
}

impl Transform for ShiftDivide {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn transform(&self, x: &mut [f64]) {
        let d = self.n_features;
        // scikit-learn subtracts over the whole array, then divides: per element that is the
        // same two roundings in the same order.
        if d == 1 {
            // One feature (a sensor's value): straight loops over the column, which vectorize.
            if let Some(m) = self.subtract.as_ref().map(|s| s[0]) {
                x.iter_mut().for_each(|v| *v -= m);
            }
            if let Some(s) = self.divide.as_ref().map(|s| s[0]) {
                x.iter_mut().for_each(|v| *v /= s);
            }
            return;
        }
        if let Some(sub) = &self.subtract {
            for row in x.chunks_exact_mut(d) {
                for (v, m) in row.iter_mut().zip(sub) {
                    *v -= m;
                }
            }
        }
        if let Some(div) = &self.divide {
            for row in x.chunks_exact_mut(d) {
                for (v, s) in row.iter_mut().zip(div) {
                    *v /= s;
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.subtract.as_deref().map_or(0, vec_bytes)
            + self.divide.as_deref().map_or(0, vec_bytes)
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}

/// MinMaxScaler: `x * scale_ + min_`, then clipped to `feature_range` when `clip` is set.
#[derive(Debug, Clone)]
pub struct MinMax {
    scale: Vec<f64>,
    min: Vec<f64>,
    clip: Option<(f64, f64)>,
    info: StepInfo,
}

impl MinMax {
    /// Reads a fitted MinMaxScaler.
    pub fn new(obj: &Obj<'_>) -> Result<MinMax> {
        let scale = obj.vec_f64("scale_")?;
        let min = obj.vec_f64("min_")?;
        if scale.len() != min.len() {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "min_".into(),
                expected: format!("{} values like scale_", scale.len()),
                found: format!("{} values", min.len()),
            });
        }
        // `clip` appeared in scikit-learn 0.24; older files never clip.
        let clip = if obj.bool_or("clip", false)? {
            let range = obj.seq("feature_range")?;
            match range {
                [lo, hi] => Some((
                    obj.f64_of("feature_range", *lo)?,
                    obj.f64_of("feature_range", *hi)?,
                )),
                _ => {
                    return Err(obj.bad(
                        "feature_range",
                        "a (min, max) pair",
                        obj.require("feature_range")?,
                    ));
                }
            }
        } else {
            None
        };
        Ok(MinMax {
            scale,
            min,
            clip,
            info: StepInfo::of(obj),
        })
    }
}

impl Transform for MinMax {
    fn n_features(&self) -> usize {
        self.scale.len()
    }

    fn transform(&self, x: &mut [f64]) {
        for row in x.chunks_exact_mut(self.scale.len()) {
            for ((v, s), m) in row.iter_mut().zip(&self.scale).zip(&self.min) {
                *v *= s;
                *v += m;
            }
        }
        if let Some((lo, hi)) = self.clip {
            // numpy's clip: minimum(maximum(x, lo), hi).
            for v in x.iter_mut() {
                *v = v.max(lo).min(hi);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + vec_bytes(&self.scale) + vec_bytes(&self.min)
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}
