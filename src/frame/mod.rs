//! Rebuilds a pandas DataFrame (or dict-of-lists / list-of-dicts) from the
//! pickle machine's object graph into named Arrow columns.
//!
//! Contract with [`crate::convert`]:
//! - [`read_pickle`] returns the columns in the DataFrame's order, with their
//!   names, all of the same length;
//! - a column of equal-length numeric arrays/lists is a
//!   `FixedSizeList<Float32, dim>` (`Float64` with `keep_float64`);
//! - no column is named or added for the key: that is `convert`'s job.

use std::{path::Path, sync::Arc};

use arrow_array::ArrayRef;

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
    /// Not implemented yet (stub).
    #[error("{0}")]
    Unsupported(String),
}

/// Read the pickle at `path` safely and rebuild its columns.
pub fn read_pickle(path: &Path, options: &FrameOptions) -> Result<Frame, FrameError> {
    let _ = (path, options);
    Err(FrameError::Unsupported(
        "the pickle reader is not built yet".into(),
    ))
}
