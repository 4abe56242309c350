//! `embedstream convert`: pickle → columns ([`crate::frame`]) → key column
//! ([`key`]) → Arrow IPC or Parquet file ([`write`]), written atomically
//! ([`crate::fs::AtomicFile`]). With `--previous OLD.arrow`, [`refresh`] joins the pickle
//! with OLD first, so rows still exported keep OLD's keys.
//!
//! Memory: the frame's columns are the only copy of the data; batches written
//! to the file are slices of them, except vector columns, which stay views of
//! the memory-mapped pickle until each batch of them is built and written.

pub mod dataset;
pub mod key;
pub mod late_schema;
pub mod refresh;
pub mod write;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use arrow_schema::DataType;

use crate::{
    format::{self, format_uuid},
    frame::{self, FrameOptions},
    fs::human_bytes,
    progress::{Progress, ProgressMode, Unit},
};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Arrow IPC file (what `serve` maps; also read by pyarrow, polars, duckdb, pandas.read_feather).
    Ipc,
    /// Parquet, for analytics tools (`serve` does not map Parquet).
    Parquet,
}

/// Flags of `embedstream convert`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// The pickle to convert: a pandas DataFrame (to_pickle or pickle.dump, protocols 0-5,
    /// pandas 1.5-3.x), or a plain dict of lists / list of dicts. It is read safely: no code in
    /// it ever runs, and anything but known pandas/numpy/pyarrow objects is refused.
    pub input: PathBuf,

    /// More pickles: with them (or with `-o DIR/`), the output is a data set directory of
    /// ordered shards and a manifest.json, keyed as one sequence in the order given.
    #[arg(value_name = "MORE")]
    pub more_inputs: Vec<PathBuf>,

    /// Output file. Default: INPUT with the extension `.arrow` (`.parquet` with --format parquet).
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    /// Replace OUTPUT if it already exists (it is replaced atomically, never left half-written).
    #[arg(long)]
    pub force: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Ipc)]
    pub format: OutputFormat,

    /// Rows per record batch. Default: about 3 MiB of data per batch, which keeps Flight
    /// messages under common 4 MB gRPC limits.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_rows: Option<u32>,

    /// Name of the UUID v7 key column. If the input already has a column of this name holding
    /// strictly increasing v7 UUIDs it becomes the key (converting twice never re-keys);
    /// any other column of that name is an error.
    #[arg(long, default_value = format::DEFAULT_KEY_COLUMN)]
    pub key_column: String,

    /// The vector column recorded in the file's metadata. Default: the first column of
    /// equal-length numeric arrays.
    #[arg(long)]
    pub vector_column: Option<String>,

    /// Keep float64 vectors as float64. By default they are narrowed to float32, the wire
    /// format's `float`.
    #[arg(long)]
    pub keep_float64: bool,

    /// No progress bar or progress log lines.
    #[arg(long)]
    pub no_progress: bool,

    /// Refresh: an earlier conversion of this data. Rows whose --match-on value is in OLD keep
    /// OLD's key; new rows get fresh keys after every key in OLD; rows no longer exported are
    /// dropped. OUTPUT may be OLD itself (with --force): it is replaced atomically.
    #[arg(long, value_name = "OLD.arrow", requires = "match_on")]
    pub previous: Option<PathBuf>,

    /// Refresh: the column that identifies a row in both exports (for the reference data, `id`).
    #[arg(long, value_name = "COLUMN", requires = "previous")]
    pub match_on: Option<String>,

    /// Refresh: what a kept row whose other columns changed gets: `keep` its key, or `renew`
    /// it (a fresh key after OLD's, so consumers pulling only new rows see it again).
    #[arg(long, value_enum, default_value_t = refresh::OnChange::Keep, requires = "previous")]
    pub on_change: refresh::OnChange,

    /// Memory the pickle reader may use for the values it rebuilds, as N times the pickle's
    /// size, plus 32 MiB. DataFrames of embeddings need 0.2-3x, dense pickles of small Python
    /// objects up to about 11x; a pickle made to exhaust memory (millions of empty
    /// containers) is refused when it reaches the budget.
    #[arg(long, value_name = "N", default_value_t = crate::pickle::DEFAULT_ARENA_FACTOR,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_memory_factor: u32,

    /// Data set: rows per shard; each input is split into ceil(rows / N) shards (default:
    /// one shard per input).
    #[arg(long, value_name = "N")]
    pub shard_rows: Option<u64>,

    /// Data set: inputs converted at once (default: the available cores). Peak memory is
    /// about N times one input's conversion; the output is the same for any N.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Reproducible keys: the seed of the keys' random bits (default: drawn from the OS).
    /// With --key-time too, converting the same inputs again writes the same bytes.
    #[arg(long, value_name = "SEED")]
    pub key_seed: Option<u64>,

    /// Reproducible keys: the time in the first key, RFC 3339 (`2026-11-30T12:00:00Z`;
    /// default: now).
    #[arg(long, value_name = "TIME")]
    pub key_time: Option<humantime::Timestamp>,
}

impl ConvertArgs {
    /// Default options for converting `input` to `output`.
    pub fn new(input: impl Into<PathBuf>, output: Option<PathBuf>) -> Self {
        ConvertArgs {
            input: input.into(),
            output,
            force: false,
            format: OutputFormat::Ipc,
            batch_rows: None,
            key_column: format::DEFAULT_KEY_COLUMN.to_string(),
            vector_column: None,
            keep_float64: false,
            no_progress: true,
            previous: None,
            match_on: None,
            on_change: refresh::OnChange::Keep,
            max_memory_factor: crate::pickle::DEFAULT_ARENA_FACTOR,
            more_inputs: Vec::new(),
            shard_rows: None,
            jobs: None,
            key_seed: None,
            key_time: None,
        }
    }

    /// Every input, in the order given.
    pub fn inputs(&self) -> Vec<PathBuf> {
        std::iter::once(self.input.clone())
            .chain(self.more_inputs.iter().cloned())
            .collect()
    }

    /// The data set directory to write, when the output is one: several
    /// inputs, an `-o` ending with `/`, or an `-o` that is a directory.
    pub fn dataset_output(&self) -> Option<PathBuf> {
        let output = self.output.as_ref()?;
        let slash = output.as_os_str().to_string_lossy().ends_with('/');
        (!self.more_inputs.is_empty() || slash || output.is_dir()).then(|| output.clone())
    }

    /// The key generator `--key-seed` and `--key-time` ask for.
    pub fn key_generator(&self) -> key::KeyGenerator {
        if self.key_seed.is_none() && self.key_time.is_none() {
            return key::KeyGenerator::new();
        }
        let millis = self
            .key_time
            .map(std::time::SystemTime::from)
            .unwrap_or_else(std::time::SystemTime::now)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let seed = self
            .key_seed
            .unwrap_or_else(|| uuid::Uuid::now_v7().as_u64_pair().1);
        key::KeyGenerator::with_seed(millis, seed)
    }

    /// Progress shown unless `--no-progress`.
    pub fn progress_mode(&self) -> ProgressMode {
        if self.no_progress {
            ProgressMode::Hidden
        } else {
            ProgressMode::Auto
        }
    }

    /// The output path: `-o` or INPUT with the format's extension.
    pub fn output_path(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            self.input.with_extension(match self.format {
                OutputFormat::Ipc => "arrow",
                OutputFormat::Parquet => "parquet",
            })
        })
    }
}

/// What a conversion did, for the closing summary.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    /// The pickle.
    pub input: PathBuf,
    /// The file written.
    pub output: PathBuf,
    /// Rows written.
    pub rows: usize,
    /// Columns written, key included.
    pub columns: usize,
    /// Vector column name, dimension and element type.
    pub vector: Option<(String, usize, DataType)>,
    /// Key column name.
    pub key_column: String,
    /// Whether an existing key column was kept instead of adding one.
    pub key_adopted: bool,
    /// First and last key, hyphenated.
    pub key_range: Option<(String, String)>,
    /// Record batches written.
    pub batches: usize,
    /// Output size in bytes.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// What a refresh (`--previous`) did.
    pub refresh: Option<refresh::RefreshSummary>,
}

impl fmt::Display for ConvertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Converted {} → {}: {} rows × {} columns in {} {}",
            self.input.display(),
            self.output.display(),
            self.rows,
            self.columns,
            self.batches,
            if self.batches == 1 {
                "batch"
            } else {
                "batches"
            }
        )?;
        match &self.vector {
            Some((name, dim, ty)) => write!(f, "; vectors `{name}`: {dim} × {ty}")?,
            None => write!(f, "; no vector column")?,
        }
        let how = if self.refresh.is_some() {
            "kept from --previous, fresh after it"
        } else if self.key_adopted {
            "kept from the input"
        } else {
            "added"
        };
        write!(f, "; key `{}` ({how})", self.key_column)?;
        if let Some((first, last)) = &self.key_range {
            write!(f, " from {first} to {last}")?;
        }
        write!(
            f,
            ". Wrote {} in {:.2} s.",
            human_bytes(self.bytes),
            self.elapsed.as_secs_f64()
        )?;
        if let Some(refresh) = &self.refresh {
            write!(f, " {refresh}")?;
        }
        Ok(())
    }
}

/// Run `embedstream convert` and print its summary.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    if args.dataset_output().is_some() || !args.more_inputs.is_empty() {
        let summary = dataset::convert(&args)?;
        crate::stdout::print(&format!(
            "{summary}\nServe it with: embedstream serve --data {}\n",
            summary.output.display()
        ))?;
        return Ok(());
    }
    let summary = convert(&args)?;
    let mut text = format!("{summary}\n");
    if args.format == OutputFormat::Ipc {
        text += &format!(
            "Serve it with: embedstream serve --data {}\n",
            summary.output.display()
        );
    }
    crate::stdout::print(&text)?;
    Ok(())
}

/// The size of the pickle at `input`; a clear refusal if it is missing or
/// not a file.
pub(crate) fn input_size(input: &Path) -> anyhow::Result<u64> {
    let meta = std::fs::metadata(input).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{}: no such file; give the path of a pandas pickle",
                input.display()
            )
        } else {
            anyhow::anyhow!("{}: {e}", input.display())
        }
    })?;
    if !meta.is_file() {
        bail!(
            "{}: not a file; give the path of a pandas pickle",
            input.display()
        );
    }
    Ok(meta.len())
}

/// Convert `args.input` as the flags say; the library entry point.
pub fn convert(args: &ConvertArgs) -> anyhow::Result<ConvertSummary> {
    if args.dataset_output().is_some() {
        bail!(
            "{}: a data set directory; `embedstream convert A.pkl B.pkl -o DIR/` writes one",
            args.output_path().display()
        );
    }
    if args.shard_rows.is_some() {
        bail!("--shard-rows splits a data set: give its directory with -o DIR/");
    }
    let started = Instant::now();
    let input = &args.input;
    let output = args.output_path();
    let input_len = input_size(input)?;
    if same_file(input, &output) {
        bail!(
            "{}: the output would overwrite the input; choose another path with -o",
            output.display()
        );
    }
    // Refuse before the (possibly long) read rather than after it.
    if !args.force && output.exists() {
        bail!(
            "{}: already exists; pass --force to replace it",
            output.display()
        );
    }
    let previous = match (&args.previous, &args.match_on) {
        (None, _) => None,
        (Some(_), _) if args.format == OutputFormat::Parquet => bail!(
            "--previous: a refresh writes Arrow IPC only (the file `serve` maps); drop --format parquet"
        ),
        (Some(_), None) => bail!("--previous needs --match-on COLUMN"),
        (Some(old), Some(match_on)) => Some(refresh::Previous::open(
            old,
            &args.key_column,
            match_on,
        )?),
    };

    let frame = read_frame(input, input_len, args, args.progress_mode())?;
    tracing::debug!(
        rows = frame.rows,
        columns = frame.columns.len(),
        "pickle read"
    );

    let (table, pending) = match (&previous, &args.match_on) {
        (Some(previous), Some(match_on)) => {
            let mut plan = refresh::plan(
                &frame,
                previous,
                match_on,
                &args.key_column,
                args.on_change,
                input,
            )?;
            let pending = plan.take_pending();
            let table = write::Table::refreshed(
                frame,
                &args.key_column,
                args.vector_column.as_deref(),
                input,
                plan,
            )?;
            (table, pending.map(|p| (p, previous)))
        }
        _ => (
            write::Table::from_frame_keyed(
                frame,
                &args.key_column,
                args.vector_column.as_deref(),
                input,
                &mut args.key_generator(),
            )?,
            None,
        ),
    };
    let writing = Progress::new(
        "writing",
        Some(table.rows() as u64),
        Unit::Rows,
        args.progress_mode(),
    );
    let key_range =
        |range: Option<(&[u8], &[u8])>| range.map(|(a, b)| (format_uuid(a), format_uuid(b)));
    let (written, refresh, key_range) = match pending {
        Some((pending, previous)) => {
            // Kept rows are compared with OLD's as they are written.
            let step = table.batch_rows(args.batch_rows).max(1);
            let mut batches = pending.batches(&table, previous, step);
            let schema = table.schema().clone();
            let written =
                write::write_batches(&mut batches, schema, step, &output, args, &writing)?;
            let range = batches.key_range();
            (
                written,
                Some(batches.summary()),
                key_range(range.as_ref().map(|(a, b)| (&a[..], &b[..]))),
            )
        }
        None => (
            write::write(&table, &output, args, &writing)?,
            None,
            key_range(table.key_range()),
        ),
    };
    drop(previous);
    writing.finish();

    Ok(ConvertSummary {
        input: input.clone(),
        output,
        rows: table.rows(),
        columns: table.schema().fields().len(),
        vector: table
            .vector()
            .map(|(i, dim, ty)| (table.schema().field(i).name().clone(), dim, ty)),
        key_column: args.key_column.clone(),
        key_adopted: table.key_adopted(),
        key_range,
        batches: written.batches,
        bytes: written.bytes,
        elapsed: started.elapsed(),
        refresh,
    })
}

/// Pickle → columns, within the memory budget of `--max-memory-factor`;
/// errors name the input.
pub(crate) fn read_frame(
    input: &Path,
    input_len: u64,
    args: &ConvertArgs,
    mode: ProgressMode,
) -> anyhow::Result<frame::Frame> {
    let reading = Arc::new(Progress::new("reading", Some(input_len), Unit::Bytes, mode));
    let progress_sink = reading.clone();
    let budget = crate::pickle::arena_budget(
        usize::try_from(input_len).unwrap_or(usize::MAX),
        args.max_memory_factor,
    );
    let options = FrameOptions {
        keep_float64: args.keep_float64,
        max_arena_bytes: Some(budget),
        progress: Some(Arc::new(move |bytes| progress_sink.set(bytes))),
    };
    let frame = frame::read_pickle(input, &options)
        .map_err(|e| {
            if e.is_over_memory_budget() {
                anyhow::anyhow!(
                    "{e}; if the file is genuine, allow more with --max-memory-factor \
                     (now {})",
                    args.max_memory_factor
                )
            } else {
                e.into()
            }
        })
        .with_context(|| format!("{}: cannot convert", input.display()))?;
    reading.finish();
    Ok(frame)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether `path` looks like a pickle: a pickle extension, or protocol 2+'s
/// PROTO opcode as its first byte.
pub fn is_pickle(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("pkl" | "pickle" | "pk" | "pck") => true,
        Some("arrow" | "feather" | "ipc" | "arrows" | "parquet") => false,
        _ => {
            use std::io::Read;
            let mut first = [0u8; 1];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut first))
                .is_ok()
                && first[0] == 0x80
        }
    }
}
