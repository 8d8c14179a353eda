//! The scheduler: fires due ticks, starts their runs, watches them, retries failed ones.
//!
//! Everything it knows is in the coordinator's database, so any number of schedulers may run on
//! one database, and one may die at any point:
//! - a tick fires when its row is inserted ([`ScheduleStore::record_ticks`](fleetscore_jobs::coordinator::schedules::ScheduleStore::record_ticks) inserts only rows
//!   that are missing, and reports which), so each tick fires once;
//! - starting a tick's run is a compare-and-set to `starting` under a lease (bounded by the
//!   schedule's `max_active`); a scheduler that dies while planning leaves the lease to expire,
//!   and another takes the tick over;
//! - a running tick belongs to no scheduler: whichever sees its run finish records the outcome
//!   (one compare-and-set wins), and retries or gives up.
//!
//! Two clocks: the schedule clock (a [`Clock`], fixed by `--now` for checks and tests) decides
//! which ticks are due; leases and retry backoff are operational and use the system clock.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};

use fleetscore_core::{Clock, now_ms, rfc3339};
use fleetscore_jobs::coordinator::Coordinator;
use fleetscore_jobs::coordinator::schedules::{ScheduleRow, Tick, TickState, WatermarkRow};
use fleetscore_jobs::run::{self, RunOptions, RunRequest};
use fleetscore_jobs::status::RunStatus;
use fleetscore_store::Store;

use crate::error::{Error, Result};
use crate::spec::{Schedule, Trigger};

/// How a scheduler works.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Its name: the owner of the ticks it starts.
    pub id: String,
    /// How long it holds a tick while planning the tick's run before another scheduler may
    /// take the tick over, ms.
    pub start_lease_ms: i64,
    /// How runs are planned (their workers are elsewhere: `workers` only sizes the plan).
    pub run: RunOptions,
    /// Fire due ticks (a backfill only moves the ticks it made, and those already open).
    pub fire: bool,
    /// Only this schedule (default: every schedule).
    pub only: Option<String>,
}

impl Default for SchedulerOptions {
    fn default() -> SchedulerOptions {
        let run = RunOptions::default();
        SchedulerOptions {
            id: format!("scheduler-{}", run.worker_prefix),
            start_lease_ms: 5 * 60_000,
            run,
            fire: true,
            only: None,
        }
    }
}

/// What happened to a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// It became due and will run.
    Fired,
    /// It became due, and the catch-up policy skips it.
    Skipped(String),
    /// It became due and waits for the watermark.
    Waiting(String),
    /// Its run was planned and handed to workers (attempt number).
    Started(u32),
    /// A run of its window had already succeeded (a manual run or a backfill): not run again.
    AlreadyRan,
    /// Its run succeeded.
    Succeeded {
        /// Rows scored.
        rows: u64,
        /// Anomalies found.
        anomalies: u64,
    },
    /// Its run finished with failed models (retrying cannot help).
    CompletedWithFailures(String),
    /// Its run failed; it runs again at the instant (epoch ms).
    Retrying(i64, String),
    /// Its run failed for good.
    Failed(String),
}

/// A change of one tick, as the scheduler reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The schedule.
    pub schedule: String,
    /// The tick.
    pub tick_ms: i64,
    /// Its window.
    pub from_ms: i64,
    /// Its window's end.
    pub to_ms: i64,
    /// Its run.
    pub run_id: String,
    /// What happened.
    pub what: What,
}

impl Event {
    fn of(tick: &Tick, what: What) -> Event {
        Event {
            schedule: tick.schedule.clone(),
            tick_ms: tick.tick_ms,
            from_ms: tick.from_ms,
            to_ms: tick.to_ms,
            run_id: tick.run_id.clone(),
            what,
        }
    }

    /// Whether the tick ended in anything but success.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.what,
            What::Failed(_) | What::CompletedWithFailures(_) | What::Retrying(..)
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{} .. {}) ",
            self.schedule,
            rfc3339(self.from_ms),
            rfc3339(self.to_ms)
        )?;
        match &self.what {
            What::Fired => write!(f, "fired (run {})", self.run_id),
            What::Skipped(why) => write!(f, "skipped: {why}"),
            What::Waiting(why) => write!(f, "waiting: {why}"),
            What::Started(1) => write!(f, "started run {}", self.run_id),
            What::Started(n) => write!(f, "started run {} (attempt {n})", self.run_id),
            What::AlreadyRan => write!(f, "already ran (run {} succeeded before)", self.run_id),
            What::Succeeded { rows, anomalies } => write!(
                f,
                "succeeded: run {}, {rows} rows, {anomalies} anomalies",
                self.run_id
            ),
            What::CompletedWithFailures(why) => {
                write!(f, "completed with failures: run {}: {why}", self.run_id)
            }
            What::Retrying(at, why) => {
                write!(f, "failed ({why}); retrying at {}", rfc3339(*at))
            }
            What::Failed(why) => write!(f, "failed for good: run {}: {why}", self.run_id),
        }
    }
}

/// A scheduler over one store and coordinator.
pub struct Scheduler<'a> {
    store: &'a Store,
    coordinator: &'a dyn Coordinator,
    clock: &'a dyn Clock,
    options: SchedulerOptions,
}

/// The schedules by name, as stored and parsed.
type Definitions = BTreeMap<String, (ScheduleRow, Schedule)>;

/// Parses a stored definition.
pub fn definition(row: &ScheduleRow) -> Result<Schedule> {
    serde_json::from_str(&row.definition).map_err(|e| {
        Error::Invalid(format!(
            "schedule {}: its stored definition does not parse: {e}",
            row.name
        ))
    })
}

impl<'a> Scheduler<'a> {
    /// A scheduler deciding what is due by `clock`.
    pub fn new(
        store: &'a Store,
        coordinator: &'a dyn Coordinator,
        clock: &'a dyn Clock,
        options: SchedulerOptions,
    ) -> Scheduler<'a> {
        Scheduler {
            store,
            coordinator,
            clock,
            options,
        }
    }

    fn definitions(&self) -> Result<Definitions> {
        let mut out = Definitions::new();
        for row in self.coordinator.schedules()? {
            if self
                .options
                .only
                .as_ref()
                .is_some_and(|only| *only != row.name)
            {
                continue;
            }
            match definition(&row) {
                Ok(def) => {
                    out.insert(row.name.clone(), (row, def));
                }
                // One broken row must not stop every other schedule.
                Err(e) => tracing::error!("{e}"),
            }
        }
        Ok(out)
    }

    /// One pass: records the ticks that became due, then moves every open tick on (starts,
    /// watches, retries). Returns what changed.
    pub fn step(&self) -> Result<Vec<Event>> {
        let defs = self.definitions()?;
        let mut events = Vec::new();
        // Event time may run ahead of the clock (a replay, a simulation): a watermark schedule's
        // ticks are due once the clock or the watermark has passed them.
        // The aggregators' watermarks, read once a pass (only watermark schedules need them).
        let marks = if defs.values().any(|(_, d)| d.trigger == Trigger::Watermark) {
            self.coordinator.watermarks()?
        } else {
            Vec::new()
        };
        let horizon = horizon(&marks);
        for (row, def) in defs.values() {
            if !row.paused && self.options.fire {
                events.extend(self.fire_due(row, def, horizon)?);
            }
        }
        events.extend(self.advance(&defs, slowest(&marks))?);
        Ok(events)
    }

    /// Records the ticks of a schedule that became due since its cursor.
    fn fire_due(
        &self,
        row: &ScheduleRow,
        def: &Schedule,
        watermark: Option<i64>,
    ) -> Result<Vec<Event>> {
        let mut now = self.clock.now_ms();
        if def.trigger == Trigger::Watermark
            && let Some(wm) = watermark
        {
            now = now.max(wm);
        }
        let decisions = def.due(row.cursor_ms, now);
        let Some(last) = decisions.last().map(|d| d.tick_ms) else {
            return Ok(Vec::new());
        };
        let wall = now_ms();
        let ticks: Vec<Tick> = decisions
            .into_iter()
            .map(|d| {
                let (from_ms, to_ms) = def.window(d.tick_ms);
                let (state, reason) = match d.skip {
                    Some(why) => (TickState::Skipped, Some(why)),
                    None if def.trigger == Trigger::Watermark => (
                        TickState::Waiting,
                        Some("waiting for the aggregators' watermark".to_string()),
                    ),
                    None => (TickState::Pending, None),
                };
                Tick {
                    schedule: def.name.clone(),
                    tick_ms: d.tick_ms,
                    from_ms,
                    to_ms,
                    run_id: run::run_id_for(from_ms, to_ms),
                    state,
                    attempts: 0,
                    next_ms: None,
                    owner: None,
                    reason,
                    backfill: false,
                    created_ms: wall,
                    updated_ms: wall,
                    version: 0,
                }
            })
            .collect();
        let inserted = self.coordinator.record_ticks(&def.name, &ticks, last)?;
        let mut events = Vec::new();
        for t in ticks.iter().filter(|t| inserted.contains(&t.tick_ms)) {
            let what = match t.state {
                TickState::Skipped => What::Skipped(t.reason.clone().unwrap_or_default()),
                TickState::Waiting => What::Waiting(t.reason.clone().unwrap_or_default()),
                _ => What::Fired,
            };
            events.push(Event::of(t, what));
        }
        Ok(events)
    }

    /// Moves every open tick on.
    fn advance(&self, defs: &Definitions, watermark: Option<(i64, String)>) -> Result<Vec<Event>> {
        let open = self.coordinator.open_ticks()?;
        let wall = now_ms();
        let mut events = Vec::new();
        for tick in open {
            let Some((row, def)) = defs.get(&tick.schedule) else {
                continue;
            };
            let event = match tick.state {
                TickState::Waiting => match &watermark {
                    // Complete, or its schedule was edited to the clock trigger.
                    _ if def.trigger == Trigger::Clock => {
                        let mut next = tick.clone();
                        next.state = TickState::Pending;
                        next.reason = None;
                        self.coordinator.update_tick(&next, wall)?;
                        None
                    }
                    Some((wm, _)) if *wm >= tick.to_ms => {
                        let mut next = tick.clone();
                        next.state = TickState::Pending;
                        next.reason = None;
                        if self.coordinator.update_tick(&next, wall)? {
                            next.version += 1;
                            if row.paused {
                                None
                            } else {
                                self.start(next, def, false)?
                            }
                        } else {
                            None
                        }
                    }
                    _ => {
                        let why = match &watermark {
                            Some((wm, slowest)) => format!(
                                "waiting for the watermark: aggregator {slowest} has every window \
                                 before {} (this one ends {})",
                                rfc3339(*wm),
                                rfc3339(tick.to_ms)
                            ),
                            None => "waiting for the watermark: no aggregator has published one"
                                .to_string(),
                        };
                        if tick.reason.as_deref() != Some(why.as_str()) {
                            let mut next = tick.clone();
                            next.reason = Some(why);
                            self.coordinator.update_tick(&next, wall)?;
                        }
                        None
                    }
                },
                TickState::Pending if !row.paused => self.start(tick, def, false)?,
                TickState::Retrying if !row.paused && tick.next_ms.is_none_or(|t| t <= wall) => {
                    self.start(tick, def, false)?
                }
                TickState::Starting if tick.next_ms.is_some_and(|t| t < wall) => {
                    // Its scheduler died while planning: take it over.
                    self.start(tick, def, true)?
                }
                TickState::Running => self.watch(tick, def)?,
                _ => None,
            };
            events.extend(event);
        }
        Ok(events)
    }

    /// Claims a tick for starting and plans its run.
    fn start(&self, tick: Tick, def: &Schedule, takeover: bool) -> Result<Option<Event>> {
        let wall = now_ms();
        let mut next = tick.clone();
        next.state = TickState::Starting;
        next.owner = Some(self.options.id.clone());
        next.next_ms = Some(wall + self.options.start_lease_ms);
        let claimed = if takeover {
            self.coordinator.update_tick(&next, wall)?
        } else {
            self.coordinator.start_tick(&next, def.max_active, wall)?
        };
        if !claimed {
            return Ok(None);
        }
        next.version += 1;
        // A run of this window may exist: a manual run or a backfill that succeeded, or the
        // run a scheduler that died had started.
        if let Some(existing) = self.coordinator.run(&next.run_id)? {
            match existing.status {
                RunStatus::Succeeded if next.attempts == 0 => {
                    next.state = TickState::Succeeded;
                    next.next_ms = None;
                    next.reason = Some("already ran (a manual run or a backfill)".into());
                    self.coordinator.update_tick(&next, now_ms())?;
                    return Ok(Some(Event::of(&next, What::AlreadyRan)));
                }
                RunStatus::Running if takeover || next.attempts == 0 => {
                    next.state = TickState::Running;
                    next.attempts += 1;
                    next.next_ms = None;
                    next.reason = None;
                    self.coordinator.update_tick(&next, now_ms())?;
                    return Ok(Some(Event::of(&next, What::Started(next.attempts))));
                }
                _ => {}
            }
        }
        let request = RunRequest {
            run_id: Some(next.run_id.clone()),
            ..RunRequest::window(next.from_ms, next.to_ms).with_options(RunOptions {
                max_models_per_task: def.run.max_models_per_task,
                ..self.options.run.clone()
            })
        };
        next.attempts += 1;
        match run::start(self.store, self.coordinator, &request) {
            Ok(_) => {
                next.state = TickState::Running;
                next.next_ms = None;
                next.reason = None;
                self.coordinator.update_tick(&next, now_ms())?;
                Ok(Some(Event::of(&next, What::Started(next.attempts))))
            }
            Err(e) => self
                .failed_attempt(next, def, format!("planning its run failed: {e}"))
                .map(Some),
        }
    }

    /// Looks at a running tick's run; records its outcome when it finished.
    fn watch(&self, tick: Tick, def: &Schedule) -> Result<Option<Event>> {
        let Some(state) = self.coordinator.run(&tick.run_id)? else {
            return self
                .failed_attempt(tick, def, "its run is gone from the coordinator".into())
                .map(Some);
        };
        if state.status == RunStatus::Running {
            // Every task ended but nobody wrote the record (its worker died just after): do it.
            if state.tasks.queued() == 0 {
                run::finalize(self.store, self.coordinator, &tick.run_id)?;
            }
            return Ok(None);
        }
        let record = run::record(self.store, &tick.run_id)?;
        let mut next = tick;
        next.next_ms = None;
        match state.status {
            RunStatus::Succeeded => {
                next.state = TickState::Succeeded;
                next.reason = None;
                if !self.coordinator.update_tick(&next, now_ms())? {
                    return Ok(None);
                }
                let (rows, anomalies) = record.map_or((0, 0), |r| (r.rows, r.anomalies));
                Ok(Some(Event::of(&next, What::Succeeded { rows, anomalies })))
            }
            RunStatus::CompletedWithFailures => {
                let Some(record) = record else {
                    let why = "its run finished without a record".to_string();
                    return self.failed_attempt(next, def, why).map(Some);
                };
                if record.tasks_failed > 0 {
                    let first = record
                        .task_failures
                        .first()
                        .map(|f| format!(": shard {}: {}", f.shard, f.error))
                        .unwrap_or_default();
                    let why = format!("{} tasks failed{first}", record.tasks_failed);
                    return self.failed_attempt(next, def, why).map(Some);
                }
                let first = record
                    .failures
                    .first()
                    .map(|f| format!(": {}/{}: {}", f.device, f.tag, f.reason))
                    .unwrap_or_default();
                let why = format!("{} models failed{first}", record.models_failed);
                next.state = TickState::CompletedWithFailures;
                next.reason = Some(why.clone());
                if !self.coordinator.update_tick(&next, now_ms())? {
                    return Ok(None);
                }
                Ok(Some(Event::of(&next, What::CompletedWithFailures(why))))
            }
            RunStatus::Cancelled => self
                .give_up(next, def, "its run was cancelled".into())
                .map(Some),
            RunStatus::Running => Ok(None),
        }
    }

    /// A run of the tick failed: retry with backoff while retries remain, else give up.
    fn failed_attempt(&self, mut tick: Tick, def: &Schedule, why: String) -> Result<Event> {
        if tick.attempts <= def.retries {
            let at = now_ms() + def.backoff_ms(tick.attempts);
            tick.state = TickState::Retrying;
            tick.next_ms = Some(at);
            tick.reason = Some(why.clone());
            self.coordinator.update_tick(&tick, now_ms())?;
            return Ok(Event::of(&tick, What::Retrying(at, why)));
        }
        self.give_up(tick, def, why)
    }

    fn give_up(&self, mut tick: Tick, def: &Schedule, why: String) -> Result<Event> {
        tick.state = TickState::Failed;
        tick.next_ms = None;
        tick.reason = Some(why.clone());
        let won = self.coordinator.update_tick(&tick, now_ms())?;
        let event = Event::of(&tick, What::Failed(why));
        // Only the scheduler whose change landed tells anyone.
        if won && let Some(hook) = &def.on_failure {
            notify(hook, &event);
        }
        Ok(event)
    }

    /// Whether the schedules this scheduler drives still have ticks a one-shot pass should
    /// wait for: pending, starting, running, or retrying within [`SHORT_RETRY_MS`]. Ticks waiting
    /// for a watermark, and retries further off, are reported, not waited for.
    pub fn busy(&self) -> Result<bool> {
        let soon = now_ms() + SHORT_RETRY_MS;
        Ok(self.coordinator.open_ticks()?.iter().any(|t| {
            self.options
                .only
                .as_ref()
                .is_none_or(|only| *only == t.schedule)
                && match t.state {
                    TickState::Pending | TickState::Starting | TickState::Running => true,
                    TickState::Retrying => t.next_ms.is_none_or(|at| at <= soon),
                    _ => false,
                }
        }))
    }
}

/// The watermark every aggregator has passed, and the slowest aggregator; `None` when no
/// aggregator has published one.
fn slowest(marks: &[WatermarkRow]) -> Option<(i64, String)> {
    marks
        .iter()
        .min_by_key(|w| w.complete_before_ms)
        .map(|w| (w.complete_before_ms, w.aggregator.clone()))
}

/// How far event time has gone by every aggregator: the least, over aggregators, of what is
/// complete and the newest event read (a drained aggregator calls every window complete; ticks
/// past its data would be windows of nothing). `None` when none has published.
fn horizon(marks: &[WatermarkRow]) -> Option<i64> {
    marks
        .iter()
        .map(|w| w.complete_before_ms.min(w.newest_event_ms))
        .min()
}

/// A retry this close is waited for by a one-shot pass (`scheduler --once`, `backfill`).
pub const SHORT_RETRY_MS: i64 = 10_000;

/// Tells `--on-failure` of a window that failed for good: a command gets the event in its
/// environment and as JSON on its standard input; an `http://` URL gets the JSON POSTed. In the
/// background: a slow hook never holds the scheduler up.
fn notify(hook: &str, event: &Event) {
    let body = serde_json::json!({
        "schedule": event.schedule,
        "run_id": event.run_id,
        "from": rfc3339(event.from_ms),
        "to": rfc3339(event.to_ms),
        "error": match &event.what { What::Failed(why) => why.as_str(), _ => "" },
    })
    .to_string();
    let hook = hook.to_string();
    let event = event.clone();
    std::thread::spawn(move || {
        let outcome = if hook.starts_with("http://") {
            post(&hook, &body)
        } else {
            command(&hook, &event, &body)
        };
        match outcome {
            Ok(()) => tracing::info!("--on-failure told of {}", event.run_id),
            Err(e) => tracing::error!("--on-failure {hook}: {e}"),
        }
    });
}

fn command(hook: &str, event: &Event, body: &str) -> std::result::Result<(), String> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("FLEETSCORE_SCHEDULE", &event.schedule)
        .env("FLEETSCORE_RUN_ID", &event.run_id)
        .env("FLEETSCORE_FROM", rfc3339(event.from_ms))
        .env("FLEETSCORE_TO", rfc3339(event.to_ms))
        .env(
            "FLEETSCORE_ERROR",
            match &event.what {
                What::Failed(why) => why.as_str(),
                _ => "",
            },
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body.as_bytes());
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}"))
    }
}

/// POSTs `body` to an `http://host[:port]/path` URL and checks for a 2xx answer.
fn post(url: &str, body: &str) -> std::result::Result<(), String> {
    use std::net::ToSocketAddrs;
    use std::time::Duration;
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let timeout = Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // One buffer, one write: a server may answer and close as soon as it has read the head.
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: fleetscore\r\n\r\n{body}",
        body.len()
    );
    let sent = stream.write_all(request.as_bytes());
    // A server may answer before it has read the whole request (a 413, a 500) and close, which
    // fails the rest of the write; its answer is still the reason to report, so read it anyway.
    let status = status_line(&mut stream);
    match (status, sent) {
        (Some(code), _) if code.starts_with('2') => Ok(()),
        (Some(code), _) => Err(format!("answered {code}")),
        (None, Err(e)) => Err(format!("cannot send: {e}")),
        (None, Ok(())) => Err("no HTTP answer".into()),
    }
}

/// The status code of an HTTP answer's first line, if one arrives.
fn status_line(stream: &mut std::net::TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Some(code.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A server that answers `status` after its first read of the request and closes, with
    /// the rest of the request unread; and its URL.
    fn answering_early(status: &'static str) -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let answer = format!("HTTP/1.1 {status}\r\n\r\n");
            stream.write_all(answer.as_bytes()).unwrap();
        });
        (url, server)
    }

    #[test]
    fn the_failure_webhook_is_posted_json() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/fleet", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            (&stream)
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        post(&url, r#"{"run_id":"r"}"#).unwrap();
        let (head, body) = server.join().unwrap();
        assert_eq!(head[0], "POST /hooks/fleet HTTP/1.1\r\n");
        assert!(
            head.iter()
                .any(|h| h == "Content-Type: application/json\r\n")
        );
        assert_eq!(body, r#"{"run_id":"r"}"#);

        // A refusal is an error naming the status, also when the server answers as soon as it
        // has read the head and closes with the body unread (the write then fails).
        let (url, server) = answering_early("500 Internal Server Error");
        assert_eq!(post(&url, "{}").unwrap_err(), "answered 500");
        server.join().unwrap();
        let (url, server) = answering_early("413 Content Too Large");
        // Larger than the loopback socket buffers, so the write cannot finish before the close.
        let big = format!("\"{}\"", "x".repeat(64 << 20));
        assert_eq!(post(&url, &big).unwrap_err(), "answered 413");
        server.join().unwrap();

        // No server answer at all names the failure.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let err = post(&url, "{}").unwrap_err();
        assert!(
            err == "no HTTP answer" || err.starts_with("cannot send"),
            "{err}"
        );
        server.join().unwrap();
    }
}
