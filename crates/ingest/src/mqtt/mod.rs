//! Readings from an MQTT broker: subscribe at QoS 1 to a topic pattern such as
//! `sensors/{device}/{tag}`, append each message's reading to the log, and acknowledge the
//! message (PUBACK) only once the reading is on disk. A message the broker never saw
//! acknowledged is sent again after a reconnect, so nothing acknowledged is lost and nothing
//! unacknowledged is dropped. The session is persistent (clean session off); after a broker
//! restart the client reconnects with backoff and subscribes again.
//!
//! A payload is a plain number (the value, timed on arrival) or a JSON object with `value` and
//! optionally `ts` (RFC 3339 or epoch milliseconds). An invalid message is counted, reported
//! and acknowledged, so the broker does not send it again forever.
//!
//! `mqtts://` connects over TLS (rustls), trusting the system's CAs or a CA file, optionally
//! presenting a client certificate (Azure Event Grid's MQTT broker authenticates clients with
//! X.509), and with a username and password when given. A broker that refuses the connection
//! (a wrong password, an untrusted certificate) is reported in one line, then retried with
//! backoff like any lost connection.
//!
//! [`MqttSource`] is the MQTT [`Source`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fleetscore_core::now_ms;
use fleetscore_log::Log;
use fleetscore_tls::rustls::ClientConfig;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, Publish, QoS,
    Transport,
};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reading::{Invalid, Limits, Reading, parse_ts};
use crate::source::{Shutdown, Source};

mod relay;

/// Where and what to subscribe to.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic pattern with `{device}` and `{tag}` segments, e.g. `sensors/{device}/{tag}`.
    pub topic: TopicPattern,
    /// Client id (the broker keeps the session under it).
    pub client_id: String,
    /// TLS (`mqtts://`): the client configuration (trusted CAs, client certificate).
    pub tls: Option<Arc<ClientConfig>>,
    /// Username and password, if the broker wants them.
    pub login: Option<Login>,
}

/// A username and password for the broker. The password never shows in `Debug`.
#[derive(Clone)]
pub struct Login {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl MqttConfig {
    /// From `mqtt://host[:port]` (port 1883) or `mqtts://host[:port]` (TLS, port 8883, the
    /// system's CAs until [`MqttConfig::tls`] is set otherwise), a topic pattern and a client
    /// id. Credentials in the URL are refused: they would show wherever the URL does.
    pub fn new(url: &str, topic: &str, client_id: &str) -> Result<MqttConfig> {
        let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtt://") {
            (r, false, 1883)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (r, true, 8883)
        } else {
            return Err(Error::Config(
                "MQTT broker: use mqtt://host[:port] or mqtts://host[:port] (TLS)".into(),
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(Error::Config(
                "MQTT broker URL holds credentials: give the username with --mqtt-username and the password in FLEETSCORE_MQTT_PASSWORD or --mqtt-password-file".into(),
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| Error::Config(format!("MQTT broker {url:?}: bad port {p:?}")))?,
            ),
            None => (rest.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(Error::Config(format!("MQTT broker {url:?}: no host")));
        }
        let tls = if tls {
            let config = fleetscore_tls::client_config(&fleetscore_tls::Roots::System, None)
                .map_err(|e| Error::Config(format!("MQTT over TLS: {e}")))?;
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(MqttConfig {
            host,
            port,
            topic: TopicPattern::parse(topic)?,
            client_id: client_id.to_string(),
            tls,
            login: None,
        })
    }
}

/// One line saying why the broker could not be reached or refused us; over TLS, a failed
/// handshake is what the relay saw.
fn describe(e: &ConnectionError, relay: Option<&relay::TlsRelay>) -> String {
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "the broker refused the username or password".into()
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "the broker refused the client as not authorized (check the username, password or client certificate)".into()
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        other => match relay.and_then(relay::TlsRelay::last_error) {
            Some(why) => why,
            None => other.to_string(),
        },
    }
}

/// A topic pattern: literal segments, and one `{device}` and one `{tag}` segment.
#[derive(Debug, Clone)]
pub struct TopicPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Device,
    Tag,
}

impl TopicPattern {
    /// Parses e.g. `sensors/{device}/{tag}`.
    pub fn parse(pattern: &str) -> Result<TopicPattern> {
        let segments: Vec<Segment> = pattern
            .split('/')
            .map(|s| match s {
                "{device}" => Ok(Segment::Device),
                "{tag}" => Ok(Segment::Tag),
                s if s.contains(['{', '}', '+', '#']) => Err(Error::Config(format!(
                    "topic pattern {pattern:?}: segment {s:?} must be literal, {{device}} or {{tag}}"
                ))),
                s => Ok(Segment::Literal(s.to_string())),
            })
            .collect::<Result<_>>()?;
        for (what, seg) in [("{device}", Segment::Device), ("{tag}", Segment::Tag)] {
            if segments.iter().filter(|s| **s == seg).count() != 1 {
                return Err(Error::Config(format!(
                    "topic pattern {pattern:?} must have exactly one {what} segment"
                )));
            }
        }
        Ok(TopicPattern { segments })
    }

    /// The subscription filter: the pattern with `+` for device and tag.
    pub fn filter(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                _ => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The device and tag a topic names, if it matches.
    pub fn device_and_tag<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let parts: Vec<&str> = topic.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let (mut device, mut tag) = (None, None);
        for (p, s) in parts.iter().zip(&self.segments) {
            match s {
                Segment::Literal(l) if l != p => return None,
                Segment::Literal(_) => {}
                Segment::Device => device = Some(*p),
                Segment::Tag => tag = Some(*p),
            }
        }
        Some((device?, tag?))
    }
}

/// What the MQTT source has done, for `/v1/stats`. Atomics, so that the source's tasks update
/// them while the HTTP server reads them, without a lock; each stands on its own (relaxed
/// ordering), and nothing is decided from them but `connected`'s own log line.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Connections made (the first and every reconnect).
    pub connections: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
    /// Readings appended and acknowledged to the broker.
    pub accepted: AtomicU64,
    /// Messages refused as invalid (and acknowledged, so not sent again).
    pub rejected: AtomicU64,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    ts: Option<serde_json::Value>,
    value: f64,
}

/// The reading a message carries.
pub fn reading_of(
    device: &str,
    tag: &str,
    payload: &[u8],
    limits: &Limits,
    now_ms: i64,
) -> std::result::Result<Reading, Invalid> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Invalid("the payload is not UTF-8".into()))?
        .trim();
    let (ts_ms, value) = if text.starts_with('{') {
        let p: Payload = serde_json::from_str(text)
            .map_err(|e| Invalid(format!("not a reading object: {e}")))?;
        let ts = match p.ts {
            None => now_ms,
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| Invalid(format!("`ts` {n} is not whole milliseconds")))?,
            Some(serde_json::Value::String(s)) => parse_ts(&s)?,
            Some(other) => return Err(Invalid(format!("`ts` {other} is not a time"))),
        };
        (ts, p.value)
    } else {
        let v = text.parse::<f64>().map_err(|_| {
            Invalid(format!(
                "payload {text:?} is neither a number nor a JSON object with `value`"
            ))
        })?;
        (now_ms, v)
    };
    let r = Reading {
        device: device.to_string(),
        tag: tag.to_string(),
        ts_ms,
        value,
    };
    r.check(limits, now_ms)?;
    Ok(r)
}

/// What became of a message, which decides whether the broker gets its PUBACK.
enum Outcome {
    /// Appended: acknowledged once durable.
    Appended(fleetscore_log::Ack),
    /// Invalid: acknowledged (sending it again would not help).
    Refused,
    /// The log could not take it: not acknowledged, so the broker sends it again.
    NotStored,
}

/// The MQTT subscriber as a [`Source`]: connect, subscribe, append, acknowledge, reconnect,
/// until shutdown.
#[derive(Debug)]
pub struct MqttSource {
    config: MqttConfig,
    limits: Limits,
    /// Shared with whoever shows them (the HTTP server's `/v1/stats`).
    stats: Arc<MqttStats>,
}

impl MqttSource {
    /// The source for `config`, checking each reading against `limits`.
    pub fn new(config: MqttConfig, limits: Limits) -> MqttSource {
        MqttSource {
            config,
            limits,
            stats: Arc::default(),
        }
    }

    /// Its counters, to show beside the HTTP server's.
    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }
}

impl Source for MqttSource {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    /// Takes messages until shutdown; broker errors are retried (with backoff), never returned.
    async fn run(self, log: Log, shutdown: Shutdown) -> Result<()> {
        // Over TLS, rumqttc connects to the relay's unix socket, and the relay to the broker.
        let relay = match &self.config.tls {
            None => None,
            Some(tls) => Some(relay::TlsRelay::start(
                &self.config.host,
                self.config.port,
                tls.clone(),
            )?),
        };
        tokio::select! {
            () = subscribe(self.config, relay, log, self.limits, self.stats) => {}
            () = shutdown.requested() => {}
        }
        Ok(())
    }
}

/// Connects, subscribes, appends and acknowledges; reconnects after errors. Never returns.
async fn subscribe(
    config: MqttConfig,
    relay: Option<relay::TlsRelay>,
    log: Log,
    limits: Limits,
    stats: Arc<MqttStats>,
) {
    let mut options = match &relay {
        None => MqttOptions::new(&config.client_id, &config.host, config.port),
        Some(r) => {
            let mut o = MqttOptions::new(&config.client_id, r.socket().to_string_lossy(), 0);
            o.set_transport(Transport::Unix);
            o
        }
    };
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some(login) = &config.login {
        options.set_credentials(login.username.clone(), login.password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 1024);
    let filter = config.topic.filter();
    // Acknowledgements go out in the order messages came in (as MQTT asks), each once its
    // reading is durable, from a task of their own (never from the task polling the events):
    // this channel carries each message, with what became of it, to that task in arrival
    // order. Unbounded, because what it holds is bounded by the log's pending bytes (an
    // appended message waits there for its fsync) and by the broker's in-flight window.
    let (to_ack, mut acks) = tokio::sync::mpsc::unbounded_channel::<(Outcome, Publish)>();
    {
        let client = client.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            while let Some((outcome, publish)) = acks.recv().await {
                match outcome {
                    Outcome::Appended(ack) => match ack.durable().await {
                        Ok(_) => {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // Not acknowledged: the broker sends it again after a reconnect.
                            tracing::warn!("mqtt: {}: not stored: {e}", publish.topic);
                            continue;
                        }
                    },
                    Outcome::Refused => {}
                    Outcome::NotStored => continue,
                }
                let _ = client.ack(&publish).await;
            }
        });
    }
    let mut backoff = Duration::from_millis(200);
    // The last failure reported, so that a broker that keeps refusing is reported once, not on
    // every retry.
    let mut reported: Option<String> = None;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                reported = None;
                stats.connected.store(true, Ordering::Relaxed);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(200);
                tracing::info!(
                    "mqtt: connected to {}:{}, subscribing to {filter}",
                    config.host,
                    config.port
                );
                // Always: a restarted broker may have lost the session.
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::warn!("mqtt: subscribing to {filter}: {e}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let parsed = match config.topic.device_and_tag(&publish.topic) {
                    Some((device, tag)) => {
                        reading_of(device, tag, &publish.payload, &limits, now_ms())
                    }
                    None => Err(Invalid(format!("topic does not match {}", filter))),
                };
                let outcome = match parsed {
                    Ok(r) => match crate::append_when_room(&log, std::slice::from_ref(&r)).await {
                        Ok(ack) => Outcome::Appended(ack),
                        Err(e) => {
                            // Not acknowledged: the broker sends it again later.
                            tracing::warn!("mqtt: {}: not stored: {e}", publish.topic);
                            Outcome::NotStored
                        }
                    },
                    Err(e) => {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("mqtt: {}: refused: {e}", publish.topic);
                        Outcome::Refused
                    }
                };
                let _ = to_ack.send((outcome, publish));
            }
            Ok(_) => {}
            Err(e) => {
                let why = describe(&e, relay.as_ref());
                if stats.connected.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "mqtt: connection to {}:{} lost: {why}",
                        config.host,
                        config.port
                    );
                } else if reported.as_deref() != Some(why.as_str()) {
                    tracing::warn!(
                        "mqtt: cannot connect to {}:{}: {why}; retrying",
                        config.host,
                        config.port
                    );
                }
                reported = Some(why);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_device_and_tag() {
        let p = TopicPattern::parse("sensors/{device}/{tag}").unwrap();
        assert_eq!(p.filter(), "sensors/+/+");
        assert_eq!(p.device_and_tag("sensors/d1/temp"), Some(("d1", "temp")));
        assert_eq!(p.device_and_tag("other/d1/temp"), None);
        assert_eq!(p.device_and_tag("sensors/d1"), None);
        let p = TopicPattern::parse("site/{tag}/x/{device}").unwrap();
        assert_eq!(p.device_and_tag("site/t/x/d"), Some(("d", "t")));
        assert!(TopicPattern::parse("sensors/{device}").is_err());
        assert!(TopicPattern::parse("sensors/+/{device}/{tag}").is_err());
    }

    #[test]
    fn payloads_are_numbers_or_reading_objects() {
        let now = 1_767_225_600_000;
        let l = Limits::default();
        let r = reading_of("d", "t", b" 21.5\n", &l, now).unwrap();
        assert_eq!((r.ts_ms, r.value), (now, 21.5));
        let r = reading_of(
            "d",
            "t",
            br#"{"ts":"2026-01-01T00:00:05Z","value":-1}"#,
            &l,
            now,
        )
        .unwrap();
        assert_eq!((r.ts_ms, r.value), (now + 5000, -1.0));
        let r = reading_of("d", "t", br#"{"ts":1767225601000,"value":2}"#, &l, now).unwrap();
        assert_eq!(r.ts_ms, now + 1000);
        assert!(
            reading_of("d", "t", b"abc", &l, now)
                .unwrap_err()
                .0
                .contains("neither a number")
        );
        assert!(
            reading_of("d", "t", b"NaN", &l, now)
                .unwrap_err()
                .0
                .contains("finite")
        );
        assert!(
            reading_of("d", "t", br#"{"value":"x"}"#, &l, now)
                .unwrap_err()
                .0
                .contains("not a reading object")
        );
        assert!(
            reading_of("d", "t", &[0xff], &l, now)
                .unwrap_err()
                .0
                .contains("UTF-8")
        );
    }

    #[test]
    fn broker_urls() {
        let c = MqttConfig::new("mqtt://127.0.0.1:1884", "s/{device}/{tag}", "x").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1884));
        assert_eq!(
            MqttConfig::new("mqtt://broker", "s/{device}/{tag}", "x")
                .unwrap()
                .port,
            1883
        );
        let c = MqttConfig::new("mqtts://broker", "s/{device}/{tag}", "x").unwrap();
        assert_eq!(c.port, 8883);
        assert!(c.tls.is_some());
        let err = MqttConfig::new("mqtts://u:secret-pw@broker", "s/{device}/{tag}", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--mqtt-username"), "{err}");
        assert!(!err.contains("secret-pw"), "{err}");
        assert!(MqttConfig::new("tcp://broker", "s/{device}/{tag}", "x").is_err());
        let login = Login {
            username: "u".into(),
            password: "secret-pw".into(),
        };
        assert!(!format!("{login:?}").contains("secret-pw"));
    }
}
