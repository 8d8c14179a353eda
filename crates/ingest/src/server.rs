//! The HTTP front door: `POST /v1/readings` validates a body of readings, appends the valid
//! ones to the log and answers once they are on disk.
//!
//! | status | when |
//! |---|---|
//! | 200 | every valid reading is durable; the body lists refused records, if any |
//! | 400 | no record in the body was valid (each one's reason is listed) |
//! | 401 | a token is required and the request has none, or an unknown one |
//! | 408 | the body did not arrive in full within the body timeout |
//! | 413 | the body is larger than the limit |
//! | 415 | the `Content-Type` is not JSON lines, JSON or CSV |
//! | 429 | too many bytes are in flight (in all, or for this token) or waiting for disk; `Retry-After` says when to retry |
//! | 503 | the log could not store the readings (nothing of the request is acknowledged) |
//!
//! [`app`] is the service itself: it answers a request handed to it, so tests call it without a
//! socket. [`serve`] runs it on a listener with graceful shutdown; [`HttpSource`] is the HTTP
//! [`Source`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetscore_core::now_ms;
use fleetscore_core::tokens::bearer_credentials;
use fleetscore_log::Log;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Buf, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::kafka::KafkaStats;
use crate::mqtt::MqttStats;
use crate::parse::{self, Admit, At, Format};
use crate::reading::{Invalid, Limits};
use crate::source::{Shutdown, Source};

pub use fleetscore_core::tokens::{Token, Tokens};

struct Scope<'a>(&'a HashSet<String>);

impl Admit for Scope<'_> {
    fn device(&self, device: &str) -> std::result::Result<(), Invalid> {
        if self.0.contains(device) {
            Ok(())
        } else {
            Err(Invalid(format!(
                "device {device:?} is not allowed for this token"
            )))
        }
    }
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bearer tokens; `None` accepts every request (only allowed on a loopback address).
    pub tokens: Option<Tokens>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, in bytes, before requests are refused with 429.
    /// Charged as the bytes arrive, so a client that declares a large body and sends nothing
    /// holds nothing.
    pub max_inflight_bytes: usize,
    /// How long a request's body may take to arrive in full; a slower one is answered 408 and
    /// its bytes are freed for other clients.
    pub body_timeout: Duration,
    /// Most connections open at once; more wait for one to close.
    pub max_connections: usize,
    /// How long a connection may stay idle (or take to send a request's head) before it is
    /// closed, so idle keep-alive connections cannot hold every connection slot.
    pub idle_timeout: Duration,
    /// Checks on each reading.
    pub limits: Limits,
    /// Serve HTTPS with this certificate (`--tls-cert`, `--tls-key`); `None` serves plain
    /// HTTP. A plaintext request on an HTTPS listener is answered 400 and closed.
    pub tls: Option<Arc<fleetscore_tls::rustls::ServerConfig>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tokens: None,
            max_body_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// Counters the server keeps. Atomics, so that every connection's task counts without a lock
/// and `/v1/stats` reads them while requests go on; each counts on its own (relaxed ordering),
/// and no decision is made from them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Readings acknowledged.
    pub accepted: AtomicU64,
    /// Records refused as invalid.
    pub rejected: AtomicU64,
    /// Requests refused with 429.
    pub overloaded: AtomicU64,
    /// Requests refused with 401.
    pub unauthorized: AtomicU64,
    /// Requests whose body did not arrive within the body timeout (408).
    pub timed_out: AtomicU64,
}

/// What every request shares.
struct State {
    log: Log,
    config: Config,
    /// The budget of request bodies held in memory, in permits of [`PERMIT_BYTES`]: a request
    /// takes its (declared, else largest) body's worth before reading it and gives it back when
    /// answered, and is refused with 429 when the budget is spent, so a burst of large bodies
    /// cannot exhaust memory.
    inflight: Arc<Semaphore>,
    /// Each token's share of the in-flight budget, by token name: with several tokens, one
    /// token's clients may hold at most half of it, so a flood (or a leaked token) cannot
    /// take every byte from the other sites. Empty without tokens.
    token_shares: std::collections::HashMap<String, Arc<Semaphore>>,
    stats: Arc<Stats>,
    sources: SourceStats,
}

/// The counters of the sources running beside the HTTP server, for `/v1/stats`.
#[derive(Debug, Default, Clone)]
pub struct SourceStats {
    /// The MQTT source's, when it runs.
    pub mqtt: Option<Arc<MqttStats>>,
    /// The Kafka source's, when it runs.
    pub kafka: Option<Arc<KafkaStats>>,
}

/// Inflight budget unit: permits are KiB.
const PERMIT_BYTES: usize = 1024;

/// The HTTP service: answers each request handed to it, with no socket of its own. Cheap to
/// clone; every clone shares the log, the settings, the in-flight budget and the counters.
#[derive(Clone)]
pub struct App {
    state: Arc<State>,
}

/// The service for `log` with `config`; `sources` are the counters of the MQTT and Kafka
/// sources running beside it, shown in `/v1/stats`.
pub fn app(log: Log, config: Config, sources: SourceStats) -> App {
    app_counting(log, config, sources, Arc::default())
}

/// [`app`], counting into `stats` (which the caller may also publish).
fn app_counting(log: Log, config: Config, sources: SourceStats, stats: Arc<Stats>) -> App {
    let permits = (config.max_inflight_bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
    let tokens = config
        .tokens
        .as_ref()
        .map_or(&[][..], |t| t.tokens.as_slice());
    let share = if tokens.len() > 1 {
        (permits / 2).max(1)
    } else {
        permits
    };
    let token_shares = tokens
        .iter()
        .map(|t| (t.name.clone(), Arc::new(Semaphore::new(share))))
        .collect();
    App {
        state: Arc::new(State {
            log,
            inflight: Arc::new(Semaphore::new(permits)),
            token_shares,
            config,
            stats,
            sources,
        }),
    }
}

impl App {
    /// Answers one request: what each connection's requests go to, and what tests call
    /// directly.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        handle(&self.state, req).await
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }
}

/// Serves `app` until `shutdown` completes, each connection on its own task; then stops
/// accepting, lets every connection finish the request it is on (up to 10 s), and returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // Tells every connection's task to finish the request it is on and close.
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    // One permit per open connection: at the cap, accepting waits until one closes (idle ones
    // close after the idle timeout), so new clients are served, late rather than never.
    let slots = Arc::new(Semaphore::new(app.state.config.max_connections.max(1)));
    let idle_timeout = app.state.config.idle_timeout;
    let tls = app
        .state
        .config
        .tls
        .clone()
        .map(fleetscore_tls::tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped as we go, so the set stays small.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait a moment rather than spin or stop.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, app, idle_timeout, stop).await,
                // The handshake runs on the connection's own task, so a slow client never
                // holds up accepting the others.
                Some(acceptor) => match fleetscore_tls::accept_https(&acceptor, stream).await {
                    Ok(stream) => serve_connection(stream, app, idle_timeout, stop).await,
                    Err(why) => tracing::debug!("connection closed: {why}"),
                },
            }
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    tracing::info!(
        "stopped: {} readings accepted; {open} connection(s) were open{}",
        app.stats().accepted.load(Ordering::Relaxed),
        if drained.is_ok() {
            ", all closed"
        } else {
            ", some still busy after 10 s were dropped unanswered"
        }
    );
    Ok(())
}

/// Answers the requests of one connection (plain TCP or TLS) until it closes, or until `stop`
/// says to finish the request in progress and close.
async fn serve_connection<I>(
    io: I,
    app: App,
    idle_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            // Answer the request in progress, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The HTTP front door as a [`Source`]: a bound listener, and the settings of the [`app`] it
/// serves until shutdown.
#[derive(Debug)]
pub struct HttpSource {
    listener: std::net::TcpListener,
    local: SocketAddr,
    config: Config,
    sources: SourceStats,
    stats: Arc<Stats>,
}

impl HttpSource {
    /// Binds `addr`, refusing to accept readings without tokens on anything but a loopback
    /// address. `sources` are the counters of the sources running beside it, for `/v1/stats`.
    pub fn bind(addr: SocketAddr, config: Config, sources: SourceStats) -> Result<HttpSource> {
        if config.tokens.is_none() && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to accept readings on {addr} without tokens: pass --tokens FILE, or listen on a loopback address"
            )));
        }
        let cannot_listen = |e| Error::Io {
            what: format!("cannot listen on {addr}"),
            source: e,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(cannot_listen)?;
        listener.set_nonblocking(true).map_err(cannot_listen)?;
        let local = listener.local_addr().map_err(cannot_listen)?;
        Ok(HttpSource {
            listener,
            local,
            config,
            sources,
            stats: Arc::default(),
        })
    }

    /// The address it listens on (the port chosen when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its counters, which it keeps while it runs (for [`crate::publish`]).
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }
}

impl Source for HttpSource {
    fn name(&self) -> &'static str {
        "http"
    }

    /// Serves until shutdown, then answers the requests in progress and returns.
    async fn run(self, log: Log, shutdown: Shutdown) -> Result<()> {
        let local = self.local;
        let listener = TcpListener::from_std(self.listener).map_err(|e| Error::Io {
            what: format!("cannot listen on {local}"),
            source: e,
        })?;
        serve(
            listener,
            app_counting(log, self.config, self.sources, self.stats),
            shutdown.requested(),
        )
        .await
        .map_err(|e| Error::Io {
            what: format!("serving {local}"),
            source: e,
        })
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": message.into() }))
}

/// Why a body was not read.
enum BodyError {
    /// Longer than the largest body accepted.
    TooLarge,
    /// The in-flight budget is spent.
    Overloaded,
    /// The connection failed.
    Read(String),
}

/// The permits a request holds until it is answered: from the whole budget, and from its
/// token's share.
type Held = (
    Option<tokio::sync::OwnedSemaphorePermit>,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

/// Takes `n` more permits of `budget` into `held`, or says the budget is spent.
fn take_permits(
    budget: &Arc<Semaphore>,
    n: usize,
    held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> std::result::Result<(), BodyError> {
    let more = budget
        .clone()
        .try_acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
        .map_err(|_| BodyError::Overloaded)?;
    match held {
        Some(p) => p.merge(more),
        None => *held = Some(more),
    }
    Ok(())
}

/// Reads a request body, charging the in-flight budget (and the token's share of it) for its
/// bytes as they arrive; `held` keeps the permits until the request is answered.
async fn read_body<B>(
    state: &State,
    body: B,
    declared: Option<usize>,
    share: Option<&Arc<Semaphore>>,
    held: &mut Held,
) -> std::result::Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = state.config.max_body_bytes;
    let mut body = std::pin::pin!(body);
    // A declared length sizes the buffer only a little: it is a promise, not a fact, and
    // nothing is charged for it before bytes arrive.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max).min(16 << 10));
    let mut charged = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.into().to_string()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let len = data.remaining();
        if buf.len() + len > max {
            return Err(BodyError::TooLarge);
        }
        let need = (buf.len() + len).div_ceil(PERMIT_BYTES) - charged;
        if need > 0 {
            if let Some(share) = share {
                take_permits(share, need, &mut held.1)?;
            }
            take_permits(&state.inflight, need, &mut held.0)?;
            charged += need;
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            buf.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
    }
    Ok(Bytes::from(buf))
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme is matched without
/// regard to case, as RFC 7235 says.
fn retry_later(message: String) -> Response<Full<Bytes>> {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn handle<B>(state: &State, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, json!({ "status": "ok" })),
        (&Method::GET, "/v1/stats") => stats(state),
        (&Method::POST, "/v1/readings") => ingest(state, req).await,
        (_, "/v1/readings") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST to send readings to /v1/readings",
        ),
        (_, path) => error(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path} (POST /v1/readings, GET /v1/stats, GET /healthz)"),
        ),
    }
}

fn stats(state: &State) -> Response<Full<Bytes>> {
    let s = &state.stats;
    let partitions: Vec<serde_json::Value> = (0..state.log.partitions())
        .map(|p| match state.log.bounds(p) {
            Ok((start, end)) => json!({ "partition": p, "start_offset": start, "end_offset": end }),
            Err(e) => json!({ "partition": p, "error": e.to_string() }),
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "requests": s.requests.load(Ordering::Relaxed),
            "accepted": s.accepted.load(Ordering::Relaxed),
            "rejected": s.rejected.load(Ordering::Relaxed),
            "overloaded": s.overloaded.load(Ordering::Relaxed),
            "unauthorized": s.unauthorized.load(Ordering::Relaxed),
            "timed_out": s.timed_out.load(Ordering::Relaxed),
            "pending_bytes": state.log.pending_bytes(),
            "partitions": partitions,
            "kafka": state.sources.kafka.as_ref().map(|k| json!({
                "joined": k.joined.load(Ordering::Relaxed),
                "partitions": k.partitions.load(Ordering::Relaxed),
                "joins": k.joins.load(Ordering::Relaxed),
                "records": k.records.load(Ordering::Relaxed),
                "accepted": k.accepted.load(Ordering::Relaxed),
                "rejected": k.rejected.load(Ordering::Relaxed),
            })),
            "mqtt": state.sources.mqtt.as_ref().map(|m| json!({
                "connected": m.connected.load(Ordering::Relaxed),
                "connections": m.connections.load(Ordering::Relaxed),
                "received": m.received.load(Ordering::Relaxed),
                "accepted": m.accepted.load(Ordering::Relaxed),
                "rejected": m.rejected.load(Ordering::Relaxed),
            })),
        }),
    )
}

async fn ingest<B>(state: &State, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = &state.config;
    // Who is asking.
    let token = match &config.tokens {
        None => None,
        Some(tokens) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_credentials);
            match presented.and_then(|p| tokens.find(p.trim())) {
                Some(t) => Some(t),
                None => {
                    state.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
                    let mut r = error(
                        StatusCode::UNAUTHORIZED,
                        if presented.is_some() {
                            "unknown bearer token"
                        } else {
                            "send a bearer token: Authorization: Bearer <token>"
                        },
                    );
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"fleetscore\""),
                    );
                    return r;
                }
            }
        }
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = Format::from_content_type(content_type) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?}: send application/x-ndjson (JSON lines), application/json or text/csv"
            ),
        );
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {} bytes; send smaller batches",
                config.max_body_bytes
            ),
        )
    };
    if declared.is_some_and(|n| n > config.max_body_bytes) {
        return too_large();
    }
    // Memory for the body is charged to the in-flight budget as its bytes arrive (a declared
    // length reserves nothing), and the whole body must arrive within the body timeout: a
    // client that declares much and sends slowly, or nothing, cannot lock the others out.
    let mut held: Held = (None, None);
    let received = tokio::time::timeout(
        config.body_timeout,
        read_body(
            state,
            req.into_body(),
            declared,
            token.and_then(|t| state.token_shares.get(&t.name)),
            &mut held,
        ),
    )
    .await;
    let body = match received {
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Overloaded)) => {
            state.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            return retry_later("too many readings in flight; retry shortly".into());
        }
        Ok(Err(BodyError::Read(e))) => {
            return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}"));
        }
        Err(_) => {
            state.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s; send it faster or in smaller requests",
                    config.body_timeout.as_secs_f64()
                ),
            );
        }
    };
    let now = now_ms();
    let scope = token.and_then(|t| t.devices.as_ref()).map(Scope);
    let parsed = parse::parse(
        &body,
        format,
        &config.limits,
        now,
        scope
            .as_ref()
            .map_or(&parse::AnyDevice as &dyn Admit, |s| s as &dyn Admit),
    );
    drop(body);
    let rejected: Vec<serde_json::Value> = parsed
        .rejected
        .iter()
        .take(100)
        .map(|r| match r.at {
            At::Line(l) => json!({ "line": l, "error": r.error }),
            At::Index(i) => json!({ "index": i, "error": r.error }),
        })
        .collect();
    state
        .stats
        .rejected
        .fetch_add(parsed.rejected.len() as u64, Ordering::Relaxed);
    let accepted = parsed.readings.len();
    if accepted == 0 {
        return reply(
            if parsed.rejected.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            },
            json!({ "accepted": 0, "rejected_count": parsed.rejected.len(), "rejected": rejected }),
        );
    }
    let batch = crate::batch_of(&state.log, &parsed.readings);
    let ack = match state.log.append(batch) {
        Ok(ack) => ack,
        Err(fleetscore_log::Error::Overloaded { .. }) => {
            state.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            return retry_later("the log is behind on writing to disk; retry shortly".into());
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("readings not stored: {e}"),
            );
        }
    };
    match ack.durable().await {
        Ok(_) => {
            state
                .stats
                .accepted
                .fetch_add(accepted as u64, Ordering::Relaxed);
            reply(
                StatusCode::OK,
                json!({
                    "accepted": accepted,
                    "rejected_count": parsed.rejected.len(),
                    "rejected": rejected,
                }),
            )
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("readings not stored: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_log::Options;

    const TOKEN: &str = "site-a-0123456789abcdef";

    /// The service over a new log in a temporary folder, with one token.
    fn app_in(name: &str) -> (std::path::PathBuf, Log, App) {
        let dir = std::env::temp_dir().join(format!(
            "fleetscore-ingest-app-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(
            &dir,
            Options {
                partitions: 2,
                ..Options::default()
            },
        )
        .unwrap();
        let config = Config {
            tokens: Some(Tokens {
                tokens: vec![Token {
                    name: "a".into(),
                    token: TOKEN.into(),
                    devices: None,
                }],
            }),
            ..Config::default()
        };
        let app = app(log.clone(), config, SourceStats::default());
        (dir, log, app)
    }

    fn post(token: Option<&str>, body: &str) -> Request<Full<Bytes>> {
        let mut r = Request::builder()
            .method(Method::POST)
            .uri("/v1/readings")
            .header(header::CONTENT_TYPE, "application/x-ndjson");
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    }

    async fn json_of(r: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn held(log: &Log) -> u64 {
        (0..log.partitions())
            .map(|p| log.bounds(p).unwrap().1)
            .sum()
    }

    #[tokio::test]
    async fn a_request_without_a_token_gets_401_and_stores_nothing() {
        let (dir, log, app) = app_in("401");
        let r = app
            .handle(post(
                None,
                r#"{"device":"d1","tag":"t","ts":1767225605000,"value":1}"#,
            ))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"fleetscore\""
        );
        let body = json_of(r).await;
        assert!(
            body["error"].as_str().unwrap().contains("bearer token"),
            "{body}"
        );
        assert_eq!(app.stats().unauthorized.load(Ordering::Relaxed), 1);
        assert_eq!(held(&log), 0);
        drop((app, log));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A body that sends one frame and then nothing, as a slow client does.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, Self::Error>>>
        {
            match self.0.take() {
                Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
                None => std::task::Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn one_token_cannot_take_the_whole_in_flight_budget() {
        let dir =
            std::env::temp_dir().join(format!("fleetscore-ingest-share-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(&dir, Options::default()).unwrap();
        let token = |name: &str| Token {
            name: name.into(),
            token: format!("{name}-0123456789abcdef"),
            devices: None,
        };
        let config = Config {
            tokens: Some(Tokens {
                tokens: vec![token("a"), token("b")],
            }),
            max_inflight_bytes: 64 << 10,
            ..Config::default()
        };
        let app = app(log.clone(), config, SourceStats::default());
        fn request<B>(name: &str, body: B) -> Request<B> {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/readings")
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {name}-0123456789abcdef"),
                )
                .body(body)
                .unwrap()
        }
        // Site a holds 30 KiB of its 32 KiB share in a body that never ends.
        let stalled = tokio::spawn({
            let app = app.clone();
            let body = Stalled(Some(Bytes::from(vec![b' '; 30 << 10])));
            async move { app.handle(request("a", body)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = format!(
            "{}{}",
            r#"{"device":"d","tag":"t","ts":1767225605000,"value":1}"#,
            " ".repeat(10 << 10)
        );
        let more_a = app
            .handle(request("a", Full::new(Bytes::from(body.clone()))))
            .await;
        assert_eq!(more_a.status(), StatusCode::TOO_MANY_REQUESTS);
        // Site b is served from the other half.
        let b = app.handle(request("b", Full::new(Bytes::from(body)))).await;
        assert_eq!(b.status(), StatusCode::OK);
        assert_eq!(held(&log), 1);
        stalled.abort();
        drop((app, log));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn valid_readings_get_200_once_they_are_in_the_log() {
        let (dir, log, app) = app_in("200");
        let body = [
            r#"{"device":"d1","tag":"t","ts":1767225605000,"value":1.5}"#,
            r#"{"device":"d2","tag":"t","ts":1767225605000,"value":2.5}"#,
            r#"{"device":"d3","tag":"t","ts":1767225605000,"value":"NaN"}"#,
        ]
        .join("\n");
        let r = app.handle(post(Some(TOKEN), &body)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let answer = json_of(r).await;
        assert_eq!(answer["accepted"], 2, "{answer}");
        assert_eq!(answer["rejected"][0]["line"], 3, "{answer}");
        // Answered only once durable: a reader sees them now.
        assert_eq!(held(&log), 2);
        assert_eq!(app.stats().accepted.load(Ordering::Relaxed), 2);
        let stats = app
            .handle(
                Request::builder()
                    .uri("/v1/stats")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(json_of(stats).await["accepted"], 2);
        drop((app, log));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
