//! Fleet jobs: the model registry, readings in the store, and runs — a window planned into shard
//! tasks, executed by workers that claim tasks from a coordinator with leases, and recorded.
#![warn(missing_docs)]

pub mod coordinator;
mod error;
pub mod export;
pub mod readings;
pub mod registry;
pub mod run;
pub mod score_file;
pub mod status;
pub mod train;

pub use error::{Error, Result, RetryHint};
pub use status::{RunStatus, TaskStatus};
