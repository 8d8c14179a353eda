//! Ingest: readings in over HTTP ([`server`]), from an MQTT broker ([`mqtt`]) and from a Kafka
//! topic ([`kafka`]), checked one by one, appended to the durable log ([`fleetscore_log`]) partitioned by device, and
//! acknowledged (HTTP 200, MQTT PUBACK, Kafka offset commit) only once they are on disk.
//!
//! Delivery is at least once: a request answered 200 is durable in full; a request that failed
//! (503, a dropped connection) may have been stored in part, and its retry can repeat
//! readings, which the aggregator drops as exact (device, tag, ts) repeats.

#![warn(missing_docs)]

pub mod kafka;
pub mod mqtt;
pub mod parse;
mod reading;
pub mod server;

pub use reading::{Invalid, Limits, MAX_ID_BYTES, MIN_TS_MS, Reading, parse_ts};
