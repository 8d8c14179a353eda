//! Integration tests of fleetscore-train, compiled as one binary.

mod iforest;
mod ocsvm_goldens;
mod ocsvm_params;
mod random_state;

use std::path::PathBuf;

/// `crates/train/tests/data/...`
pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Reads a JSON file under `tests/data`.
pub fn json(path: &str) -> serde_json::Value {
    let bytes = std::fs::read(data(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Relative closeness as the parity contract states it: within 1e-9 of scikit-learn's value.
pub fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-9 * want.abs()
}
