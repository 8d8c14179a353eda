//! One partition: a folder of segment files, each a sequence of record batches.
//!
//! A batch on disk, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FSB1` |
//! | 4 | length of the rest of the batch after the CRC |
//! | 4 | CRC-32 (IEEE) of the rest of the batch after the CRC |
//! | 8 | offset of the first record |
//! | 4 | number of records |
//! | 8 | append time, milliseconds since the epoch |
//! | … | records, each a 4-byte length and its bytes |

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::{Records, sync_dir};

const MAGIC: &[u8; 4] = b"FSB1";
/// The writer's marker file of durable offsets in a partition's folder.
const DURABLE: &str = "durable";
/// Magic, length, CRC.
const PREFIX: usize = 12;
/// Prefix, first offset, count, append time.
pub(crate) const HEADER: usize = PREFIX + 8 + 4 + 8;
/// A batch claiming to be longer than this is corrupt (no append writes one).
const MAX_BATCH: usize = 1 << 30;
/// An index entry is kept about every this many bytes of a segment.
const INDEX_EVERY: u64 = 256 << 10;

/// A segment: its first offset, how much of it is durable, and a sparse index.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    /// Bytes that are durable (readers stop here).
    pub(crate) len: u64,
    /// Offset after the last durable record.
    pub(crate) end: u64,
    /// `(first offset of a batch, its byte position)`, about every [`INDEX_EVERY`] bytes.
    pub(crate) index: Vec<(u64, u64)>,
    /// Append time of the newest batch (for retention by age).
    pub(crate) newest_ms: i64,
}

/// What a reader needs: the segments as of now (durable parts only).
pub(crate) struct View {
    segments: Vec<Segment>,
}

pub(crate) struct Partition {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Append handle of the last segment.
    active: File,
    /// The writer's `durable` file: the offset below which records are durable, rewritten
    /// after every sync, so that reader processes never read a batch that is written but not
    /// yet synced (and could still be cut). `None` for readers.
    marker: Option<File>,
    /// Bytes written to the active segment, durable or not.
    written: u64,
    /// Offset the next appended record gets.
    next_offset: u64,
    /// Offsets below this are durable.
    pub(crate) durable_offset: u64,
    /// Newest append time written (durable or not).
    written_newest_ms: i64,
    /// Index entries for written, not yet durable batches.
    pending_index: Vec<(u64, u64)>,
    /// Bytes cut from a torn tail when the partition was opened.
    pub(crate) cut_on_open: u64,
    buf: Vec<u8>,
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

impl Partition {
    /// Opens (or creates) the partition in `dir`; checks the active segment and, when
    /// `repair`, cuts a torn tail (a reader beside a running writer must not: what looks torn
    /// may be a batch being written, so it just stops before it).
    pub(crate) fn open(dir: &Path, number: u32, repair: bool) -> Result<Partition> {
        if repair {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".seg") {
                let base = stem.parse::<u64>().map_err(|_| Error::Corrupt {
                    path: entry.path().display().to_string(),
                    position: 0,
                    reason: "a segment's name must be its first offset".into(),
                })?;
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() && !repair {
            return Err(Error::Corrupt {
                path: dir.display().to_string(),
                position: 0,
                reason: format!("partition {number} has no segment"),
            });
        }
        if bases.is_empty() {
            File::create(dir.join(segment_name(0))).map_err(|e| Error::io(dir, e))?;
            sync_dir(dir)?;
            bases.push(0);
        }
        let limit = if repair { u64::MAX } else { durable_limit(dir) };
        let mut segments = Vec::with_capacity(bases.len());
        let mut cut = 0;
        let last = bases.len() - 1;
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_name(base));
            let (segment, torn) = scan(&path, base, i == last, limit)?;
            if let Some(prev) = segments.last().map(|s: &Segment| s.end)
                && prev != base
            {
                return Err(Error::Corrupt {
                    path: path.display().to_string(),
                    position: 0,
                    reason: format!(
                        "partition {number}: the previous segment ends at offset {prev}, this one starts at {base}"
                    ),
                });
            }
            if let Some(at) = torn.filter(|_| repair) {
                let size = std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len();
                cut = size - at;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                f.set_len(at).map_err(|e| Error::io(&path, e))?;
                f.sync_all().map_err(|e| Error::io(&path, e))?;
            }
            segments.push(segment);
        }
        let tail = segments.last().expect("at least one segment");
        let marker = if repair {
            let path = dir.join(DURABLE);
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.write_all_at(&tail.end.to_le_bytes(), 0)
                .map_err(|e| Error::io(&path, e))?;
            Some(f)
        } else {
            None
        };
        let active = OpenOptions::new()
            .read(true)
            .append(repair)
            .open(&tail.path)
            .map_err(|e| Error::io(&tail.path, e))?;
        Ok(Partition {
            dir: dir.to_path_buf(),
            written: tail.len,
            next_offset: tail.end,
            durable_offset: tail.end,
            written_newest_ms: tail.newest_ms,
            pending_index: Vec::new(),
            cut_on_open: cut,
            active,
            marker,
            segments,
            buf: Vec::new(),
        })
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base)
    }

    pub(crate) fn view(&self) -> View {
        View {
            segments: self.segments.clone(),
        }
    }

    /// For a reader beside the writer: takes in what was appended since it last looked (new
    /// batches of the last segment, new segments) and forgets segments retention deleted.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            if let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let Some(&first) = bases.first() else {
            return Err(Error::Corrupt {
                path: self.dir.display().to_string(),
                position: 0,
                reason: "the partition has no segment left".into(),
            });
        };
        // Segments older than the oldest file left were deleted by retention (oldest first) —
        // possibly every segment this reader knew, if it fell far enough behind.
        self.segments.retain(|s| s.base >= first);
        let limit = durable_limit(&self.dir);
        // Scanned leniently: a batch being written looks torn until it is complete (`read`
        // checks every batch's CRC again anyway).
        if let Some(tail) = self.segments.last_mut() {
            match scan_more(tail, true, limit) {
                Ok(_) => {}
                // Deleted by retention since the listing: start again from the files left.
                Err(Error::Io {
                    kind: std::io::ErrorKind::NotFound,
                    ..
                }) => {
                    self.segments.clear();
                }
                Err(e) => return Err(e),
            }
        }
        let last_base = self.segments.last().map(|s| s.base);
        for base in bases
            .into_iter()
            .filter(|&b| last_base.is_none_or(|l| b > l))
        {
            if let Some(prev) = self.segments.last()
                && prev.end != base
            {
                // Written but not yet made durable, or a roll in progress: look again later.
                break;
            }
            let mut segment = Segment {
                base,
                path: self.dir.join(segment_name(base)),
                len: 0,
                end: base,
                index: Vec::new(),
                newest_ms: 0,
            };
            match scan_more(&mut segment, true, limit) {
                Ok(_) => self.segments.push(segment),
                Err(Error::Io { kind, .. })
                    if kind == std::io::ErrorKind::NotFound && self.segments.is_empty() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        if self.segments.is_empty() {
            return Err(Error::Corrupt {
                path: self.dir.display().to_string(),
                position: 0,
                reason: "segments were deleted while being read; try again".into(),
            });
        }
        let tail = self.segments.last().expect("a segment");
        self.durable_offset = tail.end;
        self.next_offset = tail.end;
        Ok(())
    }

    /// Writes one batch (not yet durable); returns its first offset. A failed write is cut
    /// again, so the segment stays a clean sequence of batches.
    pub(crate) fn append(
        &mut self,
        payload: &[u8],
        count: u32,
        now_ms: i64,
        segment_bytes: u64,
    ) -> Result<u64> {
        let size = (HEADER + payload.len()) as u64;
        if self.written > 0 && self.written + size > segment_bytes {
            self.roll()?;
        }
        let base = self.next_offset;
        self.buf.clear();
        self.buf.extend_from_slice(MAGIC);
        self.buf
            .extend_from_slice(&((HEADER - PREFIX + payload.len()) as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(&base.to_le_bytes());
        self.buf.extend_from_slice(&count.to_le_bytes());
        self.buf.extend_from_slice(&now_ms.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.buf[PREFIX..]);
        crc.update(payload);
        let crc = crc.finalize();
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
        let path = &self.segments.last().expect("active segment").path;
        let written = self
            .active
            .write_all(&self.buf)
            .and_then(|()| self.active.write_all(payload));
        if let Err(e) = written {
            let _ = self.active.set_len(self.written);
            return Err(Error::io(path, e));
        }
        let last_indexed = self
            .pending_index
            .last()
            .or(self.segments.last().and_then(|s| s.index.last()))
            .map(|&(_, pos)| pos);
        if last_indexed.is_none_or(|pos| self.written >= pos + INDEX_EVERY) {
            self.pending_index.push((base, self.written));
        }
        self.written += size;
        self.next_offset += u64::from(count);
        self.written_newest_ms = now_ms;
        Ok(base)
    }

    /// Makes everything written durable and visible to readers. On failure the unsynced
    /// batches are cut, so none of them is ever read, and the error is returned for every
    /// append they carried.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if let Err(e) = self.sync_written() {
            let tail = self.segments.last().expect("active segment");
            let _ = self.active.set_len(tail.len);
            self.written = tail.len;
            self.next_offset = tail.end;
            self.written_newest_ms = tail.newest_ms;
            self.pending_index.clear();
            return Err(e);
        }
        Ok(())
    }

    /// `fdatasync`s the active segment and, if that worked, makes what was written visible;
    /// on failure changes nothing (the caller decides whether to cut).
    fn sync_written(&mut self) -> Result<()> {
        let tail = self.segments.last_mut().expect("active segment");
        self.active
            .sync_data()
            .map_err(|e| Error::io(&tail.path, e))?;
        tail.len = self.written;
        tail.end = self.next_offset;
        tail.newest_ms = self.written_newest_ms;
        tail.index.append(&mut self.pending_index);
        self.durable_offset = self.next_offset;
        if let Some(m) = &self.marker {
            // Readers lag until the next sync if this fails; nothing durable is lost.
            let _ = m.write_all_at(&self.durable_offset.to_le_bytes(), 0);
        }
        Ok(())
    }

    /// Seals the active segment (synced first) and starts a new one at the next offset. If the
    /// sync fails nothing is cut here: the round's closing [`Partition::sync`] fails (and cuts)
    /// for every append of the round, or succeeds for all of them.
    fn roll(&mut self) -> Result<()> {
        self.sync_written()?;
        let path = self.dir.join(segment_name(self.next_offset));
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)?;
        self.active = active;
        self.written = 0;
        self.segments.push(Segment {
            base: self.next_offset,
            path,
            len: 0,
            end: self.next_offset,
            index: Vec::new(),
            newest_ms: self.written_newest_ms,
        });
        Ok(())
    }

    /// Deletes the oldest sealed segments past the limits; returns (segments, bytes) deleted.
    pub(crate) fn enforce_retention(
        &mut self,
        now_ms: i64,
        max_age_ms: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<(usize, u64)> {
        let mut total: u64 = self.segments.iter().map(|s| s.len).sum();
        let mut deleted = (0, 0);
        // The active (last) segment is never deleted.
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_old = max_age_ms.is_some_and(|age| oldest.newest_ms < now_ms - age);
            let too_big = max_bytes.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                break;
            }
            std::fs::remove_file(&oldest.path).map_err(|e| Error::io(&oldest.path, e))?;
            total -= oldest.len;
            deleted.0 += 1;
            deleted.1 += oldest.len;
            self.segments.remove(0);
        }
        if deleted.0 > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }
}

/// Reads a batch header at `pos`: `(first offset, count, append time, batch length)`, or why
/// there is no valid batch there.
fn header(file: &File, path: &Path, pos: u64, size: u64) -> Result<Option<[u8; HEADER]>> {
    if size - pos < HEADER as u64 {
        return Ok(None);
    }
    let mut h = [0u8; HEADER];
    file.read_exact_at(&mut h, pos)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(h))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks a batch: magic, length within the file, CRC, first offset. Returns its body (after
/// the CRC) or why it is not valid.
fn check_batch(
    file: &File,
    path: &Path,
    pos: u64,
    size: u64,
    expected_base: u64,
    body: &mut Vec<u8>,
) -> Result<std::result::Result<(), String>> {
    let Some(h) = header(file, path, pos, size)? else {
        return Ok(Err(format!(
            "{} bytes, shorter than a batch header",
            size - pos
        )));
    };
    if &h[..4] != MAGIC {
        return Ok(Err("no batch starts here (bad magic)".into()));
    }
    let len = u32_at(&h, 4) as usize;
    if !(HEADER - PREFIX..=MAX_BATCH).contains(&len) || pos + (PREFIX + len) as u64 > size {
        return Ok(Err(format!(
            "a batch of {len} bytes does not fit in the {} left",
            size - pos - PREFIX as u64
        )));
    }
    body.resize(len, 0);
    file.read_exact_at(body, pos + PREFIX as u64)
        .map_err(|e| Error::io(path, e))?;
    if crc32fast::hash(body) != u32_at(&h, 8) {
        return Ok(Err("CRC mismatch".into()));
    }
    let base = u64_at(body, 0);
    if base != expected_base {
        return Ok(Err(format!(
            "the batch starts at offset {base}, expected {expected_base}"
        )));
    }
    Ok(Ok(()))
}

/// Scans a segment: builds its index and finds where it ends. In the active segment a bad
/// batch is a torn tail (returned as where to cut); in a sealed one it is corruption.
/// What a reader may read of a partition: only what the writer has synced (a log written before
/// the marker existed has none: everything).
fn durable_limit(dir: &Path) -> u64 {
    match std::fs::read(dir.join(DURABLE)) {
        Ok(b) if b.len() == 8 => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        _ => u64::MAX,
    }
}

fn scan(path: &Path, base: u64, active: bool, limit: u64) -> Result<(Segment, Option<u64>)> {
    let mut seg = Segment {
        base,
        path: path.to_path_buf(),
        len: 0,
        end: base,
        index: Vec::new(),
        newest_ms: 0,
    };
    let torn = scan_more(&mut seg, active, limit)?;
    Ok((seg, torn))
}

/// Goes on scanning `seg` from its `len`: extends its index, `end` and `len` over the valid
/// batches after it, and returns where a bad batch starts if there is one (in the active
/// segment a torn tail, or a batch being written; in a sealed one, corruption is an error).
/// It stops before a batch that ends past `limit`.
fn scan_more(seg: &mut Segment, active: bool, limit: u64) -> Result<Option<u64>> {
    let path = seg.path.clone();
    let path = path.as_path();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut pos = seg.len;
    let mut body = Vec::new();
    while pos < size {
        match check_batch(&file, path, pos, size, seg.end, &mut body)? {
            Ok(()) => {
                let count = u32_at(&body, 8);
                if seg.end + u64::from(count) > limit {
                    break;
                }
                let time = u64_at(&body, 12) as i64;
                if seg
                    .index
                    .last()
                    .is_none_or(|&(_, p)| pos >= p + INDEX_EVERY)
                {
                    seg.index.push((seg.end, pos));
                }
                seg.end += u64::from(count);
                seg.newest_ms = time;
                pos += (PREFIX + body.len()) as u64;
            }
            Err(_) if active => {
                seg.len = pos;
                return Ok(Some(pos));
            }
            Err(reason) => {
                return Err(Error::Corrupt {
                    path: path.display().to_string(),
                    position: pos,
                    reason,
                });
            }
        }
    }
    seg.len = pos;
    if seg.newest_ms == 0 {
        seg.newest_ms = file
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
    }
    Ok(None)
}

/// Reads durable records from `from` on, up to about `max_bytes`.
pub(crate) fn read(view: &View, partition: u32, from: u64, max_bytes: usize) -> Result<Records> {
    let mut records = Vec::new();
    let next_offset = read_each(view, partition, from, max_bytes, &mut |o, r| {
        records.push((o, r.to_vec()));
    })?;
    Ok(Records {
        records,
        next_offset,
    })
}

/// Hands each durable record from `from` on, up to about `max_bytes`, to `each` with its
/// offset; returns the offset to read from next.
pub(crate) fn read_each(
    view: &View,
    partition: u32,
    from: u64,
    max_bytes: usize,
    each: &mut dyn FnMut(u64, &[u8]),
) -> Result<u64> {
    let start = view.segments.first().map_or(0, |s| s.base);
    let end = view.segments.last().map_or(0, |s| s.end);
    if from < start {
        return Err(Error::OffsetOutOfRange {
            partition,
            requested: from,
            start,
        });
    }
    let mut next = from.min(end);
    let mut bytes = 0usize;
    let first = view.segments.partition_point(|s| s.base <= from).max(1) - 1;
    let mut body = Vec::new();
    for seg in &view.segments[first..] {
        if seg.end <= next || seg.len == 0 {
            continue;
        }
        let file = match File::open(&seg.path) {
            Ok(f) => f,
            // Deleted by retention since the view was taken.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::OffsetOutOfRange {
                    partition,
                    requested: next,
                    start: seg.end,
                });
            }
            Err(e) => return Err(Error::io(&seg.path, e)),
        };
        let i = seg.index.partition_point(|&(o, _)| o <= next);
        let (mut offset, mut pos) = if i == 0 {
            (seg.base, 0)
        } else {
            seg.index[i - 1]
        };
        while pos < seg.len {
            if let Err(reason) = check_batch(&file, &seg.path, pos, seg.len, offset, &mut body)? {
                return Err(Error::Corrupt {
                    path: seg.path.display().to_string(),
                    position: pos,
                    reason,
                });
            }
            let count = u32_at(&body, 8);
            let batch_end = offset + u64::from(count);
            if batch_end > next {
                let mut at = HEADER - PREFIX;
                for o in offset..batch_end {
                    let n = u32_at(&body, at) as usize;
                    let record = body.get(at + 4..at + 4 + n).ok_or_else(|| Error::Corrupt {
                        path: seg.path.display().to_string(),
                        position: pos,
                        reason: "a record runs past its batch".into(),
                    })?;
                    if o >= next {
                        each(o, record);
                        bytes += n;
                    }
                    at += 4 + n;
                }
                next = batch_end;
            }
            offset = batch_end;
            pos += (PREFIX + body.len()) as u64;
            if bytes >= max_bytes {
                return Ok(next);
            }
        }
    }
    Ok(next)
}
