//! HTTPS on every HTTP listener of the binary (`ingest serve`, `serve`, `up`): a client that
//! trusts the test CA is served, a plaintext request is answered 400, a client that does not
//! trust the CA fails its handshake, and tokens are still required off loopback.

mod common;

use common::tempdir;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;

use common::{bin, request};
use fleetscore_tls::rustls::{self, ClientConnection, StreamOwned};
use fleetscore_tls::testing::TestCa;
use fleetscore_tls::{Identity, Roots};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads stdout lines until one starts with `prefix`; the address after it.
fn address_after(child: &mut Child, prefix: &str) -> SocketAddr {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no line starting {prefix:?}"
        );
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let addr = rest.split('/').next().unwrap();
            // Keep draining stdout so the process never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return addr.parse().unwrap();
        }
    }
}

/// One HTTPS request to `addr` as `localhost`, trusting `ca`: (status, body) or the handshake
/// error.
fn https(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let config = fleetscore_tls::client_config(&Roots::File(ca.to_path_buf()), None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    tls.write_all(head.as_bytes())
        .map_err(|e| fleetscore_tls::explain(&e))?;
    let mut text = Vec::new();
    match tls.read_to_end(&mut text) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer is fine.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !text.is_empty() => {}
        Err(e) => return Err(fleetscore_tls::explain(&e)),
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The head of the answer to a form POST over HTTPS.
fn https_head(addr: SocketAddr, ca: &Path, path: &str, form: &str) -> String {
    let config = fleetscore_tls::client_config(&Roots::File(ca.to_path_buf()), None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    tls.write_all(request.as_bytes()).unwrap();
    let mut text = Vec::new();
    let _ = tls.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    text.split("\r\n\r\n").next().unwrap().to_string()
}

fn tls_args(id: &Identity) -> [String; 4] {
    [
        "--tls-cert".into(),
        id.cert.display().to_string(),
        "--tls-key".into(),
        id.key.display().to_string(),
    ]
}

const TOKEN: &str = "site-a-0123456789abcdef";

#[test]
fn ingest_serve_over_https_serves_a_client_trusting_the_ca_and_refuses_plaintext() {
    let dir = tempdir("ingest");
    let ca = TestCa::new(&dir, "good");
    let other = TestCa::new(&dir, "other");
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        format!(r#"{{"tokens": [{{"name": "a", "token": "{TOKEN}"}}]}}"#),
    )
    .unwrap();
    let log_dir = dir.join("log");
    let mut child = bin()
        .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .arg("--log-dir")
        .arg(&log_dir)
        .args(tls_args(&ca.localhost()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = address_after(&mut child, "listening on https://");
    let _server = Killed(child);
    let reading = r#"{"device":"d1","tag":"t","ts":1767225605000,"value":1.5}"#;
    let bearer = format!("Bearer {TOKEN}");
    let ndjson = ("Content-Type", "application/x-ndjson");

    // Served over TLS, with the token still checked.
    let (status, body) = https(
        addr,
        &ca.ca_file(),
        "POST",
        "/v1/readings",
        &[ndjson],
        reading,
    )
    .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = https(
        addr,
        &ca.ca_file(),
        "POST",
        "/v1/readings",
        &[ndjson, ("Authorization", &bearer)],
        reading,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""accepted":1"#), "{body}");

    // Plaintext HTTP on the HTTPS port: a 400 that says what to do, nothing stored.
    let (status, body) = request(
        addr,
        "POST",
        "/v1/readings",
        &[ndjson, ("Authorization", &bearer)],
        r#"{"device":"d2","tag":"t","ts":1767225605000,"value":2}"#.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("use https://"), "{body}");

    // A client that does not trust the server's CA.
    let err = https(addr, &other.ca_file(), "GET", "/v1/stats", &[], "").unwrap_err();
    assert!(err.contains("not signed by a trusted CA"), "{err}");

    let o = bin()
        .args(["log", "read", "--log-dir"])
        .arg(&log_dir)
        .output()
        .unwrap();
    let stored = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stored.lines().count(), 1, "{stored}");
    assert!(stored.contains(r#""device":"d1""#), "{stored}");
}

#[test]
fn https_does_not_lift_the_token_requirement_off_loopback() {
    let dir = tempdir("offloopback");
    let ca = TestCa::new(&dir, "good");
    let o = bin()
        .args(["ingest", "serve", "--listen", "0.0.0.0:0", "--log-dir"])
        .arg(dir.join("log"))
        .args(tls_args(&ca.localhost()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("without tokens"), "{err}");
    let o = bin()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .args(tls_args(&ca.localhost()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("without tokens"), "{err}");
}

#[test]
fn a_key_without_a_certificate_and_a_bad_key_file_are_refused_at_start() {
    let dir = tempdir("badargs");
    let ca = TestCa::new(&dir, "good");
    let id = ca.localhost();
    let o = bin()
        .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(dir.join("log"))
        .arg("--tls-key")
        .arg(&id.key)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--tls-cert"), "{err}");
    let o = bin()
        .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(dir.join("log"))
        .arg("--tls-cert")
        .arg(&id.cert)
        .arg("--tls-key")
        .arg(&id.cert)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("server.pem holds no private key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn the_monitor_and_up_serve_https_with_the_same_options() {
    let dir = tempdir("monitor");
    let ca = TestCa::new(&dir, "good");
    let id = ca.localhost();
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        format!(r#"{{"tokens": [{{"name": "ops", "token": "{TOKEN}"}}]}}"#),
    )
    .unwrap();
    let mut child = bin()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .args(tls_args(&id))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = address_after(&mut child, "monitor listening on https://");
    let _monitor = Killed(child);
    assert_eq!(
        https(addr, &ca.ca_file(), "GET", "/healthz", &[], ""),
        Ok((200, "ok\n".into()))
    );
    let (status, body) = request(addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("use https://"), "{body}");
    // Signing in over HTTPS: the cookie that carries the token is marked Secure.
    let head = https_head(
        addr,
        &ca.ca_file(),
        "/login",
        &format!("token={TOKEN}&next=/"),
    );
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie in {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.ends_with("; Secure"),
        "{cookie}"
    );

    let mut child = bin()
        .args([
            "up",
            "--no-scheduler",
            "--no-workers",
            "--no-aggregate",
            "--ingest-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.join("up"))
        .args(tls_args(&id))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut ingest, mut dashboard) = (None, None);
    let mut line = String::new();
    while (ingest.is_none() || dashboard.is_none()) && out.read_line(&mut line).unwrap() > 0 {
        let addr = |rest: &str| {
            rest.split('/')
                .next()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap()
        };
        if let Some(rest) = line.trim().strip_prefix("ingest     https://") {
            ingest = Some(addr(rest));
        }
        if let Some(rest) = line.trim().strip_prefix("dashboard  https://") {
            dashboard = Some(addr(rest));
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let _up = Killed(child);
    let (ingest, dashboard) = (ingest.unwrap(), dashboard.unwrap());
    let (status, body) = https(
        ingest,
        &ca.ca_file(),
        "POST",
        "/v1/readings",
        &[("Content-Type", "application/x-ndjson")],
        r#"{"device":"d1","tag":"t","ts":1767225605000,"value":1.5}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Both listeners are bound before their lines are printed.
    let health = https(dashboard, &ca.ca_file(), "GET", "/healthz", &[], "");
    assert_eq!(health, Ok((200, "ok\n".into())));
    assert_eq!(
        request(ingest, "GET", "/v1/stats", &[], b"").unwrap().0,
        400
    );
}
