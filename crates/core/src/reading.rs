//! A reading, the checks every reading passes, and its encoding as a log record.

use std::fmt;

use crate::time::parse_time;

/// One sensor reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Device id.
    pub device: String,
    /// Sensor (tag) id on the device.
    pub tag: String,
    /// Event time, milliseconds since the epoch (UTC).
    pub ts_ms: i64,
    /// The measured value (finite).
    pub value: f64,
}

/// Ids longer than this are refused (they end up in file names and keys).
pub const MAX_ID_BYTES: usize = 128;
/// Readings before 2000-01-01T00:00:00Z are refused as a unit mistake (seconds sent as
/// milliseconds, and the like).
pub const MIN_TS_MS: i64 = 946_684_800_000;

/// Why a reading was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The checks every reading passes before it is appended.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Readings further ahead of the server's clock than this are refused.
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_future_ms: 24 * 3600 * 1000,
        }
    }
}

/// Checks a device or tag id (`what` names which): not empty nor only white space, at most
/// [`MAX_ID_BYTES`], no control characters. Every path that takes ids (ingest, `data import`,
/// `models import` and its `--pattern`) checks them here.
pub fn check_id(what: &str, id: &str) -> Result<(), Invalid> {
    if id.trim().is_empty() {
        return Err(Invalid(format!(
            "`{what}` is {}",
            if id.is_empty() {
                "empty"
            } else {
                "only white space"
            }
        )));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Invalid(format!(
            "`{what}` is {} bytes long (at most {MAX_ID_BYTES})",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(Invalid(format!(
            "`{what}` contains the control character {:?}",
            c
        )));
    }
    Ok(())
}

impl Reading {
    /// Checks ids, time and value; `now_ms` is the server's clock.
    pub fn check(&self, limits: &Limits, now_ms: i64) -> Result<(), Invalid> {
        check_id("device", &self.device)?;
        check_id("tag", &self.tag)?;
        if !self.value.is_finite() {
            return Err(Invalid(format!(
                "`value` is {}, not a finite number",
                self.value
            )));
        }
        if self.ts_ms < MIN_TS_MS {
            return Err(Invalid(format!(
                "`ts` {} is before 2000-01-01 (milliseconds since the epoch are expected)",
                self.ts_ms
            )));
        }
        if self.ts_ms > now_ms.saturating_add(limits.max_future_ms) {
            return Err(Invalid(format!(
                "`ts` is {} s ahead of the server's clock (at most {} s allowed)",
                (self.ts_ms - now_ms) / 1000,
                limits.max_future_ms / 1000
            )));
        }
        Ok(())
    }

    /// Appends the record encoding: device and tag (each a 2-byte length and UTF-8), then the
    /// time (8 bytes) and the value (8 bytes), little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for id in [&self.device, &self.tag] {
            out.extend_from_slice(&(id.len() as u16).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&self.ts_ms.to_le_bytes());
        out.extend_from_slice(&self.value.to_le_bytes());
    }

    /// Decodes a record written by [`Reading::encode`].
    pub fn decode(mut b: &[u8]) -> Result<Reading, Invalid> {
        let mut id = || -> Result<String, Invalid> {
            let n = b
                .get(..2)
                .map(|l| u16::from_le_bytes([l[0], l[1]]) as usize)
                .ok_or_else(|| Invalid("record too short for an id length".into()))?;
            let s = b
                .get(2..2 + n)
                .ok_or_else(|| Invalid("record too short for its id".into()))?;
            let s = std::str::from_utf8(s)
                .map_err(|_| Invalid("an id in the record is not UTF-8".into()))?
                .to_string();
            b = &b[2 + n..];
            Ok(s)
        };
        let device = id()?;
        let tag = id()?;
        if b.len() != 16 {
            return Err(Invalid(format!(
                "record has {} bytes after its ids, expected 16",
                b.len()
            )));
        }
        Ok(Reading {
            device,
            tag,
            ts_ms: i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            value: f64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        })
    }
}

/// A record read in place: the bytes that name its series (device and tag as encoded, so
/// equal series have equal bytes), its time and its value.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Device and tag, as [`Reading::encode`] wrote them; [`series_ids`] splits them.
    pub series: &'a [u8],
    /// Milliseconds since the epoch.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// Reads a record written by [`Reading::encode`] without copying it (the ids are checked
/// for UTF-8 only by [`series_ids`]).
pub fn view(b: &[u8]) -> Result<RecordView<'_>, Invalid> {
    let id_end = |at: usize| -> Result<usize, Invalid> {
        let n = b
            .get(at..at + 2)
            .map(|l| u16::from_le_bytes([l[0], l[1]]) as usize)
            .ok_or_else(|| Invalid("record too short for an id length".into()))?;
        Ok(at + 2 + n)
    };
    let series_end = id_end(id_end(0)?)?;
    if b.len() != series_end + 16 {
        return Err(Invalid(format!(
            "record has {} bytes, its ids say {}",
            b.len(),
            series_end + 16
        )));
    }
    Ok(RecordView {
        series: &b[..series_end],
        ts_ms: i64::from_le_bytes(b[series_end..series_end + 8].try_into().expect("8 bytes")),
        value: f64::from_le_bytes(b[series_end + 8..].try_into().expect("8 bytes")),
    })
}

/// The device and tag of a record's series bytes ([`RecordView::series`]).
pub fn series_ids(series: &[u8]) -> Result<(&str, &str), Invalid> {
    let id = |at: usize| -> Result<(&str, usize), Invalid> {
        let n = series
            .get(at..at + 2)
            .map(|l| u16::from_le_bytes([l[0], l[1]]) as usize)
            .ok_or_else(|| Invalid("series too short for an id length".into()))?;
        let s = series
            .get(at + 2..at + 2 + n)
            .ok_or_else(|| Invalid("series too short for its id".into()))?;
        let s = std::str::from_utf8(s)
            .map_err(|_| Invalid("an id in the record is not UTF-8".into()))?;
        Ok((s, at + 2 + n))
    };
    let (device, at) = id(0)?;
    let (tag, end) = id(at)?;
    if end != series.len() {
        return Err(Invalid("series bytes run past their two ids".into()));
    }
    Ok((device, tag))
}

/// The series bytes of a device and tag, as [`Reading::encode`] starts a record.
pub fn series_key(device: &str, tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + device.len() + tag.len());
    for id in [device, tag] {
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// Parses a reading's time in the grammar of [`crate::time`]; the error names the `ts` field.
pub fn parse_ts(text: &str) -> Result<i64, Invalid> {
    parse_time(text).map_err(|e| Invalid(format!("`ts` {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            device: "dev-1".into(),
            tag: "température".into(),
            ts_ms: 1_767_225_605_000,
            value: -3.25,
        }
    }

    #[test]
    fn records_decode_to_what_was_encoded() {
        let r = reading();
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(Reading::decode(&b).unwrap(), r);
        assert!(Reading::decode(&b[..b.len() - 1]).is_err());
        assert!(Reading::decode(&b[..3]).is_err());
    }

    #[test]
    fn records_read_in_place_agree_with_decode() {
        let r = reading();
        let mut b = Vec::new();
        r.encode(&mut b);
        let v = view(&b).unwrap();
        assert_eq!((v.ts_ms, v.value), (r.ts_ms, r.value));
        assert_eq!(v.series, series_key(&r.device, &r.tag).as_slice());
        assert_eq!(series_ids(v.series).unwrap(), ("dev-1", "température"));
        assert!(view(&b[..b.len() - 1]).is_err());
        assert!(view(&b[..3]).is_err());
        let mut bad = b.clone();
        bad[2] = 0xff;
        assert!(series_ids(view(&bad).unwrap().series).is_err());
    }

    #[test]
    fn checks_name_what_is_wrong() {
        let now = 1_767_225_600_000;
        let limits = Limits::default();
        assert!(reading().check(&limits, now).is_ok());
        let bad = |f: fn(&mut Reading)| {
            let mut r = reading();
            f(&mut r);
            r.check(&limits, now).unwrap_err().0
        };
        assert!(bad(|r| r.value = f64::NAN).contains("not a finite number"));
        assert!(bad(|r| r.value = f64::INFINITY).contains("inf"));
        assert!(bad(|r| r.device.clear()).contains("`device` is empty"));
        assert!(bad(|r| r.device = " \u{a0} ".into()).contains("`device` is only white space"));
        assert!(bad(|r| r.tag = "x".repeat(200)).contains("200 bytes"));
        assert!(bad(|r| r.tag = "a\nb".into()).contains("control character"));
        assert!(bad(|r| r.ts_ms = 1_767_225_605).contains("before 2000-01-01"));
        assert!(bad(|r| r.ts_ms += 3 * 24 * 3600 * 1000).contains("ahead of the server's clock"));
    }

    #[test]
    fn times_are_rfc3339_or_epoch_milliseconds() {
        assert_eq!(parse_ts("2026-01-01T00:00:05Z").unwrap(), 1_767_225_605_000);
        assert_eq!(
            parse_ts("2026-01-01T01:00:05+01:00").unwrap(),
            1_767_225_605_000
        );
        assert_eq!(parse_ts("1767225605000").unwrap(), 1_767_225_605_000);
        assert_eq!(
            parse_ts("2026-01-01 00:00:05.000").unwrap(),
            1_767_225_605_000
        );
        assert!(parse_ts("yesterday").unwrap_err().0.contains("RFC 3339"));
        assert!(parse_ts("yesterday").unwrap_err().0.starts_with("`ts` "));
    }
}
