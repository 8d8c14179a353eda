//! The vocabulary every fleetscore layer shares, kept at the bottom of the dependency graph so
//! that ingest, aggregation and batch scoring agree without depending on each other:
//!
//! - [`reading`]: a reading, the checks every reading passes, and its log record codec;
//! - [`time`]: the one grammar of times users write (files, requests, flags) and its formats;
//! - [`clock`]: the wall clock, behind a trait so that time-based logic can be tested;
//! - [`units`]: sizes (and the number-and-unit split durations share);
//! - [`tokens`]: the bearer tokens every HTTP service checks.
#![warn(missing_docs)]

pub mod clock;
pub mod reading;
pub mod time;
pub mod tokens;
pub mod units;

pub use clock::{Clock, ManualClock, SystemClock, now_ms};
pub use reading::{Invalid, Limits, MAX_ID_BYTES, MIN_TS_MS, Reading, check_id, parse_ts};
pub use time::{
    MAX_TIME_MS, MIN_TIME_MS, TimeError, check_time, format_duration, format_time, parse_duration,
    parse_time, rfc3339,
};
pub use units::parse_size;
