//! The Batch Server revision that added `IngestDataStream` calls the same
//! service under the package `com.alpha.backend.grpc`. Its messages are
//! identical on the wire, so instead of a second service we register this
//! small wrapper under the alias name: it rewrites the request path
//! `/com.alpha.backend.grpc.EmbeddingStreamService/M` to
//! `/embedding.EmbeddingStreamService/M` and hands the request to the
//! canonical service (which answers `IngestDataStream` with UNIMPLEMENTED).

use std::task::{Context, Poll};

use tonic::{
    codegen::{http, Service},
    server::NamedService,
};

use super::embedding::SERVICE_NAME;

/// Full name of the aliased service.
pub const ALIAS_SERVICE_NAME: &str = "com.alpha.backend.grpc.EmbeddingStreamService";

/// Serves `S` (the canonical service) under [`ALIAS_SERVICE_NAME`].
#[derive(Debug, Clone)]
pub struct PackageAlias<S> {
    inner: S,
}

impl<S> PackageAlias<S> {
    /// Wrap the canonical service.
    pub fn new(inner: S) -> Self {
        PackageAlias { inner }
    }
}

/// `path` with the alias package replaced by the canonical one, if it is a
/// path of the aliased service.
pub fn canonical_path(path: &str) -> Option<String> {
    let method = path
        .strip_prefix('/')?
        .strip_prefix(ALIAS_SERVICE_NAME)?
        .strip_prefix('/')?;
    Some(format!("/{SERVICE_NAME}/{method}"))
}

impl<S, B> Service<http::Request<B>> for PackageAlias<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(path) = canonical_path(req.uri().path()) {
            let mut parts = req.uri().clone().into_parts();
            // gRPC paths carry no query; a path that does not parse is left
            // as is and the canonical service answers UNIMPLEMENTED for it.
            if let Ok(pq) = http::uri::PathAndQuery::try_from(path) {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        self.inner.call(req)
    }
}

impl<S> NamedService for PackageAlias<S> {
    const NAME: &'static str = ALIAS_SERVICE_NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_alias() {
        assert_eq!(
            canonical_path("/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding")
                .as_deref(),
            Some("/embedding.EmbeddingStreamService/StreamEmbedding")
        );
        assert_eq!(
            canonical_path("/embedding.EmbeddingStreamService/StreamEmbedding"),
            None
        );
        assert_eq!(
            canonical_path("/com.alpha.backend.grpc.EmbeddingStreamServiceX/A"),
            None
        );
    }
}
