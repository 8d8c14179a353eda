//! SGDOneClassSVM: a linear one-class SVM, `x · coef_ − offset_`.

use crate::detector::{Detector, TieRule, vec_bytes};
use crate::error::Result;
use crate::info::StepInfo;
use crate::reader::Obj;

/// A fitted SGDOneClassSVM.
#[derive(Debug, Clone)]
pub struct SgdOneClassSvm {
    coef: Vec<f64>,
    offset: f64,
    info: StepInfo,
}

impl SgdOneClassSvm {
    /// Reads a fitted SGDOneClassSVM.
    pub fn new(obj: &Obj<'_>) -> Result<SgdOneClassSvm> {
        Ok(SgdOneClassSvm {
            coef: obj.vec_f64("coef_")?,
            offset: obj.f64("offset_")?,
            info: StepInfo::of(obj),
        })
    }
}

impl Detector for SgdOneClassSvm {
    fn n_features(&self) -> usize {
        self.coef.len()
    }

    fn decision_function(&self, x: &[f64], out: &mut [f64]) {
        for (row, o) in x.chunks_exact(self.coef.len()).zip(out.iter_mut()) {
            let mut s = 0.0;
            for (a, b) in row.iter().zip(&self.coef) {
                s += a * b;
            }
            *o = s - self.offset;
        }
    }

    fn score_samples(&self, x: &[f64], out: &mut [f64]) {
        self.decision_function(x, out);
        for v in out.iter_mut() {
            *v += self.offset;
        }
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::NonNegativeIsInlier
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + vec_bytes(&self.coef)
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}
