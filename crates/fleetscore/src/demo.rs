//! `fleetscore up --demo`: a live fleet in a minute. The reference architecture's sample fleet
//! (3 devices × 5 sensors, its sensor data and its 15 scikit-learn models, MIT licensed, in
//! `crates/models/tests/data/reference` with their licence) ships inside the binary. Simulated
//! devices post its readings to the ingest endpoint, time-shifted to now and `--speed` times
//! faster than real time; `--devices N` more devices replay the same per-sensor behaviour with
//! their own noise and injected anomalies (spikes and level shifts), each scored by its tag's
//! reference model.
//!
//! The simulation is a pure function of (device, event time), and its clock and progress are
//! kept in `demo.json` beside the store: killed and restarted, it goes on from the last reading
//! the ingest endpoint acknowledged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fleetscore_core::now_ms;
use fleetscore_jobs::coordinator::Coordinator;
use fleetscore_jobs::coordinator::schedules::ScheduleRow;
use fleetscore_jobs::registry::{Importer, NewModel};
use fleetscore_schedule::spec::{Schedule, Trigger};
use fleetscore_store::Store;
use serde::{Deserialize, Serialize};

macro_rules! reference {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/tests/data/reference/",
            $path
        ))
    };
}

/// The reference fleet's sensor data (`TS,Device,Tag,Value`).
const SENSOR_DATA: &[u8] = reference!("sensor_data.csv");

/// The reference fleet's models, `model_{device}_{tag}`.
const MODELS: [(&str, &str, &[u8]); 15] = [
    ("1", "1", reference!("models/model_1_1")),
    ("1", "2", reference!("models/model_1_2")),
    ("1", "3", reference!("models/model_1_3")),
    ("1", "4", reference!("models/model_1_4")),
    ("1", "5", reference!("models/model_1_5")),
    ("2", "1", reference!("models/model_2_1")),
    ("2", "2", reference!("models/model_2_2")),
    ("2", "3", reference!("models/model_2_3")),
    ("2", "4", reference!("models/model_2_4")),
    ("2", "5", reference!("models/model_2_5")),
    ("3", "1", reference!("models/model_3_1")),
    ("3", "2", reference!("models/model_3_2")),
    ("3", "3", reference!("models/model_3_3")),
    ("3", "4", reference!("models/model_3_4")),
    ("3", "5", reference!("models/model_3_5")),
];

/// The licence the reference fleet's data and models come under.
pub const LICENSE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/tests/data/reference/LICENSE"
));

/// About how many readings one request of the simulator carries at most.
const READINGS_PER_REQUEST: usize = 50_000;

/// The schedule `--demo` adds.
pub const SCHEDULE: &str = "demo";

/// One recorded reading: its time from the data's first, its sensor (index into `SENSORS`
/// order: device 1..3 × tag 1..5) and value.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    offset_ms: i64,
    sensor: usize,
    value: f64,
}

/// The reference data, parsed once.
struct Data {
    readings: Vec<Recorded>,
    /// The replay period: the data's span, rounded up to whole minutes, plus a minute.
    period_ms: i64,
    /// Each sensor's standard deviation (noise and anomalies are scaled by it).
    sigma: [f64; 15],
}

fn data() -> Result<Data> {
    let text = std::str::from_utf8(SENSOR_DATA).context("the embedded sensor data")?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [ts, device, tag, value] = f[..] else {
            bail!("the embedded sensor data: bad line {line:?}");
        };
        let ts = fleetscore_core::parse_time(ts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (d, t): (usize, usize) = (device.parse()?, tag.parse()?);
        rows.push((ts, (d - 1) * 5 + (t - 1), value.parse::<f64>()?));
    }
    let first = rows.iter().map(|r| r.0).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.0).max().unwrap_or(0);
    let mut readings: Vec<Recorded> = rows
        .iter()
        .map(|&(ts, sensor, value)| Recorded {
            offset_ms: ts - first,
            sensor,
            value,
        })
        .collect();
    readings.sort_by_key(|r| (r.offset_ms, r.sensor));
    let mut sigma = [0.0; 15];
    for (s, sd) in sigma.iter_mut().enumerate() {
        let v: Vec<f64> = readings
            .iter()
            .filter(|r| r.sensor == s)
            .map(|r| r.value)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
        *sd = var.sqrt().max(0.01);
    }
    let minute = 60_000;
    let period_ms = (last - first).div_euclid(minute) * minute + 2 * minute;
    Ok(Data {
        readings,
        period_ms,
        sigma,
    })
}

/// The simulation's clock and progress, kept beside the store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct State {
    /// Wall-clock time the event clock was last based at, epoch ms.
    wall_base_ms: i64,
    /// Event time at that instant, epoch ms.
    event_base_ms: i64,
    /// Event time runs this many times faster than the wall clock.
    speed: f64,
    /// Every reading with an event time before this was acknowledged by the ingest endpoint.
    sent_until_ms: i64,
}

impl State {
    fn event_now(&self, wall_ms: i64) -> i64 {
        self.event_base_ms + ((wall_ms - self.wall_base_ms) as f64 * self.speed) as i64
    }
}

/// The simulator.
pub struct Demo {
    data: Data,
    state: State,
    path: PathBuf,
    devices: usize,
}

/// A synthetic device's name.
fn synthetic(i: usize) -> String {
    format!("sim-{i:05}")
}

impl Demo {
    /// The simulator, going on from `dir/demo.json` when a run before left one (at `speed`
    /// from now on), else starting its event clock at now.
    pub fn open(dir: &Path, speed: f64, devices: usize) -> Result<Demo> {
        if !(speed.is_finite() && speed > 0.0) {
            bail!("--speed must be a positive number, not {speed}");
        }
        let path = dir.join("demo.json");
        let now = now_ms();
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let old: State = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} does not parse", path.display()))?;
                // Rebased: the event clock goes on from where it is, at the speed asked now.
                State {
                    wall_base_ms: now,
                    event_base_ms: old.event_now(now).max(old.sent_until_ms),
                    speed,
                    sent_until_ms: old.sent_until_ms,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                wall_base_ms: now,
                event_base_ms: now,
                speed,
                sent_until_ms: now,
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let demo = Demo {
            data: data()?,
            state,
            path,
            devices,
        };
        demo.save()?;
        Ok(demo)
    }

    fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.state)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// The event clock now.
    pub fn event_now(&self) -> i64 {
        self.state.event_now(now_ms())
    }

    /// Imports the demo's models (the reference fleet's, and each synthetic device's tags'
    /// reference models) and adds the schedule that scores each event hour as its windows close
    /// (unless there is one).
    pub fn setup(&self, store: &Store, coordinator: &dyn Coordinator) -> Result<usize> {
        let mut importer = Importer::new(store);
        let mut n = 0;
        for (device, tag, bytes) in MODELS {
            importer.add(&NewModel {
                device,
                tag,
                bytes,
                source: &format!("reference fleet model_{device}_{tag}"),
                features: None,
            })?;
            n += 1;
        }
        for i in 0..self.devices {
            let name = synthetic(i);
            for (_, tag, bytes) in MODELS.iter().skip((i % 3) * 5).take(5) {
                importer.add(&NewModel {
                    device: &name,
                    tag,
                    bytes,
                    source: &format!("reference fleet model_{}_{tag}", i % 3 + 1),
                    features: None,
                })?;
                n += 1;
            }
            if importer.staged() >= 10_000 {
                importer.commit()?;
            }
        }
        importer.finish()?;
        if coordinator.schedule(SCHEDULE)?.is_none() {
            let hour = 3_600_000;
            let start = self.state.event_base_ms.div_euclid(hour) * hour;
            let mut def = Schedule::every(
                SCHEDULE,
                Duration::from_secs(3_600),
                Duration::from_secs(3_600),
                start,
            );
            def.trigger = Trigger::Watermark;
            def.max_active = 2;
            def.check()?;
            let now = now_ms();
            coordinator.add_schedule(&ScheduleRow {
                name: SCHEDULE.into(),
                definition: serde_json::to_string(&def)?,
                paused: false,
                cursor_ms: None,
                created_ms: now,
                updated_ms: now,
            })?;
        }
        Ok(n)
    }

    /// The readings with event times in `[from, to)`, as JSON lines.
    fn readings(&self, from: i64, to: i64, out: &mut String) -> usize {
        let period = self.data.period_ms;
        let base = self.state.event_base_ms;
        let mut n = 0;
        // Replays of the data, each `period` long, from the event base on.
        let first_cycle = (from - base).div_euclid(period);
        let last_cycle = (to - base).div_euclid(period);
        for cycle in first_cycle..=last_cycle {
            let cycle_start = base + cycle * period;
            let lo = from - cycle_start;
            let hi = to - cycle_start;
            let start = self.data.readings.partition_point(|r| r.offset_ms < lo);
            for r in self.data.readings[start..]
                .iter()
                .take_while(|r| r.offset_ms < hi)
            {
                let ts = cycle_start + r.offset_ms;
                let (device, tag) = (r.sensor / 5 + 1, r.sensor % 5 + 1);
                line(out, &device.to_string(), tag, ts, r.value);
                n += 1;
                for i in (0..self.devices).filter(|i| i % 3 + 1 == device) {
                    let value = self.synthetic_value(i, r.sensor, ts, r.value);
                    line(out, &synthetic(i), tag, ts, value);
                    n += 1;
                }
            }
        }
        n
    }

    /// A synthetic device's reading: the reference value, its own noise, a rare spike, and a
    /// level shift in some of its hours; a pure function of (device, sensor, time).
    fn synthetic_value(&self, device: usize, sensor: usize, ts: i64, value: f64) -> f64 {
        let sigma = self.data.sigma[sensor];
        let h = mix(device as u64, sensor as u64, ts as u64);
        let noise = gaussian(h) * 0.2 * sigma;
        let spike = if h.is_multiple_of(1_000) {
            (if h & (1 << 20) == 0 { 6.0 } else { -6.0 }) * sigma
        } else {
            0.0
        };
        // One event hour in twenty shifts this device's level by 4 sigma.
        let hour = ts.div_euclid(3_600_000) as u64;
        let shift = if mix(device as u64, 0xfeed, hour).is_multiple_of(20) {
            4.0 * sigma
        } else {
            0.0
        };
        ((value + noise + spike + shift) * 100.0).round() / 100.0
    }

    /// The event time one request covers at most: a minute, or less for a fleet so large that
    /// a minute of its readings would not make a request of about [`READINGS_PER_REQUEST`]
    /// (ingest refuses bodies over 16 MiB; a reading is about 70 bytes of JSON).
    fn request_span_ms(&self) -> i64 {
        // Each recorded reading is posted for its device and for a third of the simulated ones.
        let per_period = self.data.readings.len() as f64 * (1.0 + self.devices as f64 / 3.0);
        let per_ms = per_period / self.data.period_ms.max(1) as f64;
        ((READINGS_PER_REQUEST as f64 / per_ms) as i64).clamp(250, 60_000)
    }

    /// Posts readings to `addr` as the event clock moves, until `stop`.
    pub fn run(mut self, addr: SocketAddr, stop: &AtomicBool) -> Result<()> {
        let mut body = String::new();
        let max_span = self.request_span_ms();
        let mut span = max_span;
        'steps: while !stop.load(Ordering::Relaxed) {
            let now = self.event_now();
            // At most `span` of event time per request, so a catch-up (after a restart, or the
            // minutes a large fleet's models take to import) goes in requests the endpoint
            // takes; the reference data's readings come in bursts at one instant, so a span
            // that turns out too full is halved, and grows back after.
            let to = now.min(self.state.sent_until_ms + span);
            if to > self.state.sent_until_ms {
                body.clear();
                let n = self.readings(self.state.sent_until_ms, to, &mut body);
                if n > READINGS_PER_REQUEST && to - self.state.sent_until_ms > 1 {
                    span = ((to - self.state.sent_until_ms) / 2).max(1);
                    continue;
                }
                // One instant with more readings than a request takes goes in several.
                for chunk in chunks(&body, READINGS_PER_REQUEST) {
                    loop {
                        match post(addr, chunk) {
                            Ok(()) => break,
                            Err(e) if stop.load(Ordering::Relaxed) => {
                                tracing::debug!("demo: {e} while stopping");
                                break 'steps;
                            }
                            Err(e) => {
                                tracing::warn!("demo: posting readings: {e}; trying again");
                                std::thread::sleep(Duration::from_millis(500));
                            }
                        }
                    }
                }
                self.state.sent_until_ms = to;
                self.save()?;
                span = (span * 2).min(max_span);
            }
            if to == now {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Ok(())
    }
}

/// `body` (JSON lines) in pieces of at most `lines` lines each.
fn chunks(body: &str, lines: usize) -> impl Iterator<Item = &str> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .match_indices('\n')
            .nth(lines.max(1) - 1)
            .map_or(rest.len(), |(i, _)| i + 1);
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

fn line(out: &mut String, device: &str, tag: usize, ts: i64, value: f64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        r#"{{"device":"{device}","tag":"{tag}","ts":{ts},"value":{value}}}"#
    );
}

/// A well-mixed 64-bit hash of three numbers (splitmix64 steps).
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut x = a
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(b.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(c.wrapping_mul(0x94d0_49bb_1331_11eb));
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A standard normal number from a hash (Box-Muller on its two halves).
fn gaussian(h: u64) -> f64 {
    let u1 = ((h >> 32) as f64 + 1.0) / 4_294_967_297.0;
    let u2 = (h & 0xffff_ffff) as f64 / 4_294_967_296.0;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// POSTs JSON lines to the ingest endpoint; Ok when every reading was accepted.
fn post(addr: SocketAddr, body: &str) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /v1/readings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!(
            "ingest answered {status}: {}",
            answer.split("\r\n\r\n").nth(1).unwrap_or("").trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_fleet_replays_in_order_and_synthetic_devices_follow_it() {
        let dir = std::env::temp_dir().join(format!("fleetscore-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let demo = Demo::open(&dir, 60.0, 3).unwrap();
        assert_eq!(demo.data.readings.len(), 17_768);
        let base = demo.state.event_base_ms;
        let mut out = String::new();
        let n = demo.readings(base, base + demo.data.period_ms, &mut out);
        // One replay: every reading once, and each synthetic device (one per reference device
        // here) copies its reference device's.
        assert_eq!(n, 2 * 17_768);
        let mut again = String::new();
        demo.readings(base, base + demo.data.period_ms, &mut again);
        assert_eq!(out, again, "a pure function of time");
        // Split at any point, the same readings.
        let mut split = String::new();
        let mid = base + 1_234_567;
        demo.readings(base, mid, &mut split);
        demo.readings(mid, base + demo.data.period_ms, &mut split);
        assert_eq!(out, split);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_request_stays_within_what_ingest_takes_however_large_the_fleet() {
        let dir = std::env::temp_dir().join(format!("fleetscore-demo-span-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body_limit = fleetscore_ingest::server::Config::default().max_body_bytes;
        for devices in [0, 10_000, 40_000, 200_000] {
            let _ = std::fs::remove_file(dir.join("demo.json"));
            let demo = Demo::open(&dir, 60.0, devices).unwrap();
            let span = demo.request_span_ms();
            // Any span-long stretch of a replay: the busiest one bounds a request.
            let base = demo.state.event_base_ms;
            let mut busiest = 0;
            let mut body = String::new();
            for k in 0..8 {
                body.clear();
                let from = base + k * demo.data.period_ms / 8;
                let n = demo.readings(from, from + span, &mut body);
                let pieces: Vec<&str> = chunks(&body, READINGS_PER_REQUEST).collect();
                assert_eq!(pieces.concat(), body, "the pieces are the body");
                assert!(pieces.len() >= n.div_ceil(READINGS_PER_REQUEST));
                for p in pieces {
                    assert!(p.lines().count() <= READINGS_PER_REQUEST);
                    busiest = busiest.max(p.len());
                }
            }
            assert!(busiest < body_limit, "{devices} devices: {busiest} bytes");
            if devices == 0 {
                assert_eq!(span, 60_000, "a small fleet posts a minute at a time");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
