//! `embedding.EmbeddingStreamService/StreamEmbedding`, answered below
//! tonic's codec: the request is read by [`super::grpc_http::read_request`],
//! the response is a lazy [`RowStream`] of [`ChunkPlan`]s that
//! [`RowChunkBody`] encodes only when hyper asks for more body (so HTTP/2
//! flow control bounds what is buffered) and within the server's send
//! budget, and that is dropped — which stops all work — as soon as the
//! client cancels.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use futures::Stream;
use tonic::{
    codegen::{http, Body, BoxFuture, Service, StdError},
    server::NamedService,
    Status,
};

use super::{
    encode::ChunkPlan,
    grpc_http::{grpc_response, peer_addr, read_request, RequestKind},
    limits::{SendBudget, StreamSlots},
    row_body::{RowChunkBody, Stalls},
};
pub use crate::dataset::ChunkLimits;
use crate::{
    dataset::{Dataset, LiveDataset},
    proto::StreamEmbeddingRequest,
    wire::{self, damaged, row_size_bound},
};

/// Full name of the canonical service.
pub const SERVICE_NAME: &str = "embedding.EmbeddingStreamService";
const STREAM_PATH: &str = "/embedding.EmbeddingStreamService/StreamEmbedding";
const INGEST_PATH: &str = "/embedding.EmbeddingStreamService/IngestDataStream";

/// Longest `last_processed_uuid` echoed back in an error message.
const ECHO_LIMIT: usize = 64;

/// Counters shared by all streams, readable by tests and the shutdown path.
#[derive(Debug, Default)]
pub struct StreamStats {
    active: AtomicUsize,
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    rows: AtomicU64,
}

impl StreamStats {
    /// Streams currently open.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
    /// Streams accepted since start.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
    /// Streams that sent their last row.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    /// Streams dropped before their last row (client cancel, shutdown, a
    /// damaged batch).
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
    /// Rows handed to the encoder since start.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::SeqCst)
    }
}

/// State shared by every request.
#[derive(Debug)]
struct Shared {
    /// The served data set; each request takes one snapshot at its start.
    dataset: Arc<LiveDataset>,
    stats: Arc<StreamStats>,
    /// Set when the grace period is over: open streams end at their next chunk.
    stop: Arc<AtomicBool>,
    limits: StreamLimits,
}

/// What bounds the service's streams: shared with the server (and, for the
/// slots, with Flight DoGet).
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// `--max-concurrent-streams`.
    pub slots: StreamSlots,
    /// `--send-budget`.
    pub budget: Arc<SendBudget>,
    /// `--stall-timeout`.
    pub stalls: Arc<Stalls>,
}

/// The StreamEmbedding service: a small struct over the live data set.
#[derive(Debug, Clone)]
pub struct EmbeddingService {
    shared: Arc<Shared>,
}

impl EmbeddingService {
    /// A service over `dataset` within `limits`; `stop` ends open streams when set.
    pub fn new(
        dataset: Arc<LiveDataset>,
        stats: Arc<StreamStats>,
        stop: Arc<AtomicBool>,
        limits: StreamLimits,
    ) -> Self {
        EmbeddingService {
            shared: Arc::new(Shared {
                dataset,
                stats,
                stop,
                limits,
            }),
        }
    }

    /// Resolve a request into (first row, rows per chunk), or the status to refuse it with.
    pub fn plan(&self, req: &StreamEmbeddingRequest) -> Result<(usize, usize), Status> {
        plan(&*self.shared.dataset.current()?, req)
    }
}

/// Validate a request against one snapshot of the data set: resume row and chunk size.
fn plan(dataset: &Dataset, req: &StreamEmbeddingRequest) -> Result<(usize, usize), Status> {
    let limits = dataset.limits();
    let chunk = match req.chunk_size {
        0 => limits.default,
        n => match usize::try_from(n) {
            Ok(n) if n <= limits.max => n,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "chunk_size {n} is out of range: use 1..={} (a larger chunk would not fit the {} MiB message limit), or 0 for the default ({})",
                    limits.max,
                    limits.max_message_bytes / (1024 * 1024),
                    limits.default
                )))
            }
        },
    };
    let start = if req.last_processed_uuid.is_empty() {
        0
    } else {
        let text = &req.last_processed_uuid;
        match wire::parse_checkpoint(text) {
            Ok(id) => dataset.store().position_after(id.as_bytes()),
            Err(e) => {
                let shown: String = text.chars().take(ECHO_LIMIT).collect();
                let more = if shown.len() < text.len() { "…" } else { "" };
                return Err(Status::invalid_argument(format!(
                    "last_processed_uuid `{shown}{more}` is {e}; send the id of the last row you stored, or an empty string to start from the first row"
                )));
            }
        }
    };
    Ok((start, chunk))
}

/// The lazy response: yields one [`ChunkPlan`] per poll until the end of the
/// file; logs a summary when dropped (completed, cancelled or stopped).
#[derive(Debug)]
pub struct RowStream {
    shared: Arc<Shared>,
    /// The generation this stream reads, from its first chunk to its last.
    dataset: Arc<Dataset>,
    peer: String,
    first: usize,
    next: usize,
    chunk: usize,
    chunks: u64,
    began: Instant,
    finished: bool,
    stopped: bool,
    /// Set when the stream reached a batch that cannot be decoded.
    failed: bool,
    /// Set when the stall watchdog ended the stream.
    stalled: bool,
}

impl RowStream {
    fn new(
        shared: Arc<Shared>,
        dataset: Arc<Dataset>,
        peer: String,
        first: usize,
        chunk: usize,
    ) -> Self {
        shared.stats.active.fetch_add(1, Ordering::SeqCst);
        shared.stats.started.fetch_add(1, Ordering::SeqCst);
        RowStream {
            shared,
            dataset,
            peer,
            first,
            next: first,
            chunk,
            chunks: 0,
            began: Instant::now(),
            finished: false,
            stopped: false,
            failed: false,
            stalled: false,
        }
    }
}

impl Stream for RowStream {
    type Item = Result<ChunkPlan, Status>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished || this.stopped || this.failed {
            return Poll::Ready(None);
        }
        if this.shared.stop.load(Ordering::SeqCst) {
            this.stopped = true;
            return Poll::Ready(Some(Err(Status::unavailable(format!(
                "the server is shutting down; resume after the last id you stored (next row: {})",
                this.next
            )))));
        }
        // A generation revoked (its file opened for writing) ends here,
        // before its bytes are read again.
        if let Err(status) = this.dataset.intact() {
            this.failed = true;
            tracing::warn!(peer = %this.peer, next_row = this.next, "StreamEmbedding ended: {}", status.message());
            return Poll::Ready(Some(Err(status)));
        }
        let total = this.dataset.num_rows();
        if this.next >= total {
            this.finished = true;
            return Poll::Ready(None);
        }
        let end = this.next.saturating_add(this.chunk).min(total);
        // Decode the chunk's batches here (a no-op once cached), so that a
        // damaged one ends the stream with DATA_LOSS after every chunk before
        // it has gone out, rather than failing inside the encoder.
        if let Err(e) = this
            .dataset
            .table()
            .for_segments(this.next, end, |_, _, _| ())
        {
            this.failed = true;
            tracing::error!(peer = %this.peer, next_row = this.next, "StreamEmbedding ended: {e}");
            return Poll::Ready(Some(Err(damaged(&e))));
        }
        let plan = ChunkPlan {
            dataset: this.dataset.clone(),
            start: this.next,
            end,
        };
        this.shared
            .stats
            .rows
            .fetch_add((end - this.next) as u64, Ordering::Relaxed);
        this.next = end;
        this.chunks += 1;
        Poll::Ready(Some(Ok(plan)))
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        let stats = &self.shared.stats;
        stats.active.fetch_sub(1, Ordering::SeqCst);
        let outcome = if self.finished {
            stats.completed.fetch_add(1, Ordering::SeqCst);
            "completed"
        } else {
            stats.cancelled.fetch_add(1, Ordering::SeqCst);
            if self.failed {
                "ended by a damaged or rewritten file"
            } else if self.stalled {
                "ended: stalled past --stall-timeout"
            } else if self.stopped {
                "stopped by shutdown"
            } else {
                "cancelled by client"
            }
        };
        tracing::info!(
            peer = %self.peer,
            start_row = self.first,
            rows = self.next - self.first,
            chunks = self.chunks,
            chunk_size = self.chunk,
            elapsed_ms = self.began.elapsed().as_secs_f64() * 1e3,
            outcome,
            "StreamEmbedding finished"
        );
    }
}

impl RowStream {
    /// Log this stream as ended by the stall watchdog.
    pub(super) fn mark_stalled(&mut self) {
        self.stalled = true;
    }
}

/// How StreamEmbedding refusals name the call and its message.
const REQUEST: RequestKind = RequestKind {
    rpc: "StreamEmbedding",
    message: "StreamEmbeddingRequest",
};

/// Answer one StreamEmbedding call over `dataset` (the snapshot taken when
/// it arrived): read and check the request, then stream its chunks in a
/// [`RowChunkBody`]. Refusals are trailers-only responses.
async fn stream_embedding<B>(
    shared: Arc<Shared>,
    dataset: Arc<Dataset>,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let peer_addr = peer_addr(&req);
    let peer = peer_addr.map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let refuse = |status: Status| {
        tracing::info!(%peer, code = ?status.code(), message = status.message(), "StreamEmbedding refused");
        status.into_http()
    };
    let slot = match shared.limits.slots.try_acquire("StreamEmbedding") {
        Ok(slot) => slot,
        Err(status) => return refuse(status),
    };
    let body = Box::pin(req.into_body());
    let request = match read_request::<StreamEmbeddingRequest, _>(body, REQUEST).await {
        Ok(request) => request,
        Err(status) => return refuse(status),
    };
    let (first, chunk) = match plan(&dataset, &request) {
        Ok(planned) => planned,
        Err(status) => return refuse(status),
    };
    tracing::debug!(%peer, first, chunk, "StreamEmbedding started");
    let limits = dataset.limits();
    // The first chunk's budget: a bound for rows whose strings are short;
    // later chunks ask for the previous one's size plus an eighth.
    let first_estimate = chunk
        .saturating_mul(row_size_bound(dataset.vector_dim(), 64))
        .min(limits.max_message_bytes)
        .saturating_add(wire::GRPC_PREFIX);
    let rows = RowStream::new(shared.clone(), dataset, peer, first, chunk);
    let body = RowChunkBody::new(
        rows,
        shared.limits.budget.clone(),
        shared.limits.stalls.clone(),
        peer_addr,
        first_estimate,
        slot,
    );
    let resume = !request.last_processed_uuid.is_empty();
    let mut response = grpc_response(tonic::body::Body::new(body));
    if resume {
        // The metrics guard times a resume's first chunk.
        response.extensions_mut().insert(super::metrics::Resume);
    }
    response
}

impl<B> Service<http::Request<B>> for EmbeddingService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            STREAM_PATH => {
                let shared = self.shared.clone();
                // The one snapshot this call uses, from its request to its last chunk.
                let dataset = shared.dataset.current();
                Box::pin(async move {
                    let dataset = match dataset {
                        Ok(dataset) => dataset,
                        Err(status) => return Ok(status.into_http()),
                    };
                    Ok(stream_embedding(shared, dataset, req).await)
                })
            }
            INGEST_PATH => Box::pin(async {
                Ok(Status::unimplemented(
                    "IngestDataStream is the Batch Server's RPC: embedstream does not accept uploads (use `embedstream upload` to send rows to a Batch Server)",
                )
                .into_http())
            }),
            path => {
                let message = format!("no method {path} on {SERVICE_NAME}");
                Box::pin(async move { Ok(Status::unimplemented(message).into_http()) })
            }
        }
    }
}

impl NamedService for EmbeddingService {
    const NAME: &'static str = SERVICE_NAME;
}
