//! The deployment flags of `embedstream serve` in one place — TLS
//! ([`super::tls`]), bearer tokens ([`super::auth`]) and metrics
//! ([`super::metrics`]) — and what [`super::Server::spawn`] makes of them:
//! every file read and checked, and the metrics port bound, before the gRPC
//! port opens.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use super::{
    auth::{TokenFileError, TokenStore},
    guard::Guard,
    metrics::{self, MetricsBindError, ServeMetrics, Sources},
    tls::{ServeTlsArgs, ServerTls},
};
use crate::tls::TlsError;

/// TLS, token and metrics flags of `embedstream serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecureArgs {
    /// TLS certificate, key and client CA.
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    /// Require `authorization: Bearer <token>` on every data RPC
    /// (StreamEmbedding, Flight); FILE holds one token per line (several
    /// for rotation; blank lines and # comments ignored). Re-read on SIGHUP.
    /// Health stays open.
    #[arg(long, env = "EMBEDSTREAM_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Also require the token for server reflection (default: reflection
    /// stays open, like health).
    #[arg(
        long,
        env = "EMBEDSTREAM_REFLECTION_REQUIRES_TOKEN",
        requires = "auth_token_file"
    )]
    pub reflection_requires_token: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP).
    #[arg(long, env = "EMBEDSTREAM_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Why the deployment settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// A TLS file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token file.
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    /// The metrics registry (a duplicate name: a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The metrics port.
    #[error(transparent)]
    MetricsBind(#[from] MetricsBindError),
}

/// The checked TLS and token settings, before the server is assembled.
#[derive(Debug)]
pub struct Secure {
    /// TLS, when on.
    pub tls: Option<ServerTls>,
    /// Accepted tokens, when on.
    pub tokens: Option<Arc<TokenStore>>,
    /// Whether reflection is behind the token check.
    pub reflection_requires_token: bool,
    metrics_addr: Option<SocketAddr>,
}

/// What keeps running beside the gRPC server: the metrics endpoint (stopped
/// on drop) and the token store, which the reloader's SIGHUP re-reads
/// ([`super::reload`]).
#[derive(Debug, Default)]
pub struct Running {
    /// The metrics endpoint, when on.
    pub metrics: Option<metrics::MetricsEndpoint>,
    /// The accepted tokens, when on (`reload()` re-reads the file).
    pub tokens: Option<Arc<TokenStore>>,
}

impl Secure {
    /// Read and check the TLS files and the token file.
    pub fn open(args: &SecureArgs) -> Result<Secure, SecureError> {
        let tls = ServerTls::from_args(&args.tls)?;
        let tokens = args
            .auth_token_file
            .as_deref()
            .map(TokenStore::open)
            .transpose()?
            .map(Arc::new);
        Ok(Secure {
            tls,
            tokens,
            reflection_requires_token: args.reflection_requires_token,
            metrics_addr: args.metrics_addr,
        })
    }

    /// Bind the metrics port (if asked) and return the guard of the data
    /// services.
    pub async fn start(&self, sources: Sources) -> Result<(Guard, Running), SecureError> {
        let mut running = Running::default();
        let mut metrics = None;
        if let Some(addr) = self.metrics_addr {
            let m = Arc::new(ServeMetrics::new(sources)?);
            running.metrics = Some(metrics::serve_metrics(addr, m.clone()).await?);
            metrics = Some(m);
        }
        // SIGHUP re-reads them: the reloader's handler, the only one.
        running.tokens = self.tokens.clone();
        Ok((Guard::new(self.tokens.clone(), metrics), running))
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let tls = match &self.tls {
            None => "plaintext",
            Some(t) if t.mutual() => "TLS with client certificates",
            Some(_) => "TLS",
        };
        let tokens = match &self.tokens {
            None => "no token required".to_string(),
            Some(t) => format!(
                "bearer token required ({} accepted{})",
                t.len(),
                if self.reflection_requires_token {
                    ", reflection included"
                } else {
                    ""
                }
            ),
        };
        format!("{tls}, {tokens}")
    }
}
