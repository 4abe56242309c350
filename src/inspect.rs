//! `embedstream inspect`: what a converted file holds, without serving it.
use std::{fmt::Write as _, path::PathBuf};

use arrow_array::{Array, FixedSizeBinaryArray};

use crate::{
    format::{self, format_uuid, FileLayout},
    store::{MappedIpcFile, StoreError},
};

/// Flags of `embedstream inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A converted Arrow IPC file.
    pub file: PathBuf,

    /// The key column, if not the one named in the file's metadata (default `uuid`).
    #[arg(long)]
    pub key_column: Option<String>,
}

/// Run `embedstream inspect` and print the report.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    crate::stdout::print(&report(&args)?)?;
    Ok(())
}

/// The report `inspect` prints. Unlike `serve`, it checks the key order of
/// every row and reports a problem instead of refusing the file.
pub fn report(args: &InspectArgs) -> anyhow::Result<String> {
    let file = MappedIpcFile::open(&args.file).map_err(|e| match e {
        StoreError::NotArrow { path, reason } if args.file.extension().is_some_and(|x| x == "parquet") => {
            anyhow::anyhow!("{path}: a Parquet file ({reason}); inspect reads Arrow IPC files, use pyarrow or duckdb for Parquet")
        }
        other => other.into(),
    })?;
    let schema = file.schema();
    // Decode every batch (serve decodes them on first use only): a damaged
    // batch is reported here, by number.
    let batches = (0..file.num_batches())
        .map(|i| file.batch(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}; the file is damaged", args.file.display()))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "file:     {} ({})",
        args.file.display(),
        crate::fs::human_bytes(file.len() as u64)
    );
    let (smallest, largest) = batches
        .iter()
        .map(|b| b.num_rows())
        .fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
    let _ = writeln!(
        out,
        "rows:     {rows} in {} record batches ({} to {} rows each)",
        batches.len(),
        if batches.is_empty() { 0 } else { smallest },
        largest
    );
    let _ = writeln!(out, "columns:");
    for field in schema.fields() {
        let extension = field
            .metadata()
            .get(format::EXTENSION_NAME_KEY)
            .map(|name| format!(" [{name}]"))
            .unwrap_or_default();
        let nullable = if field.is_nullable() { "" } else { " not null" };
        let _ = writeln!(
            out,
            "  {:<24} {}{extension}{nullable}",
            field.name(),
            field.data_type()
        );
    }

    match FileLayout::from_schema(schema, args.key_column.as_deref()) {
        Ok(layout) => {
            let name = schema.field(layout.key_index).name();
            let keys: Vec<&FixedSizeBinaryArray> = batches
                .iter()
                .filter_map(|b| {
                    b.column(layout.key_index)
                        .as_any()
                        .downcast_ref::<FixedSizeBinaryArray>()
                })
                .collect();
            let all = || {
                keys.iter()
                    .flat_map(|k| (0..k.len()).map(move |i| (!k.is_null(i)).then(|| k.value(i))))
            };
            let first = all().next().flatten();
            let last = keys
                .iter()
                .rev()
                .find(|k| !k.is_empty())
                .and_then(|k| (!k.is_null(k.len() - 1)).then(|| k.value(k.len() - 1)));
            let _ = writeln!(out, "key:      `{name}`");
            if let (Some(first), Some(last)) = (first, last) {
                let _ = writeln!(out, "  first   {}{}", format_uuid(first), v7_time(first));
                let _ = writeln!(out, "  last    {}{}", format_uuid(last), v7_time(last));
            }
            let mut problem = None;
            let mut previous: Option<&[u8]> = None;
            for (row, key) in all().enumerate() {
                let Some(key) = key else {
                    problem = Some(format!("null key at row {row}"));
                    break;
                };
                if let Some(Err(e)) = previous.map(|p| format::check_key_order(row, p, key)) {
                    problem = Some(e.to_string());
                    break;
                }
                previous = Some(key);
            }
            let _ = writeln!(
                out,
                "  order   {}",
                problem
                    .as_deref()
                    .unwrap_or("strictly increasing (checked every row)")
            );
            match layout.vector_index {
                Some(i) => {
                    let _ = writeln!(
                        out,
                        "vectors:  `{}`, dimension {}",
                        schema.field(i).name(),
                        layout.vector_dim
                    );
                }
                None => {
                    let _ = writeln!(out, "vectors:  none");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "key:      {e}");
        }
    }
    let mut metadata: Vec<_> = schema.metadata().iter().collect();
    metadata.sort();
    if !metadata.is_empty() {
        let _ = writeln!(out, "metadata:");
        for (k, v) in metadata {
            let _ = writeln!(out, "  {k} = {v}");
        }
    }
    Ok(out)
}

/// " (v7, 2026-11-26T21:00:00.000Z)" for a version 7 key, "" otherwise.
fn v7_time(key: &[u8]) -> String {
    let timestamp = uuid::Uuid::from_slice(key)
        .ok()
        .filter(|_| format::is_v7(key))
        .and_then(|id| id.get_timestamp());
    let Some((secs, nanos)) = timestamp.map(|t| t.to_unix()) else {
        return String::new();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    format!(" (v7, {})", humantime::format_rfc3339_millis(time))
}
