//! The Overview: how fresh the scores are, what ran in the last day, the queue and workers,
//! ingest, the next scheduled tick, and the models that need attention.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::html;

use fleetscore_jobs::RunStatus;

use super::{count, layout, model_href, secs, span, status, time};
use crate::Monitor;
use crate::api::Overview;
use crate::health::FLAG_KINDS;
use crate::svg::{self, Series};

pub(crate) async fn page(State(m): State<Arc<Monitor>>) -> Html<String> {
    let s = m.snapshot();
    let o = Overview::of(&s);
    let recent: Vec<_> = s.runs.rows.iter().rev().take(48).rev().collect();
    let chart = |f: &dyn Fn(&crate::snapshot::RunRow) -> f64, name: &str, class| Series {
        name: name.into(),
        class,
        points: recent
            .iter()
            .filter(|r| r.is_scored())
            .map(|r| (r.from_ms, f(r)))
            .collect(),
    };
    let body = html! {
        h1 { "Overview" }
        div.cards {
            div.card #last-window {
                div.label { "Last scored window" }
                @match &o.last_scored_window {
                    Some(w) => {
                        div.value { (span(s.taken_ms - w.window_end_ms)) " behind" }
                        div.sub { "ended " (time(w.window_end_ms)) }
                        div.sub { a href=(format!("/runs/{}", w.run_id)) { (w.run_id) } }
                    }
                    None => { div.value { "—" } div.sub { "no run has scored yet" } }
                }
            }
            div.card #runs-24h {
                div.label { "Runs in the last 24 h" }
                div.value { (o.runs_last_24h.values().sum::<u64>()) }
                div.sub {
                    @for st in RunStatus::ALL {
                        @if let Some(n) = o.runs_last_24h.get(st.as_str()) {
                            (status(st)) " " (n) " "
                        }
                    }
                    @if o.runs_last_24h.is_empty() { (o.runs) " in all" }
                }
            }
            div.card #queue {
                div.label { "Queue depth" }
                div.value { (o.queue_depth.map_or("—".into(), |d| d.to_string())) }
                div.sub { "tasks pending or running" }
            }
            div.card #workers {
                div.label { "Live workers" }
                div.value { (o.live_workers.map_or("—".into(), |d| d.to_string())) }
                div.sub { a href="/workers" { "workers" } }
            }
            div.card #ingest-rate {
                div.label { "Readings per second" }
                div.value { (o.readings_per_second.map_or("—".into(), svg::short)) }
                div.sub { @if s.pipeline.is_some() { a href="/ingest" { "ingest and aggregation" } } @else { "no ingest log given (--log-dir)" } }
            }
            div.card #anomalies-hour {
                div.label { "Anomalies, last hour" }
                div.value { (count(o.anomalies_last_hour)) }
                div.sub { "flagged by runs that finished in the last hour" }
            }
            div.card #next-tick {
                div.label { "Next scheduled tick" }
                @match (&o.next_tick, o.scheduler) {
                    (Some((_, name)), _) => {
                        @let ms = crate::schedule::next_tick(s.schedules.as_ref().map(|v| v.as_slice())).map_or(0, |t| t.0);
                        div.value { "in " (span(ms - s.taken_ms)) }
                        div.sub { (time(ms)) " · " (name) }
                    }
                    (None, true) if s.schedules.as_ref().is_some_and(|v| v.is_empty()) => {
                        div.value { "—" } div.sub { "no schedules (" code { "fleetscore schedule add" } ")" }
                    }
                    (None, true) => { div.value { "—" } div.sub { "no tick due" } }
                    (None, false) => { div.value { "—" } div.sub { "no scheduler" } }
                }
            }
            div.card #attention-count {
                div.label { "Models needing attention" }
                div.value { (s.models.attention.len()) " of " (count(o.models as u64)) }
                div.sub {
                    @for (k, n) in &o.flagged {
                        @if *n > 0 { a href=(format!("/models?flag={k}")) { (n) " " (k.replace('_', " ")) } " " }
                    }
                }
            }
        }
        div.two {
            div {
                h2 { "Recent runs: anomalies" }
                (svg::time_series("overview-anomalies", &[chart(&|r| r.anomalies as f64, "anomalies", "s1")], "anomalies"))
            }
            div {
                h2 { "Recent runs: duration" }
                (svg::time_series("overview-duration", &[chart(&|r| r.duration_seconds(), "duration", "s0")], "s"))
            }
        }
        h2 { "Models needing attention" }
        @if o.attention.is_empty() {
            p.empty { "None: every model looks healthy over its recent runs." }
        } @else {
            table #attention {
                tr { th { "Model" } th { "Health" } th { "Anomaly rate, recent runs" } th.num { "Rate" } th { "Last scored window" } }
                @for &i in s.models.attention.iter().take(20) {
                    @let m = &s.models.rows[i as usize];
                    tr.flagged data-model=(format!("{}/{}", m.device, m.tag)) {
                        td { a href=(model_href(&m.device, &m.tag)) { (m.device) "/" (m.tag) } }
                        td { @for f in &m.health.flags { span class=(format!("flag {}", f.kind())) title=(f.describe()) { (f.kind().replace('_', " ")) } } }
                        td { (svg::sparkline(&m.points.iter().map(|p| p.outcome.rate()).collect::<Vec<_>>(), true)) }
                        td.num { (m.health.rate.map_or("—".into(), |r| format!("{:.1}%", r * 100.0))) }
                        td { @match s.models.last_scored_ms(m) { Some(t) => (time(t)), None => span.muted { "never" } } }
                    }
                }
            }
            @if s.models.attention.len() > 20 { p { a href="/models?flag=any" { "All " (s.models.attention.len()) " flagged models" } } }
        }
        h2 { "Latest runs" }
        table #latest-runs {
            tr { th { "Run" } th { "Window start" } th { "Status" } th.num { "Duration" } th.num { "Models" } th.num { "Anomalies" } th.num { "Failures" } }
            @for r in s.runs.rows.iter().rev().take(10) {
                tr {
                    td { a href=(format!("/runs/{}", r.id)) { (r.id) } }
                    td { (time(r.from_ms)) }
                    td { (status(r.status)) }
                    td.num { (secs(r.duration_seconds())) }
                    td.num { (count(r.models_scored)) }
                    td.num { (count(r.anomalies)) }
                    td.num { (r.failures()) }
                }
            }
        }
        p.muted { "Health flags: " @for k in FLAG_KINDS { (k.replace('_', " ")) "; " } "thresholds are options of fleetscore serve." }
    };
    Html(layout("Overview", "/", Some(&s), None, body).into_string())
}
