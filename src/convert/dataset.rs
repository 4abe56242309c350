//! `embedstream convert A.pkl B.pkl … -o DIR/`: several pickles → one data
//! set directory of ordered shards and its `manifest.json` (the contract is
//! [`crate::format::manifest`]).
//!
//! Each input goes through the single-file pipeline (pickle → frame →
//! [`Table`] → [`write::write_rows`]), one shard file per `--shard-rows`
//! rows. Inputs are converted on `--jobs` threads, each taking the next
//! input in order. Keys are one UUID v7 sequence over the concatenation:
//! input `i` draws its keys from the run's one generator skipped past the
//! rows of inputs `0..i` ([`KeyGenerator::skip`]), so a thread that has read
//! its pickle waits only until the earlier inputs' row counts are known
//! (they are read first), never for their writes. The output is therefore
//! the same bytes for any `--jobs` (with `--key-seed` and `--key-time`, the
//! same bytes on every run).
//!
//! Memory: a thread holds one input at a time (its frame, then the table
//! built from it, written shard by shard), so peak memory is about `--jobs`
//! times one input's single-file conversion.
//!
//! The directory is built in a hidden sibling and renamed into place
//! ([`AtomicDir`]): an error, SIGINT or SIGTERM leaves nothing, and a
//! temporary left by a SIGKILL is removed by the next convert into the same
//! parent. The per-block checksums are read back from each shard through the
//! store's [`MappedIpcFile`] (the reader `serve` and `inspect --verify` use).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use arrow_schema::{Schema, SchemaRef};

use super::{
    key::KeyGenerator,
    write::{self, Table},
    ConvertArgs, OutputFormat,
};
use crate::{
    format::{
        format_uuid,
        manifest::{
            block_checksum, schema_entries, sha256_hex, BatchEntry, Manifest, ShardEntry,
            MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
        },
    },
    fs::{human_bytes, AtomicDir},
    progress::{Progress, ProgressMode, Unit},
    store::MappedIpcFile,
};

/// Shard file name `i`: `shard-00000.arrow`, …
pub fn shard_file_name(i: usize) -> String {
    format!("shard-{i:05}.arrow")
}

/// What a data set conversion did.
#[derive(Debug, Clone)]
pub struct DatasetSummary {
    /// The data set directory.
    pub output: PathBuf,
    /// Inputs converted.
    pub inputs: usize,
    /// Rows over every shard.
    pub rows: u64,
    /// Columns, key included.
    pub columns: usize,
    /// Shard files.
    pub shards: usize,
    /// Bytes of the shard files.
    pub bytes: u64,
    /// Threads used.
    pub jobs: usize,
    /// Key column.
    pub key_column: String,
    /// First and last key, hyphenated.
    pub key_range: Option<(String, String)>,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Converted {} {} → {}: {} rows × {} columns in {} {} ({} {})",
            self.inputs,
            if self.inputs == 1 {
                "pickle"
            } else {
                "pickles"
            },
            self.output.display(),
            self.rows,
            self.columns,
            self.shards,
            if self.shards == 1 { "shard" } else { "shards" },
            self.jobs,
            if self.jobs == 1 { "job" } else { "jobs" },
        )?;
        write!(f, "; key `{}`", self.key_column)?;
        if let Some((first, last)) = &self.key_range {
            write!(f, " from {first} to {last}")?;
        }
        write!(
            f,
            ". Wrote {} in {:.2} s.",
            human_bytes(self.bytes),
            self.elapsed.as_secs_f64()
        )
    }
}

/// What one input became.
enum InputDone {
    /// Its shards, written.
    Shards {
        shards: Vec<ShardEntry>,
        schema: SchemaRef,
    },
    /// An input of 0 rows: its one shard is written last, when the data
    /// set's schema is known.
    Empty { shard: usize, schema: SchemaRef },
}

/// Why an input has no result.
enum Failure {
    /// Its own error (names the input).
    Own(anyhow::Error),
    /// Stopped because another input failed.
    Aborted,
}

/// What the threads tell each other: each input's row count once its
/// pickle is read, the first input's schema once its table is built.
#[derive(Default)]
struct Board {
    state: Mutex<BoardState>,
    changed: Condvar,
    failed: AtomicBool,
}

#[derive(Default)]
struct BoardState {
    rows: Vec<Option<u64>>,
    /// Per input, once known: `None` for an input of 0 rows (its columns
    /// have no values, hence no types: it takes the data set's schema),
    /// else its table's schema.
    schemas: Vec<Option<Option<SchemaRef>>>,
    failed: bool,
}

impl Board {
    fn new(inputs: usize) -> Self {
        Board {
            state: Mutex::new(BoardState {
                rows: vec![None; inputs],
                schemas: vec![None; inputs],
                failed: false,
            }),
            ..Board::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        // A poisoned lock means a thread panicked; its state is still
        // consistent (plain values), so carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.lock().failed = true;
        self.changed.notify_all();
    }

    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn set_rows(&self, i: usize, rows: u64) {
        let mut state = self.lock();
        state.rows[i] = Some(rows);
        if rows == 0 {
            state.schemas[i] = Some(None);
        }
        drop(state);
        self.changed.notify_all();
    }

    fn set_schema(&self, i: usize, schema: SchemaRef) {
        self.lock().schemas[i] = Some(Some(schema));
        self.changed.notify_all();
    }

    /// Wait until every input before `i` has its row count; the rows before
    /// input `i` and the row counts themselves. Inputs are taken in order,
    /// so each earlier one is being read by a running thread.
    fn rows_before(&self, i: usize) -> Result<Vec<u64>, Failure> {
        let mut state = self.lock();
        loop {
            if state.failed {
                return Err(Failure::Aborted);
            }
            if let Some(rows) = state.rows[..i]
                .iter()
                .copied()
                .collect::<Option<Vec<u64>>>()
            {
                return Ok(rows);
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wait until every input before `i` has its schema (or is known to be
    /// empty); the first of them with rows, and its index: the schema input
    /// `i` must have.
    fn reference_schema(&self, i: usize) -> Result<Option<(usize, SchemaRef)>, Failure> {
        let mut state = self.lock();
        loop {
            if state.failed {
                return Err(Failure::Aborted);
            }
            if state.schemas[..i].iter().all(Option::is_some) {
                return Ok(state.schemas[..i]
                    .iter()
                    .enumerate()
                    .find_map(|(j, s)| s.clone().flatten().map(|s| (j, s))));
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Shards an input of `rows` rows is split into.
fn shard_count(rows: u64, shard_rows: Option<u64>) -> u64 {
    match shard_rows {
        Some(n) if rows > 0 => rows.div_ceil(n.max(1)),
        _ => 1,
    }
}

/// Convert `args.inputs()` into the data set directory `args` names.
pub fn convert(args: &ConvertArgs) -> anyhow::Result<DatasetSummary> {
    let started = Instant::now();
    let inputs = args.inputs();
    let Some(output) = args.dataset_output() else {
        bail!("several inputs make a data set: name its directory with -o DIR/");
    };
    if args.shard_rows == Some(0) {
        bail!("--shard-rows 0: a shard holds at least 1 row");
    }
    if args.jobs == Some(0) {
        bail!("--jobs 0: give at least 1 (the default is the number of cores)");
    }
    if args.previous.is_some() {
        bail!(
            "--previous refreshes one file and cannot make a data set (several inputs or -o DIR/); refresh each input to its own file, or drop --previous"
        );
    }
    if args.format == OutputFormat::Parquet {
        bail!("--format parquet: a data set is made of Arrow IPC shards (what serve maps); drop --format parquet");
    }
    let mut lengths = Vec::with_capacity(inputs.len());
    for input in &inputs {
        lengths.push(super::input_size(input)?);
    }
    // Refuse an occupied destination before the (possibly long) reads.
    let dir = AtomicDir::create(&output, args.force)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, inputs.len());
    let base = args.key_generator();
    let board = Board::new(inputs.len());
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<InputDone, Failure>>>> =
        inputs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= inputs.len() {
                    break;
                }
                let outcome = if board.has_failed() {
                    Err(Failure::Aborted)
                } else {
                    convert_input(i, &inputs, lengths[i], args, &base, &board, dir.path())
                };
                if matches!(outcome, Err(Failure::Own(_))) {
                    board.fail();
                }
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
            });
        }
    });
    // The first input (in input order) that failed on its own; inputs
    // stopped because of it are not errors of theirs.
    let mut done = Vec::with_capacity(inputs.len());
    let mut aborted = false;
    for result in results {
        match result.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(input)) => done.push(input),
            Some(Err(Failure::Own(e))) => return Err(e),
            Some(Err(Failure::Aborted)) | None => aborted = true,
        }
    }
    if aborted {
        bail!("internal error: the conversion stopped without an error");
    }
    // The data set's schema: the first input with rows (or, if none has
    // any, the first input).
    let (reference_input, schema) = done
        .iter()
        .enumerate()
        .find_map(|(i, d)| match d {
            InputDone::Shards { schema, .. } => Some((i, schema.clone())),
            InputDone::Empty { .. } => None,
        })
        .or_else(|| match done.first() {
            Some(InputDone::Empty { schema, .. }) => Some((0, schema.clone())),
            _ => None,
        })
        .context("internal error: no input")?;
    let mut shards = Vec::new();
    for (i, input) in done.into_iter().enumerate() {
        match input {
            InputDone::Shards { shards: s, .. } => shards.extend(s),
            InputDone::Empty { shard, schema: own } => shards.push(write_empty_shard(
                &inputs[i],
                &own,
                (&inputs[reference_input], &schema),
                shard,
                dir.path(),
            )?),
        }
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        format_version: MANIFEST_VERSION,
        key_column: args.key_column.clone(),
        schema: schema_entries(&schema),
        rows: shards.iter().map(|s| s.rows).sum(),
        shards,
    };
    manifest.check().map_err(|e| {
        anyhow::anyhow!(
            "{}: the inputs do not make one ordered data set: {e} (inputs that carry their own `{}` column must be given in key order)",
            output.display(),
            args.key_column
        )
    })?;
    write_manifest(&dir.path().join(MANIFEST_FILE), &manifest)
        .with_context(|| format!("{}: writing the manifest failed", output.display()))?;
    let dest = dir.dest().to_path_buf();
    dir.commit()?;
    let keys: Vec<_> = manifest
        .shards
        .iter()
        .filter_map(|s| s.first_key.clone().zip(s.last_key.clone()))
        .collect();
    Ok(DatasetSummary {
        output: dest,
        inputs: inputs.len(),
        rows: manifest.rows,
        columns: schema.fields().len(),
        shards: manifest.shards.len(),
        bytes: manifest.shards.iter().map(|s| s.bytes).sum(),
        jobs,
        key_column: args.key_column.clone(),
        key_range: keys
            .first()
            .zip(keys.last())
            .map(|(a, b)| (a.0.clone(), b.1.clone())),
        elapsed: started.elapsed(),
    })
}

/// Input `i`: read it, key it after the earlier inputs, check its schema
/// against the first input's, write its shards into `dir`.
fn convert_input(
    i: usize,
    inputs: &[PathBuf],
    input_len: u64,
    args: &ConvertArgs,
    base: &KeyGenerator,
    board: &Board,
    dir: &Path,
) -> Result<InputDone, Failure> {
    let input = &inputs[i];
    let frame =
        super::read_frame(input, input_len, args, ProgressMode::Hidden).map_err(Failure::Own)?;
    let rows = frame.rows as u64;
    board.set_rows(i, rows);
    let before = board.rows_before(i)?;
    let offset: u64 = before.iter().sum();
    let first_shard: u64 = before
        .iter()
        .map(|&r| shard_count(r, args.shard_rows))
        .sum();
    let mut keys = base.clone();
    keys.skip(offset);
    // An input of 0 rows has no vector values to type its vector column:
    // only its column names count (it takes the data set's schema).
    let vector_column = args.vector_column.as_deref().filter(|_| rows > 0);
    let table = Table::from_frame_keyed(frame, &args.key_column, vector_column, input, &mut keys)
        .with_context(|| format!("{}: cannot convert", input.display()))
        .map_err(Failure::Own)?;
    if rows == 0 {
        // Written after every input with rows, under the data set's schema.
        return Ok(InputDone::Empty {
            shard: first_shard as usize,
            schema: table.schema().clone(),
        });
    }
    board.set_schema(i, table.schema().clone());
    if let Some((j, reference)) = board.reference_schema(i)? {
        if let Some(difference) = schema_difference(&reference, table.schema(), &inputs[j], input) {
            return Err(Failure::Own(different_schemas(
                &inputs[j],
                input,
                &difference,
            )));
        }
    }
    let per_shard = args.shard_rows.unwrap_or(rows.max(1));
    let count = shard_count(rows, args.shard_rows);
    let mut shards = Vec::with_capacity(count as usize);
    for k in 0..count {
        if board.has_failed() {
            return Err(Failure::Aborted);
        }
        let start = (k * per_shard).min(rows) as usize;
        let end = ((k + 1) * per_shard).min(rows) as usize;
        let file = shard_file_name((first_shard + k) as usize);
        let path = dir.join(&file);
        let progress = Progress::new("writing", None, Unit::Rows, ProgressMode::Hidden);
        write::write_rows(
            &table,
            start..end,
            table.schema_for_rows(end - start),
            &path,
            args,
            &progress,
        )
        .with_context(|| format!("{}: cannot write {file}", input.display()))
        .map_err(Failure::Own)?;
        let key_range = (end > start)
            .then(|| table.key_at(start).zip(table.key_at(end - 1)))
            .flatten();
        let entry = shard_entry(&path, file, (end - start) as u64, key_range)
            .with_context(|| format!("{}: cannot read back the shard it wrote", input.display()))
            .map_err(Failure::Own)?;
        shards.push(entry);
    }
    tracing::info!(
        "{}: {rows} rows → {} (shards {} to {})",
        input.display(),
        if count == 1 {
            "1 shard".to_string()
        } else {
            format!("{count} shards")
        },
        first_shard,
        first_shard + count - 1
    );
    Ok(InputDone::Shards {
        shards,
        schema: table.schema().clone(),
    })
}

fn different_schemas(a: &Path, b: &Path, difference: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} and {} have different schemas: {difference}; every input of a data set must have the same columns",
        a.display(),
        b.display()
    )
}

/// The shard of an input of 0 rows: no record batch, the data set's schema
/// (`reference`) with this input's row count and source in the metadata.
/// Its column names must be the data set's; their types are moot.
fn write_empty_shard(
    input: &Path,
    own: &Schema,
    reference: (&Path, &SchemaRef),
    shard: usize,
    dir: &Path,
) -> anyhow::Result<ShardEntry> {
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    let (own_names, names_wanted) = (names(own), names(reference.1));
    if own_names != names_wanted {
        let difference = schema_difference(reference.1, own, reference.0, input)
            .unwrap_or_else(|| "the columns differ".into());
        return Err(different_schemas(reference.0, input, &difference));
    }
    let mut metadata = reference.1.metadata().clone();
    let mut meta = crate::format::FileMetadata::read(&metadata);
    meta.rows = Some(0);
    meta.source = input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    metadata.extend(meta.to_map());
    let schema =
        std::sync::Arc::new(Schema::new(reference.1.fields().clone()).with_metadata(metadata));
    let file = shard_file_name(shard);
    let path = dir.join(&file);
    write::write_empty(schema, &path)
        .with_context(|| format!("{}: cannot write {file}", input.display()))?;
    shard_entry(&path, file, 0, None)
        .with_context(|| format!("{}: cannot read back the shard it wrote", input.display()))
}

/// The first difference between two inputs' fields, naming the column.
fn schema_difference(a: &Schema, b: &Schema, a_name: &Path, b_name: &Path) -> Option<String> {
    let (a_name, b_name) = (a_name.display(), b_name.display());
    let count = a.fields().len().max(b.fields().len());
    for i in 0..count {
        match (a.fields().get(i), b.fields().get(i)) {
            (Some(fa), Some(fb)) if fa.name() != fb.name() => {
                return Some(format!(
                    "column {i} is `{}` in {a_name} and `{}` in {b_name}",
                    fa.name(),
                    fb.name()
                ))
            }
            (Some(fa), Some(fb)) if fa.data_type() != fb.data_type() => {
                return Some(format!(
                    "column `{}` is {} in {a_name} and {} in {b_name}",
                    fa.name(),
                    fa.data_type(),
                    fb.data_type()
                ))
            }
            (Some(fa), Some(fb)) if fa.is_nullable() != fb.is_nullable() => {
                return Some(format!(
                    "column `{}` is {} in {a_name} and {} in {b_name}",
                    fa.name(),
                    if fa.is_nullable() {
                        "nullable"
                    } else {
                        "not nullable"
                    },
                    if fb.is_nullable() {
                        "nullable"
                    } else {
                        "not nullable"
                    },
                ))
            }
            (Some(fa), None) => return Some(format!("column `{}` is in {a_name} only", fa.name())),
            (None, Some(fb)) => return Some(format!("column `{}` is in {b_name} only", fb.name())),
            _ => {}
        }
    }
    None
}

/// A shard's manifest entry: its size, whole-file SHA-256 and one XXH3-128
/// per IPC block, read back from the file just written.
fn shard_entry(
    path: &Path,
    file: String,
    rows: u64,
    keys: Option<(&[u8], &[u8])>,
) -> anyhow::Result<ShardEntry> {
    let mapped = MappedIpcFile::open(path)?;
    let extent_error = |what: String, e: String| anyhow::anyhow!("{what}: {e}");
    let dictionaries = (0..mapped.num_dictionaries())
        .map(|i| match mapped.dictionary_extent(i) {
            Some(Ok(bytes)) => Ok(block_checksum(&bytes)),
            Some(Err(e)) => Err(extent_error(format!("dictionary {i}"), e)),
            None => Err(extent_error(format!("dictionary {i}"), "missing".into())),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batches = (0..mapped.num_batches())
        .map(|i| match mapped.record_batch_extent(i) {
            Some(Ok(bytes)) => Ok(BatchEntry {
                rows: mapped.batch_num_rows(i).unwrap_or(0) as u64,
                xxh3: block_checksum(&bytes),
            }),
            Some(Err(e)) => Err(extent_error(format!("batch {i}"), e)),
            None => Err(extent_error(format!("batch {i}"), "missing".into())),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bytes = mapped.len() as u64;
    let sha256 = sha256_hex(mapped.bytes());
    Ok(ShardEntry {
        file,
        rows,
        first_key: keys.map(|(first, _)| format_uuid(first)),
        last_key: keys.map(|(_, last)| format_uuid(last)),
        bytes,
        sha256,
        dictionaries,
        batches,
    })
}

/// `manifest.json`, written and synced (it is inside the temporary
/// directory: the rename makes it visible).
fn write_manifest(path: &Path, manifest: &Manifest) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(manifest.to_json().as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_per_input() {
        assert_eq!(shard_count(0, Some(10)), 1);
        assert_eq!(shard_count(0, None), 1);
        assert_eq!(shard_count(10, Some(10)), 1);
        assert_eq!(shard_count(11, Some(10)), 2);
        assert_eq!(shard_count(11, None), 1);
        assert_eq!(shard_file_name(3), "shard-00003.arrow");
    }
}
