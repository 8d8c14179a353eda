//! The one way every ingest protocol runs: the [`Source`] trait, the [`Shutdown`] signal the
//! sources share, and the [`Runner`] that starts them together and stops them together.

use std::future::Future;
use std::pin::Pin;

use fleetscore_log::Log;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{Error, Report, Result};

/// An ingest protocol: takes readings from somewhere (a listening socket, a broker), appends
/// them to the log, and acknowledges each only once it is durable. HTTP
/// ([`HttpSource`](crate::server::HttpSource)), MQTT ([`MqttSource`](crate::mqtt::MqttSource))
/// and Kafka ([`KafkaSource`](crate::kafka::KafkaSource)) implement it; a [`Runner`] runs any
/// set of them.
pub trait Source: Send + 'static {
    /// A short name for logs: `http`, `mqtt`, `kafka`.
    fn name(&self) -> &'static str;

    /// Takes readings into `log` until `shutdown` is signalled, then returns `Ok`. An `Err` is
    /// a failure the source cannot ride out (the sources that pull from a broker retry its
    /// errors themselves, with backoff, and end only at shutdown).
    fn run(self, log: Log, shutdown: Shutdown) -> impl Future<Output = Result<()>> + Send;
}

/// Tells sources to stop: [`Stop::stop`], or dropping the `Stop`, signals every [`Shutdown`]
/// it made.
#[derive(Debug)]
pub struct Stop {
    /// Set to `true` to stop; each [`Shutdown`] holds a receiver.
    tx: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl Stop {
    /// A signal not given yet.
    pub fn new() -> Stop {
        Stop {
            tx: watch::Sender::new(false),
        }
    }

    /// A [`Shutdown`] that this `Stop` signals, to hand to a source.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Signals every [`Shutdown`] made from this `Stop`.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

/// A source's signal to stop (from a [`Stop`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Becomes `true` when stopping is asked; a dropped [`Stop`] counts as asked too, so a
    /// source never outlives what started it.
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Completes once stopping is asked (at once if it already was).
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        // An error means the `Stop` is gone: stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A started source: its name and what it does until told to stop.
type Running = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Sources started together on one runtime and stopped together: on SIGINT or SIGTERM (what
/// Kubernetes sends before it kills a pod), or when one of them fails.
pub struct Runner {
    log: Log,
    /// Signals the sources' [`Shutdown`]s.
    stop: Stop,
    sources: Vec<(&'static str, Running)>,
}

impl Runner {
    /// A runner for sources appending to `log`.
    pub fn new(log: Log) -> Runner {
        Runner {
            log,
            stop: Stop::new(),
            sources: Vec::new(),
        }
    }

    /// Adds a source; it starts when the runner runs.
    pub fn add(&mut self, source: impl Source) -> &mut Runner {
        let name = source.name();
        let running = source.run(self.log.clone(), self.stop.shutdown());
        self.sources.push((name, Box::pin(running)));
        self
    }

    /// Runs every source until `stop` completes or one of them fails, then signals the others
    /// and waits until every one has returned. The result is the first failure, if any (the
    /// others are logged). A source that panics takes the runner down with it.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        let Runner {
            log,
            stop: stopper,
            sources,
        } = self;
        // Each source holds its own clone: the log is done with once they are.
        drop(log);
        let mut running = JoinSet::new();
        for (name, source) in sources {
            running.spawn(async move { (name, source.await) });
        }
        tokio::pin!(stop);
        let mut stopping = false;
        let mut result = Ok(());
        loop {
            tokio::select! {
                () = &mut stop, if !stopping => {
                    stopping = true;
                    stopper.stop();
                }
                joined = running.join_next() => match joined {
                    None => break,
                    Some(Ok((_, Ok(())))) => {}
                    Some(Ok((name, Err(e)))) => {
                        if result.is_ok() {
                            result = Err(e);
                        } else {
                            tracing::error!("{name}: {}", Report(&e));
                        }
                        stopping = true;
                        stopper.stop();
                    }
                    // A task is cancelled only when the runtime shuts down; a panic goes on.
                    Some(Err(e)) => {
                        if let Ok(panic) = e.try_into_panic() {
                            std::panic::resume_unwind(panic);
                        }
                    }
                },
            }
        }
        result
    }

    /// Runs the sources on a runtime of their own (threads named `ingest`) until SIGINT or
    /// SIGTERM, or until one fails; see [`Runner::run`].
    pub fn run_until_terminated(self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ingest")
            .build()
            .map_err(|e| Error::Io {
                what: "cannot start the server's runtime".into(),
                source: e,
            })?;
        runtime.block_on(async {
            // Listening for the signals from before any source starts.
            let terminated = termination();
            self.run(terminated).await
        })
    }
}

/// SIGINT or SIGTERM (what Kubernetes sends before it kills a pod). The handlers are installed
/// when this is called (in a runtime), not when the future is first polled.
fn termination() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = signal(SignalKind::terminate()).and_then(|term| {
        let int = signal(SignalKind::interrupt())?;
        Ok((term, int))
    });
    async move {
        match signals {
            Ok((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Runs until shutdown, then notes that it stopped.
    struct UntilShutdown(Arc<AtomicBool>);

    impl Source for UntilShutdown {
        fn name(&self) -> &'static str {
            "until-shutdown"
        }
        async fn run(self, _log: Log, shutdown: Shutdown) -> Result<()> {
            shutdown.requested().await;
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Fails at once.
    struct Fails;

    impl Source for Fails {
        fn name(&self) -> &'static str {
            "fails"
        }
        async fn run(self, _log: Log, _shutdown: Shutdown) -> Result<()> {
            Err(Error::Config("no such broker".into()))
        }
    }

    fn log(name: &str) -> (std::path::PathBuf, Log) {
        let dir = std::env::temp_dir().join(format!(
            "fleetscore-ingest-runner-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(&dir, fleetscore_log::Options::default()).unwrap();
        (dir, log)
    }

    #[tokio::test]
    async fn stopping_the_runner_stops_every_source() {
        let (dir, log) = log("stop");
        let (a, b) = (Arc::default(), Arc::default());
        let mut runner = Runner::new(log);
        runner
            .add(UntilShutdown(Arc::clone(&a)))
            .add(UntilShutdown(Arc::clone(&b)));
        runner.run(async {}).await.unwrap();
        assert!(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_source_that_fails_stops_the_others_and_is_the_result() {
        let (dir, log) = log("fail");
        let other = Arc::default();
        let mut runner = Runner::new(log);
        runner.add(UntilShutdown(Arc::clone(&other))).add(Fails);
        let e = runner.run(std::future::pending()).await.unwrap_err();
        assert_eq!(e.to_string(), "no such broker");
        assert!(other.load(Ordering::SeqCst));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
