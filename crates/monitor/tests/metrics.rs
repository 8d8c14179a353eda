//! `/metrics`: OpenMetrics text whose numbers are the runs' and models', with no per-device
//! labels.

use axum::http::StatusCode;

use crate::fleet::{NOW, fleet, get, monitor};

/// The value of the sample `name` (with its labels, as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_runs_predictions_failures_and_flags() {
    let f = fleet("metrics");
    let m = monitor(&f, None);
    let (status, kind, text) = get(&m, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let snap = m.snapshot();
    let rows: u64 = snap.runs.rows.iter().map(|r| r.rows).sum();
    let anomalies: u64 = snap.runs.rows.iter().map(|r| r.anomalies).sum();
    assert!(rows > 10_000);
    let get = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(get("fleetscore_runs{status=\"succeeded\"}"), 1.0);
    assert_eq!(
        get("fleetscore_runs{status=\"completed_with_failures\"}"),
        3.0
    );
    assert_eq!(get("fleetscore_predictions_total"), rows as f64);
    assert_eq!(get("fleetscore_anomalies_total"), anomalies as f64);
    // 2/4 failed to load in the two runs that got to it (and in the third, if its shard ran).
    assert!(get("fleetscore_model_failures_total{kind=\"load\"}") >= 2.0);
    assert_eq!(get("fleetscore_model_failures_total{kind=\"score\"}"), 0.0);
    assert_eq!(get("fleetscore_tasks_failed_total"), 1.0);
    assert_eq!(get("fleetscore_run_duration_seconds_count"), 4.0);
    assert_eq!(
        get("fleetscore_run_duration_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );
    assert_eq!(
        get("fleetscore_models_flagged{flag=\"always_anomalous\"}"),
        4.0
    );
    assert_eq!(get("fleetscore_models_flagged{flag=\"failing\"}"), 1.0);
    assert_eq!(get("fleetscore_models"), 15.0);
    assert_eq!(get("fleetscore_queue_depth"), 0.0);
    let window_end = 1_535_511_600.0; // 2018-08-29T03:00:00Z
    assert_eq!(
        get("fleetscore_scored_window_freshness_seconds"),
        NOW as f64 / 1e3 - window_end
    );
    // The only succeeded run is the first hour.
    assert_eq!(
        get("fleetscore_last_successful_window_end_seconds"),
        1_535_500_800.0
    );
    // Task durations: every task of the four runs except the failed one wrote a summary.
    let tasks: u64 = snap
        .runs
        .rows
        .iter()
        .map(|r| u64::from(r.tasks - r.tasks_failed))
        .sum();
    assert_eq!(get("fleetscore_task_duration_seconds_count"), tasks as f64);
    // Histogram buckets are cumulative and end at the count.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("fleetscore_task_duration_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), tasks as f64);
    // No per-device labels.
    assert!(!text.contains("device="), "{text}");
}
