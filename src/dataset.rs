//! The served data set: one converted file, or a data set directory of
//! shards (`manifest.json`, see [`crate::format::manifest`]), opened once,
//! with everything a reader needs, shared behind one `Arc`.
//!
//! A [`Dataset`] is the mapped file and its key index ([`Store`]), the
//! RecruitRow column views ([`RecruitTable`]), the chunk limits computed
//! from its vector dimension, its row count and its path. [`Dataset::open`]
//! is the one function that opens it, for `serve` (StreamEmbedding and
//! Flight) and `upload` alike, and every refusal of a file happens there.
//!
//! [`LiveDataset`] is the seam where a new generation of the served file is
//! swapped in: the services hold a `LiveDataset`, never a `Dataset`, and
//! every request takes one snapshot ([`LiveDataset::current`]) when it
//! starts and uses only that snapshot until it ends.
//! [`LiveDataset::replace`] installs a new generation: requests that start
//! afterwards see it, running ones finish on the generation they started
//! with, which stays mapped until its last snapshot is dropped.
//! [`LiveDataset::withdraw`] removes a generation that can no longer be
//! served (its file is being written in place) until a replacement passes
//! validation: requests then get UNAVAILABLE naming the file.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use tonic::Status;

use crate::{
    format,
    rows::{RecruitTable, RowMapping, RowsError},
    store::{lease::Policy, Store, StoreError},
    wire,
};

/// Longest string assumed per text field when bounding `chunk_size`; a chunk
/// that still exceeds the limit is refused at run time with RESOURCE_EXHAUSTED.
const STRING_ALLOWANCE: usize = 1024;

/// Chunk settings as configured (flags), before they are checked against a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSettings {
    /// Rows per chunk for chunk_size 0.
    pub default_chunk: usize,
    /// Largest chunk_size accepted (None: computed from the message limit).
    pub max_chunk: Option<usize>,
    /// Largest RowChunk message in bytes.
    pub max_message_bytes: usize,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        ChunkSettings {
            default_chunk: wire::DEFAULT_CHUNK_SIZE,
            max_chunk: None,
            max_message_bytes: wire::MAX_MESSAGE_BYTES,
        }
    }
}

/// Chunk sizes accepted for one data set (checked against its rows' size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Rows per chunk when the request says 0.
    pub default: usize,
    /// Largest `chunk_size` accepted (a chunk of that many rows fits the
    /// Batch Server's inbound message limit).
    pub max: usize,
    /// The message size limit the chunks must fit, in bytes.
    pub max_message_bytes: usize,
}

impl ChunkSettings {
    /// Check the settings against rows of `vector_dim` components.
    pub fn limits(&self, vector_dim: usize) -> Result<ChunkLimits, DatasetError> {
        // The whole chunk (plus gRPC's 5-byte frame header) must fit the
        // Batch Server's inbound limit.
        let row_bound = wire::row_size_bound(vector_dim, STRING_ALLOWANCE);
        let fits = self.max_message_bytes.saturating_sub(wire::GRPC_PREFIX) / row_bound.max(1);
        if fits == 0 {
            return Err(DatasetError::Settings(format!(
                "--max-message-bytes {} cannot hold one row of up to {row_bound} bytes; raise it",
                self.max_message_bytes
            )));
        }
        let max = match self.max_chunk {
            Some(0) => {
                return Err(DatasetError::Settings(
                    "--max-chunk-size must be at least 1".into(),
                ))
            }
            Some(m) if m > fits => {
                return Err(DatasetError::Settings(format!(
                    "--max-chunk-size {m} is too large: a chunk of {m} rows of up to {row_bound} bytes would not fit the {}-byte message limit; use at most {fits}",
                    self.max_message_bytes
                )))
            }
            Some(m) => m,
            None => fits,
        };
        if self.default_chunk == 0 || self.default_chunk > max {
            return Err(DatasetError::Settings(format!(
                "the default chunk size (CHUNK_SIZE / --chunk-size) {} must be within 1..={max}",
                self.default_chunk
            )));
        }
        Ok(ChunkLimits {
            default: self.default_chunk,
            max,
            max_message_bytes: self.max_message_bytes,
        })
    }
}

/// How to open a data set: key column, column mapping, chunk settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Key column override (default: from the file's metadata, else `uuid`).
    pub key_column: Option<String>,
    /// Which columns feed RecruitRow.
    pub mapping: RowMapping,
    /// Chunk settings, checked against the file's rows.
    pub chunks: ChunkSettings,
}

/// Why a file cannot be opened as a data set.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file cannot be mapped or its key column is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file's columns cannot feed RecruitRow.
    #[error("{path}: {source}")]
    Mapping {
        /// The file.
        path: String,
        /// The cause.
        source: RowsError,
    },
    /// Chunk settings that contradict each other or the message limit.
    #[error("{0}")]
    Settings(String),
}

/// One generation of the served file, opened and checked. Immutable: a new
/// generation is a new `Dataset`.
#[derive(Debug)]
pub struct Dataset {
    path: PathBuf,
    table: RecruitTable,
    limits: ChunkLimits,
    generation: Generation,
}

/// Which generation of the served file a [`Dataset`] is: what `serve` logs
/// and answers to Flight's `DoAction("generation")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The file's `embedstream.generation` metadata, else the server's count
    /// of generations loaded (this one included).
    pub number: u64,
    /// Where `number` comes from: `"file metadata"` or `"load counter"`.
    pub source: &'static str,
    /// The file it was opened from.
    pub path: PathBuf,
    /// Total rows.
    pub rows: usize,
    /// When it was opened.
    pub loaded_at: SystemTime,
    /// How its bytes are protected from writes to the file.
    pub policy: Policy,
}

impl Generation {
    /// The JSON object clients receive (Flight `DoAction("generation")` and
    /// `FlightInfo.app_metadata`).
    pub fn to_json(&self) -> String {
        let policy = match self.policy {
            Policy::Lease => "lease",
            Policy::Copy(_) => "copy",
            Policy::Unprotected => "none",
        };
        serde_json::json!({
            "generation": self.number,
            "generation_source": self.source,
            "path": self.path.display().to_string(),
            "rows": self.rows,
            "loaded_at": humantime::format_rfc3339_millis(self.loaded_at).to_string(),
            "protection": policy,
        })
        .to_string()
    }
}

impl Dataset {
    /// Map `path`, check its key column ([`Store::open`]), resolve the
    /// RecruitRow columns ([`RowMapping::resolve`]) and the chunk limits:
    /// every refusal of a file. No batch body is decoded yet. A directory
    /// is a data set: its manifest and every shard are checked against each
    /// other ([`Store::open_dataset`]), each refusal naming the shard.
    pub fn open(path: &Path, options: &DatasetOptions) -> Result<Self, DatasetError> {
        let store = Store::open_any(path, options.key_column.as_deref(), false)?;
        Self::from_store(path, options, store, 1)
    }

    /// [`Dataset::open`] for serving: the file is protected from in-place
    /// writes ([`Store::open_protected`]; the caller must already catch
    /// SIGIO). `load` numbers the generation when the file's metadata does
    /// not.
    pub fn open_served(
        path: &Path,
        options: &DatasetOptions,
        load: u64,
    ) -> Result<Self, DatasetError> {
        let store = Store::open_any(path, options.key_column.as_deref(), true)?;
        Self::from_store(path, options, store, load)
    }

    fn from_store(
        path: &Path,
        options: &DatasetOptions,
        store: Store,
        load: u64,
    ) -> Result<Self, DatasetError> {
        let store = Arc::new(store);
        let layout = options
            .mapping
            .resolve(store.schema(), store.layout())
            .map_err(|source| DatasetError::Mapping {
                path: path.display().to_string(),
                source,
            })?;
        let limits = options.chunks.limits(layout.vector_dim())?;
        // A data set directory has no generation metadata of its own.
        let from_file = (!store.is_dataset())
            .then(|| format::FileMetadata::read(store.schema().metadata()).generation)
            .flatten();
        let generation = Generation {
            number: from_file.unwrap_or(load),
            source: if from_file.is_some() {
                "file metadata"
            } else {
                "load counter"
            },
            path: path.to_path_buf(),
            rows: store.num_rows(),
            loaded_at: SystemTime::now(),
            // The weakest protection over the shards (all are alike in practice).
            policy: store
                .files()
                .map(|f| f.policy())
                .find(|p| !matches!(p, Policy::Lease))
                .unwrap_or(store.file().policy())
                .clone(),
        };
        Ok(Dataset {
            path: path.to_path_buf(),
            table: RecruitTable::new(store, layout),
            limits,
            generation,
        })
    }

    /// Which generation this is.
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// `Ok` while the file's bytes can be trusted; UNAVAILABLE naming the
    /// file once another process opened it for writing (the generation is
    /// revoked: a stream reading it ends at its next step).
    pub fn intact(&self) -> Result<(), Status> {
        let revoked = self
            .store()
            .files()
            .filter_map(|f| f.lease())
            .find(|lease| lease.is_revoked());
        match revoked {
            Some(lease) => Err(wire::rewritten(lease.path())),
            None => Ok(()),
        }
    }

    /// Check the whole file, as a hot swap does before switching: every
    /// key in order (whatever the metadata vouches for), every batch decoded
    /// and validated by arrow, every batch's RecruitRow columns resolved.
    /// The decoded batches stay cached for the streams. Batches are decoded
    /// on every core (each thread takes every n-th batch): on 2 cores this
    /// halves the swap latency of a 1.4M-row file (BENCHMARKS.md, hot swap).
    /// The error reported is the one of the lowest batch.
    pub fn validate_fully(&self) -> Result<(), String> {
        let shown = self.path.display().to_string();
        self.store()
            .check_every_key(&shown)
            .map_err(|e| e.to_string())?;
        let batches = self.store().num_batches();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, batches.max(1));
        let first_error = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t..batches)
                            .step_by(threads)
                            .find_map(|b| self.table.columns(b).err().map(|e| (b, e.to_string())))
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|worker| match worker.join() {
                    Ok(found) => found,
                    // Decoding runs under catch_unwind (store::ipc_file); a
                    // panic here is still a refusal, not a crash.
                    Err(_) => Some((usize::MAX, "a validation thread panicked".to_string())),
                })
                .min_by_key(|(b, _)| *b)
        });
        match first_error {
            Some((_, message)) => Err(message),
            None => Ok(()),
        }
    }

    /// The file this generation was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name the data set is listed under (the file's stem).
    pub fn name(&self) -> String {
        self.path.file_stem().map_or_else(
            || "embeddings".to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    }

    /// The mapped file and its key index.
    pub fn store(&self) -> &Store {
        self.table.store()
    }

    /// The RecruitRow views of each batch.
    pub fn table(&self) -> &RecruitTable {
        &self.table
    }

    /// Chunk sizes accepted for this file.
    pub fn limits(&self) -> ChunkLimits {
        self.limits
    }

    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.table.num_rows()
    }

    /// Vector dimension of every row.
    pub fn vector_dim(&self) -> usize {
        self.table.layout().vector_dim()
    }
}

/// The data set currently served: the one place a new generation is
/// swapped in. Services hold this; each request snapshots it once.
#[derive(Debug)]
pub struct LiveDataset {
    /// The generation served, or why none is (UNAVAILABLE's message).
    current: RwLock<Result<Arc<Dataset>, String>>,
}

impl LiveDataset {
    /// Serve `dataset` until it is replaced.
    pub fn new(dataset: Arc<Dataset>) -> Self {
        LiveDataset {
            current: RwLock::new(Ok(dataset)),
        }
    }

    /// The generation to use for one request, from its start to its end;
    /// UNAVAILABLE (naming the file) while none can be served.
    pub fn current(&self) -> Result<Arc<Dataset>, Status> {
        // A poisoned lock still holds a whole value (replacing it is one
        // assignment), so the value is usable.
        let guard = match self.current.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.clone().map_err(Status::unavailable)
    }

    /// Install a new generation; returns the previous one, if one was
    /// served. Requests already running keep their snapshot of it.
    pub fn replace(&self, new: Arc<Dataset>) -> Option<Arc<Dataset>> {
        std::mem::replace(&mut *self.write(), Ok(new)).ok()
    }

    /// Stop serving `old` if it is the current generation: requests get
    /// UNAVAILABLE with `reason` until [`LiveDataset::replace`]. Returns
    /// whether it was current.
    pub fn withdraw(&self, old: &Arc<Dataset>, reason: String) -> bool {
        let mut guard = self.write();
        if guard.as_ref().is_ok_and(|d| Arc::ptr_eq(d, old)) {
            *guard = Err(reason);
            true
        } else {
            false
        }
    }

    /// While no generation is served, change the reason requests are given.
    pub fn explain(&self, reason: String) {
        let mut guard = self.write();
        if guard.is_err() {
            *guard = Err(reason);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Result<Arc<Dataset>, String>> {
        match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_against_the_row_size() {
        let limits = ChunkSettings::default().limits(384).unwrap();
        assert_eq!(limits.default, wire::DEFAULT_CHUNK_SIZE);
        assert!(limits.max >= limits.default);
        let tiny = ChunkSettings {
            max_message_bytes: 100,
            ..ChunkSettings::default()
        };
        assert!(tiny
            .limits(384)
            .unwrap_err()
            .to_string()
            .starts_with("--max-message-bytes 100 cannot hold one row of up to "));
        let zero = ChunkSettings {
            max_chunk: Some(0),
            ..ChunkSettings::default()
        };
        assert_eq!(
            zero.limits(4).unwrap_err().to_string(),
            "--max-chunk-size must be at least 1"
        );
    }
}
