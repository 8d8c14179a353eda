//! `fleetscore serve` (the monitor: dashboard, JSON API, `/metrics`) and `fleetscore models
//! health` (the same model health, printed).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleetscore_core::tokens::Tokens;
use fleetscore_monitor::{HealthOptions, Monitor, Options, Sources};

use crate::fleet_cmd::StoreArgs;

/// The thresholds of model health.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Judge each model over this many of the most recent scored runs.
    #[arg(long, default_value_t = HealthOptions::default().runs)]
    pub health_runs: usize,
    /// A model whose anomaly rate over those runs is at least this is "always anomalous".
    #[arg(long, default_value_t = HealthOptions::default().always_rate)]
    pub always_anomalous_rate: f64,
    /// The fewest rows a rate is judged on.
    #[arg(long, default_value_t = HealthOptions::default().min_rows)]
    pub min_rows: u64,
    /// Drift needs this many earlier scored runs to know a model's usual rate.
    #[arg(long, default_value_t = HealthOptions::default().drift_min_runs)]
    pub drift_min_runs: usize,
    /// Drift: the latest rate differs from the usual (median) rate by at least this...
    #[arg(long, default_value_t = HealthOptions::default().drift_min_delta)]
    pub drift_min_delta: f64,
    /// ...and by this many robust standard deviations of the earlier rates.
    #[arg(long, default_value_t = HealthOptions::default().drift_sigmas)]
    pub drift_sigmas: f64,
    /// A model without data in this many of its latest runs in a row is "silent".
    #[arg(long, default_value_t = HealthOptions::default().silent_runs)]
    pub silent_runs: usize,
}

impl HealthArgs {
    fn options(&self) -> Result<HealthOptions> {
        let rate = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                anyhow::bail!("--{name} is a rate between 0 and 1, not {v}")
            }
        };
        if self.health_runs == 0 {
            anyhow::bail!("--health-runs must be at least 1");
        }
        if self.drift_sigmas.is_nan() || self.drift_sigmas < 0.0 {
            anyhow::bail!(
                "--drift-sigmas must be 0 or more, not {}",
                self.drift_sigmas
            );
        }
        Ok(HealthOptions {
            runs: self.health_runs,
            always_rate: rate("always-anomalous-rate", self.always_anomalous_rate)?,
            min_rows: self.min_rows,
            drift_min_runs: self.drift_min_runs,
            drift_min_delta: rate("drift-min-delta", self.drift_min_delta)?,
            drift_sigmas: self.drift_sigmas,
            silent_runs: self.silent_runs,
        })
    }
}

/// `fleetscore serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(
        long,
        env = "FLEETSCORE_MONITOR_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Bearer tokens file: {"tokens": [{"name": "ops", "token": "…"}]}. Required unless
    /// listening on a loopback address.
    #[arg(long, env = "FLEETSCORE_MONITOR_TOKENS")]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::tls_args::TlsServerArgs,
    /// The ingest log's folder, to show readings per second, aggregation lag and watermarks.
    #[arg(long, alias = "log", env = "FLEETSCORE_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// How often the summaries are refreshed from the store and the coordinator.
    #[arg(long, default_value = "5s", value_parser = fleetscore_core::parse_duration)]
    pub refresh: Duration,
    /// How often the registry and every run record are read again in full.
    #[arg(long, default_value = "60s", value_parser = fleetscore_core::parse_duration)]
    pub full_refresh: Duration,
    /// The workers' lease: a task whose last heartbeat is older has lost it.
    #[arg(long, default_value = "60s", value_parser = fleetscore_core::parse_duration)]
    pub lease: Duration,
    #[command(flatten)]
    pub health: HealthArgs,
}

/// `fleetscore models health`.
#[derive(Debug, Subcommand)]
pub enum HealthCommand {
    /// Judge every model from its recent runs: always anomalous, drifting from its usual
    /// anomaly rate, silent (no data), failing.
    Health {
        /// Print JSON (what `GET /api/v1/health` answers).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        health: HealthArgs,
    },
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn serve(args: &StoreArgs, a: ServeArgs) -> Result<ExitCode> {
    let health = a.health.options()?;
    let tokens = a.tokens.as_deref().map(Tokens::load).transpose()?;
    fleetscore_monitor::check_listen(a.listen, tokens.as_ref())?;
    let tls = a.tls.config()?;
    let store = args.open()?;
    let coordinator: Arc<dyn fleetscore_jobs::coordinator::Coordinator> =
        Arc::from(args.coordinator()?);
    let listener = std::net::TcpListener::bind(a.listen)
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let local = listener.local_addr()?;
    let started = std::time::Instant::now();
    let monitor = Monitor::new(
        Sources {
            store,
            coordinator: Some(Arc::clone(&coordinator)),
            log_dir: a.log_dir,
            schedules: Arc::new(crate::schedule_cmd::MonitorSchedules(Arc::clone(
                &coordinator,
            ))),
            clock: Arc::new(fleetscore_core::SystemClock),
            options: Options {
                health,
                live_ms: 2 * ms(a.lease),
                lease_ms: ms(a.lease),
                full_every_ms: ms(a.full_refresh),
            },
        },
        tokens,
    );
    let snap = monitor.snapshot();
    tracing::info!(
        "read {} runs and {} models in {:.2}s",
        snap.runs.rows.len(),
        snap.models.rows.len(),
        started.elapsed().as_secs_f64()
    );
    for p in snap.problems.iter() {
        tracing::warn!("{p}");
    }
    let refresh = monitor
        .spawn_refresh(a.refresh)
        .context("starting the refresh thread")?;
    // Tests and scripts wait for this line to know the port.
    println!("monitor listening on {}://{local}", a.tls.scheme());
    std::io::stdout().flush()?;
    fleetscore_monitor::run_until_terminated(listener, tls, fleetscore_monitor::app(monitor))
        .with_context(|| format!("serving {local}"))?;
    refresh.stop();
    Ok(ExitCode::SUCCESS)
}

pub fn health(args: &StoreArgs, command: HealthCommand) -> Result<ExitCode> {
    let HealthCommand::Health { json, health } = command;
    let report = fleetscore_monitor::health_report(args.open()?, health.options()?);
    let mut out = std::io::stdout().lock();
    for p in &report.problems {
        eprintln!("warning: {p}");
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let flagged: Vec<String> = report
        .flagged
        .iter()
        .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
        .collect();
    writeln!(
        out,
        "{} models judged over their last {} scored runs (of {} wanted); {} need attention: {}",
        report.models,
        report.runs.len(),
        report.options.runs,
        report.attention.len(),
        flagged.join(", ")
    )?;
    for m in &report.attention {
        let flags: Vec<String> = m.health.flags.iter().map(|f| f.describe()).collect();
        writeln!(out, "{}/{}\t{}", m.device, m.tag, flags.join("; "))?;
        if let Some(reason) = &m.last_failure {
            writeln!(out, "\tlatest failure: {reason}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
