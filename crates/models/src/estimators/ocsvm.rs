//! OneClassSVM: libsvm's one-class decision function, `Σ dual_coef_i · K(sv_i, x) − ρ`, with the
//! kernel computed as libsvm computes it and summed in the same order.
//!
//! The RBF kernel (the common case) is evaluated for blocks of rows at once with a vectorizable
//! `exp`; a row whose decision lands so close to zero that the approximation could flip its sign
//! is recomputed with libm's `exp`, so predictions are exactly libsvm's.

use crate::detector::{Detector, TieRule, vec_bytes};
use crate::error::{Error, Result};
use crate::fastexp;
use crate::info::StepInfo;
use crate::reader::Obj;

/// A kernel, with libsvm's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kernel {
    /// `x · y`
    Linear,
    /// `(γ x·y + coef0)^degree`
    Poly {
        /// γ
        gamma: f64,
        /// coef0
        coef0: f64,
        /// degree
        degree: i32,
    },
    /// `exp(−γ |x − y|²)`
    Rbf {
        /// γ
        gamma: f64,
    },
    /// `tanh(γ x·y + coef0)`
    Sigmoid {
        /// γ
        gamma: f64,
        /// coef0
        coef0: f64,
    },
}

/// Rows scored together by the RBF kernel: enough for the vector units, small enough for
/// registers and L1.
const BLOCK: usize = 16;

/// A fitted OneClassSVM.
#[derive(Debug, Clone)]
pub struct OneClassSvm {
    kernel: Kernel,
    n_features: usize,
    /// Support vectors, row-major.
    sv: Vec<f64>,
    coef: Vec<f64>,
    rho: f64,
    /// `offset_` (= ρ), added back for `score_samples`.
    offset: f64,
    /// Σ|coef|: bounds the error of the fast RBF path.
    coef_abs_sum: f64,
    info: StepInfo,
}

/// libsvm's integer power by repeated squaring (not `powi`, whose rounding may differ).
fn libsvm_powi(base: f64, times: i32) -> f64 {
    let mut tmp = base;
    let mut ret = 1.0;
    let mut t = times;
    while t > 0 {
        if t % 2 == 1 {
            ret *= tmp;
        }
        tmp *= tmp;
        t /= 2;
    }
    ret
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

impl OneClassSvm {
    /// Reads a fitted OneClassSVM (scikit-learn 0.19 to 1.x attribute names).
    pub fn new(obj: &Obj<'_>) -> Result<OneClassSvm> {
        if obj.bool_or("_sparse", false)? {
            return Err(Error::Unsupported(
                "OneClassSVM fitted on sparse input".into(),
            ));
        }
        let sv = obj.matrix("support_vectors_")?;
        let dual = obj
            .matrix("_dual_coef_")
            .or_else(|_| obj.matrix("dual_coef_"))?;
        if dual.data.len() != sv.rows {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "_dual_coef_".into(),
                expected: format!("{} coefficients, one per support vector", sv.rows),
                found: format!("{}", dual.data.len()),
            });
        }
        let intercept = obj
            .vec_f64("_intercept_")
            .or_else(|_| obj.vec_f64("intercept_"))?;
        let [intercept] = intercept[..] else {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "_intercept_".into(),
                expected: "one value".into(),
                found: format!("{} values", intercept.len()),
            });
        };
        // scikit-learn stores -ρ as the intercept and hands libsvm ρ = -intercept.
        let rho = -intercept;
        let gamma = obj.f64("_gamma").or_else(|_| obj.f64("gamma"))?;
        let kernel_name = obj.str("kernel")?;
        let kernel = match kernel_name {
            "linear" => Kernel::Linear,
            "rbf" => Kernel::Rbf { gamma },
            "poly" => Kernel::Poly {
                gamma,
                coef0: obj.f64("coef0")?,
                degree: i32::try_from(obj.int("degree")?).map_err(|_| {
                    obj.bad(
                        "degree",
                        "a small integer",
                        obj.require("degree")
                            .unwrap_or(fleetscore_pickle::Value::None),
                    )
                })?,
            },
            "sigmoid" => Kernel::Sigmoid {
                gamma,
                coef0: obj.f64("coef0")?,
            },
            other => {
                return Err(Error::Unsupported(format!(
                    "OneClassSVM with kernel {other:?} (supported: rbf, linear, poly, sigmoid)"
                )));
            }
        };
        let offset = match obj.get("offset_") {
            Some(v) => obj.f64_of("offset_", v)?,
            None => rho,
        };
        let coef = dual.data;
        let info = StepInfo::of(obj)
            .fitted("n_support_vectors", sv.rows)
            .fitted("gamma", gamma)
            .fitted("rho", rho);
        Ok(OneClassSvm {
            kernel,
            n_features: sv.cols,
            coef_abs_sum: coef.iter().map(|c| c.abs()).sum(),
            sv: sv.data,
            coef,
            rho,
            offset,
            info,
        })
    }

    /// The decision value of one row, exactly as libsvm computes it.
    fn exact(&self, x: &[f64]) -> f64 {
        let d = self.n_features;
        let mut sum = 0.0;
        for (sv, c) in self.sv.chunks_exact(d).zip(&self.coef) {
            let k = match self.kernel {
                Kernel::Linear => dot(x, sv),
                Kernel::Poly {
                    gamma,
                    coef0,
                    degree,
                } => libsvm_powi(gamma * dot(x, sv) + coef0, degree),
                Kernel::Rbf { gamma } => {
                    let mut s = 0.0;
                    for (a, b) in x.iter().zip(sv) {
                        let t = a - b;
                        s += t * t;
                    }
                    (-gamma * s).exp()
                }
                Kernel::Sigmoid { gamma, coef0 } => (gamma * dot(x, sv) + coef0).tanh(),
            };
            sum += c * k;
        }
        sum - self.rho
    }

    /// RBF decision values for all rows, block by block. Inlined into a baseline copy, an AVX2
    /// copy that also fuses multiply-adds (`FMA`), and that copy compiled for AVX-512; all stay
    /// within a few ulp per kernel term.
    #[inline(always)]
    fn rbf_rows<const FMA: bool>(&self, gamma: f64, x: &[f64], out: &mut [f64]) {
        let d = self.n_features;
        let mut xt = vec![0.0; d * BLOCK];
        for (rows, o) in x.chunks(d * BLOCK).zip(out.chunks_mut(BLOCK)) {
            self.rbf_block::<FMA>(gamma, rows, o, &mut xt);
        }
    }

    fn rbf_rows_baseline(&self, gamma: f64, x: &[f64], out: &mut [f64]) {
        self.rbf_rows::<false>(gamma, x, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn rbf_rows_avx2_fma(&self, gamma: f64, x: &[f64], out: &mut [f64]) {
        self.rbf_rows::<true>(gamma, x, out);
    }

    /// The AVX2 copy compiled for AVX-512: the same operations lane by lane (so the same
    /// values), eight rows to a vector instead of four.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn rbf_rows_avx512(&self, gamma: f64, x: &[f64], out: &mut [f64]) {
        self.rbf_rows::<true>(gamma, x, out);
    }

    /// RBF decision values for up to [`BLOCK`] rows, sharing each support vector's load.
    /// `xt` is scratch of `n_features * BLOCK` values, reused across blocks.
    #[inline(always)]
    fn rbf_block<const FMA: bool>(
        &self,
        gamma: f64,
        rows: &[f64],
        out: &mut [f64],
        xt: &mut [f64],
    ) {
        let d = self.n_features;
        let n = out.len();
        // Transposed block: feature-major, so the per-row loops are contiguous. Columns past `n`
        // in the last block hold stale rows; they are computed and never read.
        for (r, row) in rows.chunks_exact(d).enumerate() {
            for (f, v) in row.iter().enumerate() {
                xt[f * BLOCK + r] = *v;
            }
        }
        let neg_gamma = -gamma;
        let mut acc = [0.0f64; BLOCK];
        for (sv, &c) in self.sv.chunks_exact(d).zip(&self.coef) {
            let mut d2 = [0.0f64; BLOCK];
            for (f, &s) in sv.iter().enumerate() {
                let col: &[f64; BLOCK] = xt[f * BLOCK..(f + 1) * BLOCK]
                    .try_into()
                    .expect("block-sized column");
                for r in 0..BLOCK {
                    let t = col[r] - s;
                    d2[r] = fastexp::madd::<FMA>(t, t, d2[r]);
                }
            }
            for r in 0..BLOCK {
                acc[r] =
                    fastexp::madd::<FMA>(c, fastexp::exp_with::<FMA>(neg_gamma * d2[r]), acc[r]);
            }
        }
        // The fast exp is within a few ulp per term, so the sum is within ~Σ|c|·1e-15 of
        // libsvm's; only rows that close to zero could change sign, and those are redone.
        let tolerance = 1e-6 * (self.coef_abs_sum + self.rho.abs());
        for r in 0..n {
            let dec = acc[r] - self.rho;
            out[r] = if dec.abs() <= tolerance {
                self.exact(&rows[r * d..(r + 1) * d])
            } else {
                dec
            };
        }
    }
}

impl Detector for OneClassSvm {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn decision_function(&self, x: &[f64], out: &mut [f64]) {
        let d = self.n_features;
        match self.kernel {
            Kernel::Rbf { gamma } => {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX-512F, AVX2 and FMA, as checked above.
                    #[allow(unsafe_code)]
                    unsafe {
                        self.rbf_rows_avx512(gamma, x, out)
                    };
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA, as checked on the lines above.
                    #[allow(unsafe_code)]
                    unsafe {
                        self.rbf_rows_avx2_fma(gamma, x, out)
                    };
                    return;
                }
                self.rbf_rows_baseline(gamma, x, out);
            }
            _ => {
                for (row, o) in x.chunks_exact(d).zip(out.iter_mut()) {
                    *o = self.exact(row);
                }
            }
        }
    }

    fn score_samples(&self, x: &[f64], out: &mut [f64]) {
        self.decision_function(x, out);
        for v in out.iter_mut() {
            *v += self.offset;
        }
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::PositiveIsInlier
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + vec_bytes(&self.sv) + vec_bytes(&self.coef)
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_baseline_kernels_both_match_the_exact_sum() {
        let d = 3;
        let n_sv = 37;
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        };
        let sv: Vec<f64> = (0..n_sv * d).map(|_| next()).collect();
        let coef: Vec<f64> = (0..n_sv).map(|_| next().abs() / n_sv as f64).collect();
        let svm = OneClassSvm {
            kernel: Kernel::Rbf { gamma: 0.7 },
            n_features: d,
            coef_abs_sum: coef.iter().map(|c| c.abs()).sum(),
            sv,
            coef,
            rho: 0.3,
            offset: 0.3,
            info: StepInfo {
                name: "test".into(),
                class: "OneClassSVM".into(),
                params: Default::default(),
                fitted: Default::default(),
            },
        };
        let rows = 1003;
        let x: Vec<f64> = (0..rows * d).map(|_| next()).collect();
        let mut base = vec![0.0; rows];
        svm.rbf_rows_baseline(0.7, &x, &mut base);
        let mut exact = vec![0.0; rows];
        for (row, o) in x.chunks_exact(d).zip(exact.iter_mut()) {
            *o = svm.exact(row);
        }
        for (b, e) in base.iter().zip(&exact) {
            assert!((b - e).abs() <= 1e-9 * e.abs(), "{b} vs {e}");
        }
        // Whichever copy this CPU runs (AVX2 with fused multiply-adds where it has them).
        let mut wide = vec![0.0; rows];
        svm.decision_function(&x, &mut wide);
        for (w, e) in wide.iter().zip(&exact) {
            assert!((w - e).abs() <= 1e-9 * e.abs(), "{w} vs {e}");
        }
        // The AVX2 and AVX-512 copies do the same operations lane by lane: the same bits.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let mut avx2 = vec![0.0; rows];
            // SAFETY: the CPU supports AVX2 and FMA, as checked above.
            #[allow(unsafe_code)]
            unsafe {
                svm.rbf_rows_avx2_fma(0.7, &x, &mut avx2)
            };
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut avx512 = vec![0.0; rows];
                // SAFETY: the CPU supports AVX-512F too.
                #[allow(unsafe_code)]
                unsafe {
                    svm.rbf_rows_avx512(0.7, &x, &mut avx512)
                };
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&avx2), bits(&avx512));
            }
        }
    }

    #[test]
    fn libsvm_powi_is_repeated_squaring() {
        assert_eq!(libsvm_powi(2.0, 10), 1024.0);
        assert_eq!(libsvm_powi(1.5, 0), 1.0);
        assert_eq!(libsvm_powi(3.0, -1), 1.0);
    }
}
