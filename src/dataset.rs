//! The served data set: one converted file opened once, with everything a
//! reader needs, shared behind one `Arc`.
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

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use crate::{
    rows::{RecruitTable, RowMapping, RowsError},
    store::{Store, StoreError},
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
}

impl Dataset {
    /// Map `path`, check its key column ([`Store::open`]), resolve the
    /// RecruitRow columns ([`RowMapping::resolve`]) and the chunk limits:
    /// every refusal of a file. No batch body is decoded yet.
    pub fn open(path: &Path, options: &DatasetOptions) -> Result<Self, DatasetError> {
        let store = Arc::new(Store::open(path, options.key_column.as_deref())?);
        let layout = options
            .mapping
            .resolve(store.schema(), store.layout())
            .map_err(|source| DatasetError::Mapping {
                path: path.display().to_string(),
                source,
            })?;
        let limits = options.chunks.limits(layout.vector_dim())?;
        Ok(Dataset {
            path: path.to_path_buf(),
            table: RecruitTable::new(store, layout),
            limits,
        })
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
    current: RwLock<Arc<Dataset>>,
    /// 1 for the first file, one more per [`LiveDataset::replace`].
    generation: AtomicU64,
}

impl LiveDataset {
    /// Serve `dataset` until it is replaced.
    pub fn new(dataset: Arc<Dataset>) -> Self {
        LiveDataset {
            current: RwLock::new(dataset),
            generation: AtomicU64::new(1),
        }
    }

    /// The generation to use for one request, from its start to its end.
    pub fn current(&self) -> Arc<Dataset> {
        // A poisoned lock still holds a whole `Arc` (replacing it is one
        // assignment), so the value is usable.
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Install a new generation; returns the previous one. Requests already
    /// running keep their snapshot of the previous generation.
    pub fn replace(&self, new: Arc<Dataset>) -> Arc<Dataset> {
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        std::mem::replace(&mut *guard, new)
    }

    /// The generation served now: 1 for the first file, one more per replace.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
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
