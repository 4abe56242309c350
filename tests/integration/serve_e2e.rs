//! End-to-end tests of `embedstream serve`, in-process on port 0 with real
//! tonic and Arrow Flight clients: StreamEmbedding (both package names),
//! resume and chunk-size edges, cancellation, concurrency, health,
//! reflection, Flight, and every start-up refusal.

use crate::common::{self, pull};

use std::{path::Path, sync::Arc, time::Duration};

use arrow_array::RecordBatch;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use embedstream::{
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, IngestDataRequest,
        RecruitRow, RowChunk, StreamEmbeddingRequest,
    },
    serve::{ServeError, Server, ServerConfig},
};
use futures::TryStreamExt;
use tonic::{transport::Channel, Code, Status};

const ROWS: usize = 1000;
const DIM: usize = 8;

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A sample file of `rows` rows in batches of `batch_rows`, and a server on it.
pub async fn start_with(
    rows: usize,
    dim: usize,
    batch_rows: usize,
    tweak: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, rows, dim, batch_rows);
    let mut config = ServerConfig::new(&path, local());
    tweak(&mut config);
    let server = Server::spawn(config).await.unwrap();
    (dir, server)
}

async fn start() -> (tempfile::TempDir, Server) {
    start_with(ROWS, DIM, 64, |_| {}).await
}

pub async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn client(server: &Server) -> EmbeddingStreamServiceClient<Channel> {
    EmbeddingStreamServiceClient::new(channel(server).await).max_decoding_message_size(usize::MAX)
}

fn uuid_text(key: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(key).hyphenated().to_string()
}

/// All chunks of one call, or the status it failed with.
/// Open a StreamEmbedding call that must be accepted.
async fn open_stream(
    client: &mut EmbeddingStreamServiceClient<Channel>,
    after: &str,
    chunk: i32,
) -> tonic::Streaming<RowChunk> {
    client
        .stream_embedding(StreamEmbeddingRequest {
            last_processed_uuid: after.to_string(),
            chunk_size: chunk,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Row `i` as the server must send it.
fn expected_row(i: usize, dim: usize) -> RecruitRow {
    RecruitRow {
        id: uuid_text(common::key_for_row(i)),
        company_name: common::company(i),
        exp_years: (i % 11) as i32,
        english_level: common::english_level(i).to_string(),
        primary_keyword: common::primary_keyword(i).to_string(),
        vector: (0..dim).map(|j| common::vector_value(i, j)).collect(),
    }
}

/// The chunks carry exactly rows `from..to`, in order, `chunk` rows each but the last.
fn check(chunks: &[RowChunk], from: usize, to: usize, chunk: usize, dim: usize) {
    let sizes: Vec<usize> = chunks.iter().map(|c| c.rows.len()).collect();
    let n = to - from;
    let want: Vec<usize> = (0..n.div_ceil(chunk))
        .map(|c| chunk.min(n - c * chunk))
        .collect();
    assert_eq!(sizes, want, "chunk sizes");
    for (k, row) in chunks.iter().flat_map(|c| &c.rows).enumerate() {
        assert_eq!(row, &expected_row(from + k, dim), "row {}", from + k);
    }
}

#[tokio::test]
async fn full_stream_equals_the_file() {
    let (_dir, server) = start().await;
    let mut c = client(&server).await;
    let chunks = pull(&mut c, "", 0).await.unwrap();
    check(&chunks, 0, ROWS, 300, DIM);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_points() {
    let (_dir, server) = start().await;
    let mut c = client(&server).await;
    // Before the first key: everything.
    let chunks = pull(&mut c, &uuid_text([0; 16]), 100).await.unwrap();
    check(&chunks, 0, ROWS, 100, DIM);
    // After the first row.
    let chunks = pull(&mut c, &uuid_text(common::key_for_row(0)), 100)
        .await
        .unwrap();
    check(&chunks, 1, ROWS, 100, DIM);
    // Middle, across a batch boundary (batches of 64).
    let chunks = pull(&mut c, &uuid_text(common::key_for_row(499)), 300)
        .await
        .unwrap();
    check(&chunks, 500, ROWS, 300, DIM);
    // A UUID absent from the file, between rows 499 and 500.
    let mut absent = common::key_for_row(499);
    absent[9..].copy_from_slice(&[0xff; 7]);
    assert!(absent > common::key_for_row(499) && absent < common::key_for_row(500));
    let chunks = pull(&mut c, &uuid_text(absent), 300).await.unwrap();
    check(&chunks, 500, ROWS, 300, DIM);
    // Upper case and simple forms name the same key.
    let upper = uuid_text(common::key_for_row(899)).to_uppercase();
    check(&pull(&mut c, &upper, 0).await.unwrap(), 900, ROWS, 300, DIM);
    // The last row, and past the end: an empty, successful stream.
    let chunks = pull(&mut c, &uuid_text(common::key_for_row(ROWS - 1)), 0)
        .await
        .unwrap();
    assert!(chunks.is_empty());
    let chunks = pull(&mut c, &uuid_text([0xff; 16]), 0).await.unwrap();
    assert!(chunks.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunk_size_edges() {
    let (_dir, server) = start_with(ROWS, DIM, 64, |c| {
        c.default_chunk = 9;
        c.max_chunk = Some(70);
    })
    .await;
    let mut c = client(&server).await;
    check(&pull(&mut c, "", 0).await.unwrap(), 0, ROWS, 9, DIM);
    check(&pull(&mut c, "", 1).await.unwrap(), 0, ROWS, 1, DIM);
    check(&pull(&mut c, "", 70).await.unwrap(), 0, ROWS, 70, DIM);
    for bad in [71, -1, i32::MIN, i32::MAX] {
        let err = pull(&mut c, "", bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(
            err.message(),
            format!("chunk_size {bad} is out of range: use 1..=70 (a larger chunk would not fit the 100 MiB message limit), or 0 for the default (9)")
        );
    }
    server.shutdown().await.unwrap();

    // Default bound (computed from the row size): larger than the file is fine.
    let (_dir, server) = start().await;
    let mut c = client(&server).await;
    check(&pull(&mut c, "", 5000).await.unwrap(), 0, ROWS, 5000, DIM);
    let err = pull(&mut c, "", i32::MAX).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with(&format!(
        "chunk_size {} is out of range: use 1..=",
        i32::MAX
    )));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_uuids_are_invalid_argument() {
    let (_dir, server) = start().await;
    let mut c = client(&server).await;
    for bad in [
        "nope",
        "01890a5d-ac96-774b-bcce-b302099a805",
        "01890a5d-ac96-774b-bcce-b302099a805g",
        " 01890a5d-ac96-774b-bcce-b302099a8057",
    ] {
        let err = pull(&mut c, bad, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(
            err.message()
                .starts_with(&format!("last_processed_uuid `{bad}` is not a UUID (")),
            "{}",
            err.message()
        );
        assert!(err.message().ends_with(
            "send the id of the last row you stored, or an empty string to start from the first row"
        ));
    }
    // Checkpoints: the hyphenated form only, in any case.
    let id = uuid_text(common::key_for_row(10));
    let upper = pull(&mut c, &id.to_uppercase(), 0).await.unwrap();
    check(&upper, 11, ROWS, 300, DIM);
    for (bad, form) in [
        (format!("{{{id}}}"), "braced"),
        (format!("urn:uuid:{id}"), "urn"),
        (id.replace('-', ""), "simple"),
    ] {
        let err = pull(&mut c, &bad, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(
            err.message().starts_with(&format!(
                "last_processed_uuid `{bad}` is a UUID in the {form} form; send the hyphenated form"
            )),
            "{}",
            err.message()
        );
    }
    let long = "x".repeat(500);
    let err = pull(&mut c, &long, 0).await.unwrap_err();
    assert!(err
        .message()
        .starts_with(&format!("last_processed_uuid `{}…`", "x".repeat(64))));
    server.shutdown().await.unwrap();
}

/// Wait (bounded, only as a hang guard) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn cancel_stops_the_stream_and_others_go_on() {
    let rows = 20_000;
    let (_dir, server) = start_with(rows, 128, 1000, |_| {}).await;
    let mut c = client(&server).await;
    let mut stream = open_stream(&mut c, "", 1).await;
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.rows[0], expected_row(0, 128));
    assert_eq!(server.stats().active(), 1);
    drop(stream);
    let stats = server.stats().clone();
    eventually("the cancelled stream is dropped", || stats.active() == 0).await;
    assert_eq!(
        (stats.started(), stats.cancelled(), stats.completed()),
        (1, 1, 0)
    );
    // Flow control kept the server from producing the whole file.
    let produced = stats.rows();
    assert!(produced < rows as u64, "produced {produced} of {rows} rows");
    // The server goes on serving, on the same connection.
    let chunks = pull(&mut c, &uuid_text(common::key_for_row(rows - 11)), 0)
        .await
        .unwrap();
    check(&chunks, rows - 10, rows, 300, 128);
    assert_eq!(stats.completed(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn thirty_two_concurrent_streams_get_every_row_once() {
    let (_dir, server) = start().await;
    let addr = server.local_addr();
    let mut tasks = Vec::new();
    for k in 0..32usize {
        tasks.push(tokio::spawn(async move {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = EmbeddingStreamServiceClient::new(channel);
            let chunk = 1 + (k * 37) % 400;
            let chunks = pull(&mut c, "", chunk as i32).await.unwrap();
            check(&chunks, 0, ROWS, chunk, DIM);
            chunks.iter().map(|c| c.rows.len()).sum::<usize>()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), ROWS);
    }
    assert_eq!(server.stats().completed(), 32);
    server.shutdown().await.unwrap();
}

/// Call a server-streaming method by raw path.
async fn raw_stream(
    channel: Channel,
    path: &'static str,
    req: StreamEmbeddingRequest,
) -> Result<Vec<RowChunk>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<StreamEmbeddingRequest, RowChunk>::default();
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(req),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.message().await? {
        out.push(c);
    }
    Ok(out)
}

#[tokio::test]
async fn alias_package_and_ingest_unimplemented() {
    let (_dir, server) = start().await;
    let ch = channel(&server).await;
    let req = StreamEmbeddingRequest {
        last_processed_uuid: uuid_text(common::key_for_row(10)),
        chunk_size: 50,
    };
    let alias = raw_stream(
        ch.clone(),
        "/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding",
        req.clone(),
    )
    .await
    .unwrap();
    check(&alias, 11, ROWS, 50, DIM);
    let canonical = raw_stream(
        ch.clone(),
        "/embedding.EmbeddingStreamService/StreamEmbedding",
        req,
    )
    .await
    .unwrap();
    assert_eq!(alias, canonical);
    // A malformed request through the alias gets the same status.
    let err = raw_stream(
        ch.clone(),
        "/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding",
        StreamEmbeddingRequest {
            last_processed_uuid: "bad".into(),
            chunk_size: 0,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // IngestDataStream belongs to the Batch Server.
    let mut c = EmbeddingStreamServiceClient::new(ch.clone());
    let err = c
        .ingest_data_stream(futures::stream::iter(Vec::<IngestDataRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err
        .message()
        .starts_with("IngestDataStream is the Batch Server's RPC"));
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let err = grpc
        .client_streaming(
            tonic::Request::new(futures::stream::iter(Vec::<IngestDataRequest>::new())),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/com.alpha.backend.grpc.EmbeddingStreamService/IngestDataStream",
            ),
            tonic_prost::ProstCodec::<IngestDataRequest, embedstream::proto::IngestDataResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let (_dir, server) = start().await;
    let ch = channel(&server).await;
    let mut health = HealthClient::new(ch.clone());
    for service in [
        "",
        "embedding.EmbeddingStreamService",
        "com.alpha.backend.grpc.EmbeddingStreamService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(ch);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "com.alpha.backend.grpc.EmbeddingStreamService".into(),
        )),
        ask(MessageRequest::FileContainingSymbol(
            "embedding.RowChunk".into(),
        )),
    ];
    let responses: Vec<_> = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(responses.len(), 3);
    match &responses[0].message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
            for want in [
                "embedding.EmbeddingStreamService",
                "com.alpha.backend.grpc.EmbeddingStreamService",
                "grpc.health.v1.Health",
            ] {
                assert!(names.contains(&want), "{want} missing from {names:?}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    for r in &responses[1..] {
        match &r.message_response {
            Some(MessageResponse::FileDescriptorResponse(f)) => {
                assert!(!f.file_descriptor_proto.is_empty())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- start-up

async fn refusal(path: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> String {
    let mut config = ServerConfig::new(path, local());
    tweak(&mut config);
    match Server::spawn(config).await {
        Ok(_) => panic!("{} was served", path.display()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn startup_refusals() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.arrow");
    let msg = refusal(&missing, |_| {}).await;
    assert_eq!(
        msg,
        format!(
            "{0}: no such file; convert a pickle first: `embedstream convert INPUT.pkl -o {0}`",
            missing.display()
        )
    );

    let garbage = dir.path().join("garbage.arrow");
    std::fs::write(&garbage, b"this is not arrow at all, just some text").unwrap();
    let msg = refusal(&garbage, |_| {}).await;
    assert!(msg.contains("not an Arrow IPC file"), "{msg}");
    assert!(msg.ends_with("`embedstream convert` writes one"), "{msg}");

    let unsorted = dir.path().join("unsorted.arrow");
    write_unsorted(&unsorted);
    let msg = refusal(&unsorted, |_| {}).await;
    assert!(
        msg.contains("key column `uuid` is not strictly increasing at row 1"),
        "{msg}"
    );
    assert!(
        msg.ends_with("re-run `embedstream convert` to rebuild the key"),
        "{msg}"
    );

    let good = dir.path().join("good.arrow");
    common::write_sample_file(&good, 10, 4, 4);
    let msg = refusal(&good, |c| c.mapping.company_name = "Company".into()).await;
    assert!(
        msg.contains(
            "RecruitRow.company_name reads column `Company`, which the file does not have"
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with("name another with --company-name-column"),
        "{msg}"
    );
    let msg = refusal(&good, |c| c.mapping.exp_years = "job_post_vectors".into()).await;
    assert!(
        msg.contains("RecruitRow.exp_years reads column `job_post_vectors` of type FixedSizeList"),
        "{msg}"
    );

    let msg = refusal(&good, |c| c.max_chunk = Some(1_000_000_000)).await;
    assert!(
        msg.starts_with("--max-chunk-size 1000000000 is too large"),
        "{msg}"
    );
    let msg = refusal(&good, |c| c.default_chunk = 0).await;
    assert!(
        msg.starts_with("the default chunk size (CHUNK_SIZE / --chunk-size) 0 must be within 1..="),
        "{msg}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = ServerConfig::new(&good, addr);
    config.addr = addr;
    let err = Server::spawn(config).await.unwrap_err();
    assert!(matches!(err, ServeError::PortInUse { .. }));
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {addr}: the port is in use; stop the other server or choose another port with --port (or GRPC_PORT)")
    );
}

/// A file whose keys go down (no `keys_sorted` metadata: checked row by row).
fn write_unsorted(path: &Path) {
    use arrow_array::builder::FixedSizeBinaryBuilder;
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        embedstream::format::key_field("uuid"),
    ]));
    let mut keys = FixedSizeBinaryBuilder::new(16);
    keys.append_value(common::key_for_row(5)).unwrap();
    keys.append_value(common::key_for_row(3)).unwrap();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(keys.finish())]).unwrap();
    let mut w =
        arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema)
            .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

// ---------------------------------------------------------------- Flight

/// The file's rows `from..` as one batch, read with arrow's own reader.
fn file_tail(path: &Path, from: usize) -> RecordBatch {
    let reader =
        arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    all.slice(from, all.num_rows() - from)
}

fn same_rows(got: &[RecordBatch], want: &RecordBatch) {
    let schema = want.schema();
    let got = arrow::compute::concat_batches(&schema, got).unwrap();
    assert_eq!(got.num_rows(), want.num_rows());
    for i in 0..want.num_columns() {
        assert_eq!(
            got.column(i).to_data(),
            want.column(i).to_data(),
            "column {i}"
        );
    }
}

#[tokio::test]
async fn flight_do_get_info_schema_and_resume() {
    let (dir, server) = start().await;
    let path = dir.path().join("sample.arrow");
    let mut flight = FlightClient::new(channel(&server).await);
    let store = embedstream::store::Store::open(&path, None).unwrap();

    let info = flight
        .get_flight_info(FlightDescriptor::new_path(vec!["sample".into()]))
        .await
        .unwrap();
    assert_eq!(info.total_records, ROWS as i64);
    assert_eq!(
        info.total_bytes,
        std::fs::metadata(&path).unwrap().len() as i64
    );
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert_eq!(&ticket.ticket[..], b"all");
    assert_eq!(&info.try_decode_schema().unwrap(), store.schema().as_ref());
    let schema = flight
        .get_schema(FlightDescriptor::new_cmd("sample"))
        .await
        .unwrap();
    assert_eq!(&schema, store.schema().as_ref());
    // A descriptor naming anything else is NOT_FOUND, on both calls.
    for descriptor in [
        FlightDescriptor::new_cmd("anything"),
        FlightDescriptor::new_path(vec!["other".into()]),
        FlightDescriptor::new_path(vec!["sample".into(), "x".into()]),
    ] {
        let errors = [
            flight.get_schema(descriptor.clone()).await.unwrap_err(),
            flight
                .get_flight_info(descriptor.clone())
                .await
                .unwrap_err(),
        ];
        for err in errors {
            let arrow_flight::error::FlightError::Tonic(status) = err else {
                panic!("{err:?}")
            };
            assert_eq!(status.code(), Code::NotFound, "{descriptor:?}");
            assert!(
                status
                    .message()
                    .starts_with("no flight for the descriptor ")
                    && status
                        .message()
                        .ends_with("this server serves one: path [\"sample\"] (see ListFlights)"),
                "{}",
                status.message()
            );
        }
    }
    let listed: Vec<_> = flight
        .list_flights("")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].flight_descriptor.as_ref().unwrap().path,
        vec!["sample"]
    );

    // Whole file, from the ticket GetFlightInfo gave.
    let batches: Vec<RecordBatch> = do_get_all(&mut flight, ticket).await;
    assert_eq!(batches.len(), store.num_batches());
    same_rows(&batches, &file_tail(&path, 0));
    // Batches arrive as stored.
    assert_eq!(batches[0].num_rows(), 64);

    // Resume in the middle of a batch, at a batch boundary, at the end.
    for (after, from) in [(499usize, 500usize), (63, 64), (0, 1), (ROWS - 1, ROWS)] {
        let ticket = Ticket::new(format!("after:{}", uuid_text(common::key_for_row(after))));
        let got: Vec<RecordBatch> = do_get_all(&mut flight, ticket).await;
        if from == ROWS {
            assert!(got.iter().all(|b| b.num_rows() == 0));
        } else {
            same_rows(&got, &file_tail(&path, from));
        }
    }
    // Before the first key: everything.
    let got: Vec<RecordBatch> = flight
        .do_get(Ticket::new(format!("after:{}", uuid_text([0; 16]))))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    same_rows(&got, &file_tail(&path, 0));

    for (bad, want) in [
        ("after:xyz", "ticket `after:xyz`: not a UUID"),
        (
            "rows",
            "unknown ticket `rows`; use `all` (whole file) or `after:<uuid>` (resume)",
        ),
    ] {
        let err = match flight.do_get(Ticket::new(bad)).await {
            Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
            Err(e) => e,
        };
        match err {
            arrow_flight::error::FlightError::Tonic(status) => {
                assert_eq!(status.code(), Code::InvalidArgument);
                assert!(status.message().starts_with(want), "{}", status.message());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Unsupported calls.
    let err = flight
        .do_action(arrow_flight::Action::new("x", ""))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, arrow_flight::error::FlightError::Tonic(s) if s.code() == Code::Unimplemented)
    );
    server.shutdown().await.unwrap();
}

/// The file's record batches, as stored, read with arrow's own reader.
/// Every batch a DoGet of `ticket` returns.
async fn do_get_all(flight: &mut FlightClient, ticket: Ticket) -> Vec<RecordBatch> {
    flight
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The resume ticket after the key of row `row` of the sample file.
fn after_row(row: usize) -> Ticket {
    Ticket::new(format!("after:{}", uuid_text(common::key_for_row(row))))
}

fn file_batches(path: &Path) -> Vec<RecordBatch> {
    arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// DoGet over the zero-copy path on a file whose batch bodies (~560 KB)
/// exceed h2's frame size and the stream window: every batch arrives as
/// stored, equal to the file's batch row for row; a resume in the middle of
/// a batch starts at the next row.
#[tokio::test]
async fn flight_do_get_batches_equal_the_file() {
    let rows = 20_000;
    let (dir, server) = start_with(rows, 128, 1000, |_| {}).await;
    let path = dir.path().join("sample.arrow");
    let mut flight = FlightClient::new(channel(&server).await);
    let got: Vec<RecordBatch> = do_get_all(&mut flight, Ticket::new("all")).await;
    let want = file_batches(&path);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "batch {i}");
    }
    // Resume mid-batch: the head of batch 12 is re-encoded, the rest as stored.
    let got: Vec<RecordBatch> = do_get_all(&mut flight, after_row(12_344)).await;
    assert_eq!(got[0].num_rows(), 655);
    assert_eq!(&got[1..], &want[13..]);
    same_rows(&got, &file_tail(&path, 12_345));
    server.shutdown().await.unwrap();
}

/// The response body chains the mapped bytes: each raw batch's body frame
/// is the map's own `Bytes` (same address), and the frames concatenated are
/// the gRPC framing of prost's encoding of the same messages.
#[tokio::test]
async fn flight_do_get_body_frames_are_the_mapped_bytes() {
    use embedstream::serve::{
        flight::{FlightEndpointService, TicketRequest},
        flight_do_get::DoGetBody,
    };
    use http_body_util::BodyExt;
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, 5000, 64, 700);
    let dataset =
        Arc::new(embedstream::dataset::Dataset::open(&path, &Default::default()).unwrap());
    let live = Arc::new(embedstream::dataset::LiveDataset::new(dataset.clone()));
    let service = FlightEndpointService::new(
        live,
        "sample".into(),
        embedstream::serve::limits::StreamSlots::new(0),
    );
    let store = dataset.store();
    let mut body = DoGetBody::new(None, service.do_get_messages(TicketRequest::All).unwrap());
    let mut data = Vec::new();
    let mut pointers = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => {
                pointers.push(d.as_ptr());
                data.extend_from_slice(&d);
            }
            Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
        }
    }
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    for i in 0..store.num_batches() {
        let block = store.file().record_batch_block(i).unwrap().unwrap();
        assert!(
            pointers.contains(&block.body.as_ptr()),
            "batch {i}: body not sent as the mapped bytes"
        );
    }
    let mut want = Vec::new();
    for m in service.do_get_messages(TicketRequest::All).unwrap() {
        let encoded = m.unwrap().encode_to_vec();
        want.push(0);
        want.extend((encoded.len() as u32).to_be_bytes());
        want.extend(encoded);
    }
    assert_eq!(data, want);
}

/// One raw DoGet: the request body as given, the status (from the headers
/// of a trailers-only response or the trailers) and the data bytes.
async fn raw_do_get(server: &Server, body: Vec<u8>) -> (Status, Vec<u8>) {
    raw_call(server, "/arrow.flight.protocol.FlightService/DoGet", body).await
}

/// One raw server-streaming call to `path` (see [`raw_do_get`]).
pub async fn raw_call(server: &Server, path: &str, body: Vec<u8>) -> (Status, Vec<u8>) {
    use http_body_util::BodyExt;
    use tonic::codegen::{http, Service};

    let mut ch = channel(server).await;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", server.local_addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .unwrap();
    std::future::poll_fn(|cx| Service::<http::Request<tonic::body::Body>>::poll_ready(&mut ch, cx))
        .await
        .unwrap();
    let response = ch.call(req).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let status = Status::from_header_map(&parts.headers)
        .or_else(|| collected.trailers().and_then(Status::from_header_map))
        .expect("a grpc-status");
    (status, collected.to_bytes().to_vec())
}

pub fn grpc_message(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend(message);
    out
}

#[tokio::test]
async fn flight_do_get_refuses_bad_requests() {
    use prost::Message;

    let (_dir, server) = start().await;
    // A well-formed raw request streams and ends with status 0.
    let (status, data) =
        raw_do_get(&server, grpc_message(&Ticket::new("all").encode_to_vec())).await;
    assert_eq!(status.code(), Code::Ok);
    assert!(data.len() > ROWS * DIM * 4);

    let compressed = {
        let mut m = grpc_message(&Ticket::new("all").encode_to_vec());
        m[0] = 1;
        m
    };
    let mut huge = vec![0, 0, 0x10, 0, 0];
    huge.extend([b'a'; 1000]);
    for (what, body, code, message) in [
        (
            "empty body",
            Vec::new(),
            Code::InvalidArgument,
            "the DoGet request carries no Ticket",
        ),
        (
            "garbage",
            grpc_message(&[0xff, 0xff, 0xff]),
            Code::InvalidArgument,
            "the DoGet request is not a Ticket",
        ),
        (
            "truncated prefix",
            vec![0, 0],
            Code::InvalidArgument,
            "the DoGet request is truncated",
        ),
        (
            "two messages",
            [grpc_message(b""), grpc_message(b"")].concat(),
            Code::InvalidArgument,
            "the DoGet request carries more than one message",
        ),
        (
            "compressed",
            compressed,
            Code::Unimplemented,
            "compressed DoGet requests are not supported",
        ),
        (
            "declared 1 MiB",
            huge,
            Code::ResourceExhausted,
            "the DoGet request message is 1048576 bytes",
        ),
        (
            "bad ticket",
            grpc_message(&Ticket::new("rows").encode_to_vec()),
            Code::InvalidArgument,
            "unknown ticket `rows`",
        ),
        (
            "empty ticket",
            grpc_message(&Ticket::new("").encode_to_vec()),
            Code::InvalidArgument,
            "the ticket is empty; use `all` (whole file) or `after:<uuid>` (resume)",
        ),
        (
            "braced checkpoint",
            grpc_message(
                &Ticket::new("after:{01890a5d-ac96-774b-bcce-b302099a8057}").encode_to_vec(),
            ),
            Code::InvalidArgument,
            "ticket `after:{01890a5d-ac96-774b-bcce-b302099a8057}`: a UUID in the braced form; send the hyphenated form",
        ),
    ] {
        let (status, data) = raw_do_get(&server, body).await;
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().starts_with(message),
            "{what}: {}",
            status.message()
        );
        assert!(data.is_empty(), "{what}");
    }

    // Through the arrow-flight client: an oversized ticket.
    let mut flight = FlightClient::new(channel(&server).await);
    let err = match flight.do_get(Ticket::new(vec![b'a'; 100_000])).await {
        Ok(s) => s.try_collect::<Vec<_>>().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(&err, arrow_flight::error::FlightError::Tonic(s) if s.code() == Code::ResourceExhausted),
        "{err:?}"
    );
    // The server still serves.
    let got: Vec<RecordBatch> = do_get_all(&mut flight, Ticket::new("all")).await;
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), ROWS);
    server.shutdown().await.unwrap();
}

/// A client that drops its DoGet stream mid-file does not disturb others,
/// on another connection or its own.
#[tokio::test]
async fn flight_cancel_mid_stream_and_others_go_on() {
    let rows = 20_000;
    let (dir, server) = start_with(rows, 128, 1000, |_| {}).await;
    let path = dir.path().join("sample.arrow");
    let mut first = FlightClient::new(channel(&server).await);
    let mut stream = first.do_get(Ticket::new("all")).await.unwrap();
    let batch = stream.try_next().await.unwrap().unwrap();
    assert_eq!(batch.num_rows(), 1000);
    drop(stream);
    let mut other = FlightClient::new(channel(&server).await);
    let got: Vec<RecordBatch> = do_get_all(&mut other, Ticket::new("all")).await;
    same_rows(&got, &file_tail(&path, 0));
    // The cancelling client's connection serves its next call.
    let got: Vec<RecordBatch> = do_get_all(&mut first, after_row(rows - 11)).await;
    same_rows(&got, &file_tail(&path, rows - 10));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_streams_finish_then_cuts_them() {
    let rows = 20_000;
    let (_dir, server) = start_with(rows, 128, 1000, |c| {
        c.grace_period = Duration::from_millis(200);
    })
    .await;
    let addr = server.local_addr();
    let mut c = client(&server).await;
    let mut stream = open_stream(&mut c, "", 1).await;
    assert!(stream.message().await.unwrap().is_some());
    let stats = server.stats().clone();
    // The client stops reading; shutdown returns once the grace period is over.
    server.shutdown().await.unwrap();
    // The stream was ended early: either an error, or it stops short of the file.
    let mut received = 1;
    let outcome = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    assert!(received < rows, "received {received} rows after shutdown");
    assert!(
        outcome.is_some(),
        "the cut stream must end with an error status"
    );
    eventually("the stream is dropped", || stats.active() == 0).await;
    assert_eq!(stats.completed(), 0);
    // No new connections.
    let refused = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err());
}

// ---------------------------------------------------------- lazy decoding

/// A file damaged inside batch 10 (rows 640..704) is served: start-up does
/// not decode batch bodies. A stream delivers every chunk before the damaged
/// batch, then ends with DATA_LOSS naming it; streams that skip it are whole.
#[tokio::test]
async fn a_damaged_batch_ends_the_stream_with_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.arrow");
    assert_eq!(
        common::write_damaged_sample_file(&path, ROWS, DIM, 64, 700),
        10
    );
    let server = Server::spawn(ServerConfig::new(&path, local()))
        .await
        .unwrap();
    let mut c = client(&server).await;

    let mut stream = open_stream(&mut c, "", 100).await;
    let mut chunks = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(chunk)) => chunks.push(chunk),
            Ok(None) => panic!("the stream ended cleanly after {} chunks", chunks.len()),
            Err(status) => break status,
        }
    };
    // Chunks 0..600 are whole; 600..700 reaches batch 10.
    check(&chunks, 0, 600, 100, DIM);
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("the served file is damaged: record batch 10 cannot be decoded ("),
        "{}",
        status.message()
    );

    // Resuming just before the damage fails at once, every time (the error is cached).
    let after_599 = uuid_text(common::key_for_row(599));
    for _ in 0..2 {
        let err = pull(&mut c, &after_599, 100).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss);
        assert!(
            err.message().contains("record batch 10"),
            "{}",
            err.message()
        );
    }
    // Resuming past batch 10 streams the rest; small chunks before it stop at its edge.
    let chunks = pull(&mut c, &uuid_text(common::key_for_row(703)), 50)
        .await
        .unwrap();
    check(&chunks, 704, ROWS, 50, DIM);
    let mut stream = open_stream(&mut c, &uuid_text(common::key_for_row(599)), 40).await;
    let first = stream.message().await.unwrap().unwrap();
    check(&[first], 600, 640, 40, DIM);
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert_eq!(server.stats().completed(), 1);
    server.shutdown().await.unwrap();
}

/// A damaged record batch header (a buffer offset past the body: the issue's
/// `ff ff ff 7f` and one-bit flip) panicked a tokio worker on every request,
/// which ended CANCELLED; now every request ends with DATA_LOSS naming the
/// batch (the failed decode is cached), and the other batches stream.
#[tokio::test]
async fn a_damaged_batch_header_ends_the_stream_with_data_loss() {
    for damage in [
        common::HeaderDamage::HugeOffset,
        common::HeaderDamage::BitFlip,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.arrow");
        common::write_sample_file(&path, ROWS, DIM, 64);
        common::damage_batch_header(&path, 3, damage);
        let server = Server::spawn(ServerConfig::new(&path, local()))
            .await
            .unwrap();
        let mut c = client(&server).await;
        for _ in 0..3 {
            let err = pull(&mut c, "", 64).await.unwrap_err();
            assert_eq!(err.code(), Code::DataLoss, "{damage:?}: {err:?}");
            assert!(
                err.message().starts_with(
                    "the served file is damaged: record batch 3 cannot be decoded (buffer "
                ),
                "{}",
                err.message()
            );
            assert!(
                err.message().contains("lies outside the"),
                "{}",
                err.message()
            );
        }
        let chunks = pull(&mut c, &uuid_text(common::key_for_row(255)), 64)
            .await
            .unwrap();
        check(&chunks, 256, ROWS, 64, DIM);
        server.shutdown().await.unwrap();
    }
}
