//! EllipticEnvelope: minus the squared Mahalanobis distance to the robust location, computed as
//! scipy's `cdist(metric='mahalanobis')` does (then squared, as scikit-learn does).

use crate::detector::{Detector, TieRule, vec_bytes};
use crate::error::{Error, Result};
use crate::info::StepInfo;
use crate::reader::Obj;

/// A fitted EllipticEnvelope.
#[derive(Debug, Clone)]
pub struct EllipticEnvelope {
    location: Vec<f64>,
    /// d × d, row-major.
    precision: Vec<f64>,
    offset: f64,
    info: StepInfo,
}

impl EllipticEnvelope {
    /// Reads a fitted EllipticEnvelope.
    pub fn new(obj: &Obj<'_>) -> Result<EllipticEnvelope> {
        let location = obj.vec_f64("location_")?;
        if obj.is_none("precision_") {
            return Err(Error::Unsupported(
                "EllipticEnvelope fitted with store_precision=False (no precision_ to score with)"
                    .into(),
            ));
        }
        let precision = obj.matrix("precision_")?;
        let d = location.len();
        if precision.rows != d || precision.cols != d {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "precision_".into(),
                expected: format!("a {d}×{d} matrix"),
                found: format!("{}×{}", precision.rows, precision.cols),
            });
        }
        Ok(EllipticEnvelope {
            location,
            precision: precision.data,
            offset: obj.f64("offset_")?,
            info: StepInfo::of(obj),
        })
    }
}

impl Detector for EllipticEnvelope {
    fn n_features(&self) -> usize {
        self.location.len()
    }

    fn decision_function(&self, x: &[f64], out: &mut [f64]) {
        self.score_samples(x, out);
        for v in out.iter_mut() {
            *v -= self.offset;
        }
    }

    fn score_samples(&self, x: &[f64], out: &mut [f64]) {
        let d = self.location.len();
        let mut delta = vec![0.0; d];
        for (row, o) in x.chunks_exact(d).zip(out.iter_mut()) {
            for ((t, v), m) in delta.iter_mut().zip(row).zip(&self.location) {
                *t = v - m;
            }
            // s = δᵀ VI δ, as scipy: first VI δ row by row, then the dot with δ.
            let mut s = 0.0;
            for (i, vi_row) in self.precision.chunks_exact(d).enumerate() {
                let mut t = 0.0;
                for (a, b) in vi_row.iter().zip(&delta) {
                    t += a * b;
                }
                s += delta[i] * t;
            }
            let dist = s.sqrt();
            *o = -(dist * dist);
        }
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::NonNegativeIsInlier
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + vec_bytes(&self.location) + vec_bytes(&self.precision)
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}
