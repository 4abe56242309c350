//! `convert NEW.pkl --previous OLD.arrow --match-on COLUMN`: a re-export
//! converted so that every row still exported keeps the key it had in OLD.
//!
//! The join ([`plan`]). NEW's match column (in memory, from the pickle) is
//! indexed in a hash table of row numbers (4 bytes a row; values are hashed
//! with XXH3-64 and compared in place, never copied). OLD is read through
//! [`Store`] batch by batch, decoding only the match column, and each OLD
//! row probes the table once: O(NEW + OLD), no nested scan.
//!
//! The comparison ([`RefreshBatches`]), as the file is written: each batch
//! of kept rows, built as it is written (vectors narrowed), against OLD's
//! rows, decoded one OLD batch at a time and released behind. The pickle's
//! vectors are read once, by the writer, as in a plain conversion; the
//! changed count reaches the file's metadata when the last row is out
//! ([`late_schema`]).
//!
//! - A NEW row found in OLD is *kept*: it takes OLD's key, and the output
//!   lists kept rows in OLD's order (which is key order).
//! - It is *changed* when any other column, as it is written to the file
//!   (vectors after narrowing), differs from OLD's, bit for bit (floats are
//!   compared by their bits: `-0.0` differs from `0.0`, a NaN equals the same
//!   NaN). When NEW's columns are not OLD's (a column added, dropped or of
//!   another type), every kept row is changed.
//! - `--on-change renew` gives changed rows fresh keys instead, assigned with
//!   the added rows in pickle order; the output then lists them after the
//!   kept ones (each batch of kept rows goes out without its changed ones,
//!   which wait for the fresh section).
//! - A NEW row not in OLD is *added* and gets a fresh key; an OLD row not in
//!   NEW is *removed*.
//!
//! Fresh keys are deterministic, so converting the same pickle against the
//! same OLD twice gives the same file: they continue OLD's last key, reading
//! it as [`key::compose_v7`] lays keys out — the same millisecond, the
//! 42-bit counter + 1 per fresh row (the next millisecond, counter 0, on
//! overflow) — and their 32 tail bits are the XXH3-64 of the row's match
//! value. They are valid RFC 9562 v7 keys, strictly increasing, and greater
//! than every key in OLD (a greater time-and-counter prefix is greater
//! whatever the tails). Their time is therefore OLD's last key's, not the
//! wall clock's; an empty OLD starts at the Unix epoch.
//!
//! Every check of the inputs (both match columns, nulls, duplicates on
//! either side, OLD's key column and its being an embedstream file) runs
//! before anything is written. An OLD batch that cannot be decoded during
//! the comparison ends the conversion with its error, and the output,
//! written atomically, is not put in place.

use std::{
    fmt,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{anyhow, bail, Context};
use arrow_array::{
    cast::AsArray, Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray,
    FixedSizeListArray, Int64Array, LargeBinaryArray, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, UInt32Array, UInt64Array,
};
use arrow_buffer::Buffer;
use arrow_cast::cast::cast;
use arrow_ord::ord::make_comparator;
use arrow_schema::{DataType, SortOptions};
use arrow_select::{filter::filter_record_batch, take::take};
use hashbrown::HashTable;
use twox_hash::XxHash3_64;

use super::{
    key, late_schema,
    write::{BatchSource, Table},
};
use crate::{
    format::{self, format_uuid},
    frame::{ColumnData, Frame},
    store::Store,
};

/// What a kept row whose content changed gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnChange {
    /// It keeps OLD's key (consumers resuming from a checkpoint do not see it again).
    #[default]
    Keep,
    /// It gets a fresh key after every key in OLD, with the added rows (consumers pulling
    /// only what is new see it again).
    Renew,
}

impl OnChange {
    fn as_str(self) -> &'static str {
        match self {
            OnChange::Keep => "keep",
            OnChange::Renew => "renew",
        }
    }
}

/// Who OLD was: recorded in the new file's metadata and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousIdentity {
    /// OLD's file name.
    pub file: String,
    /// OLD's row count.
    pub rows: usize,
    /// OLD's last key, hyphenated.
    pub last_key: Option<String>,
    /// XXH3-64 of OLD's IPC footer, 16 hex digits.
    pub footer_xxh3: String,
    /// OLD's generation (1 when its metadata has none).
    pub generation: u64,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshSummary {
    /// OLD.
    pub previous: PreviousIdentity,
    /// The match column.
    pub match_on: String,
    /// What changed rows got.
    pub on_change: OnChange,
    /// NEW rows found in OLD (changed or not).
    pub kept: usize,
    /// NEW rows not in OLD.
    pub added: usize,
    /// OLD rows not in NEW.
    pub removed: usize,
    /// Kept rows whose other columns differ from OLD's.
    pub changed: usize,
    /// The new file's generation: OLD's + 1.
    pub generation: u64,
}

impl RefreshSummary {
    /// The `embedstream.*` metadata entries that record this refresh.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let p = &self.previous;
        let mut entries = vec![
            (format::META_GENERATION, self.generation.to_string()),
            (format::META_REFRESH_MATCH_ON, self.match_on.clone()),
            (
                format::META_REFRESH_ON_CHANGE,
                self.on_change.as_str().into(),
            ),
            (format::META_REFRESH_KEPT, self.kept.to_string()),
            (format::META_REFRESH_ADDED, self.added.to_string()),
            (format::META_REFRESH_REMOVED, self.removed.to_string()),
            (format::META_REFRESH_CHANGED, self.changed.to_string()),
            (format::META_PREVIOUS_FILE, p.file.clone()),
            (format::META_PREVIOUS_ROWS, p.rows.to_string()),
            (format::META_PREVIOUS_FOOTER_XXH3, p.footer_xxh3.clone()),
        ];
        if let Some(last) = &p.last_key {
            entries.push((format::META_PREVIOUS_LAST_KEY, last.clone()));
        }
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

impl fmt::Display for RefreshSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.previous;
        write!(
            f,
            "Refreshed against {} (generation {}, {} rows, last key {}, footer xxh3 {}) on `{}`: \
             {} kept ({} changed, {}), {} added, {} removed; this is generation {}.",
            p.file,
            p.generation,
            p.rows,
            p.last_key.as_deref().unwrap_or("none"),
            p.footer_xxh3,
            self.match_on,
            self.kept,
            self.changed,
            match self.on_change {
                OnChange::Keep => "keeping their keys",
                OnChange::Renew => "given fresh keys",
            },
            self.added,
            self.removed,
            self.generation
        )
    }
}

/// OLD, opened and checked before the pickle is read.
#[derive(Debug)]
pub struct Previous {
    path: PathBuf,
    store: Store,
    identity: PreviousIdentity,
    match_index: usize,
}

impl Previous {
    /// Open OLD and check it can be refreshed from: an embedstream Arrow
    /// file whose key column is `key_column` and which has `match_on`.
    pub fn open(path: &Path, key_column: &str, match_on: &str) -> anyhow::Result<Self> {
        let shown = path.display();
        let not_ours = |reason: String| {
            anyhow!(
                "--previous {shown}: not an embedstream file ({reason}); give the Arrow file an \
                 earlier `embedstream convert` wrote"
            )
        };
        let store = Store::open(path, None).map_err(|e| not_ours(e.to_string()))?;
        let meta = store.schema().metadata();
        let Some(old_key) = meta.get(format::META_KEY_COLUMN) else {
            return Err(not_ours(format!(
                "its schema has no `{}` metadata",
                format::META_KEY_COLUMN
            )));
        };
        if old_key != key_column {
            bail!(
                "--previous {shown}: its key column is `{old_key}` but this conversion uses \
                 `{key_column}`; pass --key-column {old_key} to keep its keys"
            );
        }
        if match_on == key_column {
            bail!("--match-on {match_on}: that is the key column; match on a column of the data, such as the source id");
        }
        let match_index = store.schema().index_of(match_on).map_err(|_| {
            anyhow!("--match-on {match_on}: --previous {shown} has no column `{match_on}`")
        })?;
        let generation =
            match meta.get(format::META_GENERATION) {
                None => 1,
                Some(g) => g.parse::<u64>().ok().filter(|&g| g >= 1).ok_or_else(|| {
                    not_ours(format!("its `{}` is `{g}`", format::META_GENERATION))
                })?,
            };
        let identity = PreviousIdentity {
            file: path
                .file_name()
                .map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned()),
            rows: store.num_rows(),
            last_key: store.key_range().map(|(_, last)| format_uuid(last)),
            footer_xxh3: format!("{:016x}", footer_hash(path).map_err(not_ours)?),
            generation,
        };
        // Opening read every key (the order check): those pages would stay
        // resident while the pickle is parsed, the conversion's peak. Drop
        // them; the join reads OLD again batch by batch.
        OldPages::find(&store).release_all(&store);
        Ok(Previous {
            path: path.to_path_buf(),
            store,
            identity,
            match_index,
        })
    }

    /// Who OLD is.
    pub fn identity(&self) -> &PreviousIdentity {
        &self.identity
    }
}

/// XXH3-64 of the IPC footer (the flatbuffer between the last batch and the
/// trailer): the schema with its metadata and every block's offset and size.
fn footer_hash(path: &Path) -> Result<u64, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut trailer = [0u8; 10];
    if len < 10 {
        return Err("too short for an Arrow file".into());
    }
    file.seek(SeekFrom::Start(len - 10))
        .and_then(|_| file.read_exact(&mut trailer))
        .map_err(|e| e.to_string())?;
    let footer_len = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    let start = (len - 10)
        .checked_sub(footer_len)
        .ok_or("footer length points before the file start")?;
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut footer))
        .map_err(|e| e.to_string())?;
    Ok(XxHash3_64::oneshot(&footer))
}

/// The refresh, joined: output row `i` is frame row `order[i]` with key
/// `keys[i]` as if no kept row changed (kept rows in OLD's order with OLD's
/// keys, then the added ones in pickle order with fresh keys). Which kept
/// rows changed is found as they are written ([`RefreshBatches`]).
#[derive(Debug)]
pub struct Plan {
    /// Frame row of each output row.
    pub order: Vec<u32>,
    /// Key of each output row (strictly increasing).
    pub keys: FixedSizeBinaryArray,
    /// Counts and lineage (`changed` is 0 until the rows are written).
    pub summary: RefreshSummary,
    pending: Option<Pending>,
}

/// What the writing of a refresh needs besides the table.
#[derive(Debug)]
pub struct Pending {
    /// The OLD row of each kept output row (output rows `0..old_rows.len()`).
    old_rows: Vec<u32>,
    /// The columns compared: (table column, OLD column). `None`: NEW's
    /// columns are not OLD's, and every kept row is changed.
    columns: Option<Vec<(usize, usize)>>,
    /// Per frame row, the tail of a fresh key it would get (its match
    /// value's XXH3-64, low 32 bits).
    tails: Vec<u32>,
    on_change: OnChange,
    summary: RefreshSummary,
}

impl Plan {
    /// The `embedstream.*` metadata entries of the new file; the changed
    /// count is [`late_schema::PLACEHOLDER`] until the rows are written.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut entries = self.summary.metadata();
        for (key, value) in &mut entries {
            if key == format::META_REFRESH_CHANGED {
                *value = late_schema::PLACEHOLDER.to_string();
            }
        }
        entries
    }

    /// What the writing needs besides the table ([`Pending::batches`]).
    pub fn take_pending(&mut self) -> Option<Pending> {
        self.pending.take()
    }
}

impl Pending {
    /// The refreshed file's batches: `table` (built from the [`Plan`]) in
    /// batches of about `step` rows, each kept row compared with OLD's as
    /// its batch is built.
    pub fn batches<'a>(
        self,
        table: &'a Table,
        previous: &'a Previous,
        step: usize,
    ) -> RefreshBatches<'a> {
        RefreshBatches {
            table,
            store: &previous.store,
            old_path: previous.path.display().to_string(),
            step: step.max(1),
            next: 0,
            changed: 0,
            renewed: Vec::new(),
            fresh: None,
            fresh_next: 0,
            pages: OldPages::find(&previous.store),
            released: 0,
            first_key: None,
            last_key: None,
            pending: self,
        }
    }
}

/// A refresh's record batches, compared with OLD as they are built: each
/// batch of kept rows (vectors narrowed as written) against OLD's rows, so
/// the pickle is read once, by the writer, as in a plain conversion.
/// - `--on-change keep`: every batch goes out as planned; changed rows are
///   counted.
/// - `--on-change renew`: changed rows are left out of their batch and go,
///   with the added rows and in pickle order, to the fresh section after
///   the kept rows, with fresh keys after OLD's last.
///
/// The changed count reaches the file's metadata once every batch is out
/// ([`late_schema`]).
pub struct RefreshBatches<'a> {
    table: &'a Table,
    store: &'a Store,
    old_path: String,
    pending: Pending,
    step: usize,
    /// The next output row of the plan's kept and added rows.
    next: usize,
    changed: usize,
    /// `renew`: the frame rows of the changed kept rows.
    renewed: Vec<u32>,
    /// `renew`: the fresh section (frame rows and keys), made once the
    /// kept rows are out.
    fresh: Option<(Vec<u32>, FixedSizeBinaryArray)>,
    fresh_next: usize,
    pages: OldPages,
    /// OLD batches below this one are compared and their pages released.
    released: usize,
    first_key: Option<[u8; 16]>,
    last_key: Option<[u8; 16]>,
}

impl RefreshBatches<'_> {
    /// The refresh's summary, with the changed rows counted so far.
    pub fn summary(&self) -> RefreshSummary {
        RefreshSummary {
            changed: self.changed,
            ..self.pending.summary.clone()
        }
    }

    /// The first and last key written.
    pub fn key_range(&self) -> Option<([u8; 16], [u8; 16])> {
        self.first_key.zip(self.last_key)
    }

    /// Which rows of `batch` (output rows `first..`, all kept) differ from
    /// their OLD row.
    fn compare(&mut self, first: usize, batch: &RecordBatch) -> anyhow::Result<Vec<bool>> {
        let Some(columns) = &self.pending.columns else {
            return Ok(vec![true; batch.num_rows()]);
        };
        let store = self.store;
        let old_rows = &self.pending.old_rows[first..first + batch.num_rows()];
        let news: Vec<ArrayRef> = columns
            .iter()
            .map(|&(c, _)| batch.column(c).clone())
            .collect();
        let mut changed = vec![false; old_rows.len()];
        let mut k = 0;
        while k < old_rows.len() {
            // The run of this batch's rows that lie in one OLD batch.
            let (b, _) = store.locate(old_rows[k] as usize);
            let (b_start, b_end) = (store.batch_start(b), store.batch_start(b + 1));
            let run_end = k + old_rows[k..].partition_point(|&r| (r as usize) < b_end);
            let olds = columns
                .iter()
                .map(|&(_, old)| decode(store, b, old, &self.old_path))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let differs = olds
                .iter()
                .zip(&news)
                .map(|(old, new)| row_differs(old, new))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for j in k..run_end {
                let i = old_rows[j] as usize - b_start;
                changed[j] = differs.iter().any(|differ| differ(i, j));
            }
            for passed in self.released..b {
                self.pages.release(store, passed);
            }
            self.released = self.released.max(b);
            k = run_end;
        }
        Ok(changed)
    }

    /// `renew`'s fresh section: the changed kept rows and the added ones,
    /// in pickle order, with keys after OLD's last.
    fn fresh_section(&self) -> anyhow::Result<(Vec<u32>, FixedSizeBinaryArray)> {
        let kept = self.pending.old_rows.len();
        let mut rows = self.renewed.clone();
        rows.extend_from_slice(self.table.frame_rows(kept, self.table.rows() - kept));
        rows.sort_unstable();
        let mut fresh = FreshKeys::after(self.store.key_range().map(|(_, last)| last));
        let mut keys = Vec::with_capacity(rows.len() * 16);
        for &row in &rows {
            let tail = self.pending.tails.get(row as usize).copied().unwrap_or(0);
            keys.extend_from_slice(&fresh.next(tail)?);
        }
        Ok((
            rows,
            FixedSizeBinaryArray::new(16, Buffer::from_vec(keys), None),
        ))
    }

    /// Record `batch`'s keys (first and last written), checking that they
    /// increase from the last batch's: the file records `keys_sorted = true`,
    /// which OLD's keys in OLD's order, then fresh ones after OLD's last,
    /// give by construction; checked here once (16 bytes a row) rather than
    /// trusted.
    fn written(&mut self, batch: RecordBatch) -> anyhow::Result<Option<RecordBatch>> {
        let keys = batch
            .column(self.table.key_index())
            .as_fixed_size_binary_opt()
            .ok_or_else(|| anyhow!("internal error: the key column is not FixedSizeBinary"))?;
        for key in keys.iter().flatten() {
            let key: [u8; 16] = key
                .try_into()
                .map_err(|_| anyhow!("internal error: a key of {} bytes", key.len()))?;
            if self.last_key.is_some_and(|last| last >= key) {
                bail!(
                    "internal error: refreshed keys are not increasing at key {}",
                    format_uuid(&key)
                );
            }
            self.first_key.get_or_insert(key);
            self.last_key = Some(key);
        }
        Ok(Some(batch))
    }
}

impl BatchSource for RefreshBatches<'_> {
    fn next_batch(&mut self) -> anyhow::Result<Option<RecordBatch>> {
        let kept = self.pending.old_rows.len();
        let renew = self.pending.on_change == OnChange::Renew;
        // The kept rows, compared as each batch of them is built.
        while self.next < kept {
            let (first, len) = (self.next, self.step.min(kept - self.next));
            let batch = self.table.batch(first, len)?;
            self.next += len;
            let changed = self.compare(first, &batch)?;
            let count = changed.iter().filter(|&&c| c).count();
            self.changed += count;
            if !renew || count == 0 {
                return self.written(batch);
            }
            let frame_rows = self.table.frame_rows(first, len);
            self.renewed.extend(
                frame_rows
                    .iter()
                    .zip(&changed)
                    .filter(|(_, &c)| c)
                    .map(|(&r, _)| r),
            );
            let unchanged = BooleanArray::from(changed.iter().map(|c| !c).collect::<Vec<_>>());
            let batch = filter_record_batch(&batch, &unchanged)?;
            if batch.num_rows() > 0 {
                return self.written(batch);
            }
        }
        if !renew {
            // The added rows, as planned.
            if self.next >= self.table.rows() {
                return Ok(None);
            }
            let len = self.step.min(self.table.rows() - self.next);
            let batch = self.table.batch(self.next, len)?;
            self.next += len;
            return self.written(batch);
        }
        if self.fresh.is_none() {
            self.fresh = Some(self.fresh_section()?);
            // The fresh rows are in pickle order: a second pass over it.
            self.table.rewind_input_release();
        }
        let Some((rows, keys)) = &self.fresh else {
            return Ok(None);
        };
        if self.fresh_next >= rows.len() {
            return Ok(None);
        }
        let (first, len) = (self.fresh_next, self.step.min(rows.len() - self.fresh_next));
        let batch = self
            .table
            .batch_of(&rows[first..first + len], Arc::new(keys.slice(first, len)))?;
        self.fresh_next += len;
        self.written(batch)
    }

    fn settled(&self) -> Vec<(String, String)> {
        vec![(
            format::META_REFRESH_CHANGED.to_string(),
            self.changed.to_string(),
        )]
    }
}

const NONE: u32 = u32::MAX;

/// Join `frame` (NEW) with OLD on `match_on` and assign every row its key.
pub fn plan(
    frame: &Frame,
    previous: &Previous,
    match_on: &str,
    key_column: &str,
    on_change: OnChange,
    input: &Path,
) -> anyhow::Result<Plan> {
    let old_path = previous.path.display().to_string();
    let new_path = input.display().to_string();
    let store = &previous.store;
    if frame.columns.iter().any(|c| c.name == key_column) {
        bail!(
            "{new_path}: the input already has a key column `{key_column}`; with --previous the \
             keys come from {old_path}: drop that column from the export"
        );
    }
    let n = frame.rows;
    let old_rows = store.num_rows();
    if n >= NONE as usize || old_rows >= NONE as usize {
        bail!("--previous: more than {} rows on one side", NONE - 1);
    }
    let new_match_col = frame
        .columns
        .iter()
        .find(|c| c.name == match_on)
        .ok_or_else(|| anyhow!("--match-on {match_on}: {new_path} has no column `{match_on}`"))?;
    if let ColumnData::Vectors(cells) = &new_match_col.data {
        bail!(
            "--match-on {match_on}: {new_path} holds {} in `{match_on}`; match on text, binary or integer ids",
            cells.data_type()
        );
    }
    let new_match = MatchColumn::new(new_match_col.data.to_array()?, match_on, &new_path)?;

    // NEW's index: row numbers, hashed by value; nulls and duplicates refused.
    // Each row's hash also gives the tail of the fresh key it may get.
    let mut index: HashTable<u32> = HashTable::with_capacity(n);
    let mut tails: Vec<u32> = Vec::with_capacity(n);
    for j in 0..n {
        let value = new_match
            .get(j)
            .ok_or_else(|| null_error(&new_path, match_on, j))?;
        let hash = value.hash();
        tails.push(hash as u32);
        let entry = index.entry(
            hash,
            |&r| new_match.get(r as usize) == Some(value),
            |&r| new_match.get(r as usize).map_or(0, |v| v.hash()),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(_) => {
                let rows = (0..n).filter(|&r| new_match.get(r) == Some(value));
                bail!(duplicate_message(&new_path, match_on, value, rows));
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(j as u32);
            }
        }
    }

    // Columns compared: every NEW column but the match column, by name, if
    // OLD has the same set with the same types; otherwise all kept rows changed.
    // (NEW column, which is the table's, OLD column)
    let schema = store.schema();
    let mut compared: Vec<(usize, usize)> = Vec::new();
    let mut same_columns = true;
    for (c, column) in frame.columns.iter().enumerate() {
        if column.name == match_on {
            continue;
        }
        match schema.index_of(&column.name) {
            Ok(i) if schema.field(i).data_type() == &column.data.data_type() => {
                compared.push((c, i));
            }
            _ => same_columns = false,
        }
    }
    if schema.fields().len() != frame.columns.len() + 1 {
        same_columns = false; // OLD has a column NEW does not
    }

    // Probe with OLD, batch by batch. A re-export mostly keeps the order of
    // the rows it keeps, so the NEW row after the last one matched is tried
    // first (one comparison, no hash, no random access to the table); the
    // table answers otherwise. NEW's values are unique (checked above), so a
    // value found either way is the one match.
    //
    // Kept rows are listed in OLD's order, with OLD's keys and rows (read
    // while the batch is resident); they are compared as they are written
    // ([`RefreshBatches`]).
    let old_pages = OldPages::find(store);
    let mut matched = vec![false; n];
    let mut kept_old_rows: Vec<u32> = Vec::with_capacity(n.min(old_rows));
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut keys: Vec<u8> = Vec::with_capacity(n * 16);
    let mut removed: Vec<(u64, u32)> = Vec::new();
    let mut guess = 0usize;
    let mut pairs: Vec<(usize, u32)> = Vec::new();
    for b in 0..store.num_batches() {
        let start = store.batch_start(b);
        let old_match = MatchColumn::new(
            decode(store, b, previous.match_index, &old_path)?,
            match_on,
            &old_path,
        )?;
        if old_match.kind != new_match.kind {
            bail!(
                "--match-on {match_on}: the column holds {} in {old_path} but {} in {new_path}",
                old_match.kind.describe(),
                new_match.kind.describe()
            );
        }
        pairs.clear();
        for i in 0..old_match.len() {
            let row = start + i;
            let value = old_match
                .get(i)
                .ok_or_else(|| null_error(&old_path, match_on, row))?;
            let found = if new_match.get(guess) == Some(value) {
                Some(guess)
            } else {
                let hash = value.hash();
                let found = index
                    .find(hash, |&r| new_match.get(r as usize) == Some(value))
                    .map(|&j| j as usize);
                if found.is_none() {
                    removed.push((hash, row as u32));
                }
                found
            };
            let Some(j) = found else { continue };
            if matched[j] {
                let rows = old_rows_with(store, previous.match_index, value, &old_path)?;
                bail!(duplicate_message(
                    &old_path,
                    match_on,
                    value,
                    rows.into_iter()
                ));
            }
            matched[j] = true;
            guess = j + 1;
            pairs.push((i, j as u32));
        }
        for &(i, j) in &pairs {
            order.push(j);
            keys.extend_from_slice(store.key(start + i));
            kept_old_rows.push((start + i) as u32);
        }
        old_pages.release(store, b);
    }
    drop(pairs);
    let kept = kept_old_rows.len();
    check_removed_duplicates(
        store,
        previous.match_index,
        &mut removed,
        match_on,
        &old_path,
    )?;

    // Then the added rows, in pickle order, with fresh keys whose tails are
    // their match value's hash (`renew` makes these again with the changed
    // rows among them, once they are known).
    let mut fresh = FreshKeys::after(store.key_range().map(|(_, last)| last));
    for j in 0..n {
        if !matched[j] {
            order.push(j as u32);
            keys.extend_from_slice(&fresh.next(tails[j])?);
        }
    }
    let summary = RefreshSummary {
        previous: previous.identity.clone(),
        match_on: match_on.to_string(),
        on_change,
        kept,
        added: n - kept,
        removed: old_rows - kept,
        changed: 0,
        generation: previous.identity.generation + 1,
    };
    Ok(Plan {
        order,
        keys: FixedSizeBinaryArray::new(16, Buffer::from_vec(keys), None),
        pending: Some(Pending {
            old_rows: kept_old_rows,
            columns: same_columns.then_some(compared),
            tails,
            on_change,
            summary: summary.clone(),
        }),
        summary,
    })
}

/// OLD's pages, released batch by batch once compared, so reading OLD's
/// vectors does not grow the resident set by OLD's size.
struct OldPages {
    /// The read-only, file-backed mapping holding OLD's batches (from
    /// `/proc/self/maps`); `None` when it cannot be found, and nothing is released.
    mapping: Option<(usize, usize)>,
}

impl OldPages {
    const PAGE: usize = 4096;

    fn find(store: &Store) -> Self {
        let probe = store
            .file()
            .record_batch_block(0)
            .and_then(Result::ok)
            .map(|block| block.body.as_ptr() as usize);
        OldPages {
            mapping: probe.and_then(read_only_file_mapping_containing),
        }
    }

    /// Drop batch `b`'s body pages from this process's resident set.
    fn release(&self, store: &Store, b: usize) {
        let (Some(mapping), Some(Ok(block))) = (self.mapping, store.file().record_batch_block(b))
        else {
            return;
        };
        let body_start = block.body.as_ptr() as usize;
        let start = body_start.div_ceil(Self::PAGE) * Self::PAGE;
        let end = (body_start + block.body.len()) / Self::PAGE * Self::PAGE;
        Self::release_range(store, mapping, start, end);
    }

    /// Drop every page of OLD's mapping from this process's resident set.
    fn release_all(&self, store: &Store) {
        if let Some((start, end)) = self.mapping {
            Self::release_range(store, (start, end), start, end);
        }
    }

    /// `_store` is OLD: borrowed so that its map outlives the call.
    fn release_range(
        _store: &Store,
        (map_start, map_end): (usize, usize),
        start: usize,
        end: usize,
    ) {
        if start >= end
            || start < map_start
            || end > map_end
            || !start.is_multiple_of(Self::PAGE)
            || !end.is_multiple_of(Self::PAGE)
        {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: [start, end) is page-aligned and lies inside one mapping
            // that /proc/self/maps lists as not writable and backed by a file
            // (OLD, mapped read-only by `Store::open`), kept alive by
            // `_store`, which owns that map. MADV_DONTNEED on such a mapping only
            // drops page-table entries: later reads fault the same file
            // contents back in from the page cache, so no reference into the
            // range (decoded arrays, the store's key columns) sees a change.
            // A failure (EINVAL on another page size) leaves the pages as they were.
            let _ = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
        }
    }
}

/// The `[start, end)` of the mapping containing `addr`, if `/proc/self/maps`
/// lists it as readable, not writable and backed by a file.
fn read_only_file_mapping_containing(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (start, end) = parts.next()?.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        if !(start..end).contains(&addr) {
            return None;
        }
        let perms = parts.next()?;
        let inode = parts.nth(2)?;
        let path = parts.next()?;
        (perms.starts_with("r-") && inode != "0" && path.starts_with('/')).then_some((start, end))
    })
}

/// Column `column` of OLD's batch `b`, decoded alone.
fn decode(store: &Store, b: usize, column: usize, path: &str) -> anyhow::Result<ArrayRef> {
    store
        .file()
        .decode_column(b, column)
        .with_context(|| format!("--previous {path}"))
}

/// Rows `rows` of a frame column, as written (vectors built now, into one
/// array).
pub(crate) fn gather(column: &ColumnData, rows: &[u32]) -> anyhow::Result<ArrayRef> {
    match column {
        ColumnData::Array(array) => Ok(take(
            array.as_ref(),
            &UInt32Array::from(rows.to_vec()),
            None,
        )?),
        ColumnData::Vectors(cells) => Ok(cells.take(rows)?),
    }
}

/// Whether row `i` of OLD's `old` and row `j` of NEW's `new` (same type,
/// as written: vectors already narrowed) differ: float vectors by their
/// bytes (so by bits: `-0.0` differs from `0.0`, a NaN equals the same NaN);
/// other types by arrow's comparator (floats by total order, i.e. by bits;
/// nulls equal only to nulls). Nothing is copied. Rows in range.
type Differs<'a> = Box<dyn Fn(usize, usize) -> bool + 'a>;

fn row_differs<'a>(old: &'a ArrayRef, new: &'a ArrayRef) -> anyhow::Result<Differs<'a>> {
    if let (Some(o), Some(n)) = (old.as_fixed_size_list_opt(), new.as_fixed_size_list_opt()) {
        if let (Some((ob, width)), Some((nb, _))) = (float_bytes(o), float_bytes(n)) {
            let row = o.value_length() as usize * width;
            return Ok(Box::new(move |i, k| {
                if o.is_null(i) || n.is_null(k) {
                    return o.is_null(i) != n.is_null(k);
                }
                ob.get(i * row..(i + 1) * row) != nb.get(k * row..(k + 1) * row)
            }));
        }
    }
    match make_comparator(old.as_ref(), new.as_ref(), SortOptions::default()) {
        Ok(cmp) => Ok(Box::new(move |i, k| cmp(i, k).is_ne())),
        // A type arrow cannot order (e.g. Null): its logical equality, row by row.
        Err(_) => Ok(Box::new(move |i, k| {
            old.slice(i, 1).to_data() != new.slice(k, 1).to_data()
        })),
    }
}

/// The value bytes of a fixed-size list of floats, row-major from its first
/// row, and the width of one float.
fn float_bytes(list: &FixedSizeListArray) -> Option<(&[u8], usize)> {
    let values = list.values();
    let (bytes, width) = match values.data_type() {
        DataType::Float32 => (
            values
                .as_primitive::<arrow_array::types::Float32Type>()
                .values()
                .inner()
                .as_slice(),
            4,
        ),
        DataType::Float64 => (
            values
                .as_primitive::<arrow_array::types::Float64Type>()
                .values()
                .inner()
                .as_slice(),
            8,
        ),
        _ => return None,
    };
    let want = list.len() * list.value_length() as usize * width;
    bytes.get(..want).map(|b| (b, width))
}

/// OLD rows no longer exported may still repeat a value: sort their hashes
/// and compare the values of equal hashes.
fn check_removed_duplicates(
    store: &Store,
    match_index: usize,
    removed: &mut [(u64, u32)],
    match_on: &str,
    path: &str,
) -> anyhow::Result<()> {
    removed.sort_unstable();
    let mut k = 0;
    while k < removed.len() {
        let mut end = k + 1;
        while end < removed.len() && removed[end].0 == removed[k].0 {
            end += 1;
        }
        if end - k > 1 {
            for a in k..end {
                let (batch_a, i_a) = store.locate(removed[a].1 as usize);
                let col_a =
                    MatchColumn::new(decode(store, batch_a, match_index, path)?, match_on, path)?;
                let Some(value) = col_a.get(i_a) else {
                    continue;
                };
                for other in &removed[a + 1..end] {
                    let (batch_b, i_b) = store.locate(other.1 as usize);
                    let col_b = MatchColumn::new(
                        decode(store, batch_b, match_index, path)?,
                        match_on,
                        path,
                    )?;
                    if col_b.get(i_b) == Some(value) {
                        let rows = old_rows_with(store, match_index, value, path)?;
                        bail!(duplicate_message(path, match_on, value, rows.into_iter()));
                    }
                }
            }
        }
        k = end;
    }
    Ok(())
}

/// Every OLD row holding `value` (an error path: a full scan of the column).
fn old_rows_with(
    store: &Store,
    match_index: usize,
    value: MatchValue<'_>,
    path: &str,
) -> anyhow::Result<Vec<usize>> {
    let mut rows = Vec::new();
    for b in 0..store.num_batches() {
        let col = MatchColumn::new(decode(store, b, match_index, path)?, "", path)?;
        let start = store.batch_start(b);
        rows.extend(
            (0..col.len())
                .filter(|&i| col.get(i) == Some(value))
                .map(|i| start + i),
        );
    }
    Ok(rows)
}

fn null_error(path: &str, column: &str, row: usize) -> anyhow::Error {
    anyhow!("--match-on {column}: {path} has a null `{column}` at row {row}; every row needs a value to be matched")
}

fn duplicate_message(
    path: &str,
    column: &str,
    value: MatchValue<'_>,
    rows: impl Iterator<Item = usize>,
) -> String {
    const SHOWN: usize = 10;
    let rows: Vec<usize> = rows.collect();
    let mut list = rows
        .iter()
        .take(SHOWN)
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if rows.len() > SHOWN {
        list.push_str(&format!(" and {} more", rows.len() - SHOWN));
    }
    format!(
        "--match-on {column}: {path} has the value {value} {} times, at rows {list}; match values must be unique",
        rows.len()
    )
}

/// Fresh keys after OLD's last key (see the module docs).
struct FreshKeys {
    millis: u64,
    counter: u64,
}

impl FreshKeys {
    fn after(last: Option<&[u8]>) -> Self {
        let (millis, counter) = last
            .and_then(|k| <[u8; 16]>::try_from(k).ok())
            .map_or((0, 0), |k| key::split_v7(&k));
        FreshKeys { millis, counter }
    }

    fn next(&mut self, tail: u32) -> anyhow::Result<[u8; 16]> {
        self.counter += 1;
        if self.counter >= key::COUNTER_LIMIT {
            self.millis += 1;
            self.counter = 0;
        }
        if self.millis >= 1 << 48 {
            bail!("--previous: its last key is at the end of UUID v7 time; no key can follow it");
        }
        Ok(key::compose_v7(self.millis, self.counter, tail))
    }
}

/// A match value: text and binary as their bytes, integers widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchValue<'a> {
    Bytes(&'a [u8]),
    Int(i128),
}

impl MatchValue<'_> {
    /// Stable across runs and machines (the fresh keys' tails derive from it).
    fn hash(self) -> u64 {
        match self {
            MatchValue::Bytes(b) => XxHash3_64::oneshot(b),
            MatchValue::Int(i) => XxHash3_64::oneshot(&i.to_le_bytes()),
        }
    }
}

impl fmt::Display for MatchValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchValue::Int(i) => write!(f, "{i}"),
            MatchValue::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) if s.chars().count() <= 80 => write!(f, "{s:?}"),
                Ok(s) => write!(f, "{:?}…", s.chars().take(80).collect::<String>()),
                Err(_) => {
                    write!(f, "0x")?;
                    b.iter().take(40).try_for_each(|x| write!(f, "{x:02x}"))
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    Text,
    Binary,
    Integer,
}

impl MatchKind {
    fn describe(self) -> &'static str {
        match self {
            MatchKind::Text => "text",
            MatchKind::Binary => "binary values",
            MatchKind::Integer => "integers",
        }
    }
}

/// A match column, typed once.
enum Typed {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    Binary(BinaryArray),
    LargeBinary(LargeBinaryArray),
    Fixed(FixedSizeBinaryArray),
    Int(Int64Array),
    UInt(UInt64Array),
}

struct MatchColumn {
    typed: Typed,
    kind: MatchKind,
}

impl MatchColumn {
    fn new(array: ArrayRef, column: &str, path: &str) -> anyhow::Result<Self> {
        let array = match array.data_type() {
            DataType::Dictionary(_, value) => cast(&array, value)?,
            _ => array,
        };
        let refuse = || {
            anyhow!(
                "--match-on {column}: {path} holds {} in `{column}`; match on text, binary or integer ids",
                array.data_type()
            )
        };
        use DataType as T;
        let (typed, kind) = match array.data_type() {
            T::Utf8 => (
                Typed::Utf8(array.as_string::<i32>().clone()),
                MatchKind::Text,
            ),
            T::LargeUtf8 => (
                Typed::LargeUtf8(array.as_string::<i64>().clone()),
                MatchKind::Text,
            ),
            T::Utf8View => (
                Typed::Utf8View(array.as_string_view().clone()),
                MatchKind::Text,
            ),
            T::Binary => (
                Typed::Binary(array.as_binary::<i32>().clone()),
                MatchKind::Binary,
            ),
            T::LargeBinary => (
                Typed::LargeBinary(array.as_binary::<i64>().clone()),
                MatchKind::Binary,
            ),
            T::FixedSizeBinary(_) => (
                Typed::Fixed(array.as_fixed_size_binary().clone()),
                MatchKind::Binary,
            ),
            T::Int8 | T::Int16 | T::Int32 | T::Int64 => (
                Typed::Int(cast(&array, &T::Int64)?.as_primitive().clone()),
                MatchKind::Integer,
            ),
            T::UInt8 | T::UInt16 | T::UInt32 | T::UInt64 => (
                Typed::UInt(cast(&array, &T::UInt64)?.as_primitive().clone()),
                MatchKind::Integer,
            ),
            _ => return Err(refuse()),
        };
        Ok(MatchColumn { typed, kind })
    }

    fn len(&self) -> usize {
        match &self.typed {
            Typed::Utf8(a) => a.len(),
            Typed::LargeUtf8(a) => a.len(),
            Typed::Utf8View(a) => a.len(),
            Typed::Binary(a) => a.len(),
            Typed::LargeBinary(a) => a.len(),
            Typed::Fixed(a) => a.len(),
            Typed::Int(a) => a.len(),
            Typed::UInt(a) => a.len(),
        }
    }

    /// Row `i`'s value, `None` if null (or past the end).
    fn get(&self, i: usize) -> Option<MatchValue<'_>> {
        if i >= self.len() {
            return None;
        }
        let b = MatchValue::Bytes;
        match &self.typed {
            Typed::Utf8(a) => a.is_valid(i).then(|| b(a.value(i).as_bytes())),
            Typed::LargeUtf8(a) => a.is_valid(i).then(|| b(a.value(i).as_bytes())),
            Typed::Utf8View(a) => a.is_valid(i).then(|| b(a.value(i).as_bytes())),
            Typed::Binary(a) => a.is_valid(i).then(|| b(a.value(i))),
            Typed::LargeBinary(a) => a.is_valid(i).then(|| b(a.value(i))),
            Typed::Fixed(a) => a.is_valid(i).then(|| b(a.value(i))),
            Typed::Int(a) => a.is_valid(i).then(|| MatchValue::Int(a.value(i).into())),
            Typed::UInt(a) => a.is_valid(i).then(|| MatchValue::Int(a.value(i).into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_follow_the_last_key_across_counter_overflow() {
        let last = key::compose_v7(1_700_000_000_000, key::COUNTER_LIMIT - 2, 0xffff_ffff);
        let mut fresh = FreshKeys::after(Some(&last));
        let keys: Vec<[u8; 16]> = (0..4).map(|t| fresh.next(t).unwrap()).collect();
        let mut previous = last;
        for k in &keys {
            assert!(
                previous < *k,
                "{} !< {}",
                format_uuid(&previous),
                format_uuid(k)
            );
            let u = uuid::Uuid::from_bytes(*k);
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            previous = *k;
        }
        assert_eq!(
            key::split_v7(&keys[0]),
            (1_700_000_000_000, key::COUNTER_LIMIT - 1)
        );
        assert_eq!(key::split_v7(&keys[1]), (1_700_000_000_001, 0));
        assert_eq!(&keys[3][12..], &3u32.to_be_bytes());
        // The end of v7 time: refused, no panic.
        let end = key::compose_v7((1 << 48) - 1, key::COUNTER_LIMIT - 1, 0);
        let err = FreshKeys::after(Some(&end)).next(0).unwrap_err();
        assert!(err.to_string().contains("end of UUID v7 time"), "{err}");
    }

    /// What "changed" means, on rows as written: vectors by their bits (one
    /// ulp, `-0.0` for `0.0`; the same NaN is no change), nulls equal only to
    /// nulls; other columns by arrow's comparator.
    #[test]
    fn rows_differ_as_written() {
        use arrow_array::{types::Float32Type, StringArray};
        let list = |rows: Vec<Option<Vec<f32>>>| -> ArrayRef {
            std::sync::Arc::new(
                FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                    rows.into_iter().map(|r| r.map(|v| v.into_iter().map(Some))),
                    2,
                ),
            )
        };
        let nan = f32::from_bits(0x7fc0_0001);
        let old = list(vec![
            Some(vec![1.0, 0.0]),
            Some(vec![nan, 2.0]),
            None,
            Some(vec![3.0, 4.0]),
        ]);
        let new = list(vec![
            Some(vec![1.0, 0.0]),
            Some(vec![nan, 2.0]),
            None,
            Some(vec![3.0, f32::from_bits(4.0f32.to_bits() + 1)]),
            Some(vec![1.0, -0.0]),
            Some(vec![f32::from_bits(nan.to_bits() + 1), 2.0]),
        ]);
        let differs = row_differs(&old, &new).unwrap();
        assert!(!differs(0, 0) && !differs(1, 1) && !differs(2, 2));
        assert!(differs(3, 3), "one ulp");
        assert!(differs(0, 4), "-0.0 is not 0.0");
        assert!(differs(1, 5), "another NaN");
        assert!(differs(2, 0) && differs(0, 2), "null against a row");
        let old: ArrayRef = std::sync::Arc::new(StringArray::from(vec![Some("a"), None]));
        let new: ArrayRef =
            std::sync::Arc::new(StringArray::from(vec![Some("a"), None, Some("b")]));
        let differs = row_differs(&old, &new).unwrap();
        assert!(!differs(0, 0) && !differs(1, 1));
        assert!(differs(0, 2) && differs(1, 0));
    }

    #[test]
    fn only_read_only_file_mappings_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 3 * 4096]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a private temp file nobody else writes, read-only map.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let addr = map.as_ptr() as usize + 5000;
        let (start, end) = read_only_file_mapping_containing(addr).expect("found");
        assert!(start <= map.as_ptr() as usize && addr < end);
        let heap = vec![0u8; 1 << 20];
        assert_eq!(
            read_only_file_mapping_containing(heap.as_ptr() as usize + 4096),
            None
        );
    }

    #[test]
    fn match_values_display_and_compare() {
        let a: ArrayRef = std::sync::Arc::new(arrow_array::Int32Array::from(vec![Some(7), None]));
        let col = MatchColumn::new(a, "n", "x").unwrap();
        assert_eq!(col.get(0), Some(MatchValue::Int(7)));
        assert_eq!(col.get(1), None);
        assert_eq!(col.get(2), None);
        assert_eq!(MatchValue::Bytes(b"a\"b").to_string(), "\"a\\\"b\"");
        assert_eq!(MatchValue::Bytes(&[0xff, 0x01]).to_string(), "0xff01");
        let f: ArrayRef = std::sync::Arc::new(arrow_array::Float64Array::from(vec![1.0]));
        let err = MatchColumn::new(f, "score", "new.pkl").err().unwrap();
        assert_eq!(
            err.to_string(),
            "--match-on score: new.pkl holds Float64 in `score`; match on text, binary or integer ids"
        );
    }
}
