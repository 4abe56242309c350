//! Prometheus metrics (`serve --metrics-addr HOST:PORT`, text format at
//! `/metrics` over HTTP/1.1 served by hyper), through the `prometheus` crate:
//! its registry, text encoder and Linux process collector. The endpoint
//! serves at most [`MAX_SCRAPE_CONNECTIONS`] connections at once (more are
//! closed at once) and closes any connection after [`SCRAPE_DEADLINE`].
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `embedstream_streams_started_total` | counter | `rpc` |
//! | `embedstream_streams_active` | gauge | `rpc` |
//! | `embedstream_streams_finished_total` | counter | `rpc`, `code` |
//! | `embedstream_rows_sent_total` | counter | `rpc` (`StreamEmbedding`, `DoGet`) |
//! | `embedstream_bytes_sent_total` | counter | `rpc` |
//! | `embedstream_resume_first_message_seconds` | histogram | `rpc` |
//! | `embedstream_requests_refused_total` | counter | `code` |
//! | `embedstream_file_rows`, `embedstream_file_bytes`, `embedstream_file_generation` | gauge | |
//! | `embedstream_build_info` | gauge (1) | `version` |
//! | `process_*` (CPU, resident memory, open fds, threads, start time) | | |
//!
//! A *stream* is one call of a data RPC that passed the token check (unary
//! Flight calls included); it finishes with its gRPC status code (`OK`,
//! `INVALID_ARGUMENT`, ..., `CANCELLED` when the client went away). A call
//! *refused* ended with an error before any message: a token refusal
//! (`UNAUTHENTICATED`, not counted as a stream), a bad argument, a limit.
//! Bytes are the response bodies (gRPC framing included, TLS excluded), as
//! handed to HTTP/2. The resume histogram times a resuming call
//! (StreamEmbedding with a checkpoint, DoGet `after:`) from its arrival to
//! its first response message.
//!
//! Cost on the hot path: per response frame (one per RowChunk; two per
//! Flight batch), one atomic add; rows are counted per chunk by the
//! services' existing counters and read at scrape time.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

/// Scrape connections served at once; more are closed on arrival.
pub const MAX_SCRAPE_CONNECTIONS: usize = 16;
/// Longest life of one scrape connection (a scrape takes milliseconds).
pub const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);

use super::embedding::StreamStats;
use crate::dataset::LiveDataset;

/// Marker a service puts in a response's extensions when the call resumes
/// after a checkpoint: the guard then times its first message.
#[derive(Debug, Clone, Copy)]
pub struct Resume;

/// The RPC label of a request path (a fixed set, so label values stay few).
pub fn rpc_name(path: &str) -> &'static str {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return "unknown";
    };
    match service {
        "embedding.EmbeddingStreamService" | "com.alpha.backend.grpc.EmbeddingStreamService" => {
            match method {
                "StreamEmbedding" => "StreamEmbedding",
                "IngestDataStream" => "IngestDataStream",
                _ => "unknown",
            }
        }
        "arrow.flight.protocol.FlightService" => match method {
            "Handshake" => "Handshake",
            "ListFlights" => "ListFlights",
            "GetFlightInfo" => "GetFlightInfo",
            "PollFlightInfo" => "PollFlightInfo",
            "GetSchema" => "GetSchema",
            "DoGet" => "DoGet",
            "DoPut" => "DoPut",
            "DoExchange" => "DoExchange",
            "DoAction" => "DoAction",
            "ListActions" => "ListActions",
            _ => "unknown",
        },
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            "ServerReflectionInfo"
        }
        _ => "unknown",
    }
}

/// The canonical name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Values owned by the services, read at scrape time.
#[derive(Debug, Clone)]
pub struct Sources {
    /// StreamEmbedding's counters (rows handed to the encoder, per chunk).
    pub stream_stats: Arc<StreamStats>,
    /// Rows of the record batches DoGet handed to the transport.
    pub flight_rows: Arc<AtomicU64>,
    /// The served file.
    pub dataset: Arc<LiveDataset>,
}

/// Every metric of one server (one registry per server, so servers started
/// side by side in tests do not share counters).
#[derive(Debug)]
pub struct ServeMetrics {
    registry: Registry,
    started: IntCounterVec,
    active: IntGaugeVec,
    finished: IntCounterVec,
    bytes: IntCounterVec,
    refused: IntCounterVec,
    resume: HistogramVec,
    rows: IntCounterVec,
    file_rows: IntGauge,
    file_bytes: IntGauge,
    file_generation: IntGauge,
    sources: Sources,
    /// Serialises [`ServeMetrics::refresh`] (counters follow their sources by deltas).
    refreshing: Mutex<()>,
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl ServeMetrics {
    /// A registry with every metric, reading `sources` at scrape time.
    pub fn new(sources: Sources) -> Result<ServeMetrics, prometheus::Error> {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let gauge = |name: &str, help: &str| registered(&r, IntGauge::new(name, help)?);
        let started = counter(
            "embedstream_streams_started_total",
            "Data RPC calls that passed the token check, by RPC.",
            &["rpc"],
        )?;
        let active = registered(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "embedstream_streams_active",
                    "Data RPC calls running now, by RPC.",
                ),
                &["rpc"],
            )?,
        )?;
        let finished = counter(
            "embedstream_streams_finished_total",
            "Data RPC calls finished, by RPC and gRPC status code (CANCELLED: the client went away).",
            &["rpc", "code"],
        )?;
        let bytes = counter(
            "embedstream_bytes_sent_total",
            "Response bytes handed to HTTP/2 (gRPC framing included), by RPC.",
            &["rpc"],
        )?;
        let refused = counter(
            "embedstream_requests_refused_total",
            "Calls that ended with an error before any message (token, bad argument, limit), by gRPC status code.",
            &["code"],
        )?;
        let resume = registered(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "embedstream_resume_first_message_seconds",
                    "Time from a resuming call (StreamEmbedding with a checkpoint, DoGet after:) to its first response message, by RPC.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0,
                ]),
                &["rpc"],
            )?,
        )?;
        let rows = counter(
            "embedstream_rows_sent_total",
            "Rows handed to the transport, by RPC (counted per chunk or batch).",
            &["rpc"],
        )?;
        let file_rows = gauge("embedstream_file_rows", "Rows in the file served now.")?;
        let file_bytes = gauge(
            "embedstream_file_bytes",
            "Size of the file served now, in bytes.",
        )?;
        let file_generation = gauge(
            "embedstream_file_generation",
            "Generation of the served file (its embedstream.generation metadata, else the load count); 0 while none is served.",
        )?;
        let build = registered(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "embedstream_build_info",
                    "Always 1; the labels describe the build.",
                ),
                &["version"],
            )?,
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // The main RPCs' series exist from the start (at 0), as Prometheus
        // advises for label values known in advance.
        for rpc in ["StreamEmbedding", "DoGet"] {
            started.with_label_values(&[rpc]);
            active.with_label_values(&[rpc]);
            bytes.with_label_values(&[rpc]);
            resume.with_label_values(&[rpc]);
            rows.with_label_values(&[rpc]);
            finished.with_label_values(&[rpc, "OK"]);
        }
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let metrics = ServeMetrics {
            registry: r,
            started,
            active,
            finished,
            bytes,
            refused,
            resume,
            rows,
            file_rows,
            file_bytes,
            file_generation,
            sources,
            refreshing: Mutex::new(()),
        };
        metrics.refresh();
        Ok(metrics)
    }

    /// Bring the values owned by the services into the registry.
    pub fn refresh(&self) {
        let _guard = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let follow = |counter: IntCounter, value: u64| {
            let known = counter.get();
            if value > known {
                counter.inc_by(value - known);
            }
        };
        follow(
            self.rows.with_label_values(&["StreamEmbedding"]),
            self.sources.stream_stats.rows(),
        );
        follow(
            self.rows.with_label_values(&["DoGet"]),
            self.sources.flight_rows.load(Ordering::Relaxed),
        );
        let gauge = |g: &IntGauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        // While no generation is served (withdrawn), the gauges read 0.
        let (rows, bytes, generation) = match self.sources.dataset.current() {
            Ok(d) => (
                d.num_rows() as u64,
                d.store().total_bytes() as u64,
                d.generation().number,
            ),
            Err(_) => (0, 0, 0),
        };
        gauge(&self.file_rows, rows);
        gauge(&self.file_bytes, bytes);
        gauge(&self.file_generation, generation);
    }

    /// The text exposition of every metric, refreshed.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding the metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A call of `rpc` passed the token check: count it, and hand back what
    /// its response needs to finish the count.
    pub fn start(&self, rpc: &'static str) -> CallMetrics {
        self.started.with_label_values(&[rpc]).inc();
        let active = self.active.with_label_values(&[rpc]);
        active.inc();
        CallMetrics {
            rpc,
            active,
            bytes: self.bytes.with_label_values(&[rpc]),
            finished: self.finished.clone(),
            refused: self.refused.clone(),
            resume: self.resume.clone(),
        }
    }

    /// A call refused before reaching its service (a token refusal).
    pub fn refused(&self, code: tonic::Code) {
        self.refused
            .with_label_values(&[code_name(code as i32)])
            .inc();
    }
}

/// The per-call handles ([`ServeMetrics::start`]): resolved once per call,
/// so a response frame costs one atomic add.
#[derive(Debug)]
pub struct CallMetrics {
    rpc: &'static str,
    active: IntGauge,
    /// Response bytes of this RPC.
    pub bytes: IntCounter,
    finished: IntCounterVec,
    refused: IntCounterVec,
    resume: HistogramVec,
}

impl CallMetrics {
    /// A resuming call sent its first message `seconds` after it arrived.
    pub fn resumed(&self, seconds: f64) {
        self.resume.with_label_values(&[self.rpc]).observe(seconds);
    }

    /// The call ended with `code`; `before_any_message` marks a refusal.
    pub fn finish(&self, code: i32, before_any_message: bool) {
        self.active.dec();
        let name = code_name(code);
        self.finished.with_label_values(&[self.rpc, name]).inc();
        if before_any_message && code != 0 {
            self.refused.with_label_values(&[name]).inc();
        }
    }
}

/// The `/metrics` HTTP endpoint, running until dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// The bound address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
#[error("--metrics-addr {addr}: cannot listen: {source}")]
pub struct MetricsBindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Bind `addr` and serve `metrics` at `/metrics` (every other path: 404).
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<ServeMetrics>,
) -> Result<MetricsEndpoint, MetricsBindError> {
    let bind_err = |source| MetricsBindError { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    let budget = Arc::new(Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, retry.
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = budget.clone().try_acquire_owned() else {
                continue; // over budget: the connection is closed
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = answer(&metrics, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(SCRAPE_DEADLINE, conn).await;
                drop(permit);
            });
        }
    });
    Ok(MetricsEndpoint { addr: bound, task })
}

/// The answer to one HTTP request: the exposition at `/metrics`, else 404.
fn answer<B>(metrics: &ServeMetrics, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found: try /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            rpc_name("/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding"),
            "StreamEmbedding"
        );
        assert_eq!(
            rpc_name("/arrow.flight.protocol.FlightService/DoGet"),
            "DoGet"
        );
        assert_eq!(
            rpc_name("/arrow.flight.protocol.FlightService/Nope"),
            "unknown"
        );
        assert_eq!(rpc_name("garbage"), "unknown");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        for code in 0..=16 {
            assert_eq!(
                code_name(code).replace('_', "").to_lowercase(),
                format!("{:?}", tonic::Code::from(code)).to_lowercase()
            );
        }
    }
}
