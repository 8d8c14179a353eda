//! TLS for every connection fleetscore makes or accepts: rustls configurations built from PEM
//! files with the aws-lc-rs provider (the only crypto provider in the tree), the HTTPS accept
//! step shared by fleetscore's HTTP listeners, and handshake failures explained in one line.
//!
//! One way to do it: the HTTP listeners (ingest, monitor), the MQTT and Kafka clients and the
//! PostgreSQL coordinator all build their rustls configurations here, so a CA file, a client
//! certificate or a server key is read and checked the same way, with the same messages.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use rustls;
pub use tokio_rustls;

/// How long a client has to finish the TLS handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong loading a certificate, a key or a CA file. A wrapped cause is the error's
/// `source`, not repeated in its message (`anyhow`'s `{:#}` prints each part once).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// What the file should hold ("certificate", "private key", "CA file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path} holds no {what} (expected PEM: {expected})")]
    Empty {
        /// What was looked for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM block(s) that would do.
        expected: &'static str,
    },
    /// rustls refused the certificate, key or CA.
    #[error("{what}")]
    Rustls {
        /// Which setting was refused, with its files.
        what: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The system's trusted CAs could not be loaded.
    #[error("cannot load the system's trusted CA certificates: {0}")]
    SystemRoots(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The crypto provider every configuration uses: aws-lc-rs, named explicitly so that no
/// process-wide default has to be installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's trusted CAs (`/etc/ssl/certs` and the like; `SSL_CERT_FILE`
    /// and `SSL_CERT_DIR` are honoured).
    System,
    /// Only the CA certificates in this PEM file.
    File(PathBuf),
}

impl Roots {
    /// `None` (the option was not given) means the system's CAs.
    pub fn file_or_system(file: Option<&Path>) -> Roots {
        file.map_or(Roots::System, |f| Roots::File(f.to_path_buf()))
    }

    /// The trusted CAs as a store.
    pub fn store(&self) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match self {
            Roots::File(path) => {
                for cert in load_certs(path, "CA file")? {
                    store.add(cert).map_err(|e| Error::Rustls {
                        what: format!("CA file {}", path.display()),
                        source: e,
                    })?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_string(), |e| e.to_string());
                    return Err(Error::SystemRoots(why));
                }
            }
        }
        Ok(store)
    }
}

/// A certificate chain and its private key, both PEM files: a server's identity, or a client's
/// (MQTT brokers such as Azure Event Grid's authenticate clients with X.509).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Identity {
    /// Both files, or neither; one without the other is an error naming the missing option.
    pub fn from_options(
        cert: Option<&Path>,
        key: Option<&Path>,
        cert_option: &str,
        key_option: &str,
    ) -> std::result::Result<Option<Identity>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Identity {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(format!("{cert_option} needs {key_option} too")),
            (None, Some(_)) => Err(format!("{key_option} needs {cert_option} too")),
        }
    }

    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        Ok((load_certs(&self.cert, "certificate")?, load_key(&self.key)?))
    }
}

/// Every certificate in a PEM file; none is an error.
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let read = |source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| read(pem_io(e)))?;
    let certs = iter
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| read(pem_io(e)))?;
    if certs.is_empty() {
        return Err(Error::Empty {
            what,
            path: path.to_path_buf(),
            expected: "-----BEGIN CERTIFICATE-----",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::Empty {
            what: "private key",
            path: path.to_path_buf(),
            expected: "-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY",
        },
        e => Error::Read {
            what: "private key",
            path: path.to_path_buf(),
            source: pem_io(e),
        },
    })
}

fn pem_io(e: rustls::pki_types::pem::Error) -> io::Error {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// A server configuration for HTTPS from a certificate chain and key (`--tls-cert`,
/// `--tls-key`); the key must match the certificate. HTTP/1.1 only, as the listeners are.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>> {
    let (certs, key) = identity.load()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| Error::Rustls {
            what: format!(
                "TLS certificate {} with key {}",
                identity.cert.display(),
                identity.key.display()
            ),
            source: e,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting `roots`, presenting `identity` when given.
pub fn client_config(roots: &Roots, identity: Option<&Identity>) -> Result<ClientConfig> {
    let store = roots.store()?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Rustls {
            what: "TLS protocol versions".into(),
            source: e,
        })?
        .with_root_certificates(store);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => {
            let (certs, key) = id.load()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::Rustls {
                    what: format!(
                        "client certificate {} with key {}",
                        id.cert.display(),
                        id.key.display()
                    ),
                    source: e,
                })
        }
    }
}

/// Why a TLS handshake (or the connection under it) failed, in one line a user can act on:
/// an unknown CA, a certificate for another name, a peer that refused ours, or a peer that does
/// not speak TLS at all.
pub fn explain(e: &io::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<R>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the TLS handshake (does it speak TLS on this port?)".into()
            }
            _ => e.to_string(),
        };
    };
    match r {
        R::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (pass the CA file that signed it)".into()
        }
        R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for the host name connected to".into()
        }
        R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        R::InvalidCertificate(c) => format!("the server's certificate is refused: {c:?}"),
        R::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::AccessDenied,
        ) => format!(
            "the server refused our client certificate ({:?})",
            match r {
                R::AlertReceived(a) => *a,
                _ => unreachable!(),
            }
        ),
        R::InvalidMessage(_) | R::InappropriateMessage { .. } => {
            "the server does not speak TLS on this port (plaintext?)".into()
        }
        other => format!("TLS: {other}"),
    }
}

/// The accept step of an HTTPS listener: a connection that starts with a TLS handshake record
/// is handshaken (within [`HANDSHAKE_TIMEOUT`]); one that sends plaintext HTTP gets a `400`
/// saying to use `https://`, and is closed. `Err` carries a line for the debug log.
pub async fn accept_https(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> std::result::Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    let handshake = async {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await.map_err(|e| e.to_string())?;
        // 0x16: a TLS record of type handshake (the ClientHello).
        if n == 1 && first[0] != 0x16 {
            let mut stream = stream;
            let body = "this port speaks HTTPS: use https://\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
            return Err("a plaintext request on the HTTPS port was refused".to_string());
        }
        acceptor
            .accept(stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| Err("no TLS handshake within 10 s".into()))
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
