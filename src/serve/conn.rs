//! Accepting connections: a connection is handed to the gRPC server only
//! once it has sent the 24-byte HTTP/2 client preface (or the first bytes
//! of a TLS handshake, for a TLS layer above) within the handshake timeout;
//! one that stays silent or sends something else is closed. Each accepted
//! socket is wrapped in a [`ConnIo`] registered in [`Connections`], so that
//! a stream stalled past its deadline can have its connection closed (the
//! only way to drop data HTTP/2 queued for a peer that does not read: hyper
//! gives a response body no handle on its stream).

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The open connections, by peer address.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
}

#[derive(Debug, Default)]
struct ConnState {
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl Connections {
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
            "closed by the server: a stream on it stalled past --stall-timeout",
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
    let (tx, rx) = mpsc::channel::<io::Result<ConnIo>>(16);
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
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                match tokio::time::timeout(handshake_timeout, opens_http2(&stream)).await {
                    Ok(Ok(true)) => {
                        let _ = tx.send(Ok(ConnIo::new(stream, registry))).await;
                    }
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
