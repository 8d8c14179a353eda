//! `fleetscore autoscale`: keeps between `--min` and `--max` worker processes on this machine
//! from the coordinator's queue depth (the tasks of running runs not yet done) — the local
//! counterpart of KEDA scaling the worker Deployment (see `deploy/`).
//!
//! Scaling up starts workers at once. Scaling down is the workers' own doing: each worker above
//! the minimum runs with `--idle-exit COOLDOWN` and leaves after that long without a task, so
//! none is ever stopped in the middle of one, and an idle machine goes down to `--min` (zero by
//! default).

use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::fleet_cmd::StoreArgs;

/// `fleetscore autoscale`.
#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    /// Workers kept even when there is nothing to do.
    #[arg(long, env = "FLEETSCORE_AUTOSCALE_MIN", default_value_t = 0)]
    pub min: u32,
    /// Most workers at once.
    #[arg(long, env = "FLEETSCORE_AUTOSCALE_MAX", default_value_t = 4)]
    pub max: u32,
    /// Queued tasks per worker: the queue divided by this (rounded up) is how many workers
    /// are wanted.
    #[arg(
        long,
        env = "FLEETSCORE_AUTOSCALE_TASKS_PER_WORKER",
        default_value_t = 4
    )]
    pub tasks_per_worker: u32,
    /// Seconds a worker above the minimum waits without a task before it exits.
    #[arg(long, env = "FLEETSCORE_AUTOSCALE_COOLDOWN", default_value_t = 60)]
    pub cooldown: u64,
    /// Threads per worker process.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds between looks at the queue.
    #[arg(long, default_value_t = 1.0)]
    pub poll: f64,
    /// Exit once the queue is empty and every worker has exited (for batch use and tests);
    /// by default the autoscaler runs until it is stopped.
    #[arg(long)]
    pub exit_when_idle: bool,
}

/// How many workers the queue wants, within `[min, max]`.
pub fn desired(queue: u32, tasks_per_worker: u32, min: u32, max: u32) -> u32 {
    queue
        .div_ceil(tasks_per_worker.max(1))
        .clamp(min, max.max(min))
}

struct Worker {
    child: Child,
    name: String,
    /// One of the `--min` workers: started without an idle exit.
    permanent: bool,
}

pub fn run(store: &StoreArgs, a: AutoscaleArgs) -> Result<ExitCode> {
    let coordinator = store.coordinator()?;
    let exe = std::env::current_exe().context("cannot find the fleetscore executable")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let mut workers: Vec<Worker> = Vec::new();
    let mut started = 0u64;
    let poll = Duration::from_secs_f64(a.poll.max(0.05));
    eprintln!(
        "autoscale: {}..{} workers, {} queued tasks per worker, cooldown {}s",
        a.min, a.max, a.tasks_per_worker, a.cooldown
    );
    loop {
        // Workers that left (idle, or failed).
        workers.retain_mut(|w| match w.child.try_wait() {
            Ok(Some(status)) => {
                eprintln!("autoscale: worker {} exited ({status})", w.name);
                false
            }
            _ => true,
        });
        let queue = coordinator.queue_depth()?;
        let want = desired(queue, a.tasks_per_worker, a.min, a.max) as usize;
        if workers.len() < want {
            eprintln!(
                "autoscale: {queue} queued tasks: scaling from {} to {want} workers",
                workers.len()
            );
        }
        while workers.len() < want {
            let permanent = workers.iter().filter(|w| w.permanent).count() < a.min as usize;
            let name = format!("{host}-scaled-{}-{started}", std::process::id());
            started += 1;
            let mut cmd = Command::new(&exe);
            cmd.arg("--store").arg(&store.store);
            if let Some(db) = &store.db {
                cmd.arg("--db").arg(db);
            }
            cmd.arg("--max-model-memory")
                .arg(store.max_model_memory.to_string());
            cmd.args([
                "worker",
                "--threads",
                &a.threads.to_string(),
                "--name",
                &name,
            ]);
            if !permanent {
                cmd.args(["--idle-exit", &a.cooldown.to_string()]);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start worker {name}"))?;
            workers.push(Worker {
                child,
                name,
                permanent,
            });
        }
        if a.exit_when_idle && queue == 0 && workers.is_empty() {
            eprintln!("autoscale: queue empty and no worker left; exiting");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::desired;

    #[test]
    fn the_queue_decides_within_the_bounds() {
        assert_eq!(desired(0, 4, 0, 8), 0, "idle: down to the minimum");
        assert_eq!(desired(0, 4, 1, 8), 1);
        assert_eq!(desired(1, 4, 0, 8), 1, "any work wakes one worker");
        assert_eq!(desired(9, 4, 0, 8), 3);
        assert_eq!(desired(1_000, 4, 0, 8), 8, "never above the maximum");
        assert_eq!(
            desired(5, 0, 0, 8),
            5,
            "zero tasks per worker counts as one"
        );
        assert_eq!(
            desired(5, 4, 3, 1),
            3,
            "a maximum below the minimum is the minimum"
        );
    }
}
