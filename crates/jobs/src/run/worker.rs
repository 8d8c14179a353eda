//! Workers: the claim–execute–complete loops, on one run ([`work`]) or on every run
//! ([`serve`]), with a heartbeat thread renewing each claim's lease while its task executes.

use std::time::{Duration, Instant};

use fleetscore_store::{Store, layout};

use super::{RunOptions, finalize, now_ms};
use crate::coordinator::{Claim, Coordinator, Failure, RunSpec};
use crate::error::{Error, Result};
use crate::status::RunStatus;

/// Executes one claimed task with heartbeats, and completes or fails it.
fn execute_claim(
    store: &Store,
    coordinator: &dyn Coordinator,
    spec: &RunSpec,
    claim: &Claim,
    options: &RunOptions,
) -> Result<()> {
    let outcome = with_heartbeat(coordinator, claim, options.lease, || {
        if let Some(delay) = options.faults.task_delay {
            std::thread::sleep(delay);
        }
        if options.faults.fail_shard == Some(claim.task.shard) {
            return Err(Error::Store(fleetscore_store::Error::Store {
                key: layout::predictions(&spec.id, claim.task.shard),
                message: "injected fault (FLEETSCORE_FAULT_FAIL_SHARD)".into(),
            }));
        }
        let attempt = super::Attempt {
            store,
            spec,
            worker: &claim.worker,
            attempt: claim.attempt,
            model_limits: &options.model_limits,
            cache: options.model_cache.as_deref(),
        };
        super::execute_task(&attempt, &claim.task)
    });
    match outcome {
        Ok(result) => {
            // A lost claim means a newer attempt owns the task; its output replaces ours.
            coordinator.complete(claim, &result, now_ms())?;
        }
        Err(e) => {
            let failure = Failure {
                error: &e.to_string(),
                hint: e.retry(),
                max_attempts: options.max_attempts,
            };
            coordinator.fail(claim, &failure, now_ms())?;
        }
    }
    Ok(())
}

/// How often an idle worker asks the coordinator for work again.
const POLL: Duration = Duration::from_millis(100);

/// A worker loop on one run: claims and executes its tasks until none is unfinished (a task
/// held by a worker elsewhere that dies is claimed again when its lease expires).
pub fn work(
    store: &Store,
    coordinator: &dyn Coordinator,
    spec: &RunSpec,
    worker: &str,
    options: &RunOptions,
) -> Result<()> {
    let lease_ms = options.lease.as_millis() as i64;
    loop {
        match coordinator.claim(Some(&spec.id), worker, lease_ms, now_ms())? {
            Some(claim) => execute_claim(store, coordinator, spec, &claim, options)?,
            None => {
                let unfinished = coordinator
                    .run(&spec.id)?
                    .is_some_and(|r| r.status == RunStatus::Running && r.tasks.queued() > 0);
                if !unfinished {
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

/// What a [`serve`] loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Tasks executed (completed or failed).
    pub tasks: u64,
    /// Runs this worker finished (wrote the record of).
    pub runs_finished: u64,
}

/// A worker for every run (`fleetscore worker`): claims tasks of any running run, oldest run
/// first, and writes a run's record when it completes the run's last task. Returns when
/// `stop` says so, or after `idle_exit` without work.
pub fn serve(
    store: &Store,
    coordinator: &dyn Coordinator,
    worker: &str,
    options: &RunOptions,
    idle_exit: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> Result<Served> {
    let lease_ms = options.lease.as_millis() as i64;
    let mut served = Served::default();
    let mut idle_since = Instant::now();
    while !stop() {
        let Some(claim) = coordinator.claim(None, worker, lease_ms, now_ms())? else {
            if idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                break;
            }
            std::thread::sleep(POLL);
            continue;
        };
        // The run's window, read for every task: a run planned again under the same id may
        // have another.
        let spec = coordinator
            .run(&claim.run_id)?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "run {} vanished from the coordinator",
                    claim.run_id
                ))
            })?
            .spec;
        execute_claim(store, coordinator, &spec, &claim, options)?;
        served.tasks += 1;
        if finalize(store, coordinator, &claim.run_id)?.is_some() {
            served.runs_finished += 1;
        }
        idle_since = Instant::now();
    }
    Ok(served)
}

fn with_heartbeat<T>(
    coordinator: &dyn Coordinator,
    claim: &Claim,
    lease: Duration,
    f: impl FnOnce() -> T,
) -> T {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let every = lease / 3;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if !matches!(
                    coordinator.heartbeat(claim, lease.as_millis() as i64, now_ms()),
                    Ok(true)
                ) {
                    break;
                }
            }
        });
        let out = f();
        drop(stop);
        out
    })
}
