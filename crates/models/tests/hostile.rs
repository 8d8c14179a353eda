//! Hostile pickles (os.system, posix.system through STACK_GLOBAL, eval, subprocess.Popen, a
//! payload nested in a Pipeline step or a numpy object array, joblib) are refused with an error
//! naming the global, and nothing they ask for happens.

use std::path::PathBuf;

use fleetscore_models::Model;
use serde_json::Value as Json;

fn hostile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pickle/tests/data/hostile")
}

#[test]
fn hostile_pickles_are_refused_without_side_effects() {
    let cases: Json =
        serde_json::from_slice(&std::fs::read(hostile_dir().join("hostile.json")).unwrap())
            .unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let refused = case["refused_global"].as_str().unwrap();
        let marker = PathBuf::from(case["marker"].as_str().unwrap());
        let _ = std::fs::remove_file(&marker);
        let bytes = std::fs::read(hostile_dir().join(file)).unwrap();
        let err = Model::from_bytes(&bytes).expect_err(file).to_string();
        assert!(
            err.contains(&format!("refused global `{refused}`")),
            "{file}: {err}"
        );
        assert!(!marker.exists(), "{file}: {} was created", marker.display());
    }
}

#[test]
fn non_estimator_pickles_are_refused_clearly() {
    // pickle.dumps({'a': 1}, protocol=2)
    let err = Model::from_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported model: expected an estimator, found dict"
    );
}

#[test]
fn empty_and_garbage_files_are_errors_not_panics() {
    for bytes in [&b""[..], b"hello world", b"\x80\x05", b"\x78\x9c\x00\x01"] {
        assert!(Model::from_bytes(bytes).is_err());
    }
}
