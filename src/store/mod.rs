//! The mapped store: a converted Arrow IPC file memory-mapped once, its record
//! batches decoded in place (zero-copy) on first use, and the key index used
//! to resume.
//!
//! Invariants, checked by [`Store::open`] and relied on by every reader:
//! - the key column's values are strictly increasing across the whole file,
//!   compared as big-endian bytes (that is UUID v7 time order), and never null;
//! - `row_starts[b]` is the global row number of batch `b`'s first row, and
//!   `row_starts` ends with `num_rows`; batch `b` has `keys[b].len()` rows
//!   (both come from the batch's message header);
//! - no batch buffer is copied to the heap unless the file's own layout is
//!   unaligned (arrow then realigns that one buffer).
//!
//! What opening reads, and what it leaves for later. [`Store::open`] parses
//! the footer and schema, decodes the dictionaries, and decodes only the key
//! column of each record batch (arrow's projection skips the other columns'
//! buffers without validating them), so start-up time depends on the number
//! of rows (16 key bytes each), not on the size of the vectors and strings.
//! The rest of a batch is decoded, and validated by arrow (UTF-8, offsets,
//! lengths), the first time [`Store::batch`] asks for it, then cached for the
//! life of the store. A file damaged inside a batch body therefore opens, and
//! the damage surfaces as a [`BatchError`] naming the batch when a reader
//! reaches it (the services end that stream with DATA_LOSS).
//!
//! A file whose metadata says the writer checked the key order
//! (`embedstream.keys_sorted = true`) is checked only at batch boundaries, so
//! the check takes time proportional to the number of batches, not rows; any
//! other file is checked row by row.

mod ipc_file;
pub mod lease;

use std::{path::Path, sync::Arc};

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use arrow_schema::SchemaRef;

pub use ipc_file::{BatchError, IpcBlock, MappedIpcFile};

pub use crate::format::Key;
use crate::format::{check_key_order, FileLayout, LayoutError};

/// Why a file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file does not exist.
    #[error(
        "{path}: no such file; convert a pickle first: `embedstream convert INPUT.pkl -o {path}`"
    )]
    Missing {
        /// The path asked for.
        path: String,
    },
    /// Any other I/O failure while opening or mapping.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not an Arrow IPC file, or a damaged one.
    #[error("{path}: not an Arrow IPC file ({reason}); `embedstream convert` writes one")]
    NotArrow {
        /// The path.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The schema has no usable key column.
    #[error("{path}: {source}")]
    Layout {
        /// The path.
        path: String,
        /// The cause.
        source: LayoutError,
    },
    /// The key column holds nulls or is out of order.
    #[error("{path}: key column `{column}` is not strictly increasing at row {row} ({previous} then {next}); re-run `embedstream convert` to rebuild the key")]
    Unsorted {
        /// The path.
        path: String,
        /// Key column name.
        column: String,
        /// Global row number of the offending key.
        row: usize,
        /// The key before it.
        previous: String,
        /// The offending key.
        next: String,
    },
    /// The key column has nulls.
    #[error("{path}: key column `{column}` has a null at row {row}")]
    NullKey {
        /// The path.
        path: String,
        /// Key column name.
        column: String,
        /// Global row number.
        row: usize,
    },
}

/// A converted file, mapped and indexed. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    file: MappedIpcFile,
    layout: FileLayout,
    /// Key column of each batch, as decoded (zero-copy views of the map).
    keys: Vec<FixedSizeBinaryArray>,
    /// Global row number of each batch's first row, then the total.
    row_starts: Vec<usize>,
}

impl Store {
    /// Map `path`, decode its key column and check it; the other columns
    /// are decoded on first use ([`Store::batch`]).
    /// `key_column` overrides the key named in the file's metadata.
    pub fn open(path: &Path, key_column: Option<&str>) -> Result<Self, StoreError> {
        Self::from_file(MappedIpcFile::open(path)?, path, key_column)
    }

    /// [`Store::open`] for serving: the file is protected from in-place
    /// writes ([`MappedIpcFile::open_protected`]).
    pub fn open_protected(path: &Path, key_column: Option<&str>) -> Result<Self, StoreError> {
        Self::from_file(MappedIpcFile::open_protected(path)?, path, key_column)
    }

    fn from_file(
        file: MappedIpcFile,
        path: &Path,
        key_column: Option<&str>,
    ) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let layout = FileLayout::from_schema(file.schema(), key_column).map_err(|source| {
            StoreError::Layout {
                path: shown.clone(),
                source,
            }
        })?;
        let key_name = file.schema().field(layout.key_index).name().clone();

        let mut keys = Vec::with_capacity(file.num_batches());
        let mut row_starts = Vec::with_capacity(file.num_batches() + 1);
        let mut rows = 0usize;
        for b in 0..file.num_batches() {
            let column =
                file.decode_column(b, layout.key_index)
                    .map_err(|e| StoreError::NotArrow {
                        path: shown.clone(),
                        reason: e.to_string(),
                    })?;
            let array = column
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| StoreError::NotArrow {
                    path: shown.clone(),
                    reason: "key column does not decode as FixedSizeBinary".into(),
                })?
                .clone();
            if array.null_count() > 0 {
                let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
                return Err(StoreError::NullKey {
                    path: shown,
                    column: key_name,
                    row: rows + row,
                });
            }
            row_starts.push(rows);
            rows += array.len();
            keys.push(array);
        }
        row_starts.push(rows);

        let store = Store {
            file,
            layout,
            keys,
            row_starts,
        };
        store.check_order(&shown, &key_name)?;
        Ok(store)
    }

    /// Check every row's key is greater than the one before, whatever the
    /// file's metadata says (what a hot swap checks before switching).
    pub fn check_every_key(&self, path: &str) -> Result<(), StoreError> {
        let column = self.schema().field(self.layout.key_index).name().clone();
        self.check_order_of(path, &column, true)
    }

    /// Strictly increasing keys: every row if the writer did not vouch for
    /// them, only across batch boundaries if it did.
    fn check_order(&self, path: &str, column: &str) -> Result<(), StoreError> {
        self.check_order_of(path, column, !self.layout.keys_verified_by_writer)
    }

    fn check_order_of(&self, path: &str, column: &str, full: bool) -> Result<(), StoreError> {
        let mut previous: Option<&[u8]> = None;
        for (b, keys) in self.keys.iter().enumerate() {
            let rows: Box<dyn Iterator<Item = usize>> = if full || keys.len() < 2 {
                Box::new(0..keys.len())
            } else {
                Box::new([0, keys.len() - 1].into_iter())
            };
            for i in rows {
                let key = keys.value(i);
                if let Some(prev) = previous {
                    check_key_order(self.row_starts[b] + i, prev, key).map_err(|e| {
                        StoreError::Unsorted {
                            path: path.to_string(),
                            column: column.to_string(),
                            row: e.row,
                            previous: e.previous,
                            next: e.next,
                        }
                    })?;
                }
                previous = Some(key);
            }
        }
        Ok(())
    }

    /// The underlying mapped file (schema, raw IPC blocks for Flight).
    pub fn file(&self) -> &MappedIpcFile {
        &self.file
    }

    /// The file's schema.
    pub fn schema(&self) -> &SchemaRef {
        self.file.schema()
    }

    /// Which columns are the key and the vector.
    pub fn layout(&self) -> &FileLayout {
        &self.layout
    }

    /// Number of record batches.
    pub fn num_batches(&self) -> usize {
        self.keys.len()
    }

    /// Record batch `b` (file = key order), decoded on first use and cached;
    /// a [`BatchError`] if its body is damaged or `b` is out of range.
    pub fn batch(&self, b: usize) -> Result<&RecordBatch, BatchError> {
        self.file.batch(b)
    }

    /// Every record batch in order, each decoded as the iterator reaches it.
    pub fn iter_batches(&self) -> impl Iterator<Item = Result<&RecordBatch, BatchError>> + '_ {
        (0..self.num_batches()).map(|b| self.batch(b))
    }

    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.row_starts.last().copied().unwrap_or(0)
    }

    /// Global row number of the first row of batch `batch`.
    pub fn batch_start(&self, batch: usize) -> usize {
        self.row_starts[batch]
    }

    /// (batch, row within batch) of a global row `row < num_rows()`.
    pub fn locate(&self, row: usize) -> (usize, usize) {
        // partition_point gives the first start > row; the batch is the one before.
        let batch = self
            .row_starts
            .partition_point(|&start| start <= row)
            .saturating_sub(1);
        (batch, row - self.row_starts[batch])
    }

    /// The key of global row `row < num_rows()`.
    pub fn key(&self, row: usize) -> &[u8] {
        let (batch, i) = self.locate(row);
        self.keys[batch].value(i)
    }

    /// The key column of batch `batch`.
    pub fn batch_keys(&self, batch: usize) -> &FixedSizeBinaryArray {
        &self.keys[batch]
    }

    /// First and last key, if the file has rows.
    pub fn key_range(&self) -> Option<(&[u8], &[u8])> {
        let n = self.num_rows();
        (n > 0).then(|| (self.key(0), self.key(n - 1)))
    }

    /// Global row number of the first row whose key is greater than `after`
    /// (`num_rows()` if none): the resume point for a checkpoint, whether or
    /// not `after` is in the file. Binary search over rows (each probe finds its batch by binary search).
    pub fn position_after(&self, after: &Key) -> usize {
        let after = &after[..];
        let (mut lo, mut hi) = (0usize, self.num_rows());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) <= after {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Shared handle used by the services.
pub type SharedStore = Arc<Store>;
