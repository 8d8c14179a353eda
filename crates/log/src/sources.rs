//! What each process writing a log has taken in, by source: the counters ingest keeps in memory
//! (readings accepted and refused per source — HTTP, MQTT, Kafka — and requests refused before
//! their readings were read), published beside the log so that a monitor in another process
//! sees them.
//!
//! Each writing process owns one file, `sources/{process}.json` in the log's folder, rewritten
//! atomically (a temporary file renamed over it) every few seconds and once more when the
//! process stops. Its counters start at zero when the process starts and only grow, so the sum
//! over every file, those of processes that have stopped included, only grows too: what a
//! Prometheus counter needs. Files of processes that stopped writing a week ago are removed by
//! the next process that starts (a scraper sees that as a counter reset, which it handles).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, now_ms};

/// The folder, inside a log's folder, that holds the sources' files.
pub const FOLDER: &str = "sources";

/// A stopped process's file is removed once it has not been written for this long.
pub const KEEP_STOPPED: Duration = Duration::from_secs(7 * 24 * 3_600);

/// One source's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Readings appended to the log and acknowledged to their sender.
    pub accepted: u64,
    /// Readings refused as invalid (the sender was told which and why).
    pub invalid: u64,
    /// Requests refused before their readings were read: no or a wrong token.
    #[serde(default)]
    pub unauthorized: u64,
    /// Requests refused because the log's budget of bytes in flight was spent (HTTP 429).
    #[serde(default)]
    pub overloaded: u64,
    /// Requests whose body did not arrive in time.
    #[serde(default)]
    pub timed_out: u64,
}

impl SourceCounts {
    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &SourceCounts) {
        self.accepted += other.accepted;
        self.invalid += other.invalid;
        self.unauthorized += other.unauthorized;
        self.overloaded += other.overloaded;
        self.timed_out += other.timed_out;
    }
}

/// One process's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesReport {
    /// The process: host, pid and start time, unique per process.
    pub process: String,
    /// When it started, epoch ms.
    pub started_ms: i64,
    /// When this file was written, epoch ms.
    pub updated_ms: i64,
    /// Whether the process had stopped when it wrote this file.
    #[serde(default)]
    pub stopped: bool,
    /// Counters by source name (`http`, `mqtt`, `kafka`).
    pub sources: BTreeMap<String, SourceCounts>,
}

/// The name of this process's file: host, pid and start time.
pub fn process_name(started_ms: i64) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}-{started_ms}", std::process::id())
}

fn folder(log_dir: &Path) -> PathBuf {
    log_dir.join(FOLDER)
}

/// Writes `report` as its process's file, atomically.
pub fn write(log_dir: &Path, report: &SourcesReport) -> Result<()> {
    let dir = folder(log_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(format!("{}.json", report.process));
    let tmp = dir.join(format!(".{}.json.tmp", report.process));
    let bytes = serde_json::to_vec(report).expect("counters serialize");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(())
}

/// Every process's file in `log_dir`, oldest start first. A file that cannot be read or parsed
/// (one being replaced is never seen half-written) is reported in the second list by name.
pub fn read_all(log_dir: &Path) -> (Vec<SourcesReport>, Vec<String>) {
    let dir = folder(log_dir);
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (reports, problems);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<SourcesReport>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => reports.push(r),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    reports.sort_by(|a, b| (a.started_ms, &a.process).cmp(&(b.started_ms, &b.process)));
    (reports, problems)
}

/// Removes the files of processes that stopped writing longer ago than [`KEEP_STOPPED`];
/// returns how many.
pub fn remove_stale(log_dir: &Path) -> usize {
    let (reports, _) = read_all(log_dir);
    let cutoff = now_ms() - KEEP_STOPPED.as_millis() as i64;
    let mut removed = 0;
    for r in reports.iter().filter(|r| r.updated_ms < cutoff) {
        if std::fs::remove_file(folder(log_dir).join(format!("{}.json", r.process))).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The counters of every process's file, summed by source.
pub fn totals(reports: &[SourcesReport]) -> BTreeMap<String, SourceCounts> {
    let mut out: BTreeMap<String, SourceCounts> = BTreeMap::new();
    for r in reports {
        for (source, c) in &r.sources {
            out.entry(source.clone()).or_default().add(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(process: &str, started: i64, updated: i64, http: u64) -> SourcesReport {
        SourcesReport {
            process: process.into(),
            started_ms: started,
            updated_ms: updated,
            stopped: false,
            sources: [(
                "http".to_string(),
                SourceCounts {
                    accepted: http,
                    invalid: 1,
                    ..Default::default()
                },
            )]
            .into(),
        }
    }

    #[test]
    fn processes_files_are_summed_and_stale_ones_removed() {
        let dir = std::env::temp_dir().join(format!("fleetscore-sources-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = now_ms();
        write(&dir, &report("a", 1, now, 10)).unwrap();
        write(&dir, &report("b", 2, now, 5)).unwrap();
        // Rewriting replaces: counters are the process's totals, not increments.
        write(&dir, &report("b", 2, now, 7)).unwrap();
        let week_ago = now - KEEP_STOPPED.as_millis() as i64 - 1;
        write(&dir, &report("old", 0, week_ago, 100)).unwrap();
        std::fs::write(dir.join(FOLDER).join("broken.json"), b"{").unwrap();

        let (reports, problems) = read_all(&dir);
        assert_eq!(
            reports
                .iter()
                .map(|r| r.process.as_str())
                .collect::<Vec<_>>(),
            ["old", "a", "b"]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("broken.json"), "{problems:?}");
        let t = totals(&reports);
        assert_eq!(t["http"].accepted, 117);
        assert_eq!(t["http"].invalid, 3);

        assert_eq!(remove_stale(&dir), 1);
        let (reports, _) = read_all(&dir);
        assert_eq!(totals(&reports)["http"].accepted, 17);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_process_name_is_a_safe_file_name() {
        let name = process_name(42);
        assert!(
            name.ends_with(&format!("-{}-42", std::process::id())),
            "{name}"
        );
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{name}"
        );
    }
}
