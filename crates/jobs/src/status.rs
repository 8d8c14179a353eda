//! The states of runs and tasks. Stored and serialized as the lowercase words they have always
//! been (`pending`, `completed_with_failures`, ...), so coordinator databases, run records and
//! scripts reading them are unchanged; compared as enums everywhere in code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A shard task's state in the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not yet claimed, or returned for a retry.
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Completed; its predictions are written.
    Done,
    /// Failed for good (no retry could help, or attempts ran out).
    Failed,
    /// Never started: its run was cancelled.
    Cancelled,
}

/// A run's state, in the coordinator and in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Planned; tasks are being executed.
    Running,
    /// Every task done and every model scored.
    Succeeded,
    /// Finished, with failed models or tasks (the record lists them).
    CompletedWithFailures,
    /// Cancelled: no task of it starts any more.
    Cancelled,
}

impl TaskStatus {
    /// Every state, in the order a task goes through them.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Done,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the task still needs a worker (it counts in the queue depth).
    pub fn is_queued(self) -> bool {
        matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }
}

impl RunStatus {
    /// Every state.
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::CompletedWithFailures,
        RunStatus::Cancelled,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::CompletedWithFailures => "completed_with_failures",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Parses a stored word; `what` names the kind of state in the error.
fn parse<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    what: &str,
    s: &str,
) -> crate::error::Result<T> {
    all.iter()
        .copied()
        .find(|&v| name(v) == s)
        .ok_or_else(|| Error::Corrupt {
            what: format!("{what} status"),
            message: format!("unknown status {s:?}"),
        })
}

impl FromStr for TaskStatus {
    type Err = Error;
    fn from_str(s: &str) -> crate::error::Result<TaskStatus> {
        parse(&TaskStatus::ALL, TaskStatus::as_str, "task", s)
    }
}

impl FromStr for RunStatus {
    type Err = Error;
    fn from_str(s: &str) -> crate::error::Result<RunStatus> {
        parse(&RunStatus::ALL, RunStatus::as_str, "run", s)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_stored_as_the_words_they_serialize_to() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!(
            "Done"
                .parse::<TaskStatus>()
                .unwrap_err()
                .to_string()
                .contains("\"Done\"")
        );
    }
}
