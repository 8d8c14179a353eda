//! The zip archive around a skops file, read from memory with no trust in what it declares: the
//! central directory is the index, every member must sit where it says, alone, before the
//! directory, under a plain relative name used once; the sizes it declares are checked against
//! what the bytes hold, inflated output is charged to the load's budget before it is written and
//! stops at the declared size, and every member's CRC-32 is checked.
//!
//! Only what Python's `zipfile` writes is read: stored, deflate, bzip2 and LZMA members, zip64
//! records, no encryption, one disk.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use crate::budget::{Budget, GROWTH};

/// Local file header, central directory header, end of central directory (and its zip64 form
/// and locator).
const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
const END64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;

/// Fixed sizes of the records above (before their variable parts).
const LOCAL_LEN: usize = 30;
const CENTRAL_LEN: usize = 46;
const END_LEN: usize = 22;
const END64_LEN: usize = 56;
const LOCATOR64_LEN: usize = 20;

/// How a member's data is compressed (the zip "method").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Stored,
    Deflate,
    Bzip2,
    Lzma,
}

impl Method {
    fn of(code: u16) -> Option<Method> {
        Some(match code {
            0 => Method::Stored,
            8 => Method::Deflate,
            12 => Method::Bzip2,
            14 => Method::Lzma,
            _ => return None,
        })
    }

    /// The name Python's `zipfile` gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::Stored => "stored",
            Method::Deflate => "deflate",
            Method::Bzip2 => "bzip2",
            Method::Lzma => "lzma",
        }
    }
}

/// A member, as the central directory describes it and the local header confirms.
#[derive(Debug)]
struct Member {
    name: String,
    method: Method,
    /// General purpose flags (bit 1 of an LZMA member: the stream ends with a marker).
    flags: u16,
    crc: u32,
    /// Where its local header starts.
    header: usize,
    /// Where its (compressed) data starts and how long it is.
    data: usize,
    compressed: usize,
    size: u64,
}

/// Why reading the archive stopped.
#[derive(Debug)]
pub(crate) enum ZipError {
    /// The archive, or the named member, is malformed or unsafe.
    Bad {
        member: Option<String>,
        message: String,
    },
    /// Reading would pass the load's memory budget (`limit` bytes).
    Memory { member: String, limit: usize },
}

type Result<T> = std::result::Result<T, ZipError>;

fn bad<T>(message: impl Into<String>) -> Result<T> {
    Err(ZipError::Bad {
        member: None,
        message: message.into(),
    })
}

fn bad_member<T>(name: &str, message: impl Into<String>) -> Result<T> {
    Err(ZipError::Bad {
        member: Some(name.to_string()),
        message: message.into(),
    })
}

/// Little-endian fields at fixed offsets of a record that is known to be long enough.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `len` bytes of `bytes` at `at`, or why not.
fn slice<'b>(bytes: &'b [u8], at: u64, len: u64, what: &str) -> Result<&'b [u8]> {
    let end = at.checked_add(len);
    match end {
        Some(end) if end <= bytes.len() as u64 => Ok(&bytes[at as usize..end as usize]),
        _ => bad(format!(
            "{what} at byte {at} ({len} bytes) lies beyond the end of the file ({} bytes)",
            bytes.len()
        )),
    }
}

/// Whether a file starts like a zip archive (a local file header, or the end record of an
/// empty archive).
pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// A zip archive in memory, its directory checked.
#[derive(Debug)]
pub(crate) struct Archive<'a> {
    bytes: &'a [u8],
    members: Vec<Member>,
    by_name: HashMap<String, usize>,
}

impl<'a> Archive<'a> {
    /// Reads and checks the central directory and every member's local header; charges the
    /// directory's copy to `budget`.
    pub(crate) fn open(bytes: &'a [u8], budget: &Budget) -> Result<Archive<'a>> {
        let (count, dir_at, dir_len, dir_end) = find_directory(bytes)?;
        // Each entry takes 46 bytes at least: a count the directory cannot hold is a lie, and
        // nothing is reserved for it.
        if count.saturating_mul(CENTRAL_LEN as u64) > dir_len {
            return bad(format!(
                "the central directory declares {count} members in {dir_len} bytes"
            ));
        }
        if dir_at.checked_add(dir_len) != Some(dir_end) {
            return bad(format!(
                "the central directory ({dir_len} bytes at byte {dir_at}) does not end where the end record starts (byte {dir_end}): data before or inside the archive"
            ));
        }
        let dir = slice(bytes, dir_at, dir_len, "the central directory")?;
        let mut members: Vec<Member> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut pos = 0usize;
        for i in 0..count {
            if dir.len() - pos < CENTRAL_LEN || u32_at(dir, pos) != CENTRAL {
                return bad(format!(
                    "central directory entry {i} at byte {} is not a directory header",
                    dir_at + pos as u64
                ));
            }
            let e = &dir[pos..];
            let flags = u16_at(e, 8);
            let code = u16_at(e, 10);
            let crc = u32_at(e, 16);
            let mut compressed = u64::from(u32_at(e, 20));
            let mut size = u64::from(u32_at(e, 24));
            let name_len = usize::from(u16_at(e, 28));
            let extra_len = usize::from(u16_at(e, 30));
            let comment_len = usize::from(u16_at(e, 32));
            let disk = u16_at(e, 34);
            let mut offset = u64::from(u32_at(e, 42));
            let total = CENTRAL_LEN + name_len + extra_len + comment_len;
            if e.len() < total {
                return bad(format!(
                    "central directory entry {i} runs past the directory"
                ));
            }
            let raw_name = &e[CENTRAL_LEN..CENTRAL_LEN + name_len];
            let name = member_name(raw_name)?;
            let extra = &e[CENTRAL_LEN + name_len..CENTRAL_LEN + name_len + extra_len];
            zip64_fields(extra, &mut size, &mut compressed, &mut offset)
                .or_else(|m| bad_member(&name, m))?;
            if flags & 0x0001 != 0 || flags & 0x0040 != 0 {
                return bad_member(&name, "is encrypted; skops files are never encrypted");
            }
            let method = Method::of(code).ok_or_else(|| ZipError::Bad {
                member: Some(name.clone()),
                message: format!(
                    "uses compression method {code}{}, which this reader does not read (stored, deflate, bzip2 and lzma are read)",
                    match code {
                        93 => " (zstd)",
                        9 => " (deflate64)",
                        _ => "",
                    }
                ),
            })?;
            if disk != 0 {
                return bad_member(
                    &name,
                    format!("starts on disk {disk}: multi-disk archives are not read"),
                );
            }
            if method == Method::Stored && size != compressed {
                return bad_member(
                    &name,
                    format!(
                        "is stored, yet declares {compressed} bytes stored for {size} bytes of data"
                    ),
                );
            }
            // The local header must agree with the directory: a mismatch is how one archive shows
            // different files to different readers.
            let local = slice(bytes, offset, LOCAL_LEN as u64, "a local header").or_else(|_| {
                bad_member(
                    &name,
                    format!("has its local header at byte {offset}, past the end of the file"),
                )
            })?;
            if u32_at(local, 0) != LOCAL {
                return bad_member(&name, format!("has no local header at byte {offset}"));
            }
            let local_name_len = u64::from(u16_at(local, 26));
            let local_extra_len = u64::from(u16_at(local, 28));
            let local_name = slice(
                bytes,
                offset.saturating_add(LOCAL_LEN as u64),
                local_name_len,
                "a local name",
            )
            .or_else(|e| bad_member(&name, describe(e)))?;
            if local_name != raw_name {
                return bad_member(
                    &name,
                    format!(
                        "is named {:?} in its local header",
                        String::from_utf8_lossy(local_name)
                    ),
                );
            }
            if u16_at(local, 8) != code {
                return bad_member(&name, "has another compression method in its local header");
            }
            let data = offset.saturating_add(LOCAL_LEN as u64 + local_name_len + local_extra_len);
            match data.checked_add(compressed) {
                Some(end) if end <= dir_at => {}
                _ => {
                    return bad_member(
                        &name,
                        format!(
                            "declares {compressed} bytes of data at byte {data}, past the central directory at byte {dir_at}"
                        ),
                    );
                }
            }
            if by_name.contains_key(&name) {
                return bad_member(&name, "appears twice in the archive");
            }
            budget
                .charge(
                    (std::mem::size_of::<Member>() + 2 * name.len() + 16).saturating_mul(GROWTH),
                )
                .map_err(|e| ZipError::Memory {
                    member: name.clone(),
                    limit: e.limit,
                })?;
            by_name.insert(name.clone(), members.len());
            members.push(Member {
                name,
                method,
                flags,
                crc,
                header: offset as usize,
                data: data as usize,
                compressed: compressed as usize,
                size,
            });
            pos += total;
        }
        if pos != dir.len() {
            return bad(format!(
                "the central directory has {} bytes after its {count} entries",
                dir.len() - pos
            ));
        }
        // Members may not share bytes: overlapping members turn a small file into many large
        // ones.
        let mut order: Vec<(usize, usize, &str)> = members
            .iter()
            .map(|m| (m.header, m.data + m.compressed, m.name.as_str()))
            .collect();
        order.sort_unstable();
        for w in order.windows(2) {
            if w[1].0 < w[0].1 {
                return bad_member(w[1].2, format!("overlaps member `{}`", w[0].2));
            }
        }
        Ok(Archive {
            bytes,
            members,
            by_name,
        })
    }

    /// Whether a member of this name exists.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The compression methods the archive's members use.
    pub(crate) fn methods(&self) -> Vec<Method> {
        let mut m: Vec<Method> = self.members.iter().map(|m| m.method).collect();
        m.sort_by_key(|m| *m as u8);
        m.dedup();
        m
    }

    /// A member's contents: borrowed when stored, else decompressed into memory charged to
    /// `budget` before it is allocated. At most `max_bytes` (and the budget) are produced.
    pub(crate) fn read(
        &self,
        name: &str,
        budget: &Budget,
        max_bytes: usize,
    ) -> Result<Cow<'a, [u8]>> {
        let Some(&i) = self.by_name.get(name) else {
            return bad_member(name, "is not in the archive");
        };
        let m = &self.members[i];
        let raw = &self.bytes[m.data..m.data + m.compressed];
        let out: Cow<'a, [u8]> = match m.method {
            // Already in memory, and its size checked against the directory's.
            Method::Stored => Cow::Borrowed(raw),
            method => {
                // The output is charged before it is allocated; LZMA's dictionary can grow as
                // large as the output, so it is charged twice.
                let factor = if method == Method::Lzma { 2 } else { 1 };
                let size = usize::try_from(m.size).unwrap_or(usize::MAX);
                budget
                    .charge(size.saturating_mul(factor))
                    .map_err(|e| ZipError::Memory {
                        member: name.to_string(),
                        limit: e.limit,
                    })?;
                if size > max_bytes {
                    return bad_member(
                        name,
                        format!("declares {size} bytes, more than the limit of {max_bytes}"),
                    );
                }
                Cow::Owned(inflate(m, raw, size)?)
            }
        };
        let mut crc = flate2::Crc::new();
        crc.update(&out);
        if crc.sum() != m.crc {
            return bad_member(
                name,
                format!(
                    "fails its CRC-32 check (0x{:08x}, the directory says 0x{:08x}): the file is corrupt or was altered",
                    crc.sum(),
                    m.crc
                ),
            );
        }
        Ok(out)
    }
}

/// Decompresses a member into exactly its declared size: more output, or less, is an error,
/// noticed as the bytes arrive.
fn inflate(m: &Member, raw: &[u8], size: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size);
    let mut sink = Bounded {
        out: &mut out,
        limit: size,
    };
    let fail = |e: String| ZipError::Bad {
        member: Some(m.name.clone()),
        message: e,
    };
    match m.method {
        Method::Stored => unreachable!("stored members are borrowed"),
        Method::Deflate => pump(flate2::read::DeflateDecoder::new(raw), &mut sink),
        Method::Bzip2 => pump(bzip2::read::BzDecoder::new(raw), &mut sink),
        Method::Lzma => lzma(raw, m, &mut sink),
    }
    .map_err(|e| fail(format!("does not decompress ({}): {e}", m.method.name())))?;
    if out.len() != size {
        return Err(fail(format!(
            "decompresses to {} bytes, not the {size} bytes it declares",
            out.len()
        )));
    }
    Ok(out)
}

/// Copies a decoder's output into the sink in chunks, so that an overlong stream stops at the
/// first chunk past the limit.
fn pump(mut reader: impl Read, sink: &mut Bounded<'_>) -> std::result::Result<(), String> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        std::io::Write::write_all(sink, &chunk[..n]).map_err(|e| e.to_string())?;
    }
}

/// Zip's LZMA: a 4-byte header (version, properties length) and the 5 property bytes, then a
/// raw LZMA stream, ending with a marker when flag bit 1 says so.
fn lzma(raw: &[u8], m: &Member, sink: &mut Bounded<'_>) -> std::result::Result<(), String> {
    if raw.len() < 9 || u16_at(raw, 2) != 5 {
        return Err("no LZMA properties header".into());
    }
    let opts = lzma_rs::decompress::Options {
        unpacked_size: lzma_rs::decompress::UnpackedSize::UseProvided(if m.flags & 0x0002 != 0 {
            None
        } else {
            Some(m.size)
        }),
        memlimit: Some(sink.limit.max(4096)),
        allow_incomplete: false,
    };
    let mut input = std::io::BufReader::new(&raw[4..]);
    lzma_rs::lzma_decompress_with_options(&mut input, sink, &opts).map_err(|e| e.to_string())
}

/// A writer that refuses to grow past `limit` bytes.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "more than the {} bytes it declares",
                self.limit
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe(e: ZipError) -> String {
    match e {
        ZipError::Bad { message, .. } => message,
        ZipError::Memory { limit, .. } => format!("over the memory budget of {limit} bytes"),
    }
}

/// A member name, refused unless it is a plain relative path: UTF-8, no NUL or control
/// characters, no backslash, no absolute path or drive, no `..` or empty component.
fn member_name(raw: &[u8]) -> Result<String> {
    let Ok(name) = std::str::from_utf8(raw) else {
        return bad(format!(
            "a member name is not UTF-8: {:?}",
            String::from_utf8_lossy(raw)
        ));
    };
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.contains('\\') {
        Some("contains a backslash")
    } else if name.starts_with('/') {
        Some("is an absolute path")
    } else if name.as_bytes().get(1) == Some(&b':') {
        Some("starts with a drive letter")
    } else if name.split('/').any(|c| c == "..") {
        Some("climbs out of the archive with `..`")
    } else if name.split('/').any(str::is_empty) && !name.ends_with('/') {
        Some("has an empty path component")
    } else {
        None
    };
    match reason {
        Some(r) => bad_member(name, format!("has an unsafe name: it {r}")),
        None => Ok(name.to_string()),
    }
}

/// Applies a central directory entry's zip64 extra field (id 1) to the fields that overflowed
/// (those set to all ones), in the order the format fixes.
fn zip64_fields(
    mut extra: &[u8],
    size: &mut u64,
    compressed: &mut u64,
    offset: &mut u64,
) -> std::result::Result<(), String> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0);
        let len = usize::from(u16_at(extra, 2));
        if extra.len() < 4 + len {
            return Err("has an extra field that runs past its entry".into());
        }
        let mut data = &extra[4..4 + len];
        if id == 1 {
            let mut next = |field: &mut u64, what: &str| -> std::result::Result<(), String> {
                if data.len() < 8 {
                    return Err(format!("has a zip64 field without its {what}"));
                }
                *field = u64_at(data, 0);
                data = &data[8..];
                Ok(())
            };
            if *size == u64::from(u32::MAX) {
                next(size, "size")?;
            }
            if *compressed == u64::from(u32::MAX) {
                next(compressed, "compressed size")?;
            }
            if *offset == u64::from(u32::MAX) {
                next(offset, "offset")?;
            }
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}

/// Finds the end of central directory record (and its zip64 form): the member count, the
/// directory's offset and size, and where the directory must end.
fn find_directory(bytes: &[u8]) -> Result<(u64, u64, u64, u64)> {
    if bytes.len() < END_LEN {
        return bad(format!(
            "{} bytes are too few for a zip archive",
            bytes.len()
        ));
    }
    // The end record is the last 22 bytes, or sits before a comment of at most 65,535 bytes;
    // the one whose comment reaches exactly the end of the file counts.
    let earliest = bytes.len().saturating_sub(END_LEN + usize::from(u16::MAX));
    let at = (earliest..=bytes.len() - END_LEN)
        .rev()
        .find(|&i| {
            u32_at(bytes, i) == END
                && i + END_LEN + usize::from(u16_at(bytes, i + 20)) == bytes.len()
        })
        .ok_or(ZipError::Bad {
            member: None,
            message:
                "no end of central directory record: the archive is truncated or not a zip file"
                    .into(),
        })?;
    let end = &bytes[at..at + END_LEN];
    let (disk, dir_disk) = (u16_at(end, 4), u16_at(end, 6));
    let (here, total) = (u16_at(end, 8), u16_at(end, 10));
    let dir_len = u32_at(end, 12);
    let dir_at = u32_at(end, 16);
    let zip64 = here == u16::MAX || total == u16::MAX || dir_len == u32::MAX || dir_at == u32::MAX;
    if !zip64 {
        if disk != 0 || dir_disk != 0 || here != total {
            return bad("the archive spans several disks");
        }
        return Ok((
            u64::from(total),
            u64::from(dir_at),
            u64::from(dir_len),
            at as u64,
        ));
    }
    let Some(loc_at) = at.checked_sub(LOCATOR64_LEN) else {
        return bad("a zip64 archive without its zip64 locator");
    };
    let loc = &bytes[loc_at..at];
    if u32_at(loc, 0) != LOCATOR64 {
        return bad("a zip64 archive without its zip64 locator");
    }
    let end64_at = u64_at(loc, 8);
    let end64 = slice(bytes, end64_at, END64_LEN as u64, "the zip64 end record")?;
    if u32_at(end64, 0) != END64 {
        return bad(format!("no zip64 end record at byte {end64_at}"));
    }
    if end64_at.saturating_add(END64_LEN as u64) > loc_at as u64 {
        return bad("the zip64 end record overlaps its locator");
    }
    let (here, total) = (u64_at(end64, 24), u64_at(end64, 32));
    if u32_at(end64, 16) != 0 || u32_at(end64, 20) != 0 || here != total {
        return bad("the archive spans several disks");
    }
    Ok((total, u64_at(end64, 48), u64_at(end64, 40), end64_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused_with_the_reason() {
        for (name, reason) in [
            ("../evil.npy", "`..`"),
            ("a/../../b", "`..`"),
            ("/etc/passwd", "absolute"),
            ("a\\b.npy", "backslash"),
            ("C:evil", "drive letter"),
            ("a//b", "empty path component"),
            ("a\nb", "control character"),
            ("", "is empty"),
        ] {
            let err = match member_name(name.as_bytes()) {
                Err(ZipError::Bad { message, .. }) => message,
                other => panic!("{name:?}: {other:?}"),
            };
            assert!(err.contains(reason), "{name:?}: {err}");
        }
        assert_eq!(member_name(b"123.npy").unwrap(), "123.npy");
        assert_eq!(member_name(b"dir/schema.json").unwrap(), "dir/schema.json");
    }

    #[test]
    fn garbage_and_truncated_archives_are_errors() {
        let budget = Budget::new(1 << 20);
        assert!(Archive::open(b"PK\x03\x04", &budget).is_err());
        let empty = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let a = Archive::open(empty, &budget).unwrap();
        assert!(!a.contains("schema.json"));
        assert!(matches!(
            a.read("schema.json", &budget, 100),
            Err(ZipError::Bad {
                member: Some(_),
                ..
            })
        ));
    }
}
