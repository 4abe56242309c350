//! The client side: a checking stream client ([`stream`]) and the Batch
//! Server upload ([`upload`]). Both are library functions (`pull`, `upload`)
//! that the CLI only wraps, so tests drive them in-process.
pub mod deadline;
pub mod health;
pub mod json;
pub mod secure;
pub mod stream;
pub mod upload;

use tonic::transport::Endpoint;

/// Why a server address is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// Not `HOST:PORT` or an `http://` URL.
    #[error("`{addr}` is not a server address ({reason}); give HOST:PORT, e.g. localhost:50051")]
    Invalid {
        /// What was given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// An environment variable that should hold a port does not.
    #[error("{name}={value} is not a port number (1-65535)")]
    Port {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// `HOST:PORT` (or a full `http://` or `https://` URL) as a tonic endpoint;
/// TLS settings are added by [`secure::SecureClient::endpoint`].
pub fn endpoint(addr: &str) -> Result<Endpoint, AddressError> {
    let invalid = |reason: &str| AddressError::Invalid {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(invalid("it is empty"));
    }
    let url = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
    if uri.port_u16().is_none() {
        return Err(invalid("no port"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid("a path is not allowed"));
    }
    Endpoint::from_shared(url).map_err(|e| invalid(&e.to_string()))
}

/// `localhost:PORT` from a port variable's value (absent = `default`).
pub fn local_address(
    name: &'static str,
    host: Option<&str>,
    port: Option<&str>,
    default_port: u16,
) -> Result<String, AddressError> {
    let host = host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    let port = match port.map(str::trim).filter(|p| !p.is_empty()) {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| AddressError::Port {
                name,
                value: p.to_string(),
            })?,
    };
    Ok(format!("{host}:{port}"))
}

/// The address of a local `serve`: `--server` if given, else
/// `localhost:$GRPC_PORT` (the Python server's variable), else the default port.
pub fn serve_address(server: Option<String>) -> Result<String, AddressError> {
    match server {
        Some(server) => Ok(server),
        None => local_address(
            "GRPC_PORT",
            None,
            std::env::var("GRPC_PORT").ok().as_deref(),
            crate::wire::DEFAULT_SERVE_PORT,
        ),
    }
}

/// Whether a failed call is worth retrying: the codes gRPC documents as
/// transient, and any failure raised locally by the transport (a refused or
/// dropped connection, a reset stream). A status sent by the server never
/// carries a source error; one built from a transport error always does.
pub fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    ) || std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint("localhost:50051").unwrap().uri().to_string(),
            "http://localhost:50051/"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:1").unwrap().uri().port_u16(),
            Some(1)
        );
        assert_eq!(
            endpoint("localhost").unwrap_err().to_string(),
            "`localhost` is not a server address (no port); give HOST:PORT, e.g. localhost:50051"
        );
        assert_eq!(
            endpoint("https://x:1").unwrap().uri().scheme_str(),
            Some("https")
        );
        assert!(endpoint("x:1/path")
            .unwrap_err()
            .to_string()
            .contains("a path is not allowed"));
        assert!(endpoint("")
            .unwrap_err()
            .to_string()
            .contains("it is empty"));
        assert_eq!(
            local_address("GRPC_PORT", None, None, 50051).unwrap(),
            "localhost:50051"
        );
        assert_eq!(
            local_address("GRPC_PORT", None, Some("7000"), 50051).unwrap(),
            "localhost:7000"
        );
        assert_eq!(
            local_address("BATCH_SERVER_PORT", Some("batch"), Some(""), 50052).unwrap(),
            "batch:50052"
        );
        assert_eq!(
            local_address("GRPC_PORT", None, Some("http"), 50051)
                .unwrap_err()
                .to_string(),
            "GRPC_PORT=http is not a port number (1-65535)"
        );
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient(&tonic::Status::unavailable("x")));
        assert!(is_transient(&tonic::Status::aborted("x")));
        assert!(is_transient(&tonic::Status::resource_exhausted("x")));
        assert!(is_transient(&tonic::Status::deadline_exceeded("x")));
        assert!(!is_transient(&tonic::Status::invalid_argument("x")));
        assert!(!is_transient(&tonic::Status::unimplemented("x")));
        assert!(!is_transient(&tonic::Status::internal("x")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transient(&tonic::Status::from_error(Box::new(io))));
    }
}
