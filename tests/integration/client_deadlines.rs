//! `upload` and `stream` never wait forever (issue 10 item 2): against a
//! silent TCP listener, a server that sends SETTINGS and goes quiet, an
//! upload receiver that reads everything and never answers, and a
//! StreamEmbedding server that never sends a chunk, each call ends with
//! DEADLINE_EXCEEDED naming the deadline. The deadlines are short here; the
//! only time bound is a generous guard against a hang.

use crate::common;

use std::{net::SocketAddr, path::Path, time::Duration};

use embedstream::{
    client::{
        deadline::Timeouts,
        stream::{pull, StreamError, StreamOptions},
        upload::{upload, UploadError, UploadOptions},
    },
    progress::ProgressMode,
    proto::{
        embedding_stream_service_server::{EmbeddingStreamService, EmbeddingStreamServiceServer},
        IngestDataRequest, IngestDataResponse, RowChunk, StreamEmbeddingRequest, PACKAGE,
    },
    rows::RowMapping,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status, Streaming};

/// A generous bound, only so that a hang fails instead of blocking the run.
const HANG_GUARD: Duration = Duration::from_secs(120);

const SHORT: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    idle: Duration::from_millis(300),
};

/// How a fake peer misbehaves.
#[derive(Debug, Clone, Copy)]
enum Quiet {
    /// Accepts, never reads or writes.
    Silent,
    /// Sends an empty SETTINGS frame, then reads everything and never answers.
    SettingsThenQuiet,
}

async fn quiet_peer(kind: Quiet) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            match kind {
                Quiet::Silent => held.push(socket),
                Quiet::SettingsThenQuiet => {
                    tokio::spawn(async move {
                        // Length 0, type SETTINGS (4), no flags, stream 0.
                        let _ = socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                        let mut sink = vec![0u8; 1 << 16];
                        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                    });
                }
            }
        }
    });
    addr
}

/// An IngestDataStream receiver that reads every message and never
/// answers; a StreamEmbedding that sends headers and never a chunk.
#[derive(Clone)]
struct Mute;

#[tonic::async_trait]
impl EmbeddingStreamService for Mute {
    type StreamEmbeddingStream = futures::stream::Pending<Result<RowChunk, Status>>;

    async fn stream_embedding(
        &self,
        _request: Request<StreamEmbeddingRequest>,
    ) -> Result<Response<Self::StreamEmbeddingStream>, Status> {
        Ok(Response::new(futures::stream::pending()))
    }

    async fn ingest_data_stream(
        &self,
        request: Request<Streaming<IngestDataRequest>>,
    ) -> Result<Response<IngestDataResponse>, Status> {
        let mut stream = request.into_inner();
        while stream.message().await?.is_some() {}
        futures::future::pending::<()>().await;
        Err(Status::internal("unreachable"))
    }
}

async fn mute_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EmbeddingStreamServiceServer::new(Mute))
            .serve_with_incoming(incoming),
    );
    addr
}

fn upload_options(file: &Path, to: SocketAddr) -> UploadOptions {
    UploadOptions {
        file: file.to_path_buf(),
        to: to.to_string(),
        domain: "recruit".into(),
        chunk_size: 7,
        max_attempts: 2,
        service_package: PACKAGE.into(),
        key_column: None,
        mapping: RowMapping::default(),
        initial_backoff: Duration::from_millis(10),
        progress: ProgressMode::Hidden,
        timeouts: SHORT,
        secure: embedstream::client::secure::SecureClient::plaintext(),
    }
}

fn stream_options(server: SocketAddr) -> StreamOptions {
    StreamOptions {
        server: server.to_string(),
        checkpoint: None,
        chunk_size: 300,
        out: None,
        force: false,
        flight: false,
        progress: ProgressMode::Hidden,
        timeouts: SHORT,
        secure: embedstream::client::secure::SecureClient::plaintext(),
    }
}

/// The upload fails after every attempt hit a deadline; the last message.
async fn upload_times_out(to: SocketAddr) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.arrow");
    common::write_sample_file(&file, 50, 5, 8);
    let result = tokio::time::timeout(HANG_GUARD, upload(&upload_options(&file, to)))
        .await
        .expect("upload returns");
    match result {
        Err(UploadError::RetriesExhausted {
            attempts,
            code,
            message,
            ..
        }) => {
            assert_eq!(attempts, 2, "every attempt was made: {message}");
            assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
            message
        }
        other => panic!("{other:?}"),
    }
}

fn names_a_deadline(message: &str) {
    assert!(
        message.contains("(--idle-timeout)") || message.contains("(--connect-timeout)"),
        "{message}"
    );
}

#[tokio::test]
async fn upload_to_a_silent_listener_times_out() {
    let message = upload_times_out(quiet_peer(Quiet::Silent).await).await;
    names_a_deadline(&message);
}

#[tokio::test]
async fn upload_to_a_server_that_goes_quiet_times_out() {
    let message = upload_times_out(quiet_peer(Quiet::SettingsThenQuiet).await).await;
    names_a_deadline(&message);
}

#[tokio::test]
async fn upload_to_a_receiver_that_never_answers_times_out() {
    let message = upload_times_out(mute_server().await).await;
    assert!(
        message.starts_with(
            "every row was sent (8 chunks); waiting for the receiver's response: nothing for 300ms (--idle-timeout)"
        ),
        "{message}"
    );
}

async fn stream_times_out(server: SocketAddr, flight: bool) -> String {
    let mut opts = stream_options(server);
    opts.flight = flight;
    let result = tokio::time::timeout(HANG_GUARD, pull(&opts))
        .await
        .expect("stream returns");
    match result {
        Err(StreamError::Rpc {
            code,
            message,
            rows,
            ..
        }) => {
            assert_eq!(code, tonic::Code::DeadlineExceeded, "{message}");
            assert_eq!(rows, 0);
            names_a_deadline(&message);
            message
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stream_from_a_silent_listener_times_out() {
    for flight in [false, true] {
        stream_times_out(quiet_peer(Quiet::Silent).await, flight).await;
    }
}

#[tokio::test]
async fn stream_from_a_server_that_goes_quiet_times_out() {
    for flight in [false, true] {
        stream_times_out(quiet_peer(Quiet::SettingsThenQuiet).await, flight).await;
    }
}

#[tokio::test]
async fn stream_that_never_sends_a_chunk_times_out() {
    let message = stream_times_out(mute_server().await, false).await;
    assert!(
        message.starts_with("waiting for the next chunk: nothing for 300ms (--idle-timeout)"),
        "{message}"
    );
}
