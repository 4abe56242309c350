//! The layer in front of the data services (StreamEmbedding under both
//! package names, Flight; reflection when `--reflection-requires-token`):
//! the bearer-token check ([`super::auth`]) and the per-call metrics
//! ([`super::metrics`]). Health is never wrapped, so probes need no token.
//!
//! [`Guard::wrap`] keeps the wrapped service's name, so tonic routes to it as
//! before. A refused call is answered here (trailers-only UNAUTHENTICATED)
//! and never reaches the service. With metrics on, the response body is
//! wrapped to count its bytes, time a resume's first message and read the
//! final status from the trailers.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::Frame;
use tonic::{
    body::Body,
    codegen::{http, BoxFuture, Service},
    server::NamedService,
};

use super::{
    auth::TokenStore,
    metrics::{rpc_name, CallMetrics, Resume, ServeMetrics},
};

/// What guards the data services: tokens (optional) and metrics (optional).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    tokens: Option<Arc<TokenStore>>,
    metrics: Option<Arc<ServeMetrics>>,
}

impl Guard {
    /// A guard checking `tokens` and counting into `metrics`.
    pub fn new(tokens: Option<Arc<TokenStore>>, metrics: Option<Arc<ServeMetrics>>) -> Self {
        Guard { tokens, metrics }
    }

    /// `service` behind this guard.
    pub fn wrap<S>(&self, service: S) -> Guarded<S> {
        Guarded {
            inner: service,
            guard: self.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let rpc = rpc_name(req.uri().path());
        if let Some(tokens) = &self.guard.tokens {
            if let Err(status) = tokens.check(req.headers()) {
                tracing::info!(
                    rpc,
                    message = status.message(),
                    "refused a call without an accepted token"
                );
                if let Some(metrics) = &self.guard.metrics {
                    metrics.refused(status.code());
                }
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        let Some(metrics) = &self.guard.metrics else {
            return Box::pin(self.inner.call(req));
        };
        let call = metrics.start(rpc);
        let arrived = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(metered(response, call, arrived))
        })
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

/// The grpc-status in `headers`, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Wrap `response`'s body to finish `call` when it ends.
fn metered(
    response: http::Response<Body>,
    call: CallMetrics,
    arrived: Instant,
) -> http::Response<Body> {
    // A trailers-only response (an error before any message) ends here.
    if let Some(code) = grpc_status(response.headers()) {
        call.finish(code, true);
        return response;
    }
    let resume = response.extensions().get::<Resume>().is_some();
    response.map(|inner| {
        Body::new(MeteredBody {
            inner,
            call: Some(call),
            resume_from: resume.then_some(arrived),
            sent_any: false,
        })
    })
}

/// A response body that counts its bytes and records how the call ended.
struct MeteredBody {
    inner: Body,
    /// `None` once the call's end was recorded.
    call: Option<CallMetrics>,
    /// When a resuming call arrived, until its first message is out.
    resume_from: Option<Instant>,
    sent_any: bool,
}

impl MeteredBody {
    fn finish(&mut self, code: i32) {
        if let Some(call) = self.call.take() {
            call.finish(code, !self.sent_any);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(call) = &this.call {
                        call.bytes.inc_by(data.len() as u64);
                        if let Some(arrived) = this.resume_from.take() {
                            call.resumed(arrived.elapsed().as_secs_f64());
                        }
                    }
                    this.sent_any = true;
                } else if let Some(trailers) = frame.trailers_ref() {
                    // Unknown when absent: gRPC requires it.
                    this.finish(grpc_status(trailers).unwrap_or(2));
                }
            }
            // tonic's body errors become an INTERNAL status for the client.
            Poll::Ready(Some(Err(_))) => this.finish(13),
            Poll::Ready(None) => this.finish(0),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropped before its trailers: the client cancelled or the
        // connection broke.
        self.finish(1);
    }
}
