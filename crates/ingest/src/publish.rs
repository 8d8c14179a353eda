//! Publishes this process's ingest counters beside the log (`fleetscore_log::sources`), so that
//! a monitor in another process shows readings per second and refusals by source: a thread
//! rewrites the process's file every few seconds and once more, marked stopped, when the
//! [`Publisher`] is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fleetscore_core::now_ms;
use fleetscore_log::sources::{self, SourceCounts, SourcesReport};

use crate::server::{SourceStats, Stats};

/// The counters of every source a process runs.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// The HTTP server's, when it runs.
    pub http: Option<Arc<Stats>>,
    /// The MQTT and Kafka sources', when they run.
    pub others: SourceStats,
}

impl Counters {
    /// The counters by source name, as published.
    pub fn counts(&self) -> BTreeMap<String, SourceCounts> {
        let mut out = BTreeMap::new();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        if let Some(h) = &self.http {
            out.insert(
                "http".to_string(),
                SourceCounts {
                    accepted: load(&h.accepted),
                    invalid: load(&h.rejected),
                    unauthorized: load(&h.unauthorized),
                    overloaded: load(&h.overloaded),
                    timed_out: load(&h.timed_out),
                },
            );
        }
        if let Some(m) = &self.others.mqtt {
            out.insert(
                "mqtt".to_string(),
                SourceCounts {
                    accepted: load(&m.accepted),
                    invalid: load(&m.rejected),
                    ..Default::default()
                },
            );
        }
        if let Some(k) = &self.others.kafka {
            out.insert(
                "kafka".to_string(),
                SourceCounts {
                    accepted: load(&k.accepted),
                    invalid: load(&k.rejected),
                    ..Default::default()
                },
            );
        }
        out
    }
}

/// The publishing thread; dropping it writes the final counters and stops it.
pub struct Publisher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Starts publishing `counters` into `log_dir` every `every`, first removing the files of
/// processes that stopped long ago. A write that fails is logged and tried again next time:
/// the counters are for watching, and ingest goes on without them.
pub fn start(log_dir: PathBuf, counters: Counters, every: Duration) -> Publisher {
    let started_ms = now_ms();
    let process = sources::process_name(started_ms);
    let removed = sources::remove_stale(&log_dir);
    if removed > 0 {
        tracing::info!("removed {removed} stopped processes' ingest counters from the log folder");
    }
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("ingest-counters".into())
        .spawn(move || {
            let (lock, cvar) = &*signal;
            let mut failing = false;
            loop {
                let stopped = *lock.lock().unwrap_or_else(|e| e.into_inner());
                let report = SourcesReport {
                    process: process.clone(),
                    started_ms,
                    updated_ms: now_ms(),
                    stopped,
                    sources: counters.counts(),
                };
                match sources::write(&log_dir, &report) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        tracing::warn!("publishing the ingest counters: {e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
                if stopped {
                    return;
                }
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let _ = cvar
                    .wait_timeout_while(guard, every, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
            }
        })
        .expect("spawn the ingest counters thread");
    Publisher {
        stop,
        thread: Some(thread),
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_published_while_running_and_marked_stopped_at_the_end() {
        let dir = std::env::temp_dir().join(format!("fleetscore-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let http = Arc::new(Stats::default());
        let counters = Counters {
            http: Some(Arc::clone(&http)),
            others: SourceStats::default(),
        };
        http.accepted.fetch_add(5, Ordering::Relaxed);
        let publisher = start(dir.clone(), counters, Duration::from_millis(20));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (reports, _) = sources::read_all(&dir);
            if reports.len() == 1 && reports[0].sources["http"].accepted == 5 {
                assert!(!reports[0].stopped);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{reports:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        http.accepted.fetch_add(2, Ordering::Relaxed);
        http.rejected.fetch_add(1, Ordering::Relaxed);
        drop(publisher);
        let (reports, _) = sources::read_all(&dir);
        assert_eq!(reports.len(), 1);
        assert!(reports[0].stopped);
        assert_eq!(reports[0].sources["http"].accepted, 7);
        assert_eq!(reports[0].sources["http"].invalid, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
