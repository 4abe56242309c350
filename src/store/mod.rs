//! The mapped store: a converted Arrow IPC file memory-mapped once, its record
//! batches decoded in place (zero-copy) on first use, and the key index used
//! to resume.
//!
//! A data set directory ([`crate::format::manifest`]) is one store over all
//! its shards ([`Store::open_dataset`]): batches and rows are numbered
//! globally, shard after shard, so readers never see shards. Its shards are
//! checked against the manifest at open (each refusal names the shard), and
//! each IPC block against its checksum (XXH3-128) the first time it is read
//! ([`Store::batch`], [`Store::record_batch_block`]; the result is cached).
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

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use arrow_schema::SchemaRef;

pub use ipc_file::{BatchError, IpcBlock, MappedIpcFile};

pub use crate::format::Key;
use crate::format::{
    check_key_order, format_uuid,
    manifest::{block_checksum, schema_entries, Manifest, ManifestError, MANIFEST_FILE},
    FileLayout, LayoutError,
};

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
    /// A data set whose manifest is unreadable or disagrees with its shards
    /// (the message names the shard).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
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

/// A converted file, or a data set's shards, mapped and indexed. Cheap to
/// share behind an `Arc`.
///
/// Batches are numbered globally: the shards' batches one after the other,
/// in key order (`global = first_batch[shard] + local`), and so are rows.
/// Everything above the store (`position_after`, `locate`, `RecruitTable`,
/// the encoders) works on global numbers and does not know about shards.
#[derive(Debug)]
pub struct Store {
    shards: Vec<Shard>,
    /// The data set's manifest, when opened from a directory.
    manifest: Option<ManifestInfo>,
    layout: FileLayout,
    /// Key column of each batch, as decoded (zero-copy views of the map).
    keys: Vec<FixedSizeBinaryArray>,
    /// Global row number of each batch's first row, then the total.
    row_starts: Vec<usize>,
    /// Global number of each shard's first batch, then the total.
    first_batch: Vec<usize>,
}

#[derive(Debug)]
struct ManifestInfo {
    /// `DIR/manifest.json`, as errors show it.
    path: String,
}

/// One mapped shard (a single-file store has one, without checksums).
#[derive(Debug)]
struct Shard {
    file: MappedIpcFile,
    /// File name inside the data set directory (the path for a single file).
    name: String,
    /// How errors name it: `shard N (FILE)`.
    label: String,
    /// Whether the writer vouched for its key order.
    keys_verified_by_writer: bool,
    /// The manifest's per-block checksums, checked lazily; `None` for a single file.
    sums: Option<BlockSums>,
}

/// A shard's expected block checksums and the result of checking each,
/// computed the first time the block is read and then cached.
#[derive(Debug)]
struct BlockSums {
    batches: Vec<String>,
    dictionaries: Vec<String>,
    batch_checked: Vec<OnceLock<Result<(), String>>>,
    dictionaries_checked: OnceLock<Result<(), String>>,
}

impl Shard {
    /// Check block `local`'s checksum (and, before any batch, every
    /// dictionary's) against the manifest, once; a single file has no sums.
    fn verify_batch(&self, local: usize) -> Result<(), String> {
        let Some(sums) = &self.sums else {
            return Ok(());
        };
        self.verify_dictionaries()?;
        let cell = sums
            .batch_checked
            .get(local)
            .ok_or_else(|| format!("no record batch {local}"))?;
        cell.get_or_init(|| {
            let bytes = self
                .file
                .record_batch_extent(local)
                .ok_or_else(|| format!("no record batch {local}"))??;
            let want = sums.batches.get(local).map(String::as_str).unwrap_or("");
            check_sum(&bytes, want)
        })
        .clone()
    }

    fn verify_dictionaries(&self) -> Result<(), String> {
        let Some(sums) = &self.sums else {
            return Ok(());
        };
        sums.dictionaries_checked
            .get_or_init(|| {
                for (i, want) in sums.dictionaries.iter().enumerate() {
                    let bytes = self
                        .file
                        .dictionary_extent(i)
                        .ok_or_else(|| format!("no dictionary {i}"))??;
                    check_sum(&bytes, want).map_err(|e| format!("dictionary {i}: {e}"))?;
                }
                Ok(())
            })
            .clone()
    }

    /// A batch error of this shard, renumbered to the global batch `b` and
    /// naming the shard (for a single file: unchanged).
    fn error(&self, b: usize, local: usize, reason: String) -> BatchError {
        if self.sums.is_none() {
            return BatchError { batch: b, reason };
        }
        BatchError {
            batch: b,
            reason: format!("{}, its record batch {local}: {reason}", self.label),
        }
    }
}

fn check_sum(bytes: &[u8], want: &str) -> Result<(), String> {
    let got = block_checksum(bytes);
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "its bytes do not match their checksum (XXH3-128 {got}, the manifest lists {want})"
        ))
    }
}

/// One raw IPC block of a store, checked against its checksum if it has one.
pub type CheckedBlock = Result<IpcBlock, BatchError>;

impl Store {
    /// Map `path`, decode its key column and check it; the other columns
    /// are decoded on first use ([`Store::batch`]).
    /// `key_column` overrides the key named in the file's metadata.
    /// One file only: a data set directory is [`Store::open_dataset`].
    pub fn open(path: &Path, key_column: Option<&str>) -> Result<Self, StoreError> {
        Self::from_file(MappedIpcFile::open(path)?, path, key_column)
    }

    /// [`Store::open`] for serving: the file is protected from in-place
    /// writes ([`MappedIpcFile::open_protected`]).
    pub fn open_protected(path: &Path, key_column: Option<&str>) -> Result<Self, StoreError> {
        Self::from_file(MappedIpcFile::open_protected(path)?, path, key_column)
    }

    /// A file ([`Store::open`], [`Store::open_protected`] if `protected`)
    /// or a data set directory ([`Store::open_dataset`]): what
    /// [`crate::dataset::Dataset`] opens.
    pub fn open_any(
        path: &Path,
        key_column: Option<&str>,
        protected: bool,
    ) -> Result<Self, StoreError> {
        match (path.is_dir(), protected) {
            (true, _) => Self::open_dataset(path, key_column, protected),
            (false, true) => Self::open_protected(path, key_column),
            (false, false) => Self::open(path, key_column),
        }
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
        let shard = Shard {
            file,
            name: shown.clone(),
            label: shown.clone(),
            keys_verified_by_writer: layout.keys_verified_by_writer,
            sums: None,
        };
        Self::from_shards(vec![shard], None, layout, &shown)
    }

    /// Open the data set directory `dir` (see [`crate::format::manifest`]):
    /// read `manifest.json`, map every shard, decode its key column, and
    /// check each shard against the manifest (size, schema, batches and
    /// their rows, first and last key). Block checksums are checked later,
    /// the first time each block is read. Every refusal names the shard.
    pub fn open_dataset(
        dir: &Path,
        key_column: Option<&str>,
        protected: bool,
    ) -> Result<Self, StoreError> {
        let manifest = Manifest::read(dir)?;
        let shown = dir.join(MANIFEST_FILE).display().to_string();
        let refuse = |reason: String| {
            StoreError::Manifest(ManifestError {
                path: shown.clone(),
                reason,
            })
        };
        if let Some(k) = key_column {
            if k != manifest.key_column {
                return Err(refuse(format!(
                    "--key-column `{k}` differs from the data set's key column `{}`",
                    manifest.key_column
                )));
            }
        }
        if manifest.shards.is_empty() {
            return Err(refuse("the data set lists no shards".into()));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut layout: Option<FileLayout> = None;
        for (i, entry) in manifest.shards.iter().enumerate() {
            let label = entry.label(i);
            let path = dir.join(&entry.file);
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(refuse(format!(
                        "{label}: no such file in {}",
                        dir.display()
                    )))
                }
                Err(e) => return Err(refuse(format!("{label}: {e}"))),
            };
            if size != entry.bytes {
                return Err(refuse(format!(
                    "{label}: the file has {size} bytes, the manifest lists {}",
                    entry.bytes
                )));
            }
            let opened = if protected {
                MappedIpcFile::open_protected(&path)
            } else {
                MappedIpcFile::open(&path)
            };
            let file = opened.map_err(|e| refuse(format!("{label}: {e}")))?;
            let fields = schema_entries(file.schema());
            if fields != manifest.schema {
                let differs = fields
                    .iter()
                    .zip(&manifest.schema)
                    .position(|(a, b)| a != b)
                    .unwrap_or(fields.len().min(manifest.schema.len()));
                let describe = |f: Option<&crate::format::manifest::FieldEntry>| {
                    f.map_or_else(
                        || "no column".to_string(),
                        |f| format!("`{}` {}", f.name, f.data_type),
                    )
                };
                return Err(refuse(format!(
                    "{label}: its schema differs from the manifest's at column {differs} (the file has {}, the manifest {})",
                    describe(fields.get(differs)),
                    describe(manifest.schema.get(differs))
                )));
            }
            let shard_layout = FileLayout::from_schema(file.schema(), Some(&manifest.key_column))
                .map_err(|e| refuse(format!("{label}: {e}")))?;
            let rows: Vec<usize> = (0..file.num_batches())
                .filter_map(|b| file.batch_num_rows(b))
                .collect();
            let total: usize = rows.iter().sum();
            if total as u64 != entry.rows {
                return Err(refuse(format!(
                    "{label}: the file holds {total} rows, the manifest lists {}",
                    entry.rows
                )));
            }
            if rows.len() != entry.batches.len() {
                return Err(refuse(format!(
                    "{label}: the file holds {} record batches, the manifest lists {}",
                    rows.len(),
                    entry.batches.len()
                )));
            }
            if let Some((b, (n, e))) = rows
                .iter()
                .zip(&entry.batches)
                .enumerate()
                .find(|(_, (n, e))| **n as u64 != e.rows)
            {
                return Err(refuse(format!(
                    "{label}: its record batch {b} holds {n} rows, the manifest lists {}",
                    e.rows
                )));
            }
            if file.num_dictionaries() != entry.dictionaries.len() {
                return Err(refuse(format!(
                    "{label}: the file holds {} dictionaries, the manifest lists {}",
                    file.num_dictionaries(),
                    entry.dictionaries.len()
                )));
            }
            let keys_verified_by_writer = shard_layout.keys_verified_by_writer;
            layout.get_or_insert(shard_layout);
            shards.push(Shard {
                file,
                name: entry.file.clone(),
                label,
                keys_verified_by_writer,
                sums: Some(BlockSums {
                    batches: entry.batches.iter().map(|b| b.xxh3.clone()).collect(),
                    dictionaries: entry.dictionaries.clone(),
                    batch_checked: entry.batches.iter().map(|_| OnceLock::new()).collect(),
                    dictionaries_checked: OnceLock::new(),
                }),
            });
        }
        let Some(layout) = layout else {
            return Err(refuse("the data set lists no shards".into()));
        };
        let store = Self::from_shards(
            shards,
            Some(ManifestInfo {
                path: shown.clone(),
            }),
            layout,
            &shown,
        )?;
        // Each shard's actual first and last key against the manifest's.
        for (i, entry) in manifest.shards.iter().enumerate() {
            let (lo, hi) = (store.first_batch[i], store.first_batch[i + 1]);
            let (start, end) = (store.row_starts[lo], store.row_starts[hi]);
            let actual = (end > start).then(|| (store.key(start), store.key(end - 1)));
            let listed = entry.key_range();
            let same = match (actual, listed) {
                (None, None) => true,
                (Some((a, b)), Some((c, d))) => a == c && b == d,
                _ => false,
            };
            if !same {
                let show = |r: Option<(&[u8], &[u8])>| {
                    r.map_or_else(
                        || "none".to_string(),
                        |(a, b)| format!("{} to {}", format_uuid(a), format_uuid(b)),
                    )
                };
                return Err(refuse(format!(
                    "{}: its keys run {}, the manifest lists {}",
                    entry.label(i),
                    show(actual),
                    show(listed.as_ref().map(|(a, b)| (&a[..], &b[..])))
                )));
            }
        }
        Ok(store)
    }

    fn from_shards(
        shards: Vec<Shard>,
        manifest: Option<ManifestInfo>,
        layout: FileLayout,
        shown: &str,
    ) -> Result<Self, StoreError> {
        let total_batches: usize = shards.iter().map(|s| s.file.num_batches()).sum();
        let mut keys = Vec::with_capacity(total_batches);
        let mut row_starts = Vec::with_capacity(total_batches + 1);
        let mut first_batch = Vec::with_capacity(shards.len() + 1);
        let mut rows = 0usize;
        for shard in &shards {
            first_batch.push(keys.len());
            let file = &shard.file;
            let key_name = file.schema().field(layout.key_index).name().clone();
            let not_arrow = |reason: String| StoreError::NotArrow {
                path: if manifest.is_some() {
                    format!("{shown}: {}", shard.label)
                } else {
                    shown.to_string()
                },
                reason,
            };
            for b in 0..file.num_batches() {
                let column = file
                    .decode_column(b, layout.key_index)
                    .map_err(|e| not_arrow(e.to_string()))?;
                let array = column
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .ok_or_else(|| {
                        not_arrow("key column does not decode as FixedSizeBinary".into())
                    })?
                    .clone();
                if array.null_count() > 0 {
                    let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
                    return Err(StoreError::NullKey {
                        path: shown.to_string(),
                        column: key_name,
                        row: rows + row,
                    });
                }
                row_starts.push(rows);
                rows += array.len();
                keys.push(array);
            }
        }
        first_batch.push(keys.len());
        row_starts.push(rows);

        let key_name = shards[0]
            .file
            .schema()
            .field(layout.key_index)
            .name()
            .clone();
        let store = Store {
            shards,
            manifest,
            layout,
            keys,
            row_starts,
            first_batch,
        };
        store.check_order_of(shown, &key_name, false)?;
        Ok(store)
    }

    /// Check every row's key is greater than the one before, whatever the
    /// file's metadata says (what a hot swap checks before switching).
    pub fn check_every_key(&self, path: &str) -> Result<(), StoreError> {
        let column = self.schema().field(self.layout.key_index).name().clone();
        self.check_order_of(path, &column, true)
    }

    /// Strictly increasing keys: every row of a shard whose writer did not
    /// vouch for them (or of every shard with `full`), else only across
    /// batch boundaries (shard boundaries included).
    fn check_order_of(&self, path: &str, column: &str, full: bool) -> Result<(), StoreError> {
        let mut previous: Option<&[u8]> = None;
        for (s, shard) in self.shards.iter().enumerate() {
            let every_row = full || !shard.keys_verified_by_writer;
            for b in self.first_batch[s]..self.first_batch[s + 1] {
                let keys = &self.keys[b];
                let rows: Box<dyn Iterator<Item = usize>> = if every_row || keys.len() < 2 {
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
        }
        Ok(())
    }

    /// The first shard's mapped file: for a single-file store (what
    /// `convert --previous` opens), the file. Serving code uses the
    /// shard-aware methods below.
    pub fn file(&self) -> &MappedIpcFile {
        &self.shards[0].file
    }

    /// The schema (the first shard's, with its metadata; every shard has
    /// the same fields).
    pub fn schema(&self) -> &SchemaRef {
        self.shards[0].file.schema()
    }

    /// Which columns are the key and the vector.
    pub fn layout(&self) -> &FileLayout {
        &self.layout
    }

    /// Whether this store is a data set directory (opened from a manifest).
    pub fn is_dataset(&self) -> bool {
        self.manifest.is_some()
    }

    /// The manifest's path, for a data set.
    pub fn manifest_path(&self) -> Option<&str> {
        self.manifest.as_ref().map(|m| m.path.as_str())
    }

    /// Number of shards (1 for a single file).
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// File name of shard `s` (the path, for a single file).
    pub fn shard_name(&self, s: usize) -> &str {
        &self.shards[s].name
    }

    /// Global rows `start..end` of shard `s`.
    pub fn shard_rows(&self, s: usize) -> std::ops::Range<usize> {
        self.row_starts[self.first_batch[s]]..self.row_starts[self.first_batch[s + 1]]
    }

    /// The shard holding global batch `b`, and the batch's number in it.
    pub fn shard_of_batch(&self, b: usize) -> (usize, usize) {
        let s = self
            .first_batch
            .partition_point(|&first| first <= b)
            .saturating_sub(1)
            .min(self.shards.len() - 1);
        (s, b - self.first_batch[s])
    }

    /// Every shard's mapped file.
    pub fn files(&self) -> impl Iterator<Item = &MappedIpcFile> + '_ {
        self.shards.iter().map(|s| &s.file)
    }

    /// Total size of the mapped files in bytes.
    pub fn total_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.file.len()).sum()
    }

    /// Number of record batches (over every shard).
    pub fn num_batches(&self) -> usize {
        self.keys.len()
    }

    /// Record batch `b` (global, key order), decoded on first use and
    /// cached; for a data set its block is first checked against the
    /// manifest's checksum (once). A [`BatchError`] names the shard and
    /// batch if the bytes are damaged, or if `b` is out of range.
    pub fn batch(&self, b: usize) -> Result<&RecordBatch, BatchError> {
        if b >= self.num_batches() {
            return Err(BatchError {
                batch: b,
                reason: format!(
                    "the {} has {} record batches",
                    if self.is_dataset() {
                        "data set"
                    } else {
                        "file"
                    },
                    self.num_batches()
                ),
            });
        }
        let (s, local) = self.shard_of_batch(b);
        let shard = &self.shards[s];
        shard
            .verify_batch(local)
            .map_err(|reason| shard.error(b, local, reason))?;
        shard
            .file
            .batch(local)
            .map_err(|e| shard.error(b, local, e.reason))
    }

    /// The raw IPC block of batch `b`, as stored (views of the map), after
    /// the same checksum check as [`Store::batch`]: what Flight sends.
    pub fn record_batch_block(&self, b: usize) -> CheckedBlock {
        let (s, local) = self.shard_of_batch(b);
        let shard = &self.shards[s];
        shard
            .verify_batch(local)
            .map_err(|reason| shard.error(b, local, reason))?;
        match shard.file.record_batch_block(local) {
            Some(block) => block.map_err(|reason| shard.error(b, local, reason)),
            None => Err(shard.error(b, local, "no such record batch".into())),
        }
    }

    /// Shard `s`'s raw dictionary messages, checked against the manifest.
    /// An error is reported as about the shard's first batch, global `b`.
    pub fn dictionary_blocks(&self, s: usize, b: usize) -> Result<Vec<IpcBlock>, BatchError> {
        let shard = &self.shards[s];
        let local = b.saturating_sub(self.first_batch[s]);
        shard
            .verify_dictionaries()
            .map_err(|reason| shard.error(b, local, reason))?;
        shard
            .file
            .dictionary_blocks()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| shard.error(b, local, reason))
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
        self.partition_rows(|key| key <= after)
    }

    /// Global row number of the first row whose key is `key` or greater
    /// (`num_rows()` if none): where a `range:` ticket starts.
    pub fn position_at_or_after(&self, key: &Key) -> usize {
        let key = &key[..];
        self.partition_rows(|k| k < key)
    }

    /// The first row for which `before(key)` is false, `before` being true
    /// for a prefix of the rows: binary search over rows (each probe finds
    /// its batch by binary search).
    fn partition_rows(&self, before: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0usize, self.num_rows());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.key(mid)) {
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
