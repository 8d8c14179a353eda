//! Mutation fuzzing of the whole loader: bytes of real model files, flipped, truncated and
//! spliced, must load or fail with an error, never panic or hang. Cases are bounded so the test
//! stays fast; set PROPTEST_CASES to run longer.

use fleetscore_models::Model;
use proptest::prelude::*;

use crate::data;

fn seeds() -> Vec<Vec<u8>> {
    [
        "reference/models/model_1_1",
        "sklearn-current/scaler_ocsvm_rbf.p2.pkl",
        "sklearn-current/scaler_ocsvm_rbf.p5.pkl",
        "sklearn-current/minmax_ocsvm.joblib",
        "sklearn-current/lof_manhattan.p4.pkl",
        "sklearn-legacy/maxabs_sgdocsvm.joblib",
        "sklearn-legacy/elliptic.p2.pkl",
        "sklearn-current/robust_iforest.p4.pkl",
        "sklearn-current/scaler_ocsvm_rbf.skops",
        "sklearn-current/lof_manhattan.deflate.skops",
        "sklearn-current/robust_iforest.bz2.skops",
    ]
    .iter()
    .map(|p| std::fs::read(data(p)).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_model_files_never_panic(
        seed in 0usize..11,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = seeds()[seed].clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = Model::from_bytes(&bytes);
    }
}
