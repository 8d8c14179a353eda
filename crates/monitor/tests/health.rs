//! Model health on the reference fleet: the four models scikit-learn itself calls anomalous on
//! every reading are flagged, the broken one is failing, and nothing else is flagged.

use std::collections::BTreeSet;

use fleetscore_monitor::HealthOptions;

use crate::fleet::{ALWAYS, fleet, reference};

/// The models whose every expected prediction (scikit-learn's) is -1.
fn always_anomalous_per_scikit_learn() -> BTreeSet<String> {
    let text = std::fs::read_to_string(reference("expected.csv")).unwrap();
    let mut seen: std::collections::BTreeMap<String, bool> = Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let all = seen.entry(format!("{}/{}", f[1], f[2])).or_insert(true);
        *all &= f[5] == "-1";
    }
    seen.into_iter()
        .filter(|(_, all)| *all)
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn the_reference_fleets_always_anomalous_models_are_flagged_and_the_broken_one_fails() {
    let want = always_anomalous_per_scikit_learn();
    assert_eq!(want, ALWAYS.iter().map(|s| s.to_string()).collect());
    let f = fleet("health");
    let report = fleetscore_monitor::health_report(f.store.clone(), HealthOptions::default());
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.models, 15);
    assert_eq!(report.runs.len(), 4);
    let flagged = |kind: &str| -> BTreeSet<String> {
        report
            .attention
            .iter()
            .filter(|m| m.health.has(kind))
            .map(|m| format!("{}/{}", m.device, m.tag))
            .collect()
    };
    assert_eq!(flagged("always_anomalous"), want);
    assert_eq!(flagged("failing"), BTreeSet::from(["2/4".to_string()]));
    assert!(flagged("silent").is_empty() && flagged("drift").is_empty());
    // Failing comes first; its reason is the loader's.
    let first = &report.attention[0];
    assert_eq!((first.device.as_str(), first.tag.as_str()), ("2", "4"));
    assert!(
        first
            .last_failure
            .as_deref()
            .is_some_and(|r| r.contains("truncated pickle")),
        "{:?}",
        first.last_failure
    );
    // A stricter rate threshold than any model reaches flags none as always anomalous.
    let strict = fleetscore_monitor::health_report(
        f.store.clone(),
        HealthOptions {
            min_rows: 1_000_000,
            ..HealthOptions::default()
        },
    );
    assert_eq!(strict.flagged["always_anomalous"], 0);
}

#[test]
fn runs_without_data_make_every_model_silent() {
    let f = fleet("silent");
    for h in 5..8 {
        crate::fleet::run_hour(
            &f,
            crate::fleet::FIRST + h * crate::fleet::HOUR,
            Default::default(),
        );
    }
    let report = fleetscore_monitor::health_report(f.store.clone(), HealthOptions::default());
    assert_eq!(report.flagged["silent"], 15, "{:?}", report.flagged);
    // Two runs without data are not yet silence.
    let lenient = fleetscore_monitor::health_report(
        f.store.clone(),
        HealthOptions {
            silent_runs: 4,
            ..HealthOptions::default()
        },
    );
    assert_eq!(lenient.flagged["silent"], 0);
}
