//! The embedded coordinator: one SQLite database file. Claims are single `UPDATE ... RETURNING`
//! statements inside `BEGIN IMMEDIATE`, so concurrent workers (threads or processes on one
//! machine) never claim the same attempt.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::schedules::{ScheduleRow, ScheduleStore, Tick, WatermarkRow};
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
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    paused INTEGER NOT NULL,
    cursor_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ticks (
    schedule TEXT NOT NULL,
    tick_ms INTEGER NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_ms INTEGER,
    owner TEXT,
    reason TEXT,
    backfill INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (schedule, tick_ms)
);
CREATE INDEX IF NOT EXISTS ticks_state ON ticks (state);
CREATE TABLE IF NOT EXISTS watermarks (
    aggregator TEXT PRIMARY KEY,
    complete_before_ms INTEGER NOT NULL,
    newest_event_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
";

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Puts a connection in WAL mode and creates or migrates the schema. The schema and its
/// migration are one write transaction: connections opening a new database at once would
/// otherwise each see the heartbeat column missing, and all but the first to add it would fail.
fn setup(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    // Databases made before heartbeat times were kept gain the column.
    let has_heartbeat: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('tasks') WHERE name = 'heartbeat_ms'",
        [],
        |r| r.get(0),
    )?;
    if !has_heartbeat {
        tx.execute_batch("ALTER TABLE tasks ADD COLUMN heartbeat_ms INTEGER")?;
    }
    tx.commit()
}

impl SqliteCoordinator {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteCoordinator> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Processes opening a new database at once (`up` and a `schedule show` beside it) race
        // to switch it to WAL, and SQLite refuses the loser at once, without waiting: the
        // setup is tried again until the busy timeout.
        let started = std::time::Instant::now();
        loop {
            match setup(&mut conn) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
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

const TICK_COLUMNS: &str = "schedule, tick_ms, from_ms, to_ms, run_id, state, attempts, next_ms, \
     owner, reason, backfill, created_ms, updated_ms, version";

fn tick_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Tick, String)> {
    let state: String = r.get(5)?;
    Ok((
        Tick {
            schedule: r.get(0)?,
            tick_ms: r.get(1)?,
            from_ms: r.get(2)?,
            to_ms: r.get(3)?,
            run_id: r.get(4)?,
            // Parsed by the caller (its error is this crate's).
            state: super::schedules::TickState::Pending,
            attempts: r.get(6)?,
            next_ms: r.get(7)?,
            owner: r.get(8)?,
            reason: r.get(9)?,
            backfill: r.get(10)?,
            created_ms: r.get(11)?,
            updated_ms: r.get(12)?,
            version: r.get(13)?,
        },
        state,
    ))
}

fn ticks_where(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Tick>> {
    let mut stmt = conn.prepare(&format!("SELECT {TICK_COLUMNS} FROM ticks {filter}"))?;
    let rows = stmt.query_map(params, tick_row)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut tick, state) = row?;
        tick.state = state.parse()?;
        out.push(tick);
    }
    Ok(out)
}

/// Sets a tick's state if its version is still `tick.version` (a compare-and-set).
fn set_tick(conn: &Connection, tick: &Tick, now_ms: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE ticks SET state = ?4, attempts = ?5, next_ms = ?6, owner = ?7, reason = ?8,
             updated_ms = ?9, version = version + 1
         WHERE schedule = ?1 AND tick_ms = ?2 AND version = ?3",
        params![
            tick.schedule,
            tick.tick_ms,
            tick.version,
            tick.state.as_str(),
            tick.attempts,
            tick.next_ms,
            tick.owner,
            tick.reason,
            now_ms
        ],
    )?;
    Ok(n == 1)
}

fn schedule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: r.get(0)?,
        definition: r.get(1)?,
        paused: r.get(2)?,
        cursor_ms: r.get(3)?,
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
    })
}

impl ScheduleStore for SqliteCoordinator {
    fn add_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "INSERT INTO schedules (name, definition, paused, cursor_ms, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                params![
                    row.name,
                    row.definition,
                    row.paused,
                    row.cursor_ms,
                    row.created_ms,
                    row.updated_ms
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn update_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        self.with(|conn| {
            let n = conn.execute(
                "UPDATE schedules SET definition = ?2, paused = ?3, updated_ms = ?4 WHERE name = ?1",
                params![row.name, row.definition, row.paused, row.updated_ms],
            )?;
            Ok(n == 1)
        })
    }

    fn schedule(&self, name: &str) -> Result<Option<ScheduleRow>> {
        self.with(|conn| {
            Ok(conn
                .query_row(
                    "SELECT name, definition, paused, cursor_ms, created_ms, updated_ms
                     FROM schedules WHERE name = ?1",
                    params![name],
                    schedule_row,
                )
                .optional()?)
        })
    }

    fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT name, definition, paused, cursor_ms, created_ms, updated_ms
                 FROM schedules ORDER BY name",
            )?;
            let rows = stmt.query_map([], schedule_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn delete_schedule(&self, name: &str) -> Result<bool> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM ticks WHERE schedule = ?1", params![name])?;
            let n = tx.execute("DELETE FROM schedules WHERE name = ?1", params![name])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn record_ticks(&self, schedule: &str, ticks: &[Tick], cursor_ms: i64) -> Result<Vec<i64>> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut inserted = Vec::new();
            {
                let mut insert = tx.prepare(&format!(
                    "INSERT INTO ticks ({TICK_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (schedule, tick_ms) DO NOTHING"
                ))?;
                for t in ticks {
                    let n = insert.execute(params![
                        schedule,
                        t.tick_ms,
                        t.from_ms,
                        t.to_ms,
                        t.run_id,
                        t.state.as_str(),
                        t.attempts,
                        t.next_ms,
                        t.owner,
                        t.reason,
                        t.backfill,
                        t.created_ms,
                        t.updated_ms,
                        t.version
                    ])?;
                    if n == 1 {
                        inserted.push(t.tick_ms);
                    }
                }
            }
            tx.execute(
                "UPDATE schedules SET cursor_ms = MAX(COALESCE(cursor_ms, ?2), ?2) WHERE name = ?1",
                params![schedule, cursor_ms],
            )?;
            tx.commit()?;
            Ok(inserted)
        })
    }

    fn update_tick(&self, tick: &Tick, now_ms: i64) -> Result<bool> {
        self.with(|conn| set_tick(conn, tick, now_ms))
    }

    fn start_tick(&self, tick: &Tick, max_active: u32, now_ms: i64) -> Result<bool> {
        self.with(|conn| {
            // IMMEDIATE: the count and the update see no other writer between them.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let active: u32 = tx.query_row(
                "SELECT COUNT(*) FROM ticks WHERE schedule = ?1 AND state IN ('starting', 'running')",
                params![tick.schedule],
                |r| r.get(0),
            )?;
            let n = if active < max_active {
                usize::from(set_tick(&tx, tick, now_ms)?)
            } else {
                0
            };
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn tick(&self, schedule: &str, tick_ms: i64) -> Result<Option<Tick>> {
        self.with(|conn| {
            Ok(ticks_where(
                conn,
                "WHERE schedule = ?1 AND tick_ms = ?2",
                params![schedule, tick_ms],
            )?
            .pop())
        })
    }

    fn ticks(&self, schedule: &str, limit: u32) -> Result<Vec<Tick>> {
        self.with(|conn| {
            ticks_where(
                conn,
                "WHERE schedule = ?1 ORDER BY tick_ms DESC LIMIT ?2",
                params![schedule, limit],
            )
        })
    }

    fn open_ticks(&self) -> Result<Vec<Tick>> {
        self.with(|conn| {
            ticks_where(
                conn,
                "WHERE state IN ('waiting', 'pending', 'starting', 'running', 'retrying')
                 ORDER BY schedule, tick_ms",
                [],
            )
        })
    }

    fn publish_watermark(
        &self,
        aggregator: &str,
        complete_before_ms: i64,
        newest_event_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO watermarks (aggregator, complete_before_ms, newest_event_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (aggregator) DO UPDATE SET
                     complete_before_ms = MAX(complete_before_ms, ?2),
                     newest_event_ms = MAX(newest_event_ms, ?3), updated_ms = ?4",
                params![aggregator, complete_before_ms, newest_event_ms, now_ms],
            )?;
            Ok(())
        })
    }

    fn watermarks(&self) -> Result<Vec<WatermarkRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT aggregator, complete_before_ms, newest_event_ms, updated_ms FROM watermarks ORDER BY aggregator",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(WatermarkRow {
                    aggregator: r.get(0)?,
                    complete_before_ms: r.get(1)?,
                    newest_event_ms: r.get(2)?,
                    updated_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
    use crate::coordinator::{contract, schedules};

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
    fn schedules_are_unique_and_keep_their_cursor() {
        let c = SqliteCoordinator::open(&path("schedules")).unwrap();
        schedules::contract::schedules_are_unique_and_keep_their_cursor(&c);
    }

    #[test]
    fn a_tick_is_recorded_once_and_changed_by_one_caller() {
        let c = SqliteCoordinator::open(&path("ticks")).unwrap();
        schedules::contract::a_tick_is_recorded_once_and_changed_by_one_caller(&c);
    }

    #[test]
    fn watermarks_only_move_forward() {
        let c = SqliteCoordinator::open(&path("watermarks")).unwrap();
        schedules::contract::watermarks_only_move_forward(&c);
    }

    /// Processes opening a new database at once each create or migrate its schema, and none
    /// fails for another's doing it too.
    #[test]
    fn connections_opening_a_new_database_at_once_all_open_it() {
        for round in 0..20 {
            let p = path(&format!("open-{round}"));
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for _ in 0..8 {
                    s.spawn(|| {
                        start.wait();
                        SqliteCoordinator::open(&p).unwrap()
                    });
                }
            });
            let _ = std::fs::remove_file(&p);
        }
    }

    /// A database made before heartbeat times were kept gains the column, once.
    #[test]
    fn a_database_without_heartbeats_gains_the_column() {
        let p = path("old");
        let old = Connection::open(&p).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        drop(old);
        SqliteCoordinator::open(&p).unwrap();
        let c = SqliteCoordinator::open(&p).unwrap();
        let columns: i64 = c
            .with(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('tasks') WHERE name = 'heartbeat_ms'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(columns, 1);
        contract::heartbeats_show_and_cancel_stops_claims(&c);
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
