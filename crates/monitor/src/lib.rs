//! fleetscore's monitor: what an operator opens every morning. A read-only HTTP service over
//! the store (run records, task summaries and logs, the registry, aggregator checkpoints), the
//! coordinator (workers, queue, tasks) and, when given, the ingest log:
//!
//! - a server-rendered dashboard (`pages/`, charts drawn as SVG on the server by [`svg`]);
//! - a JSON API under `/api/v1/` ([`api`]);
//! - `/metrics` in the OpenMetrics text format ([`metrics`]);
//! - per-model health ([`health`]): always anomalous, drifting, silent, failing.
//!
//! Requests read an immutable [`Snapshot`] of summaries that a refresh thread rebuilds
//! incrementally ([`refresh`]), so a page costs the same with ten runs or ten thousand.
//! [`app`] is the service as a `Router` (tests call it without a socket); [`serve`] runs it
//! with graceful shutdown.
#![warn(missing_docs)]

pub mod api;
mod auth;
mod error;
pub mod health;
pub mod metrics;
mod pages;
pub mod pipeline;
pub mod refresh;
pub mod schedule;
pub mod snapshot;
pub mod svg;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use fleetscore_core::tokens::Tokens;

pub use error::{AppError, Error, Result};
pub use health::{Flag, Health, HealthOptions};
pub use refresh::{Options, Refresher, Sources};
pub use schedule::{NoScheduler, ScheduleView, Schedules, TickView};
pub use snapshot::Snapshot;

/// Requests answered at once; more wait for a slot (a page costs milliseconds, so a short
/// queue drains fast).
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// How long a request may take before it is answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The monitor: its sources, the latest snapshot, and who may read it.
pub struct Monitor {
    sources: Arc<Sources>,
    /// The refresher's state between passes; locked by the one pass running (the refresh
    /// thread's, or a test's), never by a request.
    refresher: Mutex<Refresher>,
    /// The latest snapshot; requests clone the `Arc` and release the lock at once.
    snapshot: RwLock<Arc<Snapshot>>,
    /// Bearer tokens; `None` serves anyone (only on a loopback address).
    tokens: Option<Tokens>,
    /// Request slots: bounded concurrency, so a burst cannot pile up work without limit.
    slots: Arc<Semaphore>,
}

impl Monitor {
    /// A monitor over `sources`, with its first snapshot read.
    pub fn new(sources: Sources, tokens: Option<Tokens>) -> Arc<Monitor> {
        let sources = Arc::new(sources);
        let mut refresher = Refresher::new(sources.clone());
        let first = refresher.refresh();
        Arc::new(Monitor {
            sources,
            refresher: Mutex::new(refresher),
            snapshot: RwLock::new(Arc::new(first)),
            tokens,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
        })
    }

    /// Reads what changed and publishes the new snapshot.
    pub fn refresh(&self) -> Arc<Snapshot> {
        let next = Arc::new(self.refresher.lock().expect("refresher lock").refresh());
        *self.snapshot.write().expect("snapshot lock") = next.clone();
        next
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// What it reads.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// Refreshes every `every` on a thread of its own until the returned handle is dropped
    /// (or [`RefreshThread::stop`]ped).
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> std::io::Result<RefreshThread> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let monitor = self.clone();
        let thread = std::thread::Builder::new()
            .name("fleetscore-monitor-refresh".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let started = std::time::Instant::now();
                    let snap = monitor.refresh();
                    tracing::debug!(
                        "monitor refreshed in {:.3}s: {} runs, {} models",
                        started.elapsed().as_secs_f64(),
                        snap.runs.rows.len(),
                        snap.models.rows.len()
                    );
                }
            })?;
        Ok(RefreshThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The refresh thread; stops when dropped.
pub struct RefreshThread {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RefreshThread {
    /// Stops it and waits for the pass in progress.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RefreshThread {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Refuses to serve without tokens on anything but a loopback address.
pub fn check_listen(addr: SocketAddr, tokens: Option<&Tokens>) -> Result<()> {
    if tokens.is_none() && !addr.ip().is_loopback() {
        return Err(Error::Config(format!(
            "refusing to serve the monitor on {addr} without tokens: pass --tokens FILE, or listen on a loopback address"
        )));
    }
    if let Some(t) = tokens.and_then(|t| t.tokens.iter().find(|t| t.devices.is_some())) {
        return Err(Error::Config(format!(
            "token `{}` is limited to devices; the monitor shows the whole fleet, so its tokens file takes tokens without `devices`",
            t.name
        )));
    }
    Ok(())
}

/// The service: dashboard pages, the JSON API, `/metrics` and `/healthz`.
pub fn app(monitor: Arc<Monitor>) -> Router {
    let protected = Router::new()
        .merge(pages::routes())
        .merge(api::routes())
        .route("/metrics", get(metrics::handler))
        .route_layer(middleware::from_fn_with_state(
            monitor.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(auth::login_page).post(auth::login))
        .merge(protected)
        .fallback(|| async { AppError::not_found("no such page").page() })
        .layer(middleware::from_fn_with_state(monitor.clone(), guard))
        .with_state(monitor)
}

/// Bounded concurrency, a timeout and a trace line for every request.
async fn guard(State(monitor): State<Arc<Monitor>>, req: Request, next: Next) -> Response {
    let Ok(_slot) = monitor.slots.clone().acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}");
            (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response()
        }
    };
    tracing::debug!(
        "{method} {path} {} in {:.1} ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    response
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in progress
/// finish and returns. With `tls` (`--tls-cert`, `--tls-key`) it serves HTTPS, and answers a
/// plaintext request 400.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<fleetscore_tls::rustls::ServerConfig>>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            // Over HTTPS the sign-in cookie (which carries the token) is marked Secure, so a
            // browser never sends it over plain HTTP.
            let app = app.layer(middleware::map_response(tls::secure_cookies));
            axum::serve(tls::TlsListener::new(listener, config), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Serves `app` on `listener` on a runtime of its own until SIGINT or SIGTERM (what
/// Kubernetes sends before it kills a pod), then answers the requests in progress and returns.
pub fn run_until_terminated(
    listener: std::net::TcpListener,
    tls: Option<Arc<fleetscore_tls::rustls::ServerConfig>>,
    app: Router,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fleetscore-monitor")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed before serving, so a signal that comes early is not missed.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        serve(listener, tls, app, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("monitor stopping: answering the requests in progress");
        })
        .await
    })
}

/// Runs a blocking read (the store, the coordinator) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, AppError> + Send + 'static,
) -> std::result::Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AppError::internal)?
}

/// Model health from the store alone (`fleetscore models health`): the recent runs' task
/// summaries judged with `options`.
pub fn health_report(store: fleetscore_store::Store, options: HealthOptions) -> api::HealthReport {
    let sources = Sources {
        store,
        coordinator: None,
        log_dir: None,
        schedules: Arc::new(NoScheduler),
        clock: Arc::new(fleetscore_core::SystemClock),
        options: Options {
            health: options,
            ..Options::default()
        },
    };
    let snapshot = Refresher::new(Arc::new(sources)).refresh();
    api::HealthReport::of(&snapshot)
}
