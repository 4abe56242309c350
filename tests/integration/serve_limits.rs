//! `serve` under hostile or careless clients: the StreamEmbedding request
//! contract, the concurrency limit, the HTTP/2 handshake deadline, and the
//! send budget held by streams whose clients never read (issue 10 items 3
//! and 8, issue 11 point 5).

use std::time::Duration;

use arrow_flight::{FlightClient, Ticket};
use embedstream::{
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, StreamEmbeddingRequest,
    },
    serve::Server,
};
use futures::TryStreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{transport::Channel, Code};

use crate::serve_e2e::{channel, eventually, grpc_message, raw_call, start_with};

const STREAM_PATH: &str = "/embedding.EmbeddingStreamService/StreamEmbedding";
/// A generous bound, only so that a hang fails instead of blocking the run.
const HANG_GUARD: Duration = Duration::from_secs(120);

async fn client(channel: Channel) -> EmbeddingStreamServiceClient<Channel> {
    EmbeddingStreamServiceClient::new(channel).max_decoding_message_size(usize::MAX)
}

fn request(chunk_size: i32) -> StreamEmbeddingRequest {
    StreamEmbeddingRequest {
        last_processed_uuid: String::new(),
        chunk_size,
    }
}

#[tokio::test]
async fn stream_embedding_request_contract() {
    use prost::Message;

    let (_dir, server) = start_with(100, 4, 50, |_| {}).await;
    let mut huge = vec![0, 0, 0x10, 0, 0];
    huge.extend([b'a'; 1000]);
    for (what, body, code, message) in [
        (
            "no message",
            Vec::new(),
            Code::InvalidArgument,
            "the StreamEmbedding request carries no StreamEmbeddingRequest message",
        ),
        (
            "declared 1 MiB",
            huge,
            Code::ResourceExhausted,
            "the StreamEmbedding request message is 1048576 bytes; a StreamEmbeddingRequest may have at most 65536",
        ),
        (
            "garbage",
            grpc_message(&[0xff, 0xff, 0xff]),
            Code::InvalidArgument,
            "the StreamEmbedding request is not a StreamEmbeddingRequest",
        ),
    ] {
        let (status, data) = raw_call(&server, STREAM_PATH, body).await;
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().starts_with(message),
            "{what}: {}",
            status.message()
        );
        assert!(data.is_empty(), "{what}");
    }
    // A well-formed raw request streams every row and ends with status 0.
    let (status, data) = raw_call(
        &server,
        STREAM_PATH,
        grpc_message(&request(7).encode_to_vec()),
    )
    .await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(data.len() > 100 * 4 * 4);

    // Through tonic: a 1 MB request is RESOURCE_EXHAUSTED, as on Flight.
    let mut c = client(channel(&server).await).await;
    let err = c
        .stream_embedding(StreamEmbeddingRequest {
            last_processed_uuid: "x".repeat(1 << 20),
            chunk_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err
        .message()
        .starts_with("the StreamEmbedding request message is "));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_concurrency_limit_refuses_at_once() {
    // Rows enough that a stream that is not read stays open.
    let (_dir, server) = start_with(20_000, 64, 1000, |config| {
        config.limits.max_concurrent_streams = 2;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = client(channel(&server).await).await;
        held.push(c.stream_embedding(request(1)).await.unwrap().into_inner());
    }
    assert_eq!(server.streams_in_use(), 2);
    let mut c = client(channel(&server).await).await;
    let err = c.stream_embedding(request(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "StreamEmbedding refused: 2 data streams are running, the server's limit (--max-concurrent-streams); retry later"
    );
    // Flight DoGet counts against the same limit.
    let mut flight = FlightClient::new(channel(&server).await);
    let err = match flight.do_get(Ticket::new("all")).await {
        Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
        Err(e) => e,
    };
    let arrow_flight::error::FlightError::Tonic(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status
        .message()
        .starts_with("Flight DoGet refused: 2 data streams"));
    // Ending one stream frees its place.
    held.pop();
    eventually("the dropped stream frees its place", || {
        server.streams_in_use() == 1
    })
    .await;
    let mut again = c.stream_embedding(request(1)).await.unwrap().into_inner();
    assert_eq!(again.message().await.unwrap().unwrap().rows.len(), 1);
    drop(again);
    drop(held);
    server.shutdown().await.unwrap();
}

/// Read until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    got
}

#[tokio::test]
async fn connections_without_the_http2_preface_are_closed() {
    let (_dir, server) = start_with(10, 4, 10, |config| {
        config.limits.handshake_timeout = Duration::from_millis(200);
    })
    .await;
    let addr = server.local_addr();
    // Silent: closed after the handshake timeout, having received nothing.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(read_to_close(&mut silent).await.is_empty());
    // Half a preface, then silence.
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(read_to_close(&mut half).await.is_empty());
    // Not HTTP/2 at all.
    let mut http1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut http1).await.is_empty());
    // A real client is served.
    let mut c = client(channel(&server).await).await;
    let mut s = c.stream_embedding(request(0)).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().rows.len(), 10);
    server.shutdown().await.unwrap();
}

/// This process's anonymous resident memory, in bytes (Linux).
fn rss_anon() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon in /proc/self/status");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_budget_bounds_streams_that_never_read() {
    const STREAMS: usize = 20;
    const BUDGET: usize = 32 << 20;
    const MESSAGE: usize = 16 << 20;
    // 10,000 rows of 384-d vectors: one maximum chunk (about 15 MB) each.
    let (_dir, server) = start_with(10_000, 384, 2_000, |config| {
        config.max_message_bytes = MESSAGE;
        config.limits.send_budget = BUDGET;
        config.limits.stall_timeout = Duration::from_secs(1);
    })
    .await;
    let budget = server.send_budget().clone();
    assert_eq!(budget.total(), BUDGET);
    // Chunks above 1 MiB are mapped and unmapped by malloc, so RssAnon
    // follows what is held: glibc's default dynamic threshold would keep
    // freed 16 MiB chunks in its arenas, which is the allocator's cache, not
    // memory the server holds.
    // SAFETY: mallopt only changes malloc's tuning; it takes malloc's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    // One full read first, so that the decoded batches (cached for the
    // server's life) are in the baseline.
    let mut warm = client(channel(&server).await).await;
    let mut s = warm
        .stream_embedding(request(0))
        .await
        .unwrap()
        .into_inner();
    while s.message().await.unwrap().is_some() {}
    drop((s, warm));
    let before = rss_anon();
    let stats = server.stats().clone();
    let started = stats.started();
    // Twenty connections, each asking for the largest chunk, never reading.
    // The clients live in this process too: their HTTP/2 windows are kept
    // at the protocol's default (64 KiB), not hyper's 2 MiB, so that what
    // they buffer does not hide what the server holds.
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let small_windows = Channel::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let mut c = client(small_windows).await;
        let max = {
            // The largest chunk_size accepted: the refusal names it.
            let err = c.stream_embedding(request(i32::MAX)).await.unwrap_err();
            let text = err.message().to_string();
            let range = text.split("use 1..=").nth(1).unwrap();
            range.split(' ').next().unwrap().parse::<i32>().unwrap()
        };
        streams.push(c.stream_embedding(request(max)).await.unwrap().into_inner());
    }
    eventually("the streams start", || {
        stats.started() == started + STREAMS as u64
    })
    .await;
    // Until every stream is ended by the stall deadline: the accounted bytes
    // never pass the budget, and neither does the memory (beyond a margin
    // for everything else this test process holds).
    let mut max_pinned = 0;
    let mut max_rss = 0;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while stats.active() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams never ended"
        );
        let pinned = budget.pinned();
        assert!(pinned <= BUDGET, "{pinned} bytes pinned, budget {BUDGET}");
        max_pinned = max_pinned.max(pinned);
        max_rss = max_rss.max(rss_anon().saturating_sub(before));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "budget {BUDGET}: at most {max_pinned} bytes pinned, RssAnon grew by at most {max_rss}"
    );
    assert!(
        max_pinned > MESSAGE / 2,
        "chunks were budgeted: {max_pinned}"
    );
    assert!(
        max_rss < BUDGET + (16 << 20),
        "RssAnon grew by {max_rss} bytes with a {BUDGET}-byte budget (20 unbudgeted chunks would be about 300 MB)"
    );
    eventually("every unsent byte is released", || budget.pinned() == 0).await;
    assert_eq!(stats.completed(), 1, "only the first full read");
    // Each client sees its stream fail (its connection was closed).
    for mut s in streams {
        let ended = tokio::time::timeout(HANG_GUARD, async {
            loop {
                match s.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        assert!(ended.is_err(), "{ended:?}");
    }
    server.shutdown().await.unwrap();
}

/// The server ends streams it can; a stalled server does not outlive its
/// shutdown (the connection close also frees the budget).
#[tokio::test]
async fn pinned_bytes_are_zero_at_rest() {
    let (_dir, server): (_, Server) = start_with(500, 16, 100, |_| {}).await;
    let mut c = client(channel(&server).await).await;
    let mut s = c.stream_embedding(request(0)).await.unwrap().into_inner();
    let mut rows = 0;
    while let Some(chunk) = s.message().await.unwrap() {
        rows += chunk.rows.len();
    }
    assert_eq!(rows, 500);
    let budget = server.send_budget().clone();
    eventually("sent chunks release their budget", || budget.pinned() == 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_busy_ones_kept() {
    let (_dir, server) = start_with(20_000, 64, 1000, |config| {
        config.limits.idle_connection_timeout = Duration::from_millis(300);
    })
    .await;
    // A connection with a stream open (not being read) is busy.
    let mut busy = client(channel(&server).await).await;
    let mut held = busy
        .stream_embedding(request(1))
        .await
        .unwrap()
        .into_inner();
    // Another finishes its call and falls idle.
    let mut idle = client(channel(&server).await).await;
    let mut s = idle
        .stream_embedding(request(0))
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    while let Some(chunk) = s.message().await.unwrap() {
        rows += chunk.rows.len();
    }
    assert_eq!(rows, 20_000);
    drop(s);
    eventually("the idle connection is closed", || {
        server.open_connections() == 1
    })
    .await;
    // The busy one is still served.
    assert_eq!(held.message().await.unwrap().unwrap().rows.len(), 1);
    drop(held);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_send_budget_below_one_chunk_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    crate::common::write_sample_file(&path, 10, 4, 10);
    let mut config = embedstream::serve::ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap());
    config.max_message_bytes = 8 << 20;
    config.limits.send_budget = 4 << 20;
    let err = Server::spawn(config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "--send-budget 4194304 is smaller than the largest RowChunk (--max-message-bytes 8388608); raise the budget or lower the message limit"
    );
}

/// A chunk larger than its estimate (strings far longer than the first
/// estimate assumes) that finds no room for the difference gives its permit
/// back and waits for its whole size; it goes out once room is made, and the
/// accounted bytes never pass the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_larger_than_estimated_wait_for_their_size() {
    const ROWS: usize = 2_000;
    const BUDGET: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.arrow");
    // Rows of about 2.1 kB: a chunk of 300 is about 630 kB, estimated at 85 kB.
    crate::common::write_long_names_file(&path, ROWS, 8, 500, 2_000);
    let mut config = embedstream::serve::ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap());
    config.max_message_bytes = BUDGET;
    config.limits.send_budget = BUDGET;
    let server = Server::spawn(config).await.unwrap();
    let budget = server.send_budget().clone();
    // A stream that does not read pins its first chunk (its client's window
    // is 64 KiB), leaving less room than the next stream's chunk needs.
    let small_window = Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stalled_client = client(small_window).await;
    let stalled = stalled_client
        .stream_embedding(request(300))
        .await
        .unwrap()
        .into_inner();
    eventually("the first chunk is pinned", || budget.pinned() > 600_000).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let ch = channel(&server).await;
        tasks.push(tokio::spawn(async move {
            let mut c = client(ch).await;
            let mut s = c.stream_embedding(request(300)).await.unwrap().into_inner();
            let mut rows = 0;
            while let Some(chunk) = s.message().await.unwrap() {
                assert_eq!(chunk.rows[0].company_name.len(), 2_000);
                rows += chunk.rows.len();
            }
            rows
        }));
    }
    let stats = server.stats().clone();
    eventually("the readers start", || stats.started() == 4).await;
    assert!(budget.pinned() <= BUDGET);
    // The stalled client goes away; the others get their chunks.
    drop(stalled);
    for t in tasks {
        let rows = tokio::time::timeout(HANG_GUARD, t).await.unwrap().unwrap();
        assert_eq!(rows, ROWS);
        assert!(budget.pinned() <= BUDGET);
    }
    eventually("every chunk released its budget", || budget.pinned() == 0).await;
    server.shutdown().await.unwrap();
}

/// Every Flight call refuses a request over the limit with RESOURCE_EXHAUSTED,
/// as DoGet and StreamEmbedding do (tonic's own answer would be OUT_OF_RANGE).
#[tokio::test]
async fn oversized_flight_requests_are_resource_exhausted() {
    let (_dir, server) = start_with(10, 4, 10, |_| {}).await;
    let mut flight = FlightClient::new(channel(&server).await);
    let huge = arrow_flight::FlightDescriptor::new_path(vec!["x".repeat(100_000)]);
    let errors = [
        flight.get_flight_info(huge.clone()).await.unwrap_err(),
        flight.get_schema(huge).await.unwrap_err(),
    ];
    for (err, method) in errors.into_iter().zip(["GetFlightInfo", "GetSchema"]) {
        let arrow_flight::error::FlightError::Tonic(status) = err else {
            panic!("{err:?}")
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status.message(),
            format!("the {method} request message is over the 65536-byte limit of requests")
        );
    }
    // A small one still works.
    let info = flight
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(vec![
            "sample".into()
        ]))
        .await
        .unwrap();
    assert_eq!(info.total_records, 10);
    server.shutdown().await.unwrap();
}
