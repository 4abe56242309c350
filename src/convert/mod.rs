//! `embedstream convert`: pickle → columns ([`crate::frame`]) → key column
//! ([`key`]) → Arrow IPC or Parquet file ([`write`]), written atomically
//! ([`atomic`]).
//!
//! Memory: the frame's columns are the only copy of the data; batches written
//! to the file are slices of them, except vector columns, which stay views of
//! the memory-mapped pickle until each batch of them is built and written.

pub mod atomic;
pub mod key;
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

    /// Memory the pickle reader may use for the values it rebuilds, as N times the pickle's
    /// size, plus 32 MiB. DataFrames of embeddings need 0.2-3x, dense pickles of small Python
    /// objects up to about 11x; a pickle made to exhaust memory (millions of empty
    /// containers) is refused when it reaches the budget.
    #[arg(long, value_name = "N", default_value_t = crate::pickle::DEFAULT_ARENA_FACTOR,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_memory_factor: u32,
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
            max_memory_factor: crate::pickle::DEFAULT_ARENA_FACTOR,
        }
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
        let how = if self.key_adopted {
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
        )
    }
}

/// "812 B", "3.4 kB", "232.1 MB", "4.49 GB" (decimal units, as `ls --si`).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// Run `embedstream convert` and print its summary.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let summary = convert(&args)?;
    println!("{summary}");
    if args.format == OutputFormat::Ipc {
        println!(
            "Serve it with: embedstream serve --data {}",
            summary.output.display()
        );
    }
    Ok(())
}

/// Convert `args.input` as the flags say; the library entry point.
pub fn convert(args: &ConvertArgs) -> anyhow::Result<ConvertSummary> {
    let started = Instant::now();
    let input = &args.input;
    let output = args.output_path();
    let input_meta = std::fs::metadata(input).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{}: no such file; give the path of a pandas pickle",
                input.display()
            )
        } else {
            anyhow::anyhow!("{}: {e}", input.display())
        }
    })?;
    if !input_meta.is_file() {
        bail!(
            "{}: not a file; give the path of a pandas pickle",
            input.display()
        );
    }
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

    let reading = Arc::new(Progress::new(
        "reading",
        Some(input_meta.len()),
        Unit::Bytes,
        args.progress_mode(),
    ));
    let progress_sink = reading.clone();
    let budget = crate::pickle::arena_budget(
        usize::try_from(input_meta.len()).unwrap_or(usize::MAX),
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
    tracing::debug!(
        rows = frame.rows,
        columns = frame.columns.len(),
        "pickle read"
    );

    let table = write::Table::from_frame(
        frame,
        &args.key_column,
        args.vector_column.as_deref(),
        input,
    )?;
    let writing = Progress::new(
        "writing",
        Some(table.rows() as u64),
        Unit::Rows,
        args.progress_mode(),
    );
    let written = write::write(&table, &output, args, &writing)?;
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
        key_range: table
            .key_range()
            .map(|(a, b)| (format_uuid(a), format_uuid(b))),
        batches: written.batches,
        bytes: written.bytes,
        elapsed: started.elapsed(),
    })
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

/// The Arrow file to serve for `data`: `data` itself when it is not a pickle;
/// for a pickle, its converted sibling `.arrow`, converting it first when the
/// sibling is missing, older than the pickle, or converted from another file.
/// An up-to-date sibling is reused, so keys stay stable across restarts (the
/// Batch Server's checkpoints stay valid).
pub fn ensure_arrow(data: &Path) -> anyhow::Result<PathBuf> {
    if !is_pickle(data) {
        return Ok(data.to_path_buf());
    }
    let mut args = ConvertArgs::new(data, None);
    let target = args.output_path();
    if converted_is_current(data, &target) {
        tracing::info!(
            "serving {} (converted from {})",
            target.display(),
            data.display()
        );
        return Ok(target);
    }
    tracing::info!(
        "converting {} to {} once, before serving",
        data.display(),
        target.display()
    );
    args.force = true;
    let summary = convert(&args)?;
    tracing::info!("{summary}");
    Ok(target)
}

/// Whether `target` exists, is not older than `source`, and was converted from a file of that name.
fn converted_is_current(source: &Path, target: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(src), Some(dst)) = (modified(source), modified(target)) else {
        return false;
    };
    if dst < src {
        return false;
    }
    let expected = source.file_name().map(|n| n.to_string_lossy().into_owned());
    // Only the footer's schema is needed: `FileReader::try_new` reads it
    // without decoding (and validating) the record batches, which `serve`
    // does once afterwards.
    std::fs::File::open(target)
        .ok()
        .and_then(|file| arrow_ipc::reader::FileReader::try_new(file, None).ok())
        .is_some_and(|reader| {
            reader.schema().metadata().get(format::META_SOURCE).cloned() == expected
        })
}
