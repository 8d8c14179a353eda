//! Helpers the CLI tests share: the binary, and `ingest serve` as a real process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetscore"))
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
