//! The log's promises, against real files: order and density of offsets, recovery from torn
//! and corrupt tails, segments and retention, consumer offsets, concurrent appends.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetscore_core::ManualClock;
use fleetscore_log::{Batch, Error, Log, Meta, Options};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleetscore-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(partitions: u32) -> Options {
    Options {
        partitions,
        ..Options::default()
    }
}

/// Appends `records` to `partition`, one batch, and waits until durable.
fn append(log: &Log, partition: u32, records: &[&str]) -> u64 {
    let mut b = Batch::default();
    for r in records {
        b.push(partition, r.as_bytes());
    }
    let appended = log.append(b).unwrap().wait().unwrap();
    appended[0].base_offset
}

fn read_all(log: &Log, partition: u32, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = log.read(partition, next, 1000).unwrap();
        if r.records.is_empty() {
            return out;
        }
        next = r.next_offset;
        out.extend(
            r.records
                .into_iter()
                .map(|(o, b)| (o, String::from_utf8(b).unwrap())),
        );
    }
}

fn segments(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("p-{partition:04}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn appended_records_read_back_in_order_with_dense_offsets_after_reopening() {
    let dir = tempdir("order");
    {
        let log = Log::open(&dir, options(3)).unwrap();
        assert_eq!(append(&log, 1, &["a", "b"]), 0);
        assert_eq!(append(&log, 1, &["c"]), 2);
        assert_eq!(append(&log, 2, &["x"]), 0);
        // One append spanning partitions lands as one batch in each.
        let mut b = Batch::default();
        b.push(1, b"d");
        b.push(0, b"p");
        b.push(1, b"e");
        let mut got = log.append(b).unwrap().wait().unwrap();
        got.sort_by_key(|a| a.partition);
        assert_eq!(
            (got[0].partition, got[0].base_offset, got[0].count),
            (0, 0, 1)
        );
        assert_eq!(
            (got[1].partition, got[1].base_offset, got[1].count),
            (1, 3, 2)
        );
        assert_eq!(log.bounds(1).unwrap(), (0, 5));
    }
    let log = Log::open(&dir, options(3)).unwrap();
    assert!(log.recovered().is_empty());
    let p1: Vec<(u64, String)> = read_all(&log, 1, 0);
    assert_eq!(
        p1,
        ["a", "b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, s.to_string()))
            .collect::<Vec<_>>()
    );
    // Reading from the middle of a batch starts at that record.
    assert_eq!(read_all(&log, 1, 3)[0], (3, "d".to_string()));
    assert_eq!(read_all(&log, 0, 0), vec![(0, "p".to_string())]);
    assert!(log.read(1, 5, 1000).unwrap().records.is_empty());
    // New appends continue after what was there.
    assert_eq!(append(&log, 1, &["f"]), 5);
    assert!(matches!(
        log.read(7, 0, 10),
        Err(Error::NoPartition {
            partition: 7,
            partitions: 3
        })
    ));
    // The partition count is the log's own.
    drop(log);
    let e = Log::open(&dir, options(4)).err().unwrap();
    assert!(e.to_string().contains("has 3 partitions"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_cut_on_opening_and_everything_before_it_kept() {
    let dir = tempdir("torn");
    {
        let log = Log::open(&dir, options(1)).unwrap();
        for i in 0..10 {
            append(&log, 0, &[&format!("r{i}"), &format!("s{i}")]);
        }
    }
    let seg = segments(&dir, 0).pop().unwrap();
    let good = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write: half a batch header and some of its records.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"FSB1\x40\x00\x00\x00garbage").unwrap();
    drop(f);
    let log = Log::open(&dir, options(1)).unwrap();
    assert_eq!(log.recovered(), vec![(0, 15)]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good);
    assert_eq!(read_all(&log, 0, 0).len(), 20);
    assert_eq!(append(&log, 0, &["after"]), 20);
    assert_eq!(read_all(&log, 0, 20), vec![(20, "after".to_string())]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_last_batch_is_cut_and_a_corrupt_sealed_segment_is_named() {
    let dir = tempdir("crc");
    {
        let log = Log::open(&dir, options(1)).unwrap();
        for i in 0..5 {
            append(&log, 0, &[&format!("record-{i}")]);
        }
    }
    let seg = segments(&dir, 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0xff; // inside the last record
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(&dir, options(1)).unwrap();
    assert_eq!(log.recovered().len(), 1);
    assert_eq!(read_all(&log, 0, 0).len(), 4);
    drop(log);

    // In a sealed segment the same damage is not a torn tail: opening says where it is.
    let dir = tempdir("crc-sealed");
    {
        let log = Log::open(
            &dir,
            Options {
                partitions: 1,
                segment_bytes: 100,
                ..Options::default()
            },
        )
        .unwrap();
        for i in 0..6 {
            append(&log, 0, &[&format!("record-{i}-{}", "x".repeat(40))]);
        }
    }
    let segs = segments(&dir, 0);
    assert!(segs.len() >= 3, "{segs:?}");
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&segs[0], &bytes).unwrap();
    let e = Log::open(&dir, options(1)).err().unwrap().to_string();
    assert!(e.contains(&segs[0].display().to_string()), "{e}");
    assert!(e.contains("at byte 0: CRC mismatch"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segments_roll_and_retention_deletes_whole_sealed_segments() {
    let dir = tempdir("retention");
    let log = Log::open(
        &dir,
        Options {
            partitions: 1,
            segment_bytes: 200,
            retention_age: None,
            retention_bytes: Some(500),
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..40 {
        append(&log, 0, &[&format!("{i:04}-{}", "v".repeat(30))]);
    }
    let before = segments(&dir, 0).len();
    assert!(before > 5, "{before} segments");
    // Reads cross segment boundaries.
    let all = read_all(&log, 0, 0);
    assert_eq!(all.len(), 40);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (o, r))| *o == i as u64 && r.starts_with(&format!("{i:04}-")))
    );

    let (deleted, bytes) = log.enforce_retention(fleetscore_log_now()).unwrap();
    assert!(deleted > 0 && bytes > 0);
    let (start, end) = log.bounds(0).unwrap();
    assert!(start > 0 && end == 40, "{start}..{end}");
    let held: u64 = segments(&dir, 0)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(held <= 500 + 200, "{held} bytes held");
    match log.read(0, 0, 100) {
        Err(Error::OffsetOutOfRange { start: s, .. }) => assert_eq!(s, start),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_all(&log, 0, start).len() as u64, 40 - start);

    // By age: everything sealed is older than a zero age; the active segment stays.
    drop(log);
    let log = Log::open(
        &dir,
        Options {
            partitions: 1,
            retention_age: Some(Duration::ZERO),
            ..Options::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    log.enforce_retention(fleetscore_log_now()).unwrap();
    assert_eq!(segments(&dir, 0).len(), 1);
    assert_eq!(log.bounds(0).unwrap().1, 40);
    let _ = std::fs::remove_dir_all(&dir);
}

fn fleetscore_log_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_retention_thread_deletes_at_once_and_stops_without_waiting_out_its_period() {
    let dir = tempdir("retention-thread");
    let log = Log::open(
        &dir,
        Options {
            partitions: 1,
            segment_bytes: 200,
            retention_age: Some(Duration::from_secs(3600)),
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..40 {
        append(&log, 0, &[&format!("{i:04}-{}", "v".repeat(30))]);
    }
    assert!(segments(&dir, 0).len() > 5);
    // Two hours from now by the thread's clock, every sealed segment is past the age.
    let clock = Arc::new(ManualClock::new(fleetscore_log_now() + 2 * 3600 * 1000));
    let retention = log
        .spawn_retention(Duration::from_secs(24 * 3600), clock)
        .unwrap();
    // The first pass runs before the thread first waits; stopping ends the wait.
    retention.stop();
    assert_eq!(segments(&dir, 0).len(), 1);
    assert_eq!(log.bounds(0).unwrap().1, 40);
    // Retention is the writer's: a reader cannot start it.
    let reader = Log::open_reader(&dir).unwrap();
    let e = reader
        .spawn_retention(Duration::from_secs(1), Arc::new(ManualClock::new(0)))
        .unwrap_err();
    assert!(e.to_string().contains("retention is the writer's"), "{e}");
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn meta_says_whether_a_folder_holds_a_log_and_its_partition_count() {
    let dir = tempdir("meta");
    assert_eq!(Meta::read(&dir).unwrap(), None);
    drop(Log::open(&dir, options(3)).unwrap());
    assert_eq!(
        Meta::read(&dir).unwrap(),
        Some(Meta {
            format: 1,
            partitions: 3
        })
    );
    std::fs::write(dir.join("log.json"), "{").unwrap();
    let e = Meta::read(&dir).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { path, .. } if path.ends_with("log.json")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn consumer_offsets_are_committed_per_group_and_survive_reopening() {
    let dir = tempdir("offsets");
    {
        let log = Log::open(&dir, options(4)).unwrap();
        assert!(log.committed("agg").unwrap().is_empty());
        log.commit("agg", &BTreeMap::from([(0, 10), (3, 7)]))
            .unwrap();
        log.commit("agg", &BTreeMap::from([(3, 9)])).unwrap();
        log.commit("other", &BTreeMap::from([(1, 1)])).unwrap();
        let e = log.commit("../escape", &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("consumer group"), "{e}");
    }
    let log = Log::open(&dir, options(4)).unwrap();
    assert_eq!(
        log.committed("agg").unwrap(),
        BTreeMap::from([(0, 10), (3, 9)])
    );
    assert_eq!(log.committed("other").unwrap(), BTreeMap::from([(1, 1)]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_appenders_each_get_every_record_acknowledged_exactly_once() {
    let dir = tempdir("concurrent");
    let log = Log::open(&dir, options(2)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for i in 0..200 {
                    let mut b = Batch::default();
                    for j in 0..5 {
                        let r = format!("t{t}-{i}-{j}");
                        b.push(log.partition_for(r.as_bytes()), r.as_bytes());
                    }
                    acks.push(log.append(b).unwrap());
                }
                acks.into_iter()
                    .map(|a| a.wait().unwrap().iter().map(|x| x.count).sum::<u32>())
                    .sum::<u32>()
            })
        })
        .collect();
    let acked: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(acked, 4000);
    let mut seen: Vec<String> = (0..2)
        .flat_map(|p| read_all(&log, p, 0))
        .map(|(_, r)| r)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_append_past_the_pending_limit_is_refused_not_queued() {
    let dir = tempdir("overload");
    let log = Log::open(
        &dir,
        Options {
            partitions: 1,
            max_pending_bytes: 1_000,
            ..Options::default()
        },
    )
    .unwrap();
    // Alone, even an append larger than the limit goes through.
    let mut big = Batch::default();
    big.push(0, &[7u8; 5_000]);
    let first = log.append(big).unwrap();
    // While it is not yet durable, more is refused (unless the writer was already done).
    let mut more = Batch::default();
    more.push(0, b"x");
    match log.append(more) {
        Err(Error::Overloaded { pending, limit }) => {
            assert!(pending >= 5_000 && limit == 1_000);
        }
        Ok(ack) => {
            ack.wait().unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    first.wait().unwrap();
    assert_eq!(log.pending_bytes(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_writer_at_a_time_and_readers_beside_it_repair_nothing() {
    let dir = tempdir("reader");
    let log = Log::open(&dir, options(2)).unwrap();
    append(&log, 1, &["a", "b"]);
    let e = Log::open(&dir, options(2)).err().unwrap().to_string();
    assert!(e.contains("another process is writing the log"), "{e}");

    // A batch being written looks like a torn tail to a reader: it stops before it, cuts
    // nothing, and the writer's later appends land where they should.
    let seg = segments(&dir, 1).pop().unwrap();
    let size = std::fs::metadata(&seg).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"FSB1\x40\x00").unwrap();
    drop(f);
    let reader = Log::open_reader(&dir).unwrap();
    assert_eq!(read_all(&reader, 1, 0).len(), 2);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), size + 6);
    let mut b = Batch::default();
    b.push(0, b"x");
    let e = reader.append(b).unwrap_err().to_string();
    assert!(e.contains("opened for reading"), "{e}");
    assert!(reader.enforce_retention(0).is_err());
    // Consumers commit offsets from wherever they read.
    reader.commit("agg", &BTreeMap::from([(1, 2)])).unwrap();
    assert_eq!(log.committed("agg").unwrap(), BTreeMap::from([(1, 2)]));
    drop(log);
    // The next writer cuts the torn bytes and goes on.
    let log = Log::open(&dir, options(2)).unwrap();
    assert_eq!(log.recovered(), vec![(1, 6)]);
    assert_eq!(append(&log, 1, &["c"]), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_follows_the_writer_with_refresh() {
    let dir = tempdir("follow");
    let log = Log::open(
        &dir,
        Options {
            partitions: 2,
            segment_bytes: 200,
            ..Options::default()
        },
    )
    .unwrap();
    append(&log, 0, &["a", "b"]);
    let reader = Log::open_reader(&dir).unwrap();
    assert_eq!(reader.bounds(0).unwrap(), (0, 2));
    // Enough appends to roll several segments.
    for i in 0..30 {
        append(&log, 0, &[&format!("record-{i:02}-{}", "x".repeat(20))]);
    }
    append(&log, 1, &["z"]);
    assert_eq!(
        reader.bounds(0).unwrap(),
        (0, 2),
        "a snapshot until refreshed"
    );
    reader.refresh().unwrap();
    assert_eq!(reader.bounds(0).unwrap(), (0, 32));
    assert_eq!(reader.bounds(1).unwrap(), (0, 1));
    let all = read_all(&reader, 0, 0);
    assert_eq!(all.len(), 32);
    assert_eq!(all[31].1, format!("record-29-{}", "x".repeat(20)));
    let mut seen = Vec::new();
    let next = reader
        .read_each(0, 5, 1 << 20, &mut |o, r| {
            seen.push((o, String::from_utf8(r.to_vec()).unwrap()))
        })
        .unwrap();
    assert_eq!(next, 32);
    assert_eq!(seen, all[5..].to_vec());
    // Retention deletes old segments; the reader forgets them on refresh.
    drop(log);
    let log = Log::open(
        &dir,
        Options {
            partitions: 2,
            segment_bytes: 200,
            retention_bytes: Some(300),
            ..Options::default()
        },
    )
    .unwrap();
    let (deleted, _) = log.enforce_retention(0).unwrap();
    assert!(deleted > 0);
    reader.refresh().unwrap();
    let (start, end) = reader.bounds(0).unwrap();
    assert!(start > 0 && end == 32, "{start}..{end}");
    assert!(matches!(
        reader.read(0, 0, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&reader, 0, start).len() as u64, 32 - start);
    drop(log);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reader_process_reads_only_what_the_writer_synced() {
    let dir = tempdir("synced");
    let log = Log::open(&dir, options(1)).unwrap();
    for i in 0..10 {
        append(&log, 0, &[&format!("r{i}")]);
    }
    drop(log);
    // As if the last six batches were written but their fsync had not returned: the writer's
    // marker still says 4.
    let marker = dir.join("p-0000").join("durable");
    assert_eq!(std::fs::read(&marker).unwrap(), 10u64.to_le_bytes());
    std::fs::write(&marker, 4u64.to_le_bytes()).unwrap();
    let reader = Log::open_reader(&dir).unwrap();
    assert_eq!(reader.bounds(0).unwrap(), (0, 4));
    assert_eq!(read_all(&reader, 0, 0).len(), 4);
    std::fs::write(&marker, 10u64.to_le_bytes()).unwrap();
    reader.refresh().unwrap();
    assert_eq!(reader.bounds(0).unwrap(), (0, 10));
    assert_eq!(read_all(&reader, 0, 0).last().unwrap().1, "r9");
    std::fs::remove_dir_all(&dir).unwrap();
}
