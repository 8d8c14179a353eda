//! Readings from a Kafka topic, consumed as a
//! member of a consumer group: offsets are committed to the group only after the readings of
//! the records before them are durable in the log, so a crash re-reads what was not yet stored
//! and never skips anything.
//!
//! The client speaks the wire protocol itself, at fixed versions every broker since Kafka 1.0
//! still serves (Metadata v1, FindCoordinator v1, JoinGroup v1, SyncGroup v1, Heartbeat v1,
//! OffsetFetch v1, OffsetCommit v2, ListOffsets v1, Fetch v4), and reads record batches of magic
//! 2 (uncompressed or gzip). One broker connection serves everything when the broker is its
//! own group coordinator and partition leader (a single-node cluster);
//! other leaders get connections of their own. The group uses the range assignor: partitions
//! are split among members in member-id order, so several fleetscore processes share a topic.
//!
//! Plaintext only: no TLS or SASL yet, so Azure Event Hubs' Kafka endpoint (which requires
//! both) is not reachable.
//!
//! A record's value is one reading as JSON (`{"device", "tag", "ts", "value"}`, as in an HTTP
//! body) or several as JSON lines; an invalid one is counted and skipped (its offset is still
//! committed, so it is not read again forever).

mod conn;
mod consume;
mod group;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetscore_log::Log;

use crate::reading::Limits;
use consume::consume;

/// What to consume.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port` of a broker to start from.
    pub bootstrap: String,
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// This client's id (in the broker's logs).
    pub client_id: String,
}

impl KafkaConfig {
    /// From `kafka://host:port/topic` and a group.
    pub fn new(url: &str, group: &str) -> Result<KafkaConfig, String> {
        let rest = url.strip_prefix("kafka://").ok_or_else(|| {
            format!("Kafka source {url:?}: use kafka://host:port/topic (TLS is not supported yet)")
        })?;
        let (bootstrap, topic) = rest
            .split_once('/')
            .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            .ok_or_else(|| format!("Kafka source {url:?}: use kafka://host:port/topic"))?;
        let bootstrap = if bootstrap.contains(':') {
            bootstrap.to_string()
        } else {
            format!("{bootstrap}:9092")
        };
        if group.is_empty() {
            return Err("the Kafka consumer group must not be empty".into());
        }
        Ok(KafkaConfig {
            bootstrap,
            topic: topic.to_string(),
            group: group.to_string(),
            client_id: "fleetscore-ingest".into(),
        })
    }
}

/// What the Kafka source has done, for `/v1/stats`.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// In the group with partitions assigned.
    pub joined: AtomicBool,
    /// Partitions assigned to this member now.
    pub partitions: AtomicU64,
    /// Group joins (the first and every rebalance).
    pub joins: AtomicU64,
    /// Records read.
    pub records: AtomicU64,
    /// Readings stored.
    pub accepted: AtomicU64,
    /// Readings or records refused.
    pub rejected: AtomicU64,
}

pub(crate) type Res<T> = Result<T, String>;

/// Runs the Kafka source until the process ends, rejoining after errors with backoff.
pub async fn run(config: KafkaConfig, log: Log, limits: Limits, stats: Arc<KafkaStats>) {
    let mut backoff = Duration::from_millis(500);
    // Kept across rejoins, so the coordinator sees the same member come back rather than a
    // new one beside a ghost of the old (which would hold partitions until its session ends).
    let mut member_id = String::new();
    loop {
        let started = Instant::now();
        if let Err(e) = consume(&config, &log, &limits, &stats, &mut member_id).await {
            if e.contains("UNKNOWN_MEMBER_ID") {
                member_id.clear();
            }
            stats.joined.store(false, Ordering::Relaxed);
            eprintln!("kafka: {e}; reconnecting in {:.1} s", backoff.as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = KafkaConfig::new("kafka://127.0.0.1:19092/readings", "g").unwrap();
        assert_eq!(
            (c.bootstrap.as_str(), c.topic.as_str()),
            ("127.0.0.1:19092", "readings")
        );
        assert_eq!(
            KafkaConfig::new("kafka://broker/t", "g").unwrap().bootstrap,
            "broker:9092"
        );
        assert!(KafkaConfig::new("kafka://broker", "g").is_err());
        assert!(KafkaConfig::new("http://broker/t", "g").is_err());
    }
}
