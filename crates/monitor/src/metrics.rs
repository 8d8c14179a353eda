//! `/metrics` in the OpenMetrics text format (through `prometheus-client`), encoded from the
//! snapshot at each scrape. No per-device labels: per-sensor views belong to the dashboard;
//! labels are states, failure kinds, flags, log partitions and aggregator names.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use fleetscore_jobs::RunStatus;
use fleetscore_jobs::coordinator::FailureKind;

use crate::health::FLAG_KINDS;
use crate::snapshot::{Histogram, Snapshot};
use crate::{AppError, Monitor};

/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of a snapshot, as OpenMetrics text (ending in `# EOF`).
pub fn encode(snapshot: Arc<Snapshot>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("fleetscore");
    registry.register_collector(Box::new(SnapshotMetrics(snapshot)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

pub(crate) async fn handler(State(m): State<Arc<Monitor>>) -> Result<impl IntoResponse, AppError> {
    let text = encode(m.snapshot()).map_err(AppError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text))
}

#[derive(Debug)]
struct SnapshotMetrics(Arc<Snapshot>);

/// One metric's descriptor, then its samples.
fn metric<'a>(
    e: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    e.encode_descriptor(name, help, unit, kind)
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> Result<(), std::fmt::Error> {
    metric(e, name, help, unit, MetricType::Gauge)?.encode_gauge(&v)
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    metric(e, name, help, None, MetricType::Counter)?
        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
}

/// A gauge with one sample per label set.
fn gauges<L: prometheus_client::encoding::EncodeLabelSet>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = metric(e, name, help, unit, MetricType::Gauge)?;
    for (labels, v) in samples {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

fn histogram(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    h: &Histogram,
) -> Result<(), std::fmt::Error> {
    metric(e, name, help, Some(&Unit::Seconds), MetricType::Histogram)?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum,
            h.count,
            &h.buckets(),
            None,
        )
}

impl Collector for SnapshotMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &*self.0;
        let runs = &s.runs;
        gauges(
            &mut e,
            "runs",
            "Runs in the store, by status.",
            None,
            runs.by_status()
                .into_iter()
                .map(|(st, n)| ([("status", st.as_str())], n as f64)),
        )?;
        let mut durations = Histogram::durations();
        let (mut models, mut rows, mut anomalies) = (0u64, 0u64, 0u64);
        let mut failures = [0u64; FailureKind::ALL.len()];
        let mut tasks_failed = 0u64;
        for r in runs.rows.iter().filter(|r| r.is_scored()) {
            durations.observe(r.duration_seconds());
            models += r.models_scored;
            rows += r.rows;
            anomalies += r.anomalies;
            tasks_failed += u64::from(r.tasks_failed);
            for (k, n) in &r.failures_by_kind {
                if let Some(i) = FailureKind::ALL.iter().position(|x| x == k) {
                    failures[i] += n;
                }
            }
        }
        histogram(
            &mut e,
            "run_duration",
            "Finished runs' durations, planning and execution.",
            &durations,
        )?;
        histogram(
            &mut e,
            "task_duration",
            "Task durations (read, score, write) of the runs whose summaries the monitor read.",
            &s.task_durations,
        )?;
        if let Some(r) = runs.last_succeeded() {
            gauge(
                &mut e,
                "last_successful_window_end",
                "End of the latest window a run scored without failures (Unix time).",
                Some(&Unit::Seconds),
                r.to_ms as f64 / 1e3,
            )?;
        }
        if let Some(r) = runs.last_scored() {
            gauge(
                &mut e,
                "scored_window_freshness",
                "How far the end of the latest scored window is behind now.",
                Some(&Unit::Seconds),
                (s.taken_ms - r.to_ms) as f64 / 1e3,
            )?;
        }
        counter(
            &mut e,
            "models_scored",
            "Models scored by finished runs.",
            models,
        )?;
        counter(
            &mut e,
            "predictions",
            "Predictions written by finished runs.",
            rows,
        )?;
        counter(
            &mut e,
            "anomalies",
            "Predictions flagged as anomalies.",
            anomalies,
        )?;
        let mut m = metric(
            &mut e,
            "model_failures",
            "Models that failed in finished runs, by what failed.",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in FailureKind::ALL.iter().zip(failures) {
            m.encode_family(&[("kind", kind.as_str())])?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&n, None)?;
        }
        counter(
            &mut e,
            "tasks_failed",
            "Tasks of finished runs that failed for good.",
            tasks_failed,
        )?;
        gauge(
            &mut e,
            "models",
            "Models in the registry.",
            None,
            s.models.rows.len() as f64,
        )?;
        gauges(
            &mut e,
            "models_flagged",
            "Models with a health flag, by flag.",
            None,
            FLAG_KINDS
                .iter()
                .zip(s.models.flag_counts)
                .map(|(k, n)| ([("flag", *k)], n as f64)),
        )?;
        if let Some(live) = &s.live {
            gauge(
                &mut e,
                "queue_depth",
                "Tasks of running runs pending or running.",
                None,
                f64::from(live.queue_depth),
            )?;
            gauges(
                &mut e,
                "tasks",
                "Tasks of running runs, by state.",
                None,
                live.tasks_by_state
                    .iter()
                    .map(|(st, n)| ([("state", st.as_str())], *n as f64)),
            )?;
            let live_n = live.workers.iter().filter(|w| w.live).count();
            gauges(
                &mut e,
                "workers",
                "Workers seen in the last day, by whether they showed life recently.",
                None,
                [
                    ([("state", "live")], live_n as f64),
                    ([("state", "silent")], (live.workers.len() - live_n) as f64),
                ],
            )?;
            gauge(
                &mut e,
                "expired_leases",
                "Tasks held by a worker whose lease has expired.",
                None,
                live.workers
                    .iter()
                    .map(|w| f64::from(w.expired_leases))
                    .sum(),
            )?;
        }
        let running = runs
            .rows
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count();
        gauge(
            &mut e,
            "runs_running",
            "Runs being executed.",
            None,
            running as f64,
        )?;
        if let Some(p) = &s.pipeline {
            gauges(
                &mut e,
                "log_end_offset",
                "The ingest log's next offset per partition (readings stored so far).",
                None,
                p.partitions
                    .iter()
                    .map(|x| ([("partition", x.partition.to_string())], x.end as f64)),
            )?;
            if let Some(rate) = p.readings_per_second {
                gauge(
                    &mut e,
                    "ingest_readings_rate",
                    "Readings per second appended to the log between the last two refreshes.",
                    None,
                    rate,
                )?;
            }
            let mut m = metric(
                &mut e,
                "ingest_readings",
                "Readings ingest took in, by source and result (accepted, or invalid and refused).",
                None,
                MetricType::Counter,
            )?;
            for x in &p.sources {
                for (result, n) in [
                    ("accepted", x.counts.accepted),
                    ("invalid", x.counts.invalid),
                ] {
                    m.encode_family(&[("source", x.source.as_str()), ("result", result)])?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &n, None,
                        )?;
                }
            }
            let mut m = metric(
                &mut e,
                "ingest_requests_refused",
                "Requests ingest refused before reading them, by source and reason.",
                None,
                MetricType::Counter,
            )?;
            for x in &p.sources {
                for (reason, n) in [
                    ("unauthorized", x.counts.unauthorized),
                    ("overloaded", x.counts.overloaded),
                    ("timed_out", x.counts.timed_out),
                ] {
                    m.encode_family(&[("source", x.source.as_str()), ("reason", reason)])?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &n, None,
                        )?;
                }
            }
            let mut m = metric(
                &mut e,
                "log_committed_offset",
                "Each aggregator's committed offset per partition.",
                None,
                MetricType::Gauge,
            )?;
            for a in &p.aggregators {
                for (i, off) in a.committed.iter().enumerate() {
                    m.encode_family(&[
                        ("aggregator", a.name.clone()),
                        ("partition", i.to_string()),
                    ])?
                    .encode_gauge(&(*off as f64))?;
                }
            }
            let mut m = metric(
                &mut e,
                "aggregate_watermark",
                "Each aggregator's watermark per partition (Unix time).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for a in &p.aggregators {
                for (i, wm) in a.watermarks_ms.iter().enumerate() {
                    if let Some(wm) = wm {
                        m.encode_family(&[
                            ("aggregator", a.name.clone()),
                            ("partition", i.to_string()),
                        ])?
                        .encode_gauge(&(*wm as f64 / 1e3))?;
                    }
                }
            }
            let mut m = metric(
                &mut e,
                "aggregate_late_readings",
                "Readings that came after their window closed, per aggregator.",
                None,
                MetricType::Counter,
            )?;
            for a in &p.aggregators {
                m.encode_family(&[("aggregator", a.name.clone())])?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                    &a.late_readings,
                    None,
                )?;
            }
            gauges(
                &mut e,
                "aggregate_lag",
                "Readings in the log not yet aggregated, per aggregator.",
                None,
                p.aggregators
                    .iter()
                    .map(|a| ([("aggregator", a.name.clone())], a.total_lag() as f64)),
            )?;
        }
        Ok(())
    }
}
