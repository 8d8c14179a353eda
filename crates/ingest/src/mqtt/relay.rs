//! TLS to the MQTT broker, outside rumqttc. rumqttc's TLS features bring a second crypto
//! provider (ring, through rustls-webpki 0.102), so rumqttc speaks MQTT over a unix socket to
//! this relay, in the same process, which opens a TLS connection to the broker (with our
//! rustls configuration: aws-lc-rs, SNI, CA file, client certificate) for each connection
//! rumqttc makes, and copies bytes both ways. A failed handshake is kept
//! ([`TlsRelay::last_error`]) so the source reports why in one line, instead of rumqttc's
//! "connection closed".
//!
//! The socket lives in a directory only this user can enter (mode 0700), removed when the
//! relay is dropped, or by the next relay if the process was killed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fleetscore_tls::rustls::ClientConfig;
use fleetscore_tls::rustls::pki_types::ServerName;
use fleetscore_tls::tokio_rustls::TlsConnector;
use tokio::net::{TcpStream, UnixListener};

use crate::error::{Error, Result};

/// A running relay: a unix socket that leads, over TLS, to one broker.
pub(super) struct TlsRelay {
    dir: PathBuf,
    socket: PathBuf,
    /// Why the last connection to the broker failed, until one succeeds. Written by the
    /// connection tasks before they close rumqttc's side, so rumqttc's error is seen after it.
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsRelay {
    /// Listens on a fresh socket; each connection to it is relayed to `host:port` over TLS.
    pub(super) fn start(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<TlsRelay> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            Error::Config(format!(
                "MQTT broker host {host:?} is not a name TLS can check"
            ))
        })?;
        let dir = std::env::temp_dir().join(format!(
            "fleetscore-mqtt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: &str, e| Error::Io {
            what: format!("MQTT over TLS: {what} {}", dir.display()),
            source: e,
        };
        let _ = std::fs::remove_dir_all(&dir);
        remove_stale();
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io("cannot create", e))?;
        }
        let socket = dir.join("broker.sock");
        let listener = UnixListener::bind(&socket).map_err(|e| io("cannot listen in", e))?;
        let last_error = Arc::new(Mutex::new(None));
        let connector = TlsConnector::from(config);
        let addr = (host.to_string(), port);
        let errors = last_error.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut local, _)) = listener.accept().await {
                let (connector, name, addr, errors) = (
                    connector.clone(),
                    name.clone(),
                    addr.clone(),
                    errors.clone(),
                );
                tokio::spawn(async move {
                    let broker = async {
                        let tcp = TcpStream::connect((addr.0.as_str(), addr.1))
                            .await
                            .map_err(|e| e.to_string())?;
                        let _ = tcp.set_nodelay(true);
                        connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| fleetscore_tls::explain(&e))
                    };
                    let remember = |e: Option<String>| {
                        *errors.lock().unwrap_or_else(|p| p.into_inner()) = e;
                    };
                    match broker.await {
                        Ok(mut tls) => {
                            remember(None);
                            // With TLS 1.3 a broker refuses a client certificate (or its
                            // absence) only after the handshake: that alert is kept too.
                            if let Err(e) =
                                tokio::io::copy_bidirectional(&mut local, &mut tls).await
                                && e.get_ref()
                                    .is_some_and(|i| i.is::<fleetscore_tls::rustls::Error>())
                            {
                                remember(Some(fleetscore_tls::explain(&e)));
                            }
                        }
                        // Dropping `local` closes rumqttc's connection after the reason is kept.
                        Err(why) => remember(Some(why)),
                    }
                });
            }
        });
        Ok(TlsRelay {
            dir,
            socket,
            last_error,
            task,
        })
    }

    /// The socket rumqttc connects to.
    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Why the last connection to the broker failed, if it did.
    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Removes the socket directories of relays whose process is gone (killed, so never dropped).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("fleetscore-mqtt-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Another user's directory cannot be removed; that is fine.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
