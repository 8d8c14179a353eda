//! Every estimator, saved by real scikit-learn (1.9.1 with numpy 2, and 1.1.3 with numpy 1) in
//! every pickle protocol and joblib compression, scores as scikit-learn did on the golden rows.

use fleetscore_models::Model;
use serde_json::Value as Json;

use crate::{close, data};

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Scores one model file against its case's goldens; returns the mismatches.
fn check_file(dir: &str, file: &str) -> Vec<String> {
    let case = file.split('.').next().expect("case name");
    let golden: Json = serde_json::from_slice(
        &std::fs::read(data(&format!("{dir}/{case}.json"))).expect("golden json"),
    )
    .expect("parse golden");
    let bytes = std::fs::read(data(&format!("{dir}/{file}"))).expect("model file");
    let model = match Model::from_bytes(&bytes) {
        Ok(m) => m,
        Err(e) => return vec![format!("{dir}/{file}: load failed: {e}")],
    };
    let mut errors = Vec::new();
    let n_features = golden["n_features"].as_u64().expect("n_features") as usize;
    if model.n_features() != n_features {
        errors.push(format!(
            "{dir}/{file}: n_features {} != {n_features}",
            model.n_features()
        ));
        return errors;
    }
    let names: Option<Vec<String>> = golden["feature_names"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect());
    if model.info().feature_names != names {
        errors.push(format!(
            "{dir}/{file}: feature names {:?} != {names:?}",
            model.info().feature_names
        ));
    }
    let x: Vec<f64> = golden["X"]
        .as_array()
        .expect("X")
        .iter()
        .flat_map(floats)
        .collect();
    let rows = x.len() / n_features;
    let mut decision = vec![0.0; rows];
    let mut predicted = vec![0i8; rows];
    model
        .score(&x, &mut decision, &mut predicted)
        .expect("score");
    let want_dec = floats(&golden["decision_function"]);
    let want_pred: Vec<i8> = golden["predict"]
        .as_array()
        .expect("predict")
        .iter()
        .map(|v| v.as_i64().unwrap() as i8)
        .collect();
    for r in 0..rows {
        if !close(decision[r], want_dec[r]) {
            errors.push(format!(
                "{dir}/{file}: row {r} decision_function {} != {} (rel {:e})",
                decision[r],
                want_dec[r],
                ((decision[r] - want_dec[r]) / want_dec[r]).abs()
            ));
        }
        if predicted[r] != want_pred[r] {
            errors.push(format!(
                "{dir}/{file}: row {r} predict {} != {}",
                predicted[r], want_pred[r]
            ));
        }
    }
    // The rows again, repeated past a thousand in one call: estimators change how they work on
    // larger batches (IsolationForest lays its trees out for the vector walk from 512 rows), and
    // every copy of a row must still score as scikit-learn did.
    let copies = 1_100usize.div_ceil(rows.max(1));
    let tiled: Vec<f64> = std::iter::repeat_n(x.as_slice(), copies)
        .flatten()
        .copied()
        .collect();
    let mut tiled_decision = vec![0.0; rows * copies];
    let mut tiled_predicted = vec![0i8; rows * copies];
    model
        .score(&tiled, &mut tiled_decision, &mut tiled_predicted)
        .expect("score the repeated rows");
    for (i, (d, p)) in tiled_decision.iter().zip(&tiled_predicted).enumerate() {
        let r = i % rows;
        if !close(*d, want_dec[r]) || *p != want_pred[r] {
            errors.push(format!(
                "{dir}/{file}: row {r} repeated at {i} of {}: decision_function {d} predict {p}, \
                 not {} and {}",
                rows * copies,
                want_dec[r],
                want_pred[r]
            ));
            break;
        }
    }
    if let Some(want) = golden["score_samples"].as_array() {
        let want: Vec<f64> = want.iter().map(|v| v.as_f64().unwrap()).collect();
        let mut got = vec![0.0; rows];
        model.score_samples(&x, &mut got).expect("score_samples");
        for r in 0..rows {
            if !close(got[r], want[r]) {
                errors.push(format!(
                    "{dir}/{file}: row {r} score_samples {} != {}",
                    got[r], want[r]
                ));
            }
        }
    }
    errors
}

fn check_dir(dir: &str) {
    let manifest: Json = serde_json::from_slice(
        &std::fs::read(data(&format!("{dir}/manifest.json"))).expect("manifest"),
    )
    .expect("parse manifest");
    let files: Vec<String> = manifest["files"]
        .as_object()
        .expect("files")
        .keys()
        .cloned()
        .collect();
    assert!(
        files.len() >= 160,
        "{dir}: only {} model files",
        files.len()
    );
    let errors: Vec<String> = files.iter().flat_map(|f| check_file(dir, f)).collect();
    assert!(
        errors.is_empty(),
        "{} mismatches in {dir}:\n{}",
        errors.len(),
        errors[..errors.len().min(40)].join("\n")
    );
}

#[test]
fn scikit_learn_1_9_numpy_2_models_score_like_scikit_learn() {
    check_dir("sklearn-current");
}

#[test]
fn scikit_learn_1_1_numpy_1_models_score_like_scikit_learn() {
    check_dir("sklearn-legacy");
}

#[test]
fn formats_are_reported() {
    let m = Model::from_bytes(&std::fs::read(data("sklearn-current/iforest.z.joblib")).unwrap())
        .unwrap();
    assert_eq!(m.info().format, "joblib (zlib), protocol 4");
    let m =
        Model::from_bytes(&std::fs::read(data("sklearn-current/iforest.p5.pkl")).unwrap()).unwrap();
    assert_eq!(m.info().format, "pickle, protocol 5");
    assert_eq!(m.info().estimator, "IsolationForest");
    assert_eq!(m.info().sklearn_version.as_deref(), Some("1.9.1"));
    // Protocols 0 and 1 have no PROTO opcode: 1 is told by its binary opcodes.
    for (file, protocol) in [
        (
            "sklearn-current/scaler_ocsvm_rbf.p0.pkl",
            "pickle, protocol 0",
        ),
        (
            "sklearn-current/scaler_ocsvm_rbf.p1.pkl",
            "pickle, protocol 1",
        ),
        ("sklearn-legacy/iforest.p1.pkl", "pickle, protocol 1"),
    ] {
        let m = Model::from_bytes(&std::fs::read(data(file)).unwrap()).unwrap();
        assert_eq!(m.info().format, protocol, "{file}");
    }
}

#[test]
fn wrong_feature_count_is_a_clear_error() {
    let m = Model::from_bytes(&std::fs::read(data("sklearn-current/ocsvm_linear.p4.pkl")).unwrap())
        .unwrap();
    let mut out = vec![0.0; 2];
    let err = m
        .decision_function(&[1.0, 2.0, 3.0, 4.0], &mut out)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model expects 3 features, the input has 2"
    );
}

#[test]
fn non_finite_input_names_row_and_feature() {
    let m = Model::from_bytes(&std::fs::read(data("sklearn-current/ocsvm_linear.p4.pkl")).unwrap())
        .unwrap();
    let mut out = vec![0.0; 2];
    let err = m
        .decision_function(&[1.0, 2.0, 3.0, 4.0, f64::NAN, 6.0], &mut out)
        .unwrap_err();
    assert_eq!(err.to_string(), "row 1, feature 1: value NaN is not finite");
}

#[test]
fn parallel_scoring_equals_serial() {
    let m =
        Model::from_bytes(&std::fs::read(data("sklearn-current/iforest.p4.pkl")).unwrap()).unwrap();
    let d = m.n_features();
    let rows = 10_000;
    let x: Vec<f64> = (0..rows * d)
        .map(|i| ((i * 7919) % 1000) as f64 / 100.0 - 5.0)
        .collect();
    let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
    let (mut pa, mut pb) = (vec![0i8; rows], vec![0i8; rows]);
    m.score(&x, &mut a, &mut pa).unwrap();
    m.score_parallel(&x, &mut b, &mut pb, 3).unwrap();
    assert_eq!(a, b);
    assert_eq!(pa, pb);
}
