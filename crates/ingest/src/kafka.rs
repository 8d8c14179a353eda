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

use fleetscore_core::now_ms;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetscore_log::Log;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::parse::{self, AnyDevice, Format};
use crate::reading::Limits;

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

type Res<T> = Result<T, String>;

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

/// One membership: join, sync, fetch and commit until an error or a rebalance.
async fn consume(
    config: &KafkaConfig,
    log: &Log,
    limits: &Limits,
    stats: &KafkaStats,
    member_id: &mut String,
) -> Res<()> {
    let mut boot = Conn::connect(&config.bootstrap, &config.client_id).await?;
    let (brokers, partitions) = boot.metadata(&config.topic).await?;
    let coordinator = boot.find_coordinator(&config.group).await?;
    let mut coord = Conn::connect(&coordinator, &config.client_id).await?;
    // Join: the leader (the first member) assigns partitions; everyone learns theirs in sync.
    let joined = coord
        .join_group(&config.group, member_id, &config.topic)
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
    eprintln!(
        "kafka: joined group {} (generation {}) with partitions {mine:?} of {}",
        config.group, joined.generation, config.topic
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
            .ok_or_else(|| format!("partition {p} has no leader"))?;
        if let std::collections::btree_map::Entry::Vacant(v) = leaders.entry(leader) {
            let addr = brokers
                .get(&leader)
                .ok_or_else(|| format!("no address for broker {leader}"))?;
            v.insert(Conn::connect(addr, &config.client_id).await?);
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
                    eprintln!(
                        "kafka: {} partition {p}: offset {} is no longer held; going on from {earliest}",
                        config.topic, next[&p]
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
                        eprintln!(
                            "kafka: {} partition {p} offset {offset}: refused: {}",
                            config.topic, r.error
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
                    .await
                    .map_err(|e| format!("readings not stored: {e}"))?
                    .durable()
                    .await
                    .map_err(|e| format!("readings not stored: {e}"))?;
                stats
                    .accepted
                    .fetch_add(readings.len() as u64, Ordering::Relaxed);
            }
        }
        if !progressed.is_empty() {
            // Durable: now the group may move past them.
            coord
                .offset_commit(
                    &config.group,
                    joined.generation,
                    member_id,
                    &config.topic,
                    &progressed,
                )
                .await?;
            next.extend(progressed);
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

/// The range assignor: each member (in id order) gets a contiguous share of the partitions.
fn range_assign(
    members: &[(String, Vec<u8>)],
    partitions: &[(i32, i32)],
    topic: &str,
) -> Vec<(String, Vec<i32>)> {
    let mut ids: Vec<&String> = members
        .iter()
        .filter(|(_, meta)| subscription_topics(meta).iter().any(|t| t == topic))
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    let mut ps: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
    ps.sort_unstable();
    let n = ids.len().max(1);
    let (per, extra) = (ps.len() / n, ps.len() % n);
    let mut at = 0;
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let take = per + usize::from(i < extra);
            let share = ps[at..at + take].to_vec();
            at += take;
            ((*id).clone(), share)
        })
        .collect()
}

// ---- Wire encoding ----

struct W(Vec<u8>);

impl W {
    fn i8(&mut self, v: i8) -> &mut W {
        self.0.push(v as u8);
        self
    }
    fn i16(&mut self, v: i16) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut W {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn null_str(&mut self) -> &mut W {
        self.i16(-1)
    }
    fn bytes(&mut self, b: &[u8]) -> &mut W {
        self.i32(b.len() as i32);
        self.0.extend_from_slice(b);
        self
    }
}

struct R<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if self.b.len() < n {
            return Err(format!("{}: response ends early", self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn i8(&mut self) -> Res<i8> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Res<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> Res<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn str(&mut self) -> Res<String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
    fn bytes(&mut self) -> Res<&'a [u8]> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(&[]);
        }
        self.take(n as usize)
    }
    fn count(&mut self) -> Res<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        if n as usize > self.b.len() {
            return Err(format!(
                "{}: an array of {n} in {} bytes",
                self.what,
                self.b.len()
            ));
        }
        Ok(n as usize)
    }
    fn varint(&mut self) -> Res<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(format!("{}: a varint longer than 10 bytes", self.what))
    }
}

fn check(code: i16, what: &str) -> Res<()> {
    if code == 0 {
        return Ok(());
    }
    let name = match code {
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        22 => "ILLEGAL_GENERATION",
        25 => "UNKNOWN_MEMBER_ID",
        27 => "REBALANCE_IN_PROGRESS",
        79 => "MEMBER_ID_REQUIRED",
        _ => "error",
    };
    Err(format!("{what}: broker answered {name} ({code})"))
}

fn subscription(topic: &str) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.i16(0).i32(1).str(topic).i32(-1);
    w.0
}

fn subscription_topics(meta: &[u8]) -> Vec<String> {
    let mut r = R {
        b: meta,
        what: "subscription",
    };
    let mut out = Vec::new();
    if r.i16().is_ok()
        && let Ok(n) = r.count()
    {
        for _ in 0..n {
            match r.str() {
                Ok(t) => out.push(t),
                Err(_) => break,
            }
        }
    }
    out
}

struct Joined {
    generation: i32,
    leader: String,
    member_id: String,
    members: Vec<(String, Vec<u8>)>,
}

/// A broker connection: one request at a time.
struct Conn {
    stream: TcpStream,
    client_id: String,
    correlation: i32,
    addr: String,
}

const API_FETCH: i16 = 1;
const API_LIST_OFFSETS: i16 = 2;
const API_METADATA: i16 = 3;
const API_OFFSET_COMMIT: i16 = 8;
const API_OFFSET_FETCH: i16 = 9;
const API_FIND_COORDINATOR: i16 = 10;
const API_JOIN_GROUP: i16 = 11;
const API_HEARTBEAT: i16 = 12;
const API_SYNC_GROUP: i16 = 14;
/// Brokers since Kafka 2.2 answer a first join with a member id to join again with.
const MEMBER_ID_REQUIRED: i16 = 79;
const OFFSET_OUT_OF_RANGE: i16 = 1;

impl Conn {
    async fn connect(addr: &str, client_id: &str) -> Res<Conn> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr}: timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            client_id: client_id.to_string(),
            correlation: 0,
            addr: addr.to_string(),
        })
    }

    /// Sends a request and returns the response body (after the correlation id).
    async fn call(&mut self, api: i16, version: i16, body: &[u8], wait: Duration) -> Res<Vec<u8>> {
        self.correlation += 1;
        let mut w = W(Vec::with_capacity(body.len() + 32));
        w.i32(0)
            .i16(api)
            .i16(version)
            .i32(self.correlation)
            .str(&self.client_id);
        w.0.extend_from_slice(body);
        let size = (w.0.len() - 4) as i32;
        w.0[..4].copy_from_slice(&size.to_be_bytes());
        let addr = self.addr.clone();
        let io = async {
            self.stream.write_all(&w.0).await?;
            let n = self.stream.read_i32().await?;
            if !(4..=256 << 20).contains(&n) {
                return Err(std::io::Error::other(format!("a response of {n} bytes")));
            }
            let mut buf = vec![0; n as usize];
            self.stream.read_exact(&mut buf).await?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(wait + Duration::from_secs(30), io)
            .await
            .map_err(|_| format!("{addr}: no answer to request {api}"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let correlation = i32::from_be_bytes(buf[..4].try_into().expect("4"));
        if correlation != self.correlation {
            return Err(format!("{addr}: answer to another request"));
        }
        Ok(buf[4..].to_vec())
    }

    /// Brokers (id → address) and the topic's partitions (id, leader).
    async fn metadata(&mut self, topic: &str) -> Res<(BTreeMap<i32, String>, Vec<(i32, i32)>)> {
        let mut w = W(Vec::new());
        w.i32(1).str(topic);
        let resp = self.call(API_METADATA, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "metadata",
        };
        let mut brokers = BTreeMap::new();
        for _ in 0..r.count()? {
            let id = r.i32()?;
            let host = r.str()?;
            let port = r.i32()?;
            let _rack = r.str()?;
            brokers.insert(id, format!("{host}:{port}"));
        }
        let _controller = r.i32()?;
        let mut partitions = Vec::new();
        for _ in 0..r.count()? {
            let code = r.i16()?;
            let name = r.str()?;
            let _internal = r.i8()?;
            check(code, &format!("topic {name}"))?;
            for _ in 0..r.count()? {
                let code = r.i16()?;
                let p = r.i32()?;
                let leader = r.i32()?;
                for _ in 0..r.count()? {
                    r.i32()?;
                }
                for _ in 0..r.count()? {
                    r.i32()?;
                }
                check(code, &format!("topic {name} partition {p}"))?;
                if name == topic {
                    partitions.push((p, leader));
                }
            }
        }
        if partitions.is_empty() {
            return Err(format!("topic {topic} has no partitions (does it exist?)"));
        }
        Ok((brokers, partitions))
    }

    async fn find_coordinator(&mut self, group: &str) -> Res<String> {
        let mut w = W(Vec::new());
        w.str(group).i8(0);
        let resp = self
            .call(API_FIND_COORDINATOR, 1, &w.0, Duration::ZERO)
            .await?;
        let mut r = R {
            b: &resp,
            what: "find coordinator",
        };
        let _throttle = r.i32()?;
        let code = r.i16()?;
        let _message = r.str()?;
        check(code, "finding the group coordinator")?;
        let _node = r.i32()?;
        let host = r.str()?;
        let port = r.i32()?;
        Ok(format!("{host}:{port}"))
    }

    async fn join_group(&mut self, group: &str, member_id: &str, topic: &str) -> Res<Joined> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(10_000) // session timeout
            .i32(3_000) // rebalance timeout: how long the broker waits for other members
            .str(member_id)
            .str("consumer")
            .i32(1)
            .str("range")
            .bytes(&subscription(topic));
        let resp = self
            .call(API_JOIN_GROUP, 1, &w.0, Duration::from_secs(5))
            .await?;
        let mut r = R {
            b: &resp,
            what: "join group",
        };
        let code = r.i16()?;
        let generation = r.i32()?;
        let _protocol = r.str()?;
        let leader = r.str()?;
        let member_id = r.str()?;
        if code == MEMBER_ID_REQUIRED && !member_id.is_empty() {
            // The broker named our member id; join again with it.
            return Box::pin(self.join_group(group, &member_id, topic)).await;
        }
        check(code, "joining the group")?;
        let mut members = Vec::new();
        for _ in 0..r.count()? {
            let id = r.str()?;
            let meta = r.bytes()?.to_vec();
            members.push((id, meta));
        }
        Ok(Joined {
            generation,
            leader,
            member_id,
            members,
        })
    }

    async fn sync_group(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: &[(String, Vec<i32>)],
        topic: &str,
    ) -> Res<Vec<i32>> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(generation)
            .str(member_id)
            .i32(assignments.len() as i32);
        for (id, parts) in assignments {
            let mut a = W(Vec::new());
            a.i16(0).i32(1).str(topic).i32(parts.len() as i32);
            for p in parts {
                a.i32(*p);
            }
            a.i32(-1);
            w.str(id).bytes(&a.0);
        }
        let resp = self
            .call(API_SYNC_GROUP, 1, &w.0, Duration::from_secs(5))
            .await?;
        let mut r = R {
            b: &resp,
            what: "sync group",
        };
        let _throttle = r.i32()?;
        check(r.i16()?, "syncing the group")?;
        let assignment = r.bytes()?;
        let mut mine = Vec::new();
        if !assignment.is_empty() {
            let mut a = R {
                b: assignment,
                what: "assignment",
            };
            let _version = a.i16()?;
            for _ in 0..a.count()? {
                let t = a.str()?;
                for _ in 0..a.count()? {
                    let p = a.i32()?;
                    if t == topic {
                        mine.push(p);
                    }
                }
            }
        }
        Ok(mine)
    }

    async fn heartbeat(&mut self, group: &str, generation: i32, member_id: &str) -> Res<()> {
        let mut w = W(Vec::new());
        w.str(group).i32(generation).str(member_id);
        let resp = self.call(API_HEARTBEAT, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "heartbeat",
        };
        let _throttle = r.i32()?;
        check(r.i16()?, "heartbeat")
    }

    async fn offset_fetch(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Res<BTreeMap<i32, i64>> {
        let mut w = W(Vec::new());
        w.str(group).i32(1).str(topic).i32(partitions.len() as i32);
        for p in partitions {
            w.i32(*p);
        }
        let resp = self.call(API_OFFSET_FETCH, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "offset fetch",
        };
        let mut out = BTreeMap::new();
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                let offset = r.i64()?;
                let _meta = r.str()?;
                check(r.i16()?, &format!("committed offset of partition {p}"))?;
                out.insert(p, offset);
            }
        }
        Ok(out)
    }

    async fn offset_commit(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Res<()> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(generation)
            .str(member_id)
            .i64(-1)
            .i32(1)
            .str(topic)
            .i32(offsets.len() as i32);
        for (p, o) in offsets {
            w.i32(*p).i64(*o).null_str();
        }
        let resp = self
            .call(API_OFFSET_COMMIT, 2, &w.0, Duration::ZERO)
            .await?;
        let mut r = R {
            b: &resp,
            what: "offset commit",
        };
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                check(r.i16()?, &format!("committing partition {p}"))?;
            }
        }
        Ok(())
    }

    async fn earliest_offset(&mut self, topic: &str, partition: i32) -> Res<i64> {
        let mut w = W(Vec::new());
        w.i32(-1).i32(1).str(topic).i32(1).i32(partition).i64(-2);
        let resp = self.call(API_LIST_OFFSETS, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "list offsets",
        };
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                check(r.i16()?, &format!("earliest offset of partition {p}"))?;
                let _ts = r.i64()?;
                let offset = r.i64()?;
                if p == partition {
                    return Ok(offset);
                }
            }
        }
        Err(format!("no earliest offset for partition {partition}"))
    }

    /// Records of each partition from its offset: `(partition, [(offset, value)])`, or `None`
    /// for a partition whose offset the broker no longer holds.
    #[allow(clippy::type_complexity)]
    async fn fetch(
        &mut self,
        topic: &str,
        wanted: &[(i32, i64)],
    ) -> Res<Vec<(i32, Option<Vec<(i64, Vec<u8>)>>)>> {
        let wait = Duration::from_millis(200);
        let mut w = W(Vec::new());
        w.i32(-1)
            .i32(wait.as_millis() as i32)
            .i32(1)
            .i32(16 << 20)
            .i8(0)
            .i32(1)
            .str(topic)
            .i32(wanted.len() as i32);
        for (p, o) in wanted {
            w.i32(*p).i64(*o).i32(4 << 20);
        }
        let resp = self.call(API_FETCH, 4, &w.0, wait).await?;
        let mut r = R {
            b: &resp,
            what: "fetch",
        };
        let _throttle = r.i32()?;
        let mut out = Vec::new();
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                let code = r.i16()?;
                let _hw = r.i64()?;
                let _lso = r.i64()?;
                for _ in 0..r.count()? {
                    r.i64()?;
                    r.i64()?;
                }
                let records = r.bytes()?;
                if code == OFFSET_OUT_OF_RANGE {
                    // Deleted by the topic's retention: the caller starts over at the earliest.
                    out.push((p, None));
                    continue;
                }
                check(code, &format!("fetching partition {p}"))?;
                out.push((p, Some(record_batches(records)?)));
            }
        }
        Ok(out)
    }
}

/// The records of magic-2 record batches: `(offset, value)`. A batch cut off at the end of a
/// fetch response (brokers may send a partial last batch) is left for the next fetch.
fn record_batches(mut b: &[u8]) -> Res<Vec<(i64, Vec<u8>)>> {
    let mut out = Vec::new();
    while b.len() >= 12 {
        let base = i64::from_be_bytes(b[..8].try_into().expect("8"));
        let len = i32::from_be_bytes(b[8..12].try_into().expect("4"));
        if len < 0 || b.len() < 12 + len as usize {
            break;
        }
        let batch = &b[12..12 + len as usize];
        b = &b[12 + len as usize..];
        let mut r = R {
            b: batch,
            what: "record batch",
        };
        let _epoch = r.i32()?;
        let magic = r.i8()?;
        if magic != 2 {
            return Err(format!(
                "record batch at offset {base}: format {magic} (only 2 is read; Kafka ≥ 0.11 writes it)"
            ));
        }
        let crc = r.i32()? as u32;
        if crc32c(r.b) != crc {
            return Err(format!("record batch at offset {base}: CRC mismatch"));
        }
        let attributes = r.i16()?;
        let _last_delta = r.i32()?;
        let _first_ts = r.i64()?;
        let _max_ts = r.i64()?;
        let _producer = r.i64()?;
        let _epoch = r.i16()?;
        let _sequence = r.i32()?;
        let count = r.i32()?;
        if attributes & 0x20 != 0 {
            continue; // a control batch (transaction markers)
        }
        let body: Vec<u8> = match attributes & 0x07 {
            0 => r.b.to_vec(),
            1 => {
                let mut d = Vec::new();
                flate2::read::GzDecoder::new(r.b)
                    .read_to_end(&mut d)
                    .map_err(|e| format!("record batch at offset {base}: gzip: {e}"))?;
                d
            }
            c => {
                return Err(format!(
                    "record batch at offset {base}: compression {c} is not supported (use none or gzip)"
                ));
            }
        };
        let mut r = R {
            b: &body,
            what: "record",
        };
        for _ in 0..count {
            let len = r.varint()?;
            let rec = r.take(usize::try_from(len).map_err(|_| "negative record length")?)?;
            let mut rr = R {
                b: rec,
                what: "record",
            };
            let _attr = rr.i8()?;
            let _ts = rr.varint()?;
            let offset_delta = rr.varint()?;
            let key_len = rr.varint()?;
            if key_len > 0 {
                rr.take(key_len as usize)?;
            }
            let value_len = rr.varint()?;
            let value = if value_len > 0 {
                rr.take(value_len as usize)?.to_vec()
            } else {
                Vec::new()
            };
            out.push((base + offset_delta, value));
        }
    }
    Ok(out)
}

/// CRC-32C (Castagnoli), as record batches carry.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn the_range_assignor_splits_in_member_order() {
        let sub = subscription("t");
        let members = vec![("b".to_string(), sub.clone()), ("a".to_string(), sub)];
        let parts: Vec<(i32, i32)> = (0..5).map(|p| (p, 1)).collect();
        let a = range_assign(&members, &parts, "t");
        assert_eq!(
            a,
            vec![("a".into(), vec![0, 1, 2]), ("b".into(), vec![3, 4])]
        );
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
