//! Retention from a thread of its own: [`Log::spawn_retention`] and the [`Retention`] that
//! owns the thread and stops it.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use fleetscore_core::Clock;

use crate::{Error, Log, Result};

/// A thread that enforces a log's retention ([`Log::enforce_retention`]) at once and then
/// every period, until [`Retention::stop`] or drop. A pass that fails is reported through
/// `tracing` and the next one tries again: a full disk or a permission problem should not stop
/// the log from taking readings.
#[derive(Debug)]
pub struct Retention {
    /// Dropped to stop the thread: its wait for the next pass ends as soon as the sender is
    /// gone, so stopping does not wait out the period. Nothing is ever sent on it.
    stop: Option<mpsc::Sender<()>>,
    /// The thread, joined when stopping.
    thread: Option<JoinHandle<()>>,
}

impl Log {
    /// Starts enforcing retention on a thread of its own: now, then every `every`, with the
    /// time taken from `clock`. Only the process writing the log can (a log opened with
    /// [`Log::open_reader`] is refused). The thread holds a clone of the log, so the log's
    /// writer keeps running until the [`Retention`] is stopped or dropped too.
    pub fn spawn_retention(&self, every: Duration, clock: Arc<dyn Clock>) -> Result<Retention> {
        if self.shared.lock.is_none() {
            return Err(Error::Config(
                "this log was opened for reading; retention is the writer's".into(),
            ));
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let log = self.clone();
        let thread = std::thread::Builder::new()
            .name("log-retention".into())
            .spawn(move || {
                loop {
                    match log.enforce_retention(clock.now_ms()) {
                        Ok((0, _)) => {}
                        Ok((n, bytes)) => {
                            tracing::info!("log retention: deleted {n} segment(s), {bytes} bytes");
                        }
                        Err(e) => tracing::warn!("log retention: {e}"),
                    }
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| Error::io(&self.shared.dir, e))?;
        Ok(Retention {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Retention {
    /// Stops the thread and waits for it: a pass in progress finishes (segments are deleted
    /// whole), none starts after. Dropping a `Retention` does the same.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
