//! The test fleet: the reference fleet's 15 models and 17,768 readings in a temporary store,
//! scored by four hourly runs (2018-08-28 23:00 to 2018-08-29 03:00):
//!
//! | run | what happens |
//! |---|---|
//! | 23:00–00:00 | every model scored |
//! | 00:00–01:00 | model 2/4's stored file is corrupt: it fails (`load`) |
//! | 01:00–02:00 | shard 0 fails for good on every attempt: its models' outcome is unknown |
//! | 02:00–03:00 | 2/4 still fails |
//!
//! Four of the reference models (1/2, 1/5, 2/5, 3/4) flag every reading.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fleetscore_core::ManualClock;
use fleetscore_jobs::coordinator::Coordinator;
use fleetscore_jobs::coordinator::sqlite::SqliteCoordinator;
use fleetscore_jobs::readings::{self, Columns};
use fleetscore_jobs::registry::{self, NewModel};
use fleetscore_jobs::run::{self, Faults, RunOptions, RunRequest};
use fleetscore_monitor::{Monitor, NoScheduler, Options, Sources};
use fleetscore_store::{Store, layout};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const HOUR: i64 = 3_600_000;
/// 2018-08-28T23:00:00Z.
pub const FIRST: i64 = 1_535_497_200_000;
/// The clock the monitor reads: an hour after the last window.
pub const NOW: i64 = FIRST + 5 * HOUR;

/// The reference models that flag every reading (from scikit-learn's own predictions).
pub const ALWAYS: [&str; 4] = ["1/2", "1/5", "2/5", "3/4"];

pub fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data/reference")
        .join(path)
}

/// A fleet in a temporary folder, removed when dropped.
pub struct Fleet {
    pub store: Store,
    pub coordinator: Arc<SqliteCoordinator>,
    pub dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn options(faults: Faults) -> RunOptions {
    RunOptions {
        workers: 2,
        max_models_per_task: 4,
        max_attempts: 2,
        faults,
        ..RunOptions::default()
    }
}

/// Runs the hour starting at `from`.
pub fn run_hour(f: &Fleet, from: i64, faults: Faults) -> run::RunRecord {
    run::run(
        &f.store,
        f.coordinator.as_ref() as &dyn Coordinator,
        &RunRequest::window(from, from + HOUR).with_options(options(faults)),
        &mut |_| {},
    )
    .unwrap()
}

/// The fleet of the table above.
pub fn fleet(name: &str) -> Fleet {
    let dir =
        std::env::temp_dir().join(format!("fleetscore-monitor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let coordinator = Arc::new(SqliteCoordinator::open(&dir.join("coordinator.sqlite")).unwrap());
    let f = Fleet {
        store,
        coordinator,
        dir,
    };
    for d in 1..=3 {
        for t in 1..=5 {
            let bytes = std::fs::read(reference(&format!("models/model_{d}_{t}"))).unwrap();
            registry::import(
                &f.store,
                &NewModel {
                    device: &d.to_string(),
                    tag: &t.to_string(),
                    bytes: &bytes,
                    source: "reference",
                    features: None,
                },
            )
            .unwrap();
        }
    }
    readings::import(&f.store, &reference("sensor_data.csv"), &Columns::default()).unwrap();
    run_hour(&f, FIRST, Faults::default());
    let broken = registry::current(&f.store, "2", "4").unwrap().unwrap();
    f.store
        .put(
            &layout::model_file("2", "4", &broken.version),
            b"\x80\x04garbage".to_vec(),
        )
        .unwrap();
    run_hour(&f, FIRST + HOUR, Faults::default());
    run_hour(
        &f,
        FIRST + 2 * HOUR,
        Faults {
            fail_shard: Some(0),
            ..Faults::default()
        },
    );
    run_hour(&f, FIRST + 3 * HOUR, Faults::default());
    f
}

/// The monitor over a fleet, its clock at [`NOW`]; `tokens` as in a tokens file.
pub fn monitor(f: &Fleet, tokens: Option<&str>) -> Arc<Monitor> {
    let tokens = tokens.map(|t| {
        fleetscore_core::tokens::Tokens::parse(std::path::Path::new("tokens.json"), t.as_bytes())
            .unwrap()
    });
    Monitor::new(
        Sources {
            store: f.store.clone(),
            coordinator: Some(f.coordinator.clone()),
            log_dir: None,
            schedules: Arc::new(NoScheduler),
            clock: Arc::new(ManualClock::new(NOW)),
            options: Options::default(),
        },
        tokens,
    )
}

/// One request through the service, without a socket: (status, content type, body).
pub async fn get(
    m: &Arc<Monitor>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = fleetscore_monitor::app(m.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let kind = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, kind, String::from_utf8_lossy(&body).into_owned())
}

/// A JSON answer, checked to be 200.
pub async fn json(m: &Arc<Monitor>, uri: &str) -> serde_json::Value {
    let (status, kind, body) = get(m, uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert!(kind.starts_with("application/json"), "{uri}: {kind}");
    serde_json::from_str(&body).unwrap()
}
