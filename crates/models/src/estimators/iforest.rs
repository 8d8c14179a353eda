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
            denominator,
            offset,
            info,
        })
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
        let mut xf = vec![0.0f32; BLOCK * d];
        for (rows, o) in x.chunks(BLOCK * d).zip(out.chunks_mut(BLOCK)) {
            // scikit-learn casts X to float32 for its trees.
            for (f, v) in xf.iter_mut().zip(rows) {
                *f = *v as f32;
            }
            o.fill(0.0);
            self.path_lengths(&xf, o);
            for v in o.iter_mut() {
                let ratio = if self.denominator != 0.0 {
                    *v / self.denominator
                } else {
                    1.0
                };
                *v = -(2.0f64.powf(-ratio));
            }
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

    #[test]
    fn average_path_length_matches_the_definition() {
        assert_eq!(average_path_length(1.0), 0.0);
        assert_eq!(average_path_length(2.0), 1.0);
        // c(256) from the Isolation Forest paper: 2 H(255) - 2 * 255 / 256 ≈ 10.2448.
        assert!((average_path_length(256.0) - 10.244_770_920_657_7).abs() < 1e-9);
    }
}
