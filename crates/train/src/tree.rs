//! scikit-learn's `ExtraTreeRegressor` as IsolationForest grows it: a depth-first builder, the
//! random splitter on dense float32 input with `max_features=1`, and the squared-error criterion
//! over per-sample weights (the bootstrap counts).
//!
//! The tree keeps scikit-learn's node records field for field (impurities and values included,
//! summed in scikit-learn's order), so a pickled tree is the one scikit-learn would have grown.

use crate::rng::RandomState;

/// What scikit-learn writes in a leaf's `left_child`/`right_child` (`_TREE_LEAF`).
pub const TREE_LEAF: i64 = -1;
/// What scikit-learn writes in a leaf's `feature` and `threshold` (`_TREE_UNDEFINED`).
pub const TREE_UNDEFINED: i64 = -2;

/// Largest value the tree's xorshift generator returns (`RAND_R_MAX`, 2³¹ − 1).
const RAND_R_MAX: u32 = 0x7fff_ffff;
/// Feature values this close count as equal (`FEATURE_THRESHOLD`, compared in float32).
const FEATURE_THRESHOLD: f32 = 1e-7;

/// One node, as the fields of scikit-learn's `NODE_DTYPE` record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    /// The left child's index, or [`TREE_LEAF`].
    pub left_child: i64,
    /// The right child's index, or [`TREE_LEAF`].
    pub right_child: i64,
    /// The split's column of the tree's input, or [`TREE_UNDEFINED`] in a leaf.
    pub feature: i64,
    /// Rows with `value <= threshold` go left; `-2.0` in a leaf.
    pub threshold: f64,
    /// The node's weighted variance of the regression target.
    pub impurity: f64,
    /// Distinct training rows in the node.
    pub n_node_samples: i64,
    /// Their total weight (bootstrap counts).
    pub weighted_n_node_samples: f64,
    /// Where a missing value would go; scikit-learn sets it for splits without missing values
    /// to whether the left side got more rows.
    pub missing_go_to_left: bool,
}

impl Node {
    /// Whether the node is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.left_child == TREE_LEAF
    }

    /// The node as the 64 bytes of its `NODE_DTYPE` record (little-endian, zero padding).
    pub fn record_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0..8].copy_from_slice(&self.left_child.to_le_bytes());
        out[8..16].copy_from_slice(&self.right_child.to_le_bytes());
        out[16..24].copy_from_slice(&self.feature.to_le_bytes());
        out[24..32].copy_from_slice(&self.threshold.to_le_bytes());
        out[32..40].copy_from_slice(&self.impurity.to_le_bytes());
        out[40..48].copy_from_slice(&self.n_node_samples.to_le_bytes());
        out[48..56].copy_from_slice(&self.weighted_n_node_samples.to_le_bytes());
        out[56] = u8::from(self.missing_go_to_left);
        out
    }
}

/// A fitted tree: scikit-learn's `Tree` state.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The nodes, in the order the depth-first builder added them (a parent before its
    /// children, a left subtree before the right one).
    pub nodes: Vec<Node>,
    /// Per node, the weighted mean of the regression target.
    pub values: Vec<f64>,
    /// The deepest node's depth, the root's being 0.
    pub max_depth: usize,
}

impl Tree {
    /// Per node its depth counting the root as 1 (scikit-learn's `compute_node_depths`).
    pub fn node_depths(&self) -> Vec<i64> {
        let mut depths = vec![0i64; self.nodes.len()];
        if let Some(d) = depths.first_mut() {
            *d = 1;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_leaf() {
                let d = depths[i] + 1;
                depths[node.left_child as usize] = d;
                depths[node.right_child as usize] = d;
            }
        }
        depths
    }

    /// The leaf a row (float32, the tree's columns) ends in.
    pub fn apply(&self, row: &[f32]) -> usize {
        let mut i = 0;
        while !self.nodes[i].is_leaf() {
            let node = &self.nodes[i];
            i = if f64::from(row[node.feature as usize]) <= node.threshold {
                node.left_child as usize
            } else {
                node.right_child as usize
            };
        }
        i
    }
}

/// The training set one tree sees.
#[derive(Debug, Clone, Copy)]
pub struct TreeInput<'a> {
    /// Row-major float32 values, `n_columns` per row, every training row (rows drawn zero times
    /// have weight 0 and are left out, as scikit-learn's splitter does).
    pub x: &'a [f32],
    /// Columns per row.
    pub n_columns: usize,
    /// The regression target per row.
    pub y: &'a [f64],
    /// Per row, how many times the bagging drew it.
    pub sample_weight: &'a [f64],
    /// Nodes at this depth (the root's is 0) become leaves.
    pub max_depth: usize,
    /// The tree's `random_state`: the splitter seeds its xorshift generator from the first
    /// `randint(0, RAND_R_MAX)` of `RandomState(random_state)`.
    pub random_state: u32,
}

/// Grows one tree as `ExtraTreeRegressor(max_features=1, splitter="random",
/// max_depth=max_depth).fit(x, y, sample_weight)` does.
pub fn fit(input: &TreeInput<'_>) -> Tree {
    let mut rng = RandomState::new(input.random_state);
    let rand_r_state = rng.randint(0, i64::from(RAND_R_MAX)) as u32;
    let mut splitter = Splitter::new(input, rand_r_state);
    let mut tree = Tree {
        nodes: Vec::new(),
        values: Vec::new(),
        max_depth: 0,
    };

    struct Pending {
        start: usize,
        end: usize,
        depth: usize,
        parent: Option<(usize, bool)>,
        impurity: f64,
        n_constant_features: usize,
    }
    let mut stack = vec![Pending {
        start: 0,
        end: splitter.samples.len(),
        depth: 0,
        parent: None,
        impurity: f64::INFINITY,
        n_constant_features: 0,
    }];
    let mut first = true;
    while let Some(rec) = stack.pop() {
        let n_node_samples = rec.end - rec.start;
        splitter
            .criterion
            .init(&splitter.samples, rec.start, rec.end);
        let weighted_n_node_samples = splitter.criterion.weighted_n_node_samples;
        // min_samples_split = 2 and min_samples_leaf = 1; the weight test never binds.
        let mut is_leaf = rec.depth >= input.max_depth || n_node_samples < 2;
        let mut impurity = rec.impurity;
        if first {
            impurity = splitter.criterion.node_impurity();
            first = false;
        }
        is_leaf = is_leaf || impurity <= f64::EPSILON;
        let mut n_constant_features = rec.n_constant_features;
        let mut split = None;
        if !is_leaf {
            let s = splitter.node_split(rec.start, rec.end, impurity, &mut n_constant_features);
            // min_impurity_decrease = 0: a split is refused only when no position was found
            // or rounding made its improvement clearly negative.
            if s.pos < rec.end && s.improvement + f64::EPSILON >= 0.0 {
                split = Some(s);
            }
        }
        let id = tree.nodes.len();
        if let Some((parent, is_left)) = rec.parent {
            let p = &mut tree.nodes[parent];
            if is_left {
                p.left_child = id as i64;
            } else {
                p.right_child = id as i64;
            }
        }
        tree.nodes.push(match &split {
            Some(s) => Node {
                left_child: 0,
                right_child: 0,
                feature: s.feature as i64,
                threshold: s.threshold,
                impurity,
                n_node_samples: n_node_samples as i64,
                weighted_n_node_samples,
                missing_go_to_left: s.missing_go_to_left,
            },
            None => Node {
                left_child: TREE_LEAF,
                right_child: TREE_LEAF,
                feature: TREE_UNDEFINED,
                threshold: TREE_UNDEFINED as f64,
                impurity,
                n_node_samples: n_node_samples as i64,
                weighted_n_node_samples,
                missing_go_to_left: false,
            },
        });
        tree.values.push(splitter.criterion.node_value());
        if let Some(s) = split {
            // Right pushed first so that the left subtree is built (and numbered) first.
            stack.push(Pending {
                start: s.pos,
                end: rec.end,
                depth: rec.depth + 1,
                parent: Some((id, false)),
                impurity: s.impurity_right,
                n_constant_features,
            });
            stack.push(Pending {
                start: rec.start,
                end: s.pos,
                depth: rec.depth + 1,
                parent: Some((id, true)),
                impurity: s.impurity_left,
                n_constant_features,
            });
        }
        tree.max_depth = tree.max_depth.max(rec.depth);
    }
    tree
}

/// scikit-learn's `our_rand_r`: a 32-bit xorshift, its output folded into [0, `RAND_R_MAX`].
fn rand_r(state: &mut u32) -> u32 {
    if *state == 0 {
        *state = 1;
    }
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state % (RAND_R_MAX + 1)
}

/// An integer in [`low`, `high`) (scikit-learn's `rand_int`).
fn rand_int(low: usize, high: usize, state: &mut u32) -> usize {
    low + rand_r(state) as usize % (high - low)
}

/// A float in [`low`, `high`] (scikit-learn's `rand_uniform`), evaluated in its order.
fn rand_uniform(low: f64, high: f64, state: &mut u32) -> f64 {
    (high - low) * f64::from(rand_r(state)) / f64::from(RAND_R_MAX) + low
}

/// The split a node takes.
#[derive(Debug, Clone, Copy)]
struct Split {
    feature: usize,
    threshold: f64,
    /// Samples `[start, pos)` go left.
    pos: usize,
    improvement: f64,
    impurity_left: f64,
    impurity_right: f64,
    missing_go_to_left: bool,
}

/// The random splitter's state, which persists from node to node: the sample order, and the
/// feature order with known-constant features in front.
struct Splitter<'a> {
    x: &'a [f32],
    n_columns: usize,
    /// Rows with a non-zero weight, ascending at the start, then partitioned node by node.
    samples: Vec<usize>,
    /// Feature values of `samples` at the same positions, for the feature being tried.
    feature_values: Vec<f32>,
    features: Vec<usize>,
    constant_features: Vec<usize>,
    rand_r_state: u32,
    criterion: Criterion<'a>,
}

impl<'a> Splitter<'a> {
    fn new(input: &TreeInput<'a>, rand_r_state: u32) -> Splitter<'a> {
        let samples: Vec<usize> = (0..input.sample_weight.len())
            .filter(|&i| input.sample_weight[i] != 0.0)
            .collect();
        let weighted_n_samples = input.sample_weight.iter().sum();
        Splitter {
            x: input.x,
            n_columns: input.n_columns,
            feature_values: vec![0.0; samples.len()],
            samples,
            features: (0..input.n_columns).collect(),
            constant_features: vec![0; input.n_columns],
            rand_r_state,
            criterion: Criterion::new(input.y, input.sample_weight, weighted_n_samples),
        }
    }

    fn value(&self, sample: usize, feature: usize) -> f32 {
        self.x[sample * self.n_columns + feature]
    }

    /// The smallest and largest value of `feature` over samples `[start, end)`, copying the
    /// values into `feature_values` on the way.
    fn find_min_max(&mut self, feature: usize, start: usize, end: usize) -> (f32, f32) {
        let mut min = f32::INFINITY;
        let mut max = f32::NEG_INFINITY;
        for p in start..end {
            let v = self.value(self.samples[p], feature);
            self.feature_values[p] = v;
            if p == start {
                (min, max) = (v, v);
            } else if v < min {
                min = v;
            } else if v > max {
                max = v;
            }
        }
        (min, max)
    }

    /// Moves samples with `feature_values <= threshold` to the front of `[start, end)` (by
    /// swapping each one that goes right with the last unplaced one); returns where the right
    /// side begins.
    fn partition(&mut self, start: usize, end: usize, threshold: f64) -> usize {
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            if f64::from(self.feature_values[lo]) <= threshold {
                lo += 1;
            } else {
                hi -= 1;
                self.feature_values.swap(lo, hi);
                self.samples.swap(lo, hi);
            }
        }
        hi
    }

    /// Re-partitions `[start, end)` by `split`'s feature, read from `x` (for when the split kept
    /// was not the last one tried).
    fn partition_final(&mut self, start: usize, end: usize, split: &Split) {
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            if f64::from(self.value(self.samples[lo], split.feature)) <= split.threshold {
                lo += 1;
            } else {
                hi -= 1;
                self.samples.swap(lo, hi);
            }
        }
    }

    /// scikit-learn's `node_split_random` with `max_features = 1`: draws features (skipping
    /// ones known or found constant in this node) until one varies, splits it at a uniform
    /// threshold between its extremes, and scores the split. `n_constant_features` comes in as
    /// the count known from the ancestors and leaves as the count for the children.
    fn node_split(
        &mut self,
        start: usize,
        end: usize,
        impurity: f64,
        n_constant_features: &mut usize,
    ) -> Split {
        let max_features = 1;
        let n_known_constants = *n_constant_features;
        let mut n_total_constants = n_known_constants;
        let mut n_found_constants = 0;
        let mut n_drawn_constants = 0;
        let mut n_visited_features = 0;
        let mut f_i = self.n_columns;
        let mut best = Split {
            feature: 0,
            threshold: 0.0,
            pos: end,
            improvement: f64::NEG_INFINITY,
            impurity_left: f64::INFINITY,
            impurity_right: f64::INFINITY,
            missing_go_to_left: false,
        };
        let mut best_proxy = f64::NEG_INFINITY;
        let mut last_feature = None;

        while f_i > n_total_constants
            && (n_visited_features < max_features
                || n_visited_features <= n_found_constants + n_drawn_constants)
        {
            n_visited_features += 1;
            // Drawn from the features not yet known constant in this node's draw order.
            let mut f_j = rand_int(
                n_drawn_constants,
                f_i - n_found_constants,
                &mut self.rand_r_state,
            );
            if f_j < n_known_constants {
                // Constant in an ancestor, so here too: park it with the other drawn ones.
                self.features.swap(n_drawn_constants, f_j);
                n_drawn_constants += 1;
                continue;
            }
            f_j += n_found_constants;
            let feature = self.features[f_j];
            last_feature = Some(feature);
            let (min, max) = self.find_min_max(feature, start, end);
            if max <= min + FEATURE_THRESHOLD {
                self.features[f_j] = self.features[n_total_constants];
                self.features[n_total_constants] = feature;
                n_found_constants += 1;
                n_total_constants += 1;
                continue;
            }
            f_i -= 1;
            self.features.swap(f_i, f_j);

            let mut threshold =
                rand_uniform(f64::from(min), f64::from(max), &mut self.rand_r_state);
            if threshold == f64::from(max) {
                threshold = f64::from(min);
            }
            let pos = self.partition(start, end, threshold);
            let (n_left, n_right) = (pos - start, end - pos);
            if n_left < 1 || n_right < 1 {
                continue;
            }
            self.criterion.reset();
            self.criterion.update(&self.samples, pos);
            let proxy = self.criterion.proxy_impurity_improvement();
            if proxy > best_proxy {
                best_proxy = proxy;
                best = Split {
                    feature,
                    threshold,
                    pos,
                    improvement: f64::NEG_INFINITY,
                    impurity_left: f64::INFINITY,
                    impurity_right: f64::INFINITY,
                    missing_go_to_left: n_left > n_right,
                };
            }
        }

        if best.pos < end {
            if last_feature != Some(best.feature) {
                self.partition_final(start, end, &best);
            }
            self.criterion.reset();
            self.criterion.update(&self.samples, best.pos);
            let (left, right) = self.criterion.children_impurity(&self.samples);
            best.impurity_left = left;
            best.impurity_right = right;
            best.improvement = self.criterion.impurity_improvement(impurity, left, right);
        }

        // The constants known before come first again, followed by the ones found here, so the
        // children skip them all.
        self.features[..n_known_constants]
            .copy_from_slice(&self.constant_features[..n_known_constants]);
        self.constant_features[n_known_constants..n_known_constants + n_found_constants]
            .copy_from_slice(
                &self.features[n_known_constants..n_known_constants + n_found_constants],
            );
        *n_constant_features = n_total_constants;
        best
    }
}

/// scikit-learn's squared-error criterion for one output, with sample weights: running weighted
/// sums over the node's samples and over the left part of a split.
struct Criterion<'a> {
    y: &'a [f64],
    sample_weight: &'a [f64],
    /// Total weight of all training rows.
    weighted_n_samples: f64,
    start: usize,
    end: usize,
    pos: usize,
    sum_total: f64,
    sq_sum_total: f64,
    weighted_n_node_samples: f64,
    sum_left: f64,
    sum_right: f64,
    weighted_n_left: f64,
    weighted_n_right: f64,
}

impl<'a> Criterion<'a> {
    fn new(y: &'a [f64], sample_weight: &'a [f64], weighted_n_samples: f64) -> Criterion<'a> {
        Criterion {
            y,
            sample_weight,
            weighted_n_samples,
            start: 0,
            end: 0,
            pos: 0,
            sum_total: 0.0,
            sq_sum_total: 0.0,
            weighted_n_node_samples: 0.0,
            sum_left: 0.0,
            sum_right: 0.0,
            weighted_n_left: 0.0,
            weighted_n_right: 0.0,
        }
    }

    /// Sums over the node `samples[start..end]`, then [`Criterion::reset`].
    fn init(&mut self, samples: &[usize], start: usize, end: usize) {
        self.start = start;
        self.end = end;
        self.sum_total = 0.0;
        self.sq_sum_total = 0.0;
        self.weighted_n_node_samples = 0.0;
        for &i in &samples[start..end] {
            let w = self.sample_weight[i];
            let wy = w * self.y[i];
            self.sum_total += wy;
            self.sq_sum_total += wy * self.y[i];
            self.weighted_n_node_samples += w;
        }
        self.reset();
    }

    /// Everything on the right: the split position at `start`.
    fn reset(&mut self) {
        self.pos = self.start;
        self.sum_left = 0.0;
        self.sum_right = self.sum_total;
        self.weighted_n_left = 0.0;
        self.weighted_n_right = self.weighted_n_node_samples;
    }

    /// Everything on the left: the split position at `end`.
    fn reverse_reset(&mut self) {
        self.pos = self.end;
        self.sum_right = 0.0;
        self.sum_left = self.sum_total;
        self.weighted_n_right = 0.0;
        self.weighted_n_left = self.weighted_n_node_samples;
    }

    /// Moves the split position to `new_pos`, summing the left side from whichever end is
    /// nearer (as scikit-learn does, which decides the rounding of the sums).
    fn update(&mut self, samples: &[usize], new_pos: usize) {
        if new_pos - self.pos <= self.end - new_pos {
            for &i in &samples[self.pos..new_pos] {
                let w = self.sample_weight[i];
                self.sum_left += w * self.y[i];
                self.weighted_n_left += w;
            }
        } else {
            self.reverse_reset();
            for &i in samples[new_pos..self.end].iter().rev() {
                let w = self.sample_weight[i];
                self.sum_left -= w * self.y[i];
                self.weighted_n_left -= w;
            }
        }
        self.pos = new_pos;
        self.weighted_n_right = self.weighted_n_node_samples - self.weighted_n_left;
        self.sum_right = self.sum_total - self.sum_left;
    }

    /// The weighted variance of the node.
    fn node_impurity(&self) -> f64 {
        let mean = self.sum_total / self.weighted_n_node_samples;
        self.sq_sum_total / self.weighted_n_node_samples - mean * mean
    }

    /// What the split maximises in place of the impurity decrease.
    fn proxy_impurity_improvement(&self) -> f64 {
        self.sum_left * self.sum_left / self.weighted_n_left
            + self.sum_right * self.sum_right / self.weighted_n_right
    }

    /// The weighted variances of the two sides of the current split.
    fn children_impurity(&self, samples: &[usize]) -> (f64, f64) {
        let mut sq_sum_left = 0.0;
        for &i in &samples[self.start..self.pos] {
            let w = self.sample_weight[i];
            sq_sum_left += w * self.y[i] * self.y[i];
        }
        let sq_sum_right = self.sq_sum_total - sq_sum_left;
        let mean_left = self.sum_left / self.weighted_n_left;
        let mean_right = self.sum_right / self.weighted_n_right;
        (
            sq_sum_left / self.weighted_n_left - mean_left * mean_left,
            sq_sum_right / self.weighted_n_right - mean_right * mean_right,
        )
    }

    /// The weighted impurity decrease of the current split.
    fn impurity_improvement(&self, parent: f64, left: f64, right: f64) -> f64 {
        (self.weighted_n_node_samples / self.weighted_n_samples)
            * (parent
                - self.weighted_n_right / self.weighted_n_node_samples * right
                - self.weighted_n_left / self.weighted_n_node_samples * left)
    }

    /// The node's prediction: the weighted mean target.
    fn node_value(&self) -> f64 {
        self.sum_total / self.weighted_n_node_samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_r_never_sticks_at_zero() {
        let mut s = 0u32;
        let a = rand_r(&mut s);
        assert_ne!(s, 0);
        assert!(a <= RAND_R_MAX);
    }

    #[test]
    fn node_records_are_laid_out_as_numpy_reads_them() {
        let node = Node {
            left_child: TREE_LEAF,
            right_child: TREE_LEAF,
            feature: TREE_UNDEFINED,
            threshold: -2.0,
            impurity: 0.5,
            n_node_samples: 3,
            weighted_n_node_samples: 4.0,
            missing_go_to_left: true,
        };
        let b = node.record_bytes();
        assert_eq!(&b[0..8], &[0xff; 8]);
        assert_eq!(i64::from_le_bytes(b[16..24].try_into().unwrap()), -2);
        assert_eq!(f64::from_le_bytes(b[48..56].try_into().unwrap()), 4.0);
        assert_eq!(b[56], 1);
        assert_eq!(&b[57..], &[0; 7]);
    }
}
