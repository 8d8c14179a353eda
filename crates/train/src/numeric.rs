//! The floating-point reductions scikit-learn's numbers depend on, in the order their libraries
//! round them: numpy's pairwise summation (sums, means, variances) and OpenBLAS's `ddot`, which
//! scikit-learn's libsvm calls for every kernel value.

/// Below this many elements numpy's pairwise summation is one straight loop.
const PAIRWISE_UNROLL: usize = 8;
/// numpy's `PW_BLOCKSIZE`: blocks up to this size are summed by eight interleaved partial sums;
/// longer ones are split in two (at a multiple of eight) and summed recursively.
const PAIRWISE_BLOCK: usize = 128;

/// `numpy.add.reduce` over a contiguous run of float64 (`np.sum` of a contiguous array, or of a
/// single column): numpy's pairwise summation.
pub(crate) fn pairwise_sum(v: &[f64]) -> f64 {
    let n = v.len();
    if n < PAIRWISE_UNROLL {
        // numpy starts this loop from -0.0 in newer versions and 0.0 in older ones; the two
        // differ only for a sum of negative zeros, which the caller adds to 0.0 anyway.
        return v.iter().fold(0.0, |acc, x| acc + x);
    }
    if n <= PAIRWISE_BLOCK {
        let mut r = [0.0f64; PAIRWISE_UNROLL];
        r.copy_from_slice(&v[..PAIRWISE_UNROLL]);
        let whole = n - n % PAIRWISE_UNROLL;
        for chunk in v[PAIRWISE_UNROLL..whole].chunks_exact(PAIRWISE_UNROLL) {
            for (acc, x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &v[whole..] {
            total += x;
        }
        return total;
    }
    let mut half = n / 2;
    half -= half % PAIRWISE_UNROLL;
    pairwise_sum(&v[..half]) + pairwise_sum(&v[half..])
}

/// `np.sum(x, axis=0)` of a C-ordered `rows × n_features` matrix: one column is contiguous and
/// summed pairwise; wider matrices are summed row by row, each column in a straight loop.
pub(crate) fn column_sums(x: &[f64], n_features: usize) -> Vec<f64> {
    if n_features == 1 {
        return vec![0.0 + pairwise_sum(x)];
    }
    let mut sums = vec![0.0; n_features];
    for row in x.chunks_exact(n_features) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    sums
}

/// `x.var()` over every element of a contiguous array, as numpy computes it: the mean by a
/// pairwise sum divided by the count, then the pairwise sum of squared deviations divided by
/// the count.
pub(crate) fn variance_all(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mean = (0.0 + pairwise_sum(x)) / n;
    let squares: Vec<f64> = x
        .iter()
        .map(|v| {
            let d = v - mean;
            d * d
        })
        .collect();
    (0.0 + pairwise_sum(&squares)) / n
}

/// OpenBLAS's `ddot` with unit strides, as the SkylakeX build in scipy's wheels computes it
/// (scikit-learn's libsvm takes every dot product from there).
///
/// Up to 15 elements (and for the tail past the last multiple of 16) the products are
/// accumulated in order with fused multiply-adds, as the Haswell build does too. Longer vectors
/// go through 32 partial sums (four 8-wide FMA accumulators over blocks of 32), folded to 16
/// (four 4-wide accumulators) for a last block of 16, then reduced lane-wise.
pub(crate) fn dot(x: &[f64], y: &[f64]) -> f64 {
    debug_assert_eq!(x.len(), y.len());
    let n = x.len();
    if n == 1 {
        // fma(y, x, +0.0) without the call: the product rounded once, a -0.0 made +0.0.
        return x[0] * y[0] + 0.0;
    }
    let blocked = n & !15;
    let mut sum = 0.0f64;
    if blocked > 0 {
        let by32 = blocked & !31;
        let mut wide = [[0.0f64; 8]; 4];
        for (xb, yb) in x[..by32].chunks_exact(32).zip(y[..by32].chunks_exact(32)) {
            for (q, acc) in wide.iter_mut().enumerate() {
                for (lane, a) in acc.iter_mut().enumerate() {
                    let k = 8 * q + lane;
                    *a = xb[k].mul_add(yb[k], *a);
                }
            }
        }
        let mut narrow = [[0.0f64; 4]; 4];
        for (q, acc) in narrow.iter_mut().enumerate() {
            for (lane, a) in acc.iter_mut().enumerate() {
                *a = wide[q][lane] + wide[q][lane + 4];
            }
        }
        if by32 < blocked {
            let (xb, yb) = (&x[by32..blocked], &y[by32..blocked]);
            for (q, acc) in narrow.iter_mut().enumerate() {
                for (lane, a) in acc.iter_mut().enumerate() {
                    let k = 4 * q + lane;
                    *a = xb[k].mul_add(yb[k], *a);
                }
            }
        }
        let lane = |l: usize| ((narrow[0][l] + narrow[1][l]) + narrow[2][l]) + narrow[3][l];
        sum = (lane(0) + lane(2)) + (lane(1) + lane(3));
    }
    for (a, b) in x[blocked..].iter().zip(&y[blocked..]) {
        sum = b.mul_add(*a, sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_splits_long_runs_at_multiples_of_eight() {
        // 1e16 + 1 + ... loses the ones when added in order; pairwise keeps some of them.
        let mut v = vec![1.0; 300];
        v[0] = 1e16;
        let straight: f64 = v.iter().fold(0.0, |a, x| a + x);
        assert_eq!(straight, 1e16);
        assert!(pairwise_sum(&v) > 1e16);
        assert_eq!(pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
    }

    #[test]
    fn short_dot_products_are_fused_in_order() {
        let x = [1.0 + f64::EPSILON, 1.0 - f64::EPSILON];
        let y = [1.0 - f64::EPSILON, 1.0 + f64::EPSILON];
        // fma keeps the -eps² of the first product, which a rounded product would drop.
        let fused = x[1].mul_add(y[1], x[0] * y[0]);
        assert_eq!(dot(&x, &y), fused);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    /// scipy's `ddot` (OpenBLAS 0.3.30, SkylakeX kernel) on rational test vectors: neither a
    /// plain nor a fused sequential sum gives these bits from 16 elements on.
    #[test]
    fn dot_products_have_openblas_bits() {
        let expected: [(usize, u64); 6] = [
            (15, 0x40180e4b06143949),
            (20, 0xc0169a32f1ea1d93),
            (37, 0x400cea80481e20e9),
            (50, 0x40399fa028cdad84),
            (64, 0xc0344fb94e4188e0),
            (100, 0x404585cc1b29a9d1),
        ];
        for (n, bits) in expected {
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 7919) % 1013) as f64 / 97.0 - 5.0)
                .collect();
            let y: Vec<f64> = (0..n)
                .map(|i| ((i * 104_729) % 991) as f64 / 89.0 - 5.5)
                .collect();
            assert_eq!(dot(&x, &y).to_bits(), bits, "n = {n}");
        }
    }

    #[test]
    fn long_dot_products_agree_with_a_plain_sum() {
        for n in [16, 17, 31, 32, 33, 48, 70] {
            let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let y: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let plain: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((dot(&x, &y) - plain).abs() < 1e-12, "n = {n}");
        }
    }
}
