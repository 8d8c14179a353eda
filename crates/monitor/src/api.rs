//! The JSON API under `/api/v1/`: the overview, runs (filtered by status and window, paged), a
//! run with its tasks, logs and outputs, models (filtered by health flag, paged), a model with
//! its history and health, the health report, workers, schedules, and ingest and aggregation.
//! Times are RFC 3339 in UTC. Errors are `{"error": "..."}` with a 4xx or 5xx status.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use fleetscore_core::rfc3339;
use fleetscore_jobs::coordinator::TaskState;
use fleetscore_jobs::registry::{self, ModelMeta};
use fleetscore_jobs::run::{self, RunRecord};
use fleetscore_jobs::{RunStatus, TaskStatus};
use fleetscore_store::layout;

use crate::health::{FLAG_KINDS, Health, Outcome};
use crate::snapshot::{ModelRow, Models, RunRow, Snapshot, WorkerView};
use crate::{AppError, Monitor, blocking};

/// The API's routes.
pub(crate) fn routes() -> Router<Arc<Monitor>> {
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run_detail))
        .route("/api/v1/runs/{id}/logs/{shard}/{attempt}", get(task_log))
        .route("/api/v1/runs/{id}/predictions/{shard}", get(predictions))
        .route("/api/v1/models", get(models))
        .route("/api/v1/models/{device}/{tag}", get(model_detail))
        .route("/api/v1/health", get(health))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/schedules", get(schedules))
        .route("/api/v1/ingest", get(ingest))
}

/// The last scored window.
#[derive(Debug, Clone, Serialize)]
pub struct LastWindow {
    /// The run that scored it.
    pub run_id: String,
    /// Window start.
    pub window_start: String,
    /// Window end.
    pub window_end: String,
    /// Window end, epoch ms.
    pub window_end_ms: i64,
    /// How far the window's end is behind now, seconds.
    pub behind_seconds: f64,
}

/// The Overview page's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When the numbers were read.
    pub as_of: String,
    /// The scored run whose window ends last.
    pub last_scored_window: Option<LastWindow>,
    /// Runs started in the last 24 hours, by status.
    pub runs_last_24h: BTreeMap<&'static str, u64>,
    /// Runs in all.
    pub runs: usize,
    /// Tasks waiting for or held by a worker (`None` without a coordinator).
    pub queue_depth: Option<u32>,
    /// Workers that showed life recently.
    pub live_workers: Option<usize>,
    /// Readings per second into the ingest log (when a log is given).
    pub readings_per_second: Option<f64>,
    /// Anomalies flagged by the runs that finished in the last hour.
    pub anomalies_last_hour: u64,
    /// The next tick of any schedule, and its schedule.
    pub next_tick: Option<(String, String)>,
    /// Whether a scheduler is plugged in.
    pub scheduler: bool,
    /// Models in the registry.
    pub models: usize,
    /// Models with each health flag.
    pub flagged: BTreeMap<&'static str, u64>,
    /// The models that need attention first (at most 20).
    pub attention: Vec<ModelJson>,
    /// What the last refresh could not read.
    pub problems: Vec<String>,
}

impl Overview {
    /// The overview of a snapshot.
    pub fn of(s: &Snapshot) -> Overview {
        let now = s.taken_ms;
        let mut last_24h: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut anomalies_last_hour = 0;
        for r in &s.runs.rows {
            if r.started_ms.is_some_and(|t| t >= now - 86_400_000) {
                *last_24h.entry(r.status.as_str()).or_default() += 1;
            }
            if r.is_scored() && r.finished_ms.is_some_and(|t| t >= now - 3_600_000) {
                anomalies_last_hour += r.anomalies;
            }
        }
        let models = &s.models;
        Overview {
            as_of: rfc3339(now),
            last_scored_window: s.runs.last_scored().map(|r| LastWindow {
                run_id: r.id.clone(),
                window_start: rfc3339(r.from_ms),
                window_end: rfc3339(r.to_ms),
                window_end_ms: r.to_ms,
                behind_seconds: (now - r.to_ms) as f64 / 1e3,
            }),
            runs_last_24h: last_24h,
            runs: s.runs.rows.len(),
            queue_depth: s.live.as_ref().map(|l| l.queue_depth),
            live_workers: s
                .live
                .as_ref()
                .map(|l| l.workers.iter().filter(|w| w.live).count()),
            readings_per_second: s.pipeline.as_ref().and_then(|p| p.readings_per_second),
            anomalies_last_hour,
            next_tick: crate::schedule::next_tick(s.schedules.as_ref().map(|v| v.as_slice()))
                .map(|(t, name)| (rfc3339(t), name.to_string())),
            scheduler: s.schedules.is_some(),
            models: models.rows.len(),
            flagged: flag_counts(models),
            attention: models
                .attention
                .iter()
                .take(20)
                .map(|&i| ModelJson::of(models, &models.rows[i as usize], false))
                .collect(),
            problems: s.problems.to_vec(),
        }
    }
}

fn flag_counts(m: &Models) -> BTreeMap<&'static str, u64> {
    FLAG_KINDS
        .iter()
        .zip(m.flag_counts)
        .map(|(&k, n)| (k, n))
        .collect()
}

async fn overview(State(m): State<Arc<Monitor>>) -> Json<Overview> {
    Json(Overview::of(&m.snapshot()))
}

/// Paging: `limit` (default 50, at most 1,000) and `offset`.
#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    limit: Option<String>,
    offset: Option<String>,
}

impl Paging {
    /// (offset, limit), or a 400 naming the bad parameter.
    pub fn parse(&self, default_limit: usize) -> Result<(usize, usize), AppError> {
        let num = |name: &str, v: &Option<String>, default: usize| match v {
            None => Ok(default),
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| AppError::bad_request(format!("{name}={s:?} is not a whole number"))),
        };
        let limit = num("limit", &self.limit, default_limit)?;
        if limit == 0 || limit > 1_000 {
            return Err(AppError::bad_request(format!(
                "limit={limit}: ask for 1 to 1000 at a time"
            )));
        }
        Ok((num("offset", &self.offset, 0)?, limit))
    }
}

/// `GET /api/v1/runs` parameters.
#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    /// Statuses, comma-separated (`running,completed_with_failures`).
    pub status: Option<String>,
    /// Runs whose window starts at or after this time.
    pub from: Option<String>,
    /// Runs whose window starts before this time.
    pub to: Option<String>,
    #[serde(flatten)]
    pub(crate) paging: Paging,
}

/// A page of runs, newest window first.
#[derive(Debug, Serialize)]
pub struct RunsPage {
    /// Runs matching the filter.
    pub total: usize,
    /// The first one's position.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
    /// The runs.
    pub runs: Vec<RunJson>,
}

/// A run, with its times as text.
#[derive(Debug, Serialize)]
pub struct RunJson {
    /// Its numbers.
    #[serde(flatten)]
    pub row: RunRow,
    /// Window start.
    pub window_start: String,
    /// Window end.
    pub window_end: String,
    /// When it started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
}

impl RunJson {
    /// The JSON of a run row.
    pub fn of(r: &RunRow) -> RunJson {
        RunJson {
            row: r.clone(),
            window_start: rfc3339(r.from_ms),
            window_end: rfc3339(r.to_ms),
            started_at: r.started_ms.map(rfc3339),
            finished_at: r.finished_ms.map(rfc3339),
        }
    }
}

impl RunsQuery {
    /// The filtered runs, newest window first, or a 400 naming the bad parameter.
    pub fn select<'a>(&self, s: &'a Snapshot) -> Result<Vec<&'a RunRow>, AppError> {
        let statuses = match &self.status {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .filter(|w| !w.is_empty())
                    .map(|w| {
                        w.parse::<RunStatus>().map_err(|_| {
                            AppError::bad_request(format!(
                                "status={w:?}: expected {}",
                                RunStatus::ALL.map(RunStatus::as_str).join(", ")
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let time = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| {
                    fleetscore_core::parse_time(t)
                        .map_err(|e| AppError::bad_request(format!("{name}: {e}")))
                })
                .transpose()
        };
        let (from, to) = (time("from", &self.from)?, time("to", &self.to)?);
        Ok(s.runs
            .rows
            .iter()
            .rev()
            .filter(|r| statuses.as_ref().is_none_or(|st| st.contains(&r.status)))
            .filter(|r| from.is_none_or(|f| r.from_ms >= f) && to.is_none_or(|t| r.from_ms < t))
            .map(|r| &**r)
            .collect())
    }
}

async fn runs(
    State(m): State<Arc<Monitor>>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunsPage>, AppError> {
    let s = m.snapshot();
    let (offset, limit) = q.paging.parse(50)?;
    let all = q.select(&s)?;
    Ok(Json(RunsPage {
        total: all.len(),
        offset,
        limit,
        runs: all
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(RunJson::of)
            .collect(),
    }))
}

/// One attempt's log.
#[derive(Debug, Clone, Serialize)]
pub struct LogRef {
    /// Shard.
    pub shard: u32,
    /// Attempt.
    pub attempt: u32,
    /// Where the API serves it.
    pub url: String,
}

/// A run with everything about it.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    /// Its numbers.
    pub run: RunJson,
    /// Its record (failures with reasons), if the store has it.
    pub record: Option<RunRecord>,
    /// Its tasks, from the coordinator (timings, workers, errors).
    pub tasks: Vec<TaskState>,
    /// Every attempt's log.
    pub logs: Vec<LogRef>,
    /// Each task's predictions (Parquet), where the API serves them.
    pub predictions: Vec<String>,
}

/// Reads a run's record, tasks, logs and outputs (blocking: the store and the coordinator).
pub(crate) fn run_detail_of(m: &Monitor, row: &RunRow) -> Result<RunDetail, AppError> {
    let store = &m.sources.store;
    let record = run::record(store, &row.id)?;
    let snap = m.snapshot();
    let tasks = match snap.live.as_ref().and_then(|l| l.running.get(&row.id)) {
        Some(t) => t.clone(),
        None => match &m.sources.coordinator {
            Some(c) => c.tasks(&row.id)?,
            None => Vec::new(),
        },
    };
    let mut logs: Vec<LogRef> = store
        .list(&layout::logs_dir(&row.id))?
        .into_iter()
        .filter_map(|e| parse_log_name(&e.key))
        .map(|(shard, attempt)| LogRef {
            shard,
            attempt,
            url: format!("/api/v1/runs/{}/logs/{shard}/{attempt}", row.id),
        })
        .collect();
    logs.sort_by_key(|l| (l.shard, l.attempt));
    let predictions = store
        .list(&layout::predictions_dir(&row.id))?
        .into_iter()
        .filter_map(|e| {
            let name = e.key.rsplit('/').next()?;
            let shard: u32 = name
                .strip_prefix("shard-")?
                .strip_suffix(".parquet")?
                .parse()
                .ok()?;
            Some(format!("/api/v1/runs/{}/predictions/{shard}", row.id))
        })
        .collect();
    Ok(RunDetail {
        run: RunJson::of(row),
        record,
        tasks,
        logs,
        predictions,
    })
}

/// `logs/run=R/shard-NNNNN.attempt-K.log` → (shard, attempt).
fn parse_log_name(key: &str) -> Option<(u32, u32)> {
    let name = key.rsplit('/').next()?;
    let (shard, attempt) = name
        .strip_prefix("shard-")?
        .strip_suffix(".log")?
        .split_once(".attempt-")?;
    Some((shard.parse().ok()?, attempt.parse().ok()?))
}

/// The run `id` of the snapshot, or 404.
pub(crate) fn find_run(s: &Snapshot, id: &str) -> Result<RunRow, AppError> {
    s.runs
        .get(id)
        .map(|r| (**r).clone())
        .ok_or_else(|| AppError::not_found(format!("no run {id:?}")))
}

async fn run_detail(
    State(m): State<Arc<Monitor>>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, AppError> {
    let row = find_run(&m.snapshot(), &id)?;
    Ok(Json(blocking(move || run_detail_of(&m, &row)).await?))
}

async fn task_log(
    State(m): State<Arc<Monitor>>,
    Path((id, shard, attempt)): Path<(String, u32, u32)>,
) -> Result<impl IntoResponse, AppError> {
    find_run(&m.snapshot(), &id)?;
    let bytes = blocking(move || {
        m.sources
            .store
            .get_opt(&layout::task_log(&id, shard, attempt))?
            .ok_or_else(|| {
                AppError::not_found(format!(
                    "run {id:?} has no log of shard {shard} attempt {attempt}"
                ))
            })
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes))
}

async fn predictions(
    State(m): State<Arc<Monitor>>,
    Path((id, shard)): Path<(String, u32)>,
) -> Result<impl IntoResponse, AppError> {
    find_run(&m.snapshot(), &id)?;
    let name = format!("attachment; filename=\"{id}-shard-{shard:05}.parquet\"");
    let bytes = blocking(move || {
        m.sources
            .store
            .get_opt(&layout::predictions(&id, shard))?
            .ok_or_else(|| {
                AppError::not_found(format!("run {id:?} has no predictions of shard {shard}"))
            })
    })
    .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.apache.parquet".to_string(),
            ),
            (header::CONTENT_DISPOSITION, name),
        ],
        bytes,
    ))
}

/// What one recent run did to a model.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    /// The run.
    pub run_id: String,
    /// Its window start.
    pub window_start: String,
    /// Its window end.
    pub window_end: String,
    /// `scored`, `no_data`, `failed` or `unknown` (a task of the run failed for good).
    pub outcome: &'static str,
    /// Rows scored.
    pub rows: u32,
    /// Rows flagged.
    pub anomalies: u32,
    /// Anomaly rate, when it had rows.
    pub rate: Option<f64>,
}

/// A model as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelJson {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Current version.
    pub version: String,
    /// Estimator.
    pub estimator: String,
    /// When the current version was imported.
    pub imported_at: String,
    /// The end of the latest window that scored it with rows.
    pub last_scored_window_end: Option<String>,
    /// Its health.
    pub health: Health,
    /// The reason of its latest failure, if it is failing.
    pub last_failure: Option<String>,
    /// The recent runs since it was imported, oldest first (only in a model's own answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryPoint>>,
}

impl ModelJson {
    /// The JSON of a model; with its history when `history`.
    pub fn of(models: &Models, m: &ModelRow, history: bool) -> ModelJson {
        ModelJson {
            device: m.device.clone(),
            tag: m.tag.clone(),
            version: m.version.clone(),
            estimator: m.estimator.to_string(),
            imported_at: m.imported_at.clone(),
            last_scored_window_end: models.last_scored_ms(m).map(rfc3339),
            health: m.health.clone(),
            last_failure: m.last_failure.as_deref().map(str::to_string),
            history: history.then(|| {
                m.points
                    .iter()
                    .map(|p| {
                        let r = &models.recent[usize::from(p.slot)];
                        let (outcome, rows, anomalies) = match p.outcome {
                            Outcome::Scored { rows, anomalies } => ("scored", rows, anomalies),
                            Outcome::NoData => ("no_data", 0, 0),
                            Outcome::Failed(_) => ("failed", 0, 0),
                            Outcome::Unknown => ("unknown", 0, 0),
                        };
                        HistoryPoint {
                            run_id: r.id.clone(),
                            window_start: rfc3339(r.from_ms),
                            window_end: rfc3339(r.to_ms),
                            outcome,
                            rows,
                            anomalies,
                            rate: p.outcome.rate(),
                        }
                    })
                    .collect()
            }),
        }
    }
}

/// `GET /api/v1/models` parameters.
#[derive(Debug, Default, Deserialize)]
pub struct ModelsQuery {
    /// Only models with this flag; `any` for every flagged model.
    pub flag: Option<String>,
    /// Only models whose `device/tag` contains this text.
    pub q: Option<String>,
    #[serde(flatten)]
    pub(crate) paging: Paging,
}

impl ModelsQuery {
    /// The matching models (positions in `models.rows`): flagged ones first when filtering by
    /// flag, else by device and tag.
    pub fn select(&self, models: &Models) -> Result<Vec<u32>, AppError> {
        let flag = match self.flag.as_deref() {
            None | Some("") => None,
            Some("any") => Some("any"),
            Some(f) => Some(*FLAG_KINDS.iter().find(|&&k| k == f).ok_or_else(|| {
                AppError::bad_request(format!(
                    "flag={f:?}: expected any, {}",
                    FLAG_KINDS.join(", ")
                ))
            })?),
        };
        let q = self.q.as_deref().unwrap_or("").trim();
        let matches = |i: u32| {
            let m = &models.rows[i as usize];
            q.is_empty() || format!("{}/{}", m.device, m.tag).contains(q)
        };
        Ok(match flag {
            Some("any") => models
                .attention
                .iter()
                .copied()
                .filter(|&i| matches(i))
                .collect(),
            Some(f) => models
                .attention
                .iter()
                .copied()
                .filter(|&i| models.rows[i as usize].health.has(f) && matches(i))
                .collect(),
            None => (0..models.rows.len() as u32)
                .filter(|&i| matches(i))
                .collect(),
        })
    }
}

/// A page of models.
#[derive(Debug, Serialize)]
pub struct ModelsPage {
    /// Models matching the filter.
    pub total: usize,
    /// The first one's position.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
    /// The models.
    pub models: Vec<ModelJson>,
}

async fn models(
    State(m): State<Arc<Monitor>>,
    Query(q): Query<ModelsQuery>,
) -> Result<Json<ModelsPage>, AppError> {
    let s = m.snapshot();
    let (offset, limit) = q.paging.parse(100)?;
    let all = q.select(&s.models)?;
    Ok(Json(ModelsPage {
        total: all.len(),
        offset,
        limit,
        models: all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|&i| ModelJson::of(&s.models, &s.models.rows[i as usize], false))
            .collect(),
    }))
}

/// A model with its history, health and every stored version.
#[derive(Debug, Serialize)]
pub struct ModelDetail {
    /// The model, with its history.
    pub model: ModelJson,
    /// Every stored version, oldest import first.
    pub versions: Vec<ModelMeta>,
}

/// Reads a model's versions (blocking: the store).
pub(crate) fn model_detail_of(
    m: &Monitor,
    s: &Snapshot,
    device: &str,
    tag: &str,
) -> Result<ModelDetail, AppError> {
    let i = s.models.find(device, tag).ok_or_else(|| {
        AppError::not_found(format!("no model for device {device:?} tag {tag:?}"))
    })?;
    let versions = registry::versions(&m.sources.store, device, tag)?;
    Ok(ModelDetail {
        model: ModelJson::of(&s.models, &s.models.rows[i], true),
        versions,
    })
}

async fn model_detail(
    State(m): State<Arc<Monitor>>,
    Path((device, tag)): Path<(String, String)>,
) -> Result<Json<ModelDetail>, AppError> {
    let s = m.snapshot();
    Ok(Json(
        blocking(move || model_detail_of(&m, &s, &device, &tag)).await?,
    ))
}

/// Model health: the runs judged, the thresholds, counts and every flagged model (what
/// `fleetscore models health --json` prints).
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// The recent scored runs health was judged on, oldest first.
    pub runs: Vec<String>,
    /// The thresholds.
    pub options: crate::HealthOptions,
    /// Models in the registry.
    pub models: usize,
    /// Models with each flag.
    pub flagged: BTreeMap<&'static str, u64>,
    /// Every flagged model: failing first, then always anomalous, drifting, silent.
    pub attention: Vec<ModelJson>,
    /// What could not be read.
    pub problems: Vec<String>,
}

impl HealthReport {
    /// The report of a snapshot.
    pub fn of(s: &Snapshot) -> HealthReport {
        let models = &s.models;
        HealthReport {
            runs: models.recent.iter().map(|r| r.id.clone()).collect(),
            options: models.options,
            models: models.rows.len(),
            flagged: flag_counts(models),
            attention: models
                .attention
                .iter()
                .map(|&i| ModelJson::of(models, &models.rows[i as usize], false))
                .collect(),
            problems: s.problems.to_vec(),
        }
    }
}

async fn health(State(m): State<Arc<Monitor>>) -> Json<HealthReport> {
    Json(HealthReport::of(&m.snapshot()))
}

/// Workers and the queue.
#[derive(Debug, Serialize)]
pub struct WorkersJson {
    /// Workers seen in the last day, or holding a task.
    pub workers: Vec<WorkerJson>,
    /// Tasks of running runs pending or running.
    pub queue_depth: u32,
    /// Tasks of running runs by state.
    pub tasks_by_state: BTreeMap<&'static str, u64>,
}

/// A worker as the API shows it.
#[derive(Debug, Serialize)]
pub struct WorkerJson {
    /// What the coordinator knows, with host, liveness and expired leases.
    #[serde(flatten)]
    pub worker: WorkerView,
    /// Its last sign of life.
    pub last_seen: String,
}

async fn workers(State(m): State<Arc<Monitor>>) -> Result<Json<WorkersJson>, AppError> {
    let s = m.snapshot();
    let live = s
        .live
        .as_ref()
        .ok_or_else(|| AppError::not_found("the monitor has no coordinator"))?;
    Ok(Json(WorkersJson {
        workers: live
            .workers
            .iter()
            .map(|w| WorkerJson {
                last_seen: rfc3339(w.state.last_seen_ms),
                worker: w.clone(),
            })
            .collect(),
        queue_depth: live.queue_depth,
        tasks_by_state: live
            .tasks_by_state
            .iter()
            .filter(|(st, _)| *st != TaskStatus::Done)
            .map(|(st, n)| (st.as_str(), *n))
            .collect(),
    }))
}

async fn schedules(State(m): State<Arc<Monitor>>) -> Json<serde_json::Value> {
    let s = m.snapshot();
    Json(match &s.schedules {
        None => serde_json::json!({ "scheduler": false, "schedules": [] }),
        Some(list) => serde_json::json!({ "scheduler": true, "schedules": list.as_slice() }),
    })
}

async fn ingest(State(m): State<Arc<Monitor>>) -> Result<impl IntoResponse, AppError> {
    let s = m.snapshot();
    let p = s.pipeline.as_ref().ok_or_else(|| {
        AppError::not_found("the monitor was started without --log-dir: no ingest log to show")
    })?;
    Ok(Json((**p).clone()))
}
