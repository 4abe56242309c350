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

use std::{path::Path, sync::Arc};

use arrow_array::ArrayRef;
use bytes::Bytes;

use crate::pickle::{Machine, PickleError, PickleSource};

/// Options that change how columns are rebuilt.
#[derive(Clone, Default)]
pub struct FrameOptions {
    /// Keep float64 vectors as Float64 instead of narrowing to Float32.
    pub keep_float64: bool,
    /// Called with the number of input bytes consumed so far (for progress bars).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl std::fmt::Debug for FrameOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameOptions")
            .field("keep_float64", &self.keep_float64)
            .finish()
    }
}

/// One named column.
#[derive(Debug, Clone)]
pub struct FrameColumn {
    /// Column name as pandas had it (non-string names are formatted with `str()` rules).
    pub name: String,
    /// The values.
    pub array: ArrayRef,
}

/// The rebuilt table.
#[derive(Debug, Clone)]
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
    let loaded = Machine::new(source.bytes().clone())
        .on_progress(&mut on_progress)
        .run()?;
    source.rewind_release();
    let builder = build::Builder::new(&loaded.heap, source, options);
    builder.frame(loaded.root)
}
