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

use fleetscore_core::reading;
pub use fleetscore_table::windows::Stats;
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
    /// `i64::MAX`: readings never move the watermark; only [`Engine::advance`] does (a file,
    /// whose windows all close at its end).
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
        ts.saturating_sub(self.size_ms).div_euclid(self.hop_ms) * self.hop_ms + self.hop_ms
    }

    /// The start of the last window that contains `ts`.
    fn last_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.hop_ms) * self.hop_ms
    }

    /// The lowest watermark that closes a window after `through`.
    fn next_close(&self, through: i64) -> i64 {
        let w = i128::from(through)
            + i128::from(self.hop_ms)
            + i128::from(self.size_ms)
            + i128::from(self.lateness_ms);
        i64::try_from(w).unwrap_or(i64::MAX)
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

/// Statistics of values in time order (not empty): the sample std in two passes (mean, then
/// the sum of squared deviations).
fn stats_of(values: impl Iterator<Item = f64> + Clone) -> Stats {
    let (mut n, mut sum, mut min, mut max) = (0usize, 0.0, f64::INFINITY, f64::NEG_INFINITY);
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    for v in values.clone() {
        if n == 0 {
            first = v;
        }
        last = v;
        n += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    let mean = sum / n as f64;
    let std = if n > 1 {
        let ss: f64 = values.map(|v| (v - mean) * (v - mean)).sum();
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
        first,
        last,
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
    /// Readings the log's retention deleted before they were read (skipped, and said so).
    pub deleted: u64,
}

struct Series {
    device: Box<str>,
    tag: Box<str>,
    partition: u32,
    range: Option<Range>,
}

/// A reading held for open windows.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    ts: i64,
    value: f64,
    series: u32,
}

#[derive(Debug, Clone, Default)]
struct PartState {
    watermark: i64,
    max_ts: i64,
    /// Windows starting at or before this are closed.
    closed_through: i64,
    /// Readings of open windows, in arrival order: appended as they come (one sequential
    /// write per reading, however many series are interleaved), grouped by series only when
    /// windows close.
    open: Vec<Entry>,
    /// The smallest time in `open` (`i64::MAX` when empty).
    min_open: i64,
    /// The lowest watermark that closes another window.
    next_close: i64,
}

impl PartState {
    fn new() -> PartState {
        PartState {
            watermark: i64::MIN,
            max_ts: i64::MIN,
            closed_through: i64::MIN,
            open: Vec::new(),
            min_open: i64::MAX,
            next_close: i64::MIN,
        }
    }
}

/// Fx-style hashing (multiply and rotate over 8-byte words), keyed per process: series keys
/// are short and looked up once per reading, where SipHash costs more than the rest.
#[derive(Clone)]
struct FastHash(u64);

impl Default for FastHash {
    fn default() -> FastHash {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        FastHash(*SEED.get_or_init(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
        }))
    }
}

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The state machine. See the module documentation.
pub struct Engine {
    config: Config,
    series: Vec<Series>,
    index: HashMap<Box<[u8]>, u32, FastHash>,
    parts: Vec<PartState>,
    counters: Counters,
    closed: Vec<Closed>,
    late: Vec<Late>,
    /// Scratch for closing: a slot per series (`u32::MAX` when unused), and a key buffer.
    slots: Vec<u32>,
    key: Vec<u8>,
}

impl Engine {
    /// A fresh engine over `partitions` partitions.
    pub fn new(config: Config, partitions: u32) -> Result<Engine> {
        config.check()?;
        Ok(Engine {
            config,
            series: Vec::new(),
            index: HashMap::default(),
            parts: (0..partitions).map(|_| PartState::new()).collect(),
            counters: Counters::default(),
            closed: Vec::new(),
            late: Vec::new(),
            slots: Vec::new(),
            key: Vec::new(),
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

    /// The newest event time a partition has seen (`None` before its first reading).
    pub fn newest(&self, partition: u32) -> Option<i64> {
        let p = &self.parts[partition as usize];
        (p.max_ts != i64::MIN).then_some(p.max_ts)
    }

    /// In a partition that has seen readings, the start of the first window not yet closed
    /// (`None` before its first reading).
    pub fn open_from(&self, partition: u32) -> Option<i64> {
        let p = &self.parts[partition as usize];
        (p.max_ts != i64::MIN).then(|| p.closed_through.saturating_add(self.config.hop_ms))
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

    /// Every series' rank in (device, tag) order, indexed by series.
    pub fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.series.len() as u32).collect();
        order.sort_by(|&a, &b| self.ids(a).cmp(&self.ids(b)));
        let mut rank = vec![0; order.len()];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
    }

    /// Readings held for open windows.
    pub fn buffered(&self) -> usize {
        self.parts.iter().map(|p| p.open.len()).sum()
    }

    /// The series of a device and tag, created (in `partition`) on first use.
    pub fn series_id(&mut self, partition: u32, device: &str, tag: &str) -> u32 {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        for id in [device, tag] {
            key.extend_from_slice(&(id.len() as u16).to_le_bytes());
            key.extend_from_slice(id.as_bytes());
        }
        let id = match self.index.get(key.as_slice()) {
            Some(&id) => id,
            None => self.add_series(partition, key.as_slice().into(), device, tag),
        };
        self.key = key;
        id
    }

    fn add_series(&mut self, partition: u32, key: Box<[u8]>, device: &str, tag: &str) -> u32 {
        let id = self.series.len() as u32;
        self.series.push(Series {
            device: device.into(),
            tag: tag.into(),
            partition,
            range: self.config.filters.ranges.get(tag).copied(),
        });
        self.slots.push(u32::MAX);
        self.index.insert(key, id);
        id
    }

    /// Counts readings that were deleted from the log before they could be read.
    pub fn count_deleted(&mut self, readings: u64) {
        self.counters.deleted += readings;
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
        let s = &self.series[series as usize];
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
        let partition = s.partition;
        let p = &mut self.parts[partition as usize];
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
        p.open.push(Entry { ts, value, series });
        p.min_open = p.min_open.min(ts);
        if ts > p.max_ts {
            p.max_ts = ts;
            // `delay_ms == i64::MAX`: the watermark moves only when told (a file).
            if self.config.delay_ms != i64::MAX {
                let wm = ts.saturating_sub(self.config.delay_ms);
                if wm >= p.next_close {
                    self.advance(partition, wm);
                } else if wm > p.watermark {
                    p.watermark = wm;
                }
            }
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
            p.next_close = self.config.next_close(p.closed_through);
            return;
        }
        let after = p.closed_through;
        p.closed_through = through;
        p.next_close = self.config.next_close(through);
        if self.config.first_start(p.min_open) <= through {
            self.close(partition, after, through);
        }
    }

    /// Whether raising `partition`'s watermark to `watermark` would close a window.
    pub fn would_close(&self, partition: u32, watermark: i64) -> bool {
        let p = &self.parts[partition as usize];
        let through = self.config.closed_through(watermark.max(p.watermark));
        through > p.closed_through && self.config.first_start(p.min_open) <= through
    }

    /// Emits the windows of `partition` that start in `(after, through]` and hold readings,
    /// and forgets readings all of whose windows are closed.
    fn close(&mut self, partition: u32, after: i64, through: i64) {
        let config = &self.config;
        let p = &mut self.parts[partition as usize];
        let closing = |e: &Entry| config.first_start(e.ts) <= through;
        // Group the readings of closing windows by series, keeping arrival order within each
        // (a counting sort): slots in order of first appearance.
        let mut touched: Vec<u32> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for e in p.open.iter().filter(|e| closing(e)) {
            let slot = &mut self.slots[e.series as usize];
            if *slot == u32::MAX {
                *slot = touched.len() as u32;
                touched.push(e.series);
                counts.push(0);
            }
            counts[*slot as usize] += 1;
        }
        let mut at = Vec::with_capacity(counts.len());
        let mut sum = 0;
        for c in &counts {
            at.push(sum);
            sum += c;
        }
        let mut grouped = Vec::with_capacity(sum);
        grouped.resize(sum, Entry::default());
        for e in p.open.iter().filter(|e| closing(e)) {
            let slot = self.slots[e.series as usize] as usize;
            grouped[at[slot]] = *e;
            at[slot] += 1;
        }
        // What stays: readings also in a window still open.
        let mut min_open = i64::MAX;
        p.open.retain(|e| {
            let keep = config.last_start(e.ts) > through;
            if keep {
                min_open = min_open.min(e.ts);
            }
            keep
        });
        if p.open.capacity() > 4 * p.open.len().max(1024) {
            p.open.shrink_to(2 * p.open.len());
        }
        p.min_open = min_open;
        let mut start = 0;
        for (slot, &series) in touched.iter().enumerate() {
            self.slots[series as usize] = u32::MAX;
            let end = start + counts[slot];
            let group = &mut grouped[start..end];
            start = end;
            // Stable: among readings of one time, the first to arrive stays first.
            sort_nearly_sorted(group);
            let mut n = group.len();
            if config.filters.drop_repeats {
                let mut w = 1;
                for r in 1..n {
                    if group[r].ts != group[w - 1].ts {
                        group[w] = group[r];
                        w += 1;
                    } else if config.last_start(group[r].ts) <= through {
                        // Counted once, when the reading is forgotten.
                        self.counters.repeats += 1;
                    }
                }
                n = w;
            }
            let group = &group[..n];
            let mut window = config.first_start(group[0].ts);
            if after != i64::MIN {
                window = window.max(after + config.hop_ms);
            }
            let mut lo = 0;
            while window <= through && lo < n {
                let end = window + config.size_ms;
                lo += group[lo..].partition_point(|e| e.ts < window);
                if lo == n {
                    break;
                }
                if group[lo].ts >= end {
                    // No reading in this window: jump to the first window of the next one.
                    window = config.first_start(group[lo].ts).max(window + config.hop_ms);
                    continue;
                }
                let hi = lo + group[lo..].partition_point(|e| e.ts < end);
                self.closed.push(Closed {
                    series,
                    start: window,
                    end,
                    stats: stats_of(group[lo..hi].iter().map(|e| e.value)),
                });
                self.counters.windows += 1;
                window += config.hop_ms;
            }
        }
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
        let mut out = Vec::with_capacity(64 + self.buffered() * 20);
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
            c.deleted,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        // The series readings are held for, numbered in order of first appearance.
        let mut number: HashMap<u32, u32> = HashMap::new();
        let mut held = Vec::new();
        for p in &self.parts {
            for e in &p.open {
                number.entry(e.series).or_insert_with(|| {
                    held.push(e.series);
                    held.len() as u32 - 1
                });
            }
        }
        out.extend_from_slice(&(held.len() as u64).to_le_bytes());
        for &id in &held {
            let s = &self.series[id as usize];
            out.extend_from_slice(&s.partition.to_le_bytes());
            out.extend_from_slice(&reading::series_key(&s.device, &s.tag));
        }
        for p in &self.parts {
            out.extend_from_slice(&(p.open.len() as u64).to_le_bytes());
            for e in &p.open {
                out.extend_from_slice(&number[&e.series].to_le_bytes());
                out.extend_from_slice(&e.ts.to_le_bytes());
                out.extend_from_slice(&e.value.to_le_bytes());
            }
        }
        out
    }

    /// An engine in the state [`Engine::snapshot`] saved.
    pub fn restore(config: Config, bytes: &[u8]) -> Result<Engine> {
        let mut r = Bytes { b: bytes, at: 0 };
        let partitions = r.u32()?;
        if partitions as usize > bytes.len() / 24 {
            return Err(r.corrupt("more partitions than bytes"));
        }
        let mut engine = Engine::new(config, partitions)?;
        for p in &mut engine.parts {
            p.watermark = r.i64()?;
            p.max_ts = r.i64()?;
            p.closed_through = r.i64()?;
            p.next_close = engine.config.next_close(p.closed_through);
        }
        let c = &mut engine.counters;
        for v in [
            &mut c.readings,
            &mut c.late,
            &mut c.nan,
            &mut c.out_of_range,
            &mut c.repeats,
            &mut c.windows,
            &mut c.deleted,
        ] {
            *v = r.u64()?;
        }
        let held = r.u64()?;
        if held > (bytes.len() / 8) as u64 {
            return Err(r.corrupt("more series than bytes"));
        }
        let mut ids = Vec::with_capacity(held as usize);
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
            ids.push(engine.add_series(partition, key.into(), device, tag));
        }
        for p in 0..partitions as usize {
            let n = r.u64()? as usize;
            if n > (bytes.len() - r.at) / 20 {
                return Err(r.corrupt("more readings than bytes left"));
            }
            let mut open = Vec::with_capacity(n);
            let mut min_open = i64::MAX;
            for _ in 0..n {
                let i = r.u32()? as usize;
                let series = *ids
                    .get(i)
                    .ok_or_else(|| r.corrupt("a reading of an unknown series"))?;
                if engine.series[series as usize].partition as usize != p {
                    return Err(r.corrupt("a reading in another partition than its series"));
                }
                let ts = r.i64()?;
                let value = f64::from_bits(r.u64()?);
                min_open = min_open.min(ts);
                open.push(Entry { ts, value, series });
            }
            engine.parts[p].open = open;
            engine.parts[p].min_open = min_open;
        }
        if r.at != bytes.len() {
            return Err(r.corrupt("bytes after the last reading"));
        }
        Ok(engine)
    }
}

/// Sorts readings by time, stably. Readings arrive nearly in order (a few out of place by a
/// little), where insertion sort costs one pass plus the displacements; if those exceed a
/// budget, a general stable sort finishes the job.
fn sort_nearly_sorted(group: &mut [Entry]) {
    let mut budget = 8 * group.len() + 64;
    for i in 1..group.len() {
        let e = group[i];
        let mut j = i;
        while j > 0 && group[j - 1].ts > e.ts {
            if budget == 0 {
                group.sort_by_key(|e| e.ts);
                return;
            }
            budget -= 1;
            group[j] = group[j - 1];
            j -= 1;
        }
        group[j] = e;
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
