//! `fleetscore aggregate ...`: readings from the durable log (or a file) into event-time
//! windows, written to the store's `features/`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use fleetscore_aggregate::stream::{self, Options, Report};
use fleetscore_aggregate::{Config, Filters, Range, file};
use fleetscore_core::parse_duration;
use fleetscore_store::layout;

use crate::fleet_cmd::StoreArgs;
use crate::ingest_cmd::{LogDirArgs, open_existing};

/// `fleetscore aggregate ...`.
#[derive(Debug, Subcommand)]
pub enum AggregateCommand {
    /// Follow the log: aggregate readings per (device, tag) over event-time windows, and write
    /// each window to the store's features/ once the watermark closes it. Stopping or killing
    /// it at any point is safe: it goes on from its checkpoint, and no window is lost or
    /// written twice.
    Run(RunArgs),
    /// Aggregate a readings file (CSV or Parquet: device, tag, ts, value) into a features
    /// Parquet file, every window closed at the end of the file.
    File(FileArgs),
    /// An aggregator's checkpoint: its offsets, watermarks and counters, as JSON.
    Status(StatusArgs),
}

/// Windows, watermarks and filters.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Window length (`500ms`, `30s`, `1m`, `1h`).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub window: Duration,
    /// Distance between window starts, for hopping windows (default: the window length,
    /// tumbling windows).
    #[arg(long, value_parser = parse_duration)]
    pub hop: Option<Duration>,
    /// Allowed out-of-order delay: a partition's watermark trails its newest reading by this.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub delay: Duration,
    /// Allowed lateness: a window closes when the watermark passes its end plus this.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lateness: Duration,
    /// A partition with no new readings for this long has its watermark moved to the clock
    /// minus this, so its last windows close.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Keep only values of a tag within a range: `TAG=MIN:MAX` (repeatable).
    #[arg(long = "range", value_parser = parse_range)]
    pub ranges: Vec<(String, Range)>,
    /// Keep NaN values (dropped by default).
    #[arg(long)]
    pub keep_nan: bool,
    /// Keep repeats of a (device, tag, ts) (by default the first to arrive is kept).
    #[arg(long)]
    pub keep_repeats: bool,
}

impl WindowArgs {
    fn config(&self) -> Result<Config> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let config = Config {
            size_ms: ms(self.window),
            hop_ms: ms(self.hop.unwrap_or(self.window)),
            delay_ms: ms(self.delay),
            lateness_ms: ms(self.lateness),
            idle_timeout_ms: ms(self.idle_timeout),
            filters: Filters {
                ranges: self.ranges.iter().cloned().collect(),
                drop_nan: !self.keep_nan,
                drop_repeats: !self.keep_repeats,
            },
        };
        config.check()?;
        Ok(config)
    }
}

/// `fleetscore aggregate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub log: LogDirArgs,
    #[command(flatten)]
    pub windows: WindowArgs,
    /// The aggregator's name: its checkpoint, late readings and consumer group.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Read to the end of the log, close every window, and exit (a backfill, or a batch job).
    /// The end of the log is taken as the end of input: readings appended later are late for
    /// the windows it closed.
    #[arg(long)]
    pub drain: bool,
    /// Archive every reading into the store's `readings/` too (the layout `data import`
    /// writes), exactly once: models fed raw values are then scored from the stream.
    #[arg(long)]
    pub raw: bool,
    /// Most readings taken from one partition per epoch (one checkpoint per epoch).
    #[arg(long, default_value_t = 1_000_000)]
    pub epoch_readings: u64,
    /// How long to wait for new readings when caught up, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// When caught up, the least time between epochs, in milliseconds (each epoch writes a
    /// checkpoint of every open window; behind, epochs follow each other at once).
    #[arg(long, default_value_t = 1_000)]
    pub epoch_interval_ms: u64,
    /// Print one JSON line per epoch instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// `fleetscore aggregate file`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Readings: CSV or Parquet with device, tag, ts and value columns.
    #[arg(long)]
    pub input: PathBuf,
    /// The features file to write (Parquet).
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub windows: WindowArgs,
}

/// `fleetscore aggregate status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The aggregator's name.
    #[arg(long, default_value = "default")]
    pub name: String,
}

pub fn aggregate(store: &StoreArgs, command: AggregateCommand) -> Result<ExitCode> {
    match command {
        AggregateCommand::Run(a) => run(store, a),
        AggregateCommand::File(a) => file_cmd(a),
        AggregateCommand::Status(a) => status(store, a),
    }
}

fn run(store_args: &StoreArgs, a: RunArgs) -> Result<ExitCode> {
    let config = a.windows.config()?;
    let store = store_args.open()?;
    let log = open_existing(&a.log.log_dir)?;
    let _lock = stream::NameLock::take(&a.log.log_dir, &a.name)?;
    let options = Options {
        name: a.name.clone(),
        epoch_records: a.epoch_readings.max(1),
        poll: Duration::from_millis(a.poll_ms),
        epoch_interval: Duration::from_millis(a.epoch_interval_ms),
        drain: a.drain,
        raw: a.raw,
        abort_after_files: std::env::var("FLEETSCORE_FAULT_AGGREGATE_ABORT_AFTER")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    eprintln!(
        "aggregating {} ({} partitions) into {} as `{}`: {} ms windows every {} ms, delay {} ms, lateness {} ms",
        a.log.log_dir.display(),
        log.partitions(),
        store.location(),
        a.name,
        config.size_ms,
        config.hop_ms,
        config.delay_ms,
        config.lateness_ms
    );
    // Schedules with the watermark trigger wait on what every aggregator has closed: it is
    // published in the coordinator (the store's own, or --db's; not a stray local file beside
    // a remote store).
    let coordinator = if store_args.db.is_some() || !store_args.store.contains("://") {
        Some(store_args.coordinator()?)
    } else {
        eprintln!("no --db: watermarks are not published for schedules to wait on");
        None
    };
    let mut published = None;
    let started = Instant::now();
    // SIGTERM or SIGINT ends the run between epochs, after a checkpoint. (Killed, it would
    // replay its epoch on restart; but as a container's PID 1 an unhandled SIGTERM is ignored,
    // and `podman stop` or Kubernetes would wait out the grace period and SIGKILL it.)
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let json = a.json;
    let name = a.name.clone();
    let counters = stream::run(&log, &store, config, options, &stop, &mut |r: &Report| {
        if let (Some(c), Some(at), Some(newest)) = (&coordinator, r.complete_before, r.newest_event)
            && published != Some(at)
        {
            match c.publish_watermark(&name, at, newest, fleetscore_core::now_ms()) {
                Ok(()) => published = Some(at),
                // Aggregation goes on; the next epoch publishes again.
                Err(e) => tracing::warn!("publishing the watermark: {e}"),
            }
        }
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "epoch": r.epoch, "records": r.records, "windows": r.windows,
                    "late": r.late, "bad_records": r.bad_records, "deleted": r.deleted, "files": r.files,
                    "compacted": r.compacted, "raw_readings": r.raw_readings,
                    "complete_before": r.complete_before.map(fleetscore_core::rfc3339),
                    "lag": r.lag, "buffered": r.buffered, "replayed": r.replayed,
                    "seconds": r.seconds, "counters": r.counters,
                })
            );
        } else {
            eprintln!(
                "epoch {}{}: {} readings, {} windows closed, {} late, {} files in {:.3}s; {} readings in open windows, {} behind",
                r.epoch,
                if r.replayed {
                    " (replayed after a crash)"
                } else {
                    ""
                },
                r.records,
                r.windows,
                r.late,
                r.files,
                r.seconds,
                r.buffered,
                r.lag
            );
        }
        if r.compacted > 0 {
            eprintln!("  compacted {} features files of closed hours", r.compacted);
        }
        if r.deleted > 0 {
            eprintln!(
                "  WARNING: the log's retention deleted {} readings before they were aggregated; skipped",
                r.deleted
            );
        }
        if let Some(bad) = &r.bad {
            eprintln!("  {} records skipped; the first: {bad}", r.bad_records);
        }
    })?;
    eprintln!(
        "done in {:.1}s: {} readings, {} windows; dropped {} NaN, {} out of range, {} repeats; {} late; {} deleted by retention unread",
        started.elapsed().as_secs_f64(),
        counters.readings,
        counters.windows,
        counters.nan,
        counters.out_of_range,
        counters.repeats,
        counters.late,
        counters.deleted
    );
    Ok(ExitCode::SUCCESS)
}

fn file_cmd(a: FileArgs) -> Result<ExitCode> {
    let config = a.windows.config()?;
    let started = Instant::now();
    let (engine, closed) = file::aggregate(&a.input, config)?;
    let read = started.elapsed();
    file::write(&engine, &closed, &a.output)?;
    let c = engine.counters();
    eprintln!(
        "{} readings → {} windows in {} in {:.3}s ({:.3}s reading and aggregating); dropped {} NaN, {} out of range, {} repeats",
        c.readings,
        closed.len(),
        a.output.display(),
        started.elapsed().as_secs_f64(),
        read.as_secs_f64(),
        c.nan,
        c.out_of_range,
        c.repeats
    );
    Ok(ExitCode::SUCCESS)
}

fn status(store_args: &StoreArgs, a: StatusArgs) -> Result<ExitCode> {
    let store = store_args.open()?;
    let key = layout::aggregate_checkpoint(&a.name);
    let Some(status) = stream::status(&store, &a.name)? else {
        bail!(
            "no aggregator `{}` in {} ({key} does not exist)",
            a.name,
            store.location()
        );
    };
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(ExitCode::SUCCESS)
}

/// `TAG=MIN:MAX`.
fn parse_range(s: &str) -> Result<(String, Range), String> {
    let bad = || format!("`{s}` is not TAG=MIN:MAX (e.g. temperature=-40:125)");
    let (tag, range) = s.split_once('=').ok_or_else(bad)?;
    let (min, max) = range.split_once(':').ok_or_else(bad)?;
    let min: f64 = min.trim().parse().map_err(|_| bad())?;
    let max: f64 = max.trim().parse().map_err(|_| bad())?;
    if tag.is_empty() || min.is_nan() || max.is_nan() || min > max {
        return Err(bad());
    }
    Ok((tag.to_string(), Range { min, max }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ranges_parse_or_say_why_not() {
        assert!(parse_duration("soon").is_err());
        let (tag, r) = parse_range("temperature=-40:125.5").unwrap();
        assert_eq!((tag.as_str(), r.min, r.max), ("temperature", -40.0, 125.5));
        assert!(parse_range("t=5:1").is_err());
        assert!(parse_range("t=5").is_err());
    }
}
