//! `embedstream upload`: send a converted file to the Batch Server's
//! `IngestDataStream` (client streaming): an `IngestMetadata` first, then the
//! rows as JSON chunks, with retries on transient failures.
//!
//! The chunks are produced lazily by a blocking task into a bounded channel
//! (at most [`CHANNEL_CHUNKS`] encoded chunks wait for the network), so memory
//! stays flat whatever the file size, and JSON encoding overlaps sending.
//! The RPC has no resume: a retried attempt sends every row again, which is
//! what the Batch Server expects (it ingests a whole upload or none of it).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::http::uri::PathAndQuery;

use super::{
    deadline::{TimeoutArgs, Timeouts, KEEPALIVE_UPLOAD},
    is_transient,
    json::{self, JsonError},
    local_address,
    secure::{SecureClient, SecureClientArgs, SecureClientError, TokenInterceptor},
    AddressError,
};
use crate::{
    dataset::{Dataset, DatasetError, DatasetOptions},
    progress::{Progress, ProgressMode, Unit},
    proto::{
        ingest_data_request::RequestType, IngestDataRequest, IngestDataResponse, IngestMetadata,
        ALIAS_PACKAGE, SERVICE,
    },
    rows::RowMapping,
    store::BatchError,
    wire,
};

/// Encoded chunks allowed to wait for the network.
pub const CHANNEL_CHUNKS: usize = 4;
/// grpc-java's default inbound message limit; a bigger chunk is refused by a
/// Batch Server that kept the default.
const GRPC_JAVA_DEFAULT_LIMIT: usize = 4 << 20;
/// Backoff never grows beyond this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Flags of `embedstream upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The converted Arrow file to upload (`embedstream convert` writes one).
    pub file: PathBuf,

    /// The Batch Server, HOST:PORT. Default: $BATCH_SERVER_HOST:$BATCH_SERVER_PORT
    /// (localhost:50052 when they are unset), the Python tool's settings.
    #[arg(long)]
    pub to: Option<String>,

    /// The `domain` sent in the metadata message.
    #[arg(long, default_value = "recruit")]
    pub domain: String,

    /// Rows per JSON data chunk. grpc-java refuses messages over 4 MiB by
    /// default: 300 rows of 384-d vectors are about 1.3 MB, of 1536-d about
    /// 5 MB, so lower it for wide vectors unless the server raised its limit.
    #[arg(long, default_value_t = wire::DEFAULT_CHUNK_SIZE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,

    /// Attempts in total, counting the first one (like the Python tool,
    /// whose max_retries=3 meant 3 attempts): 1 disables retrying. Only
    /// transient failures are retried (UNAVAILABLE, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED, ABORTED, a refused or dropped connection), with an
    /// exponential backoff from 1 s; every attempt sends the whole file again.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_retries: u32,

    /// The protobuf package the Batch Server registers its service under.
    /// Default `com.alpha.backend.grpc`: the Batch Server revision that added
    /// IngestDataStream is the one that renamed the package from `embedding`,
    /// so a server with this RPC answers there; `embedding` reaches servers
    /// built from the original package name (e.g. embedstream's own).
    #[arg(long, default_value = ALIAS_PACKAGE)]
    pub service_package: String,

    /// Name the key column when the file's metadata does not.
    #[arg(long)]
    pub key_column: Option<String>,

    /// Which columns feed the RecruitRow fields.
    #[command(flatten)]
    pub mapping: RowMapping,

    /// Deadlines of each attempt.
    #[command(flatten)]
    pub timeouts: TimeoutArgs,

    /// First backoff before a retry (doubles each time); for tests.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, hide = true)]
    pub initial_backoff: Duration,

    /// TLS and token.
    #[command(flatten)]
    pub secure: SecureClientArgs,
}

/// Everything `upload` needs; [`run`] builds it from the flags.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The converted file.
    pub file: PathBuf,
    /// HOST:PORT (or `http://HOST:PORT`).
    pub to: String,
    /// Metadata `domain`.
    pub domain: String,
    /// Rows per data chunk (≥ 1).
    pub chunk_size: usize,
    /// Attempts in total (≥ 1).
    pub max_attempts: u32,
    /// Package of the service (`com.alpha.backend.grpc` or `embedding`).
    pub service_package: String,
    /// Key column override.
    pub key_column: Option<String>,
    /// Columns feeding the RecruitRow fields.
    pub mapping: RowMapping,
    /// Backoff before the first retry; doubled for each later one.
    pub initial_backoff: Duration,
    /// Progress display.
    pub progress: ProgressMode,
    /// Connect timeout and idle deadline of each attempt.
    pub timeouts: Timeouts,
    /// TLS and token.
    pub secure: SecureClient,
}

/// A successful upload.
#[derive(Debug, Clone)]
pub struct UploadReport {
    /// The server's answer (its `success` is true).
    pub response: IngestDataResponse,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// Rows sent in the successful attempt.
    pub rows: usize,
    /// Data chunks sent in the successful attempt.
    pub chunks: usize,
    /// JSON bytes sent in the successful attempt.
    pub json_bytes: u64,
    /// Time of the successful attempt.
    pub elapsed: Duration,
    /// Time of the whole upload, backoffs and failed attempts included.
    pub total_elapsed: Duration,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The file cannot be opened as a converted file, or lacks a RecruitRow column.
    #[error(transparent)]
    Open(#[from] DatasetError),
    /// A record batch cannot be decoded (found when its rows are first read,
    /// before anything is sent).
    #[error("{path}: {source}; the file is damaged: convert the source again with `embedstream convert`")]
    Damaged {
        /// The file.
        path: String,
        /// Which batch, and why.
        source: BatchError,
    },
    /// A row cannot be written as JSON.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// The cause.
        source: JsonError,
    },
    /// Bad `--to`.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Bad TLS or token settings.
    #[error(transparent)]
    Secure(#[from] SecureClientError),
    /// Bad `--service-package`.
    #[error("--service-package `{0}` is not a protobuf package name (letters, digits, `_`, dot-separated), e.g. com.alpha.backend.grpc or embedding")]
    Package(String),
    /// `--chunk-size 0` or `--max-retries 0`.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A failure that retrying cannot fix.
    #[error("{to}: IngestDataStream failed with {code:?} on attempt {attempt}, not retried: {message}{hint}")]
    Rejected {
        /// The server.
        to: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
        /// Which attempt.
        attempt: u32,
        /// What to do about it.
        hint: &'static str,
    },
    /// Transient failures on every attempt.
    #[error("{to}: IngestDataStream failed {attempts} time(s), giving up (raise --max-retries to try longer); last error: {code:?}: {message}")]
    RetriesExhausted {
        /// The server.
        to: String,
        /// Attempts made.
        attempts: u32,
        /// Last status code.
        code: tonic::Code,
        /// Last message.
        message: String,
    },
    /// The server answered `success = false`.
    #[error("{to}: the Batch Server refused the upload (received {received_chunks} chunk(s)): {message}")]
    ServerFailure {
        /// The server.
        to: String,
        /// Chunks it says it received.
        received_chunks: i32,
        /// Its message.
        message: String,
    },
    /// The encoding task died (a bug).
    #[error("internal error: the chunk encoder stopped unexpectedly ({0})")]
    Encoder(String),
}

/// The RPC path for `package`: `/PACKAGE.EmbeddingStreamService/IngestDataStream`.
pub fn ingest_path(package: &str) -> Result<PathAndQuery, UploadError> {
    let valid = !package.is_empty()
        && package.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !valid {
        return Err(UploadError::Package(package.to_string()));
    }
    PathAndQuery::try_from(format!("/{package}.{SERVICE}/IngestDataStream"))
        .map_err(|_| UploadError::Package(package.to_string()))
}

/// One attempt's outcome, before classification.
enum Attempt {
    Done(IngestDataResponse, Sent),
    Status(tonic::Status),
    Encode(UploadError),
}

/// Counters of one attempt.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    rows: usize,
    chunks: usize,
    bytes: u64,
}

/// Upload `opts.file` to `opts.to`. Retries transient failures up to
/// `opts.max_attempts` attempts in total.
pub async fn upload(opts: &UploadOptions) -> Result<UploadReport, UploadError> {
    if opts.chunk_size == 0 {
        return Err(UploadError::Zero("--chunk-size"));
    }
    if opts.max_attempts == 0 {
        return Err(UploadError::Zero("--max-retries"));
    }
    let path = ingest_path(&opts.service_package)?;
    let endpoint = opts
        .timeouts
        .apply(opts.secure.endpoint(&opts.to)?, KEEPALIVE_UPLOAD);
    let shown = opts.file.display().to_string();
    let dataset = Arc::new(Dataset::open(
        &opts.file,
        &DatasetOptions {
            key_column: opts.key_column.clone(),
            mapping: opts.mapping.clone(),
            ..DatasetOptions::default()
        },
    )?);
    let rows = Arc::new(UploadRows::new(dataset.clone(), shown));
    // Refuse values JSON cannot carry before sending anything: once the call
    // is open there is no way to abort it that a receiver is sure to see as
    // a failure (with tonic, dropping a client-streaming call was observed to
    // end the request stream cleanly). This reads every row, so it also
    // finds a damaged batch before anything is sent.
    rows.check_finite()?;
    let metadata = IngestMetadata {
        domain: opts.domain.clone(),
        file_name: file_name(&opts.file),
        vector_dimension: i32::try_from(rows.dim).unwrap_or(i32::MAX),
    };

    let total_rows = dataset.num_rows();
    let progress = Progress::new("upload", Some(total_rows as u64), Unit::Rows, opts.progress);
    let started = Instant::now();
    let mut backoff = opts.initial_backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if attempt > 1 {
            progress.restart(&format!("attempt {attempt}/{}", opts.max_attempts));
        }
        let attempt_started = Instant::now();
        let outcome = attempt_once(
            Target {
                endpoint: &endpoint,
                token: opts.secure.interceptor(),
                path: path.clone(),
            },
            metadata.clone(),
            rows.clone(),
            opts.chunk_size,
            &progress,
            &opts.timeouts,
        )
        .await;
        let (status, transient) = match outcome {
            Attempt::Done(response, sent) => {
                if !response.success {
                    progress.finish();
                    return Err(UploadError::ServerFailure {
                        to: opts.to.clone(),
                        received_chunks: response.received_chunks,
                        message: response.message,
                    });
                }
                if usize::try_from(response.received_chunks).ok() != Some(sent.chunks) {
                    // Success with a count that differs from what was sent:
                    // data was lost on the way. Never report it as done;
                    // retry it as a transient failure (every attempt sends
                    // the whole file).
                    let lost = tonic::Status::data_loss(format!(
                        "the receiver answered success but counted {} data chunk(s) of the {} sent: the upload is incomplete",
                        response.received_chunks, sent.chunks
                    ));
                    (lost, true)
                } else {
                    progress.finish();
                    return Ok(UploadReport {
                        response,
                        attempts: attempt,
                        rows: sent.rows,
                        chunks: sent.chunks,
                        json_bytes: sent.bytes,
                        elapsed: attempt_started.elapsed(),
                        total_elapsed: started.elapsed(),
                    });
                }
            }
            Attempt::Encode(err) => return Err(err),
            Attempt::Status(status) => {
                let transient = is_transient(&status);
                (status, transient)
            }
        };
        if !transient {
            return Err(UploadError::Rejected {
                to: opts.to.clone(),
                code: status.code(),
                message: status.message().to_string(),
                attempt,
                hint: hint_for(status.code()),
            });
        }
        if attempt >= opts.max_attempts {
            return Err(UploadError::RetriesExhausted {
                to: opts.to.clone(),
                attempts: attempt,
                code: status.code(),
                message: status.message().to_string(),
            });
        }
        tracing::warn!(
            "upload attempt {attempt}/{} failed ({:?}: {}); retrying in {}",
            opts.max_attempts,
            status.code(),
            status.message(),
            humantime::format_duration(backoff)
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The file's rows as RecruitRow views (the same data set handle `serve` encodes from).
struct UploadRows {
    dataset: Arc<Dataset>,
    dim: usize,
    /// The file, as shown in errors.
    path: String,
}

impl UploadRows {
    fn new(dataset: Arc<Dataset>, path: String) -> Self {
        UploadRows {
            dim: dataset.vector_dim(),
            dataset,
            path,
        }
    }

    fn json_error(&self, source: JsonError) -> UploadError {
        UploadError::Json {
            path: self.path.clone(),
            source,
        }
    }

    fn damaged(&self, source: BatchError) -> UploadError {
        UploadError::Damaged {
            path: self.path.clone(),
            source,
        }
    }

    /// The first non-finite vector component, if any, or the first batch
    /// that cannot be decoded.
    fn check_finite(&self) -> Result<(), UploadError> {
        let mut found = None;
        let mut row = 0usize;
        let table = self.dataset.table();
        table
            .for_segments(0, table.num_rows(), |columns, first, stop| {
                for i in first..stop {
                    if found.is_some() {
                        return;
                    }
                    let vector = columns.vector(i);
                    if let Some((component, value)) =
                        vector.iter().enumerate().find(|(_, v)| !v.is_finite())
                    {
                        found = Some(JsonError::NonFinite {
                            row,
                            id: columns.id(i).to_string(),
                            component,
                            value,
                        });
                    }
                    row += 1;
                }
            })
            .map_err(|e| self.damaged(e))?;
        found.map_or(Ok(()), |e| Err(self.json_error(e)))
    }

    /// A guess at a chunk's JSON size, so its buffer is allocated once:
    /// ~12 bytes per component, ~200 for the other fields.
    fn json_size_hint(&self, rows: usize) -> usize {
        rows.saturating_mul(self.dim.saturating_mul(12).saturating_add(200))
            .saturating_add(2)
    }

    /// Write rows `start..end` (global numbers) as one JSON array.
    fn encode_chunk(&self, start: usize, end: usize, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        buf.push(b'[');
        let mut row = start;
        let mut id = [0u8; 36];
        let mut result = Ok(());
        self.dataset
            .table()
            .for_segments(start, end, |columns, first, stop| {
                for i in first..stop {
                    if result.is_err() {
                        return;
                    }
                    let json = json::JsonRow {
                        row,
                        id: columns.id_str(i, &mut id),
                        company_name: columns.company_name(i),
                        exp_years: columns.exp_years(i),
                        english_level: columns.english_level(i),
                        primary_keyword: columns.primary_keyword(i),
                        vector: columns.vector(i).iter(),
                    };
                    result = json::write_row(buf, json, row == start);
                    row += 1;
                }
            })
            .map_err(|e| self.damaged(e))?;
        result.map_err(|e| self.json_error(e))?;
        buf.push(b']');
        Ok(())
    }
}

/// What to do about a non-transient code.
fn hint_for(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unimplemented => {
            " (the server has no IngestDataStream under this package: check --service-package and --to)"
        }
        tonic::Code::InvalidArgument => " (the server refused the data; see its message)",
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            " (the server refused this client: check --token-file or EMBEDSTREAM_TOKEN)"
        }
        _ => "",
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Where an attempt goes: the server, the token it is sent, the method.
struct Target<'a> {
    endpoint: &'a tonic::transport::Endpoint,
    token: TokenInterceptor,
    path: PathAndQuery,
}

/// One attempt: connect, stream metadata + chunks, await the response.
async fn attempt_once(
    Target {
        endpoint,
        token,
        path,
    }: Target<'_>,
    metadata: IngestMetadata,
    rows: Arc<UploadRows>,
    chunk_size: usize,
    progress: &Progress,
    timeouts: &Timeouts,
) -> Attempt {
    let channel = match timeouts.connect(endpoint).await {
        Ok(channel) => channel,
        Err(status) => return Attempt::Status(status),
    };
    let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(
        channel, token,
    ));
    let ready = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::from_error(Box::new(e)))
    };
    if let Err(status) = timeouts.idle("waiting for the connection", ready).await {
        return Attempt::Status(status);
    }

    // The encoder: a blocking task filling a bounded channel. It stops when
    // the receiver is dropped (the RPC ended early). An encoding error is
    // passed down the channel; the request stream then stalls instead of
    // ending (a clean end would look like a complete upload) and reports the
    // error through `failed`, and dropping the call cancels the RPC.
    let (tx, rx) = mpsc::channel::<Result<(Vec<u8>, usize), UploadError>>(CHANNEL_CHUNKS);
    let (failed_tx, failed_rx) = oneshot::channel::<UploadError>();
    let total_rows = rows.dataset.num_rows();
    let encoder = tokio::task::spawn_blocking(move || {
        let total = rows.dataset.num_rows();
        let mut start = 0usize;
        let mut warned = false;
        while start < total {
            let end = start.saturating_add(chunk_size).min(total);
            let mut buf = Vec::with_capacity(rows.json_size_hint(end - start));
            let item = rows.encode_chunk(start, end, &mut buf).map(|()| {
                if !warned && buf.len() > GRPC_JAVA_DEFAULT_LIMIT {
                    warned = true;
                    tracing::warn!(
                        "a data chunk is {} bytes, over grpc-java's default 4 MiB message limit; lower --chunk-size if the Batch Server refuses it",
                        buf.len()
                    );
                }
                (buf, end - start)
            });
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
            start = end;
        }
    });

    let (count_tx, mut count_rx) = mpsc::unbounded_channel::<(usize, u64)>();
    let first = IngestDataRequest {
        request_type: Some(RequestType::Metadata(metadata)),
    };
    let chunks = futures::stream::unfold(
        (rx, count_tx, Some(failed_tx), 0usize),
        move |(mut rx, count_tx, mut failed, rows_sent)| async move {
            let error = match rx.recv().await {
                Some(Ok((chunk, n))) => {
                    // Counted when tonic takes the chunk for sending.
                    let _ = count_tx.send((n, chunk.len() as u64));
                    let request = IngestDataRequest {
                        request_type: Some(RequestType::DataChunk(chunk)),
                    };
                    return Some((request, (rx, count_tx, failed, rows_sent + n)));
                }
                // Every row went out: end the stream, which completes the upload.
                None if rows_sent == total_rows => return None,
                Some(Err(error)) => error,
                // The encoder died without saying why (it panicked).
                None => UploadError::Encoder(format!(
                    "it stopped after {rows_sent} of {total_rows} rows"
                )),
            };
            if let Some(failed) = failed.take() {
                let _ = failed.send(error);
            }
            // Never end: the caller cancels the call on the error above.
            futures::future::pending::<()>().await;
            None
        },
    );
    let requests = futures::stream::iter([first]).chain(chunks);
    let codec = tonic_prost::ProstCodec::<IngestDataRequest, IngestDataResponse>::default();
    let mut call = Box::pin(grpc.client_streaming(tonic::Request::new(requests), path, codec));
    let mut failed_rx = failed_rx;
    let mut sent = Sent::default();
    let mut failure_possible = true;
    // The idle deadline: moved on each message the receiver takes.
    let idle = tokio::time::sleep(timeouts.idle);
    tokio::pin!(idle);
    let outcome = loop {
        tokio::select! {
            () = &mut idle => {
                let waiting = if sent.rows == total_rows {
                    format!("every row was sent ({} chunks); waiting for the receiver's response", sent.chunks)
                } else {
                    format!("the receiver took {} of {total_rows} rows, then stopped taking data", sent.rows)
                };
                break Attempt::Status(timeouts.idle_status(&waiting));
            }
            result = &mut call => {
                break match result {
                    Ok(response) => {
                        while let Ok((n, bytes)) = count_rx.try_recv() {
                            sent.rows += n;
                            sent.chunks += 1;
                            sent.bytes += bytes;
                            progress.inc(n as u64);
                        }
                        Attempt::Done(response.into_inner(), sent)
                    }
                    Err(status) => Attempt::Status(status),
                };
            }
            Some((n, bytes)) = count_rx.recv() => {
                sent.rows += n;
                sent.chunks += 1;
                sent.bytes += bytes;
                progress.inc(n as u64);
                idle.as_mut().reset(tokio::time::Instant::now() + timeouts.idle);
            }
            err = &mut failed_rx, if failure_possible => {
                match err {
                    // Dropping `call` cancels the RPC (RST_STREAM), so the
                    // server never sees a clean end of a partial upload.
                    Ok(error) => break Attempt::Encode(error),
                    // The request stream is gone: no encoding error can come.
                    Err(_) => failure_possible = false,
                }
            }
        }
    };
    // Dropping the call cancels the RPC if it is still running; the encoder
    // then stops at its next send. It is not awaited: a panic in it cannot go
    // unnoticed, since the request stream only ends after the last row.
    drop(call);
    drop(encoder);
    outcome
}

/// Run `embedstream upload`.
pub fn run(args: UploadArgs) -> anyhow::Result<()> {
    let to = match args.to {
        Some(to) => to,
        None => local_address(
            "BATCH_SERVER_PORT",
            std::env::var("BATCH_SERVER_HOST").ok().as_deref(),
            std::env::var("BATCH_SERVER_PORT").ok().as_deref(),
            wire::DEFAULT_BATCH_SERVER_PORT,
        )?,
    };
    let opts = UploadOptions {
        file: args.file,
        to,
        domain: args.domain,
        chunk_size: args.chunk_size as usize,
        max_attempts: args.max_retries,
        service_package: args.service_package,
        key_column: args.key_column,
        mapping: args.mapping,
        initial_backoff: args.initial_backoff,
        progress: ProgressMode::Auto,
        timeouts: Timeouts::from(&args.timeouts),
        secure: SecureClient::from_args(&args.secure)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(upload(&opts))?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    crate::stdout::print(&format!(
        "upload to {}: success, server received {} chunk(s): {}\n\
         sent {} rows in {} chunks ({:.1} MB of JSON) in {:.2} s: {:.0} rows/s, {:.1} MB/s; {} attempt(s), {:.2} s in all\n",
        opts.to,
        report.response.received_chunks,
        report.response.message,
        report.rows,
        report.chunks,
        report.json_bytes as f64 / 1e6,
        secs,
        report.rows as f64 / secs,
        report.json_bytes as f64 / 1e6 / secs,
        report.attempts,
        report.total_elapsed.as_secs_f64()
    ))?;
    Ok(())
}
