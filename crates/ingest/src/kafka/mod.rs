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
//!
//! [`KafkaSource`] is the Kafka [`Source`]. Here: its settings and the rejoin loop; `wire`
//! encodes requests and decodes answers and record batches, `conn` is a broker connection and
//! the topic's requests, `group` the membership requests and the assignor, `consume` one
//! membership's fetch–append–commit loop.

mod conn;
mod consume;
mod group;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetscore_log::Log;

use crate::error::{Error, Report, Result};
use crate::reading::Limits;
use crate::source::{Shutdown, Source};
use consume::consume;
pub use wire::KafkaCode;

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
    pub fn new(url: &str, group: &str) -> Result<KafkaConfig> {
        let rest = url.strip_prefix("kafka://").ok_or_else(|| {
            Error::Config(format!(
                "Kafka source {url:?}: use kafka://host:port/topic (TLS is not supported yet)"
            ))
        })?;
        let (bootstrap, topic) = rest
            .split_once('/')
            .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            .ok_or_else(|| {
                Error::Config(format!("Kafka source {url:?}: use kafka://host:port/topic"))
            })?;
        let bootstrap = if bootstrap.contains(':') {
            bootstrap.to_string()
        } else {
            format!("{bootstrap}:9092")
        };
        if group.is_empty() {
            return Err(Error::Config(
                "the Kafka consumer group must not be empty".into(),
            ));
        }
        Ok(KafkaConfig {
            bootstrap,
            topic: topic.to_string(),
            group: group.to_string(),
            client_id: "fleetscore-ingest".into(),
        })
    }
}

/// What the Kafka source has done, for `/v1/stats`. Atomics, so that the source's task updates
/// them while the HTTP server reads them, without a lock; each stands on its own (relaxed
/// ordering), and nothing is decided from them.
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

/// The consumer-group member as a [`Source`]: joins, consumes and commits until shutdown,
/// rejoining after errors with backoff.
#[derive(Debug)]
pub struct KafkaSource {
    config: KafkaConfig,
    limits: Limits,
    /// Shared with whoever shows them (the HTTP server's `/v1/stats`).
    stats: Arc<KafkaStats>,
}

impl KafkaSource {
    /// The source for `config`, checking each reading against `limits`.
    pub fn new(config: KafkaConfig, limits: Limits) -> KafkaSource {
        KafkaSource {
            config,
            limits,
            stats: Arc::default(),
        }
    }

    /// Its counters, to show beside the HTTP server's.
    pub fn stats(&self) -> Arc<KafkaStats> {
        self.stats.clone()
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    /// Consumes until shutdown; broker errors are retried (with backoff), never returned.
    async fn run(self, log: Log, shutdown: Shutdown) -> Result<()> {
        tokio::select! {
            () = rejoin_forever(&self.config, &log, &self.limits, &self.stats) => {}
            () = shutdown.requested() => {}
        }
        Ok(())
    }
}

/// Memberships one after the other: after an error, rejoin with backoff. Never returns.
async fn rejoin_forever(config: &KafkaConfig, log: &Log, limits: &Limits, stats: &KafkaStats) {
    let mut backoff = Duration::from_millis(500);
    // Kept across rejoins, so the coordinator sees the same member come back rather than a
    // new one beside a ghost of the old (which would hold partitions until its session ends).
    let mut member_id = String::new();
    loop {
        let started = Instant::now();
        if let Err(e) = consume(config, log, limits, stats, &mut member_id).await {
            forget_member_id_if_unknown(&e, &mut member_id);
            stats.joined.store(false, Ordering::Relaxed);
            tracing::warn!(
                "kafka: {}; reconnecting in {:.1} s",
                Report(&e),
                backoff.as_secs_f64()
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// After a failed membership: a coordinator that no longer knows the member id (its session
/// ended) wants a new member, so the next join goes without it; after any other error the id
/// is kept.
fn forget_member_id_if_unknown(e: &Error, member_id: &mut String) {
    if e.kafka_code() == Some(KafkaCode::UNKNOWN_MEMBER_ID) {
        member_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_id_is_forgotten_only_when_the_coordinator_answers_unknown_member_id() {
        let mut id = "member-1".to_string();
        let kafka = |code| Error::Kafka {
            what: "heartbeat".into(),
            code,
        };
        for kept in [
            kafka(KafkaCode::REBALANCE_IN_PROGRESS),
            kafka(KafkaCode::ILLEGAL_GENERATION),
            kafka(KafkaCode::NOT_COORDINATOR),
            // The code is read, not the message.
            Error::Protocol {
                what: "heartbeat".into(),
                reason: "UNKNOWN_MEMBER_ID".into(),
            },
        ] {
            forget_member_id_if_unknown(&kept, &mut id);
            assert_eq!(id, "member-1", "after {kept}");
        }
        forget_member_id_if_unknown(&kafka(KafkaCode::UNKNOWN_MEMBER_ID), &mut id);
        assert_eq!(id, "");
    }

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
