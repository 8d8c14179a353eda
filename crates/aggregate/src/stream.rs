//! Aggregating the durable log into the store, exactly once, in epochs.
//!
//! An epoch takes a range of offsets from every partition (and, for partitions without new
//! readings, the watermark an idle timeout or the end of input moves them to). It goes:
//!
//! 1. write the epoch's *intent* (`aggregate/{name}/intent.json`): its number, the offset
//!    range of every partition and the watermark moves — everything that decides its output;
//! 2. feed those records to the [`Engine`] (which has no clock: its output depends only on the
//!    records and moves);
//! 3. write the windows it closed to `features/…` and its late readings to `late/…`, under
//!    names made of the partition, the offset range and the epoch number;
//! 4. write the checkpoint (`aggregate/{name}/checkpoint`): epoch, offsets and the engine's
//!    open windows, in one object (a put replaces it atomically).
//!
//! After a crash, the checkpoint is the last completed epoch. If the intent names the epoch
//! after it, that epoch is replayed exactly — the same records, the same moves, from the same
//! state — so it rewrites the same files with the same bytes: whatever the crash left half
//! done is completed, nothing is written twice and no window is lost. Then aggregation goes
//! on from the checkpoint's offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetscore_core::now_ms;
use fleetscore_log::Log;
use fleetscore_store::Store;
use fleetscore_store::layout::{self, HOUR_MS, hour_key};
use fleetscore_table::parquet_direct::{self, Column, TextRunsBuilder, Values};
use fleetscore_table::windows::{self, Row};
use serde::{Deserialize, Serialize};

use crate::engine::{Closed, Config, Counters, Engine, Late};
use crate::error::{Error, Result};

/// How an aggregator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Its name: the key of its checkpoint and late readings, and its consumer group in the
    /// log (whose committed offsets mirror the checkpoint's, for lag reporting).
    pub name: String,
    /// Most records read from one partition in one epoch.
    pub epoch_records: u64,
    /// How long to wait when there is nothing new.
    pub poll: Duration,
    /// When caught up, the least time from one epoch's start to the next: every epoch writes
    /// a checkpoint of all open windows, so epochs back to back under a steady stream would
    /// spend much of their time rewriting it. (Behind, epochs follow each other at once.)
    pub epoch_interval: Duration,
    /// Read to the end of the log, close every window, and stop.
    pub drain: bool,
    /// Archive every reading an epoch reads into the store's `readings/` too (the layout
    /// `data import` writes), exactly once like the windows: models fed raw values are scored
    /// from the stream as well.
    pub raw: bool,
    /// Fault injection for the tests of real processes (the binary fills it from
    /// `FLEETSCORE_FAULT_AGGREGATE_ABORT_AFTER`): abort the process right after writing this
    /// many features files, in the middle of an epoch. `None` in production.
    pub abort_after_files: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            name: "default".into(),
            epoch_records: 1_000_000,
            poll: Duration::from_millis(500),
            epoch_interval: Duration::from_secs(1),
            drain: false,
            raw: false,
            abort_after_files: None,
        }
    }
}

/// What an epoch did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Its number.
    pub epoch: u64,
    /// Records read.
    pub records: u64,
    /// Windows closed (rows written to features).
    pub windows: u64,
    /// Late readings written.
    pub late: u64,
    /// Records that were not readings (skipped; the first error is in `bad`).
    pub bad_records: u64,
    /// Readings the log's retention deleted before they were read: skipped.
    pub deleted: u64,
    /// The first record that was not a reading.
    pub bad: Option<String>,
    /// Files written.
    pub files: usize,
    /// Readings archived into `readings/` (with [`Options::raw`]).
    pub raw_readings: u64,
    /// Features files merged into others by compaction after the epoch.
    pub compacted: usize,
    /// Records in the log not yet read after this epoch.
    pub lag: u64,
    /// Readings held in open windows.
    pub buffered: usize,
    /// Everything kept and dropped since the aggregator began.
    pub counters: Counters,
    /// Whether it was a replay of an epoch a crash interrupted.
    pub replayed: bool,
    /// Every window that starts before this instant (epoch ms) is in the store: the least, over
    /// the partitions that have seen readings, of the start of their first open window. What
    /// the aggregator publishes as its watermark for schedules that wait on one. `None` before
    /// any reading.
    pub complete_before: Option<i64>,
    /// The newest event time read, over every partition (`None` before any reading).
    pub newest_event: Option<i64>,
    /// Seconds it took.
    pub seconds: f64,
}

/// A reading an epoch read, for the raw archive.
struct RawReading {
    partition: u32,
    offset: u64,
    ts: i64,
    device: String,
    tag: String,
    value: f64,
}

/// The epoch being written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Intent {
    epoch: u64,
    from: Vec<u64>,
    to: Vec<u64>,
    /// Where reading starts, when the log's retention deleted records from `from` on.
    #[serde(default)]
    read_from: Vec<u64>,
    /// `(partition, watermark)` moves applied before the records.
    advance: Vec<(u32, i64)>,
}

/// The checkpoint's header (followed by the engine's snapshot and a CRC-32).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: u32,
    epoch: u64,
    offsets: Vec<u64>,
    config: Config,
    /// Hours (start, epoch ms) with features files not yet compacted.
    #[serde(default)]
    hours: BTreeSet<i64>,
}

const MAGIC: &[u8; 8] = b"FSAGGCK1";

/// An aggregator over a log, writing to a store.
pub struct Aggregator<'a> {
    log: &'a Log,
    store: &'a Store,
    options: Options,
    engine: Engine,
    epoch: u64,
    offsets: Vec<u64>,
    /// Per partition: the log's end last seen and when it last moved.
    activity: Vec<(u64, Instant)>,
    /// Hours (start, epoch ms) with features files not yet compacted.
    hours: BTreeSet<i64>,
    /// Features files written so far, for [`Options::abort_after_files`].
    files_written: u64,
}

impl<'a> Aggregator<'a> {
    /// Opens the aggregator `options.name`: from its checkpoint if it has one (completing the
    /// epoch a crash interrupted, if any), else from the start of the log. A checkpoint made
    /// with other windows, or over a log with another number of partitions, is an error.
    pub fn open(
        log: &'a Log,
        store: &'a Store,
        config: Config,
        options: Options,
    ) -> Result<(Aggregator<'a>, Option<Report>)> {
        config.check()?;
        let partitions = log.partitions();
        let key = layout::aggregate_checkpoint(&options.name);
        let (engine, epoch, offsets, hours) = match store.get_opt(&key)? {
            Some(bytes) => {
                let (header, state) = decode_checkpoint(&key, &bytes)?;
                if (header.config.size_ms, header.config.hop_ms) != (config.size_ms, config.hop_ms)
                {
                    return Err(Error::Config(format!(
                        "aggregator `{}` has open windows of {} ms every {} ms; it cannot go on with {} ms every {} ms (use another --name, or delete {key} to start over)",
                        options.name,
                        header.config.size_ms,
                        header.config.hop_ms,
                        config.size_ms,
                        config.hop_ms
                    )));
                }
                if header.offsets.len() != partitions as usize {
                    return Err(Error::Config(format!(
                        "aggregator `{}` read a log of {} partitions; this one has {partitions}",
                        options.name,
                        header.offsets.len()
                    )));
                }
                (
                    Engine::restore(config, state)?,
                    header.epoch,
                    header.offsets,
                    header.hours,
                )
            }
            None => {
                log.refresh()?;
                let mut offsets = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    offsets.push(log.bounds(p)?.0);
                }
                (
                    Engine::new(config, partitions)?,
                    0,
                    offsets,
                    BTreeSet::new(),
                )
            }
        };
        let now = Instant::now();
        let mut agg = Aggregator {
            log,
            store,
            activity: offsets.iter().map(|&o| (o, now)).collect(),
            options,
            engine,
            epoch,
            offsets,
            hours,
            files_written: 0,
        };
        let replayed = match agg.pending_intent()? {
            Some(intent) => {
                log.refresh()?;
                let mut r = agg.apply(&intent)?;
                r.replayed = true;
                Some(r)
            }
            None => None,
        };
        Ok((agg, replayed))
    }

    /// The intent of the epoch after the checkpoint, if one was written.
    fn pending_intent(&self) -> Result<Option<Intent>> {
        let key = layout::aggregate_intent(&self.options.name);
        let Some(bytes) = self.store.get_opt(&key)? else {
            return Ok(None);
        };
        let intent: Intent =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
        if intent.epoch != self.epoch + 1 {
            return Ok(None);
        }
        if intent.from != self.offsets || intent.to.len() != self.offsets.len() {
            return Err(Error::Corrupt(format!(
                "{key}: epoch {} starts at offsets {:?}, but the checkpoint is at {:?}",
                intent.epoch, intent.from, self.offsets
            )));
        }
        Ok(Some(intent))
    }

    /// Every window starting before this instant is in the store (see
    /// [`Report::complete_before`]).
    pub fn complete_before(&self) -> Option<i64> {
        (0..self.offsets.len() as u32)
            .filter_map(|p| self.engine.open_from(p))
            .min()
    }

    /// The engine (for its counters and watermarks).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The offsets aggregated so far, per partition.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Runs one epoch over what is new in the log; `None` when there was nothing to do.
    /// `now_ms` is the wall clock for idle timeouts; `end` treats the end of the log as the end
    /// of input (every window closes).
    pub fn step(&mut self, now_ms: i64, end: bool) -> Result<Option<Report>> {
        self.log.refresh()?;
        let mut to = self.offsets.clone();
        // Records the log's retention deleted before they were read cannot be aggregated: they
        // are skipped, counted and reported, rather than stopping aggregation for good.
        let mut read_from = self.offsets.clone();
        let mut lag = 0;
        for (p, to) in to.iter_mut().enumerate() {
            let (start, last) = self.log.bounds(p as u32)?;
            read_from[p] = read_from[p].max(start);
            *to = last.min(read_from[p].saturating_add(self.options.epoch_records));
            lag += last - *to;
            if last != self.activity[p].0 {
                self.activity[p] = (last, Instant::now());
            }
        }
        let idle = Duration::from_millis(self.engine.config().idle_timeout_ms as u64);
        let mut advance = Vec::new();
        for (p, (to, from)) in to.iter().zip(&self.offsets).enumerate() {
            if to != from {
                continue;
            }
            let wm = if end {
                i64::MAX
            } else if self.activity[p].1.elapsed() >= idle {
                now_ms.saturating_sub(idle.as_millis() as i64)
            } else {
                continue;
            };
            if self.engine.would_close(p as u32, wm) {
                advance.push((p as u32, wm));
            }
        }
        if to == self.offsets && advance.is_empty() && !self.compaction_pending() {
            return Ok(None);
        }
        let intent = Intent {
            epoch: self.epoch + 1,
            from: self.offsets.clone(),
            to,
            read_from,
            advance,
        };
        self.store.put(
            &layout::aggregate_intent(&self.options.name),
            serde_json::to_vec(&intent).expect("serializable"),
        )?;
        let mut report = self.apply(&intent)?;
        report.lag = lag;
        Ok(Some(report))
    }

    /// Applies an epoch: feeds its records, writes what closed, checkpoints.
    fn apply(&mut self, intent: &Intent) -> Result<Report> {
        let started = Instant::now();
        let mut report = Report {
            epoch: intent.epoch,
            ..Report::default()
        };
        for &(p, wm) in &intent.advance {
            self.engine.advance(p, wm);
        }
        let mut raw: Vec<RawReading> = Vec::new();
        for p in 0..intent.to.len() {
            let (mut at, to) = (intent.from[p], intent.to[p]);
            if let Some(&start) = intent.read_from.get(p)
                && start > at
            {
                report.deleted += start - at;
                self.engine.count_deleted(start - at);
                at = start;
            }
            while at < to {
                let engine = &mut self.engine;
                let mut archive = self.options.raw.then_some(&mut raw);
                let read = self
                    .log
                    .read_each(p as u32, at, 8 << 20, &mut |offset, record| {
                        if offset >= to {
                            return;
                        }
                        report.records += 1;
                        if let Err(e) = engine.push_record(p as u32, offset, record) {
                            report.bad_records += 1;
                            report.bad.get_or_insert_with(|| e.to_string());
                        } else if let Some(raw) = archive.as_deref_mut()
                            && let Ok(v) = fleetscore_core::reading::view(record)
                            && let Ok((device, tag)) =
                                fleetscore_core::reading::series_ids(v.series)
                        {
                            raw.push(RawReading {
                                partition: p as u32,
                                offset,
                                ts: v.ts_ms,
                                device: device.to_owned(),
                                tag: tag.to_owned(),
                                value: v.value,
                            });
                        }
                    });
                let next = match read {
                    // Retention deleted them since the epoch began (a replay after a long
                    // outage): skipped and counted, like those deleted before.
                    Err(fleetscore_log::Error::OffsetOutOfRange { start, .. }) if start > at => {
                        let skip = start.min(to) - at;
                        report.deleted += skip;
                        self.engine.count_deleted(skip);
                        start.min(to)
                    }
                    other => other?,
                };
                if next <= at {
                    return Err(Error::Invalid(format!(
                        "partition {p}: offsets {at}..{to} were in the log when epoch {} began, and are not now",
                        intent.epoch
                    )));
                }
                at = next;
            }
        }
        let (closed, late) = self.engine.take();
        report.windows = closed.len() as u64;
        report.late = late.len() as u64;
        report.files = self.write(intent, &closed, &late)?;
        report.raw_readings = raw.len() as u64;
        report.files += self.archive(intent, raw)?;
        self.epoch = intent.epoch;
        self.offsets.clone_from(&intent.to);
        let checkpoint = encode_checkpoint(
            &Header {
                format: 1,
                epoch: self.epoch,
                offsets: self.offsets.clone(),
                config: self.engine.config().clone(),
                hours: self.hours.clone(),
            },
            &self.engine.snapshot(),
        );
        self.store.put(
            &layout::aggregate_checkpoint(&self.options.name),
            checkpoint,
        )?;
        // The log's consumer offsets mirror the checkpoint, so `log stats` shows the lag.
        let committed: BTreeMap<u32, u64> = self
            .offsets
            .iter()
            .enumerate()
            .map(|(p, &o)| (p as u32, o))
            .collect();
        let _ = self.log.commit(&self.options.name, &committed);
        report.compacted = self.compact()?;
        report.buffered = self.engine.buffered();
        report.counters = self.engine.counters();
        report.complete_before = self.complete_before();
        report.newest_event = (0..self.offsets.len() as u32)
            .filter_map(|p| self.engine.newest(p))
            .max();
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Writes an epoch's readings into `readings/`, one file per partition, hour and device
    /// bucket, named like its features files, so a replayed epoch writes the same files again;
    /// returns the number of files.
    fn archive(&mut self, intent: &Intent, mut raw: Vec<RawReading>) -> Result<usize> {
        if raw.is_empty() {
            return Ok(0);
        }
        raw.sort_by(|a, b| {
            (
                a.partition,
                a.ts.div_euclid(HOUR_MS),
                layout::bucket(&a.device),
            )
                .cmp(&(
                    b.partition,
                    b.ts.div_euclid(HOUR_MS),
                    layout::bucket(&b.device),
                ))
                .then_with(|| {
                    (&a.device, &a.tag, a.ts, a.offset).cmp(&(&b.device, &b.tag, b.ts, b.offset))
                })
        });
        let mut files = 0;
        for group in raw.chunk_by(|a, b| {
            a.partition == b.partition
                && a.ts.div_euclid(HOUR_MS) == b.ts.div_euclid(HOUR_MS)
                && layout::bucket(&a.device) == layout::bucket(&b.device)
        }) {
            let first = &group[0];
            let p = first.partition as usize;
            let rows: Vec<fleetscore_table::readings::Row<'_>> = group
                .iter()
                .map(|r| fleetscore_table::readings::Row {
                    ts: r.ts,
                    device: &r.device,
                    tag: &r.tag,
                    value: r.value,
                })
                .collect();
            let (min_ts, max_ts) = group.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(r.ts), hi.max(r.ts))
            });
            // Named by its epoch (a replay writes the same name) and its time range (a run
            // over a few minutes of the hour reads only the files that hold them).
            let key = format!(
                "{}/{}",
                layout::readings_dir(&hour_key(first.ts), layout::bucket(&first.device)),
                layout::with_time_range(
                    &layout::epoch_file(
                        &self.options.name,
                        first.partition,
                        intent.from[p],
                        intent.to[p],
                        intent.epoch
                    ),
                    min_ts,
                    max_ts
                )
            );
            self.store
                .put(&key, fleetscore_table::readings::to_parquet(&rows)?)?;
            files += 1;
        }
        Ok(files)
    }

    /// Writes an epoch's closed windows (one file per partition, hour and device bucket) and
    /// late readings (one file per partition); returns the number of files.
    fn write(&mut self, intent: &Intent, closed: &[Closed], late: &[Late]) -> Result<usize> {
        for c in closed {
            self.hours.insert(c.start.div_euclid(HOUR_MS) * HOUR_MS);
        }
        let engine = &self.engine;
        let mut groups: BTreeMap<(u32, String, u32), Vec<Row<'_>>> = BTreeMap::new();
        for c in closed {
            let (device, tag) = engine.ids(c.series);
            groups
                .entry((
                    engine.partition_of(c.series),
                    hour_key(c.start),
                    layout::bucket(device),
                ))
                .or_default()
                .push(Row {
                    device,
                    tag,
                    start: c.start,
                    end: c.end,
                    stats: c.stats,
                });
        }
        let aggregator = &self.options.name;
        let name = |p: u32| {
            layout::epoch_file(
                aggregator,
                p,
                intent.from[p as usize],
                intent.to[p as usize],
                intent.epoch,
            )
        };
        let mut files = 0;
        for ((p, hour, bucket), mut rows) in groups {
            rows.sort_by(|a, b| (a.device, a.tag, a.start).cmp(&(b.device, b.tag, b.start)));
            let key = format!("{}/{}", layout::features_dir(&hour, bucket), name(p));
            self.store.put(&key, windows::to_parquet(&rows)?)?;
            files += 1;
            self.files_written += 1;
            if self.options.abort_after_files == Some(self.files_written) {
                tracing::error!(
                    "aborting after {} features files (injected fault)",
                    self.files_written
                );
                std::process::abort();
            }
        }
        let mut by_part: BTreeMap<u32, Vec<&Late>> = BTreeMap::new();
        for l in late {
            by_part
                .entry(engine.partition_of(l.series))
                .or_default()
                .push(l);
        }
        for (p, rows) in by_part {
            let key = format!("{}/{}", layout::late_dir(&self.options.name), name(p));
            self.store.put(&key, late_parquet(engine, &rows)?)?;
            files += 1;
        }
        Ok(files)
    }
}

impl Aggregator<'_> {
    /// The hours on the list whose windows have all closed (see [`Aggregator::compact`]).
    fn hours_done(&self) -> Vec<i64> {
        let Some(open_from) = (0..self.offsets.len() as u32)
            .filter_map(|p| self.engine.open_from(p))
            .min()
        else {
            return Vec::new();
        };
        self.hours
            .iter()
            .copied()
            .filter(|&h| h.saturating_add(HOUR_MS) <= open_from)
            .collect()
    }

    /// Whether an hour's files wait to be merged: an epoch runs for that alone.
    fn compaction_pending(&self) -> bool {
        !self.hours_done().is_empty()
    }

    /// Merges the features files of every hour whose windows have all closed — in every
    /// partition that has seen readings — into one file per device bucket, so that runs read a
    /// few files an hour rather than one per partition and close. The merge is written before
    /// its inputs are deleted (readers take each window once), and is named by its inputs, so
    /// a compaction interrupted by a crash is simply done again. Returns the files merged.
    ///
    /// An epoch merges at most [`MERGES_PER_EPOCH`] buckets (features and raw readings
    /// together), and an hour stays on the list until none of its buckets has files left to
    /// merge: at 50,000 sensors an hour is thousands of files, and merging them all at once
    /// would hold up the windows closing meanwhile for tens of seconds.
    fn compact(&mut self) -> Result<usize> {
        let done = self.hours_done();
        let mut merged = 0;
        let mut budget = MERGES_PER_EPOCH;
        for hour in done {
            if budget == 0 {
                break;
            }
            let key = hour_key(hour);
            let mut left = false;
            let mut buckets: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for e in self.store.list(&layout::features_hour(&key))? {
                let file = e.key.rsplit('/').next().unwrap_or(&e.key);
                // Only its own files: other aggregators compact theirs.
                if !layout::is_aggregators_file(&self.options.name, file) {
                    continue;
                }
                if let Some((_, b)) = layout::parse_features_key(&e.key) {
                    buckets.entry(b).or_default().push(e.key);
                }
            }
            for (bucket, keys) in buckets {
                if keys.len() < 2 {
                    continue;
                }
                if budget == 0 {
                    left = true;
                    break;
                }
                budget -= 1;
                merged += self.merge_files(&keys, |files, names| {
                    let out = format!(
                        "{}/{}",
                        layout::features_dir(&key, bucket),
                        layout::compacted_file(&self.options.name, names)
                    );
                    Ok((out, windows::merge(files)?))
                })?;
            }
            if self.options.raw {
                let (n, raw_left) = self.compact_raw(&key, &mut budget)?;
                merged += n;
                left |= raw_left;
            }
            if !left {
                self.hours.remove(&hour);
            }
        }
        Ok(merged)
    }
}

impl Aggregator<'_> {
    /// Merges the raw readings files this aggregator archived for an hour whose windows have
    /// all closed into one file per device bucket: an epoch writes one per partition and bucket
    /// every half second or so, which is thousands an hour. Only its own epoch files (never an
    /// import's, never another aggregator's); the merge is written before its inputs are
    /// deleted, and readers drop the duplicate readings they may see in between (see
    /// `fleetscore_jobs::readings::read_slice`). Merges at most `budget` buckets (counting it
    /// down); returns the files merged and whether buckets were left to merge.
    fn compact_raw(&mut self, hour: &str, budget: &mut usize) -> Result<(usize, bool)> {
        let prefix = layout::aggregator_prefix(&self.options.name);
        let mut buckets: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for e in self.store.list(&layout::readings_hour(hour))? {
            let file = e.key.rsplit('/').next().unwrap_or(&e.key);
            if !file.starts_with(&prefix) {
                continue;
            }
            if let Some((_, b)) = layout::parse_readings_key(&e.key) {
                buckets.entry(b).or_default().push(e.key);
            }
        }
        let mut merged = 0;
        for (bucket, keys) in buckets {
            if keys.len() < 2 {
                continue;
            }
            if *budget == 0 {
                return Ok((merged, true));
            }
            *budget -= 1;
            merged += self.merge_files(&keys, |files, names| {
                let (bytes, min_ts, max_ts) = fleetscore_table::readings::merge(files)?;
                let out = format!(
                    "{}/{}",
                    layout::readings_dir(hour, bucket),
                    layout::with_time_range(
                        &layout::compacted_file(&self.options.name, names),
                        min_ts,
                        max_ts
                    )
                );
                Ok((out, bytes))
            })?;
        }
        Ok((merged, false))
    }

    /// Merges the files `keys` of one hour and bucket: `merge` gets their contents and names
    /// and says where the merge goes and what it holds; the merge is written, then its inputs
    /// deleted. Returns how many files were merged.
    fn merge_files(
        &self,
        keys: &[String],
        merge: impl FnOnce(&[(String, bytes::Bytes)], &[String]) -> Result<(String, Vec<u8>)>,
    ) -> Result<usize> {
        let names: Vec<String> = keys
            .iter()
            .map(|k| k.rsplit('/').next().unwrap_or(k).to_string())
            .collect();
        let files: Vec<(String, bytes::Bytes)> = keys
            .iter()
            .cloned()
            .zip(self.store.get_many(keys)?)
            .collect();
        let (out, bytes) = merge(&files, &names)?;
        self.store.put(&out, bytes)?;
        for k in keys.iter().filter(|k| **k != out) {
            self.store.delete(k)?;
        }
        Ok(keys.len())
    }
}

/// Buckets an epoch merges at most (see [`Aggregator::compact`]).
const MERGES_PER_EPOCH: usize = 8;

/// Runs an aggregator until `stop` is set (or, with `options.drain`, until the log is read to
/// its end and every window closed), calling `progress` after each epoch.
pub fn run(
    log: &Log,
    store: &Store,
    config: Config,
    options: Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Report),
) -> Result<Counters> {
    let (poll, interval, drain) = (options.poll, options.epoch_interval, options.drain);
    let (mut agg, replayed) = Aggregator::open(log, store, config, options)?;
    if let Some(r) = replayed {
        progress(&r);
    }
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match agg.step(now_ms(), false)? {
            Some(r) => {
                progress(&r);
                if r.lag == 0 && !drain {
                    std::thread::sleep(interval.saturating_sub(started.elapsed()));
                }
            }
            None if drain => {
                // Caught up: the end of the log is the end of input.
                while let Some(r) = agg.step(now_ms(), true)? {
                    progress(&r);
                }
                break;
            }
            None => std::thread::sleep(poll),
        }
    }
    Ok(agg.engine.counters())
}

/// An aggregator's checkpoint as JSON (epoch, offsets, configuration, watermarks, counters,
/// readings in open windows), or `None` if it has none.
pub fn status(store: &Store, name: &str) -> Result<Option<serde_json::Value>> {
    let key = layout::aggregate_checkpoint(name);
    let Some(bytes) = store.get_opt(&key)? else {
        return Ok(None);
    };
    let (header, state) = decode_checkpoint(&key, &bytes)?;
    let engine = Engine::restore(header.config.clone(), state)?;
    let watermarks: Vec<Option<String>> = (0..header.offsets.len() as u32)
        .map(|p| {
            let wm = engine.watermark(p);
            (wm != i64::MIN).then(|| {
                chrono::DateTime::<chrono::Utc>::from_timestamp_millis(wm)
                    .map_or_else(|| wm.to_string(), |t| t.to_rfc3339())
            })
        })
        .collect();
    Ok(Some(serde_json::json!({
        "name": name,
        "epoch": header.epoch,
        "offsets": header.offsets,
        "watermarks": watermarks,
        "config": header.config,
        "counters": engine.counters(),
        "buffered_readings": engine.buffered(),
    })))
}

/// The claim of one aggregator name on one log: two aggregators of a name would write the same
/// checkpoint. Held while this value lives (an `flock` on `aggregate-{name}.lock` in the log's
/// folder, which the kernel releases if the process dies).
#[derive(Debug)]
pub struct NameLock {
    /// The locked file; closing it releases the lock.
    _file: std::fs::File,
}

impl NameLock {
    /// Takes the lock of aggregator `name` on the log in `log_dir`; an error if another
    /// process holds it.
    pub fn take(log_dir: &std::path::Path, name: &str) -> Result<NameLock> {
        let path = log_dir.join(format!("aggregate-{}.lock", layout::segment(name)));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(NameLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Invalid(format!(
                "aggregator `{name}` is already running on {} ({} is locked)",
                log_dir.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Invalid(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Late readings as Parquet: device, tag, ts, value, offset, and the watermark they missed.
fn late_parquet(engine: &Engine, rows: &[&Late]) -> Result<Vec<u8>> {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| {
        (engine.ids(a.series), a.ts, a.offset).cmp(&(engine.ids(b.series), b.ts, b.offset))
    });
    let mut device = TextRunsBuilder::default();
    let mut tag = TextRunsBuilder::default();
    for r in &rows {
        let (d, t) = engine.ids(r.series);
        device.push(d, 1);
        tag.push(t, 1);
    }
    let (device, tag) = (device.finish(), tag.finish());
    let ts: Vec<i64> = rows.iter().map(|r| r.ts).collect();
    let value: Vec<f64> = rows.iter().map(|r| r.value).collect();
    let offset: Vec<i64> = rows.iter().map(|r| r.offset as i64).collect();
    let watermark: Vec<i64> = rows.iter().map(|r| r.watermark).collect();
    Ok(parquet_direct::write_table(&[
        Column::new("device", Values::TextRuns(&device)),
        Column::new("tag", Values::TextRuns(&tag)),
        Column::new("ts", Values::Timestamp(&ts)),
        Column::new("value", Values::Float64(&value)),
        Column::new("offset", Values::Int64(&offset)),
        Column::new("watermark", Values::Timestamp(&watermark)),
    ])?)
}

fn encode_checkpoint(header: &Header, state: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).expect("serializable");
    let mut out = Vec::with_capacity(16 + header.len() + state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(state);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_checkpoint<'b>(key: &str, bytes: &'b [u8]) -> Result<(Header, &'b [u8])> {
    let corrupt = |why: &str| Error::Corrupt(format!("checkpoint {key}: {why}"));
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not an aggregator checkpoint (bad magic)"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(corrupt("CRC mismatch"));
    }
    let n = u32::from_le_bytes(body[8..12].try_into().expect("4")) as usize;
    let json = body
        .get(12..12 + n)
        .ok_or_else(|| corrupt("header runs past the end"))?;
    let header: Header =
        serde_json::from_slice(json).map_err(|e| corrupt(&format!("header: {e}")))?;
    Ok((header, &body[12 + n..]))
}
