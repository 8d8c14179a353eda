//! The embedded coordinator: one SQLite database file. Claims are single `UPDATE ... RETURNING`
//! statements inside `BEGIN IMMEDIATE`, so concurrent workers (threads or processes on one
//! machine) never claim the same attempt.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Claim, Coordinator, Failure, RunSpec, RunState, TaskCounts, TaskResult, TaskSpec, TaskState,
    WorkerState, fold_workers, json, parse, status_after_failure,
};
use crate::error::{Error, Result};
use crate::status::RunStatus;

/// A coordinator in a SQLite file.
pub struct SqliteCoordinator {
    /// One connection, shared by the process's workers; SQLite serialises writers anyway, and
    /// each operation is one short transaction.
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    shard INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until_ms INTEGER,
    started_ms INTEGER,
    finished_ms INTEGER,
    error TEXT,
    result TEXT,
    PRIMARY KEY (run_id, shard)
);
CREATE INDEX IF NOT EXISTS tasks_claimable ON tasks (run_id, status, lease_until_ms);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_ms);
";

impl SqliteCoordinator {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteCoordinator> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        // Databases made before heartbeat times were kept gain the column.
        let has_heartbeat: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('tasks') WHERE name = 'heartbeat_ms'",
            [],
            |r| r.get(0),
        )?;
        if !has_heartbeat {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN heartbeat_ms INTEGER")?;
        }
        Ok(SqliteCoordinator {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

impl Coordinator for SqliteCoordinator {
    fn create_run(&self, run: &RunSpec, tasks: &[TaskSpec], now_ms: i64) -> Result<()> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM tasks WHERE run_id = ?1", params![run.id])?;
            tx.execute(
                "INSERT INTO runs (id, from_ms, to_ms, status, created_ms) VALUES (?1, ?2, ?3, 'running', ?4)
                 ON CONFLICT (id) DO UPDATE SET from_ms = ?2, to_ms = ?3, status = 'running', created_ms = ?4, finished_ms = NULL",
                params![run.id, run.from_ms, run.to_ms, now_ms],
            )?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO tasks (run_id, shard, spec, status) VALUES (?1, ?2, ?3, 'pending')",
                )?;
                for t in tasks {
                    insert.execute(params![run.id, t.shard, json(t)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn claim(
        &self,
        run_id: Option<&str>,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Claim>> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(String, String, u32)> = tx
                .query_row(
                    "UPDATE tasks SET status = 'running', attempts = attempts + 1, worker = ?2,
                         lease_until_ms = ?3 + ?4, started_ms = ?3, heartbeat_ms = ?3,
                         error = NULL
                     WHERE rowid = (
                         SELECT t.rowid FROM tasks t JOIN runs r ON r.id = t.run_id
                         WHERE (?1 IS NULL OR t.run_id = ?1) AND r.status = 'running'
                           AND (t.status = 'pending'
                                OR (t.status = 'running' AND t.lease_until_ms < ?3))
                         ORDER BY r.created_ms, t.run_id, t.shard LIMIT 1)
                     RETURNING run_id, spec, attempts",
                    params![run_id, worker, now_ms, lease_ms],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            tx.commit()?;
            row.map(|(run_id, spec, attempt)| {
                Ok(Claim {
                    run_id,
                    task: parse("task spec", &spec)?,
                    attempt,
                    worker: worker.to_string(),
                })
            })
            .transpose()
        })
    }

    fn heartbeat(&self, claim: &Claim, lease_ms: i64, now_ms: i64) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE tasks SET lease_until_ms = ?4 + ?5, heartbeat_ms = ?4
                 WHERE run_id = ?1 AND shard = ?2 AND attempts = ?3 AND status = 'running'",
                params![
                    claim.run_id,
                    claim.task.shard,
                    claim.attempt,
                    now_ms,
                    lease_ms
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn complete(&self, claim: &Claim, result: &TaskResult, now_ms: i64) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE tasks SET status = 'done', finished_ms = ?4, result = ?5, lease_until_ms = NULL
                 WHERE run_id = ?1 AND shard = ?2 AND attempts = ?3 AND status = 'running'",
                params![claim.run_id, claim.task.shard, claim.attempt, now_ms, json(result)],
            )?;
            Ok(n == 1)
        })
    }

    fn fail(&self, claim: &Claim, failure: &Failure<'_>, now_ms: i64) -> Result<()> {
        self.with(|conn| {
            let status = status_after_failure(claim, failure);
            conn.execute(
                "UPDATE tasks SET status = ?4, error = ?5, finished_ms = ?6, lease_until_ms = NULL
                 WHERE run_id = ?1 AND shard = ?2 AND attempts = ?3 AND status = 'running'",
                params![
                    claim.run_id,
                    claim.task.shard,
                    claim.attempt,
                    status.as_str(),
                    failure.error,
                    now_ms
                ],
            )?;
            Ok(())
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunState>> {
        self.with(|conn| run_state(conn, run_id))
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<TaskState>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT shard, status, attempts, worker, spec, error, result, started_ms,
                     finished_ms, heartbeat_ms
                 FROM tasks WHERE run_id = ?1 ORDER BY shard",
            )?;
            let rows = stmt.query_map(params![run_id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<i64>>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    shard,
                    status,
                    attempts,
                    worker,
                    spec,
                    error,
                    result,
                    started_ms,
                    finished_ms,
                    heartbeat_ms,
                ) = row?;
                let spec: TaskSpec = parse("task spec", &spec)?;
                out.push(TaskState {
                    shard,
                    status: status.parse()?,
                    attempts,
                    worker,
                    models: spec.models.len(),
                    error,
                    result: result
                        .map(|r| parse::<TaskResult>("task result", &r))
                        .transpose()?,
                    started_ms,
                    heartbeat_ms,
                    finished_ms,
                });
            }
            Ok(out)
        })
    }

    fn finish_run(&self, run_id: &str, status: RunStatus, now_ms: i64) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "UPDATE runs SET status = ?2, finished_ms = ?3 WHERE id = ?1",
                params![run_id, status.as_str(), now_ms],
            )?;
            Ok(())
        })
    }

    fn cancel_run(&self, run_id: &str, now_ms: i64) -> Result<bool> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE runs SET status = 'cancelled', finished_ms = ?2
                 WHERE id = ?1 AND status = 'running'",
                params![run_id, now_ms],
            )?;
            tx.execute(
                "UPDATE tasks SET status = 'cancelled', finished_ms = ?2
                 WHERE run_id = ?1 AND status = 'pending'",
                params![run_id, now_ms],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn workers(&self, since_ms: i64) -> Result<Vec<WorkerState>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT worker, run_id, shard, status,
                     COALESCE(heartbeat_ms, started_ms, 0)
                 FROM tasks
                 WHERE worker IS NOT NULL
                   AND (status = 'running' OR COALESCE(heartbeat_ms, started_ms, 0) >= ?1)",
            )?;
            let rows = stmt
                .query_map(params![since_ms], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, String>(3)?,
                        r.get(4)?,
                    ))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let rows = rows
                .into_iter()
                .map(|(w, run, shard, status, seen)| Ok((w, run, shard, status.parse()?, seen)))
                .collect::<Result<Vec<_>>>()?;
            Ok(fold_workers(rows))
        })
    }

    fn queue_depth(&self) -> Result<u32> {
        self.with(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM tasks t JOIN runs r ON r.id = t.run_id
                 WHERE r.status = 'running' AND t.status IN ('pending', 'running')",
                [],
                |r| r.get(0),
            )?)
        })
    }

    fn runs(&self) -> Result<Vec<RunState>> {
        self.with(|conn| {
            let ids: Vec<String> = conn
                .prepare("SELECT id FROM runs ORDER BY created_ms DESC, id DESC")?
                .query_map([], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(s) = run_state(conn, &id)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }
}

fn run_state(conn: &Connection, run_id: &str) -> Result<Option<RunState>> {
    let run = conn
        .query_row(
            "SELECT from_ms, to_ms, status, created_ms, finished_ms FROM runs WHERE id = ?1",
            params![run_id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((from_ms, to_ms, status, created_ms, finished_ms)) = run else {
        return Ok(None);
    };
    let mut tasks = TaskCounts::default();
    let mut stmt =
        conn.prepare("SELECT status, COUNT(*) FROM tasks WHERE run_id = ?1 GROUP BY status")?;
    for row in stmt.query_map(params![run_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
    })? {
        let (s, n) = row?;
        tasks.add(s.parse()?, n);
    }
    Ok(Some(RunState {
        spec: RunSpec {
            id: run_id.to_string(),
            from_ms,
            to_ms,
        },
        status: status.parse()?,
        created_ms,
        finished_ms,
        tasks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::contract;

    fn path(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "fleetscore-coord-{name}-{}.sqlite",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn each_task_is_claimed_once_until_its_lease_expires() {
        let c = SqliteCoordinator::open(&path("lease")).unwrap();
        contract::each_task_is_claimed_once_until_its_lease_expires(&c);
    }

    #[test]
    fn heartbeats_show_and_cancel_stops_claims() {
        let c = SqliteCoordinator::open(&path("cancel")).unwrap();
        contract::heartbeats_show_and_cancel_stops_claims(&c);
    }

    #[test]
    fn any_run_claims_go_oldest_first() {
        let c = SqliteCoordinator::open(&path("any")).unwrap();
        contract::any_run_claims_go_oldest_first(&c);
    }

    #[test]
    fn retries_follow_the_hint_and_the_attempt_limit() {
        let c = SqliteCoordinator::open(&path("retry")).unwrap();
        contract::retries_follow_the_hint_and_the_attempt_limit(&c);
    }

    #[test]
    fn concurrent_claims_from_many_connections_never_share_a_task() {
        let p = path("concurrent");
        let c = SqliteCoordinator::open(&p).unwrap();
        contract::concurrent_claims_never_share_a_task(&c, &|| {
            Box::new(SqliteCoordinator::open(&p).unwrap())
        });
    }
}
