//! Helpers the CLI tests share: the binary, and `ingest serve` as a real process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetscore"))
}

/// A fresh, empty folder for one test: `fleetscore-{test file}-{name}-{pid}` in the system's
/// temporary folder.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleetscore-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `ingest serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(log_dir: &Path, extra: &[&str]) -> Server {
    let mut child = bin()
        .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(log_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fleetscore ingest serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

/// One HTTP/1.1 request on its own connection: (status, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // The server may answer (413) before reading a large body; a reset then is fine.
    let _ = s.write_all(body);
    let mut text = Vec::new();
    s.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

pub fn post(
    addr: SocketAddr,
    content_type: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let (status, text) = request(addr, "POST", "/v1/readings", &headers, body.as_bytes()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A `--db` URL on a fresh schema `name` of the PostgreSQL server `scripts/test` starts, or
/// `None` (saying what is not checked) when there is none.
pub fn postgres_schema(name: &str, unchecked: &str) -> Option<String> {
    postgres_schema_on("FLEETSCORE_TEST_POSTGRES", name, unchecked)
}

/// The same on the server whose URL is in the environment variable `var` (the TLS-only one is
/// `FLEETSCORE_TEST_POSTGRES_TLS`).
pub fn postgres_schema_on(var: &str, name: &str, unchecked: &str) -> Option<String> {
    let Ok(url) = std::env::var(var) else {
        eprintln!("{var} not set: {unchecked} not checked");
        return None;
    };
    let schema = format!("{name}_{}", std::process::id());
    let psql = Command::new("psql")
        .arg(&url)
        .args(["-q", "-c"])
        .arg(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .output()
        .expect("psql");
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

/// A Mosquitto broker the test started; killed when dropped.
pub struct Broker {
    /// The broker's process.
    pub child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Mosquitto (`bin`) on loopback `port`, anonymous, persistent in `dir`; returns once it listens.
pub fn start_broker(bin: &str, dir: &Path, port: u16) -> Broker {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let conf = dir.join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest stderr\nlog_type error\n",
        data.display()
    );
    // As root, Mosquitto otherwise drops to its own user, who cannot write our folder.
    if std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
    {
        text.push_str("user root\n");
    }
    std::fs::write(&conf, text).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("start mosquitto");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mosquitto did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child }
}

/// Publishes each line as a QoS 1 message to `topic`, one `mosquitto_pub -m` each (its `-l`
/// mode drops lines under load); false if the broker refused one.
/// Publishes each line with `mosquitto_pub` (`pub_bin`) at QoS 1; whether all went.
pub fn publish(pub_bin: &str, port: u16, topic: &str, lines: &[String]) -> bool {
    lines.iter().all(|line| {
        Command::new(pub_bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                line,
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
