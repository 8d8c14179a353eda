//! TLS to PostgreSQL as libpq means it: `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or `system`) in the URL, over
//! rustls. tokio-postgres itself knows only `disable`, `prefer` and `require` and no
//! `sslrootcert`, so both are taken out of the URL here, the rest is parsed by tokio-postgres,
//! and the certificate checks each mode asks for are made by the connector below.
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | not checked, unless a root certificate is given (then as `verify-ca`) |
//! | `require` | always | not checked, unless a root certificate is given (then as `verify-ca`) |
//! | `verify-ca` | always | signed by a root in `sslrootcert` |
//! | `verify-full` | always | signed by a root in `sslrootcert`, and issued for the host connected to |
//!
//! Without `sslrootcert`, `~/.postgresql/root.crt` is used if it exists (libpq's default);
//! `verify-ca` and `verify-full` refuse to start without either. `sslrootcert=system` (the
//! operating system's CAs) needs `verify-full`, as in libpq 16: a public CA signs certificates
//! for anyone, so only the host name check makes it meaningful.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use fleetscore_tls::rustls::client::WebPkiServerVerifier;
use fleetscore_tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use fleetscore_tls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use fleetscore_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use fleetscore_tls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use fleetscore_tls::tokio_rustls::TlsConnector;
use fleetscore_tls::{Roots, explain};
use postgres::config::SslMode as PgSslMode;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};

/// libpq's `sslmode` values that fleetscore takes (`allow` is refused: it tries plaintext
/// first, which nobody who writes a TLS setting wants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (libpq's default).
    Prefer,
    /// TLS always; the certificate is checked only if a root certificate is given.
    Require,
    /// TLS always; the certificate chain must lead to a trusted root.
    VerifyCa,
    /// TLS always; the chain must lead to a trusted root and name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Postgres(format!(
                    "sslmode={other} in the database URL is not supported: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Encryption only (libpq's `prefer` and `require` without a root certificate).
    Nothing,
    /// The chain leads to one of these roots; the host name is not checked.
    Chain(Roots),
    /// The chain leads to one of these roots and the certificate names the host.
    Full(Roots),
}

/// A database URL taken apart: tokio-postgres' configuration (without the TLS settings it
/// does not know) and the TLS connector the settings ask for.
pub struct PgTarget {
    /// Everything but `sslmode` and `sslrootcert`; its `ssl_mode` is what tokio-postgres
    /// does about TLS (verify-ca and verify-full are `Require` to it).
    pub config: postgres::Config,
    /// The connector, with the checks `sslmode` and `sslrootcert` ask for.
    pub tls: RustlsConnect,
    /// The mode asked for.
    pub mode: SslMode,
}

impl PgTarget {
    /// Parses `url` (`postgres://user:password@host:port/db?sslmode=verify-full&sslrootcert=ca.pem`).
    /// Errors name the setting that is wrong, never the URL (which may hold a password).
    pub fn parse(url: &str) -> Result<PgTarget> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        PgTarget::parse_with_home(url, home.as_deref())
    }

    fn parse_with_home(url: &str, home: Option<&std::path::Path>) -> Result<PgTarget> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = SslMode::Prefer;
        let mut root: Option<String> = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = SslMode::parse(&percent_decode(value)?)?,
                "sslrootcert" => root = Some(percent_decode(value)?),
                _ => rest.push(pair),
            }
        }
        let stripped = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = postgres::Config::from_str(&stripped).map_err(|e| {
            // tokio-postgres' parse errors name the option, never its value.
            Error::Postgres(format!("the database URL: {}", describe_parse(&e)))
        })?;
        let default_root = home
            .map(|h| h.join(".postgresql").join("root.crt"))
            .filter(|p| p.is_file());
        let roots = match root.as_deref() {
            Some("system") => {
                if mode != SslMode::VerifyFull {
                    return Err(Error::Postgres(
                        "sslrootcert=system needs sslmode=verify-full (any public CA could have issued the certificate; only the host name check makes it mean something)".into(),
                    ));
                }
                Some(Roots::System)
            }
            Some(file) => Some(Roots::File(PathBuf::from(file))),
            None => default_root.map(Roots::File),
        };
        let check = match (mode, roots) {
            (SslMode::Disable, _) => Check::Nothing,
            (SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, Some(r)) => Check::Chain(r),
            (SslMode::VerifyFull, Some(r)) => Check::Full(r),
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(Error::Postgres(format!(
                    "sslmode={} needs the CA that signed the server's certificate: add sslrootcert=FILE (PEM) or sslrootcert=system to the database URL (there is no ~/.postgresql/root.crt)",
                    if mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                )));
            }
        };
        config.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let tls = RustlsConnect::new(&check)?;
        Ok(PgTarget { config, tls, mode })
    }
}

/// The message of a URL parse error (tokio-postgres' own `Display` says only "invalid
/// configuration").
fn describe_parse(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// `%XX` escapes decoded (a path in `sslrootcert` may hold any byte).
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Postgres("the database URL has a broken %-escape in its query".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Postgres("the database URL's query is not UTF-8".into()))
}

/// tokio-postgres' TLS hook over rustls: one client configuration, used for every connection
/// (and reconnection) of a coordinator.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl RustlsConnect {
    fn new(check: &Check) -> Result<RustlsConnect> {
        let provider = fleetscore_tls::provider();
        let tls_error =
            |e: fleetscore_tls::Error| Error::Postgres(format!("sslrootcert: {}", report(&e)));
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(EncryptOnly(provider.clone())),
            Check::Chain(roots) | Check::Full(roots) => {
                let store = roots.store().map_err(tls_error)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                        .build()
                        .map_err(|e| Error::Postgres(format!("sslrootcert: {e}")))?;
                if matches!(check, Check::Full(_)) {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Postgres(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }
}

/// An error and its causes on one line.
fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsHandshake> {
        // An address is checked against the certificate's IP names, a name against its DNS
        // names (and sent as SNI), as libpq does.
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a host name TLS can check"),
            )
        })?;
        Ok(RustlsHandshake {
            connector: TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One connection's handshake.
pub struct RustlsHandshake {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                // One line that says what to fix (unknown CA, wrong host name), not rustls'
                // enum names.
                .map_err(|e| io::Error::new(e.kind(), explain(&e)))
        })
    }
}

/// A TLS connection to PostgreSQL.
pub struct RustlsStream<S>(fleetscore_tls::tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No channel binding is offered (SCRAM authenticates without it, as with libpq's default
    /// `channel_binding=prefer` against a client that cannot bind); `channel_binding=require`
    /// is therefore refused by tokio-postgres.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// `prefer` and `require` without a root certificate: the connection is encrypted and the
/// handshake's signatures are checked, but whose certificate it is, is not (libpq's meaning).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's full check, less the host name. webpki checks the chain before the
/// name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgTarget> {
        PgTarget::parse_with_home(url, None)
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_does_and_what_is_checked() {
        let t = parse("postgres://u:secret-pw@db.example.com:5432/d").unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Prefer);
        let t = parse("postgres://u@h/d?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Disable);
        let t = parse("postgres://u@h/d?sslmode=require&application_name=x").unwrap();
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(t.config.get_application_name(), Some("x"));
        let t = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Require);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_without_showing_the_url() {
        let cases = [
            (
                "postgres://u:secret-pw@h/d?sslmode=verify-full",
                "needs the CA",
            ),
            (
                "postgres://u:secret-pw@h/d?sslmode=verify-ca",
                "sslrootcert=FILE",
            ),
            ("postgres://u:secret-pw@h/d?sslmode=allow", "sslmode=allow"),
            (
                "postgres://u:secret-pw@h/d?sslmode=require&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            (
                "postgres://u:secret-pw@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "/nonexistent/ca.pem",
            ),
            (
                "postgres://u:secret-pw@h/d?sslmode=verify-full&sslrootcert=%zz",
                "%-escape",
            ),
            ("postgres://u:secret-pw@h/d?bogus=1", "bogus"),
        ];
        for (url, expected) in cases {
            let err = match parse(url) {
                Ok(_) => panic!("{url} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secret-pw"), "{url}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn the_default_root_certificate_makes_require_check_the_chain() {
        let home = std::env::temp_dir().join(format!("fleetscore-pg-home-{}", std::process::id()));
        std::fs::create_dir_all(home.join(".postgresql")).unwrap();
        let ca = fleetscore_tls::testing::TestCa::new(&home, "root");
        std::fs::copy(ca.ca_file(), home.join(".postgresql/root.crt")).unwrap();
        // With ~/.postgresql/root.crt, verify-full needs no sslrootcert.
        let t = PgTarget::parse_with_home("postgres://u@h/d?sslmode=verify-full", Some(&home));
        assert!(t.is_ok());
        // An empty one is reported by its path.
        std::fs::write(home.join(".postgresql/root.crt"), "").unwrap();
        let err = PgTarget::parse_with_home("postgres://u@h/d?sslmode=require", Some(&home))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("root.crt holds no CA file"), "{err}");
    }
}
