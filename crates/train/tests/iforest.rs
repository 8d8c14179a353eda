//! IsolationForest fitted natively against scikit-learn's own fits (`cases.json`, from
//! gen_train_iforest.py): the same seeds, feature subsets and trees node for node, the same
//! scores; the pickle written scores the same in fleetscore and, where
//! `FLEETSCORE_TEST_PYTHON` names a Python with scikit-learn, in scikit-learn itself.

use std::collections::HashMap;
use std::process::Command;

use fleetscore_models::Model;
use fleetscore_train::iforest::{IsolationForest, average_path_length};
use fleetscore_train::tree::Tree;
use fleetscore_train::{Contamination, Error, IforestParams, MaxFeatures, MaxSamples, fit_iforest};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::{close, json};

struct Dataset {
    n_features: usize,
    x: Vec<f64>,
    x_test: Vec<f64>,
}

fn rows(v: &Json) -> Vec<f64> {
    v.as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().unwrap())
        })
        .collect()
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn ints(v: &Json) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

fn datasets() -> HashMap<String, Dataset> {
    let sets = json("iforest/datasets.json");
    sets.as_object()
        .expect("datasets")
        .iter()
        .map(|(name, d)| {
            let set = Dataset {
                n_features: d["n_features"].as_u64().unwrap() as usize,
                x: rows(&d["X"]),
                x_test: rows(&d["X_test"]),
            };
            (name.clone(), set)
        })
        .collect()
}

fn cases() -> Vec<Json> {
    let file = json("iforest/cases.json");
    assert_eq!(
        file["sklearn"], "1.9.1",
        "goldens from another scikit-learn"
    );
    file["cases"].as_array().expect("cases").clone()
}

/// The case's scikit-learn keyword arguments as [`IforestParams`]: a JSON integer is an
/// integral parameter, a JSON float a fraction, as Python told them apart.
fn params(p: &Json) -> IforestParams {
    let max_samples = match &p["max_samples"] {
        Json::String(s) if s == "auto" => MaxSamples::Auto,
        v if v.is_u64() => MaxSamples::Count(v.as_u64().unwrap() as usize),
        v => MaxSamples::Fraction(v.as_f64().expect("max_samples")),
    };
    let contamination = match &p["contamination"] {
        Json::String(s) if s == "auto" => Contamination::Auto,
        v => Contamination::Fraction(v.as_f64().expect("contamination")),
    };
    let max_features = match &p["max_features"] {
        v if v.is_i64() => MaxFeatures::Count(v.as_i64().unwrap()),
        v => MaxFeatures::Fraction(v.as_f64().expect("max_features")),
    };
    IforestParams {
        n_estimators: p["n_estimators"].as_u64().expect("n_estimators") as usize,
        max_samples,
        contamination,
        max_features,
        bootstrap: p["bootstrap"].as_bool().expect("bootstrap"),
        random_state: p["random_state"].as_u64().map(|s| s as u32),
    }
}

/// The first 16 hex digits of the SHA-256 of the tree's node records and values, as
/// scikit-learn pickles them (`nodes.tobytes() + values.tobytes()`).
fn tree_digest(tree: &Tree) -> String {
    let mut h = Sha256::new();
    for node in &tree.nodes {
        h.update(node.record_bytes());
    }
    for v in &tree.values {
        h.update(v.to_le_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where two node arrays first differ, field by field.
fn compare_nodes(tree: &Tree, want: &Json) -> Vec<String> {
    let n = tree.nodes.len();
    let mut errors = Vec::new();
    let mut field = |name: &str, got: Vec<f64>| {
        let want = floats(&want[name]);
        if want.len() != n {
            errors.push(format!("{name}: {n} nodes, scikit-learn {}", want.len()));
        } else if let Some(i) = (0..n).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            errors.push(format!(
                "{name}[{i}] = {} where scikit-learn has {}",
                got[i], want[i]
            ));
        }
    };
    let nodes = &tree.nodes;
    field(
        "left_child",
        nodes.iter().map(|n| n.left_child as f64).collect(),
    );
    field(
        "right_child",
        nodes.iter().map(|n| n.right_child as f64).collect(),
    );
    field("feature", nodes.iter().map(|n| n.feature as f64).collect());
    field("threshold", nodes.iter().map(|n| n.threshold).collect());
    field("impurity", nodes.iter().map(|n| n.impurity).collect());
    field(
        "n_node_samples",
        nodes.iter().map(|n| n.n_node_samples as f64).collect(),
    );
    field(
        "weighted_n_node_samples",
        nodes.iter().map(|n| n.weighted_n_node_samples).collect(),
    );
    field(
        "missing_go_to_left",
        nodes
            .iter()
            .map(|n| f64::from(u8::from(n.missing_go_to_left)))
            .collect(),
    );
    field("value", tree.values.clone());
    errors
}

/// Worst relative difference seen, for the report.
#[derive(Default)]
struct Worst(f64);

impl Worst {
    fn see(&mut self, got: f64, want: f64) {
        if got != want {
            self.0 = self.0.max((got - want).abs() / want.abs());
        }
    }
}

/// Fits one case and lists every way it differs from scikit-learn's fit.
fn check_case(case: &Json, sets: &HashMap<String, Dataset>, worst: &mut Worst) -> Vec<String> {
    let name = case["name"].as_str().unwrap();
    let set = &sets[case["dataset"].as_str().unwrap()];
    let p = params(&case["params"]);
    let forest = match IsolationForest::fit(&set.x, set.n_features, &p) {
        Ok(f) => f,
        Err(e) => return vec![format!("{name}: fit failed: {e}")],
    };
    let mut errors = Vec::new();
    let mut expect = |what: &str, ok: bool, detail: String| {
        if !ok {
            errors.push(format!("{name}: {what}: {detail}"));
        }
    };
    let want_int = |k: &str| case[k].as_u64().unwrap() as usize;
    expect(
        "max_samples_",
        forest.max_samples == want_int("max_samples_"),
        format!("{} != {}", forest.max_samples, case["max_samples_"]),
    );
    expect(
        "_max_features",
        forest.max_features == want_int("max_features_"),
        format!("{} != {}", forest.max_features, case["max_features_"]),
    );
    expect(
        "max_depth",
        forest.max_depth == want_int("max_depth"),
        format!("{} != {}", forest.max_depth, case["max_depth"]),
    );
    expect(
        "_seeds",
        forest.seeds == ints(&case["seeds"]),
        format!("{:?} != {}", forest.seeds, case["seeds"]),
    );
    let want_trees = case["trees"].as_array().unwrap();
    expect(
        "trees",
        forest.trees.len() == want_trees.len(),
        format!("{} != {}", forest.trees.len(), want_trees.len()),
    );
    for (t, (got, want)) in forest.trees.iter().zip(want_trees).enumerate() {
        let at = format!("tree {t}");
        expect(
            &at,
            i64::from(got.random_state) == want["random_state"].as_i64().unwrap(),
            format!(
                "random_state {} != {}",
                got.random_state, want["random_state"]
            ),
        );
        expect(
            &at,
            got.features == ints(&want["features"]),
            format!("features {:?} != {}", got.features, want["features"]),
        );
        expect(
            &at,
            got.tree.nodes.len() as u64 == want["node_count"].as_u64().unwrap()
                && got.tree.max_depth as u64 == want["max_depth"].as_u64().unwrap(),
            format!(
                "{} nodes, depth {} where scikit-learn has {} and {}",
                got.tree.nodes.len(),
                got.tree.max_depth,
                want["node_count"],
                want["max_depth"]
            ),
        );
        if want.get("nodes").is_some() {
            for e in compare_nodes(&got.tree, &want["nodes"]) {
                expect(&at, false, e);
            }
        }
        let digest = tree_digest(&got.tree);
        expect(
            &at,
            digest == want["sha256"].as_str().unwrap(),
            format!("node records hash {digest} != {}", want["sha256"]),
        );
    }
    if let Some(first) = forest.trees.first() {
        let want = floats(&case["average_path_length_first"]);
        let ok = first.average_path_lengths.len() == want.len()
            && first
                .average_path_lengths
                .iter()
                .zip(&want)
                .all(|(&g, &w)| close(g, w));
        expect(
            "_average_path_length_per_tree[0]",
            ok,
            format!("{:?} != {want:?}", first.average_path_lengths),
        );
    }
    let offset = case["offset_"].as_f64().unwrap();
    worst.see(forest.offset, offset);
    expect(
        "offset_",
        close(forest.offset, offset),
        format!("{} != {offset}", forest.offset),
    );

    let score = forest.score_samples(&set.x_test).unwrap();
    let decision = forest.decision_function(&set.x_test).unwrap();
    let want_score = floats(&case["score_samples"]);
    let want_decision = floats(&case["decision_function"]);
    for r in 0..want_score.len() {
        worst.see(score[r], want_score[r]);
        worst.see(decision[r], want_decision[r]);
        expect(
            &format!("row {r}"),
            close(score[r], want_score[r]) && close(decision[r], want_decision[r]),
            format!(
                "score_samples {} / decision_function {} where scikit-learn has {} / {}",
                score[r], decision[r], want_score[r], want_decision[r]
            ),
        );
    }
    let want_outliers = case["train_predict_outliers"].as_u64().unwrap() as f64;
    let got_outliers = forest.train_outlier_fraction * forest.n_samples as f64;
    expect(
        "train outliers",
        (got_outliers - want_outliers).abs() < 0.5,
        format!("{got_outliers} != {want_outliers}"),
    );

    // The pickle, read back by fleetscore's own loader, scores the held-out rows the same.
    let pickle = forest.to_pickle();
    match Model::from_bytes(&pickle) {
        Err(e) => expect("pickle", false, format!("fleetscore cannot load it: {e}")),
        Ok(model) => {
            let rows = want_decision.len();
            let mut dec = vec![0.0; rows];
            let mut pred = vec![0i8; rows];
            model.score(&set.x_test, &mut dec, &mut pred).unwrap();
            let want_pred = ints(&case["predict"]);
            for r in 0..rows {
                worst.see(dec[r], want_decision[r]);
                expect(
                    &format!("pickle row {r}"),
                    close(dec[r], want_decision[r]) && i64::from(pred[r]) == want_pred[r],
                    format!(
                        "decision {} predict {} where scikit-learn has {} and {}",
                        dec[r], pred[r], want_decision[r], want_pred[r]
                    ),
                );
            }
        }
    }
    errors
}

#[test]
fn isolation_forests_grow_scikit_learns_trees() {
    let sets = datasets();
    let cases = cases();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    let mut worst = Worst::default();
    let errors: Vec<String> = cases
        .iter()
        .flat_map(|c| check_case(c, &sets, &mut worst))
        .collect();
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors[..errors.len().min(40)].join("\n")
    );
    eprintln!(
        "{} cases like scikit-learn; worst relative score difference {:e}",
        cases.len(),
        worst.0
    );
}

#[test]
fn fit_iforest_reports_its_metrics() {
    let sets = datasets();
    let set = &sets["gauss300x2"];
    let params = IforestParams {
        n_estimators: 10,
        random_state: Some(5),
        contamination: Contamination::Fraction(0.1),
        ..IforestParams::default()
    };
    let trained = fit_iforest(&set.x, set.n_features, &params).unwrap();
    let metric = |name: &str| {
        trained
            .metrics
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
            .1
    };
    assert_eq!(metric("n_estimators"), 10.0);
    assert_eq!(metric("max_samples_"), 256.0);
    assert_eq!(metric("random_state"), 5.0);
    // The 10th percentile of the training scores marks 10% of the rows (ties aside).
    assert!((metric("train_outlier_fraction") - 0.1).abs() < 0.01);
    assert!(metric("mean_tree_depth") > 1.0 && metric("mean_tree_depth") <= 8.0);
    assert!(metric("offset_") < 0.0 && metric("offset_") > -1.0);
}

#[test]
fn without_a_seed_one_is_drawn_and_reported() {
    let sets = datasets();
    let set = &sets["gauss37x3"];
    let params = IforestParams {
        n_estimators: 5,
        ..IforestParams::default()
    };
    let a = IsolationForest::fit(&set.x, set.n_features, &params).unwrap();
    // Refitting with the reported seed gives the same forest, pickle byte for byte.
    let again = IforestParams {
        random_state: Some(a.seed),
        ..params
    };
    let b = IsolationForest::fit(&set.x, set.n_features, &again).unwrap();
    assert_eq!(a.to_pickle(), b.to_pickle());
    assert_eq!(a.params.random_state, Some(a.seed));
}

#[test]
fn bad_data_and_parameters_are_errors() {
    let p = IforestParams {
        n_estimators: 3,
        random_state: Some(0),
        ..IforestParams::default()
    };
    let data_err = |x: &[f64], d: usize| match IsolationForest::fit(x, d, &p) {
        Err(Error::Data(m)) => m,
        other => panic!("{x:?}: {other:?}"),
    };
    assert_eq!(data_err(&[], 2), "no rows");
    assert_eq!(data_err(&[1.0, 2.0], 0), "no features (n_features is 0)");
    assert!(data_err(&[1.0, 2.0, 3.0], 2).contains("not whole rows"));
    assert_eq!(
        data_err(&[1.0, 2.0, 3.0, f64::NAN], 2),
        "row 1, feature 1: value NaN is not finite"
    );
    assert!(data_err(&[f64::INFINITY, 2.0], 2).contains("row 0, feature 0"));
    assert!(data_err(&[1e39, 2.0], 2).contains("overflows float32"));

    let param_err = |q: IforestParams, x: &[f64], d: usize| match IsolationForest::fit(x, d, &q) {
        Err(Error::Param { name, .. }) => name,
        other => panic!("{q:?}: {other:?}"),
    };
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    // scikit-learn: "max_features must be <= n_features".
    let too_many = IforestParams {
        max_features: MaxFeatures::Count(2),
        ..p
    };
    assert_eq!(param_err(too_many, &x, 1), "max_features");
    // int(0.1 * 5) = 0 rows per tree: scikit-learn refuses the all-zero sample weights.
    let no_rows = IforestParams {
        max_samples: MaxSamples::Fraction(0.1),
        ..p
    };
    assert_eq!(param_err(no_rows, &x, 1), "max_samples");
    let zero_count = IforestParams {
        max_samples: MaxSamples::Count(0),
        ..p
    };
    assert_eq!(param_err(zero_count, &x, 1), "max_samples");
    // Like scikit-learn, a non-positive integer max_features means one feature.
    let none = IforestParams {
        max_features: MaxFeatures::Count(-3),
        ..p
    };
    assert_eq!(IsolationForest::fit(&x, 1, &none).unwrap().max_features, 1);
}

#[test]
fn average_path_length_is_the_bst_search_cost() {
    assert_eq!(average_path_length(0.0), 0.0);
    assert_eq!(average_path_length(1.0), 0.0);
    assert_eq!(average_path_length(2.0), 1.0);
    assert!((average_path_length(256.0) - 10.244_770_920_657_7).abs() < 1e-9);
}

/// Python that loads each written pickle with scikit-learn, refits scikit-learn on the same
/// data and parameters, and compares everything: exits non-zero on the first difference.
const SKLEARN_CHECK: &str = r#"
import json, pickle, sys, warnings
import numpy as np
from sklearn.ensemble import IsolationForest
root, data = sys.argv[1], sys.argv[2]
def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()
sets = json.loads(read(data + "/datasets.json"))
cases = json.loads(read(data + "/cases.json"))["cases"]
checked = 0
for case in cases:
    d = sets[case["dataset"]]
    x, t = np.array(d["X"]), np.array(d["X_test"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an InconsistentVersionWarning, or any other, fails
        ours = pickle.loads(read(f"{root}/{case['name']}.pkl", "rb"))
    assert type(ours) is IsolationForest, type(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_samples above the row count, as a case wants
        theirs = IsolationForest(**case["params"]).fit(x)
    name = case["name"]
    assert ours.get_params() == theirs.get_params(), (name, ours.get_params(), theirs.get_params())
    for k in ["max_samples_", "_max_samples", "_max_features", "n_features_in_", "_n_samples"]:
        assert getattr(ours, k) == getattr(theirs, k), (name, k)
    assert np.array_equal(ours._seeds, theirs._seeds), name
    assert ours.offset_ == theirs.offset_ or abs(ours.offset_ - theirs.offset_) <= 1e-9 * abs(theirs.offset_), name
    assert len(ours.estimators_) == len(theirs.estimators_), name
    for i, (a, b) in enumerate(zip(ours.estimators_, theirs.estimators_)):
        assert a.get_params() == b.get_params(), (name, i, a.get_params(), b.get_params())
        sa, sb = a.tree_.__getstate__(), b.tree_.__getstate__()
        assert sa["nodes"].dtype == sb["nodes"].dtype, (name, i)
        assert sa["nodes"].tobytes() == sb["nodes"].tobytes(), (name, i)
        assert sa["values"].tobytes() == sb["values"].tobytes(), (name, i)
        assert sa["max_depth"] == sb["max_depth"] and sa["node_count"] == sb["node_count"], (name, i)
        assert a.tree_.n_features == b.tree_.n_features, (name, i)
        assert np.array_equal(ours.estimators_features_[i], theirs.estimators_features_[i]), (name, i)
        assert np.array_equal(ours._decision_path_lengths[i], theirs._decision_path_lengths[i]), (name, i)
        assert np.allclose(ours._average_path_length_per_tree[i], theirs._average_path_length_per_tree[i], rtol=1e-12, atol=0), (name, i)
    for xs in (t, x[:50]):
        da, db = ours.decision_function(xs), theirs.decision_function(xs)
        assert np.all(np.abs(da - db) <= 1e-9 * np.abs(db)), (name, np.max(np.abs(da - db)))
        assert np.array_equal(ours.predict(xs), theirs.predict(xs)), name
    checked += 1
print("ok", checked)
"#;

#[test]
fn scikit_learn_loads_the_pickles_as_its_own_fits() {
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: the pickles are not loaded in scikit-learn");
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import sklearn; print(sklearn.__version__)"])
        .output()
        .expect("run FLEETSCORE_TEST_PYTHON");
    if !probe.status.success() {
        eprintln!("{python} has no scikit-learn: the pickles are not loaded in scikit-learn");
        return;
    }
    let dir = std::env::temp_dir().join(format!("fleetscore-train-iforest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sets = datasets();
    let cases = cases();
    for case in &cases {
        let set = &sets[case["dataset"].as_str().unwrap()];
        let trained = fit_iforest(&set.x, set.n_features, &params(&case["params"])).unwrap();
        let path = dir.join(format!("{}.pkl", case["name"].as_str().unwrap()));
        std::fs::write(path, &trained.pickle).unwrap();
    }
    let o = Command::new(&python)
        .args([
            "-c",
            SKLEARN_CHECK,
            dir.to_str().unwrap(),
            crate::data("iforest").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(stdout.trim(), format!("ok {}", cases.len()));
}

#[test]
fn odd_shapes_fit_without_panicking() {
    // Tiny and tied data under every sampling path: scores stay in [-1, 0) and finite.
    let mut checked = 0;
    for rows in 1..=7usize {
        for d in 1..=3usize {
            let x: Vec<f64> = (0..rows * d).map(|i| ((i * 7) % 3) as f64 * 0.5).collect();
            for (max_samples, bootstrap, max_features) in [
                (MaxSamples::Auto, false, MaxFeatures::Fraction(1.0)),
                (MaxSamples::Count(1), false, MaxFeatures::Count(1)),
                (
                    MaxSamples::Count(rows + 3),
                    true,
                    MaxFeatures::Fraction(0.5),
                ),
                (
                    MaxSamples::Fraction(1.0),
                    true,
                    MaxFeatures::Count(d as i64),
                ),
            ] {
                let p = IforestParams {
                    n_estimators: 4,
                    max_samples,
                    bootstrap,
                    max_features,
                    contamination: Contamination::Fraction(0.5),
                    random_state: Some(rows as u32 * 31 + d as u32),
                };
                let forest = IsolationForest::fit(&x, d, &p).unwrap();
                let scores = forest.score_samples(&x).unwrap();
                assert!(
                    scores
                        .iter()
                        .all(|s| s.is_finite() && (-1.0..0.0).contains(s)),
                    "{rows}x{d} {p:?}: {scores:?}"
                );
                assert!(Model::from_bytes(&forest.to_pickle()).is_ok());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 84);
}
