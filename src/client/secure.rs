//! TLS and the bearer token of the clients (`stream`, `upload`, `health`).
//!
//! An `https://` address or any `--tls-*` flag switches a client to TLS:
//! the server is verified against `--tls-ca` (else the system's roots), and
//! `--tls-cert`/`--tls-key` present a client certificate (mutual TLS).
//! `--tls-server-name` checks the certificate for another name than the
//! address's host (e.g. a probe dialing 127.0.0.1). `--token-file` (or
//! `EMBEDSTREAM_TOKEN`) sends `authorization: Bearer <token>` on every call.
//! Files are read and checked before connecting ([`crate::tls`]).

use std::path::PathBuf;

use tonic::{
    metadata::{AsciiMetadataValue, MetadataKey},
    service::Interceptor,
    transport::{Certificate, ClientTlsConfig, Endpoint},
    Request, Status,
};

use super::{endpoint, AddressError};
use crate::tls::{self, Identity, PemFile, TlsError};

/// TLS and token flags shared by the clients.
#[derive(Clone, Default, clap::Args)]
pub struct SecureClientArgs {
    /// Verify the server's certificate against the CA(s) in this PEM file
    /// (switches to TLS; without it, TLS uses the system's roots).
    #[arg(long, env = "EMBEDSTREAM_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM client certificate (mutual TLS); needs --tls-key.
    #[arg(
        long,
        env = "EMBEDSTREAM_TLS_CLIENT_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "EMBEDSTREAM_TLS_CLIENT_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// address's host (switches to TLS).
    #[arg(long, env = "EMBEDSTREAM_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Send `authorization: Bearer <token>` with the first non-comment line
    /// of FILE as the token.
    #[arg(long, env = "EMBEDSTREAM_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The token itself (environment only, so it stays out of `ps`).
    #[arg(
        long,
        env = "EMBEDSTREAM_TOKEN",
        hide = true,
        conflicts_with = "token_file",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl std::fmt::Debug for SecureClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("SecureClientArgs")
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_server_name", &self.tls_server_name)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why the client's TLS or token settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecureClientError {
    /// A TLS file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token file cannot be read.
    #[error("--token-file {}: cannot read it: {source}", .path.display())]
    TokenRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No usable token.
    #[error(
        "{what}: holds no token (printable ASCII without spaces, on the first non-comment line)"
    )]
    Token {
        /// `--token-file PATH` or `EMBEDSTREAM_TOKEN`.
        what: String,
    },
    /// An address and the TLS flags disagree.
    #[error(
        "{addr}: TLS flags were given but the address says http://; use https:// or HOST:PORT"
    )]
    PlainUrlWithTls {
        /// The address.
        addr: String,
    },
    /// The address is unusable.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// tonic refused the TLS configuration.
    #[error("{addr}: TLS setup failed: {message}")]
    Setup {
        /// The address.
        addr: String,
        /// tonic's error.
        message: String,
    },
}

/// The clients' connection security, checked: build endpoints with
/// [`SecureClient::endpoint`] and add the token with
/// [`SecureClient::interceptor`] (or [`SecureClient::authorization`]).
#[derive(Debug, Clone, Default)]
pub struct SecureClient {
    tls: Option<ClientTlsConfig>,
    token: Option<AsciiMetadataValue>,
}

/// The first token of a token file's text (blank lines and `#` comments skipped).
fn first_token(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

fn bearer(token: &str, what: impl Fn() -> String) -> Result<AsciiMetadataValue, SecureClientError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecureClientError::Token { what: what() });
    }
    let mut value: AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .map_err(|_| SecureClientError::Token { what: what() })?;
    // Debug prints `Sensitive`, and HPACK never indexes it.
    value.set_sensitive(true);
    Ok(value)
}

impl SecureClient {
    /// Plaintext, no token (unless the address is `https://`).
    pub fn plaintext() -> Self {
        SecureClient::default()
    }

    /// Read and check the files named by `args`.
    pub fn from_args(args: &SecureClientArgs) -> Result<Self, SecureClientError> {
        let wants_tls =
            args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_server_name.is_some();
        let tls = if wants_tls {
            let mut config = ClientTlsConfig::new();
            config = match &args.tls_ca {
                Some(path) => {
                    let ca = tls::certificates(PemFile {
                        flag: "--tls-ca",
                        path,
                    })?;
                    config.ca_certificate(Certificate::from_pem(ca.pem))
                }
                None => config.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                let identity = Identity::load(
                    PemFile {
                        flag: "--tls-cert",
                        path: cert,
                    },
                    PemFile {
                        flag: "--tls-key",
                        path: key,
                    },
                )?;
                config = config.identity(identity.to_tonic());
            }
            if let Some(name) = &args.tls_server_name {
                config = config.domain_name(name.clone());
            }
            Some(config)
        } else {
            None
        };
        let token = match (&args.token_file, &args.token) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    SecureClientError::TokenRead {
                        path: path.clone(),
                        source,
                    }
                })?;
                let what = || format!("--token-file {}", path.display());
                Some(bearer(first_token(&text).unwrap_or(""), what)?)
            }
            (None, Some(token)) => Some(bearer(token.trim(), || "EMBEDSTREAM_TOKEN".into())?),
            (None, None) => None,
        };
        Ok(SecureClient { tls, token })
    }

    /// The same, sending `token` (for tests and library callers).
    pub fn with_token(mut self, token: &str) -> Result<Self, SecureClientError> {
        self.token = Some(bearer(token, || "the token".into())?);
        Ok(self)
    }

    /// The endpoint of `addr` (HOST:PORT, `http://` or `https://`), with TLS
    /// when the address is `https://` or TLS flags were given.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, SecureClientError> {
        let trimmed = addr.trim();
        let https = trimmed.starts_with("https://");
        let url = match (&self.tls, https) {
            (Some(_), false) if trimmed.starts_with("http://") => {
                return Err(SecureClientError::PlainUrlWithTls {
                    addr: addr.to_string(),
                })
            }
            (Some(_), false) => format!("https://{trimmed}"),
            _ => trimmed.to_string(),
        };
        let endpoint = endpoint(&url)?;
        if !(https || self.tls.is_some()) {
            return Ok(endpoint);
        }
        let config = self
            .tls
            .clone()
            .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
        endpoint
            .tls_config(config)
            .map_err(|e| SecureClientError::Setup {
                addr: addr.to_string(),
                message: e.to_string(),
            })
    }

    /// The `authorization` value sent, if a token was given.
    pub fn authorization(&self) -> Option<&AsciiMetadataValue> {
        self.token.as_ref()
    }

    /// An interceptor adding the token to every call (a no-op without one).
    pub fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor(self.token.clone())
    }
}

/// Adds `authorization: Bearer <token>` to each request.
#[derive(Debug, Clone)]
pub struct TokenInterceptor(Option<AsciiMetadataValue>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert(MetadataKey::from_static("authorization"), token.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_addresses() {
        assert_eq!(first_token("# c\n\n tok \nother"), Some("tok"));
        assert_eq!(first_token("# only"), None);
        let plain = SecureClient::plaintext();
        assert_eq!(
            plain.endpoint("localhost:1").unwrap().uri().scheme_str(),
            Some("http")
        );
        assert_eq!(
            plain
                .endpoint("https://localhost:1")
                .unwrap()
                .uri()
                .scheme_str(),
            Some("https")
        );
        let args = SecureClientArgs {
            tls_server_name: Some("example".into()),
            ..SecureClientArgs::default()
        };
        let tls = SecureClient::from_args(&args).unwrap();
        assert_eq!(
            tls.endpoint("localhost:1").unwrap().uri().scheme_str(),
            Some("https")
        );
        assert_eq!(
            tls.endpoint("http://localhost:1").unwrap_err().to_string(),
            "http://localhost:1: TLS flags were given but the address says http://; use https:// or HOST:PORT"
        );
        let err = SecureClient::plaintext().with_token("a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the token: holds no token (printable ASCII without spaces, on the first non-comment line)"
        );
        let with = SecureClient::plaintext().with_token("abc").unwrap();
        assert_eq!(with.authorization().unwrap(), "Bearer abc");
        assert!(!format!("{with:?}").contains("abc"));
        let args = SecureClientArgs {
            token: Some("s3cret".into()),
            ..SecureClientArgs::default()
        };
        assert!(!format!("{args:?}").contains("s3cret"));
    }
}
