//! skops files: every estimator saved by `skops.io.dump` (scikit-learn 1.9.1) scores bit for
//! bit as its pickle does, and hostile skops files are refused with their reason.

use std::path::PathBuf;

use fleetscore_models::{Limits, Model};
use serde_json::Value as Json;

use crate::data;

/// Every skops file of the current fixtures, with the pickle of the same fitted model.
fn skops_files() -> Vec<(String, String)> {
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(data("sklearn-current/manifest.json")).unwrap())
            .unwrap();
    let files: Vec<(String, String)> = manifest["files"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|f| f.ends_with("skops"))
        .map(|f| {
            let case = f.split('.').next().unwrap();
            let pickle = if case == "ocsvm_rbf_large" {
                format!("{case}.p5.pkl")
            } else {
                format!("{case}.p4.pkl")
            };
            (f.clone(), pickle)
        })
        .collect();
    assert!(files.len() >= 36, "only {} skops files", files.len());
    files
}

fn load(path: &str) -> Model {
    Model::from_bytes(&std::fs::read(data(path)).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn skops_files_score_bit_for_bit_like_their_pickles() {
    for (skops, pickle) in skops_files() {
        let a = load(&format!("sklearn-current/{skops}"));
        let b = load(&format!("sklearn-current/{pickle}"));
        assert_eq!(a.n_features(), b.n_features(), "{skops}");
        assert_eq!(a.info().estimator, b.info().estimator, "{skops}");
        assert_eq!(a.info().feature_names, b.info().feature_names, "{skops}");
        assert_eq!(
            a.info().sklearn_version,
            b.info().sklearn_version,
            "{skops}"
        );
        let d = a.n_features();
        let rows = 3_000;
        let x: Vec<f64> = (0..rows * d)
            .map(|i| ((i * 7919) % 2000) as f64 / 100.0 - 10.0)
            .collect();
        let (mut sa, mut sb) = (vec![0.0; rows], vec![0.0; rows]);
        let (mut pa, mut pb) = (vec![0i8; rows], vec![0i8; rows]);
        a.score(&x, &mut sa, &mut pa).unwrap();
        b.score(&x, &mut sb, &mut pb).unwrap();
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&sa), bits(&sb), "{skops}: decision_function");
        assert_eq!(pa, pb, "{skops}: predict");
        a.score_samples(&x, &mut sa).unwrap();
        b.score_samples(&x, &mut sb).unwrap();
        assert_eq!(bits(&sa), bits(&sb), "{skops}: score_samples");
    }
}

#[test]
fn skops_formats_are_reported() {
    for (file, format) in [
        ("sklearn-current/iforest.skops", "skops, protocol 2"),
        (
            "sklearn-current/iforest.deflate.skops",
            "skops (deflate), protocol 2",
        ),
        (
            "sklearn-current/robust_iforest.bz2.skops",
            "skops (bzip2), protocol 2",
        ),
        (
            "sklearn-current/lof_manhattan.lzma.skops",
            "skops (lzma), protocol 2",
        ),
    ] {
        let m = load(file);
        assert_eq!(m.info().format, format, "{file}");
        assert_eq!(m.info().sklearn_version.as_deref(), Some("1.9.1"), "{file}");
    }
    let m = load("sklearn-current/scaler_ocsvm_rbf.skops");
    assert_eq!(m.info().estimator, "Pipeline(StandardScaler, OneClassSVM)");
    assert_eq!(
        m.info().feature_names.as_deref(),
        Some(&["temp".to_string(), "pressure".into(), "vibration".into()][..])
    );
}

fn hostile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pickle/tests/data/hostile-skops")
}

#[test]
fn hostile_skops_files_are_refused_with_the_reason() {
    let cases: Json =
        serde_json::from_slice(&std::fs::read(hostile_dir().join("hostile.json")).unwrap())
            .unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 25);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let bytes = std::fs::read(hostile_dir().join(file)).unwrap();
        let mut limits = Limits::default();
        if let Some(m) = case["max_memory_bytes"].as_u64() {
            limits.max_memory_bytes = m as usize;
        }
        let marker = case["marker"].as_str().map(PathBuf::from);
        if let Some(m) = &marker {
            let _ = std::fs::remove_file(m);
        }
        let result = Model::from_bytes_within(&bytes, &limits);
        if expect.is_empty() {
            // The control: the same archive writer, nothing changed.
            result.unwrap_or_else(|e| panic!("{file}: {e}"));
            continue;
        }
        let err = result.expect_err(file).to_string();
        assert!(err.contains(expect), "{file}: {err}");
        assert!(!err.contains('\n'), "{file}: not one line: {err}");
        if let Some(m) = marker {
            assert!(!m.exists(), "{file}: {} was created", m.display());
        }
    }
}

#[test]
fn refusals_name_where_in_the_model_they_are() {
    let bytes = std::fs::read(hostile_dir().join("npy_object_dtype.skops")).unwrap();
    let err = Model::from_bytes(&bytes).unwrap_err().to_string();
    assert!(
        err.starts_with("bad skops file: model.steps[1][1].support_vectors_: zip member `"),
        "{err}"
    );
    let bytes = std::fs::read(hostile_dir().join("posix_system_function.skops")).unwrap();
    let err = Model::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("at model.steps[1][1]:"), "{err}");
}

#[test]
fn the_budget_counts_a_skops_load_like_a_pickle_load() {
    // The same model costs about the same to load from either format, and a budget below
    // that is refused, naming where it stopped.
    let bytes = std::fs::read(data("sklearn-current/iforest.skops")).unwrap();
    let (_, skops) = Model::from_bytes_measured(&bytes, &Limits::default()).unwrap();
    let pickle = std::fs::read(data("sklearn-current/iforest.p4.pkl")).unwrap();
    let (_, pickled) = Model::from_bytes_measured(&pickle, &Limits::default()).unwrap();
    assert!(
        skops > 0 && skops < 8 * pickled,
        "skops {skops}, pickle {pickled}"
    );
    let limits = Limits {
        max_memory_bytes: skops / 2,
        ..Limits::default()
    };
    let err = Model::from_bytes_within(&bytes, &limits)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("limit exceeded"), "{err}");
}
