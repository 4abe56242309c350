//! TLS for `embedstream serve`: `--tls-cert`/`--tls-key` serve every service
//! (StreamEmbedding, Flight, health, reflection) over TLS through tonic's
//! rustls; `--tls-client-ca` also requires a client certificate signed by
//! that CA (mutual TLS). The files are read and checked at start-up
//! ([`crate::tls`]), before the port opens.

use std::{path::PathBuf, time::Duration};

use tonic::transport::{Certificate, ServerTlsConfig};

use crate::tls::{self, Identity, PemFile, TlsError};

/// TLS flags of `embedstream serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeTlsArgs {
    /// Serve over TLS with this PEM certificate chain (server certificate
    /// first). Needs --tls-key.
    #[arg(
        long,
        env = "EMBEDSTREAM_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "EMBEDSTREAM_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual
    /// TLS). Needs --tls-cert.
    #[arg(
        long,
        env = "EMBEDSTREAM_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

/// The server's TLS settings, read and checked.
#[derive(Debug)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<tls::Certificates>,
}

impl ServerTls {
    /// Read and check the files named by `args`; `None` when TLS is off.
    pub fn from_args(args: &ServeTlsArgs) -> Result<Option<ServerTls>, TlsError> {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            return Ok(None);
        };
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
        let client_ca = args
            .tls_client_ca
            .as_deref()
            .map(|path| {
                tls::certificates(PemFile {
                    flag: "--tls-client-ca",
                    path,
                })
            })
            .transpose()?;
        Ok(Some(ServerTls {
            identity,
            client_ca,
        }))
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// As tonic's server TLS configuration; a handshake not done within
    /// `handshake_timeout` (`--handshake-timeout`) drops the connection.
    /// Installs [`tls::provider`] as the process' default first, and when
    /// that took, picks the cipher suite in the server's order (AES-128-GCM
    /// first) rather than the client's.
    pub fn to_tonic(&self, handshake_timeout: Duration) -> ServerTlsConfig {
        let server_order = tls::install_provider();
        let mut config = ServerTlsConfig::new()
            .identity(self.identity.to_tonic())
            .timeout(handshake_timeout)
            .ignore_client_order(server_order);
        if let Some(ca) = &self.client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(&ca.pem))
                .client_auth_optional(false);
        }
        config
    }
}
