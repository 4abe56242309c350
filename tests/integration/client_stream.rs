//! `embedstream stream` against the real server (in-process, port 0) and
//! against a deliberately broken StreamEmbedding server.
use crate::common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use embedstream::{
    client::deadline::Timeouts,
    client::stream::{pull, StreamError, StreamOptions, StreamReport, Violation},
    format::format_uuid,
    progress::ProgressMode,
    proto::{
        embedding_stream_service_server::{EmbeddingStreamService, EmbeddingStreamServiceServer},
        IngestDataRequest, IngestDataResponse, RecruitRow, RowChunk, StreamEmbeddingRequest,
    },
    rows::RowMapping,
    serve::{Server, ServerConfig},
    store::Store,
};
use tonic::{Request, Response, Status, Streaming};

const ROWS: usize = 1000;
const DIM: usize = 8;

fn options(server: SocketAddr) -> StreamOptions {
    StreamOptions {
        server: server.to_string(),
        checkpoint: None,
        chunk_size: 300,
        out: None,
        force: false,
        flight: false,
        progress: ProgressMode::Hidden,
        timeouts: Timeouts::default(),
        secure: embedstream::client::secure::SecureClient::plaintext(),
    }
}

fn key(i: usize) -> String {
    format_uuid(&common::key_for_row(i))
}

async fn real_server(dir: &Path) -> (Server, PathBuf) {
    let path = dir.join("source.arrow");
    common::write_sample_file(&path, ROWS, DIM, 128);
    let server = Server::spawn(ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    (server, path)
}

fn check_report(report: &StreamReport, first: usize, rows: usize, chunks: usize) {
    assert_eq!(report.rows, rows);
    assert_eq!(report.chunks, chunks);
    assert_eq!(report.dim, Some(DIM));
    assert_eq!(report.first_key.as_deref(), Some(key(first).as_str()));
    assert_eq!(
        report.last_key.as_deref(),
        Some(key(first + rows - 1).as_str())
    );
}

/// Every value of `out` equals the source's rows `first..`, read through the
/// RecruitRow mapping (so `Exp Years` "3y" in the source equals 3 in the output).
fn assert_same_rows(source: &Path, out: &Path, first: usize) {
    let a = Store::open(source, None).unwrap();
    let b = Store::open(out, None).unwrap();
    assert_eq!(b.num_rows(), a.num_rows() - first);
    let la = RowMapping::default()
        .resolve(a.schema(), a.layout())
        .unwrap();
    let lb = RowMapping::default()
        .resolve(b.schema(), b.layout())
        .unwrap();
    assert_eq!(lb.vector_dim(), DIM);
    let rows = |store: &Store, layout: &embedstream::rows::RecruitLayout| {
        let mut out = Vec::new();
        for batch in store.iter_batches() {
            let batch = batch.unwrap();
            let c = layout.columns(batch).unwrap();
            for i in 0..c.len() {
                out.push((
                    c.id(i),
                    c.company_name(i).to_string(),
                    c.exp_years(i),
                    c.english_level(i).to_string(),
                    c.primary_keyword(i).to_string(),
                    c.vector(i).iter().map(f32::to_bits).collect::<Vec<_>>(),
                ));
            }
        }
        out
    };
    let ra = rows(&a, &la);
    let rb = rows(&b, &lb);
    assert_eq!(&ra[first..], &rb[..]);
    assert!(b.layout().keys_verified_by_writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_resumed_and_saved_stream_from_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, source) = real_server(dir.path()).await;
    let addr = server.local_addr();

    let report = pull(&options(addr)).await.unwrap();
    check_report(&report, 0, ROWS, 4);

    let mut opts = options(addr);
    opts.checkpoint = Some(key(499));
    opts.chunk_size = 7;
    let report = pull(&opts).await.unwrap();
    check_report(&report, 500, 500, 500usize.div_ceil(7));

    let out = dir.path().join("copy.arrow");
    let mut opts = options(addr);
    opts.out = Some(out.clone());
    let report = pull(&opts).await.unwrap();
    assert_eq!(report.out.as_deref(), Some(out.as_path()));
    assert_same_rows(&source, &out, 0);

    // The saved file is servable and resumable like the source.
    let again = Server::spawn(ServerConfig::new(&out, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let mut opts = options(again.local_addr());
    opts.checkpoint = Some(key(10));
    check_report(
        &pull(&opts).await.unwrap(),
        11,
        ROWS - 11,
        (ROWS - 11).div_ceil(300),
    );
    again.shutdown().await.unwrap();

    // An existing --out is refused before anything is pulled, and kept.
    let mut opts = options(addr);
    opts.out = Some(out.clone());
    let err = pull(&opts).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: already exists; pass --force to replace it",
            out.display()
        )
    );
    opts.force = true;
    opts.checkpoint = Some(key(899));
    pull(&opts).await.unwrap();
    assert_same_rows(&source, &out, 900);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_full_resumed_and_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (server, source) = real_server(dir.path()).await;
    let mut opts = options(server.local_addr());
    opts.flight = true;
    let report = pull(&opts).await.unwrap();
    check_report(&report, 0, ROWS, ROWS.div_ceil(128));

    opts.checkpoint = Some(key(199));
    let out = dir.path().join("flight.arrow");
    opts.out = Some(out.clone());
    let report = pull(&opts).await.unwrap();
    // 200..256 is the tail of batch 1, then batches 2..7.
    check_report(&report, 200, 800, 1 + (ROWS.div_ceil(128) - 2));
    assert_same_rows(&source, &out, 200);

    // A checkpoint past the end: nothing, and an empty but valid file.
    opts.checkpoint = Some(key(ROWS + 5));
    opts.force = true;
    let report = pull(&opts).await.unwrap();
    assert_eq!((report.rows, report.first_key), (0, None));
    assert_eq!(Store::open(&out, None).unwrap().num_rows(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checkpoint_and_missing_server() {
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut opts = options(addr);
    opts.checkpoint = Some("yesterday".into());
    let err = pull(&opts).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--checkpoint `yesterday` is not a UUID ("),
        "{err}"
    );
    let braced = "{01890a5d-ac96-774b-bcce-b302099a8057}";
    opts.checkpoint = Some(braced.into());
    let err = pull(&opts).await.unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "--checkpoint `{braced}` is a UUID in the braced form; send the hyphenated form"
        )),
        "{err}"
    );
    opts.checkpoint = None;
    let err = pull(&opts).await.unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::Rpc {
                code: tonic::Code::Unavailable,
                rows: 0,
                ..
            }
        ),
        "{err}"
    );
}

/// A StreamEmbedding server that sends fixed chunks, then optionally an error.
#[derive(Clone)]
struct Broken {
    chunks: Vec<RowChunk>,
    then: Option<Status>,
    requests: Arc<Mutex<Vec<StreamEmbeddingRequest>>>,
}

#[tonic::async_trait]
impl EmbeddingStreamService for Broken {
    type StreamEmbeddingStream =
        futures::stream::Iter<std::vec::IntoIter<Result<RowChunk, Status>>>;

    async fn stream_embedding(
        &self,
        request: Request<StreamEmbeddingRequest>,
    ) -> Result<Response<Self::StreamEmbeddingStream>, Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        let mut items: Vec<Result<RowChunk, Status>> =
            self.chunks.iter().cloned().map(Ok).collect();
        if let Some(status) = &self.then {
            items.push(Err(Status::new(status.code(), status.message())));
        }
        Ok(Response::new(futures::stream::iter(items)))
    }

    async fn ingest_data_stream(
        &self,
        _request: Request<Streaming<IngestDataRequest>>,
    ) -> Result<Response<IngestDataResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

fn row(i: usize, dim: usize) -> RecruitRow {
    RecruitRow {
        id: key(i),
        company_name: common::company(i),
        exp_years: (i % 11) as i32,
        english_level: common::english_level(i).into(),
        primary_keyword: common::primary_keyword(i).into(),
        vector: (0..dim).map(|j| common::vector_value(i, j)).collect(),
    }
}

fn chunk(rows: impl IntoIterator<Item = RecruitRow>) -> RowChunk {
    RowChunk {
        rows: rows.into_iter().collect(),
    }
}

async fn broken(
    chunks: Vec<RowChunk>,
    then: Option<Status>,
) -> (SocketAddr, Arc<Mutex<Vec<StreamEmbeddingRequest>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let service = EmbeddingStreamServiceServer::new(Broken {
        chunks,
        then,
        requests: requests.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, requests)
}

/// Pull from a broken server with chunks of 2 (and `checkpoint`), expect `expected`.
async fn expect_violation(
    chunks: Vec<RowChunk>,
    checkpoint: Option<usize>,
    expected: Violation,
    message: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (addr, requests) = broken(chunks, None).await;
    let mut opts = options(addr);
    opts.chunk_size = 2;
    opts.checkpoint = checkpoint.map(key);
    let out = dir.path().join("partial.arrow");
    opts.out = Some(out.clone());
    let err = pull(&opts).await.unwrap_err();
    match &err {
        StreamError::Violation { violation, .. } => assert_eq!(violation, &expected),
        other => panic!("expected a violation, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        format!("{addr}: the stream is invalid: {message}")
    );
    assert!(!out.exists(), "nothing is saved from an invalid stream");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left"
    );
    let requests = requests.lock().unwrap();
    assert_eq!(requests[0].chunk_size, 2);
    assert_eq!(
        requests[0].last_processed_uuid,
        checkpoint.map(key).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_rows() {
    expect_violation(
        vec![chunk([row(0, 3), row(2, 3)]), chunk([row(1, 3), row(3, 3)])],
        None,
        Violation::NotIncreasing { row: 2, previous: key(2), key: key(1) },
        &format!("row 2: key {} is not greater than the previous row's {} (keys must be strictly increasing)", key(1), key(2)),
    )
    .await;
    // A repeated key is not increasing either.
    expect_violation(
        vec![chunk([row(0, 3), row(0, 3)])],
        None,
        Violation::NotIncreasing { row: 1, previous: key(0), key: key(0) },
        &format!("row 1: key {} is not greater than the previous row's {} (keys must be strictly increasing)", key(0), key(0)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_dimension() {
    expect_violation(
        vec![chunk([row(0, 3), row(1, 3)]), chunk([row(2, 4)])],
        None,
        Violation::Dimension {
            row: 2,
            key: key(2),
            expected: 3,
            found: 4,
        },
        &format!(
            "row 2 ({}): vector has 4 components, earlier rows had 3",
            key(2)
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_larger_than_asked() {
    expect_violation(
        vec![
            chunk([row(0, 3), row(1, 3)]),
            chunk([row(2, 3), row(3, 3), row(4, 3)]),
        ],
        None,
        Violation::ChunkTooLarge {
            chunk: 1,
            row: 2,
            rows: 3,
            asked: 2,
        },
        "chunk 1 (from row 2) has 3 rows, more than the 2 asked for",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_chunk_before_the_end_and_empty_chunk() {
    expect_violation(
        vec![chunk([row(0, 3)]), chunk([row(1, 3)])],
        None,
        Violation::ShortChunkNotLast { chunk: 0, row: 0, rows: 1, asked: 2, next: 1 },
        "chunk 0 (from row 0) has 1 rows, fewer than the 2 asked for, but chunk 1 followed it (only the last chunk may be short)",
    )
    .await;
    expect_violation(
        vec![chunk([row(0, 3), row(1, 3)]), chunk([])],
        None,
        Violation::EmptyChunk {
            chunk: 1,
            row: 2,
            asked: 2,
        },
        "chunk 1 (at row 2) is empty; every chunk must carry 1 to 2 rows",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_not_after_the_checkpoint() {
    expect_violation(
        vec![chunk([row(3, 3), row(6, 3)])],
        Some(5),
        Violation::NotAfterCheckpoint {
            row: 0,
            checkpoint: key(5),
            key: key(3),
        },
        &format!(
            "row 0: key {} is not after the checkpoint {}",
            key(3),
            key(5)
        ),
    )
    .await;
    // The checkpoint itself is not after the checkpoint.
    expect_violation(
        vec![chunk([row(5, 3)])],
        Some(5),
        Violation::NotAfterCheckpoint {
            row: 0,
            checkpoint: key(5),
            key: key(5),
        },
        &format!(
            "row 0: key {} is not after the checkpoint {}",
            key(5),
            key(5)
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_id() {
    let mut bad = row(1, 3);
    bad.id = "v5-1".into();
    let reason = uuid::Uuid::parse_str("v5-1").unwrap_err().to_string();
    expect_violation(
        vec![chunk([row(0, 3), bad])],
        None,
        Violation::MalformedId {
            row: 1,
            id: "v5-1".into(),
            reason: reason.clone(),
        },
        &format!("row 1: id `v5-1` is not a UUID ({reason})"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_stream_from_the_test_server_passes_and_an_rpc_error_fails() {
    let chunks = vec![chunk([row(0, 3), row(1, 3)]), chunk([row(2, 3)])];
    let (addr, _) = broken(chunks.clone(), None).await;
    let mut opts = options(addr);
    opts.chunk_size = 2;
    let report = pull(&opts).await.unwrap();
    assert_eq!((report.rows, report.chunks, report.dim), (3, 2, Some(3)));

    let (addr, _) = broken(chunks, Some(Status::internal("disk on fire"))).await;
    let mut opts = options(addr);
    opts.chunk_size = 2;
    let err = pull(&opts).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{addr}: StreamEmbedding failed after 3 row(s): Internal: disk on fire")
    );
}
