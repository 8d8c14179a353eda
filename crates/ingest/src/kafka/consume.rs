//! One membership of the group: join, sync, then fetch, append and commit until an error or
//! a rebalance.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fleetscore_core::now_ms;
use fleetscore_log::Log;

use super::conn::Conn;
use super::group::range_assign;
use super::{COMMIT_EVERY, KafkaConfig, KafkaStats};
use crate::error::{Error, Result};
use crate::parse::{self, AnyDevice, Format};
use crate::reading::Limits;

/// One membership: join, sync, fetch and commit until an error or a rebalance.
pub(super) async fn consume(
    config: &KafkaConfig,
    log: &Log,
    limits: &Limits,
    stats: &KafkaStats,
    member_id: &mut String,
) -> Result<()> {
    let mut boot = Conn::connect(&config.bootstrap, config).await?;
    let (brokers, partitions) = boot.metadata(&config.topic).await?;
    let coordinator = boot.find_coordinator(&config.group).await?;
    // Not used again: closed now rather than left for the broker to close when idle.
    drop(boot);
    let mut coord = Conn::connect(&coordinator, config).await?;
    // Join: the leader (the first member) assigns partitions; everyone learns theirs in sync.
    let joined = coord
        .join_group(
            &config.group,
            member_id,
            &config.topic,
            config.session_timeout,
        )
        .await?;
    *member_id = joined.member_id.clone();
    let member_id = member_id.as_str();
    stats.joins.fetch_add(1, Ordering::Relaxed);
    let assignments = if joined.leader == *member_id {
        range_assign(&joined.members, &partitions, &config.topic)
    } else {
        Vec::new()
    };
    let mine = coord
        .sync_group(
            &config.group,
            joined.generation,
            member_id,
            &assignments,
            &config.topic,
        )
        .await?;
    stats.partitions.store(mine.len() as u64, Ordering::Relaxed);
    stats.joined.store(true, Ordering::Relaxed);
    tracing::info!(
        "kafka: joined group {} (generation {}) with partitions {mine:?} of {}",
        config.group,
        joined.generation,
        config.topic
    );
    // Where to start: the committed offset, else the earliest still held.
    let committed = coord
        .offset_fetch(&config.group, &config.topic, &mine)
        .await?;
    let mut leaders: BTreeMap<i32, Conn> = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in &mine {
        let leader = partitions
            .iter()
            .find(|(id, _)| *id == p)
            .map(|(_, l)| *l)
            .ok_or_else(|| Error::Protocol {
                what: "metadata".into(),
                reason: format!("partition {p} has no leader"),
            })?;
        if let std::collections::btree_map::Entry::Vacant(v) = leaders.entry(leader) {
            let addr = brokers.get(&leader).ok_or_else(|| Error::Protocol {
                what: "metadata".into(),
                reason: format!("no address for broker {leader}"),
            })?;
            v.insert(Conn::connect(addr, config).await?);
        }
        let offset = match committed.get(&p) {
            Some(&o) if o >= 0 => o,
            _ => {
                let conn = leaders.get_mut(&leader).expect("connected");
                conn.earliest_offset(&config.topic, p).await?
            }
        };
        next.insert(p, offset);
    }
    let leader_of = |p: i32| {
        partitions
            .iter()
            .find(|(id, _)| *id == p)
            .map(|(_, l)| *l)
            .expect("assigned partitions have leaders")
    };
    let mut last_heartbeat = Instant::now();
    // Progress stored but not yet committed, and when the last commit went: commits are
    // coalesced to one per `COMMIT_EVERY` (Event Hubs throttles more frequent ones).
    let mut uncommitted: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit: Option<Instant> = None;
    loop {
        let mut progressed = BTreeMap::new();
        for (&leader, conn) in leaders.iter_mut() {
            let wanted: Vec<(i32, i64)> = next
                .iter()
                .filter(|(p, _)| leader_of(**p) == leader)
                .map(|(p, o)| (*p, *o))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let fetched = conn.fetch(&config.topic, &wanted).await?;
            // The fetched readings, appended in one batch below.
            let mut readings = Vec::new();
            for (p, records) in fetched {
                let Some(records) = records else {
                    let earliest = conn.earliest_offset(&config.topic, p).await?;
                    tracing::warn!(
                        "kafka: {} partition {p}: offset {} is no longer held; going on from {earliest}",
                        config.topic,
                        next[&p]
                    );
                    next.insert(p, earliest);
                    continue;
                };
                let mut end = next[&p];
                for (offset, value) in records {
                    if offset < end {
                        continue; // a batch starting before where we are
                    }
                    stats.records.fetch_add(1, Ordering::Relaxed);
                    let parsed =
                        parse::parse(&value, Format::JsonLines, limits, now_ms(), &AnyDevice);
                    stats
                        .rejected
                        .fetch_add(parsed.rejected.len() as u64, Ordering::Relaxed);
                    for r in parsed.rejected.iter().take(3) {
                        tracing::warn!(
                            "kafka: {} partition {p} offset {offset}: refused: {}",
                            config.topic,
                            r.error
                        );
                    }
                    readings.extend(parsed.readings);
                    end = offset + 1;
                }
                if end > next[&p] {
                    progressed.insert(p, end);
                }
            }
            if !readings.is_empty() {
                // Under overload this waits: not fetching holds the topic back.
                crate::append_when_room(log, &readings)
                    .await?
                    .durable()
                    .await?;
                stats
                    .accepted
                    .fetch_add(readings.len() as u64, Ordering::Relaxed);
            }
        }
        // Durable: the group may move past them, at the next commit.
        next.extend(progressed.iter().map(|(p, o)| (*p, *o)));
        uncommitted.extend(progressed);
        if !uncommitted.is_empty() && last_commit.is_none_or(|t| t.elapsed() >= COMMIT_EVERY) {
            coord
                .offset_commit(
                    &config.group,
                    joined.generation,
                    member_id,
                    &config.topic,
                    &uncommitted,
                )
                .await?;
            uncommitted.clear();
            last_commit = Some(Instant::now());
        }
        if last_heartbeat.elapsed() > Duration::from_secs(1) {
            coord
                .heartbeat(&config.group, joined.generation, member_id)
                .await?;
            last_heartbeat = Instant::now();
        }
        if next.is_empty() {
            // No partitions for this member: stay in the group, heartbeating.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
