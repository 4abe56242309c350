//! `embedstream inspect`: what a converted file or a data set directory
//! holds, without serving it; `--verify` checks a data set against every
//! checksum of its manifest.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use arrow_array::{Array, FixedSizeBinaryArray};

use crate::{
    format::{
        self, format_uuid,
        manifest::{block_checksum, schema_entries, sha256_hex, Manifest, ShardEntry},
        FileLayout,
    },
    store::{MappedIpcFile, StoreError},
};

/// Flags of `embedstream inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A converted Arrow IPC file, or a data set directory (holding manifest.json).
    pub file: PathBuf,

    /// The key column, if not the one named in the file's metadata (default `uuid`).
    #[arg(long)]
    pub key_column: Option<String>,

    /// Data set: check every shard against the manifest (size, whole-file SHA-256, per-block
    /// XXH3-128, schema, rows, key range and order); exit 1 naming the first bad shard.
    #[arg(long)]
    pub verify: bool,
}

/// Run `embedstream inspect` and print the report.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    crate::stdout::print(&report(&args)?)?;
    Ok(())
}

/// The report `inspect` prints. Unlike `serve`, it checks the key order of
/// every row and reports a problem instead of refusing the file.
pub fn report(args: &InspectArgs) -> anyhow::Result<String> {
    if args.file.is_dir() {
        return dataset_report(&args.file, args.verify);
    }
    if args.verify {
        anyhow::bail!(
            "{}: --verify checks a data set directory against its manifest; a single file has no checksums (`inspect FILE` decodes every batch already)",
            args.file.display()
        );
    }
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

/// The report on a data set directory; with `verify`, every shard checked
/// against the manifest first ([`verify_shard`]), failing on the first bad one.
pub fn dataset_report(dir: &Path, verify: bool) -> anyhow::Result<String> {
    let manifest = Manifest::read(dir)?;
    let bytes: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "data set: {} ({} shards, {} rows, {})",
        dir.display(),
        manifest.shards.len(),
        manifest.rows,
        crate::fs::human_bytes(bytes)
    );
    let _ = writeln!(out, "key:      `{}`", manifest.key_column);
    let first = manifest.shards.iter().find_map(|s| s.key_range());
    let last = manifest.shards.iter().rev().find_map(|s| s.key_range());
    if let (Some((first, _)), Some((_, last))) = (first, last) {
        let _ = writeln!(out, "  first   {}{}", format_uuid(&first), v7_time(&first));
        let _ = writeln!(out, "  last    {}{}", format_uuid(&last), v7_time(&last));
    }
    let _ = writeln!(out, "columns:");
    for field in &manifest.schema {
        let nullable = if field.nullable { "" } else { " not null" };
        let _ = writeln!(out, "  {:<24} {}{nullable}", field.name, field.data_type);
    }
    let _ = writeln!(out, "shards:");
    for shard in &manifest.shards {
        let keys = match (&shard.first_key, &shard.last_key) {
            (Some(a), Some(b)) => format!("{a} .. {b}"),
            _ => "no keys".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<20} {:>10} rows {:>5} batches {:>10}  {keys}",
            shard.file,
            shard.rows,
            shard.batches.len(),
            crate::fs::human_bytes(shard.bytes)
        );
    }
    if verify {
        for (i, shard) in manifest.shards.iter().enumerate() {
            verify_shard(dir, &manifest, shard).map_err(|reason| {
                anyhow::anyhow!(
                    "{}: {}: {reason}; the data set is damaged (convert it again, or restore the shard)",
                    dir.display(),
                    shard.label(i)
                )
            })?;
        }
        let _ = writeln!(
            out,
            "verified: {} shards against the manifest (size, file SHA-256, block XXH3-128, schema, rows, keys)",
            manifest.shards.len()
        );
    }
    Ok(out)
}

/// Check one shard against its manifest entry; the first difference.
/// Block checksums come before the whole-file one, so a damaged batch is
/// named by number.
fn verify_shard(dir: &Path, manifest: &Manifest, shard: &ShardEntry) -> Result<(), String> {
    let path = dir.join(&shard.file);
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read the file: {e}"))?
        .len();
    if len != shard.bytes {
        return Err(format!(
            "the file has {len} bytes, the manifest lists {}",
            shard.bytes
        ));
    }
    let file = MappedIpcFile::open(&path).map_err(|e| e.to_string())?;
    if file.num_dictionaries() != shard.dictionaries.len() {
        return Err(format!(
            "{} dictionary blocks, the manifest lists {}",
            file.num_dictionaries(),
            shard.dictionaries.len()
        ));
    }
    for (i, expected) in shard.dictionaries.iter().enumerate() {
        let bytes = file
            .dictionary_extent(i)
            .unwrap_or_else(|| Err("missing".into()))
            .map_err(|e| format!("dictionary {i}: {e}"))?;
        if &block_checksum(&bytes) != expected {
            return Err(format!(
                "dictionary {i}: its XXH3-128 does not match the manifest"
            ));
        }
    }
    if file.num_batches() != shard.batches.len() {
        return Err(format!(
            "{} record batches, the manifest lists {}",
            file.num_batches(),
            shard.batches.len()
        ));
    }
    for (i, expected) in shard.batches.iter().enumerate() {
        let bytes = file
            .record_batch_extent(i)
            .unwrap_or_else(|| Err("missing".into()))
            .map_err(|e| format!("batch {i}: {e}"))?;
        if block_checksum(&bytes) != expected.xxh3 {
            return Err(format!(
                "batch {i}: its XXH3-128 does not match the manifest"
            ));
        }
        let rows = file.batch_num_rows(i).unwrap_or(0) as u64;
        if rows != expected.rows {
            return Err(format!(
                "batch {i}: {rows} rows, the manifest lists {}",
                expected.rows
            ));
        }
    }
    if sha256_hex(file.bytes()) != shard.sha256 {
        return Err("the file's SHA-256 does not match the manifest".into());
    }
    if schema_entries(file.schema()) != manifest.schema {
        return Err("its schema differs from the manifest's".into());
    }
    let key_index = file
        .schema()
        .index_of(&manifest.key_column)
        .map_err(|_| format!("no key column `{}`", manifest.key_column))?;
    let mut first: Option<Vec<u8>> = None;
    let mut previous: Option<Vec<u8>> = None;
    let mut row = 0usize;
    for i in 0..file.num_batches() {
        let column = file
            .decode_column(i, key_index)
            .map_err(|e| e.to_string())?;
        let keys = column
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .filter(|k| k.value_length() == 16 && k.null_count() == 0)
            .ok_or_else(|| {
                format!("batch {i}: the key column is not 16-byte keys without nulls")
            })?;
        for j in 0..keys.len() {
            let key = keys.value(j);
            if let Some(p) = &previous {
                format::check_key_order(row, p, key).map_err(|e| format!("keys are {e}"))?;
            }
            first.get_or_insert_with(|| key.to_vec());
            previous = Some(key.to_vec());
            row += 1;
        }
    }
    let actual = first.zip(previous);
    let listed = shard.key_range();
    let same = match (&actual, &listed) {
        (Some((a, b)), Some((c, d))) => a[..] == c[..] && b[..] == d[..],
        (None, None) => true,
        _ => false,
    };
    if !same {
        let show = |k: Option<(&[u8], &[u8])>| {
            k.map_or("none".to_string(), |(a, b)| {
                format!("{} .. {}", format_uuid(a), format_uuid(b))
            })
        };
        return Err(format!(
            "its keys run {}, the manifest lists {}",
            show(actual.as_ref().map(|(a, b)| (&a[..], &b[..]))),
            show(listed.as_ref().map(|(a, b)| (&a[..], &b[..])))
        ));
    }
    Ok(())
}
