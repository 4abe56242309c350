//! `embedstream stream`: pull every row after a checkpoint from a server
//! (`StreamEmbedding`, or Arrow Flight `DoGet` with `--flight`), check the
//! stream as it arrives, optionally save it as an embedstream Arrow file.
//!
//! Checks, each reported with the global row number (counted from 0 in this
//! stream) and the offending values:
//! - every id is a UUID, keys are strictly increasing (bytewise, i.e. UUID v7
//!   time order) and greater than the checkpoint;
//! - every vector has the dimension of the first one;
//! - (StreamEmbedding) every chunk has exactly the rows asked for, except the
//!   last, which has 1 to that many. Flight sends the file's own batches, so
//!   there is no chunk size to check there.
//!
//! `--out` writes batch by batch into a temporary file renamed into place
//! only after the whole stream passed, so a failed pull leaves nothing.

use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use arrow_array::{
    builder::{FixedSizeBinaryBuilder, Float32Builder, Int32Builder, StringBuilder},
    Array, ArrayRef, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, RecordBatch,
};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;

use super::{
    deadline::{TimeoutArgs, Timeouts, KEEPALIVE_STREAM},
    secure::{SecureClient, SecureClientArgs, SecureClientError, TokenInterceptor},
    serve_address, AddressError,
};
use crate::{
    format::{self, format_uuid, FileLayout},
    fs::{AtomicFile, AtomicFileError},
    progress::{Progress, ProgressMode, Unit},
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, RowChunk,
        StreamEmbeddingRequest,
    },
    wire,
};

/// Name of the vector column in files written by `--out` (the reference pickle's).
pub const OUT_VECTOR_COLUMN: &str = format::DEFAULT_VECTOR_COLUMN;

/// Flags of `embedstream stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The server, HOST:PORT. Default: localhost:$GRPC_PORT (50051 when unset),
    /// where `embedstream serve` listens.
    #[arg(long)]
    pub server: Option<String>,

    /// Resume after this row id (the last one stored), as the Batch Server
    /// does after a failure. Default: from the first row.
    #[arg(long)]
    pub checkpoint: Option<String>,

    /// Rows per chunk to ask for (the Batch Server asks for 300). Every chunk
    /// must have exactly this many rows but the last. Not used with --flight,
    /// which sends the file's own batches.
    #[arg(long, default_value_t = wire::DEFAULT_CHUNK_SIZE as u32, value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64), conflicts_with = "flight")]
    pub chunk_size: u32,

    /// Save the rows as an Arrow IPC file that `embedstream serve` can serve.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,

    /// Replace --out if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,

    /// Pull with Arrow Flight DoGet (ticket `all` or `after:<uuid>`) instead
    /// of StreamEmbedding.
    #[arg(long)]
    pub flight: bool,

    /// Deadlines of the call.
    #[command(flatten)]
    pub timeouts: TimeoutArgs,

    /// TLS and token.
    #[command(flatten)]
    pub secure: SecureClientArgs,
}

/// Everything `pull` needs; [`run`] builds it from the flags.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// HOST:PORT (or `http://HOST:PORT`).
    pub server: String,
    /// Resume after this UUID.
    pub checkpoint: Option<String>,
    /// Rows per chunk to ask for (StreamEmbedding only).
    pub chunk_size: u32,
    /// Where to save the rows.
    pub out: Option<PathBuf>,
    /// Replace `out` if it exists.
    pub force: bool,
    /// Use Arrow Flight.
    pub flight: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// Connect timeout and idle deadline.
    pub timeouts: Timeouts,
    /// TLS and token.
    pub secure: SecureClient,
}

/// A stream that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// Rows received.
    pub rows: usize,
    /// Chunks (StreamEmbedding) or record batches (Flight) received.
    pub chunks: usize,
    /// Vector dimension (`None` when no row arrived).
    pub dim: Option<usize>,
    /// First key, hyphenated.
    pub first_key: Option<String>,
    /// Last key, hyphenated: the checkpoint to resume after.
    pub last_key: Option<String>,
    /// Time from the call to the end of the stream.
    pub elapsed: Duration,
    /// The file written, if any.
    pub out: Option<PathBuf>,
}

/// A broken promise of the stream contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An id that is not a UUID.
    #[error("row {row}: id `{id}` is not a UUID ({reason})")]
    MalformedId {
        /// Row number in this stream, from 0.
        row: usize,
        /// The id received.
        id: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A null key (Flight).
    #[error("row {row}: the key is null")]
    NullKey {
        /// Row number.
        row: usize,
    },
    /// Keys not strictly increasing.
    #[error("row {row}: key {key} is not greater than the previous row's {previous} (keys must be strictly increasing)")]
    NotIncreasing {
        /// Row number.
        row: usize,
        /// The previous key.
        previous: String,
        /// The offending key.
        key: String,
    },
    /// A key at or before the checkpoint.
    #[error("row {row}: key {key} is not after the checkpoint {checkpoint}")]
    NotAfterCheckpoint {
        /// Row number.
        row: usize,
        /// The checkpoint asked for.
        checkpoint: String,
        /// The offending key.
        key: String,
    },
    /// A vector of another dimension than the first.
    #[error("row {row} ({key}): vector has {found} components, earlier rows had {expected}")]
    Dimension {
        /// Row number.
        row: usize,
        /// Its key.
        key: String,
        /// The first row's dimension.
        expected: usize,
        /// This row's.
        found: usize,
    },
    /// A chunk with more rows than asked for.
    #[error("chunk {chunk} (from row {row}) has {rows} rows, more than the {asked} asked for")]
    ChunkTooLarge {
        /// Chunk number, from 0.
        chunk: usize,
        /// Its first row.
        row: usize,
        /// Rows in it.
        rows: usize,
        /// Rows asked for.
        asked: usize,
    },
    /// An empty chunk.
    #[error("chunk {chunk} (at row {row}) is empty; every chunk must carry 1 to {asked} rows")]
    EmptyChunk {
        /// Chunk number.
        chunk: usize,
        /// Rows received before it.
        row: usize,
        /// Rows asked for.
        asked: usize,
    },
    /// A short chunk followed by another one.
    #[error("chunk {chunk} (from row {row}) has {rows} rows, fewer than the {asked} asked for, but chunk {next} followed it (only the last chunk may be short)")]
    ShortChunkNotLast {
        /// The short chunk's number.
        chunk: usize,
        /// Its first row.
        row: usize,
        /// Rows in it.
        rows: usize,
        /// Rows asked for.
        asked: usize,
        /// The chunk that followed.
        next: usize,
    },
    /// The Flight stream's schema lacks a key or vector column.
    #[error("the Flight stream's schema is not an embedstream file: {0}")]
    Schema(String),
}

/// Why `stream` failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Bad `--server`.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Bad TLS or token settings.
    #[error(transparent)]
    Secure(#[from] SecureClientError),
    /// Bad `--checkpoint`.
    #[error("--checkpoint `{checkpoint}` is {reason}; give the id of the last row stored")]
    Checkpoint {
        /// What was given.
        checkpoint: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The server or the connection failed.
    #[error("{server}: {what} failed after {rows} row(s): {code:?}: {message}")]
    Rpc {
        /// The server.
        server: String,
        /// Which call.
        what: &'static str,
        /// Rows received before the failure.
        rows: usize,
        /// gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The stream broke its contract.
    #[error("{server}: the stream is invalid: {violation}")]
    Violation {
        /// The server.
        server: String,
        /// What was wrong.
        violation: Violation,
    },
    /// `--out` could not be created or committed.
    #[error(transparent)]
    Out(#[from] AtomicFileError),
    /// Writing Arrow data to `--out` failed.
    #[error("{path}: writing the Arrow file failed: {message}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// The running checks over one stream.
#[derive(Debug)]
pub struct Checker {
    asked: Option<usize>,
    checkpoint: Option<[u8; 16]>,
    rows: usize,
    chunks: usize,
    first: Option<[u8; 16]>,
    last: Option<[u8; 16]>,
    dim: Option<usize>,
    /// The short chunk seen so far: (chunk number, first row, rows).
    short: Option<(usize, usize, usize)>,
}

impl Checker {
    /// Checks for a stream asked for chunks of `asked` rows (`None`: any
    /// size) after `checkpoint`.
    pub fn new(asked: Option<usize>, checkpoint: Option<[u8; 16]>) -> Self {
        Checker {
            asked,
            checkpoint,
            rows: 0,
            chunks: 0,
            first: None,
            last: None,
            dim: None,
            short: None,
        }
    }

    /// A chunk of `rows` rows begins; call before its rows.
    pub fn chunk(&mut self, rows: usize) -> Result<(), Violation> {
        let chunk = self.chunks;
        self.chunks += 1;
        let Some(asked) = self.asked else {
            return Ok(());
        };
        if let Some((short, row, short_rows)) = self.short {
            return Err(Violation::ShortChunkNotLast {
                chunk: short,
                row,
                rows: short_rows,
                asked,
                next: chunk,
            });
        }
        if rows == 0 {
            return Err(Violation::EmptyChunk {
                chunk,
                row: self.rows,
                asked,
            });
        }
        if rows > asked {
            return Err(Violation::ChunkTooLarge {
                chunk,
                row: self.rows,
                rows,
                asked,
            });
        }
        if rows < asked {
            self.short = Some((chunk, self.rows, rows));
        }
        Ok(())
    }

    /// The next row: its key and vector dimension.
    pub fn row(&mut self, key: [u8; 16], dim: usize) -> Result<(), Violation> {
        let row = self.rows;
        if let Some(previous) = self.last {
            format::check_key_order(row, &previous, &key).map_err(|e| {
                Violation::NotIncreasing {
                    row,
                    previous: e.previous,
                    key: e.next,
                }
            })?;
        } else if let Some(checkpoint) = self.checkpoint {
            // Later rows are greater than this one, so checking the first suffices.
            format::check_key_order(row, &checkpoint, &key).map_err(|e| {
                Violation::NotAfterCheckpoint {
                    row,
                    checkpoint: e.previous,
                    key: e.next,
                }
            })?;
        }
        match self.dim {
            None => self.dim = Some(dim),
            Some(expected) if expected != dim => {
                return Err(Violation::Dimension {
                    row,
                    key: format_uuid(&key),
                    expected,
                    found: dim,
                })
            }
            Some(_) => {}
        }
        if self.first.is_none() {
            self.first = Some(key);
        }
        self.last = Some(key);
        self.rows += 1;
        Ok(())
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn report(&self, elapsed: Duration, out: Option<PathBuf>) -> StreamReport {
        StreamReport {
            rows: self.rows,
            chunks: self.chunks,
            dim: self.dim,
            first_key: self.first.map(|k| format_uuid(&k)),
            last_key: self.last.map(|k| format_uuid(&k)),
            elapsed,
            out,
        }
    }
}

/// Parse a row id as 16 key bytes.
fn parse_key(row: usize, id: &str) -> Result<[u8; 16], Violation> {
    uuid::Uuid::parse_str(id)
        .map(|u| *u.as_bytes())
        .map_err(|e| Violation::MalformedId {
            row,
            id: id.to_string(),
            reason: e.to_string(),
        })
}

/// The `--out` file, created when the first batch tells its schema.
struct Output {
    path: PathBuf,
    force: bool,
    writer: Option<(FileWriter<AtomicFile>, SchemaRef)>,
}

impl Output {
    fn write_err(&self, e: impl std::fmt::Display) -> StreamError {
        StreamError::Write {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Create the file with `schema` unless it exists already.
    fn open(&mut self, schema: impl FnOnce() -> SchemaRef) -> Result<(), StreamError> {
        if self.writer.is_none() {
            let schema = schema();
            let file = AtomicFile::create(&self.path, self.force)?;
            let writer = FileWriter::try_new(file, &schema).map_err(|e| self.write_err(e))?;
            self.writer = Some((writer, schema));
        }
        Ok(())
    }

    /// Write `columns` under `schema` (built once, by the first call).
    fn write(
        &mut self,
        schema: impl FnOnce() -> SchemaRef,
        columns: Vec<ArrayRef>,
    ) -> Result<(), StreamError> {
        self.open(schema)?;
        let result = match self.writer.as_mut() {
            Some((writer, schema)) => {
                RecordBatch::try_new(schema.clone(), columns).and_then(|batch| writer.write(&batch))
            }
            None => Ok(()),
        };
        result.map_err(|e| self.write_err(e))
    }

    /// Finish the file (an empty one with `empty_schema` if no batch came)
    /// and rename it into place.
    fn commit(
        mut self,
        rows: usize,
        empty_schema: impl FnOnce() -> SchemaRef,
    ) -> Result<(), StreamError> {
        self.open(empty_schema)?;
        let Some((mut writer, _)) = self.writer.take() else {
            return Ok(());
        };
        writer.write_metadata(format::META_ROWS, rows.to_string());
        writer.finish().map_err(|e| self.write_err(e))?;
        let mut file = writer.into_inner().map_err(|e| self.write_err(e))?;
        file.flush().map_err(|e| self.write_err(e))?;
        file.commit()?;
        Ok(())
    }
}

/// The schema of files written from StreamEmbedding rows.
fn recruit_schema(dim: usize, server: &str) -> SchemaRef {
    let vector_type = DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        i32::try_from(dim).unwrap_or(i32::MAX),
    );
    Arc::new(
        Schema::new(vec![
            format::key_field(format::DEFAULT_KEY_COLUMN),
            Field::new(format::DEFAULT_COMPANY_NAME_COLUMN, DataType::Utf8, false),
            Field::new(format::DEFAULT_EXP_YEARS_COLUMN, DataType::Int32, false),
            Field::new(format::DEFAULT_ENGLISH_LEVEL_COLUMN, DataType::Utf8, false),
            Field::new(
                format::DEFAULT_PRIMARY_KEYWORD_COLUMN,
                DataType::Utf8,
                false,
            ),
            Field::new(OUT_VECTOR_COLUMN, vector_type, false),
        ])
        .with_metadata(out_metadata(
            format::DEFAULT_KEY_COLUMN,
            OUT_VECTOR_COLUMN,
            dim,
            server,
        )),
    )
}

/// The `embedstream.*` metadata of a file written by `--out`.
fn out_metadata(key: &str, vector: &str, dim: usize, server: &str) -> HashMap<String, String> {
    // Every key was checked on arrival; the file is not kept otherwise.
    let mut meta = format::FileMetadata::written(key).with_vector(vector, dim);
    meta.source = Some(format!("embedstream stream --server {server}"));
    meta.to_map()
}

/// Arrow columns of one checked RowChunk, in [`recruit_schema`] order.
fn chunk_columns(chunk: &RowChunk, keys: &[[u8; 16]], dim: usize) -> Result<Vec<ArrayRef>, String> {
    let n = chunk.rows.len();
    let mut key = FixedSizeBinaryBuilder::with_capacity(n, format::UUID_WIDTH);
    let mut company = StringBuilder::with_capacity(n, n * 16);
    let mut exp = Int32Builder::with_capacity(n);
    let mut english = StringBuilder::with_capacity(n, n * 8);
    let mut keyword = StringBuilder::with_capacity(n, n * 8);
    let mut values = Float32Builder::with_capacity(n * dim);
    for (row, k) in chunk.rows.iter().zip(keys) {
        key.append_value(k).map_err(|e| e.to_string())?;
        company.append_value(&row.company_name);
        exp.append_value(row.exp_years);
        english.append_value(&row.english_level);
        keyword.append_value(&row.primary_keyword);
        values.append_slice(&row.vector);
    }
    let item = Arc::new(Field::new_list_field(DataType::Float32, false));
    let values: Float32Array = values.finish();
    let vectors = FixedSizeListArray::try_new(
        item,
        i32::try_from(dim).map_err(|e| e.to_string())?,
        Arc::new(values),
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![
        Arc::new(key.finish()),
        Arc::new(company.finish()),
        Arc::new(exp.finish()),
        Arc::new(english.finish()),
        Arc::new(keyword.finish()),
        Arc::new(vectors),
    ])
}

/// Pull the stream described by `opts`, check it, save it if asked.
pub async fn pull(opts: &StreamOptions) -> Result<StreamReport, StreamError> {
    let endpoint = opts
        .timeouts
        .apply(opts.secure.endpoint(&opts.server)?, KEEPALIVE_STREAM);
    let timeouts = opts.timeouts;
    let checkpoint = match opts
        .checkpoint
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        None => None,
        Some(c) => Some(
            wire::parse_checkpoint(c)
                .map_err(|e| StreamError::Checkpoint {
                    checkpoint: c.to_string(),
                    reason: e.to_string(),
                })?
                .into_bytes(),
        ),
    };
    let output = opts.out.as_ref().map(|path| Output {
        path: path.clone(),
        force: opts.force,
        writer: None,
    });
    // Refuse an existing --out before pulling anything.
    if let Some(out) = &output {
        if !out.force && out.path.exists() {
            return Err(AtomicFileError::Exists(out.path.clone()).into());
        }
    }
    let started = Instant::now();
    let pull = Pull {
        server: &opts.server,
        what: if opts.flight {
            "Flight DoGet"
        } else {
            "StreamEmbedding"
        },
        checker: Checker::new(
            (!opts.flight).then_some(opts.chunk_size as usize),
            checkpoint,
        ),
        output,
        progress: Progress::new("stream", None, Unit::Rows, opts.progress),
    };
    let channel = timeouts.connect(&endpoint).await.map_err(|s| pull.rpc(s))?;
    let checker = if opts.flight {
        pull_flight(channel, &opts.secure, checkpoint, timeouts, pull).await?
    } else {
        let channel = tonic::service::interceptor::InterceptedService::new(
            channel,
            opts.secure.interceptor(),
        );
        pull_embedding(channel, opts.chunk_size, checkpoint, timeouts, pull).await?
    };
    Ok(checker.report(started.elapsed(), opts.out.clone()))
}

/// What both pullers share: the call's name for errors, the running
/// [`Checker`], the `--out` [`Output`] and the progress display.
struct Pull<'a> {
    server: &'a str,
    what: &'static str,
    checker: Checker,
    output: Option<Output>,
    progress: Progress,
}

impl Pull<'_> {
    /// The call failed after the rows checked so far.
    fn rpc(&self, status: tonic::Status) -> StreamError {
        StreamError::Rpc {
            server: self.server.to_string(),
            what: self.what,
            rows: self.checker.rows(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The stream broke its contract.
    fn violation(&self, violation: Violation) -> StreamError {
        StreamError::Violation {
            server: self.server.to_string(),
            violation,
        }
    }

    /// The stream ended cleanly: commit `--out` (with `empty_schema` if no
    /// row came) and hand back the checks.
    fn finish(mut self, empty_schema: impl FnOnce() -> SchemaRef) -> Result<Checker, StreamError> {
        self.progress.finish();
        if let Some(out) = self.output.take() {
            out.commit(self.checker.rows(), empty_schema)?;
        }
        Ok(self.checker)
    }
}

/// Pull with StreamEmbedding: RowChunks of `chunk_size` rows after `checkpoint`.
async fn pull_embedding(
    channel: InterceptedService<tonic::transport::Channel, TokenInterceptor>,
    chunk_size: u32,
    checkpoint: Option<[u8; 16]>,
    timeouts: Timeouts,
    mut pull: Pull<'_>,
) -> Result<Checker, StreamError> {
    let mut client = EmbeddingStreamServiceClient::new(channel)
        .max_decoding_message_size(wire::MAX_MESSAGE_BYTES);
    let request = StreamEmbeddingRequest {
        last_processed_uuid: checkpoint.map(|k| format_uuid(&k)).unwrap_or_default(),
        chunk_size: i32::try_from(chunk_size).unwrap_or(i32::MAX),
    };
    let mut stream = timeouts
        .idle(
            "waiting for the StreamEmbedding response",
            client.stream_embedding(request),
        )
        .await
        .map_err(|s| pull.rpc(s))?
        .into_inner();
    let mut keys = Vec::new();
    loop {
        let chunk = match timeouts
            .idle("waiting for the next chunk", stream.message())
            .await
        {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) => return Err(pull.rpc(status)),
        };
        pull.checker
            .chunk(chunk.rows.len())
            .map_err(|v| pull.violation(v))?;
        keys.clear();
        for row in &chunk.rows {
            let key = parse_key(pull.checker.rows(), &row.id).map_err(|v| pull.violation(v))?;
            pull.checker
                .row(key, row.vector.len())
                .map_err(|v| pull.violation(v))?;
            keys.push(key);
        }
        let dim = pull.checker.dim.unwrap_or(0);
        let server = pull.server;
        if let Some(out) = pull.output.as_mut() {
            let columns =
                chunk_columns(&chunk, &keys, dim).map_err(|message| StreamError::Write {
                    path: out.path.clone(),
                    message,
                })?;
            out.write(|| recruit_schema(dim, server), columns)?;
        }
        pull.progress.inc(chunk.rows.len() as u64);
    }
    let dim = pull.checker.dim.unwrap_or(0);
    let server = pull.server;
    pull.finish(|| recruit_schema(dim, server))
}

/// Pull with Arrow Flight DoGet: ticket `all`, or `after:<checkpoint>`; the
/// file's own record batches, written to `--out` as they come.
async fn pull_flight(
    channel: tonic::transport::Channel,
    secure: &SecureClient,
    checkpoint: Option<[u8; 16]>,
    timeouts: Timeouts,
    mut pull: Pull<'_>,
) -> Result<Checker, StreamError> {
    let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX);
    let mut client = arrow_flight::FlightClient::new_from_inner(inner);
    if let Some(token) = secure.authorization() {
        let token = token
            .to_str()
            .map_err(|e| pull.rpc(tonic::Status::internal(e.to_string())))?;
        client
            .add_header("authorization", token)
            .map_err(|e| pull.rpc(tonic::Status::internal(e.to_string())))?;
    }
    let ticket = match checkpoint {
        None => "all".to_string(),
        Some(k) => format!("after:{}", format_uuid(&k)),
    };
    let flight_err = |pull: &Pull, e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(status) => pull.rpc(*status),
        other => pull.rpc(tonic::Status::internal(other.to_string())),
    };
    let mut stream = match tokio::time::timeout(
        timeouts.idle,
        client.do_get(arrow_flight::Ticket::new(ticket)),
    )
    .await
    {
        Ok(started) => started.map_err(|e| flight_err(&pull, e))?,
        Err(_) => return Err(pull.rpc(timeouts.idle_status("waiting for the DoGet response"))),
    };
    let mut layout: Option<(FileLayout, SchemaRef)> = None;
    loop {
        let Ok(next) = tokio::time::timeout(timeouts.idle, stream.next()).await else {
            return Err(pull.rpc(timeouts.idle_status("waiting for the next record batch")));
        };
        let Some(batch) = next else { break };
        let batch = batch.map_err(|e| flight_err(&pull, e))?;
        let (file_layout, out_schema) = match &layout {
            Some(known) => known,
            None => layout.insert(
                flight_layout(&batch.schema(), pull.server).map_err(|v| pull.violation(v))?,
            ),
        };
        pull.checker
            .chunk(batch.num_rows())
            .map_err(|v| pull.violation(v))?;
        let keys = batch
            .column(file_layout.key_index)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .ok_or_else(|| {
                pull.violation(Violation::Schema("the key column changed type".into()))
            })?;
        for i in 0..keys.len() {
            if keys.is_null(i) {
                return Err(pull.violation(Violation::NullKey {
                    row: pull.checker.rows(),
                }));
            }
            let key = <[u8; 16]>::try_from(keys.value(i)).map_err(|_| {
                pull.violation(Violation::Schema(
                    "the key column is not 16 bytes wide".into(),
                ))
            })?;
            pull.checker
                .row(key, file_layout.vector_dim)
                .map_err(|v| pull.violation(v))?;
        }
        if let Some(out) = pull.output.as_mut() {
            let schema = out_schema.clone();
            out.write(|| schema, batch.columns().to_vec())?;
        }
        pull.progress.inc(batch.num_rows() as u64);
    }
    let server = pull.server;
    pull.finish(|| match layout {
        Some((_, schema)) => schema,
        None => recruit_schema(0, server),
    })
}

/// The key and vector columns of a Flight stream's schema, and the schema
/// `--out` writes: the stream's, with this client's `embedstream.*` metadata.
fn flight_layout(schema: &SchemaRef, server: &str) -> Result<(FileLayout, SchemaRef), Violation> {
    let layout =
        FileLayout::from_schema(schema, None).map_err(|e| Violation::Schema(e.to_string()))?;
    let Some(vector) = layout.vector_index else {
        return Err(Violation::Schema("it has no vector column".into()));
    };
    let mut meta = schema.metadata().clone();
    meta.extend(out_metadata(
        schema.field(layout.key_index).name(),
        schema.field(vector).name(),
        layout.vector_dim,
        server,
    ));
    let out_schema = Arc::new(Schema::new(schema.fields().clone()).with_metadata(meta));
    Ok((layout, out_schema))
}

/// Run `embedstream stream`.
pub fn run(args: StreamArgs) -> anyhow::Result<()> {
    let server = serve_address(args.server)?;
    let opts = StreamOptions {
        server,
        checkpoint: args.checkpoint,
        chunk_size: args.chunk_size,
        out: args.out,
        force: args.force,
        flight: args.flight,
        progress: ProgressMode::Auto,
        timeouts: Timeouts::from(&args.timeouts),
        secure: SecureClient::from_args(&args.secure)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(pull(&opts))?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let mut text = format!(
        "{} rows in {} {} from {}: dimension {}, keys {} .. {}\n",
        report.rows,
        report.chunks,
        if opts.flight { "batches" } else { "chunks" },
        opts.server,
        report
            .dim
            .map_or_else(|| "-".to_string(), |d| d.to_string()),
        report.first_key.as_deref().unwrap_or("-"),
        report.last_key.as_deref().unwrap_or("-"),
    );
    text += &format!(
        "{:.2} s, {:.0} rows/s; all checks passed\n",
        secs,
        report.rows as f64 / secs
    );
    if let Some(out) = &report.out {
        text += &format!("saved to {}\n", out.display());
    }
    crate::stdout::print(&text)?;
    Ok(())
}
