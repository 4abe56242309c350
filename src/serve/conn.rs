//! Accepting connections: a connection is handed to the gRPC server only
//! once it has sent the 24-byte HTTP/2 client preface (or the first bytes
//! of a TLS handshake, for a TLS layer above) within the handshake timeout;
//! one that stays silent or sends something else is closed. Each accepted
//! socket is wrapped in a [`ConnIo`] registered in [`Connections`], so that
//! a stream stalled past its deadline can have its connection closed (the
//! only way to drop data HTTP/2 queued for a peer that does not read: hyper
//! gives a response body no handle on its stream).
//!
//! With TLS ([`incoming_tls`]), the TLS handshake follows, also within the
//! handshake timeout, and the gRPC server gets the TLS stream over the
//! [`ConnIo`].
//!
//! [`ActivityLayer`] counts each connection's open requests; a connection
//! with none for `--idle-connection-timeout` is closed
//! ([`Connections::close_idle_after`]).

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{task::AtomicWaker, Future};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    body::Body,
    codegen::{http, BoxFuture, Service},
    transport::server::{Connected, TcpConnectInfo},
};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The open connections, by peer address.
#[derive(Debug)]
pub struct Connections {
    open: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
    began: Instant,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            open: Mutex::new(HashMap::new()),
            began: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
struct ConnState {
    killed: AtomicBool,
    waker: AtomicWaker,
    /// Requests open on the connection.
    active: AtomicUsize,
    /// When the last request ended (ms since [`Connections::began`]).
    idle_since: AtomicU64,
}

/// One open request on a connection; the connection is idle again when the
/// last one is dropped.
#[derive(Debug)]
pub struct ActiveRequest {
    state: Arc<ConnState>,
    connections: Arc<Connections>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.state
            .idle_since
            .store(self.connections.now_ms(), Ordering::SeqCst);
        self.state.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connections {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Count a request on the connection from `peer` until the guard drops.
    pub fn enter(self: &Arc<Self>, peer: SocketAddr) -> Option<ActiveRequest> {
        let state = self.lock().get(&peer).cloned()?;
        state.active.fetch_add(1, Ordering::SeqCst);
        Some(ActiveRequest {
            state,
            connections: self.clone(),
        })
    }

    /// Close, from now on, every connection without a request for `timeout`.
    pub fn close_idle_after(self: &Arc<Self>, timeout: Duration) {
        let weak = Arc::downgrade(self);
        let tick = (timeout / 4).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(connections) = Weak::upgrade(&weak) else {
                    return;
                };
                let now = connections.now_ms();
                let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                let idle: Vec<SocketAddr> = connections
                    .lock()
                    .iter()
                    .filter(|(_, s)| {
                        s.active.load(Ordering::SeqCst) == 0
                            && now.saturating_sub(s.idle_since.load(Ordering::SeqCst)) >= limit
                    })
                    .map(|(peer, _)| *peer)
                    .collect();
                for peer in idle {
                    tracing::debug!(%peer, "closing a connection idle for --idle-connection-timeout");
                    connections.close(peer);
                }
            }
        });
    }

    /// Close the connection from `peer`, if open: its next read or write
    /// fails, so the HTTP/2 server drops it with all its streams and their
    /// queued bytes. Whether it was open.
    pub fn close(&self, peer: SocketAddr) -> bool {
        let state = self.lock().get(&peer).cloned();
        match state {
            Some(state) => {
                state.killed.store(true, Ordering::SeqCst);
                state.waker.wake();
                true
            }
            None => false,
        }
    }

    /// Connections accepted and not yet closed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<ConnState>>> {
        // A poisoned map is still a valid map (every update is one call).
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An accepted socket as the gRPC server sees it.
#[derive(Debug)]
pub struct ConnIo {
    inner: TcpStream,
    peer: Option<SocketAddr>,
    state: Arc<ConnState>,
    registry: Arc<Connections>,
}

impl ConnIo {
    fn new(inner: TcpStream, registry: Arc<Connections>) -> Self {
        let peer = inner.peer_addr().ok();
        let state = Arc::new(ConnState::default());
        state.idle_since.store(registry.now_ms(), Ordering::SeqCst);
        if let Some(peer) = peer {
            registry.lock().insert(peer, state.clone());
        }
        ConnIo {
            inner,
            peer,
            state,
            registry,
        }
    }

    fn closed(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed by the server (a stream stalled past --stall-timeout, or the connection was idle past --idle-connection-timeout)",
        )
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            let mut open = self.registry.lock();
            if open.get(&peer).is_some_and(|s| Arc::ptr_eq(s, &self.state)) {
                open.remove(&peer);
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Registered before the check, so a close between the two wakes us.
        self.state.waker.register(cx.waker());
        if self.state.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(self.closed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(self.closed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(self.closed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for ConnIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

/// Whether the connection opened as HTTP/2 (or TLS) within the caller's
/// deadline: peeks, so the bytes stay for the server.
async fn opens_http2(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if buf[0] == TLS_HANDSHAKE {
            return Ok(true);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface arrived: peek again once more may have come.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Accept connections from `listener` until the returned stream is dropped
/// (the server stopped): each one that opens HTTP/2 within
/// `handshake_timeout` is registered in `registry` and yielded.
pub fn incoming(
    listener: TcpListener,
    registry: Arc<Connections>,
    handshake_timeout: Duration,
) -> ReceiverStream<io::Result<ConnIo>> {
    accept(
        listener,
        registry,
        handshake_timeout,
        |io| async move { Ok(io) },
    )
}

/// [`incoming`] over TLS: each connection that starts a TLS handshake
/// within `handshake_timeout` and completes it within `handshake_timeout`
/// more is yielded as a TLS stream, with a send buffer of
/// [`super::tls::TLS_SEND_BUFFER`].
pub fn incoming_tls(
    listener: TcpListener,
    registry: Arc<Connections>,
    handshake_timeout: Duration,
    acceptor: TlsAcceptor,
) -> ReceiverStream<io::Result<TlsStream<ConnIo>>> {
    accept(listener, registry, handshake_timeout, move |io| {
        let acceptor = acceptor.clone();
        async move {
            let mut tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(io)).await {
                Ok(accepted) => accepted?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no TLS handshake within --handshake-timeout",
                    ))
                }
            };
            tls.get_mut()
                .1
                .set_buffer_limit(Some(super::tls::TLS_SEND_BUFFER));
            Ok(tls)
        }
    })
}

/// The accept loop of [`incoming`] and [`incoming_tls`]: `wrap` turns an
/// accepted connection into what the server is given (a failure drops the
/// connection, logged at debug).
fn accept<T, F, Fut>(
    listener: TcpListener,
    registry: Arc<Connections>,
    handshake_timeout: Duration,
    wrap: F,
) -> ReceiverStream<io::Result<T>>
where
    T: Send + 'static,
    F: Fn(ConnIo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<T>>(16);
    let wrap = Arc::new(wrap);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let tx = tx.clone();
            let registry = registry.clone();
            let wrap = wrap.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                match tokio::time::timeout(handshake_timeout, opens_http2(&stream)).await {
                    Ok(Ok(true)) => match wrap(ConnIo::new(stream, registry)).await {
                        Ok(io) => {
                            let _ = tx.send(Ok(io)).await;
                        }
                        Err(e) => tracing::debug!(%peer, "connection closed: {e}"),
                    },
                    Ok(Ok(false)) => {
                        tracing::debug!(%peer, "connection closed: it did not open HTTP/2")
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "connection failed before HTTP/2: {e}"),
                    Err(_) => tracing::info!(
                        %peer,
                        timeout_ms = handshake_timeout.as_millis() as u64,
                        "connection closed: no HTTP/2 preface within --handshake-timeout"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Counts each connection's open requests (see [`Connections::enter`]):
/// a request is open from its arrival until its response body is dropped.
#[derive(Debug, Clone)]
pub struct ActivityLayer {
    connections: Arc<Connections>,
}

impl ActivityLayer {
    /// Count requests on `connections`.
    pub fn new(connections: Arc<Connections>) -> Self {
        ActivityLayer { connections }
    }
}

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity {
            inner,
            connections: self.connections.clone(),
        }
    }
}

/// The service [`ActivityLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct Activity<S> {
    inner: S,
    connections: Arc<Connections>,
}

impl<S, B> Service<http::Request<B>> for Activity<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = super::grpc_http::peer_addr(&req).and_then(|peer| self.connections.enter(peer));
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| {
                    Body::new(Counted {
                        inner: body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body that keeps its request counted until dropped.
struct Counted {
    inner: Body,
    _guard: ActiveRequest,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
