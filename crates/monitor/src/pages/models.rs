//! The Models pages: every (device, tag) with its anomaly rate over its recent runs as a
//! sparkline and its health flags (filtered by flag, searched, paged), and one model with its
//! history, health and versions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use maud::html;

use super::{count, layout, model_href, time};
use crate::api::{ModelsQuery, model_detail_of};
use crate::health::{FLAG_KINDS, Outcome};
use crate::svg::{self, Series};
use crate::{AppError, Monitor, blocking};

/// `/models`.
pub(crate) async fn list(
    State(m): State<Arc<Monitor>>,
    Query(q): Query<ModelsQuery>,
) -> Result<Html<String>, AppError> {
    let s = m.snapshot();
    let models = &s.models;
    let all = q.select(models).map_err(AppError::page)?;
    let (offset, per) = q.paging.parse(100).map_err(AppError::page)?;
    let flag = q.flag.clone().unwrap_or_default();
    let search = q.q.clone().unwrap_or_default();
    let link = |off: usize| {
        format!(
            "/models?flag={}&q={}&offset={off}",
            super::seg(&flag),
            super::seg(&search)
        )
    };
    let body = html! {
        h1 { "Models" }
        p {
            a href="/models" { "all (" (count(models.rows.len() as u64)) ")" } " · "
            a href="/models?flag=any" { "needing attention (" (models.attention.len()) ")" } " · "
            @for (k, n) in FLAG_KINDS.iter().zip(models.flag_counts) {
                a href=(format!("/models?flag={k}")) { (k.replace('_', " ")) " (" (n) ")" } " · "
            }
            form.inline method="get" action="/models" {
                input type="hidden" name="flag" value=(flag);
                input type="text" name="q" value=(search) placeholder="device/tag contains";
                " " button type="submit" { "Search" }
            }
        }
        p.muted {
            "Health over each model's last " (models.recent.len()) " scored runs (of at most " (models.options.runs) "): "
            "always anomalous at ≥ " (models.options.always_rate * 100.0) "% of ≥ " (models.options.min_rows) " rows; "
            "drift when the latest rate is ≥ " (models.options.drift_min_delta * 100.0) " points and " (models.options.drift_sigmas)
            " robust deviations from its median; silent after " (models.options.silent_runs) " runs without data; failing when its latest run failed it."
        }
        table #models {
            tr { th { "Model" } th { "Version" } th { "Estimator" } th { "Anomaly rate, recent runs" } th.num { "Rate" } th.num { "Rows" } th { "Last scored window" } th { "Health" } }
            @for &i in all.iter().skip(offset).take(per) {
                @let m = &models.rows[i as usize];
                tr.flagged[m.health.flagged()] data-model=(format!("{}/{}", m.device, m.tag)) data-flags=(m.health.flags.iter().map(|f| f.kind()).collect::<Vec<_>>().join(" ")) {
                    td { a href=(model_href(&m.device, &m.tag)) { (m.device) "/" (m.tag) } }
                    td { code { (m.version) } }
                    td.muted { (m.estimator) }
                    td { (svg::sparkline(&m.points.iter().map(|p| p.outcome.rate()).collect::<Vec<_>>(), m.health.flagged())) }
                    td.num { (m.health.rate.map_or("—".into(), |r| format!("{:.1}%", r * 100.0))) }
                    td.num { (count(m.health.rows)) }
                    td { @match models.last_scored_ms(m) { Some(t) => (time(t)), None => span.muted { "never" } } }
                    td { @for f in &m.health.flags { span class=(format!("flag {}", f.kind())) title=(f.describe()) { (f.kind().replace('_', " ")) } } }
                }
            }
        }
        p.pager {
            @if offset > 0 { a href=(link(offset.saturating_sub(per))) { "← previous" } }
            @if offset + per < all.len() { a href=(link(offset + per)) { "next →" } }
            span.muted { (all.len()) " models" }
        }
    };
    Ok(Html(
        layout("Models", "/models", Some(&s), None, body).into_string(),
    ))
}

/// `/models/{device}/{tag}`.
pub(crate) async fn model(
    State(m): State<Arc<Monitor>>,
    Path((device, tag)): Path<(String, String)>,
) -> Result<Html<String>, AppError> {
    let s = m.snapshot();
    let s2 = s.clone();
    let d = blocking(move || model_detail_of(&m, &s2, &device, &tag))
        .await
        .map_err(AppError::page)?;
    let model = &d.model;
    let history = model.history.as_deref().unwrap_or_default();
    let rate = Series {
        name: "anomaly rate".into(),
        class: if model.health.flags.is_empty() {
            "s0"
        } else {
            "s1"
        },
        points: history
            .iter()
            .filter_map(|h| {
                let start = fleetscore_core::parse_time(&h.window_start).ok()?;
                h.rate.map(|r| (start, r * 100.0))
            })
            .collect(),
    };
    let i = s.models.find(&model.device, &model.tag);
    let body = html! {
        h1 { "Model " (model.device) "/" (model.tag) }
        p { "Version " code { (model.version) } " · " (model.estimator) " · imported " (
            fleetscore_core::parse_time(&model.imported_at).map_or_else(|_| html! { (model.imported_at) }, time)
        ) }
        h2 { "Health" }
        @if model.health.flags.is_empty() {
            p #health { "Healthy over its recent runs" (model.health.rate.map_or(String::new(), |r| format!(" (anomaly rate {:.1}%)", r * 100.0))) "." }
        } @else {
            ul #health {
                @for f in &model.health.flags { li { span class=(format!("flag {}", f.kind())) { (f.kind().replace('_', " ")) } " " (f.describe()) } }
                @if let Some(reason) = &model.last_failure { li { "latest failure: " (reason) } }
            }
        }
        h2 { "Anomaly rate per run (%)" }
        (svg::time_series("model-rate", &[rate], "%"))
        h2 { "Recent runs" }
        table #history {
            tr { th { "Run" } th { "Window" } th { "Outcome" } th.num { "Rows" } th.num { "Anomalies" } th.num { "Rate" } }
            @for h in history.iter().rev() {
                tr {
                    td { a href=(format!("/runs/{}", h.run_id)) { (h.run_id) } }
                    td { (fleetscore_core::parse_time(&h.window_start).map_or_else(|_| html!{}, time)) }
                    td { (h.outcome.replace('_', " ")) }
                    td.num { (h.rows) }
                    td.num { (h.anomalies) }
                    td.num { (h.rate.map_or("—".into(), |r| format!("{:.1}%", r * 100.0))) }
                }
            }
        }
        @if let Some(i) = i {
            @let unknown = s.models.rows[i].points.iter().filter(|p| p.outcome == Outcome::Unknown).count();
            @if unknown > 0 { p.muted { (unknown) " run(s) lost a task that may have held this model: its outcome there is unknown." } }
        }
        h2 { "Versions" }
        table #versions {
            tr { th { "Version" } th { "Imported" } th { "Estimator" } th.num { "Features" } th { "From" } }
            @for v in d.versions.iter().rev() {
                tr {
                    td { code { (v.version) } @if v.version == model.version { " (current)" } }
                    td { (fleetscore_core::parse_time(&v.imported_at).map_or_else(|_| html! { (v.imported_at) }, time)) }
                    td { (v.estimator) }
                    td.num { (v.n_features) " (" (v.features.join(",")) ")" }
                    td.muted { (v.source) }
                }
            }
        }
    };
    Ok(Html(
        layout(
            &format!("Model {}/{}", model.device, model.tag),
            "/models",
            Some(&s),
            None,
            body,
        )
        .into_string(),
    ))
}
