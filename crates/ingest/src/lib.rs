//! Ingest: readings in over HTTP ([`server`]), from an MQTT broker ([`mqtt`]) and from a Kafka
//! topic ([`kafka`]), checked one by one, appended to the durable log ([`fleetscore_log`])
//! partitioned by device, and
//! acknowledged (HTTP 200, MQTT PUBACK, Kafka offset commit) only once they are on disk.
//!
//! Each protocol is a [`Source`]; a [`Runner`] starts any set of them on one runtime and stops
//! them together. The HTTP service is [`server::app`], which answers requests without a
//! socket. Errors are [`Error`]; what the sources do unasked (connections, rebalances, refused
//! messages) is logged through `tracing`.
//!
//! Delivery is at least once: a request answered 200 is durable in full; a request that failed
//! (503, a dropped connection) may have been stored in part, and its retry can repeat
//! readings, which the aggregator drops as exact (device, tag, ts) repeats.

#![warn(missing_docs)]

mod error;
pub mod kafka;
pub mod mqtt;
pub mod parse;
pub mod publish;
pub mod server;
mod source;

pub use error::{Error, Report, Result};
pub use source::{Runner, Shutdown, Source, Stop};

/// The reading and its checks and codec live in [`fleetscore_core`], shared with the layers
/// that read the log back.
pub use fleetscore_core::reading;
pub use reading::{Invalid, Limits, MAX_ID_BYTES, MIN_TS_MS, Reading, parse_ts};

use std::time::Duration;

use fleetscore_log::{Ack, Batch, Log};

/// The log batch of `readings`, each in its device's partition.
pub fn batch_of<'a>(log: &Log, readings: impl IntoIterator<Item = &'a Reading>) -> Batch {
    let mut batch = Batch::default();
    let mut record = Vec::with_capacity(64);
    for r in readings {
        record.clear();
        r.encode(&mut record);
        batch.push(log.partition_for(r.device.as_bytes()), &record);
    }
    batch
}

/// Appends `readings`, waiting while the log is over its bound of bytes not yet on disk: for
/// the sources that pull (MQTT, Kafka), where not reading on holds the producer back. (HTTP
/// answers 429 instead.)
pub(crate) async fn append_when_room(
    log: &Log,
    readings: &[Reading],
) -> fleetscore_log::Result<Ack> {
    loop {
        match log.append(batch_of(log, readings)) {
            Err(fleetscore_log::Error::Overloaded { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            appended => return appended,
        }
    }
}
