//! HTTPS for the monitor: a listener that hands axum connections only once their TLS
//! handshake is done, so one slow or broken client never holds up the others; and cookies
//! marked `Secure`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetscore_tls::rustls::ServerConfig;
use fleetscore_tls::tokio_rustls::TlsAcceptor;
use fleetscore_tls::tokio_rustls::server::TlsStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Handshakes in progress at once; at the cap, accepting waits for one to finish (each ends
/// within [`fleetscore_tls::HANDSHAKE_TIMEOUT`]).
const MAX_HANDSHAKES: usize = 256;

pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes in progress, each on its own task; a finished one yields its stream, or
    /// `None` if the client failed it (a plaintext request, an unknown CA, a timeout).
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, addr)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match fleetscore_tls::accept_https(&acceptor, stream).await {
                                Ok(tls) => Some((tls, addr)),
                                Err(why) => {
                                    tracing::debug!("{addr}: {why}");
                                    None
                                }
                            }
                        });
                    }
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Marks every cookie the response sets `Secure` (served over HTTPS only).
pub(crate) async fn secure_cookies(
    mut response: axum::response::Response,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header::SET_COOKIE};
    let cookies: Vec<HeaderValue> = response
        .headers_mut()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| HeaderValue::from_str(&format!("{v}; Secure")).ok())
        .collect();
    if !cookies.is_empty() {
        response.headers_mut().remove(SET_COOKIE);
        for c in cookies {
            response.headers_mut().append(SET_COOKIE, c);
        }
    }
    response
}
