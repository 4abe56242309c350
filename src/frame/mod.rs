//! Rebuilds a pandas DataFrame (or dict-of-lists / list-of-dicts) from the
//! pickle machine's object graph into named Arrow columns.
//!
//! Contract with [`crate::convert`]:
//! - [`read_pickle`] returns the columns in the DataFrame's order, with their
//!   names, all of the same length;
//! - a column of equal-length numeric arrays/lists is a
//!   `FixedSizeList<Float32, dim>` (`Float64` with `keep_float64`);
//! - no column is named or added for the key: that is `convert`'s job.
//!
//! Column types: object/str → Utf8 (None/NaN/NA → null); category →
//! Dictionary(codes' integer width, values); int/uint/float/bool → the same
//! Arrow type; nullable Int/Float/boolean → nullable columns; datetime64 →
//! Timestamp (tz kept); vectors → FixedSizeList. Anything else is refused with
//! an error naming the column and what was found.

mod build;
mod columns;
pub mod ndarray;
mod vectors;

use std::{path::Path, sync::Arc};

use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use bytes::Bytes;

pub use vectors::VectorCells;

use crate::pickle::{Limits, Machine, PickleError, PickleSource};

/// Options that change how columns are rebuilt.
#[derive(Clone, Default)]
pub struct FrameOptions {
    /// Keep float64 vectors as Float64 instead of narrowing to Float32.
    pub keep_float64: bool,
    /// Most bytes the pickle machine may reserve for the values it builds
    /// (see [`crate::pickle::Limits::max_arena_bytes`]). Default:
    /// [`crate::pickle::DEFAULT_ARENA_FACTOR`] × the input's size +
    /// [`crate::pickle::ARENA_FLOOR`].
    pub max_arena_bytes: Option<usize>,
    /// Called with the number of input bytes consumed so far (for progress bars).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl std::fmt::Debug for FrameOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameOptions")
            .field("keep_float64", &self.keep_float64)
            .field("max_arena_bytes", &self.max_arena_bytes)
            .finish()
    }
}

/// One named column.
#[derive(Debug)]
pub struct FrameColumn {
    /// Column name as pandas had it (non-string names are formatted with `str()` rules).
    pub name: String,
    /// The values.
    pub data: ColumnData,
}

/// A column's values: built, or (for vector columns) views of the input that
/// are built one batch at a time, so a frame never holds a second copy of
/// its embeddings.
#[derive(Debug)]
pub enum ColumnData {
    /// An Arrow array.
    Array(ArrayRef),
    /// A vector column, built on demand by [`ColumnData::slice`].
    Vectors(VectorCells),
}

impl From<ArrayRef> for ColumnData {
    fn from(array: ArrayRef) -> Self {
        ColumnData::Array(array)
    }
}

impl ColumnData {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Array(a) => a.len(),
            ColumnData::Vectors(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Arrow type of the built column.
    pub fn data_type(&self) -> DataType {
        match self {
            ColumnData::Array(a) => a.data_type().clone(),
            ColumnData::Vectors(v) => v.data_type(),
        }
    }

    /// Null rows.
    pub fn null_count(&self) -> usize {
        match self {
            ColumnData::Array(a) => a.null_count(),
            ColumnData::Vectors(v) => v.null_count(),
        }
    }

    /// Bytes per row once built (an average for variable-width columns).
    pub fn row_bytes(&self) -> usize {
        match self {
            ColumnData::Array(a) => a.get_array_memory_size() / a.len().max(1),
            ColumnData::Vectors(v) => v.row_bytes(),
        }
    }

    /// Rows `start..start + len` as an array: a zero-copy slice of a built
    /// column, or the vectors of those rows built now.
    pub fn slice(&self, start: usize, len: usize) -> Result<ArrayRef, FrameError> {
        match self {
            ColumnData::Array(a) => {
                let start = start.min(a.len());
                Ok(a.slice(start, len.min(a.len() - start)))
            }
            ColumnData::Vectors(v) => v.slice(start, len),
        }
    }

    /// The whole column as one array (builds all vectors at once: for small
    /// frames and tests; the converter goes batch by batch).
    pub fn to_array(&self) -> Result<ArrayRef, FrameError> {
        self.slice(0, self.len())
    }
}

/// The rebuilt table.
#[derive(Debug)]
pub struct Frame {
    /// Columns in their original order.
    pub columns: Vec<FrameColumn>,
    /// Number of rows.
    pub rows: usize,
}

/// Why a pickle could not be rebuilt into columns.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pickle itself was refused or is broken (see [`PickleError`]).
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// Something pandas can hold that this converter does not support.
    #[error("{0}")]
    Unsupported(String),
    /// The object graph is not shaped like a pandas pickle.
    #[error("malformed DataFrame pickle: {0}")]
    Malformed(String),
    /// A vector column whose rows have different lengths.
    #[error(
        "column '{column}': ragged vectors cannot be a fixed-size list: row {row} has {len} \
         values but row {first_row} has {dim}"
    )]
    Ragged {
        /// Column name.
        column: String,
        /// First row whose length differs.
        row: usize,
        /// Its length.
        len: usize,
        /// Row that set the expected length.
        first_row: usize,
        /// Expected length.
        dim: usize,
    },
}

impl FrameError {
    /// Whether the pickle was refused for needing more memory than its
    /// budget ([`FrameOptions::max_arena_bytes`]).
    pub fn is_over_memory_budget(&self) -> bool {
        matches!(self, FrameError::Pickle(PickleError::MemoryBudget { .. }))
    }
}

/// Read the pickle at `path` safely and rebuild its columns. The file is
/// memory-mapped; pages already consumed are released as the reader moves on.
pub fn read_pickle(path: &Path, options: &FrameOptions) -> Result<Frame, FrameError> {
    let source = PickleSource::open(path)?;
    read_source(&source, options)
}

/// Same as [`read_pickle`] for bytes already in memory (tests, fuzzing).
pub fn read_pickle_bytes(data: Bytes, options: &FrameOptions) -> Result<Frame, FrameError> {
    let source = PickleSource::from_bytes(data);
    read_source(&source, options)
}

fn read_source(source: &PickleSource, options: &FrameOptions) -> Result<Frame, FrameError> {
    let progress = options.progress.clone();
    let mut on_progress = |pos: usize| {
        source.release_before(pos);
        if let Some(p) = &progress {
            p(pos as u64);
        }
    };
    let data = source.bytes().clone();
    let mut limits = Limits::for_input(data.len());
    if let Some(max) = options.max_arena_bytes {
        limits.max_arena_bytes = max;
    }
    let loaded = Machine::with_limits(data, limits)
        .on_progress(&mut on_progress)
        .run()?;
    source.rewind_release();
    let builder = build::Builder::new(&loaded.heap, source, options);
    builder.frame(loaded.root)
}
