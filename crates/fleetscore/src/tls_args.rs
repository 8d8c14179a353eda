//! The HTTPS options every HTTP listener of the binary takes (`ingest serve`, `serve`, `up`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use fleetscore_tls::rustls::ServerConfig;

/// `--tls-cert` and `--tls-key`: serve HTTPS instead of HTTP.
#[derive(Debug, Clone, Args)]
pub struct TlsServerArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. A plaintext
    /// request is then answered 400. Tokens are still required off loopback.
    #[arg(long, env = "FLEETSCORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FLEETSCORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsServerArgs {
    /// The server configuration, or `None` for plain HTTP.
    pub fn config(&self) -> Result<Option<Arc<ServerConfig>>> {
        let identity = fleetscore_tls::Identity::from_options(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            "--tls-cert",
            "--tls-key",
        )
        .map_err(anyhow::Error::msg)?;
        identity
            .map(|id| fleetscore_tls::server_config(&id).context("loading --tls-cert/--tls-key"))
            .transpose()
    }

    /// `https` or `http`, for the address lines printed at start.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}
