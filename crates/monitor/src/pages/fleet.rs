//! The Workers, Ingest and aggregation, and Schedules pages.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::{count, layout, span, time};
use crate::Monitor;
use crate::svg::{self, Series};

/// `/workers`: every worker seen in the last day, what it holds and did.
pub(crate) async fn workers(State(m): State<Arc<Monitor>>) -> Html<String> {
    let s = m.snapshot();
    let body = match &s.live {
        None => html! { h1 { "Workers" } p.empty { "This monitor reads no coordinator." } },
        Some(live) => html! {
            h1 { "Workers" }
            div.cards {
                div.card { div.label { "Live workers" } div.value { (live.workers.iter().filter(|w| w.live).count()) } div.sub { "of " (live.workers.len()) " seen in the last day" } }
                div.card { div.label { "Queue depth" } div.value { (live.queue_depth) } }
                @for (st, n) in &live.tasks_by_state {
                    @if st.is_queued() { div.card { div.label { "Tasks " (st.as_str()) } div.value { (n) } } }
                }
            }
            h2 { "Workers" }
            @if live.workers.is_empty() { p.empty { "No worker has claimed a task in the last day." } }
            @else {
                table #workers {
                    tr { th { "Worker" } th { "Host" } th { "State" } th { "Last heartbeat" } th { "Current tasks" } th.num { "Tasks done" } th.num { "Failed" } th.num { "Expired leases" } }
                    @for w in &live.workers {
                        tr {
                            td { (w.state.worker) }
                            td { (w.host) }
                            td { @if w.live { span.badge.st-running { "live" } } @else { span.badge.st-cancelled { "silent" } } }
                            td { (time(w.state.last_seen_ms)) " " span.muted { "(" (span(s.taken_ms - w.state.last_seen_ms)) " ago)" } }
                            td { @for (run, shard) in &w.state.running { a href=(format!("/runs/{run}")) { (run) " #" (shard) } " " } }
                            td.num { (w.state.done) }
                            td.num { (w.state.failed) }
                            td.num { (w.expired_leases) }
                        }
                    }
                }
            }
        },
    };
    Html(layout("Workers", "/workers", Some(&s), None, body).into_string())
}

/// `/ingest`: the log's partitions and rate, each aggregator's lag, watermarks and late readings.
pub(crate) async fn ingest(State(m): State<Arc<Monitor>>) -> Html<String> {
    let s = m.snapshot();
    let now = s.taken_ms;
    let body = match &s.pipeline {
        None => html! {
            h1 { "Ingest and aggregation" }
            p.empty { "Start the monitor with --log-dir DIR (the ingest log's folder) to see readings per second, lag and watermarks." }
        },
        Some(p) => html! {
            h1 { "Ingest and aggregation" }
            p.muted { "Log " code { (p.log_dir) } "." }
            div.cards {
                div.card { div.label { "Readings per second" } div.value { (p.readings_per_second.map_or("—".into(), svg::short)) } }
                div.card { div.label { "Readings in the log" } div.value { (count(p.log_end())) } }
                @for a in &p.aggregators {
                    div.card {
                        div.label { "Aggregator " (a.name) }
                        div.value { (count(a.total_lag())) " behind" }
                        div.sub { "watermark " @match a.min_watermark_ms() { Some(w) => { (span(now - w)) " behind the clock" }, None => "none yet" } }
                    }
                }
            }
            h2 { "Readings per second" }
            (svg::time_series("ingest-rate", &[Series { name: "readings/s".into(), class: "s0", points: p.rate_history.clone() }], "readings/s"))
            h2 { "Sources" }
            @if p.sources.is_empty() { p.empty { "No ingest process has published its counters in this log's folder yet." } }
            @else {
                table #sources {
                    tr {
                        th { "Source" } th.num { "Running in" } th.num { "Accepted/s" } th.num { "Accepted" }
                        th.num { "Invalid" } th.num { "Unauthorized" } th.num { "Overloaded (429)" } th.num { "Timed out" }
                    }
                    @for x in &p.sources {
                        tr {
                            td { (x.source) }
                            td.num { (x.live_processes) " process" @if x.live_processes != 1 { "es" } }
                            td.num { (x.accepted_per_second.map_or("—".into(), svg::short)) }
                            td.num { (count(x.counts.accepted)) }
                            td.num { (count(x.counts.invalid)) }
                            td.num { (count(x.counts.unauthorized)) }
                            td.num { (count(x.counts.overloaded)) }
                            td.num { (count(x.counts.timed_out)) }
                        }
                    }
                }
                p.muted { "Counted by each ingest process since it started, published beside the log every 5 s; the totals include processes that have stopped." }
            }
            h2 { "Partitions" }
            table #partitions {
                tr {
                    th.num { "Partition" } th.num { "First offset" } th.num { "End offset" }
                    @for a in &p.aggregators { th.num { (a.name) ": committed" } th.num { "lag" } th { "watermark" } }
                }
                @for part in &p.partitions {
                    tr {
                        td.num { (part.partition) } td.num { (part.start) } td.num { (part.end) }
                        @for a in &p.aggregators {
                            @let i = part.partition as usize;
                            td.num { (a.committed.get(i).copied().unwrap_or(0)) }
                            td.num { (a.lag.get(i).copied().unwrap_or(0)) }
                            td { @match a.watermarks_ms.get(i).copied().flatten() { Some(w) => { (time(w)) " (" (span(now - w)) " behind)" }, None => span.muted { "none" } } }
                        }
                    }
                }
            }
            h2 { "Aggregators" }
            @if p.aggregators.is_empty() { p.empty { "No aggregator has written a checkpoint to this store." } }
            @else {
                table #aggregators {
                    tr { th { "Name" } th.num { "Epoch" } th.num { "Windows closed" } th.num { "Late readings" } th.num { "Open readings" } th.num { "Lag" } }
                    @for a in &p.aggregators {
                        tr { td { (a.name) } td.num { (a.epoch) } td.num { (count(a.windows)) } td.num { (count(a.late_readings)) } td.num { (count(a.buffered_readings)) } td.num { (count(a.total_lag())) } }
                    }
                }
            }
            @for problem in &p.problems { p.banner { (problem) } }
        },
    };
    Html(layout("Ingest and aggregation", "/ingest", Some(&s), None, body).into_string())
}

/// `/schedules`: what the scheduler says, or that there is none.
pub(crate) async fn schedules(State(m): State<Arc<Monitor>>) -> Html<String> {
    let s = m.snapshot();
    let body = match &s.schedules {
        None => html! {
            h1 { "Schedules" }
            p.empty #no-scheduler { "No scheduler: runs are started by " code { "fleetscore run" } ". Schedules, their next ticks and tick history show here once a scheduler is plugged in." }
        },
        Some(list) if list.is_empty() => html! {
            h1 { "Schedules" }
            p.empty #no-schedules { "No schedules yet: " code { "fleetscore schedule add" } " makes one; runs so far were started by hand." }
        },
        Some(list) => html! {
            h1 { "Schedules" }
            @for sc in list.iter() {
                h2 { (sc.name) }
                p { code { (sc.definition) } " · windows of " (span(sc.window_ms)) }
                @if let Some((done, total)) = sc.backfill { p { "Backfill: " (done) " of " (total) " windows" } }
                p { "Next ticks: " @for t in &sc.next_ticks { (time(*t)) " " } }
                table {
                    tr { th { "Tick" } th { "Run" } th { "Reason" } }
                    @for t in &sc.history {
                        tr {
                            td { (time(t.tick_ms)) }
                            td { @if let Some(r) = &t.run_id { a href=(format!("/runs/{r}")) { (r) } } }
                            td { (t.reason) }
                        }
                    }
                }
            }
        },
    };
    Html(layout("Schedules", "/schedules", Some(&s), None, body).into_string())
}
