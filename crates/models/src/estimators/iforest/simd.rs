//! IsolationForest's tree walk, sixteen rows per AVX-512 vector.
//!
//! Each tree is laid out level by level as a complete binary tree: level `L` holds `2^L` nodes
//! (feature, threshold), and a row's position in level `L + 1` is `2·i` when its value is at most
//! the node's threshold and `2·i + 1` otherwise — exactly the scalar walk's decision, NaN
//! included (NaN is not `<=` anything, so it goes right). A leaf above the bottom level fills
//! every bottom slot beneath it with its value, so whatever the nodes below it say, a row ends on
//! that value. The per-level lookups are register permutes (`vpermps`, `vpermt2ps`), not
//! gathers: a level has at most 128 nodes, eight registers. Only the leaf values are gathered.
//!
//! Each row adds its trees' leaf values in tree order, as the scalar walk does, so the sums are
//! bit-identical to it.

use super::Flat;

/// The deepest tree this layout takes: `2^8` leaves, 128 nodes in the last level of splits.
/// IsolationForest's default (`max_samples = 256`) grows trees at most `ceil(log2 256) = 8` deep.
pub(crate) const MAX_DEPTH: u32 = 8;

/// The most input features the walk selects among with blends; wider forests use the scalar
/// walk.
pub(crate) const MAX_FEATURES: usize = 8;

/// Vectors of sixteen rows walked down a tree together: their lookups share the tree's level
/// tables while they are in L1.
const VECTORS: usize = 4;
/// Rows per chunk.
pub(crate) const CHUNK: usize = 16 * VECTORS;

/// Entries a level's table takes: at least one register of sixteen.
fn level_width(level: u32) -> usize {
    (1usize << level).max(16)
}

/// Where level `level` starts in a tree's tables.
fn level_offset(level: u32) -> usize {
    (0..level).map(level_width).sum()
}

/// A forest in the complete, level-by-level layout.
#[derive(Debug, Clone)]
pub(crate) struct Levels {
    /// Per tree: where its tables and leaves start, and its depth.
    trees: Vec<(u32, u32, u32)>,
    thresholds: Vec<f32>,
    features: Vec<i32>,
    leaves: Vec<f64>,
}

impl Levels {
    /// Entries (of 8 bytes or less) the layout of `forest` would take, or `None` when a tree
    /// is deeper than [`MAX_DEPTH`] or the forest reads more than [`MAX_FEATURES`] columns.
    pub(crate) fn size_of(forest: &Flat<'_>) -> Option<usize> {
        if forest.n_features > MAX_FEATURES {
            return None;
        }
        let mut total = 0usize;
        for &(_, depth) in forest.trees {
            if depth > MAX_DEPTH {
                return None;
            }
            total += 2 * level_offset(depth) + (1usize << depth);
        }
        Some(total)
    }

    /// Lays `forest` out; call only when [`Levels::size_of`] is `Some`.
    pub(crate) fn new(forest: &Flat<'_>) -> Levels {
        // Allocated once at their final sizes, which [`Levels::bytes_of`] counts.
        let table: usize = forest.trees.iter().map(|t| level_offset(t.1)).sum();
        let leaves: usize = forest.trees.iter().map(|t| 1usize << t.1).sum();
        let mut levels = Levels {
            trees: Vec::with_capacity(forest.trees.len()),
            thresholds: Vec::with_capacity(table),
            features: Vec::with_capacity(table),
            leaves: Vec::with_capacity(leaves),
        };
        for &(root, depth) in forest.trees {
            let table = levels.thresholds.len();
            let leaf = levels.leaves.len();
            let width = level_offset(depth);
            levels.thresholds.resize(table + width, 0.0);
            levels.features.resize(table + width, 0);
            levels.leaves.resize(leaf + (1usize << depth), 0.0);
            levels.trees.push((table as u32, leaf as u32, depth));
            levels.place(forest, root, 0, 0, table, leaf, depth);
        }
        levels
    }

    /// Puts `node` at position `i` of `level`, and its subtree below it.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        forest: &Flat<'_>,
        node: u32,
        level: u32,
        i: usize,
        table: usize,
        leaf: usize,
        depth: u32,
    ) {
        let n = forest.nodes[node as usize];
        if n.left == node {
            let below = depth - level;
            let first = leaf + (i << below);
            self.leaves[first..first + (1 << below)].fill(forest.leaf_value[node as usize]);
            return;
        }
        let at = table + level_offset(level) + i;
        self.thresholds[at] = n.threshold;
        self.features[at] = n.feature as i32;
        self.place(forest, n.left, level + 1, 2 * i, table, leaf, depth);
        self.place(forest, n.right, level + 1, 2 * i + 1, table, leaf, depth);
    }

    /// Bytes the layout of `forest` takes once made (`size_of` must be `Some`): what a model
    /// cache counts for it before the first large call makes it.
    pub(crate) fn bytes_of(forest: &Flat<'_>) -> usize {
        forest
            .trees
            .iter()
            .map(|t| std::mem::size_of::<(u32, u32, u32)>() + 8 * level_offset(t.1) + (8 << t.1))
            .sum()
    }

    /// Bytes held: what [`Levels::bytes_of`] says, as the tests check.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.trees.capacity() * std::mem::size_of::<(u32, u32, u32)>()
            + self.thresholds.capacity() * 4
            + self.features.capacity() * 4
            + self.leaves.capacity() * 8
    }

    /// Whether this CPU runs [`Levels::path_lengths`].
    pub(crate) fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Adds each row's leaf values, tree by tree in order, into `depths` (zeroed by the
    /// caller). `cols` holds up to [`CHUNK`] rows cast to f32, feature-major: feature `f` of
    /// row `r` at `cols[f * CHUNK + r]`; rows past `depths.len()` are padding and not written.
    /// Call only when [`Levels::supported`] is true.
    pub(crate) fn path_lengths(&self, n_features: usize, cols: &[f32], depths: &mut [f64]) {
        assert!(cols.len() >= n_features * CHUNK && depths.len() <= CHUNK);
        assert!((1..=MAX_FEATURES).contains(&n_features));
        #[cfg(target_arch = "x86_64")]
        {
            assert!(Levels::supported(), "the AVX-512 walk needs AVX-512F");
            // SAFETY: the CPU has AVX-512F (asserted above); `walk` reads `cols` within the
            // bounds asserted above and each tree's tables and leaves within the ranges `new`
            // allocated for its depth.
            #[allow(unsafe_code)]
            unsafe {
                self.walk(n_features, cols, depths)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (n_features, cols, depths);
            unreachable!("the AVX-512 walk is x86-64 only");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(unsafe_code)]
    unsafe fn walk(&self, d: usize, cols: &[f32], depths: &mut [f64]) {
        // SAFETY (all arms): as for `walk_d`, whose caller checked AVX-512F and the bounds.
        unsafe {
            match d {
                1 => self.walk_d::<1>(cols, depths),
                2 => self.walk_d::<2>(cols, depths),
                3 => self.walk_d::<3>(cols, depths),
                4 => self.walk_d::<4>(cols, depths),
                5 => self.walk_d::<5>(cols, depths),
                6 => self.walk_d::<6>(cols, depths),
                7 => self.walk_d::<7>(cols, depths),
                _ => self.walk_d::<8>(cols, depths),
            }
        }
    }

    /// The walk for `D` features, so that the feature selection unrolls and the columns stay
    /// in registers. Index loops, not iterator adapters: the adapters were left as calls out of
    /// this AVX-512 function, with the vectors passed through memory (3x slower, measured).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(unsafe_code, clippy::needless_range_loop)]
    unsafe fn walk_d<const D: usize>(&self, cols: &[f32], depths: &mut [f64]) {
        use std::arch::x86_64::*;

        let mut x = [[_mm512_setzero_ps(); VECTORS]; D];
        for f in 0..D {
            for j in 0..VECTORS {
                // SAFETY: `f < D` and `j < VECTORS`, so the sixteen floats are within
                // `cols[..D * CHUNK]`, which the caller checked.
                x[f][j] = unsafe { _mm512_loadu_ps(cols.as_ptr().add(f * CHUNK + 16 * j)) };
            }
        }
        let mut acc = [[_mm512_setzero_pd(); 2]; VECTORS];
        let one = _mm512_set1_epi32(1);
        for &(table, leaf, depth) in &self.trees {
            let thresholds = self.thresholds[table as usize..].as_ptr();
            let features = self.features[table as usize..].as_ptr();
            let mut at = [_mm512_setzero_si512(); VECTORS];
            for level in 0..depth {
                let offset = level_offset(level);
                for j in 0..VECTORS {
                    let i = at[j];
                    // SAFETY: level `level` of this tree has `level_width(level)` entries from
                    // `offset`, within the tables `new` made for a tree of this depth, and `i`
                    // holds positions below `2^level`: each lookup reads only the level's
                    // entries.
                    let (thr, feat) = unsafe {
                        let thr = lookup(level, thresholds.add(offset), i);
                        let feat = if D > 1 {
                            _mm512_castps_si512(lookup(level, features.add(offset).cast(), i))
                        } else {
                            _mm512_setzero_si512()
                        };
                        (thr, feat)
                    };
                    let mut v = x[0][j];
                    for k in 1..D {
                        let m = _mm512_cmpeq_epi32_mask(feat, _mm512_set1_epi32(k as i32));
                        v = _mm512_mask_blend_ps(m, v, x[k][j]);
                    }
                    let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, thr);
                    let twice = _mm512_add_epi32(i, i);
                    at[j] = _mm512_mask_add_epi32(twice, !le, twice, one);
                }
            }
            let leaves = self.leaves[leaf as usize..].as_ptr();
            for j in 0..VECTORS {
                let lo = _mm512_castsi512_si256(at[j]);
                let hi = _mm512_extracti64x4_epi64::<1>(at[j]);
                // SAFETY: positions are below `2^depth`, the tree's leaf count.
                let (vlo, vhi) = unsafe {
                    (
                        _mm512_i32gather_pd::<8>(lo, leaves),
                        _mm512_i32gather_pd::<8>(hi, leaves),
                    )
                };
                acc[j][0] = _mm512_add_pd(acc[j][0], vlo);
                acc[j][1] = _mm512_add_pd(acc[j][1], vhi);
            }
        }
        let mut sums = [0.0f64; CHUNK];
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: `sums` has 16 · VECTORS entries.
            unsafe {
                _mm512_storeu_pd(sums.as_mut_ptr().add(16 * j), a[0]);
                _mm512_storeu_pd(sums.as_mut_ptr().add(16 * j + 8), a[1]);
            }
        }
        for (o, s) in depths.iter_mut().zip(sums) {
            *o += s;
        }
    }
}

/// Sixteen lanes' entries of one level's table at `p`, by their positions `i` (below
/// `2^level`): register permutes over the level's one to eight registers.
///
/// # Safety
/// The CPU has AVX-512F, and `p` points at `level_width(level)` readable floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code)]
unsafe fn lookup(
    level: u32,
    p: *const f32,
    i: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: every load is within the level's `level_width(level)` entries.
    unsafe {
        let pair = |o: usize| {
            _mm512_permutex2var_ps(_mm512_loadu_ps(p.add(o)), i, _mm512_loadu_ps(p.add(o + 16)))
        };
        match level {
            0..=4 => _mm512_permutexvar_ps(i, _mm512_loadu_ps(p)),
            5 => pair(0),
            6 => {
                let m5 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(32));
                _mm512_mask_blend_ps(m5, pair(0), pair(32))
            }
            _ => {
                let m5 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(32));
                let m6 = _mm512_test_epi32_mask(i, _mm512_set1_epi32(64));
                let lo = _mm512_mask_blend_ps(m5, pair(0), pair(32));
                let hi = _mm512_mask_blend_ps(m5, pair(64), pair(96));
                _mm512_mask_blend_ps(m6, lo, hi)
            }
        }
    }
}
