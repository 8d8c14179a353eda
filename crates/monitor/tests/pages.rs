//! The dashboard's pages render what the API says: charts with a data point per run, the
//! always-anomalous models flagged, the failed task and model on the run page.

use axum::http::StatusCode;

use crate::fleet::{ALWAYS, fleet, get, monitor};

async fn page(m: &std::sync::Arc<fleetscore_monitor::Monitor>, uri: &str) -> String {
    let (status, kind, body) = get(m, uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(kind.starts_with("text/html"), "{uri}: {kind}");
    assert!(body.starts_with("<!DOCTYPE html>"), "{uri}");
    body
}

#[tokio::test]
async fn every_page_renders_with_its_data() {
    let f = fleet("pages");
    let m = monitor(&f, None);
    let overview = page(&m, "/").await;
    for model in ALWAYS {
        assert!(
            overview.contains(&format!("data-model=\"{model}\"")),
            "{model} not flagged on the overview"
        );
    }
    assert!(overview.contains("no scheduler"));
    assert!(
        overview.contains("2018-08-29 03:00:00 UTC"),
        "times carry their zone"
    );
    // Trends: one point per scored run in each chart.
    let trends = page(&m, "/trends").await;
    assert!(
        trends.contains("id=\"trend-duration\" data-points=\"4\""),
        "{trends}"
    );
    assert_eq!(trends.matches("<circle class=\"pt\"").count(), 4 * 6);
    // Windows: four hourly cells, three with failures, and the rest of the day as gaps.
    let windows = page(&m, "/windows").await;
    assert_eq!(
        windows
            .matches("data-status=\"completed_with_failures\"")
            .count(),
        3
    );
    assert_eq!(windows.matches("data-status=\"succeeded\"").count(), 1);
    assert!(windows.contains("data-status=\"gap\""));
    // A run: its timeline has a bar per started task, its failures their reasons.
    let run = page(&m, "/runs/20180829T010000Z_20180829T020000Z").await;
    assert!(run.contains("figure class=\"chart timeline\""), "{run}");
    assert!(run.contains("task, shard 0 (2 attempts)"), "{run}");
    let run2 = page(&m, "/runs/20180829T000000Z_20180829T010000Z").await;
    assert!(run2.contains("truncated pickle"), "{run2}");
    assert!(run2.contains("fleetscore predictions export --run 20180829T000000Z_20180829T010000Z"));
    let models = page(&m, "/models").await;
    assert_eq!(models.matches("<tr class=\"flagged\"").count(), 5);
    assert_eq!(models.matches("svg class=\"spark").count(), 15);
    let model = page(&m, "/models/1/2").await;
    assert!(model.contains("always anomalous: 100.0%"), "{model}");
    let log_link = run2
        .split("href=\"/runs/20180829T000000Z_20180829T010000Z/logs/")
        .nth(1)
        .unwrap();
    let log_path = log_link.split('"').next().unwrap();
    let log = page(
        &m,
        &format!("/runs/20180829T000000Z_20180829T010000Z/logs/{log_path}"),
    )
    .await;
    assert!(log.contains("done:"));
    for uri in ["/runs", "/workers", "/ingest", "/schedules"] {
        page(&m, uri).await;
    }
    let (status, _, body) = get(&m, "/runs/nope", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("<!DOCTYPE html>") && body.contains("no run"));
}
