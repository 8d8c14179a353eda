//! IsolationForest fitted as scikit-learn 1.9.1 fits it: the same parameters and checks, the same
//! draws from numpy's `RandomState` (the regression target, the per-tree seeds, each tree's
//! feature and row subsets), and trees grown by [`crate::tree`]; then the fit-time attributes
//! (`offset_`, the per-tree path lengths) and the pickle scikit-learn would write.
//!
//! The order of draws, as scikit-learn makes them for an integer `random_state` `s`:
//! - `y = RandomState(s).uniform(size=n)`, the (meaningless) regression target the trees split
//!   on; it decides every node's impurity and value, not the splits;
//! - `seeds = RandomState(s).randint(2³¹ − 1, size=n_estimators)` (a fresh generator);
//! - per tree `t`: its `random_state` is `RandomState(seeds[t]).randint(2³¹ − 1)`; its features
//!   are `sample_without_replacement(n_features, max_features)` and its rows
//!   `sample_without_replacement(n, max_samples)` (or `randint(0, n, max_samples)` when
//!   bootstrapping), both from another fresh `RandomState(seeds[t])`. The tree sees every row,
//!   weighted by how often it was drawn.

use fleetscore_pickle::write::{Py, dumps};

use crate::Trained;
use crate::error::{Error, Result};
use crate::rng::{RandomState, sample_without_replacement};
use crate::tree::{self, Tree, TreeInput};

/// The scikit-learn version the pickle claims; the fit reproduces this version's numbers.
pub const SKLEARN_VERSION: &str = "1.9.1";
/// Euler–Mascheroni constant, as numpy's `np.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
/// The exclusive bound of the seeds scikit-learn draws (`np.iinfo(np.int32).max`).
const MAX_INT: i64 = i32::MAX as i64;

/// How many rows each tree is grown on (`max_samples`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxSamples {
    /// `"auto"`: `min(256, n_samples)`.
    Auto,
    /// That many rows (at least 1); more than the data has means all of them.
    Count(usize),
    /// This fraction of the rows, in (0, 1], rounded down.
    Fraction(f64),
}

/// The share of training rows the threshold `offset_` marks as outliers (`contamination`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contamination {
    /// `"auto"`: `offset_ = -0.5`, the original paper's threshold.
    Auto,
    /// A fraction in (0, 0.5]: `offset_` is that percentile of the training scores.
    Fraction(f64),
}

/// How many features each tree is grown on (`max_features`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFeatures {
    /// That many features; scikit-learn raises it to at least 1 and refuses more than the data
    /// has.
    Count(i64),
    /// This fraction of the features, in (0, 1], rounded down (and raised to at least 1).
    Fraction(f64),
}

/// IsolationForest's hyper-parameters, named as scikit-learn names them. The [`Default`] is
/// scikit-learn's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IforestParams {
    /// Trees in the forest (`n_estimators`, 100), at least 1.
    pub n_estimators: usize,
    /// Rows per tree (`max_samples`, `"auto"`).
    pub max_samples: MaxSamples,
    /// Expected outlier share (`contamination`, `"auto"`).
    pub contamination: Contamination,
    /// Features per tree (`max_features`, 1.0).
    pub max_features: MaxFeatures,
    /// Draw each tree's rows with replacement (`bootstrap`, false).
    pub bootstrap: bool,
    /// The seed (`random_state`); `None` draws one, which the fit reports and the pickle keeps.
    pub random_state: Option<u32>,
}

impl Default for IforestParams {
    fn default() -> IforestParams {
        IforestParams {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
            max_features: MaxFeatures::Fraction(1.0),
            bootstrap: false,
            random_state: None,
        }
    }
}

impl IforestParams {
    /// Refuses what scikit-learn's parameter validation refuses.
    pub fn validate(&self) -> Result<()> {
        if self.n_estimators < 1 {
            return Err(param("n_estimators", "must be at least 1, got 0".into()));
        }
        match self.max_samples {
            MaxSamples::Count(0) => {
                return Err(param("max_samples", "must be at least 1, got 0".into()));
            }
            MaxSamples::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(param(
                    "max_samples",
                    format!("a fraction must be in (0, 1], got {f}"),
                ));
            }
            _ => {}
        }
        if let Contamination::Fraction(c) = self.contamination
            && !(c > 0.0 && c <= 0.5)
        {
            return Err(param(
                "contamination",
                format!("must be \"auto\" or in (0, 0.5], got {c}"),
            ));
        }
        if let MaxFeatures::Fraction(f) = self.max_features
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(param(
                "max_features",
                format!("a fraction must be in (0, 1], got {f}"),
            ));
        }
        Ok(())
    }
}

fn param(name: &'static str, reason: String) -> Error {
    Error::Param { name, reason }
}

/// One fitted tree with what the forest keeps beside it.
#[derive(Debug, Clone)]
pub struct FittedTree {
    /// The tree.
    pub tree: Tree,
    /// The input columns it was grown on, in its own column order (`estimators_features_`).
    pub features: Vec<i64>,
    /// Its `random_state`.
    pub random_state: u32,
    /// Per node, the node's depth counting the root as 1 (`_decision_path_lengths`).
    pub depths: Vec<i64>,
    /// Per node, `c(n_node_samples)` (`_average_path_length_per_tree`).
    pub average_path_lengths: Vec<f64>,
}

/// A fitted IsolationForest.
#[derive(Debug, Clone)]
pub struct IsolationForest {
    /// The parameters, `random_state` filled in with the seed used.
    pub params: IforestParams,
    /// The seed used.
    pub seed: u32,
    /// Features per row (`n_features_in_`).
    pub n_features: usize,
    /// Training rows (`_n_samples`).
    pub n_samples: usize,
    /// Rows per tree (`max_samples_`).
    pub max_samples: usize,
    /// Features per tree (`_max_features`).
    pub max_features: usize,
    /// The trees' depth limit, `ceil(log2(max(max_samples, 2)))`.
    pub max_depth: usize,
    /// The per-tree seeds (`_seeds`).
    pub seeds: Vec<i64>,
    /// The trees, in order.
    pub trees: Vec<FittedTree>,
    /// `decision_function = score_samples − offset_`.
    pub offset: f64,
    /// Training rows whose decision function is negative (predicted outliers), as a fraction.
    pub train_outlier_fraction: f64,
}

/// Fits an IsolationForest on `x` (row-major, `n_features` per row) and writes it as the pickle
/// scikit-learn 1.9.1 would have written for `IsolationForest(**params).fit(x)`.
pub fn fit_iforest(x: &[f64], n_features: usize, params: &IforestParams) -> Result<Trained> {
    let forest = IsolationForest::fit(x, n_features, params)?;
    Ok(Trained {
        pickle: forest.to_pickle(),
        metrics: forest.metrics(),
    })
}

impl IsolationForest {
    /// Fits the forest: the same trees scikit-learn grows for the same `random_state`.
    pub fn fit(x: &[f64], n_features: usize, params: &IforestParams) -> Result<IsolationForest> {
        params.validate()?;
        let xf = to_f32(x, n_features)?;
        let n = xf.len() / n_features;
        let seed = params.random_state.unwrap_or_else(fresh_seed);

        let max_samples = match params.max_samples {
            MaxSamples::Auto => n.min(256),
            MaxSamples::Count(m) if m > n => {
                tracing::warn!(
                    "max_samples ({m}) is greater than the total number of samples ({n}); \
                     max_samples will be set to n_samples for estimation"
                );
                n
            }
            MaxSamples::Count(m) => m,
            MaxSamples::Fraction(f) => (f * n as f64) as usize,
        };
        if max_samples == 0 {
            // scikit-learn fits trees on all-zero weights and refuses ("Sample weights must
            // contain at least one non-zero number").
            return Err(param(
                "max_samples",
                format!("{:?} of {n} rows is no row at all", params.max_samples),
            ));
        }
        let max_depth = depth_limit(max_samples);
        let max_features = match params.max_features {
            MaxFeatures::Count(m) => {
                if m > n_features as i64 {
                    return Err(param(
                        "max_features",
                        format!("must be <= n_features ({n_features}), got {m}"),
                    ));
                }
                m.max(1) as usize
            }
            MaxFeatures::Fraction(f) => ((f * n_features as f64) as usize).max(1),
        };

        let y: Vec<f64> = {
            let mut rng = RandomState::new(seed);
            (0..n).map(|_| rng.uniform(0.0, 1.0)).collect()
        };
        let seeds = RandomState::new(seed).randint_n(0, MAX_INT, params.n_estimators);

        let subsample_features = max_features != n_features;
        let mut columns = Vec::new();
        let mut weights = vec![0.0; n];
        let mut trees = Vec::with_capacity(seeds.len());
        for &s in &seeds {
            // Seeds are below 2³¹ − 1, so they fit u32.
            let random_state = RandomState::new(s as u32).randint(0, MAX_INT) as u32;
            let mut rng = RandomState::new(s as u32);
            let features = sample_without_replacement(&mut rng, n_features, max_features);
            let rows = if params.bootstrap {
                rng.randint_n(0, n as i64, max_samples)
            } else {
                sample_without_replacement(&mut rng, n, max_samples)
            };
            weights.fill(0.0);
            for &r in &rows {
                weights[r as usize] += 1.0;
            }
            let x_tree: &[f32] = if subsample_features {
                columns.clear();
                for row in xf.chunks_exact(n_features) {
                    columns.extend(features.iter().map(|&f| row[f as usize]));
                }
                &columns
            } else {
                &xf
            };
            let tree = tree::fit(&TreeInput {
                x: x_tree,
                n_columns: features.len(),
                y: &y,
                sample_weight: &weights,
                max_depth,
                random_state,
            });
            let depths = tree.node_depths();
            let average_path_lengths = tree
                .nodes
                .iter()
                .map(|node| average_path_length(node.n_node_samples as f64))
                .collect();
            trees.push(FittedTree {
                tree,
                features,
                random_state,
                depths,
                average_path_lengths,
            });
        }

        let mut forest = IsolationForest {
            params: IforestParams {
                random_state: Some(seed),
                ..*params
            },
            seed,
            n_features,
            n_samples: n,
            max_samples,
            max_features,
            max_depth,
            seeds,
            trees,
            offset: -0.5,
            train_outlier_fraction: 0.0,
        };
        let train_scores = forest.score_samples_f32(&xf);
        if let Contamination::Fraction(c) = params.contamination {
            forest.offset = percentile(&train_scores, 100.0 * c);
        }
        let outliers = train_scores
            .iter()
            .filter(|&&s| s - forest.offset < 0.0)
            .count();
        forest.train_outlier_fraction = outliers as f64 / n as f64;
        Ok(forest)
    }

    /// scikit-learn's `score_samples`: the opposite of the anomaly score, in (−1, 0]; lower is
    /// more abnormal. `x` is row-major with `n_features` per row and cast to float32 first.
    pub fn score_samples(&self, x: &[f64]) -> Result<Vec<f64>> {
        let xf = to_f32(x, self.n_features)?;
        Ok(self.score_samples_f32(&xf))
    }

    /// scikit-learn's `decision_function`: `score_samples − offset_`, negative for outliers.
    pub fn decision_function(&self, x: &[f64]) -> Result<Vec<f64>> {
        let mut scores = self.score_samples(x)?;
        for s in &mut scores {
            *s -= self.offset;
        }
        Ok(scores)
    }

    fn score_samples_f32(&self, xf: &[f32]) -> Vec<f64> {
        let d = self.n_features;
        let rows = xf.len() / d;
        let mut depths = vec![0.0f64; rows];
        let mut picked = Vec::new();
        // As scikit-learn: a tree reads the row through its feature subset only when the
        // forest subsampled features.
        let subsample = self.max_features != d;
        for t in &self.trees {
            for (r, row) in xf.chunks_exact(d).enumerate() {
                let leaf = if subsample {
                    picked.clear();
                    picked.extend(t.features.iter().map(|&f| row[f as usize]));
                    t.tree.apply(&picked)
                } else {
                    t.tree.apply(row)
                };
                // scikit-learn adds (depth + c(n)) − 1 per tree, in tree order.
                depths[r] += t.depths[leaf] as f64 + t.average_path_lengths[leaf] - 1.0;
            }
        }
        let denominator = self.trees.len() as f64 * average_path_length(self.max_samples as f64);
        depths
            .into_iter()
            .map(|depth| {
                // One training row: every depth and c(1) are 0, and scikit-learn takes 1.
                let ratio = if denominator != 0.0 {
                    depth / denominator
                } else {
                    1.0
                };
                -(2.0f64.powf(-ratio))
            })
            .collect()
    }

    /// What the fit measured, for the `fleetscore train` report.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let n_trees = self.trees.len() as f64;
        let mean = |f: &dyn Fn(&FittedTree) -> f64| self.trees.iter().map(f).sum::<f64>() / n_trees;
        vec![
            ("n_estimators", n_trees),
            ("max_samples_", self.max_samples as f64),
            ("max_features_", self.max_features as f64),
            ("random_state", f64::from(self.seed)),
            ("offset_", self.offset),
            ("train_outlier_fraction", self.train_outlier_fraction),
            ("mean_tree_depth", mean(&|t| t.tree.max_depth as f64)),
            ("mean_tree_nodes", mean(&|t| t.tree.nodes.len() as f64)),
            (
                "mean_tree_leaves",
                mean(&|t| t.tree.nodes.iter().filter(|n| n.is_leaf()).count() as f64),
            ),
            ("n_samples", self.n_samples as f64),
            ("n_features", self.n_features as f64),
        ]
    }

    /// The pickle (protocol 4) scikit-learn writes for this forest: the `IsolationForest`'s
    /// `__dict__` with its `ExtraTreeRegressor`s and their `Tree`s, in attribute order.
    pub fn to_pickle(&self) -> Vec<u8> {
        dumps(&self.to_py())
    }

    fn to_py(&self) -> Py {
        let p = &self.params;
        let max_samples = match p.max_samples {
            MaxSamples::Auto => Py::str("auto"),
            MaxSamples::Count(m) => Py::Int(m as i64),
            MaxSamples::Fraction(f) => Py::Float(f),
        };
        let max_features = match p.max_features {
            MaxFeatures::Count(m) => Py::Int(m),
            MaxFeatures::Fraction(f) => Py::Float(f),
        };
        let (contamination, offset) = match p.contamination {
            Contamination::Auto => (Py::str("auto"), Py::Float(self.offset)),
            // np.percentile returns a numpy float64.
            Contamination::Fraction(c) => (Py::Float(c), Py::float64(self.offset)),
        };
        let seed = Py::Int(i64::from(self.seed));
        let estimators = self
            .trees
            .iter()
            .map(|t| {
                extra_tree(
                    self.max_depth,
                    Py::Int(i64::from(t.random_state)),
                    Some((t.features.len(), &t.tree)),
                )
            })
            .collect();
        let features = self
            .trees
            .iter()
            .map(|t| Py::array_i64(&[t.features.len()], &t.features))
            .collect();
        let path_lengths = self
            .trees
            .iter()
            .map(|t| Py::array_f64(&[t.average_path_lengths.len()], &t.average_path_lengths))
            .collect();
        let depths = self
            .trees
            .iter()
            .map(|t| Py::array_i64(&[t.depths.len()], &t.depths))
            .collect();
        Py::object(
            "sklearn.ensemble._iforest",
            "IsolationForest",
            vec![
                ("estimator", Py::None),
                ("n_estimators", Py::Int(p.n_estimators as i64)),
                ("estimator_params", Py::Tuple(Vec::new())),
                ("max_samples", max_samples),
                ("max_features", max_features),
                ("bootstrap", Py::Bool(p.bootstrap)),
                ("bootstrap_features", Py::Bool(false)),
                ("oob_score", Py::Bool(false)),
                ("warm_start", Py::Bool(false)),
                ("n_jobs", Py::None),
                ("random_state", seed.clone()),
                ("verbose", Py::Int(0)),
                ("contamination", contamination),
                ("n_features_in_", Py::Int(self.n_features as i64)),
                ("max_samples_", Py::Int(self.max_samples as i64)),
                ("_n_samples", Py::Int(self.n_samples as i64)),
                ("estimator_", extra_tree(self.max_depth, seed, None)),
                ("_max_samples", Py::Int(self.max_samples as i64)),
                ("_max_features", Py::Int(self.max_features as i64)),
                ("_sample_weight", Py::None),
                ("estimators_", Py::List(estimators)),
                ("estimators_features_", Py::List(features)),
                ("_seeds", Py::array_i64(&[self.seeds.len()], &self.seeds)),
                ("_average_path_length_per_tree", Py::Tuple(path_lengths)),
                ("_decision_path_lengths", Py::Tuple(depths)),
                ("offset_", offset),
                ("_sklearn_version", Py::str(SKLEARN_VERSION)),
            ],
        )
    }
}

/// An `ExtraTreeRegressor` as IsolationForest configures it; `fitted` adds what `fit` sets
/// (columns seen, and the tree).
fn extra_tree(max_depth: usize, random_state: Py, fitted: Option<(usize, &Tree)>) -> Py {
    let mut state = vec![
        ("criterion", Py::str("squared_error")),
        ("splitter", Py::str("random")),
        ("max_depth", Py::Int(max_depth as i64)),
        ("min_samples_split", Py::Int(2)),
        ("min_samples_leaf", Py::Int(1)),
        ("min_weight_fraction_leaf", Py::Float(0.0)),
        ("max_features", Py::Int(1)),
        ("max_leaf_nodes", Py::None),
        ("random_state", random_state),
        ("min_impurity_decrease", Py::Float(0.0)),
        ("class_weight", Py::None),
        ("ccp_alpha", Py::Float(0.0)),
        ("monotonic_cst", Py::None),
    ];
    if let Some((n_columns, tree)) = fitted {
        state.extend([
            ("n_features_in_", Py::Int(n_columns as i64)),
            ("n_outputs_", Py::Int(1)),
            ("max_features_", Py::Int(1)),
            ("tree_", tree_py(n_columns, tree)),
        ]);
    }
    state.push(("_sklearn_version", Py::str(SKLEARN_VERSION)));
    Py::object("sklearn.tree._classes", "ExtraTreeRegressor", state)
}

/// `sklearn.tree._tree.Tree` as its `__reduce__` gives it: the constructor's arguments
/// (`n_features`, `n_classes = [1]`, `n_outputs = 1`) and the state `__setstate__` takes.
fn tree_py(n_columns: usize, tree: &Tree) -> Py {
    let node_dtype = Py::struct_dtype(
        &[
            ("left_child", "i8", 0),
            ("right_child", "i8", 8),
            ("feature", "i8", 16),
            ("threshold", "f8", 24),
            ("impurity", "f8", 32),
            ("n_node_samples", "i8", 40),
            ("weighted_n_node_samples", "f8", 48),
            ("missing_go_to_left", "u1", 56),
        ],
        64,
        false,
    );
    let records: Vec<u8> = tree.nodes.iter().flat_map(|n| n.record_bytes()).collect();
    let count = tree.nodes.len();
    let tree_new = Py::Call(
        Box::new(Py::global("sklearn.tree._tree", "Tree")),
        vec![
            Py::Int(n_columns as i64),
            Py::array_i64(&[1], &[1]),
            Py::Int(1),
        ],
    );
    let state = Py::Dict(vec![
        (Py::str("max_depth"), Py::Int(tree.max_depth as i64)),
        (Py::str("node_count"), Py::Int(count as i64)),
        (Py::str("nodes"), Py::ndarray(node_dtype, &[count], records)),
        (
            Py::str("values"),
            Py::array_f64(&[count, 1, 1], &tree.values),
        ),
    ]);
    Py::Build(Box::new(tree_new), Box::new(state))
}

/// Casts `x` to float32 as scikit-learn's input validation does, after checking its shape and
/// that every value is finite (and stays finite in float32).
fn to_f32(x: &[f64], n_features: usize) -> Result<Vec<f32>> {
    if n_features == 0 {
        return Err(Error::Data("no features (n_features is 0)".into()));
    }
    if !x.len().is_multiple_of(n_features) {
        return Err(Error::Data(format!(
            "{} values are not whole rows of {n_features} features",
            x.len()
        )));
    }
    if x.is_empty() {
        return Err(Error::Data("no rows".into()));
    }
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = v as f32;
            if f.is_finite() {
                Ok(f)
            } else {
                let (row, col) = (i / n_features, i % n_features);
                Err(Error::Data(if v.is_finite() {
                    format!(
                        "row {row}, feature {col}: value {v} overflows float32, which the trees use"
                    )
                } else {
                    format!("row {row}, feature {col}: value {v} is not finite")
                }))
            }
        })
        .collect()
}

/// A seed from the process's hash randomness (the OS's entropy), for `random_state=None`.
fn fresh_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32
}

/// `ceil(log2(max(max_samples, 2)))`: the depth at which a tree of `max_samples` rows has, on
/// average, isolated them.
fn depth_limit(max_samples: usize) -> usize {
    let m = max_samples.max(2);
    m.next_power_of_two().trailing_zeros() as usize
}

/// scikit-learn's `_average_path_length` for one node size: `c(n)`, the mean path length of an
/// unsuccessful search in a binary search tree of `n` keys.
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n == 2.0 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// numpy's `percentile(values, q)` with its default linear interpolation, in numpy's order of
/// operations.
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let quantile = q / 100.0;
    let virtual_index = (n - 1) as f64 * quantile;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    let below = virtual_index.floor();
    let gamma = virtual_index - below;
    let (a, b) = (sorted[below as usize], sorted[below as usize + 1]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_limit_is_the_ceiling_of_log2() {
        assert_eq!(depth_limit(0), 1);
        assert_eq!(depth_limit(1), 1);
        assert_eq!(depth_limit(2), 1);
        assert_eq!(depth_limit(3), 2);
        assert_eq!(depth_limit(256), 8);
        assert_eq!(depth_limit(257), 9);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&v, 50.0), 2.5);
        // np.percentile([1, 2, 3, 4], 10) is 1.3: a third of the way from 1 to 2.
        assert!((percentile(&v, 10.0) - 1.3).abs() < 1e-15);
        assert_eq!(percentile(&[7.0], 5.0), 7.0);
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        let bad = [
            (
                IforestParams {
                    n_estimators: 0,
                    ..Default::default()
                },
                "n_estimators",
            ),
            (
                IforestParams {
                    max_samples: MaxSamples::Fraction(1.5),
                    ..Default::default()
                },
                "max_samples",
            ),
            (
                IforestParams {
                    contamination: Contamination::Fraction(0.6),
                    ..Default::default()
                },
                "contamination",
            ),
            (
                IforestParams {
                    max_features: MaxFeatures::Fraction(f64::NAN),
                    ..Default::default()
                },
                "max_features",
            ),
        ];
        for (p, name) in bad {
            match p.validate() {
                Err(Error::Param { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
