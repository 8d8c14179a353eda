//! The JSON API against what the runs did: runs filtered and paged, a run with its tasks and
//! logs, models with their history and health, workers, tokens.

use axum::http::StatusCode;
use fleetscore_jobs::run::Faults;

use crate::fleet::{ALWAYS, FIRST, HOUR, fleet, get, json, monitor, run_hour};

#[tokio::test]
async fn runs_are_filtered_by_status_and_window_and_paged() {
    let f = fleet("api-runs");
    let m = monitor(&f, None);
    let all = json(&m, "/api/v1/runs").await;
    assert_eq!(all["total"], 4);
    let ids: Vec<&str> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    // Newest window first.
    assert_eq!(
        ids,
        [
            "20180829T020000Z_20180829T030000Z",
            "20180829T010000Z_20180829T020000Z",
            "20180829T000000Z_20180829T010000Z",
            "20180828T230000Z_20180829T000000Z"
        ]
    );
    let failed = json(&m, "/api/v1/runs?status=completed_with_failures").await;
    assert_eq!(failed["total"], 3);
    let ok = json(&m, "/api/v1/runs?status=succeeded").await;
    assert_eq!(ok["runs"][0]["id"], "20180828T230000Z_20180829T000000Z");
    assert_eq!(ok["runs"][0]["models_scored"], 15);
    let window = json(
        &m,
        "/api/v1/runs?from=2018-08-29T00:00:00Z&to=2018-08-29%2002:00",
    )
    .await;
    assert_eq!(window["total"], 2);
    let page = json(&m, "/api/v1/runs?limit=1&offset=3").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page["runs"][0]["window_start"], "2018-08-28T23:00:00.000Z");
    // Bad parameters are 400s that say what was wrong, in the API's JSON shape.
    for (uri, says) in [
        (
            "/api/v1/runs?status=done",
            "status=\"done\": expected running, succeeded",
        ),
        (
            "/api/v1/runs?from=yesterday",
            "from: \"yesterday\" is not a time",
        ),
        ("/api/v1/runs?limit=0", "limit=0: ask for 1 to 1000"),
        (
            "/api/v1/runs?offset=-1",
            "offset=\"-1\" is not a whole number",
        ),
    ] {
        let (status, _, body) = get(&m, uri, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn a_run_has_its_tasks_failures_logs_and_outputs() {
    let f = fleet("api-run");
    let m = monitor(&f, None);
    let id = "20180829T010000Z_20180829T020000Z";
    let run = json(&m, &format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["run"]["status"], "completed_with_failures");
    assert_eq!(run["run"]["tasks_failed"], 1);
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(tasks.len() as u64, run["run"]["tasks"].as_u64().unwrap());
    let shard0 = tasks.iter().find(|t| t["shard"] == 0).unwrap();
    assert_eq!(
        (shard0["status"].as_str(), shard0["attempts"].as_u64()),
        (Some("failed"), Some(2))
    );
    assert!(
        tasks
            .iter()
            .all(|t| t["started_ms"].is_i64() && t["worker"].is_string())
    );
    assert_eq!(run["record"]["task_failures"][0]["shard"], 0);
    // Every attempt of a task that completed left a log; the failed shard's did not.
    let logs = run["logs"].as_array().unwrap();
    assert_eq!(logs.len(), tasks.len() - 1);
    let url = logs[0]["url"].as_str().unwrap();
    let (status, kind, log) = get(&m, url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/plain"));
    assert!(log.contains("done:") && log.contains(id), "{log}");
    let parquet = run["predictions"][0].as_str().unwrap();
    let (status, kind, body) = get(&m, parquet, &[]).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::OK, "application/vnd.apache.parquet")
    );
    assert!(body.starts_with("PAR1"));
    let (status, _, body) = get(&m, "/api/v1/runs/nope", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no run \\\"nope\\\""), "{body}");
}

#[tokio::test]
async fn models_carry_their_history_and_health() {
    let f = fleet("api-models");
    let m = monitor(&f, None);
    let all = json(&m, "/api/v1/models?limit=1000").await;
    assert_eq!(all["total"], 15);
    let always = json(&m, "/api/v1/models?flag=always_anomalous").await;
    let names: Vec<String> = always["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["device"].as_str().unwrap(),
                m["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ALWAYS);
    let one = json(&m, "/api/v1/models/1/2").await;
    let model = &one["model"];
    assert_eq!(model["health"]["flags"][0]["flag"], "always_anomalous");
    assert_eq!(model["health"]["rate"], 1.0);
    let history = model["history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    // Each scored run's counts are the model's rows in that hour, all flagged.
    for h in history.iter().filter(|h| h["outcome"] == "scored") {
        assert!(h["rows"].as_u64().unwrap() > 0);
        assert_eq!(h["rows"], h["anomalies"]);
    }
    assert_eq!(model["last_scored_window_end"], "2018-08-29T03:00:00.000Z");
    assert_eq!(one["versions"].as_array().unwrap().len(), 1);
    let broken = json(&m, "/api/v1/models/2/4").await;
    let outcomes: Vec<&str> = broken["model"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    // Scored, failed, then in the run whose shard 0 was lost: failed or unknown.
    assert_eq!(outcomes[0], "scored");
    assert_eq!(outcomes[1], "failed");
    assert_eq!(outcomes[3], "failed");
    assert_eq!(broken["model"]["health"]["flags"][0]["flag"], "failing");
    assert_eq!(broken["model"]["health"]["flags"][0]["kind"], "load");
    let health = json(&m, "/api/v1/health").await;
    assert_eq!(health["flagged"]["always_anomalous"], 4);
    assert_eq!(health["flagged"]["failing"], 1);
    let (status, _, _) = get(&m, "/api/v1/models?flag=sad", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&m, "/api/v1/models/9/9", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_overview_workers_and_schedules_say_what_is() {
    let f = fleet("api-overview");
    let m = monitor(&f, None);
    let o = json(&m, "/api/v1/overview").await;
    assert_eq!(
        o["last_scored_window"]["window_end"],
        "2018-08-29T03:00:00.000Z"
    );
    assert_eq!(o["last_scored_window"]["behind_seconds"], 3600.0);
    assert_eq!(o["models"], 15);
    assert_eq!(o["flagged"]["always_anomalous"], 4);
    assert_eq!(o["scheduler"], false);
    assert_eq!(o["queue_depth"], 0);
    let w = json(&m, "/api/v1/workers").await;
    let workers = w["workers"].as_array().unwrap();
    assert!(!workers.is_empty());
    let done: u64 = workers.iter().map(|w| w["done"].as_u64().unwrap()).sum();
    assert!(done > 0);
    assert!(
        workers
            .iter()
            .all(|w| w["host"].is_string() && w["last_seen"].is_string())
    );
    assert_eq!(json(&m, "/api/v1/schedules").await["scheduler"], false);
    let (status, _, body) = get(&m, "/api/v1/ingest", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("--log-dir"), "{body}");
}

#[tokio::test]
async fn a_refresh_picks_up_a_new_run_and_the_history_survives_a_new_monitor() {
    let f = fleet("api-refresh");
    let m = monitor(&f, None);
    assert_eq!(json(&m, "/api/v1/runs").await["total"], 4);
    run_hour(&f, FIRST + 4 * HOUR, Faults::default());
    // The snapshot is what it was until the next refresh.
    assert_eq!(json(&m, "/api/v1/runs").await["total"], 4);
    m.refresh();
    let runs = json(&m, "/api/v1/runs").await;
    assert_eq!(runs["total"], 5);
    assert_eq!(runs["runs"][0]["id"], "20180829T030000Z_20180829T040000Z");
    let model = json(&m, "/api/v1/models/1/2").await;
    assert_eq!(model["model"]["history"].as_array().unwrap().len(), 5);
    // A monitor started afresh reads the same history from the store.
    let again = monitor(&f, None);
    assert_eq!(json(&again, "/api/v1/runs").await, runs);
}

#[tokio::test]
async fn with_tokens_only_a_known_bearer_token_or_signed_in_browser_reads() {
    let f = fleet("api-tokens");
    let secret = "ops-0123456789abcdef";
    let m = monitor(
        &f,
        Some(&format!(
            r#"{{"tokens": [{{"name": "ops", "token": "{secret}"}}]}}"#
        )),
    );
    let (status, _, body) = get(&m, "/api/v1/runs", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (status, _, _) = get(
        &m,
        "/metrics",
        &[("authorization", "Bearer wrong-0123456789abc")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, page) = get(&m, "/models", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        page.contains("<form method=\"post\" action=\"/login\""),
        "{page}"
    );
    let auth = format!("bearer {secret}");
    let (status, _, _) = get(&m, "/api/v1/runs", &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = format!("theme=dark; fleetscore_token={secret}");
    let (status, _, _) = get(&m, "/models", &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&m, "/healthz", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn without_tokens_the_monitor_listens_only_on_loopback() {
    let err = fleetscore_monitor::check_listen("0.0.0.0:8080".parse().unwrap(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "refusing to serve the monitor on 0.0.0.0:8080 without tokens: pass --tokens FILE, or listen on a loopback address"
    );
    fleetscore_monitor::check_listen("127.0.0.1:8080".parse().unwrap(), None).unwrap();
    fleetscore_monitor::check_listen("[::1]:8080".parse().unwrap(), None).unwrap();
    let scoped = fleetscore_core::tokens::Tokens::parse(
        std::path::Path::new("t.json"),
        br#"{"tokens": [{"name": "site-a", "token": "0123456789abcdef", "devices": ["d1"]}]}"#,
    )
    .unwrap();
    let err = fleetscore_monitor::check_listen("0.0.0.0:8080".parse().unwrap(), Some(&scoped))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token `site-a` is limited to devices"),
        "{err}"
    );
}
