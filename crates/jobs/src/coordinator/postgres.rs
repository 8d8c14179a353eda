//! The coordinator for many machines: a PostgreSQL database that every worker process reaches.
//! Claims take the first claimable task with `FOR UPDATE SKIP LOCKED` inside the claiming
//! `UPDATE`, so concurrent workers never wait on each other's rows and never claim the same
//! attempt; completion and failure are fenced by the attempt number, as in SQLite.
//!
//! The connection is re-established when it breaks (PostgreSQL restarted, a network blip):
//! an operation that fails on a broken connection is retried on a new one for up to
//! [`RECONNECT_FOR`]. Retrying is safe: a claim whose answer was lost expires with its lease,
//! and a completion that already happened is refused as stale.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::Client;
#[cfg(test)]
use postgres::NoTls;
use postgres::error::SqlState;

use super::postgres_tls::PgTarget;
use super::schedules::{ScheduleRow, ScheduleStore, Tick, TickState, WatermarkRow};
use super::{
    Claim, Coordinator, Failure, RunSpec, RunState, TaskCounts, TaskResult, TaskSpec, TaskState,
    WorkerState, fold_workers, json, parse, status_after_failure,
};
use crate::error::{Error, Result};
use crate::status::{RunStatus, TaskStatus};

/// How long an operation keeps reconnecting before it reports the database as unreachable.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// A coordinator in PostgreSQL (tables `fleetscore_runs` and `fleetscore_tasks` in the
/// connection's schema, created if missing).
pub struct PostgresCoordinator {
    /// Where and how to connect: tokio-postgres' configuration and the TLS the URL's
    /// `sslmode` and `sslrootcert` ask for.
    target: PgTarget,
    /// One connection per process; each operation is one statement or one short transaction.
    client: Mutex<Option<Client>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fleetscore_runs (
    id TEXT PRIMARY KEY,
    from_ms BIGINT NOT NULL,
    to_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE TABLE IF NOT EXISTS fleetscore_tasks (
    run_id TEXT NOT NULL REFERENCES fleetscore_runs(id),
    shard INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until_ms BIGINT,
    started_ms BIGINT,
    finished_ms BIGINT,
    error TEXT,
    result TEXT,
    PRIMARY KEY (run_id, shard)
);
CREATE INDEX IF NOT EXISTS fleetscore_tasks_claimable
    ON fleetscore_tasks (run_id, status, lease_until_ms);
CREATE INDEX IF NOT EXISTS fleetscore_runs_status ON fleetscore_runs (status, created_ms);
ALTER TABLE fleetscore_tasks ADD COLUMN IF NOT EXISTS heartbeat_ms BIGINT;
CREATE TABLE IF NOT EXISTS fleetscore_schedules (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    paused BOOLEAN NOT NULL,
    cursor_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleetscore_ticks (
    schedule TEXT NOT NULL,
    tick_ms BIGINT NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_ms BIGINT,
    owner TEXT,
    reason TEXT,
    backfill BOOLEAN NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (schedule, tick_ms)
);
CREATE INDEX IF NOT EXISTS fleetscore_ticks_state ON fleetscore_ticks (state);
CREATE TABLE IF NOT EXISTS fleetscore_watermarks (
    aggregator TEXT PRIMARY KEY,
    complete_before_ms BIGINT NOT NULL,
    newest_event_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
";

/// The queue depth ([`Coordinator::queue_depth`]) as one SQL statement: the KEDA
/// `ScaledObject` in `deploy/k8s/` runs this very query (`scripts/check-deploy.py` checks that
/// they are the same), so Kubernetes scales workers by the count fleetscore's own autoscaler
/// uses.
pub const QUEUE_DEPTH_SQL: &str = "SELECT COUNT(*) FROM fleetscore_tasks t \
JOIN fleetscore_runs r ON r.id = t.run_id \
WHERE r.status = 'running' AND t.status IN ('pending', 'running')";

/// Serialises schema creation between processes starting at once (`CREATE TABLE IF NOT
/// EXISTS` alone races on the catalog).
const SCHEMA_LOCK: i64 = 0x666c_6565_7473;

/// Whether an error means the connection is gone (worth reconnecting), as opposed to a
/// statement the database refused.
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exceptions; 57P0x: shutdown, crash, cannot connect now.
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(code)
        }
        // No SQL state: trouble on the socket if an I/O error is behind it (a parameter that
        // does not serialize, say, is not worth reconnecting for).
        None => {
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                if let Some(io) = c.downcast_ref::<std::io::Error>() {
                    // A certificate refused in the TLS handshake (InvalidData) or a host name
                    // TLS cannot check (InvalidInput) fails the same way every time.
                    return !matches!(
                        io.kind(),
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                    );
                }
                cause = c.source();
            }
            false
        }
    }
}

/// The error with what the server said (postgres' own `Display` stops at "db error").
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl PostgresCoordinator {
    /// Connects to `url` (`postgres://user@host:port/db`, libpq's parameters such as
    /// `?options=-csearch_path%3Dfleet` included, and `sslmode`, `sslrootcert` as libpq means
    /// them: see [`super::postgres_tls`]) and creates the tables if needed.
    pub fn connect(url: &str) -> Result<PostgresCoordinator> {
        let c = PostgresCoordinator {
            target: PgTarget::parse(url)?,
            client: Mutex::new(None),
        };
        c.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            tx.batch_execute(SCHEMA)?;
            tx.commit()
        })?;
        Ok(c)
    }

    /// Runs `f` on the connection, connecting first if needed, and on a lost connection again
    /// on a new one, with backoff, for up to [`RECONNECT_FOR`].
    fn with<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let outcome = match guard.as_mut() {
                Some(client) => f(client),
                None => self
                    .target
                    .config
                    .connect(self.target.tls.clone())
                    .and_then(|mut client| {
                        let r = f(&mut client);
                        *guard = Some(client);
                        r
                    }),
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if connection_lost(&e) && started.elapsed() < RECONNECT_FOR => {
                    *guard = None;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    if connection_lost(&e) {
                        *guard = None;
                    }
                    return Err(Error::Postgres(describe(&e)));
                }
            }
        }
    }
}

impl Coordinator for PostgresCoordinator {
    fn create_run(&self, run: &RunSpec, tasks: &[TaskSpec], now_ms: i64) -> Result<()> {
        let specs: Vec<(i32, String)> = tasks.iter().map(|t| (to_i32(t.shard), json(t))).collect();
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM fleetscore_tasks WHERE run_id = $1", &[&run.id])?;
            tx.execute(
                "INSERT INTO fleetscore_runs (id, from_ms, to_ms, status, created_ms)
                 VALUES ($1, $2, $3, 'running', $4)
                 ON CONFLICT (id) DO UPDATE SET from_ms = $2, to_ms = $3, status = 'running',
                     created_ms = $4, finished_ms = NULL",
                &[&run.id, &run.from_ms, &run.to_ms, &now_ms],
            )?;
            let insert = tx.prepare(
                "INSERT INTO fleetscore_tasks (run_id, shard, spec, status)
                 VALUES ($1, $2, $3, 'pending')",
            )?;
            for (shard, spec) in &specs {
                tx.execute(&insert, &[&run.id, shard, spec])?;
            }
            tx.commit()
        })
    }

    fn claim(
        &self,
        run_id: Option<&str>,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Claim>> {
        let row = self.with(|client| {
            client.query_opt(
                "UPDATE fleetscore_tasks SET status = 'running', attempts = attempts + 1,
                     worker = $2, lease_until_ms = $3::BIGINT + $4::BIGINT, started_ms = $3,
                     heartbeat_ms = $3, error = NULL
                 WHERE (run_id, shard) = (
                     SELECT t.run_id, t.shard
                     FROM fleetscore_tasks t JOIN fleetscore_runs r ON r.id = t.run_id
                     WHERE ($1::TEXT IS NULL OR t.run_id = $1) AND r.status = 'running'
                       AND (t.status = 'pending'
                            OR (t.status = 'running' AND t.lease_until_ms < $3))
                     ORDER BY r.created_ms, t.run_id, t.shard LIMIT 1
                     FOR UPDATE OF t SKIP LOCKED)
                 RETURNING run_id, spec, attempts",
                &[&run_id, &worker, &now_ms, &lease_ms],
            )
        })?;
        row.map(|r| {
            Ok(Claim {
                run_id: r.get(0),
                task: parse("task spec", r.get::<_, &str>(1))?,
                attempt: to_u32(r.get(2)),
                worker: worker.to_string(),
            })
        })
        .transpose()
    }

    fn heartbeat(&self, claim: &Claim, lease_ms: i64, now_ms: i64) -> Result<bool> {
        let n = self.with(|client| {
            client.execute(
                "UPDATE fleetscore_tasks SET lease_until_ms = $4::BIGINT + $5::BIGINT, heartbeat_ms = $4
                 WHERE run_id = $1 AND shard = $2 AND attempts = $3 AND status = 'running'",
                &[
                    &claim.run_id,
                    &to_i32(claim.task.shard),
                    &to_i32(claim.attempt),
                    &now_ms,
                    &lease_ms,
                ],
            )
        })?;
        Ok(n == 1)
    }

    fn complete(&self, claim: &Claim, result: &TaskResult, now_ms: i64) -> Result<bool> {
        let result = json(result);
        let n = self.with(|client| {
            client.execute(
                "UPDATE fleetscore_tasks SET status = 'done', finished_ms = $4, result = $5,
                     lease_until_ms = NULL
                 WHERE run_id = $1 AND shard = $2 AND attempts = $3 AND status = 'running'",
                &[
                    &claim.run_id,
                    &to_i32(claim.task.shard),
                    &to_i32(claim.attempt),
                    &now_ms,
                    &result,
                ],
            )
        })?;
        Ok(n == 1)
    }

    fn fail(&self, claim: &Claim, failure: &Failure<'_>, now_ms: i64) -> Result<()> {
        let status = status_after_failure(claim, failure);
        self.with(|client| {
            client.execute(
                "UPDATE fleetscore_tasks SET status = $4, error = $5, finished_ms = $6,
                     lease_until_ms = NULL
                 WHERE run_id = $1 AND shard = $2 AND attempts = $3 AND status = 'running'",
                &[
                    &claim.run_id,
                    &to_i32(claim.task.shard),
                    &to_i32(claim.attempt),
                    &status.as_str(),
                    &failure.error,
                    &now_ms,
                ],
            )
        })?;
        Ok(())
    }

    fn run(&self, run_id: &str) -> Result<Option<RunState>> {
        let (run, counts) = self.with(|client| {
            let run = client.query_opt(
                "SELECT from_ms, to_ms, status, created_ms, finished_ms
                 FROM fleetscore_runs WHERE id = $1",
                &[&run_id],
            )?;
            let counts = client.query(
                "SELECT status, COUNT(*) FROM fleetscore_tasks WHERE run_id = $1
                 GROUP BY status",
                &[&run_id],
            )?;
            Ok((run, counts))
        })?;
        let Some(run) = run else {
            return Ok(None);
        };
        let mut tasks = TaskCounts::default();
        for row in counts {
            let n = u32::try_from(row.get::<_, i64>(1)).unwrap_or(u32::MAX);
            tasks.add(row.get::<_, &str>(0).parse()?, n);
        }
        Ok(Some(RunState {
            spec: RunSpec {
                id: run_id.to_string(),
                from_ms: run.get(0),
                to_ms: run.get(1),
            },
            status: run.get::<_, &str>(2).parse()?,
            created_ms: run.get(3),
            finished_ms: run.get(4),
            tasks,
        }))
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<TaskState>> {
        let rows = self.with(|client| {
            client.query(
                "SELECT shard, status, attempts, worker, spec, error, result, started_ms,
                     finished_ms, heartbeat_ms
                 FROM fleetscore_tasks WHERE run_id = $1 ORDER BY shard",
                &[&run_id],
            )
        })?;
        rows.iter()
            .map(|r| {
                let spec: TaskSpec = parse("task spec", r.get::<_, &str>(4))?;
                Ok(TaskState {
                    shard: to_u32(r.get(0)),
                    status: r.get::<_, &str>(1).parse()?,
                    attempts: to_u32(r.get(2)),
                    worker: r.get(3),
                    models: spec.models.len(),
                    error: r.get(5),
                    result: r
                        .get::<_, Option<&str>>(6)
                        .map(|s| parse::<TaskResult>("task result", s))
                        .transpose()?,
                    started_ms: r.get(7),
                    finished_ms: r.get(8),
                    heartbeat_ms: r.get(9),
                })
            })
            .collect()
    }

    fn finish_run(&self, run_id: &str, status: RunStatus, now_ms: i64) -> Result<()> {
        self.with(|client| {
            client.execute(
                "UPDATE fleetscore_runs SET status = $2, finished_ms = $3 WHERE id = $1",
                &[&run_id, &status.as_str(), &now_ms],
            )
        })?;
        Ok(())
    }

    fn cancel_run(&self, run_id: &str, now_ms: i64) -> Result<bool> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let n = tx.execute(
                "UPDATE fleetscore_runs SET status = 'cancelled', finished_ms = $2
                 WHERE id = $1 AND status = 'running'",
                &[&run_id, &now_ms],
            )?;
            tx.execute(
                "UPDATE fleetscore_tasks SET status = 'cancelled', finished_ms = $2
                 WHERE run_id = $1 AND status = 'pending'",
                &[&run_id, &now_ms],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn workers(&self, since_ms: i64) -> Result<Vec<WorkerState>> {
        let rows = self.with(|client| {
            client.query(
                "SELECT worker, run_id, shard, status, COALESCE(heartbeat_ms, started_ms, 0)
                 FROM fleetscore_tasks
                 WHERE worker IS NOT NULL
                   AND (status = 'running' OR COALESCE(heartbeat_ms, started_ms, 0) >= $1)",
                &[&since_ms],
            )
        })?;
        let rows = rows
            .iter()
            .map(|r| {
                let status: TaskStatus = r.get::<_, &str>(3).parse()?;
                Ok((r.get(0), r.get(1), to_u32(r.get(2)), status, r.get(4)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(fold_workers(rows))
    }

    fn queue_depth(&self) -> Result<u32> {
        let n: i64 = self.with(|client| Ok(client.query_one(QUEUE_DEPTH_SQL, &[])?.get(0)))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn runs(&self) -> Result<Vec<RunState>> {
        let ids: Vec<String> = self.with(|client| {
            client
                .query(
                    "SELECT id FROM fleetscore_runs ORDER BY created_ms DESC, id DESC",
                    &[],
                )
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(s) = self.run(&id)? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

const TICK_COLUMNS: &str = "schedule, tick_ms, from_ms, to_ms, run_id, state, attempts, next_ms, \
     owner, reason, backfill, created_ms, updated_ms, version";

fn tick_of(r: &postgres::Row) -> Result<Tick> {
    Ok(Tick {
        schedule: r.get(0),
        tick_ms: r.get(1),
        from_ms: r.get(2),
        to_ms: r.get(3),
        run_id: r.get(4),
        state: r.get::<_, &str>(5).parse()?,
        attempts: to_u32(r.get(6)),
        next_ms: r.get(7),
        owner: r.get(8),
        reason: r.get(9),
        backfill: r.get(10),
        created_ms: r.get(11),
        updated_ms: r.get(12),
        version: r.get(13),
    })
}

/// Sets a tick's state if its version is still `tick.version` (a compare-and-set); the rows
/// changed.
fn set_tick(
    client: &mut impl postgres::GenericClient,
    tick: &Tick,
    now_ms: i64,
) -> std::result::Result<u64, postgres::Error> {
    client.execute(
        "UPDATE fleetscore_ticks SET state = $4, attempts = $5, next_ms = $6, owner = $7,
             reason = $8, updated_ms = $9, version = version + 1
         WHERE schedule = $1 AND tick_ms = $2 AND version = $3",
        &[
            &tick.schedule,
            &tick.tick_ms,
            &tick.version,
            &tick.state.as_str(),
            &to_i32(tick.attempts),
            &tick.next_ms,
            &tick.owner,
            &tick.reason,
            &now_ms,
        ],
    )
}

fn schedule_of(r: &postgres::Row) -> ScheduleRow {
    ScheduleRow {
        name: r.get(0),
        definition: r.get(1),
        paused: r.get(2),
        cursor_ms: r.get(3),
        created_ms: r.get(4),
        updated_ms: r.get(5),
    }
}

const SCHEDULE_COLUMNS: &str = "name, definition, paused, cursor_ms, created_ms, updated_ms";

impl PostgresCoordinator {
    fn ticks_where(
        &self,
        filter: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Tick>> {
        let sql = format!("SELECT {TICK_COLUMNS} FROM fleetscore_ticks {filter}");
        let rows = self.with(|client| client.query(&sql, params))?;
        rows.iter().map(tick_of).collect()
    }
}

impl ScheduleStore for PostgresCoordinator {
    fn add_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        let n = self.with(|client| {
            client.execute(
                "INSERT INTO fleetscore_schedules (name, definition, paused, cursor_ms, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
                &[
                    &row.name,
                    &row.definition,
                    &row.paused,
                    &row.cursor_ms,
                    &row.created_ms,
                    &row.updated_ms,
                ],
            )
        })?;
        Ok(n == 1)
    }

    fn update_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        let n = self.with(|client| {
            client.execute(
                "UPDATE fleetscore_schedules SET definition = $2, paused = $3, updated_ms = $4
                 WHERE name = $1",
                &[&row.name, &row.definition, &row.paused, &row.updated_ms],
            )
        })?;
        Ok(n == 1)
    }

    fn schedule(&self, name: &str) -> Result<Option<ScheduleRow>> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM fleetscore_schedules WHERE name = $1");
        let row = self.with(|client| client.query_opt(&sql, &[&name]))?;
        Ok(row.as_ref().map(schedule_of))
    }

    fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM fleetscore_schedules ORDER BY name");
        let rows = self.with(|client| client.query(&sql, &[]))?;
        Ok(rows.iter().map(schedule_of).collect())
    }

    fn delete_schedule(&self, name: &str) -> Result<bool> {
        let n = self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM fleetscore_ticks WHERE schedule = $1", &[&name])?;
            let n = tx.execute("DELETE FROM fleetscore_schedules WHERE name = $1", &[&name])?;
            tx.commit()?;
            Ok(n)
        })?;
        Ok(n == 1)
    }

    fn record_ticks(&self, schedule: &str, ticks: &[Tick], cursor_ms: i64) -> Result<Vec<i64>> {
        let sql = format!(
            "INSERT INTO fleetscore_ticks ({TICK_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (schedule, tick_ms) DO NOTHING"
        );
        self.with(|client| {
            let mut tx = client.transaction()?;
            let insert = tx.prepare(&sql)?;
            let mut inserted = Vec::new();
            for t in ticks {
                let n = tx.execute(
                    &insert,
                    &[
                        &schedule,
                        &t.tick_ms,
                        &t.from_ms,
                        &t.to_ms,
                        &t.run_id,
                        &t.state.as_str(),
                        &to_i32(t.attempts),
                        &t.next_ms,
                        &t.owner,
                        &t.reason,
                        &t.backfill,
                        &t.created_ms,
                        &t.updated_ms,
                        &t.version,
                    ],
                )?;
                if n == 1 {
                    inserted.push(t.tick_ms);
                }
            }
            tx.execute(
                "UPDATE fleetscore_schedules SET cursor_ms = GREATEST(COALESCE(cursor_ms, $2), $2)
                 WHERE name = $1",
                &[&schedule, &cursor_ms],
            )?;
            tx.commit()?;
            Ok(inserted)
        })
    }

    fn update_tick(&self, tick: &Tick, now_ms: i64) -> Result<bool> {
        let n = self.with(|client| set_tick(client, tick, now_ms))?;
        Ok(n == 1)
    }

    fn start_tick(&self, tick: &Tick, max_active: u32, now_ms: i64) -> Result<bool> {
        let n = self.with(|client| {
            let mut tx = client.transaction()?;
            // The schedule's row is the lock: schedulers starting its ticks take turns.
            tx.execute(
                "SELECT 1 FROM fleetscore_schedules WHERE name = $1 FOR UPDATE",
                &[&tick.schedule],
            )?;
            let active: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM fleetscore_ticks
                     WHERE schedule = $1 AND state IN ('starting', 'running')",
                    &[&tick.schedule],
                )?
                .get(0);
            let n = if active < i64::from(max_active) {
                set_tick(&mut tx, tick, now_ms)?
            } else {
                0
            };
            tx.commit()?;
            Ok(n)
        })?;
        Ok(n == 1)
    }

    fn tick(&self, schedule: &str, tick_ms: i64) -> Result<Option<Tick>> {
        Ok(self
            .ticks_where(
                "WHERE schedule = $1 AND tick_ms = $2",
                &[&schedule, &tick_ms],
            )?
            .pop())
    }

    fn ticks(&self, schedule: &str, limit: u32) -> Result<Vec<Tick>> {
        self.ticks_where(
            "WHERE schedule = $1 ORDER BY tick_ms DESC LIMIT $2",
            &[&schedule, &i64::from(limit)],
        )
    }

    fn open_ticks(&self) -> Result<Vec<Tick>> {
        let open: Vec<&str> = TickState::ALL
            .into_iter()
            .filter(|s| s.is_open())
            .map(TickState::as_str)
            .collect();
        self.ticks_where("WHERE state = ANY($1) ORDER BY schedule, tick_ms", &[&open])
    }

    fn publish_watermark(
        &self,
        aggregator: &str,
        complete_before_ms: i64,
        newest_event_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        self.with(|client| {
            client.execute(
                "INSERT INTO fleetscore_watermarks
                     (aggregator, complete_before_ms, newest_event_ms, updated_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (aggregator) DO UPDATE SET
                     complete_before_ms = GREATEST(fleetscore_watermarks.complete_before_ms, $2),
                     newest_event_ms = GREATEST(fleetscore_watermarks.newest_event_ms, $3),
                     updated_ms = $4",
                &[&aggregator, &complete_before_ms, &newest_event_ms, &now_ms],
            )
        })?;
        Ok(())
    }

    fn watermarks(&self) -> Result<Vec<WatermarkRow>> {
        let rows = self.with(|client| {
            client.query(
                "SELECT aggregator, complete_before_ms, newest_event_ms, updated_ms FROM fleetscore_watermarks
                 ORDER BY aggregator",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| WatermarkRow {
                aggregator: r.get(0),
                complete_before_ms: r.get(1),
                newest_event_ms: r.get(2),
                updated_ms: r.get(3),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{contract, schedules};

    /// A coordinator in a schema of its own, on the server `scripts/test` starts.
    fn coordinator(name: &str) -> Option<PostgresCoordinator> {
        schema_url(name).map(|url| PostgresCoordinator::connect(&url).unwrap())
    }

    /// The URL of a fresh schema of its own on the server `scripts/test` starts.
    fn schema_url(name: &str) -> Option<String> {
        let Ok(url) = std::env::var("FLEETSCORE_TEST_POSTGRES") else {
            eprintln!("FLEETSCORE_TEST_POSTGRES not set: PostgreSQL not checked");
            return None;
        };
        let schema = format!("t_{name}_{}", std::process::id());
        let mut admin = Client::connect(&url, NoTls).unwrap();
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(format!("{url}{sep}options=-csearch_path%3D{schema}"))
    }

    #[test]
    fn each_task_is_claimed_once_until_its_lease_expires() {
        if let Some(c) = coordinator("lease") {
            contract::each_task_is_claimed_once_until_its_lease_expires(&c);
        }
    }

    #[test]
    fn heartbeats_show_and_cancel_stops_claims() {
        if let Some(c) = coordinator("cancel") {
            contract::heartbeats_show_and_cancel_stops_claims(&c);
        }
    }

    #[test]
    fn any_run_claims_go_oldest_first() {
        if let Some(c) = coordinator("any") {
            contract::any_run_claims_go_oldest_first(&c);
        }
    }

    #[test]
    fn retries_follow_the_hint_and_the_attempt_limit() {
        if let Some(c) = coordinator("retry") {
            contract::retries_follow_the_hint_and_the_attempt_limit(&c);
        }
    }

    #[test]
    fn schedules_are_unique_and_keep_their_cursor() {
        if let Some(c) = coordinator("schedules") {
            schedules::contract::schedules_are_unique_and_keep_their_cursor(&c);
        }
    }

    #[test]
    fn a_tick_is_recorded_once_and_changed_by_one_caller() {
        if let Some(c) = coordinator("ticks") {
            schedules::contract::a_tick_is_recorded_once_and_changed_by_one_caller(&c);
        }
    }

    #[test]
    fn watermarks_only_move_forward() {
        if let Some(c) = coordinator("watermarks") {
            schedules::contract::watermarks_only_move_forward(&c);
        }
    }

    #[test]
    fn concurrent_claims_from_many_connections_never_share_a_task() {
        if let Some(url) = schema_url("concurrent") {
            let c = PostgresCoordinator::connect(&url).unwrap();
            contract::concurrent_claims_never_share_a_task(&c, &|| {
                Box::new(PostgresCoordinator::connect(&url).unwrap())
            });
        }
    }
}

/// The coordinator against the TLS-only server `scripts/test` starts
/// (`postgres.sh start-tls`: ssl=on, TCP without TLS refused, SCRAM passwords).
#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::coordinator::contract;

    /// The server's verify-full URL, with the password in it.
    fn tls_url() -> Option<String> {
        let url = std::env::var("FLEETSCORE_TEST_POSTGRES_TLS").ok();
        if url.is_none() {
            eprintln!("FLEETSCORE_TEST_POSTGRES_TLS not set: PostgreSQL over TLS not checked");
        }
        url
    }

    const PASSWORD: &str = "fleetscore-tls-test-pw";

    /// `url` with `key=value` settings replaced or added.
    fn with_params(url: &str, set: &[(&str, &str)]) -> String {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut pairs: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty() && !set.iter().any(|(k, _)| p.starts_with(&format!("{k}="))))
            .map(str::to_string)
            .collect();
        pairs.extend(set.iter().map(|(k, v)| format!("{k}={v}")));
        format!("{base}?{}", pairs.join("&"))
    }

    fn schema(url: &str, name: &str) -> String {
        let schema = format!("tls_{name}_{}", std::process::id());
        let c = PostgresCoordinator::connect(url).unwrap();
        c.with(|client| {
            client.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
        })
        .unwrap();
        with_params(url, &[("options", &format!("-csearch_path%3D{schema}"))])
    }

    fn refused(url: &str) -> String {
        let err = match PostgresCoordinator::connect(url) {
            Ok(_) => panic!("connected"),
            Err(e) => e.to_string(),
        };
        assert!(!err.contains(PASSWORD), "the password is shown: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    }

    #[test]
    fn verify_full_connects_over_tls_and_the_coordinator_works() {
        let Some(url) = tls_url() else { return };
        let url = schema(&url, "full");
        let c = PostgresCoordinator::connect(&url).unwrap();
        let (ssl, version): (bool, String) = c
            .with(|client| {
                let row = client.query_one(
                    "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )?;
                Ok((row.get(0), row.get(1)))
            })
            .unwrap();
        assert!(ssl);
        assert!(version.starts_with("TLSv1."), "{version}");
        contract::each_task_is_claimed_once_until_its_lease_expires(&c);
    }

    #[test]
    fn verify_ca_ignores_the_host_name_and_verify_full_does_not() {
        let Some(url) = tls_url() else { return };
        // Reach the server at 127.0.0.1 under a name its certificate does not carry.
        let renamed = url.replace("@localhost:", "@db.fleetscore.invalid:");
        let ca = with_params(
            &renamed,
            &[("hostaddr", "127.0.0.1"), ("sslmode", "verify-ca")],
        );
        PostgresCoordinator::connect(&ca).unwrap();
        let full = with_params(&renamed, &[("hostaddr", "127.0.0.1")]);
        let err = refused(&full);
        eprintln!("verify-full, wrong name: {err}");
        assert!(err.contains("not valid for the host name"), "{err}");
    }

    #[test]
    fn require_without_a_root_encrypts_without_checking() {
        let Some(url) = tls_url() else { return };
        let (base, _) = url.split_once('?').unwrap();
        PostgresCoordinator::connect(&format!("{base}?sslmode=require")).unwrap();
        PostgresCoordinator::connect(&format!("{base}?sslmode=prefer")).unwrap();
    }

    #[test]
    fn a_wrong_root_a_wrong_password_and_plaintext_are_refused_clearly() {
        let Some(url) = tls_url() else { return };
        let dir = std::env::temp_dir().join(format!("fleetscore-pg-tls-{}", std::process::id()));
        let other = fleetscore_tls::testing::TestCa::new(&dir, "other");
        let wrong_root = with_params(&url, &[("sslrootcert", other.ca_file().to_str().unwrap())]);
        let err = refused(&wrong_root);
        eprintln!("wrong root: {err}");
        assert!(err.contains("not signed by a trusted CA"), "{err}");

        let wrong_password = url.replace(PASSWORD, "not-the-password");
        let err = refused(&wrong_password);
        eprintln!("wrong password: {err}");
        assert!(err.contains("password authentication failed"), "{err}");
        assert!(!err.contains("not-the-password"), "{err}");

        let plaintext = with_params(&url, &[("sslmode", "disable")]);
        let err = refused(&plaintext);
        eprintln!("plaintext: {err}");
        assert!(err.contains("no encryption"), "{err}");
    }
}
