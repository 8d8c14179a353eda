//! A TLS + SASL gate in front of a plaintext Kafka broker (tansu), for the tests: no packaged
//! broker does both. It terminates TLS (recording each connection's SNI), does the SASL
//! handshake itself (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, server side), refuses any other
//! request before authentication (as Kafka does, by closing), then relays requests to the
//! broker one at a time, rewriting the broker addresses in Metadata v1 and FindCoordinator v1
//! answers to its own, so that a client reaches every broker through the gate.
//!
//! Also `examples/kafka_gate.rs`, for the benchmark (`scripts/bench/tls.py`), which compares
//! it with itself in plaintext (`start(None, ...)`: the same relay without TLS or SASL).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetscore_tls::Identity;
use fleetscore_tls::rustls::{ServerConnection, StreamOwned};

/// A running gate. Its threads end with the test process.
pub struct Gate {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The SNI name of every TLS connection, in order (`None`: the client sent none).
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    /// When each OffsetCommit request was relayed.
    pub commits: Arc<Mutex<Vec<std::time::Instant>>>,
    /// When each Fetch request arrived, by connection (numbered in accept order).
    pub fetches: Arc<Mutex<Vec<(usize, std::time::Instant)>>>,
}

/// Starts a gate on a free port that lets in `user` with `password`, and relays to `upstream`.
/// Without `tls` it is a plain relay (no TLS, no SASL): the baseline for the benchmark.
///
/// A non-zero `fetch_throttle_ms` is written into every Fetch answer's `throttle_time_ms`, as a
/// broker that throttles (Event Hubs) does.
pub fn start(
    tls: Option<&Identity>,
    upstream: String,
    user: &str,
    password: &str,
    fetch_throttle_ms: i32,
) -> Gate {
    let config = tls.map(|id| fleetscore_tls::server_config(id).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    let commits = Arc::new(Mutex::new(Vec::new()));
    let committed = commits.clone();
    let fetches = Arc::new(Mutex::new(Vec::new()));
    let fetched = fetches.clone();
    let (user, password) = (user.to_string(), password.to_string());
    std::thread::spawn(move || {
        for (connection, tcp) in listener.incoming().flatten().enumerate() {
            let _ = tcp.set_nodelay(true);
            let (config, upstream, seen) = (config.clone(), upstream.clone(), seen.clone());
            let session = Session {
                connection,
                fetch_throttle_ms,
                fetches: fetched.clone(),
                commits: committed.clone(),
                user: user.clone(),
                password: password.clone(),
                port,
                upstream,
                broker: None,
                scram: None,
                mechanism: None,
                authenticated: config.is_none(),
            };
            std::thread::spawn(move || match config {
                None => relay(tcp, session),
                Some(config) => {
                    let conn = ServerConnection::new(config).unwrap();
                    let mut tls = StreamOwned::new(conn, tcp);
                    // The handshake: done by the first read (or failed: a plaintext client, a
                    // client that does not trust our CA).
                    let Some(first) = read_frame(&mut tls) else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(tls.conn.server_name().map(str::to_string));
                    relay_from(tls, session, first);
                }
            });
        }
    });
    Gate {
        port,
        sni,
        commits,
        fetches,
    }
}

fn relay(mut s: impl Read + Write, session: Session) {
    if let Some(first) = read_frame(&mut s) {
        relay_from(s, session, first);
    }
}

/// Answers `first` and every later request until the client closes or is refused.
fn relay_from(mut s: impl Read + Write, mut session: Session, first: Vec<u8>) {
    let mut frame = Some(first);
    while let Some(request) = frame {
        let Some(answer) = session.answer(&request) else {
            return;
        };
        if write_frame(&mut s, &answer).is_err() {
            return;
        }
        frame = read_frame(&mut s);
    }
}

fn read_frame(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn write_frame(s: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    // One write: over TLS one record, over TCP one segment where it fits.
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    s.write_all(&frame)?;
    s.flush()
}

/// A cursor over a message.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        h
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn str(&mut self) -> String {
        let n = self.i16();
        if n < 0 {
            return String::new();
        }
        String::from_utf8_lossy(self.take(n as usize)).into_owned()
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.i32();
        self.take(n.max(0) as usize)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Session {
    connection: usize,
    fetch_throttle_ms: i32,
    fetches: Arc<Mutex<Vec<(usize, std::time::Instant)>>>,
    commits: Arc<Mutex<Vec<std::time::Instant>>>,
    user: String,
    password: String,
    port: u16,
    upstream: String,
    broker: Option<TcpStream>,
    mechanism: Option<String>,
    /// SCRAM: the client's first message (bare) and our first, between the two rounds.
    scram: Option<(String, String)>,
    authenticated: bool,
}

impl Session {
    /// The answer to one request, or `None` to close the connection.
    fn answer(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        let mut c = Cur(request);
        let (api, version, correlation) = (c.i16(), c.i16(), c.i32());
        let _client = c.str();
        let mut out = correlation.to_be_bytes().to_vec();
        if !self.authenticated {
            match api {
                17 => {
                    let mechanism = c.str();
                    let offered = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
                    let code: i16 = if offered.contains(&mechanism.as_str()) {
                        self.mechanism = Some(mechanism);
                        0
                    } else {
                        33
                    };
                    out.extend_from_slice(&code.to_be_bytes());
                    out.extend_from_slice(&(offered.len() as i32).to_be_bytes());
                    for m in offered {
                        put_str(&mut out, m);
                    }
                }
                36 => {
                    let token = c.bytes();
                    let (answer, ok) = self.sasl(token);
                    let code: i16 = if ok { 0 } else { 58 };
                    out.extend_from_slice(&code.to_be_bytes());
                    if ok {
                        out.extend_from_slice(&(-1i16).to_be_bytes());
                    } else {
                        put_str(
                            &mut out,
                            "Authentication failed: Invalid username or password",
                        );
                    }
                    out.extend_from_slice(&(answer.len() as i32).to_be_bytes());
                    out.extend_from_slice(&answer);
                }
                // Anything else before authentication: Kafka closes the connection.
                _ => return None,
            }
            return Some(out);
        }
        if api == 8 {
            self.commits.lock().unwrap().push(std::time::Instant::now());
        }
        if api == 1 {
            let now = std::time::Instant::now();
            self.fetches.lock().unwrap().push((self.connection, now));
        }
        if self.broker.is_none() {
            let broker = TcpStream::connect(&self.upstream).ok()?;
            let _ = broker.set_nodelay(true);
            self.broker = Some(broker);
        }
        let broker = self.broker.as_mut().expect("connected");
        write_frame(broker, request).ok()?;
        let answer = read_frame(broker)?;
        Some(match (api, version) {
            (3, 1) => self.rewrite_metadata(&answer),
            (10, 1) => self.rewrite_coordinator(&answer),
            // Fetch v4: the correlation id, then throttle_time_ms.
            (1, 4) if self.fetch_throttle_ms > 0 => {
                let mut answer = answer;
                answer[4..8].copy_from_slice(&self.fetch_throttle_ms.to_be_bytes());
                answer
            }
            _ => answer,
        })
    }

    /// One SASL token in, one out; whether the exchange succeeded (so far).
    fn sasl(&mut self, token: &[u8]) -> (Vec<u8>, bool) {
        let mechanism = self.mechanism.clone().unwrap_or_default();
        if mechanism == "PLAIN" {
            let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
            let ok = parts.len() == 3
                && parts[1] == self.user.as_bytes()
                && parts[2] == self.password.as_bytes();
            self.authenticated = ok;
            return (Vec::new(), ok);
        }
        let (kdf, mac, hash) = if mechanism == "SCRAM-SHA-512" {
            (
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
            )
        } else {
            (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
            )
        };
        let salt = b"fleetscore-gate-salt";
        let text = String::from_utf8_lossy(token).into_owned();
        match self.scram.take() {
            None => {
                let Some(bare) = text.strip_prefix("n,,") else {
                    return (Vec::new(), false);
                };
                let nonce = bare
                    .split(',')
                    .find_map(|f| f.strip_prefix("r="))
                    .unwrap_or("");
                let first = format!("r={nonce}gate-nonce,s={},i=4096", B64.encode(salt));
                self.scram = Some((bare.to_string(), first.clone()));
                (first.into_bytes(), true)
            }
            Some((client_first_bare, server_first)) => {
                let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
                    return (Vec::new(), false);
                };
                let user_ok = client_first_bare.starts_with(&format!("n={},", self.user));
                let mut salted = vec![0u8; hash.output_len()];
                pbkdf2::derive(
                    kdf,
                    std::num::NonZeroU32::new(4096).unwrap(),
                    salt,
                    self.password.as_bytes(),
                    &mut salted,
                );
                let salted = hmac::Key::new(mac, &salted);
                let client_key = hmac::sign(&salted, b"Client Key");
                let stored_key = digest::digest(hash, client_key.as_ref());
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = hmac::sign(
                    &hmac::Key::new(mac, stored_key.as_ref()),
                    auth_message.as_bytes(),
                );
                let proof = B64.decode(proof).unwrap_or_default();
                let recovered: Vec<u8> = proof
                    .iter()
                    .zip(signature.as_ref())
                    .map(|(p, s)| p ^ s)
                    .collect();
                let ok =
                    user_ok && digest::digest(hash, &recovered).as_ref() == stored_key.as_ref();
                self.authenticated = ok;
                if !ok {
                    return (Vec::new(), false);
                }
                let server_key = hmac::sign(&salted, b"Server Key");
                let server_signature = hmac::sign(
                    &hmac::Key::new(mac, server_key.as_ref()),
                    auth_message.as_bytes(),
                );
                (
                    format!("v={}", B64.encode(server_signature.as_ref())).into_bytes(),
                    true,
                )
            }
        }
    }

    /// Metadata v1: every broker's address becomes the gate's.
    fn rewrite_metadata(&self, answer: &[u8]) -> Vec<u8> {
        let mut c = Cur(answer);
        let mut out = c.take(4).to_vec(); // correlation
        let n = c.i32();
        out.extend_from_slice(&n.to_be_bytes());
        for _ in 0..n {
            let node = c.i32();
            let _host = c.str();
            let _port = c.i32();
            let rack = c.take(2);
            let rack_len = i16::from_be_bytes(rack.try_into().unwrap());
            out.extend_from_slice(&node.to_be_bytes());
            put_str(&mut out, "localhost");
            out.extend_from_slice(&i32::from(self.port).to_be_bytes());
            out.extend_from_slice(rack);
            if rack_len > 0 {
                out.extend_from_slice(c.take(rack_len as usize));
            }
        }
        out.extend_from_slice(c.0);
        out
    }

    /// FindCoordinator v1: the coordinator's address becomes the gate's.
    fn rewrite_coordinator(&self, answer: &[u8]) -> Vec<u8> {
        let mut c = Cur(answer);
        let mut out = c.take(4 + 4 + 2).to_vec(); // correlation, throttle, error code
        let message = c.take(2);
        out.extend_from_slice(message);
        let len = i16::from_be_bytes(message.try_into().unwrap());
        if len > 0 {
            out.extend_from_slice(c.take(len as usize));
        }
        out.extend_from_slice(c.take(4)); // node id
        let _host = c.str();
        let _port = c.i32();
        put_str(&mut out, "localhost");
        out.extend_from_slice(&i32::from(self.port).to_be_bytes());
        out.extend_from_slice(c.0);
        out
    }
}
