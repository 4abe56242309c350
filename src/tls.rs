//! PEM files for TLS, read and checked once for the server ([`crate::serve::tls`])
//! and the clients ([`crate::client::secure`]): every certificate must parse,
//! a key must parse and match its certificate, and every refusal names the
//! flag and the file. What passes is handed to tonic as PEM bytes; tonic's
//! rustls then never sees a file it would refuse later, at the first
//! handshake.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{crypto::CryptoProvider, CipherSuite, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Why a TLS file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{flag} {}: cannot read it: {source}", .path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not PEM certificates, or a certificate that does not parse.
    #[error("{flag} {}: not a PEM certificate file: {reason}", .path.display())]
    Certificate {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Not a PEM private key.
    #[error("{flag} {}: not a PEM private key: {reason}", .path.display())]
    Key {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("{key_flag} {} does not match the certificate in {cert_flag} {}: {reason}", .key.display(), .cert.display())]
    Mismatch {
        /// The key's flag.
        key_flag: &'static str,
        /// The key file.
        key: PathBuf,
        /// The certificate's flag.
        cert_flag: &'static str,
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// A PEM file and the flag that named it.
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    /// The flag (for messages), e.g. `--tls-cert`.
    pub flag: &'static str,
    /// The file.
    pub path: &'a Path,
}

impl PemFile<'_> {
    fn read(&self) -> Result<Vec<u8>, TlsError> {
        std::fs::read(self.path).map_err(|source| TlsError::Read {
            flag: self.flag,
            path: self.path.to_path_buf(),
            source,
        })
    }

    fn certificate_error(&self, reason: impl std::fmt::Display) -> TlsError {
        TlsError::Certificate {
            flag: self.flag,
            path: self.path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Certificates read from a PEM file: the DER (checked) and the PEM bytes
/// (what tonic takes).
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The certificates, in file order.
    pub der: Vec<CertificateDer<'static>>,
    /// The file's bytes.
    pub pem: Vec<u8>,
}

/// A private key read from a PEM file.
#[derive(Debug)]
pub struct Key {
    der: PrivateKeyDer<'static>,
    pem: Vec<u8>,
}

impl Key {
    /// The file's bytes (what tonic takes).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The key, parsed.
    pub fn der(&self) -> PrivateKeyDer<'static> {
        self.der.clone_key()
    }
}

/// The crypto provider of the server's TLS ([`crate::serve::tls`]) and of
/// every check here: rustls' ring provider with the AES-128-GCM suites moved
/// first (the rest in rustls' order), picked in this order whatever the
/// client prefers. ring's own order puts AES-256-GCM first, which OpenSSL
/// clients (pyarrow's Flight) also ask for: AES-128-GCM, TLS 1.3's mandatory
/// suite, does 10 AES rounds instead of 14 on both ends for every byte sent
/// (BENCHMARKS.md, "TLS"). ring, not aws-lc-rs: on this AVX-512 machine
/// both seal at about the same speed (same section), and ring needs no C
/// build.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: within each group, rustls' order stays.
    provider
        .cipher_suites
        .sort_by_key(|s| !is_aes_128_gcm(s.suite()));
    Arc::new(provider)
}

fn is_aes_128_gcm(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

/// Read the certificates of `file`: at least one, each a well-formed X.509
/// certificate.
pub fn certificates(file: PemFile<'_>) -> Result<Certificates, TlsError> {
    let pem = file.read()?;
    let der = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file.certificate_error(e))?;
    if der.is_empty() {
        return Err(file
            .certificate_error("it holds no certificate (a `-----BEGIN CERTIFICATE-----` block)"));
    }
    for (i, cert) in der.iter().enumerate() {
        webpki_parse(cert)
            .map_err(|e| file.certificate_error(format!("certificate {}: {e}", i + 1)))?;
    }
    Ok(Certificates { der, pem })
}

/// Whether `cert` parses as an X.509 certificate (what rustls does with
/// every certificate it is given).
fn webpki_parse(cert: &CertificateDer<'static>) -> Result<(), String> {
    // A root store parses the certificate fully to take its subject and key.
    let mut store = RootCertStore::empty();
    store.add(cert.clone()).map_err(|e| e.to_string())
}

/// Read the private key of `file` (PKCS#8, PKCS#1 or SEC1).
pub fn key(file: PemFile<'_>) -> Result<Key, TlsError> {
    let pem = file.read()?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Key {
        flag: file.flag,
        path: file.path.to_path_buf(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "it holds no `-----BEGIN … PRIVATE KEY-----` block".to_string()
            }
            other => other.to_string(),
        },
    })?;
    Ok(Key { der, pem })
}

/// Check that `key` is a usable key for the first certificate of `certs`
/// (its public key is the certificate's), as rustls does when it loads
/// them.
pub fn check_pair(
    certs: &Certificates,
    cert_file: PemFile<'_>,
    key: &Key,
    key_file: PemFile<'_>,
) -> Result<(), TlsError> {
    rustls::sign::CertifiedKey::from_der(certs.der.clone(), key.der.clone_key(), &provider())
        .map(|_| ())
        .map_err(|e| TlsError::Mismatch {
            key_flag: key_file.flag,
            key: key_file.path.to_path_buf(),
            cert_flag: cert_file.flag,
            cert: cert_file.path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// A certificate and its key, read and checked.
#[derive(Debug)]
pub struct Identity {
    /// The certificate chain.
    pub certs: Certificates,
    /// The key.
    pub key: Key,
}

impl Identity {
    /// Read `cert` and `key` and check that they belong together.
    pub fn load(cert: PemFile<'_>, key_file: PemFile<'_>) -> Result<Identity, TlsError> {
        let certs = certificates(cert)?;
        let key = key(key_file)?;
        check_pair(&certs, cert, &key, key_file)?;
        Ok(Identity { certs, key })
    }

    /// As tonic's identity.
    pub fn to_tonic(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.certs.pem, self.key.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_prefers_aes_128_gcm_and_keeps_every_suite() {
        let ours: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let mut rustls_default: Vec<CipherSuite> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        let aes_128 = ours.iter().take_while(|s| is_aes_128_gcm(**s)).count();
        assert_eq!(aes_128, 3, "{ours:?}");
        assert!(
            ours[aes_128..].iter().all(|s| !is_aes_128_gcm(*s)),
            "{ours:?}"
        );
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        rustls_default.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, rustls_default);
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn refusals_name_the_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let err = certificates(PemFile {
            flag: "--tls-cert",
            path: &missing,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!(
                "--tls-cert {}: cannot read it: ",
                missing.display()
            )),
            "{err}"
        );

        let empty = write(dir.path(), "empty.pem", b"hello\n");
        let err = certificates(PemFile {
            flag: "--tls-ca",
            path: &empty,
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "--tls-ca {}: not a PEM certificate file: it holds no certificate (a `-----BEGIN CERTIFICATE-----` block)",
                empty.display()
            )
        );

        let garbage = write(
            dir.path(),
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let err = certificates(PemFile {
            flag: "--tls-cert",
            path: &garbage,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!(
                "--tls-cert {}: not a PEM certificate file: certificate 1: ",
                garbage.display()
            )),
            "{err}"
        );

        let err = key(PemFile {
            flag: "--tls-key",
            path: &empty,
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "--tls-key {}: not a PEM private key: it holds no `-----BEGIN … PRIVATE KEY-----` block",
                empty.display()
            )
        );
    }
}
