//! The aggregation state machine: readings in, in log order; closed windows and late readings
//! out. No I/O and no clock: what it produces depends only on the readings it is given, in
//! their order, and on the watermarks it is told to advance to — so replaying the same input
//! from a snapshot produces the same output.
//!
//! Each series (device, tag) buffers the readings of its open windows. Windows start at
//! multiples of the hop and last the window size (tumbling when the two are equal). A
//! partition's watermark is the largest event time seen in it minus the allowed delay (or
//! higher, when the caller advances it, e.g. after an idle timeout); a window closes as soon as
//! the watermark reaches its end plus the allowed lateness. Closing sorts the series' buffer by
//! event time, drops exact repeats of a time (the first to arrive is kept), and computes the
//! window's statistics over the readings in it.

use std::collections::{BTreeMap, HashMap};

use fleetscore_ingest::reading;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A value range for one tag's readings (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Smallest value kept.
    pub min: f64,
    /// Largest value kept.
    pub max: f64,
}

/// Which readings are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Per tag: readings outside the range are dropped (and counted).
    pub ranges: BTreeMap<String, Range>,
    /// Drop NaN values (ingest refuses non-finite values, but other producers may not).
    pub drop_nan: bool,
    /// Drop a reading whose (device, tag, ts) was already seen; the first to arrive is kept.
    pub drop_repeats: bool,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            ranges: BTreeMap::new(),
            drop_nan: true,
            drop_repeats: true,
        }
    }
}

/// Windows and watermarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Window length, milliseconds.
    pub size_ms: i64,
    /// Distance between window starts (equal to the size for tumbling windows).
    pub hop_ms: i64,
    /// Allowed out-of-order delay: the watermark trails the largest event time by this much.
    pub delay_ms: i64,
    /// Allowed lateness: a window closes when the watermark passes its end plus this.
    pub lateness_ms: i64,
    /// A partition without new readings for this long (wall clock) has its watermark moved to
    /// the clock minus this, so its last windows close.
    pub idle_timeout_ms: i64,
    /// Which readings are kept.
    pub filters: Filters,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            size_ms: 60_000,
            hop_ms: 60_000,
            delay_ms: 10_000,
            lateness_ms: 0,
            idle_timeout_ms: 60_000,
            filters: Filters::default(),
        }
    }
}

impl Config {
    /// Checks the configuration; errors name the setting.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.size_ms <= 0 {
            return bad(format!(
                "the window size must be positive, not {} ms",
                self.size_ms
            ));
        }
        if self.hop_ms <= 0 || self.hop_ms > self.size_ms {
            return bad(format!(
                "the hop must be positive and at most the window size ({} ms), not {} ms",
                self.size_ms, self.hop_ms
            ));
        }
        if self.size_ms / self.hop_ms > 1_000 {
            return bad(format!(
                "a reading would fall in {} windows (size {} ms / hop {} ms); at most 1,000",
                self.size_ms / self.hop_ms,
                self.size_ms,
                self.hop_ms
            ));
        }
        for (name, v) in [
            ("delay", self.delay_ms),
            ("lateness", self.lateness_ms),
            ("idle timeout", self.idle_timeout_ms),
        ] {
            if v < 0 {
                return bad(format!("the {name} must not be negative, not {v} ms"));
            }
        }
        for (tag, r) in &self.filters.ranges {
            if r.min.is_nan() || r.max.is_nan() || r.min > r.max {
                return bad(format!(
                    "the range for tag `{tag}` is empty or not a number: {}..{}",
                    r.min, r.max
                ));
            }
        }
        Ok(())
    }

    /// The start of the first window that contains `ts`.
    fn first_start(&self, ts: i64) -> i64 {
        (ts - self.size_ms).div_euclid(self.hop_ms) * self.hop_ms + self.hop_ms
    }

    /// The start of the last window that contains `ts`.
    fn last_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.hop_ms) * self.hop_ms
    }

    /// The start of the last window a watermark closes (`i64::MIN` when none).
    fn closed_through(&self, watermark: i64) -> i64 {
        if watermark == i64::MIN {
            return i64::MIN;
        }
        let limit = i128::from(watermark) - i128::from(self.lateness_ms) - i128::from(self.size_ms);
        let hop = i128::from(self.hop_ms);
        let start = limit.div_euclid(hop) * hop;
        i64::try_from(start).unwrap_or(if start < 0 { i64::MIN } else { i64::MAX })
    }
}

/// A closed window's statistics over the readings in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Readings in the window (after filters and repeats).
    pub count: i64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sample standard deviation (n − 1), computed in two passes; NaN for one reading.
    pub std: f64,
    /// The value with the earliest event time.
    pub first: f64,
    /// The value with the latest event time.
    pub last: f64,
}

impl Stats {
    /// Statistics of readings sorted by time (not empty).
    pub fn of(rows: &[(i64, f64)]) -> Stats {
        let n = rows.len();
        let (mut sum, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
        for &(_, v) in rows {
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        let mean = sum / n as f64;
        let std = if n > 1 {
            let ss: f64 = rows.iter().map(|&(_, v)| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        Stats {
            count: n as i64,
            mean,
            min,
            max,
            std,
            first: rows[0].1,
            last: rows[n - 1].1,
        }
    }
}

/// A closed window of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Closed {
    /// The series ([`Engine::ids`]).
    pub series: u32,
    /// Window start (inclusive), epoch milliseconds.
    pub start: i64,
    /// Window end (exclusive).
    pub end: i64,
    /// Its statistics.
    pub stats: Stats,
}

/// A reading that arrived after (some of) its windows had closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Late {
    /// The series ([`Engine::ids`]).
    pub series: u32,
    /// Its log offset (or row number for a file).
    pub offset: u64,
    /// Event time.
    pub ts: i64,
    /// Value.
    pub value: f64,
    /// Its partition's watermark when it arrived.
    pub watermark: i64,
}

/// What was kept and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Readings given.
    pub readings: u64,
    /// Readings after (some of) their windows closed (kept in the late readings).
    pub late: u64,
    /// NaN values dropped.
    pub nan: u64,
    /// Values outside their tag's range, dropped.
    pub out_of_range: u64,
    /// Exact (device, tag, ts) repeats dropped.
    pub repeats: u64,
    /// Windows closed.
    pub windows: u64,
}

struct Series {
    device: Box<str>,
    tag: Box<str>,
    partition: u32,
    range: Option<Range>,
    /// Readings of open windows, in arrival order until sorted.
    buf: Vec<(i64, f64)>,
    sorted: bool,
}

#[derive(Debug, Clone, Copy)]
struct PartState {
    watermark: i64,
    max_ts: i64,
    /// Windows starting at or before this are closed.
    closed_through: i64,
}

impl Default for PartState {
    fn default() -> PartState {
        PartState {
            watermark: i64::MIN,
            max_ts: i64::MIN,
            closed_through: i64::MIN,
        }
    }
}

/// The state machine. See the module documentation.
pub struct Engine {
    config: Config,
    series: Vec<Series>,
    index: HashMap<Box<[u8]>, u32>,
    parts: Vec<PartState>,
    by_part: Vec<Vec<u32>>,
    counters: Counters,
    closed: Vec<Closed>,
    late: Vec<Late>,
}

impl Engine {
    /// A fresh engine over `partitions` partitions.
    pub fn new(config: Config, partitions: u32) -> Result<Engine> {
        config.check()?;
        Ok(Engine {
            config,
            series: Vec::new(),
            index: HashMap::new(),
            parts: vec![PartState::default(); partitions as usize],
            by_part: vec![Vec::new(); partitions as usize],
            counters: Counters::default(),
            closed: Vec::new(),
            late: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What was kept and dropped so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A partition's watermark (`i64::MIN` before its first reading).
    pub fn watermark(&self, partition: u32) -> i64 {
        self.parts[partition as usize].watermark
    }

    /// The device and tag of a series.
    pub fn ids(&self, series: u32) -> (&str, &str) {
        let s = &self.series[series as usize];
        (&s.device, &s.tag)
    }

    /// The partition of a series.
    pub fn partition_of(&self, series: u32) -> u32 {
        self.series[series as usize].partition
    }

    /// Readings held for open windows.
    pub fn buffered(&self) -> usize {
        self.series.iter().map(|s| s.buf.len()).sum()
    }

    /// The series of a device and tag, created (in `partition`) on first use.
    pub fn series_id(&mut self, partition: u32, device: &str, tag: &str) -> u32 {
        let key = reading::series_key(device, tag);
        if let Some(&id) = self.index.get(key.as_slice()) {
            return id;
        }
        self.add_series(partition, key.into_boxed_slice(), device, tag)
    }

    fn add_series(&mut self, partition: u32, key: Box<[u8]>, device: &str, tag: &str) -> u32 {
        let id = self.series.len() as u32;
        self.series.push(Series {
            device: device.into(),
            tag: tag.into(),
            partition,
            range: self.config.filters.ranges.get(tag).copied(),
            buf: Vec::new(),
            sorted: true,
        });
        self.index.insert(key, id);
        self.by_part[partition as usize].push(id);
        id
    }

    /// Takes in one log record (a reading as ingest encodes it) of `partition` at `offset`.
    /// A record that is not a reading is an error naming where it is; nothing changes.
    pub fn push_record(&mut self, partition: u32, offset: u64, record: &[u8]) -> Result<()> {
        let bad = |reason: String| Error::Record {
            partition,
            offset,
            reason,
        };
        if partition as usize >= self.parts.len() {
            return Err(bad(format!(
                "the engine has {} partitions",
                self.parts.len()
            )));
        }
        let v = reading::view(record).map_err(|e| bad(e.0))?;
        let id = match self.index.get(v.series) {
            Some(&id) => id,
            None => {
                let (device, tag) = reading::series_ids(v.series).map_err(|e| bad(e.0))?;
                let (device, tag) = (device.to_owned(), tag.to_owned());
                self.add_series(partition, v.series.into(), &device, &tag)
            }
        };
        self.push(id, offset, v.ts_ms, v.value);
        Ok(())
    }

    /// Takes in one reading of a series.
    pub fn push(&mut self, series: u32, offset: u64, ts: i64, value: f64) {
        self.counters.readings += 1;
        let s = &mut self.series[series as usize];
        if value.is_nan() {
            if self.config.filters.drop_nan {
                self.counters.nan += 1;
                return;
            }
        } else if let Some(r) = s.range
            && !(r.min <= value && value <= r.max)
        {
            self.counters.out_of_range += 1;
            return;
        }
        let p = &mut self.parts[s.partition as usize];
        if self.config.first_start(ts) <= p.closed_through {
            self.counters.late += 1;
            self.late.push(Late {
                series,
                offset,
                ts,
                value,
                watermark: p.watermark,
            });
            if self.config.last_start(ts) <= p.closed_through {
                return;
            }
        }
        if s.buf.last().is_some_and(|&(t, _)| ts < t) {
            s.sorted = false;
        }
        s.buf.push((ts, value));
        if ts > p.max_ts {
            p.max_ts = ts;
            let partition = s.partition;
            self.advance(partition, ts.saturating_sub(self.config.delay_ms));
        }
    }

    /// Raises a partition's watermark to `watermark` (never lowers it) and closes the windows
    /// it passes. `i64::MAX` closes every window of the partition (end of input).
    pub fn advance(&mut self, partition: u32, watermark: i64) {
        let p = &mut self.parts[partition as usize];
        if watermark <= p.watermark {
            return;
        }
        p.watermark = watermark;
        let through = self.config.closed_through(watermark);
        if through <= p.closed_through {
            return;
        }
        let after = p.closed_through;
        p.closed_through = through;
        let ids = std::mem::take(&mut self.by_part[partition as usize]);
        for &id in &ids {
            self.close_series(id, after, through);
        }
        self.by_part[partition as usize] = ids;
    }

    /// Whether raising `partition`'s watermark to `watermark` would close a window.
    pub fn would_close(&self, partition: u32, watermark: i64) -> bool {
        let p = &self.parts[partition as usize];
        let through = self.config.closed_through(watermark.max(p.watermark));
        through > p.closed_through
            && self.by_part[partition as usize].iter().any(|&id| {
                self.series[id as usize]
                    .buf
                    .iter()
                    .any(|&(t, _)| self.config.first_start(t) <= through)
            })
    }

    /// Emits the windows of a series that start in `(after, through]` and hold readings, and
    /// forgets readings all of whose windows are closed.
    fn close_series(&mut self, id: u32, after: i64, through: i64) {
        let config = &self.config;
        let s = &mut self.series[id as usize];
        if s.buf.is_empty() {
            return;
        }
        if !s.sorted {
            // Stable: among readings of one time, the first to arrive stays first.
            s.buf.sort_by_key(|r| r.0);
            s.sorted = true;
        }
        if config.first_start(s.buf[0].0) > through {
            return;
        }
        if config.filters.drop_repeats {
            let before = s.buf.len();
            s.buf.dedup_by_key(|r| r.0);
            self.counters.repeats += (before - s.buf.len()) as u64;
        }
        let buf = &s.buf;
        let mut start = config.first_start(buf[0].0);
        if after != i64::MIN {
            start = start.max(after + config.hop_ms);
        }
        let mut lo = 0;
        while start <= through && lo < buf.len() {
            let end = start + config.size_ms;
            lo += buf[lo..].partition_point(|r| r.0 < start);
            if lo == buf.len() {
                break;
            }
            if buf[lo].0 >= end {
                // No reading in this window: jump to the first window of the next reading.
                start = config.first_start(buf[lo].0).max(start + config.hop_ms);
                continue;
            }
            let hi = lo + buf[lo..].partition_point(|r| r.0 < end);
            self.closed.push(Closed {
                series: id,
                start,
                end,
                stats: Stats::of(&buf[lo..hi]),
            });
            self.counters.windows += 1;
            start += config.hop_ms;
        }
        // A reading whose last window started at or before `through` is in no open window.
        let done = s.buf.partition_point(|r| config.last_start(r.0) <= through);
        s.buf.drain(..done);
    }

    /// Takes the windows closed and the late readings seen since the last call.
    pub fn take(&mut self) -> (Vec<Closed>, Vec<Late>) {
        (
            std::mem::take(&mut self.closed),
            std::mem::take(&mut self.late),
        )
    }

    /// The state (watermarks, counters and every buffered reading) as bytes; closed windows
    /// and late readings not yet taken are not part of it.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.buffered() * 16);
        out.extend_from_slice(&(self.parts.len() as u32).to_le_bytes());
        for p in &self.parts {
            for v in [p.watermark, p.max_ts, p.closed_through] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let c = &self.counters;
        for v in [
            c.readings,
            c.late,
            c.nan,
            c.out_of_range,
            c.repeats,
            c.windows,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let held: Vec<&Series> = self.series.iter().filter(|s| !s.buf.is_empty()).collect();
        out.extend_from_slice(&(held.len() as u64).to_le_bytes());
        for s in held {
            out.extend_from_slice(&s.partition.to_le_bytes());
            out.extend_from_slice(&reading::series_key(&s.device, &s.tag));
            out.push(u8::from(s.sorted));
            out.extend_from_slice(&(s.buf.len() as u64).to_le_bytes());
            for &(t, v) in &s.buf {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// An engine in the state [`Engine::snapshot`] saved.
    pub fn restore(config: Config, bytes: &[u8]) -> Result<Engine> {
        let mut r = Bytes { b: bytes, at: 0 };
        let partitions = r.u32()?;
        let mut engine = Engine::new(config, partitions)?;
        for p in &mut engine.parts {
            p.watermark = r.i64()?;
            p.max_ts = r.i64()?;
            p.closed_through = r.i64()?;
        }
        let c = &mut engine.counters;
        for v in [
            &mut c.readings,
            &mut c.late,
            &mut c.nan,
            &mut c.out_of_range,
            &mut c.repeats,
            &mut c.windows,
        ] {
            *v = r.u64()?;
        }
        let held = r.u64()?;
        for _ in 0..held {
            let partition = r.u32()?;
            if partition >= partitions {
                return Err(r.corrupt("a series in a partition the state does not have"));
            }
            let start = r.at;
            r.id()?;
            r.id()?;
            let key = &bytes[start..r.at];
            let (device, tag) = reading::series_ids(key).map_err(|e| r.corrupt(&e.0))?;
            let sorted = r.take(1)?[0] != 0;
            let n = r.u64()? as usize;
            if n > (bytes.len() - r.at) / 16 {
                return Err(r.corrupt("more readings than bytes left"));
            }
            let id = engine.add_series(partition, key.into(), device, tag);
            let s = &mut engine.series[id as usize];
            s.sorted = sorted;
            s.buf.reserve_exact(n);
            for _ in 0..n {
                let t = r.i64()?;
                let v = f64::from_bits(r.u64()?);
                s.buf.push((t, v));
            }
        }
        if r.at != bytes.len() {
            return Err(r.corrupt("bytes after the last series"));
        }
        Ok(engine)
    }
}

/// A little reader over snapshot bytes.
struct Bytes<'a> {
    b: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn corrupt(&self, reason: &str) -> Error {
        Error::Corrupt(format!("aggregation state, byte {}: {reason}", self.at))
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let out = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| self.corrupt("ends early"))?;
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn id(&mut self) -> Result<()> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as usize;
        self.take(n)?;
        Ok(())
    }
}
