//! TLS for `embedstream serve`: `--tls-cert`/`--tls-key` serve every service
//! (StreamEmbedding, Flight, health, reflection) over TLS through tonic's
//! rustls; `--tls-client-ca` also requires a client certificate signed by
//! that CA (mutual TLS). The files are read and checked at start-up
//! ([`crate::tls`]), before the port opens.
//!
//! The rustls configuration is built here and the handshake done by
//! [`super::conn::incoming_tls`] (tokio-rustls, as tonic's own TLS does it),
//! not by tonic's `ServerTlsConfig`, for two settings tonic does not expose
//! (measured in BENCHMARKS.md, "TLS"): the cipher suite order of
//! [`tls::provider`], and a send buffer of [`TLS_SEND_BUFFER`] instead of
//! rustls' 64 KiB, so that a large response leaves in a few big `writev`s
//! rather than one per 64 KiB.

use std::{path::PathBuf, sync::Arc};

use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::tls::{self, Identity, PemFile, TlsError};

/// The most TLS records (ciphertext) one connection holds before they are
/// written to its socket: rustls encrypts at most this much of a write
/// ahead, and tokio-rustls then writes it out (16 records of 16 KiB per
/// `writev`). rustls' default, 64 KiB, took 3,681 `writev`s for a 233 MB
/// Flight pull; 256 KiB takes 1,035 and 1 MiB 374, with no difference
/// measurable between the two (BENCHMARKS.md, "TLS"), so the smaller: these
/// bytes, like the kernel's socket buffer, are past `--send-budget`.
pub const TLS_SEND_BUFFER: usize = 256 << 10;

/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

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

    /// The acceptor of every connection: TLS 1.3 and 1.2 with the suites of
    /// [`tls::provider`], chosen in the server's order; ALPN `h2`; with
    /// `--tls-client-ca`, a client certificate signed by one of its CAs is
    /// required.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let provider = tls::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                // Each was parsed at start-up (`tls::certificates`).
                let (_, unusable) = roots.add_parsable_certificates(ca.der.iter().cloned());
                if unusable > 0 {
                    return Err(format!(
                        "--tls-client-ca: {unusable} certificate(s) cannot be used as a CA"
                    ));
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("--tls-client-ca: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(self.identity.certs.der.clone(), self.identity.key.der())
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
        config.ignore_client_order = true;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
