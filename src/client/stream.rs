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

use super::{
    local_address,
    secure::{SecureClient, SecureClientArgs, SecureClientError},
    AddressError,
};
use crate::{
    convert::atomic::{AtomicFile, AtomicFileError},
    format::{self, format_uuid, FileLayout},
    progress::{Progress, ProgressMode, Unit},
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, RowChunk,
        StreamEmbeddingRequest,
    },
    wire,
};

/// Name of the vector column in files written by `--out`.
pub const OUT_VECTOR_COLUMN: &str = "job_post_vectors";

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
    #[error(
        "--checkpoint `{checkpoint}` is not a UUID ({reason}); give the id of the last row stored"
    )]
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
            if key <= previous {
                return Err(Violation::NotIncreasing {
                    row,
                    previous: format_uuid(&previous),
                    key: format_uuid(&key),
                });
            }
        } else if let Some(checkpoint) = self.checkpoint {
            // Later rows are greater than this one, so checking the first suffices.
            if key <= checkpoint {
                return Err(Violation::NotAfterCheckpoint {
                    row,
                    checkpoint: format_uuid(&checkpoint),
                    key: format_uuid(&key),
                });
            }
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
            Field::new("Company Name", DataType::Utf8, false),
            Field::new("Exp Years", DataType::Int32, false),
            Field::new("English Level", DataType::Utf8, false),
            Field::new("Primary Keyword", DataType::Utf8, false),
            Field::new(OUT_VECTOR_COLUMN, vector_type, false),
        ])
        .with_metadata(out_metadata(
            format::DEFAULT_KEY_COLUMN,
            Some(OUT_VECTOR_COLUMN),
            dim,
            server,
        )),
    )
}

fn out_metadata(
    key: &str,
    vector: Option<&str>,
    dim: usize,
    server: &str,
) -> HashMap<String, String> {
    let mut meta = HashMap::from([
        (format::META_KEY_COLUMN.to_string(), key.to_string()),
        (format::META_VECTOR_DIM.to_string(), dim.to_string()),
        (
            format::META_SOURCE.to_string(),
            format!("embedstream stream --server {server}"),
        ),
        (
            format::META_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        // Every key was checked on arrival; the file is not kept otherwise.
        (format::META_KEYS_SORTED.to_string(), "true".to_string()),
    ]);
    if let Some(vector) = vector {
        meta.insert(format::META_VECTOR_COLUMN.to_string(), vector.to_string());
    }
    meta
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
    let endpoint = opts.secure.endpoint(&opts.server)?;
    let checkpoint = match opts
        .checkpoint
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        None => None,
        Some(c) => Some(
            uuid::Uuid::parse_str(c)
                .map_err(|e| StreamError::Checkpoint {
                    checkpoint: c.to_string(),
                    reason: e.to_string(),
                })?
                .into_bytes(),
        ),
    };
    let mut output = opts.out.as_ref().map(|path| Output {
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
    let progress = Progress::new("stream", None, Unit::Rows, opts.progress);
    let started = Instant::now();
    let what = if opts.flight {
        "Flight DoGet"
    } else {
        "StreamEmbedding"
    };
    let rpc = |rows: usize, status: tonic::Status| StreamError::Rpc {
        server: opts.server.clone(),
        what,
        rows,
        code: status.code(),
        message: status.message().to_string(),
    };
    let violation = |violation: Violation| StreamError::Violation {
        server: opts.server.clone(),
        violation,
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| rpc(0, tonic::Status::from_error(Box::new(e))))?;

    let mut checker;
    if opts.flight {
        checker = Checker::new(None, checkpoint);
        let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX);
        let mut client = arrow_flight::FlightClient::new_from_inner(inner);
        if let Some(token) = opts.secure.authorization() {
            let token = token
                .to_str()
                .map_err(|e| rpc(0, tonic::Status::internal(e.to_string())))?;
            client
                .add_header("authorization", token)
                .map_err(|e| rpc(0, tonic::Status::internal(e.to_string())))?;
        }
        let ticket = match checkpoint {
            None => "all".to_string(),
            Some(k) => format!("after:{}", format_uuid(&k)),
        };
        let flight_err = |rows: usize, e: arrow_flight::error::FlightError| match e {
            arrow_flight::error::FlightError::Tonic(status) => rpc(rows, *status),
            other => rpc(rows, tonic::Status::internal(other.to_string())),
        };
        let mut stream = client
            .do_get(arrow_flight::Ticket::new(ticket))
            .await
            .map_err(|e| flight_err(0, e))?;
        let mut layout: Option<(FileLayout, SchemaRef)> = None;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| flight_err(checker.rows(), e))?;
            if layout.is_none() {
                {
                    let file_layout = FileLayout::from_schema(&batch.schema(), None)
                        .map_err(|e| violation(Violation::Schema(e.to_string())))?;
                    if file_layout.vector_index.is_none() {
                        return Err(violation(Violation::Schema(
                            "it has no vector column".into(),
                        )));
                    }
                    let schema = batch.schema();
                    let mut meta = schema.metadata().clone();
                    meta.extend(out_metadata(
                        schema.field(file_layout.key_index).name(),
                        file_layout
                            .vector_index
                            .map(|i| schema.field(i).name().as_str()),
                        file_layout.vector_dim,
                        &opts.server,
                    ));
                    let out_schema =
                        Arc::new(Schema::new(schema.fields().clone()).with_metadata(meta));
                    layout = Some((file_layout, out_schema));
                }
            }
            // invariant: set just above on the first batch.
            let Some((file_layout, out_schema)) = layout.as_ref() else {
                continue;
            };
            checker.chunk(batch.num_rows()).map_err(violation)?;
            let keys = batch
                .column(file_layout.key_index)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| {
                    violation(Violation::Schema("the key column changed type".into()))
                })?;
            for i in 0..keys.len() {
                if keys.is_null(i) {
                    return Err(violation(Violation::NullKey {
                        row: checker.rows(),
                    }));
                }
                let key = <[u8; 16]>::try_from(keys.value(i)).map_err(|_| {
                    violation(Violation::Schema(
                        "the key column is not 16 bytes wide".into(),
                    ))
                })?;
                checker
                    .row(key, file_layout.vector_dim)
                    .map_err(violation)?;
            }
            if let Some(out) = output.as_mut() {
                let schema = out_schema.clone();
                out.write(|| schema, batch.columns().to_vec())?;
            }
            progress.inc(batch.num_rows() as u64);
        }
        progress.finish();
        if let Some(out) = output.take() {
            let empty = match &layout {
                Some((_, s)) => s.clone(),
                None => recruit_schema(0, &opts.server),
            };
            out.commit(checker.rows(), || empty)?;
        }
    } else {
        let asked = opts.chunk_size as usize;
        checker = Checker::new(Some(asked), checkpoint);
        let mut client =
            EmbeddingStreamServiceClient::with_interceptor(channel, opts.secure.interceptor())
                .max_decoding_message_size(wire::MAX_MESSAGE_BYTES);
        let request = StreamEmbeddingRequest {
            last_processed_uuid: checkpoint.map(|k| format_uuid(&k)).unwrap_or_default(),
            chunk_size: i32::try_from(opts.chunk_size).unwrap_or(i32::MAX),
        };
        let mut stream = client
            .stream_embedding(request)
            .await
            .map_err(|s| rpc(0, s))?
            .into_inner();
        let mut keys = Vec::new();
        loop {
            let chunk = match stream.message().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(status) => return Err(rpc(checker.rows(), status)),
            };
            checker.chunk(chunk.rows.len()).map_err(violation)?;
            keys.clear();
            for row in &chunk.rows {
                let key = parse_key(checker.rows(), &row.id).map_err(violation)?;
                checker.row(key, row.vector.len()).map_err(violation)?;
                keys.push(key);
            }
            if let Some(out) = output.as_mut() {
                let dim = checker.dim.unwrap_or(0);
                let columns =
                    chunk_columns(&chunk, &keys, dim).map_err(|message| StreamError::Write {
                        path: out.path.clone(),
                        message,
                    })?;
                let server = opts.server.clone();
                out.write(|| recruit_schema(dim, &server), columns)?;
            }
            progress.inc(chunk.rows.len() as u64);
        }
        progress.finish();
        if let Some(out) = output.take() {
            let dim = checker.dim.unwrap_or(0);
            out.commit(checker.rows(), || recruit_schema(dim, &opts.server))?;
        }
    }
    Ok(checker.report(started.elapsed(), opts.out.clone()))
}

/// Run `embedstream stream`.
pub fn run(args: StreamArgs) -> anyhow::Result<()> {
    let server = match args.server {
        Some(server) => server,
        None => local_address(
            "GRPC_PORT",
            None,
            std::env::var("GRPC_PORT").ok().as_deref(),
            wire::DEFAULT_SERVE_PORT,
        )?,
    };
    let opts = StreamOptions {
        server,
        checkpoint: args.checkpoint,
        chunk_size: args.chunk_size,
        out: args.out,
        force: args.force,
        flight: args.flight,
        progress: ProgressMode::Auto,
        secure: SecureClient::from_args(&args.secure)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(pull(&opts))?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} rows in {} {} from {}: dimension {}, keys {} .. {}",
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
    println!(
        "{:.2} s, {:.0} rows/s; all checks passed",
        secs,
        report.rows as f64 / secs
    );
    if let Some(out) = &report.out {
        println!("saved to {}", out.display());
    }
    Ok(())
}
