//! The wire format: big-endian request encoding, response decoding, error codes, and magic-2
//! record batches (CRC-32C checked; uncompressed or gzip).

use std::io::Read;

use super::Res;

pub(super) struct W(pub(super) Vec<u8>);

impl W {
    pub(super) fn i8(&mut self, v: i8) -> &mut W {
        self.0.push(v as u8);
        self
    }
    pub(super) fn i16(&mut self, v: i16) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn i32(&mut self, v: i32) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn i64(&mut self, v: i64) -> &mut W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn str(&mut self, s: &str) -> &mut W {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub(super) fn null_str(&mut self) -> &mut W {
        self.i16(-1)
    }
    pub(super) fn bytes(&mut self, b: &[u8]) -> &mut W {
        self.i32(b.len() as i32);
        self.0.extend_from_slice(b);
        self
    }
}

pub(super) struct R<'a> {
    pub(super) b: &'a [u8],
    pub(super) what: &'static str,
}

impl<'a> R<'a> {
    pub(super) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if self.b.len() < n {
            return Err(format!("{}: response ends early", self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(super) fn i8(&mut self) -> Res<i8> {
        Ok(self.take(1)?[0] as i8)
    }
    pub(super) fn i16(&mut self) -> Res<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub(super) fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(super) fn i64(&mut self) -> Res<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub(super) fn str(&mut self) -> Res<String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
    pub(super) fn bytes(&mut self) -> Res<&'a [u8]> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(&[]);
        }
        self.take(n as usize)
    }
    pub(super) fn count(&mut self) -> Res<usize> {
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
    pub(super) fn varint(&mut self) -> Res<i64> {
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

pub(super) fn check(code: i16, what: &str) -> Res<()> {
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

pub(super) const API_FETCH: i16 = 1;
pub(super) const API_LIST_OFFSETS: i16 = 2;
pub(super) const API_METADATA: i16 = 3;
pub(super) const API_OFFSET_COMMIT: i16 = 8;
pub(super) const API_OFFSET_FETCH: i16 = 9;
pub(super) const API_FIND_COORDINATOR: i16 = 10;
pub(super) const API_JOIN_GROUP: i16 = 11;
pub(super) const API_HEARTBEAT: i16 = 12;
pub(super) const API_SYNC_GROUP: i16 = 14;
/// Brokers since Kafka 2.2 answer a first join with a member id to join again with.
pub(super) const MEMBER_ID_REQUIRED: i16 = 79;
pub(super) const OFFSET_OUT_OF_RANGE: i16 = 1;

/// The records of magic-2 record batches: `(offset, value)`. A batch cut off at the end of a
/// fetch response (brokers may send a partial last batch) is left for the next fetch.
pub(super) fn record_batches(mut b: &[u8]) -> Res<Vec<(i64, Vec<u8>)>> {
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
}
