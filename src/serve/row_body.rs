//! The HTTP/2 response body of one StreamEmbedding call, produced below
//! tonic's codec (as [`super::flight_do_get`] does for DoGet) so that the
//! memory of every encoded chunk is accounted until HTTP/2 has written it.
//!
//! - Lazy: hyper polls the body for the next frame only once HTTP/2 has
//!   room for it, and only then is the next chunk planned and encoded
//!   ([`super::encode::encode_chunk`], the same bytes as prost).
//! - Budgeted: before encoding, a chunk takes a permit of its (estimated)
//!   size from the server's [`SendBudget`]; past the budget it waits, never
//!   allocating. The permit lives in the chunk's `Bytes` (made with
//!   [`Bytes::from_owner`]), so it is released only when h2 drops the bytes,
//!   i.e. after writing them to the socket.
//! - Watched: a stream holding chunks its client takes none of for
//!   `--stall-timeout` is ended by [`Stalls`]: its connection is closed,
//!   which drops every queued byte (hyper gives a body no handle on its
//!   HTTP/2 stream, so a RST_STREAM cannot be sent from here; a client that
//!   does not read would not see trailers behind the unread data anyway).

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use super::{
    conn::Connections,
    embedding::RowStream,
    encode::{encode_chunk, ChunkPlan},
    grpc_http::trailers,
    limits::{SendBudget, StreamSlot},
};
use crate::wire::{damaged, GRPC_PREFIX};

type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// One stream as the stall watchdog sees it.
#[derive(Debug)]
pub struct StreamWatch {
    peer: Option<SocketAddr>,
    /// Milliseconds since [`Stalls`] began, when the stream last handed a chunk to HTTP/2.
    last_progress: AtomicU64,
    /// Bytes of this stream's chunks not yet written.
    pinned: AtomicUsize,
    /// Set when the watchdog ended the stream.
    stalled: AtomicBool,
}

/// The stall watchdog: every running StreamEmbedding body registers here; a
/// task ends those holding unsent chunks with no progress for `timeout`.
#[derive(Debug)]
pub struct Stalls {
    timeout: Duration,
    began: Instant,
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, Arc<StreamWatch>>>,
    connections: Arc<Connections>,
}

impl Stalls {
    /// A watchdog ending streams stalled for `timeout` by closing their
    /// connection in `connections`; its task runs until the returned value is dropped.
    pub fn start(timeout: Duration, connections: Arc<Connections>) -> Arc<Stalls> {
        let stalls = Arc::new(Stalls {
            timeout,
            began: Instant::now(),
            next_id: AtomicU64::new(0),
            streams: Mutex::new(HashMap::new()),
            connections,
        });
        let weak = Arc::downgrade(&stalls);
        let tick = (timeout / 4).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match Weak::upgrade(&weak) {
                    Some(stalls) => stalls.sweep(),
                    None => return,
                }
            }
        });
        stalls
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<StreamWatch>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, peer: Option<SocketAddr>) -> (u64, Arc<StreamWatch>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let watch = Arc::new(StreamWatch {
            peer,
            last_progress: AtomicU64::new(self.now_ms()),
            pinned: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
        });
        self.lock().insert(id, watch.clone());
        (id, watch)
    }

    /// End every stream holding unsent bytes without progress for the timeout.
    fn sweep(&self) {
        let now = self.now_ms();
        let limit = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let stalled: Vec<Arc<StreamWatch>> = self
            .lock()
            .values()
            .filter(|w| {
                w.pinned.load(Ordering::SeqCst) > 0
                    && !w.stalled.load(Ordering::SeqCst)
                    && now.saturating_sub(w.last_progress.load(Ordering::SeqCst)) >= limit
            })
            .cloned()
            .collect();
        for watch in stalled {
            watch.stalled.store(true, Ordering::SeqCst);
            let pinned = watch.pinned.load(Ordering::SeqCst);
            let peer = watch
                .peer
                .map_or_else(|| "unknown".to_string(), |p| p.to_string());
            tracing::warn!(
                %peer,
                unsent_bytes = pinned,
                stall_timeout_ms = limit,
                "StreamEmbedding stalled: the client took no chunk within --stall-timeout; closing its connection to release the memory"
            );
            if let Some(peer) = watch.peer {
                self.connections.close(peer);
            }
        }
    }
}

/// The bytes of one encoded chunk: its budget permit and its share of the
/// stream's pinned count go when h2 drops the last view of it.
struct ChunkBytes {
    data: BytesMut,
    _permit: OwnedSemaphorePermit,
    watch: Arc<StreamWatch>,
}

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for ChunkBytes {
    fn drop(&mut self) {
        self.watch
            .pinned
            .fetch_sub(self.data.len(), Ordering::SeqCst);
    }
}

enum State {
    /// Ready to plan the next chunk.
    Next,
    /// Waiting for budget to encode `plan`.
    Budget { plan: ChunkPlan, acquire: Acquire },
    /// Encoded, larger than estimated, and the difference was not free:
    /// waiting for its whole size. The permit it had was given back first,
    /// so that no stream holds budget while waiting for more (two such
    /// streams could otherwise wait for each other forever); until then
    /// this one chunk is not counted.
    TopUp { data: BytesMut, acquire: Acquire },
    /// Trailers sent.
    Done,
}

/// The response body of one StreamEmbedding call (see the module documentation).
pub struct RowChunkBody {
    rows: RowStream,
    budget: Arc<SendBudget>,
    stalls: Arc<Stalls>,
    id: u64,
    watch: Arc<StreamWatch>,
    /// Budget asked for the next chunk: the previous one's size plus an eighth.
    estimate: usize,
    state: State,
    _slot: StreamSlot,
}

impl RowChunkBody {
    /// The body streaming `rows`; the first chunk is estimated at `first_estimate` bytes.
    pub fn new(
        rows: RowStream,
        budget: Arc<SendBudget>,
        stalls: Arc<Stalls>,
        peer: Option<SocketAddr>,
        first_estimate: usize,
        slot: StreamSlot,
    ) -> Self {
        let (id, watch) = stalls.register(peer);
        RowChunkBody {
            rows,
            budget,
            stalls,
            id,
            watch,
            estimate: first_estimate,
            state: State::Next,
            _slot: slot,
        }
    }

    fn end(&mut self, status: &Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.state = State::Done;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(status)))))
    }

    /// Encode `plan` under `permit`; the frame, or the state to wait in.
    fn encode(
        &mut self,
        plan: &ChunkPlan,
        permit: OwnedSemaphorePermit,
    ) -> Result<Result<Bytes, State>, Status> {
        let mut data = BytesMut::with_capacity(permit.num_permits().max(GRPC_PREFIX));
        data.put_bytes(0, GRPC_PREFIX);
        let len = encode_chunk(plan.dataset.table(), plan.start, plan.end, &mut data)
            .map_err(|e| damaged(&e))?;
        let len32 = u32::try_from(len).map_err(|_| {
            Status::resource_exhausted(format!(
                "a RowChunk of {len} bytes exceeds gRPC's 4 GiB message limit"
            ))
        })?;
        data[1..GRPC_PREFIX].copy_from_slice(&len32.to_be_bytes());
        self.estimate = len.saturating_add(len / 8);
        self.settle(data, permit)
    }

    /// Match `permit` to the chunk's real size: give back the surplus, or
    /// wait for the missing part before the bytes go out.
    fn settle(
        &mut self,
        data: BytesMut,
        mut permit: OwnedSemaphorePermit,
    ) -> Result<Result<Bytes, State>, Status> {
        let size = data.len();
        let held = permit.num_permits();
        let want = self.budget.request(size) as usize;
        if held > want {
            drop(permit.split(held - want));
        } else if want > held {
            let missing = self.budget.request(want - held);
            match self.budget.try_acquire(missing) {
                Some(more) => permit.merge(more),
                None => {
                    drop(permit);
                    tracing::debug!(
                        size,
                        held,
                        "chunk larger than its estimate: waiting for its whole size"
                    );
                    return Ok(Err(State::TopUp {
                        data,
                        acquire: Box::pin(self.budget.acquire(self.budget.request(size))),
                    }));
                }
            }
        }
        self.watch.pinned.fetch_add(size, Ordering::SeqCst);
        self.watch
            .last_progress
            .store(self.stalls.now_ms(), Ordering::SeqCst);
        Ok(Ok(Bytes::from_owner(ChunkBytes {
            data,
            _permit: permit,
            watch: self.watch.clone(),
        })))
    }
}

impl Drop for RowChunkBody {
    fn drop(&mut self) {
        if self.watch.stalled.load(Ordering::SeqCst) {
            self.rows.mark_stalled();
        }
        self.stalls.lock().remove(&self.id);
    }
}

impl http_body::Body for RowChunkBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            let step = match std::mem::replace(&mut this.state, State::Next) {
                State::Done => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::TopUp { data, mut acquire } => match acquire.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::TopUp { data, acquire };
                        return Poll::Pending;
                    }
                    Poll::Ready(None) => {
                        return this.end(&Status::internal("the send budget was closed"))
                    }
                    Poll::Ready(Some(permit)) => this.settle(data, permit),
                },
                State::Budget { plan, mut acquire } => match acquire.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::Budget { plan, acquire };
                        return Poll::Pending;
                    }
                    Poll::Ready(None) => {
                        return this.end(&Status::internal("the send budget was closed"))
                    }
                    Poll::Ready(Some(permit)) => this.encode(&plan, permit),
                },
                State::Next => match Pin::new(&mut this.rows).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return this.end(&Status::ok("")),
                    Poll::Ready(Some(Err(status))) => return this.end(&status),
                    Poll::Ready(Some(Ok(plan))) => {
                        let n = this.budget.request(this.estimate);
                        match this.budget.try_acquire(n) {
                            Some(permit) => this.encode(&plan, permit),
                            None => Ok(Err(State::Budget {
                                plan,
                                acquire: Box::pin(this.budget.acquire(n)),
                            })),
                        }
                    }
                },
            };
            match step {
                Ok(Ok(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Ok(Err(state)) => this.state = state,
                Err(status) => {
                    tracing::error!(message = status.message(), "StreamEmbedding ended");
                    return this.end(&status);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}
