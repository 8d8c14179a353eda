//! The front half of the pipeline as the monitor sees it: the ingest log's partitions and
//! offsets (readings per second from how fast its end moves), and each aggregator's committed
//! offsets (its lag behind the log), watermarks and late readings. Read from the log's folder
//! (as a reader, beside the process writing it) and the aggregators' checkpoints in the store.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::Serialize;

use fleetscore_log::Log;
use fleetscore_log::sources::{self, SourceCounts};
use fleetscore_store::{Store, layout};

/// One log partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionView {
    /// Partition number.
    pub partition: u32,
    /// First offset still held (older ones were deleted by retention).
    pub start: u64,
    /// The next offset to be written: readings stored so far, durable.
    pub end: u64,
}

/// One aggregator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregatorView {
    /// Its name (also its consumer group in the log).
    pub name: String,
    /// Its last completed epoch.
    pub epoch: u64,
    /// Per partition, the offset it has aggregated up to (its checkpoint's).
    pub committed: Vec<u64>,
    /// Per partition, readings in the log it has not aggregated yet.
    pub lag: Vec<u64>,
    /// Per partition, its watermark (epoch ms), if the partition has had readings.
    pub watermarks_ms: Vec<Option<i64>>,
    /// Readings that came after their window had closed.
    pub late_readings: u64,
    /// Windows closed so far.
    pub windows: u64,
    /// Readings held in open windows.
    pub buffered_readings: u64,
}

impl AggregatorView {
    /// Readings not yet aggregated, over every partition.
    pub fn total_lag(&self) -> u64 {
        self.lag.iter().sum()
    }

    /// The oldest partition watermark: how far event time has closed windows everywhere.
    pub fn min_watermark_ms(&self) -> Option<i64> {
        self.watermarks_ms.iter().flatten().copied().min()
    }
}

/// One ingest source (`http`, `mqtt`, `kafka`), over every process that runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceView {
    /// The source's name.
    pub source: String,
    /// Its counters, summed over the processes' published files.
    pub counts: SourceCounts,
    /// Readings accepted per second between the last two refreshes.
    pub accepted_per_second: Option<f64>,
    /// Processes running it that published in the last [`LIVE_MS`].
    pub live_processes: usize,
}

/// A process whose counters are older than this is not counted as running.
pub const LIVE_MS: i64 = 30_000;

/// The ingest log and its aggregators, as of one refresh.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineView {
    /// The log's folder.
    pub log_dir: String,
    /// Its partitions.
    pub partitions: Vec<PartitionView>,
    /// Readings per second appended to the log between the last two refreshes.
    pub readings_per_second: Option<f64>,
    /// (time, readings per second) over the recent refreshes, oldest first.
    pub rate_history: Vec<(i64, f64)>,
    /// What each ingest source took in, from the counters ingest publishes beside the log.
    pub sources: Vec<SourceView>,
    /// Aggregators with a checkpoint in the store.
    pub aggregators: Vec<AggregatorView>,
    /// What could not be read (the log not created yet, a checkpoint that did not parse).
    pub problems: Vec<String>,
}

impl PipelineView {
    /// Readings stored in the log so far (its end offsets, summed).
    pub fn log_end(&self) -> u64 {
        self.partitions.iter().map(|p| p.end).sum()
    }
}

/// How many rate samples are kept (at the default 5 s refresh, an hour).
const SAMPLES: usize = 720;

/// Follows a log folder and the store's aggregators across refreshes.
pub struct PipelineReader {
    dir: PathBuf,
    /// Opened once the folder holds a log.
    log: Option<Log>,
    /// (time, log end) at each refresh, oldest first.
    samples: VecDeque<(i64, u64)>,
    /// Per source, (time, readings accepted) at the last refresh.
    accepted: std::collections::BTreeMap<String, (i64, u64)>,
}

impl PipelineReader {
    /// A reader of the log in `dir` (which may not exist yet).
    pub fn new(dir: &Path) -> PipelineReader {
        PipelineReader {
            dir: dir.to_path_buf(),
            log: None,
            samples: VecDeque::new(),
            accepted: Default::default(),
        }
    }

    /// Reads the log's offsets and the aggregators' checkpoints as of `now_ms`.
    pub fn read(&mut self, store: &Store, now_ms: i64) -> PipelineView {
        let mut view = PipelineView {
            log_dir: self.dir.display().to_string(),
            ..PipelineView::default()
        };
        if self.log.is_none() {
            match Log::open_reader(&self.dir) {
                Ok(log) => self.log = Some(log),
                Err(e) => view.problems.push(format!(
                    "no ingest log to read in {}: {e}",
                    self.dir.display()
                )),
            }
        }
        if let Some(log) = &self.log {
            if let Err(e) = log.refresh() {
                view.problems.push(format!("reading the log: {e}"));
            }
            for p in 0..log.partitions() {
                match log.bounds(p) {
                    Ok((start, end)) => view.partitions.push(PartitionView {
                        partition: p,
                        start,
                        end,
                    }),
                    Err(e) => view.problems.push(format!("partition {p}: {e}")),
                }
            }
            self.samples.push_back((now_ms, view.log_end()));
            while self.samples.len() > SAMPLES {
                self.samples.pop_front();
            }
            view.rate_history = self
                .samples
                .iter()
                .zip(self.samples.iter().skip(1))
                .filter(|(a, b)| b.0 > a.0)
                .map(|(a, b)| {
                    let per_s = b.1.saturating_sub(a.1) as f64 / ((b.0 - a.0) as f64 / 1e3);
                    (b.0, per_s)
                })
                .collect();
            view.readings_per_second = view.rate_history.last().map(|&(_, r)| r);
        }
        self.read_sources(&mut view, now_ms);
        match aggregator_names(store) {
            Ok(names) => {
                for name in names {
                    match self.aggregator(store, &name, &view.partitions) {
                        Ok(Some(a)) => view.aggregators.push(a),
                        Ok(None) => {}
                        Err(e) => view.problems.push(format!("aggregator {name}: {e}")),
                    }
                }
            }
            Err(e) => view.problems.push(format!("listing aggregators: {e}")),
        }
        view
    }

    /// The counters each ingest process publishes beside the log, by source, with the rate of
    /// accepted readings since the last refresh.
    fn read_sources(&mut self, view: &mut PipelineView, now_ms: i64) {
        let (reports, problems) = sources::read_all(&self.dir);
        view.problems.extend(
            problems
                .into_iter()
                .map(|p| format!("ingest counters: {p}")),
        );
        for (source, counts) in sources::totals(&reports) {
            let live_processes = reports
                .iter()
                .filter(|r| !r.stopped && now_ms - r.updated_ms < LIVE_MS)
                .filter(|r| r.sources.contains_key(&source))
                .count();
            let accepted_per_second = self.accepted.get(&source).and_then(|&(t, n)| {
                (now_ms > t && counts.accepted >= n)
                    .then(|| (counts.accepted - n) as f64 / ((now_ms - t) as f64 / 1e3))
            });
            self.accepted
                .insert(source.clone(), (now_ms, counts.accepted));
            view.sources.push(SourceView {
                source,
                counts,
                accepted_per_second,
                live_processes,
            });
        }
    }

    fn aggregator(
        &self,
        store: &Store,
        name: &str,
        partitions: &[PartitionView],
    ) -> Result<Option<AggregatorView>, String> {
        let Some(status) =
            fleetscore_aggregate::stream::status(store, name).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let committed: Vec<u64> = status["offsets"]
            .as_array()
            .map(|a| a.iter().map(num).collect())
            .unwrap_or_default();
        let lag = partitions
            .iter()
            .map(|p| {
                let at = committed.get(p.partition as usize).copied().unwrap_or(0);
                p.end.saturating_sub(at.max(p.start))
            })
            .collect();
        let watermarks_ms = status["watermarks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|w| w.as_str().and_then(|t| fleetscore_core::parse_time(t).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let counters = &status["counters"];
        Ok(Some(AggregatorView {
            name: name.to_string(),
            epoch: num(&status["epoch"]),
            committed,
            lag,
            watermarks_ms,
            late_readings: num(&counters["late"]),
            windows: num(&counters["windows"]),
            buffered_readings: num(&status["buffered_readings"]),
        }))
    }
}

/// The names of the aggregators with a checkpoint in the store.
fn aggregator_names(store: &Store) -> fleetscore_store::Result<Vec<String>> {
    let mut names: Vec<String> = store
        .list("aggregate")?
        .into_iter()
        .filter_map(|e| {
            let rest = e.key.strip_prefix("aggregate/")?;
            let (seg, file) = rest.split_once('/')?;
            (file == "checkpoint").then(|| layout::unsegment(seg))?
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
