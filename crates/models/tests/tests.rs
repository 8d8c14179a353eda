//! Integration tests of the model loader and scorers, compiled as one binary.

mod fuzz;
mod hostile;
mod reference;
mod sklearn_goldens;
mod skops;

use std::path::PathBuf;

/// `crates/models/tests/data/...`
pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Relative closeness as the parity contract states it: within 1e-9 of scikit-learn's value.
pub fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-9 * want.abs()
}
