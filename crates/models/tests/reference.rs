//! The reference architecture's 15 models (scikit-learn 0.19.2, protocol 3, old module paths)
//! score every one of its 17,768 readings as scikit-learn does.

use std::collections::HashMap;

use fleetscore_models::Model;

use crate::{close, data};

#[test]
fn reference_fleet_scores_exactly_like_scikit_learn() {
    let expected = std::fs::read_to_string(data("reference/expected.csv")).unwrap();
    let mut lines = expected.lines();
    assert_eq!(lines.next(), Some("TS,Device,Tag,Value,score,prediction"));
    let mut models: HashMap<(String, String), Model> = HashMap::new();
    let (mut rows, mut outliers) = (0, 0);
    let mut errors = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let (device, tag) = (f[1].to_string(), f[2].to_string());
        let value: f64 = f[3].parse().unwrap();
        let want_score: f64 = f[4].parse().unwrap();
        let want_pred: i8 = f[5].parse().unwrap();
        let model = models
            .entry((device.clone(), tag.clone()))
            .or_insert_with(|| {
                let path = data(&format!("reference/models/model_{device}_{tag}"));
                Model::from_bytes(&std::fs::read(path).unwrap()).unwrap()
            });
        let (mut score, mut pred) = ([0.0], [0i8]);
        model.score(&[value], &mut score, &mut pred).unwrap();
        if !close(score[0], want_score) || pred[0] != want_pred {
            errors.push(format!(
                "line {}: device {device} tag {tag} value {value}: got ({}, {}), scikit-learn ({want_score}, {want_pred})",
                i + 2,
                score[0],
                pred[0]
            ));
        }
        rows += 1;
        outliers += usize::from(want_pred == -1);
    }
    assert_eq!(rows, 17_768);
    assert_eq!(models.len(), 15);
    assert!(outliers > 0 && outliers < rows);
    assert!(
        errors.is_empty(),
        "{} of {rows} differ:\n{}",
        errors.len(),
        errors[..errors.len().min(20)].join("\n")
    );
}

#[test]
fn reference_model_is_described() {
    let m = Model::from_bytes(&std::fs::read(data("reference/models/model_1_1")).unwrap()).unwrap();
    let info = m.info();
    assert_eq!(info.format, "pickle, protocol 3");
    assert_eq!(info.estimator, "Pipeline(StandardScaler, OneClassSVM)");
    assert_eq!(info.n_features, 1);
    assert_eq!(info.sklearn_version.as_deref(), Some("0.19.2"));
    assert_eq!(info.steps[1].class, "sklearn.svm._classes.OneClassSVM");
    assert_eq!(info.steps[1].params["kernel"], "rbf");
}
