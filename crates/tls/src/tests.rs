//! Handshakes between the configurations this crate builds, over loopback TCP.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::testing::TestCa;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleetscore-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Serves one HTTPS connection with `server`, answering "ok"; the client connects to
/// `127.0.0.1` under `name` trusting `roots`. Returns what the client read, or its error.
async fn exchange(
    server: Arc<ServerConfig>,
    roots: &Roots,
    name: &str,
) -> std::result::Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let serving = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = accept_https(&acceptor, stream).await {
            let _ = tls.write_all(b"ok").await;
            let _ = tls.shutdown().await;
        }
    });
    let connector = TlsConnector::from(Arc::new(client_config(roots, None).unwrap()));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let result = match connector.connect(name, tcp).await {
        Ok(mut tls) => {
            let mut got = String::new();
            tls.read_to_string(&mut got)
                .await
                .map_err(|e| explain(&e))?;
            Ok(got)
        }
        Err(e) => Err(explain(&e)),
    };
    serving.await.unwrap();
    result
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_by_name_and_by_address() {
    let d = dir("trusted");
    let ca = TestCa::new(&d, "a");
    let server = server_config(&ca.localhost()).unwrap();
    let roots = Roots::File(ca.ca_file());
    assert_eq!(
        exchange(server.clone(), &roots, "localhost").await,
        Ok("ok".into())
    );
    assert_eq!(exchange(server, &roots, "127.0.0.1").await, Ok("ok".into()));
}

#[tokio::test]
async fn an_unknown_ca_and_a_wrong_name_are_refused_with_the_reason() {
    let d = dir("refused");
    let ca = TestCa::new(&d, "a");
    let other = TestCa::new(&d, "b");
    let server = server_config(&ca.localhost()).unwrap();
    let err = exchange(server.clone(), &Roots::File(other.ca_file()), "localhost")
        .await
        .unwrap_err();
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    let err = exchange(server, &Roots::File(ca.ca_file()), "db.example.com")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for the host name"), "{err}");
}

#[tokio::test]
async fn plaintext_http_on_the_https_port_gets_a_400_saying_https() {
    let d = dir("plain");
    let ca = TestCa::new(&d, "a");
    let acceptor = TlsAcceptor::from(server_config(&ca.localhost()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        accept_https(&acceptor, stream).await.map(|_| ())
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    tcp.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(got.contains("use https://"), "{got}");
    assert!(serving.await.unwrap().is_err());
}

#[test]
fn a_client_against_a_plaintext_server_is_told_so() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let d = dir("plainserver");
    let ca = TestCa::new(&d, "a");
    let err = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let connector = TlsConnector::from(Arc::new(
            client_config(&Roots::File(ca.ca_file()), None).unwrap(),
        ));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.map(|_| ()).unwrap_err()
    });
    assert!(
        explain(&err).contains("does not speak TLS"),
        "{}",
        explain(&err)
    );
}

#[test]
fn bad_files_are_named_in_the_error() {
    let d = dir("files");
    let ca = TestCa::new(&d, "a");
    let id = ca.localhost();
    let missing = Identity {
        cert: id.cert.clone(),
        key: d.join("nope.key"),
    };
    let err = server_config(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.key"), "{err}");
    // A certificate file given as the key: no private key in it.
    let swapped = Identity {
        cert: id.cert.clone(),
        key: id.cert.clone(),
    };
    let err = server_config(&swapped).unwrap_err().to_string();
    assert!(err.contains("holds no private key"), "{err}");
    // A key that is not the certificate's.
    let other = ca.server("other", &["localhost"]);
    let mismatched = Identity {
        cert: id.cert.clone(),
        key: other.key,
    };
    let err = server_config(&mismatched).unwrap_err().to_string();
    assert!(err.contains("server.pem"), "{err}");
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = Roots::File(empty).store().unwrap_err().to_string();
    assert!(err.contains("empty.pem holds no CA file"), "{err}");
}
