//! A broker connection: TCP, or TLS with SNI (`kafkas://`: every connection, the bootstrap,
//! the coordinator and each partition leader the metadata names), then SASL when configured;
//! requests framed and matched to their answers, a broker's `throttle_time_ms` honoured before
//! the next request; and the requests about the topic itself (metadata, the group
//! coordinator, earliest offsets, fetch).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetscore_tls::rustls::pki_types::ServerName;
use fleetscore_tls::tokio_rustls::TlsConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::KafkaConfig;

use super::wire::{
    Api, FETCH, FIND_COORDINATOR, KafkaCode, LIST_OFFSETS, METADATA, R, W, record_batches,
};
use crate::error::{Error, Result};

/// A byte stream to a broker: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A broker connection: one request at a time.
pub(super) struct Conn {
    stream: Box<dyn Stream>,
    client_id: String,
    /// The id of the last request sent; its answer must carry it.
    correlation: i32,
    addr: String,
    /// The broker asked (`throttle_time_ms`) not to be sent anything before then.
    quiet_until: Option<Instant>,
    /// Over TLS (for the message when a plaintext connection is closed at once).
    tls: bool,
}

impl Conn {
    /// Connects to `addr` (within 10 s): TLS if the config has it (the host part of `addr`
    /// sent as SNI and checked against the certificate), then SASL if it has credentials.
    pub(super) async fn connect(addr: &str, config: &KafkaConfig) -> Result<Conn> {
        let what = || format!("connecting to {addr}");
        let open = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| Error::Io {
                what: what(),
                source: e,
            })?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = match &config.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_string()).map_err(|_| {
                        Error::Config(format!("{host:?} is not a host name TLS can check"))
                    })?;
                    let tls = TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| Error::Tls {
                            what: format!("{addr}: TLS"),
                            reason: fleetscore_tls::explain(&e),
                        })?;
                    Box::new(tls)
                }
            };
            Ok::<_, Error>(stream)
        };
        let stream = tokio::time::timeout(Duration::from_secs(10), open)
            .await
            .map_err(|_| Error::TimedOut { what: what() })??;
        let mut conn = Conn {
            stream,
            client_id: config.client_id.clone(),
            correlation: 0,
            addr: addr.to_string(),
            quiet_until: None,
            tls: config.tls.is_some(),
        };
        if let Some(sasl) = &config.sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    /// The broker's address.
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    /// Honours a response's `throttle_time_ms`: the next request waits that long (Event Hubs
    /// throttles, and closes the connection of a client that does not wait).
    pub(super) fn throttled(&mut self, ms: i32) {
        if ms > 0 {
            let until = Instant::now() + Duration::from_millis(ms as u64);
            tracing::debug!("kafka: {} throttles us for {ms} ms", self.addr);
            self.quiet_until = Some(self.quiet_until.map_or(until, |t| t.max(until)));
        }
    }

    /// Sends a request and returns the response body (after the correlation id). `wait` is
    /// how long the broker may hold the request by design (a fetch's wait, a join's
    /// rebalance); the answer may take 30 s more.
    pub(super) async fn call(&mut self, api: Api, body: &[u8], wait: Duration) -> Result<Vec<u8>> {
        if let Some(until) = self.quiet_until.take() {
            tokio::time::sleep_until(until.into()).await;
        }
        self.correlation += 1;
        let mut w = W(Vec::with_capacity(body.len() + 32));
        w.i32(0)
            .i16(api.key)
            .i16(api.version)
            .i32(self.correlation)
            .str(&self.client_id);
        w.0.extend_from_slice(body);
        let size = (w.0.len() - 4) as i32;
        w.0[..4].copy_from_slice(&size.to_be_bytes());
        let addr = self.addr.clone();
        let plaintext = !self.tls;
        let io = async {
            self.stream.write_all(&w.0).await?;
            let n = self.stream.read_i32().await?;
            // A TLS record header (an alert, 0x15, or a handshake, 0x16, of version 3.x) where
            // a size should be: a TLS listener answering our plaintext.
            if plaintext && matches!(n.to_be_bytes(), [0x15 | 0x16, 3, 0..=4, _]) {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
            }
            if !(4..=256 << 20).contains(&n) {
                return Err(std::io::Error::other(format!("a response of {n} bytes")));
            }
            let mut buf = vec![0; n as usize];
            self.stream.read_exact(&mut buf).await?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(wait + Duration::from_secs(30), io)
            .await
            .map_err(|_| Error::TimedOut {
                what: format!("{addr}: waiting for the answer to {api}"),
            })?
            .map_err(|e| {
                use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
                if !self.tls
                    && self.correlation == 1
                    && matches!(e.kind(), UnexpectedEof | ConnectionReset)
                {
                    // A TLS listener drops (or answers with an alert) a plaintext client at
                    // its first bytes.
                    Error::Protocol {
                        what: addr.clone(),
                        reason: "the broker closed the connection at the first request: does it want TLS (kafkas://)?".into(),
                    }
                } else {
                    Error::Io {
                        what: addr.clone(),
                        source: e,
                    }
                }
            })?;
        let correlation = i32::from_be_bytes(buf[..4].try_into().expect("4"));
        if correlation != self.correlation {
            return Err(Error::Protocol {
                what: addr,
                reason: "answer to another request".into(),
            });
        }
        Ok(buf[4..].to_vec())
    }

    /// Brokers (id → address) and the topic's partitions (id, leader).
    pub(super) async fn metadata(
        &mut self,
        topic: &str,
    ) -> Result<(BTreeMap<i32, String>, Vec<(i32, i32)>)> {
        let mut w = W(Vec::new());
        w.i32(1).str(topic);
        let resp = self.call(METADATA, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "metadata",
        };
        let mut brokers = BTreeMap::new();
        for _ in 0..r.count()? {
            let id = r.i32()?;
            let host = r.str()?;
            let port = r.i32()?;
            let _rack = r.str()?;
            brokers.insert(id, format!("{host}:{port}"));
        }
        let _controller = r.i32()?;
        let mut partitions = Vec::new();
        for _ in 0..r.count()? {
            let code = r.code()?;
            let name = r.str()?;
            let _internal = r.i8()?;
            code.check(format_args!("topic {name}"))?;
            for _ in 0..r.count()? {
                let code = r.code()?;
                let p = r.i32()?;
                let leader = r.i32()?;
                for _ in 0..r.count()? {
                    r.i32()?;
                }
                for _ in 0..r.count()? {
                    r.i32()?;
                }
                code.check(format_args!("topic {name} partition {p}"))?;
                if name == topic {
                    partitions.push((p, leader));
                }
            }
        }
        if partitions.is_empty() {
            return Err(Error::Protocol {
                what: "metadata".into(),
                reason: format!("topic {topic} has no partitions (does it exist?)"),
            });
        }
        Ok((brokers, partitions))
    }

    /// The address of `group`'s coordinator.
    pub(super) async fn find_coordinator(&mut self, group: &str) -> Result<String> {
        let mut w = W(Vec::new());
        w.str(group).i8(0);
        let resp = self.call(FIND_COORDINATOR, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "find coordinator",
        };
        let throttle = r.i32()?;
        self.throttled(throttle);
        let code = r.code()?;
        let _message = r.str()?;
        code.check("finding the group coordinator")?;
        let _node = r.i32()?;
        let host = r.str()?;
        let port = r.i32()?;
        Ok(format!("{host}:{port}"))
    }

    /// The first offset of `partition` the broker still holds.
    pub(super) async fn earliest_offset(&mut self, topic: &str, partition: i32) -> Result<i64> {
        let mut w = W(Vec::new());
        w.i32(-1).i32(1).str(topic).i32(1).i32(partition).i64(-2);
        let resp = self.call(LIST_OFFSETS, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "list offsets",
        };
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                r.code()?
                    .check(format_args!("earliest offset of partition {p}"))?;
                let _ts = r.i64()?;
                let offset = r.i64()?;
                if p == partition {
                    return Ok(offset);
                }
            }
        }
        Err(Error::Protocol {
            what: "list offsets".into(),
            reason: format!("no earliest offset for partition {partition}"),
        })
    }

    /// Records of each partition from its offset: `(partition, [(offset, value)])`, or `None`
    /// for a partition whose offset the broker no longer holds.
    #[allow(clippy::type_complexity)]
    pub(super) async fn fetch(
        &mut self,
        topic: &str,
        wanted: &[(i32, i64)],
    ) -> Result<Vec<(i32, Option<Vec<(i64, Vec<u8>)>>)>> {
        let wait = Duration::from_millis(200);
        let mut w = W(Vec::new());
        w.i32(-1)
            .i32(wait.as_millis() as i32)
            .i32(1)
            .i32(16 << 20)
            .i8(0)
            .i32(1)
            .str(topic)
            .i32(wanted.len() as i32);
        for (p, o) in wanted {
            w.i32(*p).i64(*o).i32(4 << 20);
        }
        let resp = self.call(FETCH, &w.0, wait).await?;
        let mut r = R {
            b: &resp,
            what: "fetch",
        };
        let throttle = r.i32()?;
        self.throttled(throttle);
        let mut out = Vec::new();
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                let code = r.code()?;
                let _hw = r.i64()?;
                let _lso = r.i64()?;
                for _ in 0..r.count()? {
                    r.i64()?;
                    r.i64()?;
                }
                let records = r.bytes()?;
                if code == KafkaCode::OFFSET_OUT_OF_RANGE {
                    // Deleted by the topic's retention: the caller starts over at the earliest.
                    out.push((p, None));
                    continue;
                }
                code.check(format_args!("fetching partition {p}"))?;
                out.push((p, Some(record_batches(records)?)));
            }
        }
        Ok(out)
    }
}
