//! The HTTP front door: `POST /v1/readings` validates a body of readings, appends the valid
//! ones to the log and answers once they are on disk.
//!
//! | status | when |
//! |---|---|
//! | 200 | every valid reading is durable; the body lists refused records, if any |
//! | 400 | no record in the body was valid (each one's reason is listed) |
//! | 401 | a token is required and the request has none, or an unknown one |
//! | 413 | the body is larger than the limit |
//! | 415 | the `Content-Type` is not JSON lines, JSON or CSV |
//! | 429 | too many bytes are in flight or waiting for disk; `Retry-After` says when to retry |
//! | 503 | the log could not store the readings (nothing of the request is acknowledged) |

use fleetscore_core::now_ms;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetscore_log::Log;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::kafka::{KafkaConfig, KafkaStats};
use crate::mqtt::{MqttConfig, MqttStats};
use crate::parse::{self, Admit, At, Format};
use crate::reading::Limits;

/// Who may write: bearer tokens, each optionally limited to some devices.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Tokens {
    /// The tokens.
    pub tokens: Vec<Token>,
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize)]
pub struct Token {
    /// A name for logs and stats (never the secret).
    pub name: String,
    /// The secret the client sends as `Authorization: Bearer <token>`.
    pub token: String,
    /// If given, the only devices this token may write readings for.
    #[serde(default)]
    pub devices: Option<HashSet<String>>,
}

impl Tokens {
    /// Reads a tokens file: `{"tokens": [{"name": "site-a", "token": "…", "devices": ["d1"]}]}`.
    pub fn load(path: &std::path::Path) -> Result<Tokens, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let t: Tokens = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: not a tokens file ({e}); expected {{\"tokens\": [{{\"name\": \"site-a\", \"token\": \"…\", \"devices\": [\"d1\"]}}]}}",
                path.display()
            )
        })?;
        if let Some(bad) = t.tokens.iter().find(|t| t.token.len() < 16) {
            return Err(format!(
                "{}: token `{}` is shorter than 16 characters",
                path.display(),
                bad.name
            ));
        }
        Ok(t)
    }

    fn find(&self, secret: &str) -> Option<&Token> {
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), secret.as_bytes()))
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Scope<'a>(&'a HashSet<String>);

impl Admit for Scope<'_> {
    fn device(&self, device: &str) -> Result<(), String> {
        if self.0.contains(device) {
            Ok(())
        } else {
            Err(format!("device {device:?} is not allowed for this token"))
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
    pub max_inflight_bytes: usize,
    /// Checks on each reading.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tokens: None,
            max_body_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
            limits: Limits::default(),
        }
    }
}

/// Counters the server keeps.
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
}

struct State {
    log: Log,
    config: Config,
    inflight: Arc<Semaphore>,
    stats: Stats,
    sources: Sources,
}

/// The counters of the sources running beside the HTTP server, for `/v1/stats`.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The MQTT source's, when it runs.
    pub mqtt: Option<Arc<MqttStats>>,
    /// The Kafka source's, when it runs.
    pub kafka: Option<Arc<KafkaStats>>,
}

/// Inflight budget unit: permits are KiB.
const PERMIT_BYTES: usize = 1024;

/// Serves until `shutdown` completes, each connection on its own task; then stops accepting,
/// lets every connection finish the request it is on (up to 10 s), and returns. `sources` are
/// the counters of the MQTT and Kafka sources, shown in `/v1/stats`.
pub async fn serve(
    listener: TcpListener,
    log: Log,
    config: Config,
    sources: Sources,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = (config.max_inflight_bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
    let state = Arc::new(State {
        log,
        inflight: Arc::new(Semaphore::new(permits)),
        config,
        stats: Stats::default(),
        sources,
    });
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped as we go, so the set stays small.
        while connections.try_join_next().is_some() {}
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
        let state = state.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    // Answer the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
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
    eprintln!(
        "stopped: {} readings accepted; {open} connection(s) were open{}",
        state.stats.accepted.load(Ordering::Relaxed),
        if drained.is_ok() {
            ", all closed"
        } else {
            ", some still busy after 10 s were dropped unanswered"
        }
    );
    Ok(())
}

/// SIGINT or SIGTERM (what Kubernetes sends before it kills a pod).
async fn termination() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Binds `addr` (refusing to serve without tokens on anything but loopback), prints where it
/// listens, and serves on a runtime of its own until SIGINT or SIGTERM (then it answers the
/// requests in progress and returns); with `mqtt`, also takes readings from that broker into
/// the same log.
pub fn run(
    addr: SocketAddr,
    log: Log,
    config: Config,
    mqtt: Option<MqttConfig>,
    kafka: Option<KafkaConfig>,
) -> Result<(), String> {
    if config.tokens.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to accept readings on {addr} without tokens: pass --tokens FILE, or listen on a loopback address"
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ingest")
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let mqtt = mqtt.map(|m| {
            let stats = Arc::new(MqttStats::default());
            tokio::spawn(crate::mqtt::run(
                m,
                log.clone(),
                config.limits,
                stats.clone(),
            ));
            stats
        });
        let kafka = kafka.map(|k| {
            let stats = Arc::new(KafkaStats::default());
            tokio::spawn(crate::kafka::run(
                k,
                log.clone(),
                config.limits,
                stats.clone(),
            ));
            stats
        });
        // Tests and scripts wait for this line to know the port.
        println!("listening on http://{local}");
        serve(
            listener,
            log,
            config,
            Sources { mqtt, kafka },
            termination(),
        )
        .await
        .map_err(|e| format!("serving {local}: {e}"))
    })
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

fn retry_later(message: String) -> Response<Full<Bytes>> {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
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

async fn ingest(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let config = &state.config;
    // Who is asking.
    let token = match &config.tokens {
        None => None,
        Some(tokens) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
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
    // Memory for the body is reserved before it is read: under overload, refuse early.
    let reserve = declared
        .unwrap_or(config.max_body_bytes)
        .div_ceil(PERMIT_BYTES)
        .max(1);
    let Ok(_permit) = state
        .inflight
        .clone()
        .try_acquire_many_owned(reserve as u32)
    else {
        state.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        return retry_later("too many readings in flight; retry shortly".into());
    };
    let body = match Limited::new(req.into_body(), config.max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large();
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
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
