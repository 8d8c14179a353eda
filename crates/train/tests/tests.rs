//! Integration tests of fleetscore-train, compiled as one binary.

mod ocsvm_goldens;
mod ocsvm_params;

use std::path::PathBuf;

/// `crates/train/tests/data/...`
pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}
