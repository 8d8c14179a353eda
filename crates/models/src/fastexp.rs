//! A branch-free `exp` for batches, so the RBF kernel's inner loop vectorizes. Accurate to a few
//! ulp on the range the kernel uses (arguments ≤ 0); results below `f64::MIN_POSITIVE` flush to
//! zero. Callers that need libm's exact bits (ties at a decision threshold) recompute with
//! [`f64::exp`].
//!
//! `exp_with::<true>` evaluates the polynomial with fused multiply-adds: only for code
//! compiled with the `fma` target feature (elsewhere `mul_add` is a slow library call).

const LOG2E: f64 = std::f64::consts::LOG2_E;
// ln(2) split in a high part with trailing zero bits and a low correction (Cody and Waite), so
// that `k * LN2_HI` is exact for the k that occur here.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
// Adding 1.5 * 2^52 rounds to an integer and leaves it in the low mantissa bits.
const SHIFT: f64 = 6_755_399_441_055_744.0;
/// Below this, `exp(x)` is subnormal; the result is flushed to zero.
const MIN_ARG: f64 = -708.396_418_532_264;
const MAX_ARG: f64 = 709.0;

/// `a * b + c`, fused (one rounding) when `FMA`.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `exp(x)` within a few ulp of the correctly rounded result, for `x ≤ 709`; the polynomial
/// with fused multiply-adds when `FMA`.
#[inline(always)]
pub fn exp_with<const FMA: bool>(x: f64) -> f64 {
    let xc = x.clamp(MIN_ARG, MAX_ARG);
    let t = xc * LOG2E + SHIFT;
    let k = t - SHIFT;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    // |r| ≤ ln(2)/2: Taylor series to r^13 leaves a truncation error below 1e-17.
    let p = 1.0 / 6_227_020_800.0;
    let p = madd::<FMA>(p, r, 1.0 / 479_001_600.0);
    let p = madd::<FMA>(p, r, 1.0 / 39_916_800.0);
    let p = madd::<FMA>(p, r, 1.0 / 3_628_800.0);
    let p = madd::<FMA>(p, r, 1.0 / 362_880.0);
    let p = madd::<FMA>(p, r, 1.0 / 40_320.0);
    let p = madd::<FMA>(p, r, 1.0 / 5_040.0);
    let p = madd::<FMA>(p, r, 1.0 / 720.0);
    let p = madd::<FMA>(p, r, 1.0 / 120.0);
    let p = madd::<FMA>(p, r, 1.0 / 24.0);
    let p = madd::<FMA>(p, r, 1.0 / 6.0);
    let p = madd::<FMA>(p, r, 0.5);
    let p = madd::<FMA>(p, r, 1.0);
    let p = madd::<FMA>(p, r, 1.0);
    // 2^k from the integer in t's low bits: k + 1023 in the exponent field.
    let ki = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f64::from_bits(ki.wrapping_add(1023) << 52);
    let y = p * scale;
    if x < MIN_ARG { 0.0 } else { y }
}

#[cfg(test)]
mod tests {
    /// The worst relative error against libm over the range the kernel uses, and the ends.
    fn check_against_libm(exp: fn(f64) -> f64) {
        let mut worst = 0.0f64;
        let mut x: f64 = -708.0;
        while x < 700.0 {
            let want = x.exp();
            worst = worst.max(((exp(x) - want) / want).abs());
            x += 0.013_7;
        }
        assert!(worst < 4.0 * f64::EPSILON, "worst relative error {worst:e}");
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn matches_libm_within_a_few_ulp() {
        check_against_libm(super::exp_with::<false>);
    }

    #[test]
    fn the_fused_polynomial_matches_libm_within_a_few_ulp() {
        // Outside an `fma` build `mul_add` is the library's exact fused operation: the same
        // arithmetic as the vector code, only slower.
        check_against_libm(super::exp_with::<true>);
    }
}
