//! The wire format: big-endian request encoding, response decoding, the requests spoken and
//! their versions, error codes, and magic-2 record batches (CRC-32C checked; uncompressed or
//! gzip).

use std::fmt;
use std::io::Read;

use crate::error::{Error, Result};

/// A request body being encoded, big-endian as the protocol has it.
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

/// A response (or record batch) being decoded; `what` names it in errors.
pub(super) struct R<'a> {
    pub(super) b: &'a [u8],
    pub(super) what: &'static str,
}

impl<'a> R<'a> {
    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::Protocol {
            what: self.what.to_string(),
            reason: reason.into(),
        }
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(self.malformed("response ends early"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(super) fn i8(&mut self) -> Result<i8> {
        Ok(self.take(1)?[0] as i8)
    }
    pub(super) fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub(super) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(super) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// An error code.
    pub(super) fn code(&mut self) -> Result<KafkaCode> {
        Ok(KafkaCode(self.i16()?))
    }
    pub(super) fn str(&mut self) -> Result<String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
    pub(super) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(&[]);
        }
        self.take(n as usize)
    }
    pub(super) fn count(&mut self) -> Result<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        if n as usize > self.b.len() {
            return Err(self.malformed(format!("an array of {n} in {} bytes", self.b.len())));
        }
        Ok(n as usize)
    }
    pub(super) fn varint(&mut self) -> Result<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(self.malformed("a varint longer than 10 bytes"))
    }
}

/// A Kafka protocol error code, as a broker answers it ([`KafkaCode::NONE`] is success).
/// Displayed by name where fleetscore knows it, `UNKNOWN_MEMBER_ID (25)`, else `error (N)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KafkaCode(pub i16);

impl KafkaCode {
    /// No error.
    pub const NONE: KafkaCode = KafkaCode(0);
    /// The offset asked for is not held (deleted by the topic's retention, or not yet written).
    pub const OFFSET_OUT_OF_RANGE: KafkaCode = KafkaCode(1);
    /// No such topic or partition on this broker.
    pub const UNKNOWN_TOPIC_OR_PARTITION: KafkaCode = KafkaCode(3);
    /// The group coordinator is still loading the group's state.
    pub const COORDINATOR_LOAD_IN_PROGRESS: KafkaCode = KafkaCode(14);
    /// The group coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: KafkaCode = KafkaCode(15);
    /// This broker is not the group's coordinator (any longer).
    pub const NOT_COORDINATOR: KafkaCode = KafkaCode(16);
    /// The group has moved on to a newer generation: rejoin.
    pub const ILLEGAL_GENERATION: KafkaCode = KafkaCode(22);
    /// The coordinator does not know this member id (its session ended): join as a new member.
    pub const UNKNOWN_MEMBER_ID: KafkaCode = KafkaCode(25);
    /// The group is rebalancing: rejoin.
    pub const REBALANCE_IN_PROGRESS: KafkaCode = KafkaCode(27);
    /// The broker does not offer the SASL mechanism asked for.
    pub const UNSUPPORTED_SASL_MECHANISM: KafkaCode = KafkaCode(33);
    /// The credentials were refused.
    pub const SASL_AUTHENTICATION_FAILED: KafkaCode = KafkaCode(58);
    /// A first join is answered with a member id to join again with (brokers since Kafka 2.2).
    pub const MEMBER_ID_REQUIRED: KafkaCode = KafkaCode(79);

    /// The protocol's name for the code, where fleetscore knows it.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            KafkaCode::NONE => "NONE",
            KafkaCode::OFFSET_OUT_OF_RANGE => "OFFSET_OUT_OF_RANGE",
            KafkaCode::UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
            KafkaCode::COORDINATOR_LOAD_IN_PROGRESS => "COORDINATOR_LOAD_IN_PROGRESS",
            KafkaCode::COORDINATOR_NOT_AVAILABLE => "COORDINATOR_NOT_AVAILABLE",
            KafkaCode::NOT_COORDINATOR => "NOT_COORDINATOR",
            KafkaCode::ILLEGAL_GENERATION => "ILLEGAL_GENERATION",
            KafkaCode::UNKNOWN_MEMBER_ID => "UNKNOWN_MEMBER_ID",
            KafkaCode::REBALANCE_IN_PROGRESS => "REBALANCE_IN_PROGRESS",
            KafkaCode::MEMBER_ID_REQUIRED => "MEMBER_ID_REQUIRED",
            KafkaCode::UNSUPPORTED_SASL_MECHANISM => "UNSUPPORTED_SASL_MECHANISM",
            KafkaCode::SASL_AUTHENTICATION_FAILED => "SASL_AUTHENTICATION_FAILED",
            _ => return None,
        })
    }

    /// `Ok` for [`KafkaCode::NONE`], else the error of a broker answering this code to `what`.
    pub(super) fn check(self, what: impl fmt::Display) -> Result<()> {
        if self == KafkaCode::NONE {
            return Ok(());
        }
        Err(Error::Kafka {
            what: what.to_string(),
            code: self,
        })
    }
}

impl fmt::Display for KafkaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name().unwrap_or("error"), self.0)
    }
}

/// A request type, at the one version this client speaks (every broker since Kafka 1.0 serves
/// it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Api {
    /// The protocol's API key.
    pub(super) key: i16,
    /// The version spoken.
    pub(super) version: i16,
    /// Its name, for errors.
    name: &'static str,
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// SASL: v1 (KIP-152) names the mechanism; the exchange then goes in SaslAuthenticate
/// requests, as Azure Event Hubs expects.
pub(super) const SASL_HANDSHAKE: Api = Api {
    key: 17,
    version: 1,
    name: "SaslHandshake",
};
pub(super) const SASL_AUTHENTICATE: Api = Api {
    key: 36,
    version: 0,
    name: "SaslAuthenticate",
};
pub(super) const FETCH: Api = Api {
    key: 1,
    version: 4,
    name: "Fetch",
};
pub(super) const LIST_OFFSETS: Api = Api {
    key: 2,
    version: 1,
    name: "ListOffsets",
};
pub(super) const METADATA: Api = Api {
    key: 3,
    version: 1,
    name: "Metadata",
};
pub(super) const OFFSET_COMMIT: Api = Api {
    key: 8,
    version: 2,
    name: "OffsetCommit",
};
pub(super) const OFFSET_FETCH: Api = Api {
    key: 9,
    version: 1,
    name: "OffsetFetch",
};
pub(super) const FIND_COORDINATOR: Api = Api {
    key: 10,
    version: 1,
    name: "FindCoordinator",
};
pub(super) const JOIN_GROUP: Api = Api {
    key: 11,
    version: 1,
    name: "JoinGroup",
};
pub(super) const HEARTBEAT: Api = Api {
    key: 12,
    version: 1,
    name: "Heartbeat",
};
pub(super) const SYNC_GROUP: Api = Api {
    key: 14,
    version: 1,
    name: "SyncGroup",
};

/// The records of magic-2 record batches: `(offset, value)`. A batch cut off at the end of a
/// fetch response (brokers may send a partial last batch) is left for the next fetch.
pub(super) fn record_batches(mut b: &[u8]) -> Result<Vec<(i64, Vec<u8>)>> {
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
        let bad_batch = |reason: String| Error::Protocol {
            what: format!("record batch at offset {base}"),
            reason,
        };
        if magic != 2 {
            return Err(bad_batch(format!(
                "format {magic} (only 2 is read; Kafka ≥ 0.11 writes it)"
            )));
        }
        let crc = r.i32()? as u32;
        if crc32c(r.b) != crc {
            return Err(bad_batch("CRC mismatch".into()));
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
                    .map_err(|e| bad_batch(format!("gzip: {e}")))?;
                d
            }
            c => {
                return Err(bad_batch(format!(
                    "compression {c} is not supported (use none or gzip)"
                )));
            }
        };
        let mut r = R {
            b: &body,
            what: "record",
        };
        for _ in 0..count {
            let len = r.varint()?;
            let len = usize::try_from(len).map_err(|_| r.malformed("a negative length"))?;
            let rec = r.take(len)?;
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
    fn codes_are_named_and_compared_as_values() {
        assert_eq!(
            KafkaCode::UNKNOWN_MEMBER_ID.to_string(),
            "UNKNOWN_MEMBER_ID (25)"
        );
        assert_eq!(KafkaCode(99).to_string(), "error (99)");
        assert!(KafkaCode::NONE.check("heartbeat").is_ok());
        let e = KafkaCode::REBALANCE_IN_PROGRESS
            .check("heartbeat")
            .unwrap_err();
        assert_eq!(e.kafka_code(), Some(KafkaCode::REBALANCE_IN_PROGRESS));
        assert_eq!(
            e.to_string(),
            "heartbeat: broker answered REBALANCE_IN_PROGRESS (27)"
        );
    }
}
