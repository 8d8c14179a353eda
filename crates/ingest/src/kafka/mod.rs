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
//! `kafkas://` speaks TLS on every connection (the bootstrap broker, the group coordinator and
//! each partition leader the metadata names), with SNI and the certificate checked against the
//! host name; SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) authenticates each connection when
//! configured (`sasl`).
//!
//! Azure Event Hubs' Kafka endpoint (`kafkas://NAMESPACE.servicebus.windows.net:9093/HUB`, SASL
//! PLAIN with the user `$ConnectionString` and the connection string as the password) asks
//! these of a consumer-group member, each honoured where it applies:
//! - ApiVersions at v3 or lower: it resets the connection above. This client sends none; every
//!   request is at a fixed version Event Hubs serves (`wire.rs`).
//! - SaslHandshake v1 then SaslAuthenticate (`sasl.rs`), not the raw SASL bytes of v0.
//! - A session timeout of 30 s by default ([`KafkaConfig::session_timeout`]), heartbeats every
//!   second (`consume.rs`).
//! - Offset commits at most once a second: it throttles commits to 4 per second per partition,
//!   so `consume.rs` coalesces them ([`COMMIT_EVERY`]).
//! - Idle connections are closed by the server after 240 s: a closed connection is an error
//!   like any other, and the member reconnects and rejoins (the rejoin loop below); the
//!   connections in use (heartbeats, fetches) are never idle that long.
//! - `throttle_time_ms` in an answer is honoured: the next request on that connection waits
//!   (`Conn::throttled`).
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
mod sasl;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetscore_log::Log;

use crate::error::{Error, Report, Result};
use crate::reading::Limits;
use crate::source::{Shutdown, Source};
use consume::consume;
pub use sasl::{Mechanism, Sasl};
pub use wire::KafkaCode;

/// How often the consumed offsets are committed, at most: Event Hubs throttles commits to 4 per
/// second per partition. A crash re-reads at most this much (delivery is at least once).
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// What to consume, and how to reach it.
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
    /// TLS on every connection (`kafkas://`): trusted CAs and the like.
    pub tls: Option<std::sync::Arc<fleetscore_tls::rustls::ClientConfig>>,
    /// SASL credentials, if the broker wants them.
    pub sasl: Option<Sasl>,
    /// How long the coordinator keeps this member without a heartbeat (30 s, what Event Hubs
    /// expects; a killed member's partitions wait that long before another member gets them).
    pub session_timeout: Duration,
}

impl KafkaConfig {
    /// From `kafka://host:port/topic` (plaintext, port 9092 by default) or
    /// `kafkas://host:port/topic` (TLS, the system's CAs until [`KafkaConfig::tls`] is set
    /// otherwise; port 9093 by default), and a group. Credentials in the URL are refused.
    pub fn new(url: &str, group: &str) -> Result<KafkaConfig> {
        let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("kafka://") {
            (r, false, 9092)
        } else if let Some(r) = url.strip_prefix("kafkas://") {
            (r, true, 9093)
        } else {
            return Err(Error::Config(
                "Kafka source: use kafka://host:port/topic, or kafkas://host:port/topic for TLS"
                    .into(),
            ));
        };
        let (bootstrap, topic) = rest
            .split_once('/')
            .filter(|(b, t)| !b.is_empty() && !t.is_empty())
            .ok_or_else(|| {
                Error::Config(format!("Kafka source {url:?}: use kafka://host:port/topic"))
            })?;
        if bootstrap.contains('@') {
            return Err(Error::Config(
                "the Kafka URL holds credentials: give them with --kafka-sasl-mechanism and --kafka-username, the password in FLEETSCORE_KAFKA_PASSWORD or --kafka-password-file".into(),
            ));
        }
        let bootstrap = if bootstrap.contains(':') {
            bootstrap.to_string()
        } else {
            format!("{bootstrap}:{default_port}")
        };
        if group.is_empty() {
            return Err(Error::Config(
                "the Kafka consumer group must not be empty".into(),
            ));
        }
        let tls = if tls {
            let config = fleetscore_tls::client_config(&fleetscore_tls::Roots::System, None)
                .map_err(|e| Error::Config(format!("Kafka over TLS: {e}")))?;
            Some(std::sync::Arc::new(config))
        } else {
            None
        };
        Ok(KafkaConfig {
            bootstrap,
            topic: topic.to_string(),
            group: group.to_string(),
            client_id: "fleetscore-ingest".into(),
            tls,
            sasl: None,
            session_timeout: Duration::from_secs(30),
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
        let c = KafkaConfig::new("kafkas://ns.servicebus.windows.net/hub", "g").unwrap();
        assert_eq!(c.bootstrap, "ns.servicebus.windows.net:9093");
        assert!(c.tls.is_some());
        let err = KafkaConfig::new("kafkas://u:secret-pw@broker/t", "g")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--kafka-username") && !err.contains("secret-pw"),
            "{err}"
        );
        assert!(KafkaConfig::new("http://broker/t", "g").is_err());
    }
}
