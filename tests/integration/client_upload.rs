//! `embedstream upload` against an in-test Batch Server receiver, under both
//! package names, with failures injected to exercise the retry policy.
use crate::common;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use embedstream::{
    client::deadline::Timeouts,
    client::upload::{upload, UploadError, UploadOptions},
    progress::ProgressMode,
    proto::{
        embedding_stream_service_server::{EmbeddingStreamService, EmbeddingStreamServiceServer},
        ingest_data_request::RequestType,
        IngestDataRequest, IngestDataResponse, IngestMetadata, RowChunk, StreamEmbeddingRequest,
        ALIAS_PACKAGE, PACKAGE,
    },
    rows::RowMapping,
};
use tonic::{codegen::http, server::NamedService, Request, Response, Status, Streaming};

/// What the receiver does on each attempt.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Read everything, answer success.
    Accept,
    /// On the first attempt, read `n` data chunks then fail UNAVAILABLE; accept later ones.
    FailFirstAfter(usize),
    /// Always answer this code at once.
    AlwaysFail(tonic::Code),
    /// Read everything, answer success=false.
    ReportFailure,
    /// Read everything, answer success but count one data chunk.
    UnderCount,
}

/// What one attempt delivered.
#[derive(Debug, Default, Clone)]
struct Attempt {
    metadata: Option<IngestMetadata>,
    /// Whether a data chunk came before the metadata (or a second metadata).
    out_of_order: bool,
    chunks: Vec<Vec<u8>>,
    /// Whether the request stream ended cleanly (the client said "that's all").
    completed: bool,
}

#[derive(Clone)]
struct Receiver {
    behaviour: Behaviour,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

#[tonic::async_trait]
impl EmbeddingStreamService for Receiver {
    type StreamEmbeddingStream = futures::stream::Empty<Result<RowChunk, Status>>;

    async fn stream_embedding(
        &self,
        _request: Request<StreamEmbeddingRequest>,
    ) -> Result<Response<Self::StreamEmbeddingStream>, Status> {
        Err(Status::unimplemented("receiver only"))
    }

    async fn ingest_data_stream(
        &self,
        request: Request<Streaming<IngestDataRequest>>,
    ) -> Result<Response<IngestDataResponse>, Status> {
        let index = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(Attempt::default());
            attempts.len() - 1
        };
        if let Behaviour::AlwaysFail(code) = self.behaviour {
            return Err(Status::new(code, "receiver says no"));
        }
        let mut stream = request.into_inner();
        let mut data_chunks = 0usize;
        while let Some(message) = stream.message().await? {
            let mut attempts = self.attempts.lock().unwrap();
            let attempt = &mut attempts[index];
            match message.request_type {
                Some(RequestType::Metadata(m)) => {
                    if attempt.metadata.is_some() || !attempt.chunks.is_empty() {
                        attempt.out_of_order = true;
                    }
                    attempt.metadata = Some(m);
                }
                Some(RequestType::DataChunk(c)) => {
                    if attempt.metadata.is_none() {
                        attempt.out_of_order = true;
                    }
                    attempt.chunks.push(c);
                    data_chunks += 1;
                }
                None => attempt.out_of_order = true,
            }
            drop(attempts);
            if let Behaviour::FailFirstAfter(n) = self.behaviour {
                if index == 0 && data_chunks == n {
                    return Err(Status::unavailable("receiver restarting"));
                }
            }
        }
        self.attempts.lock().unwrap()[index].completed = true;
        let success = !matches!(self.behaviour, Behaviour::ReportFailure);
        Ok(Response::new(IngestDataResponse {
            success,
            received_chunks: if matches!(self.behaviour, Behaviour::UnderCount) {
                1
            } else {
                data_chunks as i32
            },
            message: if success {
                format!("stored {data_chunks} chunks")
            } else {
                "vector_dimension 384 does not match the table's 1536".into()
            },
        }))
    }
}

/// Serves the generated service under `com.alpha.backend.grpc` by rewriting
/// the request path to the canonical package.
#[derive(Clone)]
struct Alias<S>(S);

impl<S> NamedService for Alias<S> {
    const NAME: &'static str = "com.alpha.backend.grpc.EmbeddingStreamService";
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for Alias<S>
where
    S: tonic::codegen::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        if let Some(method) = path.strip_prefix("/com.alpha.backend.grpc.EmbeddingStreamService/") {
            let uri = format!("/embedding.EmbeddingStreamService/{method}");
            *req.uri_mut() = uri.parse().unwrap();
        }
        self.0.call(req)
    }
}

/// Start a receiver on an ephemeral port under `package`.
async fn start(package: &str, behaviour: Behaviour) -> (SocketAddr, Arc<Mutex<Vec<Attempt>>>) {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let service = EmbeddingStreamServiceServer::new(Receiver {
        behaviour,
        attempts: attempts.clone(),
    })
    .max_decoding_message_size(64 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = if package == ALIAS_PACKAGE {
        tonic::transport::Server::builder().add_service(Alias(service))
    } else {
        tonic::transport::Server::builder().add_service(service)
    };
    tokio::spawn(router.serve_with_incoming(incoming));
    (addr, attempts)
}

fn options(file: &Path, to: String, package: &str) -> UploadOptions {
    UploadOptions {
        file: file.to_path_buf(),
        to,
        domain: "recruit".into(),
        chunk_size: 7,
        max_attempts: 3,
        service_package: package.into(),
        key_column: None,
        mapping: RowMapping::default(),
        initial_backoff: Duration::from_millis(10),
        progress: ProgressMode::Hidden,
        timeouts: Timeouts::default(),
        secure: embedstream::client::secure::SecureClient::plaintext(),
    }
}

const ROWS: usize = 50;
const DIM: usize = 5;

fn sample(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("sample.arrow");
    // Batches of 8 rows so chunks of 7 straddle batch boundaries.
    common::write_sample_file(&path, ROWS, DIM, 8);
    path
}

/// Every row of the file exactly once, in order, with the right values.
fn check_attempt(attempt: &Attempt, chunk_size: usize) {
    assert!(attempt.completed, "the request stream ended cleanly");
    assert!(!attempt.out_of_order, "metadata must come first, once");
    let metadata = attempt.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.domain, "recruit");
    assert_eq!(metadata.file_name, "sample.arrow");
    assert_eq!(metadata.vector_dimension, DIM as i32);
    assert_eq!(attempt.chunks.len(), ROWS.div_ceil(chunk_size));
    let mut row = 0usize;
    for chunk in &attempt.chunks {
        let parsed: serde_json::Value = serde_json::from_slice(chunk).expect("chunk is JSON");
        let objects = parsed.as_array().expect("chunk is an array");
        assert!(!objects.is_empty() && objects.len() <= chunk_size);
        for object in objects {
            let object = object.as_object().expect("row is an object");
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "company_name",
                    "english_level",
                    "exp_years",
                    "id",
                    "primary_keyword",
                    "vector"
                ]
            );
            let expected_id = uuid::Uuid::from_bytes(common::key_for_row(row)).to_string();
            assert_eq!(object["id"], expected_id.as_str());
            assert_eq!(object["company_name"], common::company(row).as_str());
            let years: i64 = common::exp_years(row)
                .trim_end_matches('y')
                .parse()
                .unwrap();
            assert_eq!(object["exp_years"], years);
            assert_eq!(object["english_level"], common::english_level(row));
            assert_eq!(object["primary_keyword"], common::primary_keyword(row));
            let vector = object["vector"].as_array().expect("vector is an array");
            assert_eq!(vector.len(), DIM);
            for (j, v) in vector.iter().enumerate() {
                let v = v.as_f64().expect("number") as f32;
                assert_eq!(
                    v.to_bits(),
                    common::vector_value(row, j).to_bits(),
                    "row {row} [{j}]"
                );
            }
            row += 1;
        }
    }
    assert_eq!(row, ROWS, "every row exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_every_row_under_both_packages() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    for package in [ALIAS_PACKAGE, PACKAGE] {
        let (addr, attempts) = start(package, Behaviour::Accept).await;
        let report = upload(&options(&file, addr.to_string(), package))
            .await
            .unwrap();
        assert_eq!(report.attempts, 1);
        assert_eq!((report.rows, report.chunks), (ROWS, ROWS.div_ceil(7)));
        assert!(report.response.success);
        assert_eq!(report.response.received_chunks, ROWS.div_ceil(7) as i32);
        let attempts = attempts.lock().unwrap();
        assert_eq!(attempts.len(), 1, "{package}");
        check_attempt(&attempts[0], 7);
        assert_eq!(
            report.json_bytes,
            attempts[0]
                .chunks
                .iter()
                .map(|c| c.len() as u64)
                .sum::<u64>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_package_is_unimplemented_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let (addr, attempts) = start(PACKAGE, Behaviour::Accept).await;
    let err = upload(&options(&file, addr.to_string(), ALIAS_PACKAGE))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UploadError::Rejected {
                code: tonic::Code::Unimplemented,
                attempt: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("check --service-package"), "{err}");
    assert!(attempts.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_stream_is_retried_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let (addr, attempts) = start(ALIAS_PACKAGE, Behaviour::FailFirstAfter(3)).await;
    let report = upload(&options(&file, addr.to_string(), ALIAS_PACKAGE))
        .await
        .unwrap();
    assert_eq!(report.attempts, 2);
    assert_eq!(report.rows, ROWS);
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0].chunks.len(),
        3,
        "the first attempt stopped after 3 chunks"
    );
    check_attempt(&attempts[1], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_exhaust_the_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    for attempts_allowed in [1u32, 3] {
        let (addr, attempts) = start(
            ALIAS_PACKAGE,
            Behaviour::AlwaysFail(tonic::Code::Unavailable),
        )
        .await;
        let mut opts = options(&file, addr.to_string(), ALIAS_PACKAGE);
        opts.max_attempts = attempts_allowed;
        let err = upload(&opts).await.unwrap_err();
        assert_eq!(attempts.lock().unwrap().len(), attempts_allowed as usize);
        assert_eq!(
            err.to_string(),
            format!("{addr}: IngestDataStream failed {attempts_allowed} time(s), giving up (raise --max-retries to try longer); last error: Unavailable: receiver says no")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_transient_codes_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    for code in [
        tonic::Code::DeadlineExceeded,
        tonic::Code::ResourceExhausted,
        tonic::Code::Aborted,
    ] {
        let (addr, attempts) = start(PACKAGE, Behaviour::AlwaysFail(code)).await;
        let mut opts = options(&file, addr.to_string(), PACKAGE);
        opts.max_attempts = 2;
        let err = upload(&opts).await.unwrap_err();
        assert!(
            matches!(err, UploadError::RetriesExhausted { attempts: 2, .. }),
            "{code:?}: {err}"
        );
        assert_eq!(attempts.lock().unwrap().len(), 2, "{code:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    // Bind then drop: the port is (almost certainly) closed now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut opts = options(&file, addr.to_string(), ALIAS_PACKAGE);
    opts.max_attempts = 2;
    let err = upload(&opts).await.unwrap_err();
    match &err {
        UploadError::RetriesExhausted { attempts, code, .. } => {
            assert_eq!((*attempts, *code), (2, tonic::Code::Unavailable), "{err}")
        }
        other => panic!("expected RetriesExhausted, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_transient_errors_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let (addr, attempts) = start(
        ALIAS_PACKAGE,
        Behaviour::AlwaysFail(tonic::Code::InvalidArgument),
    )
    .await;
    let err = upload(&options(&file, addr.to_string(), ALIAS_PACKAGE))
        .await
        .unwrap_err();
    assert_eq!(attempts.lock().unwrap().len(), 1);
    assert_eq!(
        err.to_string(),
        format!("{addr}: IngestDataStream failed with InvalidArgument on attempt 1, not retried: receiver says no (the server refused the data; see its message)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_false_is_a_failure_with_the_server_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let (addr, attempts) = start(ALIAS_PACKAGE, Behaviour::ReportFailure).await;
    let err = upload(&options(&file, addr.to_string(), ALIAS_PACKAGE))
        .await
        .unwrap_err();
    assert_eq!(
        attempts.lock().unwrap().len(),
        1,
        "a refusal is not retried"
    );
    assert_eq!(
        err.to_string(),
        format!("{addr}: the Batch Server refused the upload (received 8 chunk(s)): vector_dimension 384 does not match the table's 1536")
    );
}

#[tokio::test]
async fn a_received_chunks_mismatch_is_data_loss_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let (addr, attempts) = start(PACKAGE, Behaviour::UnderCount).await;
    let err = upload(&options(&file, addr.to_string(), PACKAGE))
        .await
        .unwrap_err();
    assert_eq!(attempts.lock().unwrap().len(), 3, "retried as transient");
    assert_eq!(
        err.to_string(),
        format!("{addr}: IngestDataStream failed 3 time(s), giving up (raise --max-retries to try longer); last error: DataLoss: the receiver answered success but counted 1 data chunk(s) of the 8 sent: the upload is incomplete")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let mut opts = options(&file, "127.0.0.1:1".into(), "com..alpha");
    let err = upload(&opts).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--service-package `com..alpha` is not a protobuf package name"),
        "{err}"
    );
    opts.service_package = PACKAGE.into();
    opts.to = "no-port".into();
    let err = upload(&opts).await.unwrap_err();
    assert!(err.to_string().contains("(no port)"), "{err}");
    opts.to = "127.0.0.1:1".into();
    opts.chunk_size = 0;
    assert_eq!(
        upload(&opts).await.unwrap_err().to_string(),
        "--chunk-size must be at least 1"
    );
    opts.chunk_size = 7;
    opts.mapping.english_level = "Level".into();
    let err = upload(&opts).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("RecruitRow.english_level reads column `Level`"),
        "{err}"
    );
    opts.mapping = RowMapping::default();
    opts.file = dir.path().join("missing.arrow");
    let err = upload(&opts).await.unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[test]
fn cli_flags_parse_and_refuse_zero() {
    use clap::Parser;
    let cli = embedstream::cli::Cli::try_parse_from([
        "embedstream",
        "upload",
        "f.arrow",
        "--to",
        "h:1",
        "--max-retries",
        "0",
    ]);
    let err = cli.unwrap_err().to_string();
    assert!(err.contains("--max-retries"), "{err}");
    let cli = embedstream::cli::Cli::try_parse_from([
        "embedstream",
        "upload",
        "f.arrow",
        "--initial-backoff",
        "10ms",
    ])
    .unwrap();
    match cli.command {
        embedstream::cli::Command::Upload(args) => {
            assert_eq!(args.initial_backoff, Duration::from_millis(10));
            assert_eq!(args.service_package, ALIAS_PACKAGE);
            assert_eq!(args.max_retries, 3);
            assert_eq!(args.chunk_size, 300);
        }
        other => panic!("parsed as {other:?}"),
    }
}

/// A file whose row `bad` has a NaN component is refused before anything
/// is sent (a call cancelled mid-stream can look like a complete upload to
/// the receiver, so nothing may be sent before the data is known to encode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_json_cannot_carry_cancels_the_upload() {
    use arrow_array::{
        builder::{FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder, StringBuilder},
        ArrayRef, RecordBatch,
    };
    use arrow_schema::{DataType, Field, Schema};
    let (rows, bad) = (40usize, 30usize);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nan.arrow");
    let item = Arc::new(Field::new_list_field(DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        embedstream::format::key_field("uuid"),
        Field::new("Company Name", DataType::Utf8, false),
        Field::new("Exp Years", DataType::Utf8, false),
        Field::new("English Level", DataType::Utf8, false),
        Field::new("Primary Keyword", DataType::Utf8, false),
        Field::new("v", DataType::FixedSizeList(item.clone(), 2), false),
    ]));
    let mut keys = FixedSizeBinaryBuilder::new(16);
    let mut strings: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), 2).with_field(item);
    for i in 0..rows {
        keys.append_value(common::key_for_row(i)).unwrap();
        for s in &mut strings {
            s.append_value("1y");
        }
        let first = if i == bad { f32::NAN } else { i as f32 };
        vectors.values().append_slice(&[first, 0.5]);
        vectors.append(true);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(keys.finish())];
    columns.extend(strings.iter_mut().map(|s| Arc::new(s.finish()) as ArrayRef));
    columns.push(Arc::new(vectors.finish()));
    let mut writer =
        arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(&file).unwrap(), &schema)
            .unwrap();
    writer
        .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
        .unwrap();
    writer.finish().unwrap();

    let (addr, attempts) = start(ALIAS_PACKAGE, Behaviour::Accept).await;
    let mut opts = options(&file, addr.to_string(), ALIAS_PACKAGE);
    opts.chunk_size = 10;
    let err = upload(&opts).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: row {bad} ({}): vector component 0 is NaN, which JSON cannot carry; fix the source data and convert again",
            file.display(),
            uuid::Uuid::from_bytes(common::key_for_row(bad))
        )
    );
    assert!(attempts.lock().unwrap().is_empty(), "nothing sent");
}

/// A file damaged inside a batch body opens (the store decodes batches on
/// first use), and the upload fails before sending anything, naming the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_batch_fails_the_upload_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("damaged.arrow");
    // Batches of 8 rows: row 21 is in batch 2.
    assert_eq!(
        common::write_damaged_sample_file(&file, ROWS, DIM, 8, 21),
        2
    );
    let (addr, attempts) = start(ALIAS_PACKAGE, Behaviour::Accept).await;
    let opts = options(&file, addr.to_string(), ALIAS_PACKAGE);
    let err = upload(&opts).await.unwrap_err();
    assert!(matches!(err, UploadError::Damaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: record batch 2 cannot be decoded (",
            file.display()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("; the file is damaged: convert the source again with `embedstream convert`"),
        "{msg}"
    );
    assert!(attempts.lock().unwrap().is_empty(), "nothing sent");
}

/// A damaged record batch header (a buffer offset past the body) panicked
/// `upload` inside arrow-buffer; now it fails before sending, naming the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_batch_header_fails_the_upload_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    common::damage_batch_header(&file, 2, common::HeaderDamage::HugeOffset);
    let (addr, attempts) = start(ALIAS_PACKAGE, Behaviour::Accept).await;
    let opts = options(&file, addr.to_string(), ALIAS_PACKAGE);
    let err = upload(&opts).await.unwrap_err();
    assert!(matches!(err, UploadError::Damaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: record batch 2 cannot be decoded (buffer 3 (offset ",
            file.display()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with(
            "-byte body); the file is damaged: convert the source again with `embedstream convert`"
        ),
        "{msg}"
    );
    assert!(attempts.lock().unwrap().is_empty(), "nothing sent");
}

/// `upload` prints its report at the end; with stdout a closed pipe it
/// exits 0 without a word (println! panicked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_exits_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = sample(dir.path());
    let (addr, attempts) = start(ALIAS_PACKAGE, Behaviour::Accept).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_embedstream"))
            .arg("upload")
            .arg(&file)
            .args([
                "--to",
                &addr.to_string(),
                "--service-package",
                ALIAS_PACKAGE,
            ])
            .stdout(common::closed_pipe())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(attempts.lock().unwrap().len(), 1, "the upload happened");
}
