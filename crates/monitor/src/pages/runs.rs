//! Pages about runs: the list, the Windows grid (one cell per window, gaps visible), one run
//! (counts, the task timeline across workers, failures, logs, outputs) and Trends.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use maud::{Markup, html};
use serde::Deserialize;

use fleetscore_jobs::{RunStatus, TaskStatus};
use fleetscore_store::layout;

use super::{count, layout, secs, span, status, time};
use crate::api::{RunsQuery, find_run, run_detail_of};
use crate::snapshot::{RunRow, Snapshot};
use crate::svg::{self, Bar, Series};
use crate::{AppError, Monitor, blocking};

/// `/runs`: every run, newest window first, filtered by status, paged.
pub(crate) async fn list(
    State(m): State<Arc<Monitor>>,
    Query(q): Query<RunsQuery>,
) -> Result<Html<String>, AppError> {
    let s = m.snapshot();
    let all = q.select(&s).map_err(AppError::page)?;
    let (offset, per) = q.paging.parse(50).map_err(AppError::page)?;
    let shown: Vec<&RunRow> = all.iter().skip(offset).take(per).copied().collect();
    let filter = q.status.clone().unwrap_or_default();
    let body = html! {
        h1 { "Runs" }
        p {
            a href="/runs" { "all (" (s.runs.rows.len()) ")" } " · "
            @for (st, n) in s.runs.by_status() {
                a href=(format!("/runs?status={}", st.as_str())) { (st.as_str().replace('_', " ")) " (" (n) ")" } " · "
            }
        }
        (runs_table(&shown))
        p.pager {
            @if offset > 0 { a href=(format!("/runs?status={filter}&offset={}", offset.saturating_sub(per))) { "← newer" } }
            @if offset + per < all.len() { a href=(format!("/runs?status={filter}&offset={}", offset + per)) { "older →" } }
            span.muted { (all.len()) " runs" }
        }
    };
    Ok(Html(
        layout("Runs", "/runs", Some(&s), None, body).into_string(),
    ))
}

fn page_of(p: &Option<String>) -> usize {
    p.as_deref().and_then(|p| p.parse().ok()).unwrap_or(0)
}

pub(crate) fn runs_table(rows: &[&RunRow]) -> Markup {
    html! {
        table.runs {
            tr {
                th { "Run" } th { "Window" } th { "Status" } th { "Started" } th.num { "Duration" }
                th.num { "Models scored" } th.num { "Rows" } th.num { "Anomalies" } th.num { "Failures" }
            }
            @for r in rows {
                tr {
                    td { a href=(format!("/runs/{}", r.id)) { (r.id) } }
                    td { (time(r.from_ms)) " → " (time(r.to_ms)) }
                    td { (status(r.status)) }
                    td { @if let Some(t) = r.started_ms { (time(t)) } }
                    td.num { (secs(r.duration_seconds())) }
                    td.num { (count(r.models_scored)) }
                    td.num { (count(r.rows)) }
                    td.num { (count(r.anomalies)) }
                    td.num { (r.failures()) }
                }
            }
        }
    }
}

/// `/windows` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct WindowsQuery {
    rows: Option<String>,
}

/// `/windows`: per window length (a schedule's, once a scheduler exists), one cell per window
/// slot coloured by its run's status; a slot without a run is a visible gap.
pub(crate) async fn windows(
    State(m): State<Arc<Monitor>>,
    Query(q): Query<WindowsQuery>,
) -> Html<String> {
    let s = m.snapshot();
    let max_rows = page_of(&q.rows).clamp(1, 365);
    let max_rows = if q.rows.is_none() { 31 } else { max_rows };
    let mut by_len: BTreeMap<i64, Vec<&RunRow>> = BTreeMap::new();
    for r in &s.runs.rows {
        by_len.entry(r.to_ms - r.from_ms).or_default().push(r);
    }
    let names: BTreeMap<i64, String> = s
        .schedules
        .iter()
        .flat_map(|v| v.iter())
        .map(|sc| (sc.window_ms, sc.name.clone()))
        .collect();
    let body = html! {
        h1 { "Windows" }
        p.muted {
            "One cell per window; colour by status: "
            @for st in RunStatus::ALL { span class=(format!("badge st-{}", st.as_str())) { (st.as_str().replace('_', " ")) } " " }
            span.badge style="background:#eef0f3;color:#667085" { "no run" }
            ". Rows are UTC days (or runs of windows); newest first."
        }
        @if by_len.is_empty() { p.empty { "No runs yet." } }
        @for (len, runs) in by_len.iter().rev() {
            h2 {
                (span(*len)) " windows"
                @if let Some(n) = names.get(len) { " · schedule " (n) }
                span.muted { " (" (runs.len()) " runs)" }
            }
            (grid(*len, runs, max_rows))
        }
    };
    Html(layout("Windows", "/windows", Some(&s), None, body).into_string())
}

/// The grid of one window length: windows that divide a day are laid out a UTC day per row,
/// a slot per column; longer ones a row of consecutive windows with gaps where none ran.
fn grid(len: i64, runs: &[&RunRow], max_rows: usize) -> Markup {
    const DAY: i64 = 86_400_000;
    let slots = if len > 0 && len <= DAY && DAY % len == 0 {
        (DAY / len) as usize
    } else {
        0
    };
    let cell = |r: Option<&RunRow>, start: i64| match r {
        Some(r) => html! {
            td class=(format!("cell {}", r.status.as_str())) title=(format!("{} · {}", r.id, r.status.as_str())) data-status=(r.status.as_str()) {
                a href=(format!("/runs/{}", r.id)) {}
            }
        },
        None => {
            html! { td.cell.gap title=(format!("no run for the window starting {}", fleetscore_core::rfc3339(start))) data-status="gap" {} }
        }
    };
    if slots > 0 && slots <= 96 {
        let mut days: BTreeMap<i64, BTreeMap<usize, &RunRow>> = BTreeMap::new();
        for r in runs {
            let day = r.from_ms.div_euclid(DAY) * DAY;
            let slot = ((r.from_ms - day) / len) as usize;
            // Re-runs of a window share its id; the latest record stands.
            days.entry(day).or_default().insert(slot.min(slots - 1), r);
        }
        let (first, last) = (
            *days.keys().next().unwrap_or(&0),
            *days.keys().last().unwrap_or(&0),
        );
        let shown: Vec<i64> = (0..)
            .map(|i| last - i * DAY)
            .take_while(|d| *d >= first)
            .take(max_rows)
            .collect();
        // Cells narrow enough for a day to fit the page; the hours labelled in four groups.
        let cell_px = (1200 / slots).clamp(8, 22);
        let group = (slots / 4).max(1);
        html! {
            table.wgrid style=(format!("--cell: {cell_px}px")) {
                tr { th {} @for g in (0..slots).step_by(group) { th.axis colspan=(group.min(slots - g)) { (format!("{:02}:{:02}", (g as i64 * len) / 3_600_000, (g as i64 * len) % 3_600_000 / 60_000)) } } }
                @for day in shown {
                    tr {
                        th { (chrono::DateTime::<chrono::Utc>::from_timestamp_millis(day).map_or(String::new(), |t| t.format("%Y-%m-%d").to_string())) }
                        @for i in 0..slots {
                            (cell(days.get(&day).and_then(|d| d.get(&i)).copied(), day + i as i64 * len))
                        }
                    }
                }
            }
        }
    } else {
        // Consecutive windows; a gap cell wherever the next run does not start where the
        // previous one ended.
        let mut cells = Vec::new();
        let mut prev_end: Option<i64> = None;
        for r in runs.iter().rev().take(max_rows * 24) {
            if let Some(e) = prev_end
                && r.to_ms < e
            {
                cells.push(cell(None, r.to_ms));
            }
            cells.push(cell(Some(r), r.from_ms));
            prev_end = Some(r.from_ms);
        }
        html! {
            table.wgrid { @for row in cells.chunks(24) { tr { @for c in row { (c) } } } }
        }
    }
}

/// `/runs/{id}`: one run.
pub(crate) async fn run(
    State(m): State<Arc<Monitor>>,
    Path(id): Path<String>,
) -> Result<Html<String>, AppError> {
    let s = m.snapshot();
    let row = find_run(&s, &id).map_err(AppError::page)?;
    let m2 = m.clone();
    let detail = blocking(move || run_detail_of(&m2, &row))
        .await
        .map_err(AppError::page)?;
    let r = &detail.run.row;
    let running = r.status == RunStatus::Running;
    let now = s.taken_ms;
    let mut lanes: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    for t in &detail.tasks {
        let Some(start) = t.started_ms else { continue };
        let end = t.finished_ms.unwrap_or(if t.status == TaskStatus::Running {
            now.max(start)
        } else {
            t.heartbeat_ms.unwrap_or(start)
        });
        lanes
            .entry(t.worker.clone().unwrap_or_else(|| "?".into()))
            .or_default()
            .push(Bar {
                start_ms: start,
                end_ms: end,
                class: t.status.as_str(),
                label: format!(
                    "shard {} · {} · attempt {} · {}",
                    t.shard,
                    t.status.as_str(),
                    t.attempts,
                    span(end - start)
                ),
            });
    }
    let lanes: Vec<(String, Vec<Bar>)> = lanes.into_iter().collect();
    let counts = r.live.unwrap_or_default();
    let body = html! {
        h1 { "Run " (r.id) " " (status(r.status)) }
        div.cards {
            div.card { div.label { "Window" } div.sub { (time(r.from_ms)) } div.sub { "→ " (time(r.to_ms)) } }
            div.card { div.label { "Duration" } div.value { (secs(r.duration_seconds())) } div.sub { "planning " (secs(r.plan_seconds)) } }
            div.card { div.label { "Models scored" } div.value { (count(r.models_scored)) } div.sub { "of " (count(r.models)) "; " (count(r.models_without_data)) " without data" } }
            div.card { div.label { "Rows" } div.value { (count(r.rows)) } div.sub { (svg::short(r.rows_per_second)) " rows/s" } }
            div.card { div.label { "Anomalies" } div.value { (count(r.anomalies)) } }
            div.card { div.label { "Failures" } div.value { (r.failures()) } div.sub { (r.models_failed) " models, " (r.tasks_failed) " tasks" } }
            div.card { div.label { "Tasks" } div.value { (r.tasks) }
                @if running { div.sub { (counts.done) " done, " (counts.running) " running, " (counts.pending) " pending" } } }
        }
        h2 { "Tasks across workers" @if running { span.muted { " (growing while the run goes on; this page reloads every 5 s)" } } }
        (svg::timeline(&lanes))
        @if let Some(rec) = &detail.record {
            @if !rec.failures.is_empty() || !rec.task_failures.is_empty() {
                h2 { "Failures" }
                table #failures {
                    tr { th { "What" } th { "Kind" } th { "Reason" } }
                    @for f in rec.task_failures.iter() {
                        tr { td { "task, shard " (f.shard) " (" (f.attempts) " attempts)" } td { "task" } td { (f.error) } }
                    }
                    @for f in rec.failures.iter().take(500) {
                        tr { td { a href=(super::model_href(&f.device, &f.tag)) { (f.device) "/" (f.tag) } " " span.muted { (f.version) } } td { (f.kind.as_str()) } td { (f.reason) } }
                    }
                }
                @if rec.failures.len() > 500 { p.muted { (rec.failures.len() - 500) " more in the run record (API: /api/v1/runs/" (r.id) ")" } }
            }
        }
        h2 { "Tasks" }
        table #tasks {
            tr { th.num { "Shard" } th { "State" } th { "Worker" } th.num { "Models" } th.num { "Attempts" } th { "Started" } th.num { "Took" } th { "Logs" } th { "Error" } }
            @for t in &detail.tasks {
                tr {
                    td.num { (t.shard) }
                    td { span class=(format!("badge st-{}", t.status.as_str())) { (t.status.as_str()) } }
                    td { (t.worker.as_deref().unwrap_or("")) }
                    td.num { (t.models) }
                    td.num { (t.attempts) }
                    td { @if let Some(st) = t.started_ms { (time(st)) } }
                    td.num { @if let (Some(a), Some(b)) = (t.started_ms, t.finished_ms) { (secs((b - a) as f64 / 1e3)) } }
                    td { @for l in detail.logs.iter().filter(|l| l.shard == t.shard) { a href=(format!("/runs/{}/logs/{}/{}", r.id, l.shard, l.attempt)) { "attempt " (l.attempt) } " " } }
                    td { (t.error.as_deref().unwrap_or("")) }
                }
            }
        }
        @if detail.tasks.is_empty() && !detail.logs.is_empty() {
            p { "Logs: " @for l in &detail.logs { a href=(format!("/runs/{}/logs/{}/{}", r.id, l.shard, l.attempt)) { "shard " (l.shard) " attempt " (l.attempt) } " " } }
        }
        h2 { "Export" }
        p {
            "Predictions, one Parquet file per task: "
            @for url in &detail.predictions { a href=(url) { "shard " (url.rsplit('/').next().unwrap_or("")) } " " }
            @if detail.predictions.is_empty() { span.muted { "none written yet" } }
        }
        p { "In the reference's CSV shape: " code { "fleetscore predictions export --run " (r.id) " --format csv --output out/" } }
        p { a href=(format!("/api/v1/runs/{}", r.id)) { "This run as JSON" } }
    };
    Ok(Html(
        layout(
            &format!("Run {}", r.id),
            "/runs",
            Some(&s),
            running.then_some(5),
            body,
        )
        .into_string(),
    ))
}

/// `/runs/{id}/logs/{shard}/{attempt}`: one attempt's log.
pub(crate) async fn log(
    State(m): State<Arc<Monitor>>,
    Path((id, shard, attempt)): Path<(String, u32, u32)>,
) -> Result<Html<String>, AppError> {
    let s = m.snapshot();
    find_run(&s, &id).map_err(AppError::page)?;
    let key = layout::task_log(&id, shard, attempt);
    let m2 = m.clone();
    let bytes = blocking(move || Ok(m2.sources.store.get_opt(&key)?))
        .await
        .map_err(AppError::page)?
        .ok_or_else(|| {
            AppError::not_found(format!(
                "run {id:?} has no log of shard {shard} attempt {attempt}"
            ))
            .page()
        })?;
    let text = String::from_utf8_lossy(&bytes);
    let body = html! {
        h1 { "Run " a href=(format!("/runs/{id}")) { (id) } ", shard " (shard) ", attempt " (attempt) }
        p.muted { "Times in the log are UTC." }
        pre.log { (text) }
    };
    Ok(Html(
        layout("Task log", "/runs", Some(&s), None, body).into_string(),
    ))
}

/// `/trends` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct TrendsQuery {
    last: Option<String>,
}

/// `/trends`: per run, over time: duration, models scored, rows per second, anomalies, failures.
pub(crate) async fn trends(
    State(m): State<Arc<Monitor>>,
    Query(q): Query<TrendsQuery>,
) -> Html<String> {
    let s = m.snapshot();
    let last = page_of(&q.last).clamp(0, 5_000);
    let last = if last == 0 { 500 } else { last };
    Html(layout("Trends", "/trends", Some(&s), None, trends_body(&s, last)).into_string())
}

fn trends_body(s: &Snapshot, last: usize) -> Markup {
    let runs: Vec<&RunRow> = {
        let scored: Vec<&RunRow> = s
            .runs
            .rows
            .iter()
            .filter(|r| r.is_scored())
            .map(|r| &**r)
            .collect();
        let skip = scored.len().saturating_sub(last);
        scored.into_iter().skip(skip).collect()
    };
    let series = |name: &str, class, f: &dyn Fn(&RunRow) -> f64| Series {
        name: name.into(),
        class,
        points: runs.iter().map(|r| (r.from_ms, f(r))).collect(),
    };
    html! {
        h1 { "Trends" }
        p.muted {
            "The last " (runs.len()) " scored runs, by window start (" span.zone-name { "UTC" } "). "
            "Show " @for n in [48, 500, 5000] { a href=(format!("/trends?last={n}")) { (n) } " " }
        }
        h2 { "Duration (s)" }
        (svg::time_series("trend-duration", &[series("duration", "s0", &|r| r.duration_seconds())], "s"))
        h2 { "Models scored" }
        (svg::time_series("trend-models", &[series("models scored", "s2", &|r| r.models_scored as f64)], "models"))
        h2 { "Rows per second" }
        (svg::time_series("trend-rate", &[series("rows/s", "s0", &|r| r.rows_per_second)], "rows/s"))
        h2 { "Anomalies" }
        (svg::time_series("trend-anomalies", &[series("anomalies", "s1", &|r| r.anomalies as f64)], "anomalies"))
        h2 { "Failures" }
        (svg::time_series("trend-failures", &[
            series("models failed", "s1", &|r| r.models_failed as f64),
            series("tasks failed", "s3", &|r| f64::from(r.tasks_failed)),
        ], "failures"))
    }
}
