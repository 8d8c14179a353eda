//! numpy's legacy `RandomState` (MT19937 seeded from one integer) with the draws scikit-learn
//! makes while fitting: `random_sample`/`uniform`, bounded `randint` by masked rejection,
//! `shuffle`/`permutation`, and scikit-learn's `sample_without_replacement` on top of them.
//!
//! Every draw consumes the generator's 32-bit words exactly as numpy does, so a sequence of calls
//! here gives numpy's numbers for the same seed, bit for bit.

/// Words of MT19937 state.
const N: usize = 624;
/// The twist's middle offset.
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's `numpy.random.RandomState(seed)` for an integer seed.
#[derive(Clone)]
pub struct RandomState {
    key: [u32; N],
    /// The next word of `key` to temper; `N` means the state must be twisted first.
    pos: usize,
}

impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomState")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl RandomState {
    /// The generator `numpy.random.RandomState(seed)` starts as: Knuth's linear recurrence over
    /// the seed, as in the Mersenne Twister's reference `init_genrand` (numpy's legacy seeding of
    /// an integer, not the `init_by_array` it uses for arrays).
    pub fn new(seed: u32) -> RandomState {
        let mut key = [0u32; N];
        let mut s = seed;
        for (i, k) in key.iter_mut().enumerate() {
            *k = s;
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(i as u32 + 1);
        }
        RandomState { key, pos: N }
    }

    /// Regenerates all `N` words of state.
    fn twist(&mut self) {
        let mix = |hi: u32, lo: u32, far: u32| {
            let y = (hi & UPPER_MASK) | (lo & LOWER_MASK);
            far ^ (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 }
        };
        for i in 0..N {
            self.key[i] = mix(self.key[i], self.key[(i + 1) % N], self.key[(i + M) % N]);
        }
        self.pos = 0;
    }

    /// The next 32 random bits (numpy's `next_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.twist();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The next 64 random bits: two words, the first one high (numpy's `next_uint64`).
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// A float in [0, 1) with 53 random bits (numpy's `random_sample`): 27 bits from one word
    /// and 26 from the next.
    pub fn random_sample(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `uniform(low, high)`: `low + (high - low) · random_sample()`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random_sample()
    }

    /// `randint(low, high)` with numpy's default integer type (int64): a value in
    /// [`low`, `high`) by masked rejection, drawing 32-bit words when the range fits in 32 bits
    /// and 64-bit pairs otherwise; no draw at all when the range holds one value.
    ///
    /// # Panics
    /// When `low >= high`, where numpy raises `ValueError`.
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        assert!(low < high, "randint: low {low} >= high {high}");
        // The inclusive range, as an unsigned offset from `low`.
        let rng = (high as u64).wrapping_sub(low as u64).wrapping_sub(1);
        (low as u64).wrapping_add(self.bounded_masked(rng)) as i64
    }

    /// `randint(low, high, size=n)`: `n` draws of [`RandomState::randint`].
    pub fn randint_n(&mut self, low: i64, high: i64, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.randint(low, high)).collect()
    }

    /// A value in [0, `rng`] by masked rejection (numpy's `random_bounded_uint64` with
    /// `use_masked`).
    fn bounded_masked(&mut self, rng: u64) -> u64 {
        if rng == 0 {
            return 0;
        }
        let mask = mask_of(rng);
        if rng <= u64::from(u32::MAX) {
            if rng == u64::from(u32::MAX) {
                return u64::from(self.next_u32());
            }
            let mask = mask as u32;
            loop {
                let v = self.next_u32() & mask;
                if u64::from(v) <= rng {
                    return u64::from(v);
                }
            }
        } else if rng == u64::MAX {
            self.next_u64()
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= rng {
                    return v;
                }
            }
        }
    }

    /// A value in [0, `max`] by masked rejection (numpy's `random_interval`, which `shuffle`
    /// uses).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = mask_of(max);
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// Shuffles `items` in place as the legacy `shuffle` does: Fisher–Yates from the last
    /// element down, swapping element `i` with one drawn from [0, `i`].
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// `permutation(n)`: 0..`n` shuffled.
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut out: Vec<i64> = (0..n as i64).collect();
        self.shuffle(&mut out);
        out
    }
}

/// The smallest all-ones bit mask not below `max`.
fn mask_of(max: u64) -> u64 {
    if max == 0 {
        0
    } else {
        u64::MAX >> max.leading_zeros()
    }
}

/// How scikit-learn's `sample_without_replacement` draws, chosen by its `method="auto"` rule
/// from the fraction `n_samples / n_population`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleMethod {
    /// More than 1% and less than 99% of the population: the first `n_samples` of a
    /// `permutation(n_population)`.
    Permutation,
    /// At most 1%: draw `randint(n_population)` again until an unseen value comes.
    TrackingSelection,
    /// At least 99% (or an empty population): keep 0..`n_samples` and let each later value
    /// replace a random slot, when the slot drawn from [0, `i`] is one of them.
    Reservoir,
}

impl SampleMethod {
    /// The method scikit-learn's `"auto"` picks.
    pub fn auto(n_population: usize, n_samples: usize) -> SampleMethod {
        let ratio = if n_population == 0 {
            1.0
        } else {
            n_samples as f64 / n_population as f64
        };
        if ratio > 0.01 && ratio < 0.99 {
            SampleMethod::Permutation
        } else if ratio < 0.2 {
            SampleMethod::TrackingSelection
        } else {
            SampleMethod::Reservoir
        }
    }
}

/// scikit-learn's `sample_without_replacement(n_population, n_samples, method="auto")`: distinct
/// integers in [0, `n_population`), in the order scikit-learn returns them.
///
/// # Panics
/// When `n_samples > n_population`, which scikit-learn refuses.
pub fn sample_without_replacement(
    rng: &mut RandomState,
    n_population: usize,
    n_samples: usize,
) -> Vec<i64> {
    sample_without_replacement_by(
        rng,
        n_population,
        n_samples,
        SampleMethod::auto(n_population, n_samples),
    )
}

/// [`sample_without_replacement`] by a given method.
///
/// # Panics
/// When `n_samples > n_population`.
pub fn sample_without_replacement_by(
    rng: &mut RandomState,
    n_population: usize,
    n_samples: usize,
    method: SampleMethod,
) -> Vec<i64> {
    assert!(
        n_samples <= n_population,
        "sample_without_replacement: {n_samples} samples from a population of {n_population}"
    );
    let pop = n_population as i64;
    match method {
        SampleMethod::Permutation => {
            let mut out = rng.permutation(n_population);
            out.truncate(n_samples);
            out
        }
        SampleMethod::TrackingSelection => {
            let mut seen = std::collections::HashSet::with_capacity(n_samples);
            let mut out = Vec::with_capacity(n_samples);
            for _ in 0..n_samples {
                let mut j = rng.randint(0, pop);
                while !seen.insert(j) {
                    j = rng.randint(0, pop);
                }
                out.push(j);
            }
            out
        }
        SampleMethod::Reservoir => {
            let mut out: Vec<i64> = (0..n_samples as i64).collect();
            for i in n_samples as i64..pop {
                let j = rng.randint(0, i + 1);
                if j < n_samples as i64 {
                    out[j as usize] = i;
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_their_maximum() {
        assert_eq!(mask_of(1), 1);
        assert_eq!(mask_of(2), 3);
        assert_eq!(mask_of(255), 255);
        assert_eq!(mask_of(256), 511);
        assert_eq!(mask_of(u64::MAX), u64::MAX);
    }

    #[test]
    fn mt19937_matches_the_reference_output() {
        // init_genrand(5489), the reference implementation's default seed: its first outputs
        // are published with mt19937ar.c (and are what C++'s std::mt19937 yields).
        let mut rng = RandomState::new(5489);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, [3_499_211_612, 581_869_302, 3_890_346_734]);
        let mut rng = RandomState::new(5489);
        for _ in 0..9_999 {
            rng.next_u32();
        }
        // The 10000th output of std::mt19937, fixed by the C++ standard.
        assert_eq!(rng.next_u32(), 4_123_659_995);
    }

    #[test]
    fn auto_method_follows_the_ratio() {
        assert_eq!(SampleMethod::auto(4, 4), SampleMethod::Reservoir);
        assert_eq!(SampleMethod::auto(0, 0), SampleMethod::Reservoir);
        assert_eq!(SampleMethod::auto(1000, 256), SampleMethod::Permutation);
        assert_eq!(
            SampleMethod::auto(1000, 10),
            SampleMethod::TrackingSelection
        );
        assert_eq!(SampleMethod::auto(1000, 11), SampleMethod::Permutation);
        assert_eq!(SampleMethod::auto(100, 99), SampleMethod::Reservoir);
        assert_eq!(SampleMethod::auto(1000, 0), SampleMethod::TrackingSelection);
    }
}
