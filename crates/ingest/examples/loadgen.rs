//! A load generator for `fleetscore ingest serve`: keep-alive HTTP/1.1 connections, each
//! posting batches of JSON-lines readings back to back, for a while; prints one JSON line with
//! readings/s and acknowledgement latency percentiles.
//!
//!     cargo run --release -p fleetscore-ingest --example loadgen -- \
//!         --addr 127.0.0.1:8086 --connections 8 --batch 1000 --seconds 10
//!
//! `--tls-ca ca.pem` speaks HTTPS instead, trusting that CA, to the server as `localhost`
//! (a TLS session per connection, kept for all its requests).
//!
//! Every reading is distinct (device, tag, ts), so the server stores every one. Responses other
//! than 200 are counted (429s are overload, as designed) and reported.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscore_tls::rustls::{ClientConfig, ClientConnection, StreamOwned};

/// A connection: TCP, or TLS over it.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// Reads are buffered; writes go to the connection itself (`get_mut`).
type Stream = BufReader<Box<dyn Conn>>;

struct Args {
    addr: String,
    tls: Option<Arc<ClientConfig>>,
    connections: usize,
    batch: usize,
    seconds: f64,
    devices: usize,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8086".into(),
        tls: None,
        connections: 8,
        batch: 1000,
        seconds: 10.0,
        devices: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--connections" => a.connections = value.parse().expect("--connections N"),
            "--batch" => a.batch = value.parse().expect("--batch N"),
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
            "--devices" => a.devices = value.parse().expect("--devices N"),
            "--tls-ca" => {
                let roots = fleetscore_tls::Roots::File(value.into());
                let config = fleetscore_tls::client_config(&roots, None).expect("--tls-ca");
                a.tls = Some(Arc::new(config));
            }
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    readings: u64,
    requests: u64,
    refused: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

/// Sends one request and reads its answer: (status, body). A server refusing a request early
/// (413, 429) may close the connection before reading the body; the answer is still read.
fn exchange(reader: &mut Stream, addr: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
    // The head in one write, the body in another (over TLS: two records, not one per piece).
    let head = format!(
        "POST /v1/readings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = reader.get_mut();
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .and_then(|()| stream.flush());
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut response = vec![0; length];
    reader.read_exact(&mut response)?;
    if status == 200 {
        sent?;
    }
    Ok((status, response))
}

fn connect(a: &Args) -> Stream {
    let tcp = TcpStream::connect(&a.addr).expect("connect to the server");
    tcp.set_nodelay(true).expect("nodelay");
    let conn: Box<dyn Conn> = match &a.tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = "localhost".try_into().expect("a server name");
            let client = ClientConnection::new(config.clone(), name).expect("a TLS client");
            Box::new(StreamOwned::new(client, tcp))
        }
    };
    BufReader::with_capacity(64 << 10, conn)
}

fn connection(a: &Args, id: usize, deadline: Instant) -> Tally {
    let mut reader = connect(a);
    let mut tally = Tally::default();
    let mut seq: i64 = 0;
    let base: i64 = 1_767_225_600_000;
    let mut body = String::with_capacity(a.batch * 80);
    while Instant::now() < deadline {
        body.clear();
        for i in 0..a.batch {
            let device = (id * 7919 + i) % a.devices;
            let ts = base + seq;
            seq += 1;
            use std::fmt::Write as _;
            let _ = writeln!(
                body,
                "{{\"device\":\"dev{device:05}\",\"tag\":\"t{}\",\"ts\":{ts},\"value\":{}.{}}}",
                i % 5,
                (ts % 97) as i32 - 40,
                ts % 100
            );
        }
        let started = Instant::now();
        let answer = exchange(&mut reader, &a.addr, &body);
        tally.requests += 1;
        tally
            .latencies_us
            .push(started.elapsed().as_micros() as u64);
        match answer {
            Ok((200, _)) => tally.readings += a.batch as u64,
            Ok((429, _)) => {
                tally.refused += 1;
                std::thread::sleep(Duration::from_millis(10));
                // The server may have closed the connection instead of reading the body.
                reader = connect(a);
            }
            Ok((status, response)) => {
                panic!("status {status}: {}", String::from_utf8_lossy(&response))
            }
            Err(e) => {
                tally.errors += 1;
                eprintln!("request failed ({e}); reconnecting");
                std::thread::sleep(Duration::from_millis(10));
                reader = connect(a);
            }
        }
    }
    tally
}

fn main() {
    let a = args();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.seconds);
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.connections)
            .map(|id| {
                let a = &a;
                s.spawn(move || connection(a, id, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connection thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat: Vec<u64> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    let readings: u64 = tallies.iter().map(|t| t.readings).sum();
    let requests: u64 = tallies.iter().map(|t| t.requests).sum();
    let refused: u64 = tallies.iter().map(|t| t.refused).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    println!(
        "{{\"connections\":{},\"batch\":{},\"seconds\":{elapsed:.3},\"requests\":{requests},\"refused\":{refused},\"errors\":{errors},\"readings\":{readings},\"readings_per_second\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        a.connections,
        a.batch,
        readings as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
