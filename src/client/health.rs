//! `embedstream health`: one `grpc.health.v1.Health/Check` call, for probes
//! (the image's `HEALTHCHECK`, Kubernetes exec probes). Succeeds only when
//! the answer is `SERVING`; every other outcome is an error with a one-line
//! reason, which the CLI prints and turns into exit code 1 (what Docker's
//! HEALTHCHECK expects for "unhealthy").

use std::time::Duration;

use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use super::{
    secure::{SecureClient, SecureClientArgs, SecureClientError},
    serve_address, AddressError,
};

/// Flags of `embedstream health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The server, HOST:PORT. Default: localhost:$GRPC_PORT (50051 when unset).
    #[arg(long)]
    pub server: Option<String>,

    /// The service to ask about, e.g. `embedding.EmbeddingStreamService`.
    /// Default: the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,

    /// How long connecting and answering may take together.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// TLS and token (health needs no token on embedstream; it is sent if given).
    #[command(flatten)]
    pub secure: SecureClientArgs,
}

/// Why a health check did not find the server `SERVING`.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The address is unusable.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Bad TLS or token settings.
    #[error(transparent)]
    Secure(#[from] SecureClientError),
    /// No connection (refused, unresolvable, dropped).
    #[error("{server} is unreachable: {reason}")]
    Unreachable {
        /// The server asked.
        server: String,
        /// The transport's error chain.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("{server} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The server asked.
        server: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The server does not know the service asked about.
    #[error("{server} does not know service `{service}`")]
    UnknownService {
        /// The server asked.
        server: String,
        /// The service.
        service: String,
    },
    /// The server answered with another status than `SERVING`.
    #[error("{server}: {} is {status}", what(.service))]
    NotServing {
        /// The server asked.
        server: String,
        /// The service (empty: the whole server).
        service: String,
        /// `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN` or a number.
        status: String,
    },
    /// The call failed with a gRPC status (e.g. no health service).
    #[error("{server}: health check failed: {detail}")]
    Failed {
        /// The server asked.
        server: String,
        /// The status code and message.
        detail: String,
    },
}

fn what(service: &str) -> String {
    if service.is_empty() {
        "the server".to_string()
    } else {
        format!("service `{service}`")
    }
}

/// An error and its sources on one line, without repeats (tonic's
/// transport errors often wrap an error that says the same).
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Ask `server` whether `service` (empty: the whole server) is `SERVING`,
/// within `timeout` for connecting and answering together.
pub async fn check(server: &str, service: &str, timeout: Duration) -> Result<(), HealthError> {
    check_with(&SecureClient::plaintext(), server, service, timeout).await
}

/// [`check`] with TLS and token settings.
pub async fn check_with(
    secure: &SecureClient,
    server: &str,
    service: &str,
    timeout: Duration,
) -> Result<(), HealthError> {
    let endpoint = secure.endpoint(server)?;
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| HealthError::Unreachable {
                server: server.to_string(),
                reason: chain(&e),
            })?;
        HealthClient::with_interceptor(channel, secure.interceptor())
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|status| status_error(server, service, status))
    };
    let response = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| HealthError::Timeout {
            server: server.to_string(),
            timeout,
        })??
        .into_inner();
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        other => Err(HealthError::NotServing {
            server: server.to_string(),
            service: service.to_string(),
            status: other.map_or_else(
                |_| format!("status {}", response.status),
                |s| s.as_str_name().to_string(),
            ),
        }),
    }
}

/// The error for a failed Check call.
fn status_error(server: &str, service: &str, status: tonic::Status) -> HealthError {
    match status.code() {
        // What tonic-health and grpc-go answer for a service never registered.
        tonic::Code::NotFound => HealthError::UnknownService {
            server: server.to_string(),
            service: service.to_string(),
        },
        // Raised locally: the connection broke before an answer came.
        tonic::Code::Unavailable | tonic::Code::Unknown
            if std::error::Error::source(&status).is_some() =>
        {
            HealthError::Unreachable {
                server: server.to_string(),
                reason: chain(&status),
            }
        }
        code => HealthError::Failed {
            server: server.to_string(),
            detail: match status.message() {
                "" => format!("{code:?}"),
                message => format!("{code:?}: {message}"),
            },
        },
    }
}

/// Run `embedstream health`: print `SERVING` and succeed, or fail with the reason.
pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let server = serve_address(args.server)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let secure = SecureClient::from_args(&args.secure)?;
    runtime.block_on(check_with(&secure, &server, &args.service, args.timeout))?;
    println!("{server}: {} is SERVING", what(&args.service));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = HealthError::NotServing {
            server: "h:1".into(),
            service: String::new(),
            status: "NOT_SERVING".into(),
        };
        assert_eq!(e.to_string(), "h:1: the server is NOT_SERVING");
        let e = HealthError::Timeout {
            server: "h:1".into(),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(e.to_string(), "h:1 did not answer within 1s 500ms");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(io));
        assert!(matches!(
            status_error("h:1", "", status),
            HealthError::Unreachable { .. }
        ));
        assert!(matches!(
            status_error(
                "h:1",
                "x",
                tonic::Status::not_found("service not registered")
            ),
            HealthError::UnknownService { .. }
        ));
        assert_eq!(
            status_error("h:1", "", tonic::Status::unimplemented("")).to_string(),
            "h:1: health check failed: Unimplemented"
        );
    }
}
