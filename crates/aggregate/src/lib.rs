//! fleetscore's aggregation: readings from the durable log, filtered and aggregated per
//! (device, tag) over event-time windows, closed by watermark, written exactly once to the
//! store's `features/` as Parquet — the rows fleet runs score.
//!
//! - [`engine`]: the state machine (windows, watermarks, filters, repeats, late readings,
//!   statistics), with snapshots of its open windows; no I/O and no clock.
//! - [`stream`]: the log-to-store driver: epochs with an intent and a checkpoint, so a crash at
//!   any point neither loses nor duplicates a window.
//! - [`file`](mod@file): the same aggregation over a readings file (every window closes at its end).
//!
//! The windows table itself (its schema, writer and reader) is `fleetscore_table::windows`,
//! shared with the runs that read it.

pub mod engine;
pub mod error;
pub mod file;
pub mod stream;

pub use engine::{Closed, Config, Counters, Engine, Filters, Late, Range, Stats};
pub use error::{Error, Result};
