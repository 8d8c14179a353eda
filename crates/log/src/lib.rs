//! fleetscore's durable partitioned log: where ingest puts every reading it acknowledges, and
//! where the aggregator reads them back, in order per partition.
//!
//! - **Partitions.** Records are appended to one of a fixed number of partitions (chosen by
//!   the caller, usually [`Log::partition_for`] of the device id), each a folder of segment
//!   files named by the offset of their first record.
//! - **Record batches.** Each append writes, per partition, one batch: a header (magic, length,
//!   CRC-32 of everything after the CRC, first offset, record count, append time) and the
//!   records, each length-prefixed. Offsets are dense: a partition's n-th record has offset n.
//! - **Group commit.** One writer thread takes every append queued while it was busy, writes
//!   them, `fdatasync`s each partition it touched once, and only then acknowledges them. An
//!   acknowledged record is on disk; readers never see a record before it is.
//! - **Bounded memory.** Bytes accepted but not yet durable are counted; an append beyond
//!   [`Options::max_pending_bytes`] is refused at once with [`Error::Overloaded`] (ingest
//!   answers 429), never queued without bound.
//! - **Recovery.** Opening the log checks the active (last) segment of each partition batch by
//!   batch and cuts a torn or corrupt tail (what a crash mid-write leaves); everything before
//!   it, which includes everything acknowledged, stays.
//! - **Retention** by age and by size per partition, a whole sealed segment at a time, on
//!   demand ([`Log::enforce_retention`]) or from a thread of its own ([`Log::spawn_retention`]).
//! - **Consumers** read from an offset and commit offsets per consumer group (written
//!   atomically and fsync'd).
//!
//! The log reports what it does unasked (torn tails cut on open, segments retention deleted)
//! through `tracing`; where that goes is the program's choice.

#![warn(missing_docs)]

mod error;
mod partition;
mod retention;
pub mod sources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) use fleetscore_core::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use error::{Error, Result};
use partition::Partition;
pub use retention::Retention;

/// How a log is laid out and bounded.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of partitions (fixed when the log is created).
    pub partitions: u32,
    /// A segment is sealed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Bytes appended but not yet durable beyond which appends are refused.
    pub max_pending_bytes: usize,
    /// Sealed segments whose newest record was appended longer ago than this are deleted.
    pub retention_age: Option<Duration>,
    /// Per partition, the oldest sealed segments are deleted while the partition is larger.
    pub retention_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            partitions: 8,
            segment_bytes: 64 << 20,
            max_pending_bytes: 256 << 20,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
        }
    }
}

/// What a log folder's `log.json` records about its log, so that it is reopened with the same
/// partitioning: written once, when the log is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The version of the log's layout (1).
    pub format: u32,
    /// The number of partitions, fixed for the life of the log.
    pub partitions: u32,
}

impl Meta {
    /// What the log in `dir` records about itself; `None` if there is no log there (no
    /// `log.json`), without creating or locking anything.
    pub fn read(dir: &Path) -> Result<Option<Meta>> {
        let path = dir.join("log.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Meta::parse(&path, &bytes).map(Some)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Meta> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            path: path.display().to_string(),
            position: 0,
            reason: e.to_string(),
        })
    }
}

/// Where one partition's part of an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The partition.
    pub partition: u32,
    /// Offset of the first record appended.
    pub base_offset: u64,
    /// Number of records appended.
    pub count: u32,
}

/// Records to append, grouped by partition as they are added (each partition's records
/// become one batch on disk).
#[derive(Debug, Default)]
pub struct Batch {
    parts: BTreeMap<u32, (Vec<u8>, u32)>,
    bytes: usize,
}

impl Batch {
    /// Adds a record to `partition`.
    pub fn push(&mut self, partition: u32, record: &[u8]) {
        let (payload, count) = self.parts.entry(partition).or_default();
        payload.extend_from_slice(&(record.len() as u32).to_le_bytes());
        payload.extend_from_slice(record);
        *count += 1;
        self.bytes += record.len() + 4;
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.parts.values().map(|(_, n)| *n as usize).sum()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes of encoded records.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// An append that was accepted: wait on it for the moment it is durable.
#[derive(Debug)]
pub struct Ack {
    /// Completed by the writer thread once the records are durable (or failed).
    reply: oneshot::Receiver<Result<Vec<Appended>>>,
}

impl Ack {
    /// Waits (blocking the thread) until the records are on disk.
    pub fn wait(self) -> Result<Vec<Appended>> {
        self.reply.blocking_recv().unwrap_or(Err(Error::Closed))
    }

    /// Waits (in async code) until the records are on disk.
    pub async fn durable(self) -> Result<Vec<Appended>> {
        self.reply.await.unwrap_or(Err(Error::Closed))
    }
}

/// Records read from a partition.
#[derive(Debug, Default)]
pub struct Records {
    /// `(offset, record)` in offset order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The offset to read from next.
    pub next_offset: u64,
}

/// An append on its way to the writer thread.
struct Request {
    batch: Batch,
    /// Completes the append's [`Ack`] once its records are durable (or failed).
    reply: oneshot::Sender<Result<Vec<Appended>>>,
}

/// What every clone of a [`Log`], its writer thread and its retention share.
struct Shared {
    dir: PathBuf,
    options: Options,
    /// Each partition's files and offsets. The writer thread locks one to append and sync;
    /// readers lock it only to take a view of its segments; retention to delete sealed ones.
    partitions: Vec<Mutex<Partition>>,
    /// Bytes appended and not yet durable, added by [`Log::append`] (admission against
    /// [`Options::max_pending_bytes`]) and taken off by the writer thread once acknowledged:
    /// atomic, so admission never waits for the writer.
    pending: AtomicUsize,
    /// Serializes reading and rewriting the consumer groups' offset files, so two commits of
    /// one group cannot lose each other's partitions.
    offsets: Mutex<()>,
    /// Held (locked) while a writer has the log open.
    lock: Option<std::fs::File>,
}

/// A durable partitioned log in a folder. Cheap to clone; the writer thread stops when the
/// last clone is dropped, after acknowledging what was queued.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
    writer: Arc<Writer>,
}

/// The writer thread, owned by every clone together: the last one dropped stops it.
struct Writer {
    /// Appends go to the writer thread through this channel; `None` for a log opened to read,
    /// and taken on drop, which ends the thread once it has written what was queued. In a
    /// mutex because `mpsc::Sender` is shared by every clone of the log.
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    /// The writer thread, joined on drop so that what was queued is durable before the last
    /// clone of the log is gone.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.lock().expect("writer lock").take();
        if let Some(t) = self.thread.lock().expect("writer lock").take() {
            let _ = t.join();
        }
    }
}

impl Log {
    /// Opens the log in `dir` to write it, creating it with `options.partitions` partitions if
    /// it does not exist; an existing log keeps its partition count (a different one is an
    /// error). Only one process at a time may: the log's `lock` file is locked while it is open.
    /// Each partition's active segment is checked and a torn tail cut; what was cut is reported
    /// in [`Log::recovered`].
    pub fn open(dir: &Path, options: Options) -> Result<Log> {
        if options.partitions == 0 {
            return Err(Error::Config("a log needs at least one partition".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "another process is writing the log in {} (its `lock` file is locked)",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let partitions = match Meta::read(dir)? {
            Some(meta) => {
                if meta.partitions != options.partitions {
                    return Err(Error::Config(format!(
                        "{} has {} partitions; it cannot be opened with {}",
                        dir.display(),
                        meta.partitions,
                        options.partitions
                    )));
                }
                meta.partitions
            }
            None => {
                let meta = Meta {
                    format: 1,
                    partitions: options.partitions,
                };
                write_durably(
                    &dir.join("log.json"),
                    &serde_json::to_vec_pretty(&meta).expect("serializable"),
                )?;
                options.partitions
            }
        };
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            parts.push(Mutex::new(Partition::open(
                &dir.join(format!("p-{p:04}")),
                p,
                true,
            )?));
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            partitions: parts,
            pending: AtomicUsize::new(0),
            offsets: Mutex::new(()),
            lock: Some(lock),
        });
        let (tx, rx) = mpsc::channel();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || writer_loop(&shared, &rx))
                .map_err(|e| Error::io(dir, e))?
        };
        let log = Log {
            shared,
            writer: Arc::new(Writer {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        };
        for (p, bytes) in log.recovered() {
            tracing::warn!(
                "log partition {p}: cut {bytes} bytes of an unacknowledged, torn tail left by a crash"
            );
        }
        Ok(log)
    }

    /// Opens an existing log to read it, beside the process that may be writing it: nothing
    /// is repaired, created or locked, and a batch still being written is not read. It sees
    /// the log as it was when opened, until [`Log::refresh`]; appends are refused.
    pub fn open_reader(dir: &Path) -> Result<Log> {
        let meta_path = dir.join("log.json");
        let bytes = std::fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta = Meta::parse(&meta_path, &bytes)?;
        let mut parts = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            parts.push(Mutex::new(Partition::open(
                &dir.join(format!("p-{p:04}")),
                p,
                false,
            )?));
        }
        Ok(Log {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                options: Options {
                    partitions: meta.partitions,
                    ..Options::default()
                },
                partitions: parts,
                pending: AtomicUsize::new(0),
                offsets: Mutex::new(()),
                lock: None,
            }),
            writer: Arc::new(Writer {
                tx: Mutex::new(None),
                thread: Mutex::new(None),
            }),
        })
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.shared.partitions.len() as u32
    }

    /// The partition for a key (FNV-1a of its bytes): all records of one key stay in order.
    pub fn partition_for(&self, key: &[u8]) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for &b in key {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h % self.partitions()
    }

    /// Bytes cut from torn tails when the log was opened, per partition that had one (each also
    /// reported through `tracing` when it was cut).
    pub fn recovered(&self) -> Vec<(u32, u64)> {
        self.shared
            .partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let cut = p.lock().expect("partition lock").cut_on_open;
                (cut > 0).then_some((i as u32, cut))
            })
            .collect()
    }

    /// Bytes accepted and not yet durable.
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Queues `batch`; the returned [`Ack`] completes once it is on disk. Refused at once with
    /// [`Error::Overloaded`] if it would take the bytes not yet durable past the limit.
    pub fn append(&self, batch: Batch) -> Result<Ack> {
        let n = self.partitions();
        if let Some(&p) = batch.parts.keys().find(|&&p| p >= n) {
            return Err(Error::NoPartition {
                partition: p,
                partitions: n,
            });
        }
        let (reply, rx) = oneshot::channel();
        if batch.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(Ack { reply: rx });
        }
        let limit = self.shared.options.max_pending_bytes;
        let bytes = batch.bytes;
        let admitted =
            self.shared
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                    // A batch larger than the limit on its own still goes through when nothing
                    // else is pending, so a big request is slow rather than impossible.
                    (pending == 0 || pending + bytes <= limit).then_some(pending + bytes)
                });
        if let Err(pending) = admitted {
            return Err(Error::Overloaded { pending, limit });
        }
        let tx = self.writer.tx.lock().expect("writer lock");
        if tx.is_none() && self.shared.lock.is_none() {
            self.shared.pending.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::Config(
                "this log was opened for reading; appends go through the process that writes it"
                    .into(),
            ));
        }
        let sent = tx
            .as_ref()
            .map(|tx| tx.send(Request { batch, reply }).is_ok());
        if sent != Some(true) {
            self.shared.pending.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        Ok(Ack { reply: rx })
    }

    /// The first offset still held and the next offset to be written (durable) in a partition.
    pub fn bounds(&self, partition: u32) -> Result<(u64, u64)> {
        let p = self.partition(partition)?;
        let p = p.lock().expect("partition lock");
        Ok((p.start_offset(), p.durable_offset))
    }

    /// Reads durable records of `partition` from offset `from`, up to about `max_bytes` of
    /// records (at least one batch when there is one). A `from` below the first offset still
    /// held (deleted by retention) is [`Error::OffsetOutOfRange`].
    pub fn read(&self, partition: u32, from: u64, max_bytes: usize) -> Result<Records> {
        let view = self
            .partition(partition)?
            .lock()
            .expect("partition lock")
            .view();
        partition::read(&view, partition, from, max_bytes)
    }

    /// Like [`Log::read`], handing each record to `each` with its offset instead of copying
    /// it out; returns the offset to read from next.
    pub fn read_each(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64> {
        let view = self
            .partition(partition)?
            .lock()
            .expect("partition lock")
            .view();
        partition::read_each(&view, partition, from, max_bytes, each)
    }

    /// For a log opened with [`Log::open_reader`]: takes in what the writer has appended since
    /// it was opened or last refreshed (and forgets segments retention deleted), so a reader
    /// can follow the log. A writer's own log is always current: this does nothing.
    pub fn refresh(&self) -> Result<()> {
        if self.shared.lock.is_some() {
            return Ok(());
        }
        for p in &self.shared.partitions {
            p.lock().expect("partition lock").refresh()?;
        }
        Ok(())
    }

    /// Records `offsets` (partition → next offset to read) as what consumer `group` has
    /// processed, durably and atomically. Partitions not named keep their committed offsets.
    pub fn commit(&self, group: &str, offsets: &BTreeMap<u32, u64>) -> Result<()> {
        check_group(group)?;
        let _guard = self.shared.offsets.lock().expect("offsets lock");
        let mut all = self.committed_unlocked(group)?;
        all.extend(offsets);
        let dir = self.shared.dir.join("offsets");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let text: BTreeMap<String, u64> = all.iter().map(|(p, o)| (p.to_string(), *o)).collect();
        write_durably(
            &dir.join(format!("{group}.json")),
            &serde_json::to_vec_pretty(&text).expect("serializable"),
        )
    }

    /// The offsets consumer `group` committed (none for a new group).
    pub fn committed(&self, group: &str) -> Result<BTreeMap<u32, u64>> {
        check_group(group)?;
        let _guard = self.shared.offsets.lock().expect("offsets lock");
        self.committed_unlocked(group)
    }

    fn committed_unlocked(&self, group: &str) -> Result<BTreeMap<u32, u64>> {
        let path = self
            .shared
            .dir
            .join("offsets")
            .join(format!("{group}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let text: BTreeMap<String, u64> =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.display().to_string(),
                position: 0,
                reason: e.to_string(),
            })?;
        text.into_iter()
            .map(|(p, o)| {
                p.parse::<u32>()
                    .map(|p| (p, o))
                    .map_err(|_| Error::Corrupt {
                        path: path.display().to_string(),
                        position: 0,
                        reason: format!("`{p}` is not a partition number"),
                    })
            })
            .collect()
    }

    /// Deletes sealed segments past the retention limits; returns (segments, bytes) deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<(usize, u64)> {
        if self.shared.lock.is_none() {
            return Err(Error::Config(
                "this log was opened for reading; retention is the writer's".into(),
            ));
        }
        let o = &self.shared.options;
        let max_age_ms = o.retention_age.map(|a| a.as_millis() as i64);
        let mut total = (0, 0);
        for p in &self.shared.partitions {
            let (n, bytes) = p.lock().expect("partition lock").enforce_retention(
                now_ms,
                max_age_ms,
                o.retention_bytes,
            )?;
            total.0 += n;
            total.1 += bytes;
        }
        Ok(total)
    }

    fn partition(&self, partition: u32) -> Result<&Mutex<Partition>> {
        self.shared
            .partitions
            .get(partition as usize)
            .ok_or(Error::NoPartition {
                partition,
                partitions: self.partitions(),
            })
    }
}

fn check_group(group: &str) -> Result<()> {
    let ok = !group.is_empty()
        && group.len() <= 128
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !group.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "consumer group {group:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with .)"
        )))
    }
}

/// Writes a small file so that after a crash it holds either the old or the new contents.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a folder");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Group commit: take everything queued, write it, sync each touched partition once, then
/// acknowledge. A failed write or sync fails the appends of that partition's group (their
/// bytes are cut again, so the file stays a clean sequence of batches) and nothing else.
fn writer_loop(shared: &Shared, rx: &mpsc::Receiver<Request>) {
    let segment_bytes = shared.options.segment_bytes;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut bytes = group[0].batch.bytes;
        // Bounded per round so that a flood does not delay the first acknowledgements forever.
        while bytes < 64 << 20 {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.batch.bytes;
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let now = now_ms();
        // Per request, where each of its partitions' batches landed (or the first error).
        let mut results: Vec<Result<Vec<Appended>>> =
            group.iter().map(|_| Ok(Vec::new())).collect();
        let mut touched = vec![false; shared.partitions.len()];
        // Requests whose records went to each partition, to fail them if its sync fails.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); shared.partitions.len()];
        for (i, req) in group.iter().enumerate() {
            for (&p, (payload, count)) in &req.batch.parts {
                let mut part = shared.partitions[p as usize]
                    .lock()
                    .expect("partition lock");
                match part.append(payload, *count, now, segment_bytes) {
                    Ok(base) => {
                        touched[p as usize] = true;
                        members[p as usize].push(i);
                        if let Ok(v) = &mut results[i] {
                            v.push(Appended {
                                partition: p,
                                base_offset: base,
                                count: *count,
                            });
                        }
                    }
                    Err(e) => results[i] = Err(e),
                }
            }
        }
        for (p, t) in touched.iter().enumerate() {
            if !*t {
                continue;
            }
            let mut part = shared.partitions[p].lock().expect("partition lock");
            if let Err(e) = part.sync() {
                for &i in &members[p] {
                    results[i] = Err(e.clone());
                }
            }
        }
        for (req, result) in group.into_iter().zip(results) {
            shared.pending.fetch_sub(req.batch.bytes, Ordering::AcqRel);
            let _ = req.reply.send(result);
        }
    }
}
