//! The dashboard: server-rendered HTML (maud, which escapes everything it interpolates), with
//! its stylesheet and the few lines of script that switch times between UTC and local time
//! compiled in. One module per page family: `overview`, `runs` (the list, Windows, a run and
//! Trends), `models`, `fleet` (Workers, Ingest and aggregation, Schedules).

mod fleet;
mod models;
mod overview;
mod runs;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};

use fleetscore_core::rfc3339;
use fleetscore_jobs::RunStatus;

use crate::Monitor;
use crate::snapshot::Snapshot;

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

/// The dashboard's routes.
pub(crate) fn routes() -> Router<Arc<Monitor>> {
    Router::new()
        .route("/", get(overview::page))
        .route("/windows", get(runs::windows))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::run))
        .route("/runs/{id}/logs/{shard}/{attempt}", get(runs::log))
        .route("/trends", get(runs::trends))
        .route("/models", get(models::list))
        .route("/models/{device}/{tag}", get(models::model))
        .route("/workers", get(fleet::workers))
        .route("/ingest", get(fleet::ingest))
        .route("/schedules", get(fleet::schedules))
        .route("/assets/app.css", get(|| async { asset("text/css", CSS) }))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript", JS) }),
        )
}

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
}

/// The pages in the navigation bar: (path, title).
const NAV: [(&str, &str); 8] = [
    ("/", "Overview"),
    ("/windows", "Windows"),
    ("/runs", "Runs"),
    ("/trends", "Trends"),
    ("/models", "Models"),
    ("/workers", "Workers"),
    ("/ingest", "Ingest"),
    ("/schedules", "Schedules"),
];

/// A page: head, navigation (with `active` marked), the zone toggle, the snapshot's time and
/// problems, and `body`. `refresh` reloads it every so many seconds (a run in progress).
pub(crate) fn layout(
    title: &str,
    active: &str,
    s: Option<&Snapshot>,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = refresh { meta http-equiv="refresh" content=(secs); }
                title { (title) " · fleetscore" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    span.brand { "fleetscore" }
                    nav {
                        @for (path, name) in NAV {
                            a.on[path == active] href=(path) { (name) }
                        }
                    }
                    div.right {
                        @if let Some(s) = s { span { "as of " (time(s.taken_ms)) } }
                        button #zone type="button" { "Times: UTC (show local)" }
                    }
                }
                main {
                    @if let Some(s) = s {
                        @if !s.problems.is_empty() {
                            div.banner {
                                strong { "Some data could not be read: " }
                                @for p in s.problems.iter() { div { (p) } }
                            }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// A timestamp, labelled with its zone: UTC as sent, local after the toggle.
pub(crate) fn time(ms: i64) -> Markup {
    let text = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    html! { time datetime=(rfc3339(ms)) data-ms=(ms) { (text) } }
}

/// A duration in words: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub(crate) fn span(ms: i64) -> String {
    let s = ms.abs() / 1000;
    let two = |big: i64, a: &str, small: i64, b: &str| {
        if small == 0 {
            format!("{big} {a}")
        } else {
            format!("{big} {a} {small} {b}")
        }
    };
    let text = match s {
        0..60 => format!("{s} s"),
        60..3600 => two(s / 60, "min", s % 60, "s"),
        3600..86_400 => two(s / 3600, "h", (s % 3600) / 60, "min"),
        _ => two(s / 86_400, "d", (s % 86_400) / 3600, "h"),
    };
    if ms < 0 { format!("-{text}") } else { text }
}

/// Seconds, short.
pub(crate) fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        span((s * 1e3) as i64)
    }
}

/// A run status as a coloured badge.
pub(crate) fn status(st: RunStatus) -> Markup {
    html! { span class=(format!("badge st-{}", st.as_str())) { (st.as_str().replace('_', " ")) } }
}

/// A count with thousands separated.
pub(crate) fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A path segment, percent-encoded (device and tag ids may hold anything but control
/// characters).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link to a model's page.
pub(crate) fn model_href(device: &str, tag: &str) -> String {
    format!("/models/{}/{}", seg(device), seg(tag))
}

/// An error as a page.
pub(crate) fn error_page(code: StatusCode, message: &str) -> Markup {
    layout(
        code.canonical_reason().unwrap_or("Error"),
        "",
        None,
        None,
        html! {
            h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or("")) }
            p { (message) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

/// The sign-in page (`failed` after a wrong token); `next` is where to go after.
pub(crate) fn login_page(next: &str, failed: bool) -> Markup {
    layout(
        "Sign in",
        "",
        None,
        None,
        html! {
            h1 { "Sign in" }
            @if failed { div.banner { "That token is not one of this monitor's." } }
            p.muted { "This monitor asks for one of the bearer tokens of its --tokens file." }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                input type="password" name="token" placeholder="token" autofocus;
                " "
                button type="submit" { "Sign in" }
            }
        },
    )
}
