//! IsolationForest: the average path length of a row over the trees, normalised by `c(n)`, the
//! average path length of an unsuccessful search in a binary search tree of `n` samples.
//!
//! As in scikit-learn, rows are cast to `f32` before they are compared with the (f64)
//! thresholds, a leaf contributes `depth + c(n_node_samples) − 1`, and contributions are added
//! tree by tree in order.

use crate::detector::{Detector, TieRule, vec_bytes};
use crate::error::{Error, Result};
use crate::info::StepInfo;
use crate::reader::Obj;

mod simd;
use simd::Levels;

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// scikit-learn's `_average_path_length` for one node size.
pub(crate) fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n == 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// A flattened tree node. A leaf points to itself on both sides, so that every row can take the
/// same number of steps down a tree without branching on whether it has arrived.
#[derive(Debug, Clone, Copy)]
struct Node {
    feature: u32,
    left: u32,
    right: u32,
    /// The split threshold rounded down to f32: for an f32 input `v`,
    /// `f64::from(v) <= t` exactly when `v <= round_down_f32(t)`, so comparing in f32 gives
    /// scikit-learn's decisions with half the memory traffic.
    threshold: f32,
}

/// The largest f32 not above `t`.
fn round_down_f32(t: f64) -> f32 {
    let r = t as f32;
    if f64::from(r) > t { r.next_down() } else { r }
}

/// Rows walked down a tree together: independent walks hide each other's memory latency.
const BLOCK: usize = 32;

/// The fewest rows a call scores before the forest is laid out for the AVX-512 walk: laying
/// out 100 trees costs about what the vector walk saves on 500 rows.
const LAY_OUT_ROWS: usize = 512;

/// A borrowed view of a flattened forest, for laying it out again.
struct Flat<'a> {
    n_features: usize,
    nodes: &'a [Node],
    leaf_value: &'a [f64],
    /// Per tree: its root node and its depth in edges.
    trees: &'a [(u32, u32)],
}

/// A fitted IsolationForest.
#[derive(Debug, Clone)]
pub struct IsolationForest {
    n_features: usize,
    /// All trees' nodes; features already mapped to input columns.
    nodes: Vec<Node>,
    /// Per node: a leaf's path-length contribution `depth + c(n) − 1` (unused for splits).
    leaf_value: Vec<f64>,
    /// Per tree: its root node and its depth in edges (the steps a walk takes to any leaf).
    trees: Vec<(u32, u32)>,
    /// Whether the trees are laid out for the AVX-512 walk: when this CPU has it and the forest
    /// fits its layout (trees at most [`simd::MAX_DEPTH`] deep, at most [`simd::MAX_FEATURES`]
    /// columns). Its memory is charged when the model is loaded.
    vector_walk: bool,
    /// That layout, made when a call first scores [`LAY_OUT_ROWS`] rows or more: loading a
    /// model (as `models import` does to validate it) and scoring a handful of rows do not pay
    /// for it.
    levels: std::sync::OnceLock<Levels>,
    /// `n_trees · c(max_samples_)`.
    denominator: f64,
    offset: f64,
    info: StepInfo,
}

impl IsolationForest {
    /// Reads a fitted IsolationForest.
    pub fn new(obj: &Obj<'_>) -> Result<IsolationForest> {
        let estimators = obj.seq("estimators_")?;
        let features = obj.seq("estimators_features_")?;
        if estimators.len() != features.len() {
            return Err(Error::BadAttr {
                class: obj.class.to_string(),
                attr: "estimators_features_".into(),
                expected: format!("{} entries, one per tree", estimators.len()),
                found: format!("{}", features.len()),
            });
        }
        let n_features = match obj.get("n_features_in_").or_else(|| obj.get("n_features_")) {
            Some(fleetscore_pickle::Value::Int(n)) if n > 0 => n as usize,
            _ => {
                return Err(obj.bad(
                    "n_features_in_",
                    "a positive integer",
                    obj.get("n_features_in_")
                        .unwrap_or(fleetscore_pickle::Value::None),
                ));
            }
        };
        let max_features = match obj
            .get("_max_features")
            .or_else(|| obj.get("max_features_"))
        {
            Some(v) => Some(obj.f64_of("_max_features", v)? as usize),
            None => None,
        };
        let max_samples = obj.f64("max_samples_")?;
        let offset = obj.f64("offset_")?;

        let mut nodes = Vec::new();
        let mut leaf_value = Vec::new();
        let mut trees = Vec::with_capacity(estimators.len());
        for (t, (&est, &feats)) in estimators.iter().zip(features).enumerate() {
            let feats = obj.vec_i64_of("estimators_features_", feats)?;
            // scikit-learn indexes X by the tree's feature subset only when it subsampled
            // features; with all features the tree sees X as it is.
            let subsample = max_features.map_or(feats.len() != n_features, |m| m != n_features);
            let tree = obj.child(est)?;
            let root = nodes.len() as u32;
            let depth = read_tree(
                &tree,
                t,
                subsample.then_some(feats.as_slice()),
                n_features,
                &mut nodes,
                &mut leaf_value,
            )?;
            trees.push((root, depth));
        }
        let flat = Flat {
            n_features,
            nodes: &nodes,
            leaf_value: &leaf_value,
            trees: &trees,
        };
        let vector_walk = match Levels::size_of(&flat) {
            Some(entries) if Levels::supported() => {
                obj.charge("estimators_", entries)?;
                true
            }
            _ => false,
        };
        let denominator = estimators.len() as f64 * average_path_length(max_samples);
        let info = StepInfo::of(obj)
            .fitted("n_trees", estimators.len())
            .fitted("n_nodes", nodes.len())
            .fitted("max_samples_", max_samples);
        Ok(IsolationForest {
            n_features,
            nodes,
            leaf_value,
            trees,
            vector_walk,
            levels: std::sync::OnceLock::new(),
            denominator,
            offset,
            info,
        })
    }

    fn flat(&self) -> Flat<'_> {
        Flat {
            n_features: self.n_features,
            nodes: &self.nodes,
            leaf_value: &self.leaf_value,
            trees: &self.trees,
        }
    }

    /// Adds each row's path-length contributions, tree by tree in order, into `depths`.
    /// `xf` holds the block's rows cast to f32 (as scikit-learn casts them), row-major.
    fn path_lengths(&self, xf: &[f32], depths: &mut [f64]) {
        let d = self.n_features;
        let n = depths.len();
        let mut at = [0u32; BLOCK];
        for &(root, depth) in &self.trees {
            at[..n].fill(root);
            for _ in 0..depth {
                for r in 0..n {
                    let node = self.nodes[at[r] as usize];
                    let v = xf[r * d + node.feature as usize];
                    at[r] = if v <= node.threshold {
                        node.left
                    } else {
                        node.right
                    };
                }
            }
            for r in 0..n {
                depths[r] += self.leaf_value[at[r] as usize];
            }
        }
    }
}

/// Appends one tree's nodes, precomputing each leaf's `depth + c(n) − 1`.
fn read_tree(
    est: &Obj<'_>,
    index: usize,
    features: Option<&[i64]>,
    n_features: usize,
    out: &mut Vec<Node>,
    leaf_value: &mut Vec<f64>,
) -> Result<u32> {
    let tree_value = est.require("tree_")?;
    let tree = est.child(tree_value)?;
    let nodes_value = tree.require("nodes")?;
    let bad = |m: String| Error::BadAttr {
        class: format!("{} (tree {index})", tree.class),
        attr: "nodes".into(),
        expected: "scikit-learn's node records".into(),
        found: m,
    };
    let nodes = tree
        .pk
        .as_array(nodes_value)
        .ok_or_else(|| tree.bad("nodes", "a record array", nodes_value))?;
    // Per node: the five fields read below, its depth, and its slot in the flattened forest
    // (a file may share one tree among all of the forest's estimators; each copy counts).
    tree.charge("nodes", nodes.len().saturating_mul(8))?;
    let left = nodes.field_i64("left_child").map_err(bad)?;
    let right = nodes.field_i64("right_child").map_err(bad)?;
    let feature = nodes.field_i64("feature").map_err(bad)?;
    let threshold = nodes.field_f64("threshold").map_err(bad)?;
    let samples = nodes.field_f64("n_node_samples").map_err(bad)?;
    let count = left.len();
    if count == 0 {
        return Err(bad("an empty tree".into()));
    }
    // Depth of each node (root = 1), found top-down; a node must come after its parent, which
    // scikit-learn's depth-first builder guarantees and which also rules out cycles.
    let base = out.len();
    let mut depth = vec![0u32; count];
    depth[0] = 1;
    let mut max_depth = 1;
    for i in 0..count {
        let is_leaf = left[i] == -1;
        let node = if is_leaf {
            let d = f64::from(depth[i]);
            max_depth = max_depth.max(depth[i]);
            leaf_value.push(d + average_path_length(samples[i]) - 1.0);
            let me = (base + i) as u32;
            Node {
                feature: 0,
                left: me,
                right: me,
                threshold: 0.0f32,
            }
        } else {
            leaf_value.push(0.0);
            let (l, r) = (left[i], right[i]);
            let child_ok = |c: i64| c > i as i64 && (c as usize) < count;
            if !child_ok(l) || !child_ok(r) {
                return Err(bad(format!(
                    "node {i} has children {l} and {r} out of order or range"
                )));
            }
            depth[l as usize] = depth[i] + 1;
            depth[r as usize] = depth[i] + 1;
            let f = usize::try_from(feature[i])
                .map_err(|_| bad(format!("node {i} has feature {}", feature[i])))?;
            let column = match features {
                Some(map) => *map
                    .get(f)
                    .ok_or_else(|| bad(format!("node {i} uses feature {f} of {}", map.len())))?,
                None => f as i64,
            };
            if column < 0 || column as usize >= n_features {
                return Err(bad(format!(
                    "node {i} reads column {column} of {n_features}"
                )));
            }
            Node {
                feature: column as u32,
                left: (base + l as usize) as u32,
                right: (base + r as usize) as u32,
                threshold: round_down_f32(threshold[i]),
            }
        };
        out.push(node);
    }
    // Steps from the root to the deepest leaf.
    Ok(max_depth - 1)
}

impl Detector for IsolationForest {
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
        let normalise = |o: &mut [f64]| {
            for v in o.iter_mut() {
                let ratio = if self.denominator != 0.0 {
                    *v / self.denominator
                } else {
                    1.0
                };
                *v = -(2.0f64.powf(-ratio));
            }
        };
        let levels = if self.vector_walk && (x.len() / d.max(1) >= LAY_OUT_ROWS) {
            Some(self.levels.get_or_init(|| Levels::new(&self.flat())))
        } else {
            self.levels.get()
        };
        if let Some(levels) = levels {
            let mut cols = vec![0.0f32; simd::CHUNK * d];
            for (rows, o) in x.chunks(simd::CHUNK * d).zip(out.chunks_mut(simd::CHUNK)) {
                // scikit-learn casts X to float32 for its trees; feature-major for the walk.
                for (r, row) in rows.chunks_exact(d).enumerate() {
                    for (f, v) in row.iter().enumerate() {
                        cols[f * simd::CHUNK + r] = *v as f32;
                    }
                }
                o.fill(0.0);
                levels.path_lengths(d, &cols, o);
                normalise(o);
            }
            return;
        }
        let mut xf = vec![0.0f32; BLOCK * d];
        for (rows, o) in x.chunks(BLOCK * d).zip(out.chunks_mut(BLOCK)) {
            // scikit-learn casts X to float32 for its trees.
            for (f, v) in xf.iter_mut().zip(rows) {
                *f = *v as f32;
            }
            o.fill(0.0);
            self.path_lengths(&xf, o);
            normalise(o);
        }
    }

    fn tie_rule(&self) -> TieRule {
        TieRule::NegativeIsOutlier
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + vec_bytes(&self.nodes)
            + vec_bytes(&self.leaf_value)
            + vec_bytes(&self.trees)
            // The layout once made, counted from the start so that a model cache's accounting
            // does not change under it.
            + if self.vector_walk {
                Levels::bytes_of(&self.flat())
            } else {
                0
            }
    }

    fn info(&self) -> StepInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_thresholds_decide_like_f64_ones() {
        let cases = [
            0.1f64,
            -0.1,
            1.0 / 3.0,
            1e-40,
            -1e-40,
            3.5e38,
            -3.5e38,
            0.0,
            -0.0,
            16_777_217.0,
        ];
        for t in cases {
            let t32 = round_down_f32(t);
            // Every f32 near the threshold falls on the same side either way.
            let mut v = (t as f32).next_down().next_down();
            for _ in 0..5 {
                assert_eq!(f64::from(v) <= t, v <= t32, "t={t} v={v}");
                v = v.next_up();
            }
        }
        assert_eq!(round_down_f32(f64::INFINITY), f32::INFINITY);
    }

    /// A random forest in the flattened layout: `trees` trees of depth up to `max_depth` over
    /// `d` features, thresholds drawn from `cuts` (so rows land exactly on them too), leaves
    /// at any depth.
    fn random_forest(seed: u64, d: usize, trees: usize, max_depth: u32) -> IsolationForest {
        let mut state = seed;
        let mut next = move || {
            // SplitMix64.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let cuts = [
            -1e30f32,
            -2.5,
            -0.0,
            0.0,
            0.1,
            1.0 / 3.0,
            7.0,
            1e30,
            f32::INFINITY,
        ];
        let mut nodes = Vec::new();
        let mut leaf_value = Vec::new();
        let mut roots = Vec::new();
        for _ in 0..trees {
            let root = nodes.len() as u32;
            let mut deepest = 0;
            // Depth-first: (slot, depth); a slot is reserved before its subtree is filled.
            let mut stack = vec![(root as usize, 0u32)];
            nodes.push(Node {
                feature: 0,
                left: 0,
                right: 0,
                threshold: 0.0,
            });
            leaf_value.push(0.0);
            while let Some((slot, depth)) = stack.pop() {
                let leaf = depth == max_depth || (depth > 0 && next() % 10 == 0);
                if leaf {
                    deepest = deepest.max(depth);
                    nodes[slot] = Node {
                        feature: 0,
                        left: slot as u32,
                        right: slot as u32,
                        threshold: 0.0,
                    };
                    leaf_value[slot] = f64::from(depth) + (next() % 1000) as f64 / 7.0;
                    continue;
                }
                let (l, r) = (nodes.len(), nodes.len() + 1);
                for _ in 0..2 {
                    nodes.push(nodes[slot]);
                    leaf_value.push(0.0);
                }
                nodes[slot] = Node {
                    feature: (next() % d as u64) as u32,
                    left: l as u32,
                    right: r as u32,
                    threshold: cuts[(next() % cuts.len() as u64) as usize],
                };
                stack.push((r, depth + 1));
                stack.push((l, depth + 1));
            }
            roots.push((root, deepest));
        }
        let flat = Flat {
            n_features: d,
            nodes: &nodes,
            leaf_value: &leaf_value,
            trees: &roots,
        };
        let levels = std::sync::OnceLock::new();
        if Levels::size_of(&flat).is_some() {
            let _ = levels.set(Levels::new(&flat));
        }
        IsolationForest {
            n_features: d,
            vector_walk: levels.get().is_some(),
            levels,
            nodes,
            leaf_value,
            trees: roots,
            denominator: 1.0,
            offset: 0.0,
            info: StepInfo {
                name: "IsolationForest".into(),
                class: "sklearn.ensemble._iforest.IsolationForest".into(),
                params: Default::default(),
                fitted: Default::default(),
            },
        }
    }

    #[test]
    fn the_vector_walk_adds_the_same_leaves_as_the_scalar_walk() {
        if !Levels::supported() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let values = [
            -1e31f32,
            -2.5,
            -2.4999998,
            -0.0,
            0.0,
            1e-45,
            0.1,
            1.0 / 3.0,
            7.0,
            7.000_001,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut checked = 0;
        for (seed, d) in (0..120u64).zip((1..=simd::MAX_FEATURES).cycle()) {
            let depth = (seed % 9) as u32;
            let mut pick = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
            let forest = random_forest(seed, d, 1 + (seed as usize % 7), depth);
            let levels = forest.levels.get().expect("depth <= 8 and d <= 8 lay out");
            // What a model cache counts before the layout is made is what it takes after.
            assert_eq!(levels.heap_bytes(), Levels::bytes_of(&forest.flat()));
            for rows in [1, 17, simd::CHUNK] {
                let mut cols = vec![0.0f32; simd::CHUNK * d];
                let mut rowwise = vec![0.0f32; BLOCK.max(simd::CHUNK) * d];
                for r in 0..rows {
                    for f in 0..d {
                        // A xorshift over the edge values.
                        pick ^= pick << 13;
                        pick ^= pick >> 7;
                        pick ^= pick << 17;
                        let v = values[(pick % values.len() as u64) as usize];
                        cols[f * simd::CHUNK + r] = v;
                        rowwise[r * d + f] = v;
                    }
                }
                let mut vector = vec![0.0; rows];
                levels.path_lengths(d, &cols, &mut vector);
                let mut scalar = vec![0.0; rows];
                for (xs, o) in rowwise.chunks(BLOCK * d).zip(scalar.chunks_mut(BLOCK)) {
                    forest.path_lengths(xs, o);
                }
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&vector),
                    bits(&scalar),
                    "seed {seed}, d {d}, rows {rows}"
                );
                checked += rows;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn forests_too_deep_or_too_wide_keep_the_scalar_walk() {
        let deep = random_forest(3, 2, 2, simd::MAX_DEPTH + 1);
        let wide = random_forest(4, simd::MAX_FEATURES + 1, 2, 3);
        for forest in [deep, wide] {
            let flat = Flat {
                n_features: forest.n_features,
                nodes: &forest.nodes,
                leaf_value: &forest.leaf_value,
                trees: &forest.trees,
            };
            // The random trees reach their maximum depth somewhere only by chance; the
            // width check alone must refuse the wide one.
            if forest.n_features > simd::MAX_FEATURES
                || forest.trees.iter().any(|t| t.1 > simd::MAX_DEPTH)
            {
                assert!(Levels::size_of(&flat).is_none());
            }
        }
    }

    #[test]
    fn average_path_length_matches_the_definition() {
        assert_eq!(average_path_length(1.0), 0.0);
        assert_eq!(average_path_length(2.0), 1.0);
        // c(256) from the Isolation Forest paper: 2 H(255) - 2 * 255 / 256 ≈ 10.2448.
        assert!((average_path_length(256.0) - 10.244_770_920_657_7).abs() < 1e-9);
    }
}
