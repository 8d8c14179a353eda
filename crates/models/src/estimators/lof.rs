//! LocalOutlierFactor with `novelty=True`: for a new row, its k nearest training rows, its local
//! reachability density, and minus the mean ratio of the neighbours' densities to its own.
//!
//! Neighbours are found by exhaustive search with exact distances (what scikit-learn's KD and
//! ball trees return); means use numpy's pairwise summation so that the last bits agree.

use crate::detector::{Detector, TieRule, vec_bytes};
use crate::error::{Error, Result};
use crate::info::StepInfo;
use crate::reader::Obj;

/// A distance metric scikit-learn's neighbour search supports and this crate implements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// L2.
    Euclidean,
    /// L1.
    Manhattan,
    /// L∞.
    Chebyshev,
    /// Lp for another p.
    Minkowski(f64),
}

impl Metric {
    fn distance(self, a: &[f64], b: &[f64]) -> f64 {
        match self {
            Metric::Euclidean => {
                let mut s = 0.0;
                for (x, y) in a.iter().zip(b) {
                    let t = x - y;
                    s += t * t;
                }
                s.sqrt()
            }
            Metric::Manhattan => {
                let mut s = 0.0;
                for (x, y) in a.iter().zip(b) {
                    s += (x - y).abs();
                }
                s
            }
            Metric::Chebyshev => {
                let mut s = 0.0f64;
                for (x, y) in a.iter().zip(b) {
                    s = s.max((x - y).abs());
                }
                s
            }
            Metric::Minkowski(p) => {
                let mut s = 0.0;
                for (x, y) in a.iter().zip(b) {
                    s += (x - y).abs().powf(p);
                }
                s.powf(1.0 / p)
            }
        }
    }
}

/// numpy's pairwise summation for a short contiguous run (how `np.mean(axis=1)` adds a row).
pub(crate) fn numpy_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut s = 0.0;
        for v in a {
            s += v;
        }
        s
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[i..] {
            s += v;
        }
        s
    } else {
        let half = (n / 2) / 8 * 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// A fitted LocalOutlierFactor (novelty mode).
#[derive(Debug, Clone)]
pub struct LocalOutlierFactor {
    metric: Metric,
    k: usize,
    n_features: usize,
    /// Training rows, row-major.
    fit_x: Vec<f64>,
    /// Each training row's distance to its k-th neighbour.
    k_distance: Vec<f64>,
    /// Each training row's local reachability density.
    lrd: Vec<f64>,
    offset: f64,
    info: StepInfo,
}

impl LocalOutlierFactor {
    /// Reads a fitted LocalOutlierFactor; refuses one fitted with `novelty=False`.
    pub fn new(obj: &Obj<'_>) -> Result<LocalOutlierFactor> {
        if !obj.bool_or("novelty", false)? {
            return Err(Error::Unsupported(
                "LocalOutlierFactor fitted with novelty=False: scikit-learn only scores new data with novelty=True".into(),
            ));
        }
        let fit_x = obj.matrix("_fit_X")?;
        let k = obj.int("n_neighbors_")?;
        let k = usize::try_from(k)
            .ok()
            .filter(|&k| k >= 1 && k <= fit_x.rows)
            .ok_or_else(|| Error::BadAttr {
                class: obj.class.to_string(),
                attr: "n_neighbors_".into(),
                expected: format!("between 1 and {}", fit_x.rows),
                found: k.to_string(),
            })?;
        let dist = obj.matrix("_distances_fit_X_")?;
        if dist.rows != fit_x.rows || dist.cols < k {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "_distances_fit_X_".into(),
                expected: format!("{}×{k}", fit_x.rows),
                found: format!("{}×{}", dist.rows, dist.cols),
            });
        }
        let k_distance = dist
            .data
            .chunks_exact(dist.cols)
            .map(|r| r[k - 1])
            .collect();
        let lrd = obj.vec_f64("_lrd")?;
        if lrd.len() != fit_x.rows {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "_lrd".into(),
                expected: format!("{} values", fit_x.rows),
                found: format!("{}", lrd.len()),
            });
        }
        let metric_name = obj
            .str("effective_metric_")
            .or_else(|_| obj.str("metric"))?;
        let p = match obj
            .get("effective_metric_params_")
            .and_then(|v| obj.pk.dict_get(v, "p"))
        {
            Some(v) => obj.f64_of("effective_metric_params_", v)?,
            None => obj
                .get("p")
                .map(|v| obj.f64_of("p", v))
                .transpose()?
                .unwrap_or(2.0),
        };
        let metric = match metric_name {
            "euclidean" | "l2" => Metric::Euclidean,
            "manhattan" | "cityblock" | "l1" => Metric::Manhattan,
            "chebyshev" | "infinity" => Metric::Chebyshev,
            "minkowski" if p == 2.0 => Metric::Euclidean,
            "minkowski" if p == 1.0 => Metric::Manhattan,
            "minkowski" if p.is_infinite() => Metric::Chebyshev,
            "minkowski" if p > 0.0 => Metric::Minkowski(p),
            other => {
                return Err(Error::Unsupported(format!(
                    "LocalOutlierFactor with metric {other:?} (supported: euclidean, manhattan, chebyshev, minkowski)"
                )));
            }
        };
        let info = StepInfo::of(obj)
            .fitted("n_training_rows", fit_x.rows)
            .fitted("n_neighbors_", k);
        Ok(LocalOutlierFactor {
            metric,
            k,
            n_features: fit_x.cols,
            fit_x: fit_x.data,
            k_distance,
            lrd,
            offset: obj.f64("offset_")?,
            info,
        })
    }
}

impl Detector for LocalOutlierFactor {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn decision_function(&self, x: &[f64], out: &mut [f64]) {
        self.score_samples(x, out);
        for v in out.iter_mut() {
            *v -= self.offset;
        }
    }

    fn score_samples(&self, x: &[f64], out: &mut [f64]) {
        let d = self.n_features;
        let k = self.k;
        let mut all: Vec<(f64, u32)> = Vec::with_capacity(self.lrd.len());
        let mut reach = vec![0.0; k];
        let mut ratios = vec![0.0; k];
        for (row, o) in x.chunks_exact(d).zip(out.iter_mut()) {
            all.clear();
            all.extend(
                self.fit_x
                    .chunks_exact(d)
                    .enumerate()
                    .map(|(i, t)| (self.metric.distance(row, t), i as u32)),
            );
            let by_distance =
                |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if k < all.len() {
                all.select_nth_unstable_by(k - 1, by_distance);
            }
            let nearest = &mut all[..k];
            nearest.sort_unstable_by(by_distance);
            for (r, (dist, i)) in reach.iter_mut().zip(nearest.iter()) {
                *r = dist.max(self.k_distance[*i as usize]);
            }
            let lrd = 1.0 / (numpy_sum(&reach) / k as f64 + 1e-10);
            for (q, (_, i)) in ratios.iter_mut().zip(nearest.iter()) {
                *q = self.lrd[*i as usize] / lrd;
            }
            *o = -(numpy_sum(&ratios) / k as f64);
        }
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::NegativeIsOutlier
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + vec_bytes(&self.fit_x)
            + vec_bytes(&self.k_distance)
            + vec_bytes(&self.lrd)
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_sum_blocks_like_numpy() {
        let a: Vec<f64> = (0..20).map(|i| 0.1 * i as f64).collect();
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        for j in 0..8 {
            r[j] += a[8 + j];
        }
        let want = ((r[0] + r[1]) + (r[2] + r[3]))
            + ((r[4] + r[5]) + (r[6] + r[7]))
            + a[16]
            + a[17]
            + a[18]
            + a[19];
        assert_eq!(numpy_sum(&a), want);
        assert_eq!(numpy_sum(&[1.0, 2.0]), 3.0);
    }
}
