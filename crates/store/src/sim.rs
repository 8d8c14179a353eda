//! A simulated object store's limits, for benchmarks and tests: every request through a
//! [`Store`](crate::Store) waits as it would against a cloud store with a latency per request,
//! a request-rate limit and a bandwidth limit — limits shared by every process that names the
//! same state file, as a storage account's are shared by every machine using it.
//!
//! Set `FLEETSCORE_STORE_SIM` before the process opens its store, e.g.
//! `latency=20ms,requests=200/s,bandwidth=50MB/s,state=/tmp/sim.state`:
//!
//! - `latency`: added to every request (`ms` or `us`); a batch of requests sent together
//!   ([`Store::get_many`](crate::Store::get_many), [`Store::get_ranges`](crate::Store::get_ranges))
//!   pays it once per 32, the requests a store handle keeps in flight.
//! - `requests`: requests per second the store serves, all callers together.
//! - `bandwidth`: bytes per second it moves, reads and writes together (`KB`, `MB`, `GB`: powers
//!   of 1000).
//! - `state`: a file holding the limits' state, locked around every reservation, so that
//!   several processes share one budget. Without it the budget is this process's.
//!
//! A request over the rate waits its turn (the store's throughput is capped) rather than failing
//! as a throttled cloud store's 503 does; a client that backs off and retries ends up at the same
//! throughput, later.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable that turns the simulation on.
pub const ENV: &str = "FLEETSCORE_STORE_SIM";

/// Requests a store handle keeps in flight at once.
const IN_FLIGHT: u64 = 32;

/// The limits of a simulated store, and the state of its budget.
#[derive(Debug)]
pub struct Simulator {
    latency: Duration,
    /// Nanoseconds each request takes of the store's request budget (0: unlimited).
    ns_per_request: f64,
    /// Nanoseconds each byte takes of its bandwidth (0: unlimited).
    ns_per_byte: f64,
    /// The two "theoretical arrival times" (GCRA) — when the request budget and the byte budget
    /// are next free, in nanoseconds since the Unix epoch — in this process or in a shared file.
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Local([u64; 2]),
    Shared(File),
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn parse_duration(v: &str) -> Option<Duration> {
    if let Some(ms) = v.strip_suffix("ms") {
        return ms
            .parse::<f64>()
            .ok()
            .map(|x| Duration::from_secs_f64(x / 1e3));
    }
    if let Some(us) = v.strip_suffix("us") {
        return us
            .parse::<f64>()
            .ok()
            .map(|x| Duration::from_secs_f64(x / 1e6));
    }
    v.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

fn parse_bytes_per_s(v: &str) -> Option<f64> {
    let v = v.strip_suffix("/s")?;
    let (num, scale) = [("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0)]
        .iter()
        .find_map(|(unit, scale)| v.strip_suffix(unit).map(|n| (n, *scale)))?;
    num.parse::<f64>().ok().map(|n| n * scale)
}

impl Simulator {
    /// The simulator `FLEETSCORE_STORE_SIM` describes, if it is set; a malformed value is an
    /// error naming what is wrong.
    pub fn from_env() -> Result<Option<Simulator>, String> {
        match std::env::var(ENV) {
            Ok(spec) if !spec.trim().is_empty() => Simulator::parse(&spec).map(Some),
            _ => Ok(None),
        }
    }

    /// Parses a description such as `latency=20ms,requests=200/s,bandwidth=50MB/s,state=FILE`.
    pub fn parse(spec: &str) -> Result<Simulator, String> {
        let bad = |what: &str| format!("{ENV}={spec:?}: {what}");
        let mut latency = Duration::ZERO;
        let (mut ns_per_request, mut ns_per_byte) = (0.0, 0.0);
        let mut state = State::Local([0, 0]);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(&format!("`{part}` is not key=value")))?;
            match k {
                "latency" => {
                    latency = parse_duration(v)
                        .ok_or_else(|| bad("latency is a duration such as 20ms"))?;
                }
                "requests" => {
                    let rate = v
                        .strip_suffix("/s")
                        .and_then(|n| n.parse::<f64>().ok())
                        .filter(|r| *r > 0.0)
                        .ok_or_else(|| bad("requests is a rate such as 200/s"))?;
                    ns_per_request = 1e9 / rate;
                }
                "bandwidth" => {
                    let rate = parse_bytes_per_s(v)
                        .filter(|r| *r > 0.0)
                        .ok_or_else(|| bad("bandwidth is a rate such as 50MB/s"))?;
                    ns_per_byte = 1e9 / rate;
                }
                "state" => {
                    let file = File::options()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(v)
                        .map_err(|e| bad(&format!("cannot open the state file {v}: {e}")))?;
                    state = State::Shared(file);
                }
                other => {
                    return Err(bad(&format!(
                        "unknown key `{other}` (latency, requests, bandwidth, state)"
                    )));
                }
            }
        }
        Ok(Simulator {
            latency,
            ns_per_request,
            ns_per_byte,
            state: Mutex::new(state),
        })
    }

    /// Reserves `requests` requests moving `bytes` bytes from the budget; returns when the last
    /// of them is served (nanoseconds since the epoch).
    fn reserve(&self, requests: u64, bytes: u64) -> u64 {
        let now = now_ns();
        let costs = [
            (requests as f64 * self.ns_per_request) as u64,
            (bytes as f64 * self.ns_per_byte) as u64,
        ];
        let advance = |tat: &mut [u64; 2]| {
            for (t, cost) in tat.iter_mut().zip(costs) {
                *t = (*t).max(now) + cost;
            }
            tat[0].max(tat[1])
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Local(tat) => advance(tat),
            State::Shared(file) => {
                // Another process's reservation happens entirely before or after this one.
                if file.lock().is_err() {
                    return now;
                }
                let mut raw = [0u8; 16];
                let mut tat = match file.read_exact_at(&mut raw, 0) {
                    Ok(()) => [
                        u64::from_le_bytes(raw[..8].try_into().expect("8 bytes")),
                        u64::from_le_bytes(raw[8..].try_into().expect("8 bytes")),
                    ],
                    Err(_) => [0, 0],
                };
                let done = advance(&mut tat);
                raw[..8].copy_from_slice(&tat[0].to_le_bytes());
                raw[8..].copy_from_slice(&tat[1].to_le_bytes());
                let _ = file.write_all_at(&raw, 0);
                let _ = file.unlock();
                done
            }
        }
    }

    /// Waits as the simulated store makes a caller wait for `requests` requests (sent together)
    /// that move `bytes` bytes: their turn in the shared budget, then the latency.
    pub fn wait(&self, requests: u64, bytes: u64) {
        if requests == 0 {
            return;
        }
        let served = self.reserve(requests, bytes);
        let queued = Duration::from_nanos(served.saturating_sub(now_ns()));
        let waves = requests.div_ceil(IN_FLIGHT) as u32;
        std::thread::sleep(queued + self.latency * waves);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn descriptions_parse_and_mistakes_are_named() {
        let s = Simulator::parse("latency=20ms,requests=200/s,bandwidth=50MB/s").unwrap();
        assert_eq!(s.latency, Duration::from_millis(20));
        assert_eq!(s.ns_per_request, 5e6);
        assert_eq!(s.ns_per_byte, 20.0);
        for (spec, says) in [
            ("latency=20", "latency is a duration"),
            ("requests=fast", "requests is a rate"),
            ("bandwidth=5MiB/s", "bandwidth is a rate"),
            ("colour=blue", "unknown key `colour`"),
            ("latency", "is not key=value"),
        ] {
            let err = Simulator::parse(spec).unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }

    /// The request budget caps throughput: 40 requests at 400/s take at least 0.1 s, and a
    /// second simulator sharing the state file shares the budget.
    #[test]
    fn the_rate_is_shared_through_the_state_file() {
        let dir = std::env::temp_dir().join(format!("fleetscore-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = format!("requests=400/s,state={}", dir.join("state").display());
        let (a, b) = (
            Simulator::parse(&spec).unwrap(),
            Simulator::parse(&spec).unwrap(),
        );
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| (0..20).for_each(|_| a.wait(1, 0)));
            s.spawn(|| (0..20).for_each(|_| b.wait(1, 0)));
        });
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Bandwidth and latency add up as a store's would.
    #[test]
    fn bandwidth_and_latency_are_paid() {
        let s = Simulator::parse("latency=10ms,bandwidth=1MB/s").unwrap();
        let started = Instant::now();
        s.wait(1, 50_000);
        assert!(started.elapsed() >= Duration::from_millis(58));
        // 64 requests sent together pay the latency twice (32 in flight), not 64 times.
        let started = Instant::now();
        s.wait(64, 0);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(20) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }
}
