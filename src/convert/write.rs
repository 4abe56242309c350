//! Columns → one schema with the key and metadata → record batches → file.

use std::{path::Path, sync::Arc};

use anyhow::{bail, Context};
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::{arrow::ArrowWriter, basic::Compression, file::properties::WriterProperties};

use super::{
    key::{self, KeyGenerator},
    late_schema::{self, LateSchemaFile},
    refresh::{self, Plan},
    ConvertArgs, OutputFormat,
};
use crate::{
    format,
    frame::{ColumnData, Frame},
    fs::AtomicFile,
    progress::Progress,
};

/// Data per record batch when `--batch-rows` is not given.
const TARGET_BATCH_BYTES: usize = 3 << 20;
const MIN_AUTO_BATCH_ROWS: usize = 256;
const MAX_AUTO_BATCH_ROWS: usize = 65_536;

/// The table to write: the schema (key and metadata included) over the
/// frame's columns, cut into record batches as it is written — built columns
/// are sliced without a copy, vector columns are built one batch at a time.
#[derive(Debug)]
pub struct Table {
    schema: SchemaRef,
    columns: Vec<ColumnData>,
    rows: usize,
    key_index: usize,
    key_adopted: bool,
    vector: Option<(usize, usize, DataType)>,
    /// A refresh's row order: output row `i` is frame row `order[i]` (the key
    /// column is already in that order). It is the plan's, as if no kept row
    /// changed: under `--on-change renew` the refresh's batches move the
    /// changed ones ([`refresh::RefreshBatches`]).
    order: Option<Vec<u32>>,
}

impl Table {
    /// Add (or adopt) the key column and describe the file in schema metadata.
    pub fn from_frame(
        frame: Frame,
        key_column: &str,
        vector_column: Option<&str>,
        source: &Path,
    ) -> anyhow::Result<Self> {
        Self::build(frame, key_column, vector_column, source, None, None)
    }

    /// [`Table::from_frame`] with keys drawn from `keys` (the data set
    /// converter's one sequence over every input) instead of a fresh generator.
    pub fn from_frame_keyed(
        frame: Frame,
        key_column: &str,
        vector_column: Option<&str>,
        source: &Path,
        keys: &mut KeyGenerator,
    ) -> anyhow::Result<Self> {
        Self::build(frame, key_column, vector_column, source, None, Some(keys))
    }

    /// A refresh's table: the frame's rows in the plan's order, with the
    /// plan's keys and its lineage in the metadata, the changed count
    /// reserved for later ([`refresh::plan`] has refused an input that
    /// carries its own key column). Written through
    /// [`refresh::RefreshBatches`].
    pub fn refreshed(
        frame: Frame,
        key_column: &str,
        vector_column: Option<&str>,
        source: &Path,
        plan: Plan,
    ) -> anyhow::Result<Self> {
        if plan.order.len() != frame.rows || plan.keys.len() != frame.rows {
            bail!("internal error: the refresh plan does not cover every row");
        }
        Self::build(frame, key_column, vector_column, source, Some(plan), None)
    }

    fn build(
        frame: Frame,
        key_column: &str,
        vector_column: Option<&str>,
        source: &Path,
        plan: Option<Plan>,
        generator: Option<&mut KeyGenerator>,
    ) -> anyhow::Result<Self> {
        let rows = frame.rows;
        let mut fields = Vec::with_capacity(frame.columns.len() + 1);
        let mut columns: Vec<ColumnData> = Vec::with_capacity(frame.columns.len() + 1);
        let mut key_index = None;
        for column in frame.columns {
            if column.data.len() != rows {
                bail!(
                    "column `{}` has {} values but the table has {rows} rows",
                    column.name,
                    column.data.len()
                );
            }
            if fields.iter().any(|f: &Field| f.name() == &column.name) {
                bail!(
                    "the input has two columns named `{}`; rename one before converting",
                    column.name
                );
            }
            if column.name == key_column && plan.is_none() {
                let keys = key::adopt_existing(key_column, &column.data.to_array()?)?;
                key_index = Some(fields.len());
                fields.push(format::key_field(key_column));
                columns.push(ColumnData::Array(key::as_array(keys)));
            } else {
                let data_type = column.data.data_type();
                let nullable = column.data.null_count() > 0 || data_type != DataType::Null;
                fields.push(Field::new(&column.name, data_type, nullable));
                columns.push(column.data);
            }
        }
        let key_adopted = key_index.is_some();
        let (order, refresh_keys, refresh_meta) = match plan {
            Some(plan) => {
                let meta = plan.metadata();
                (Some(plan.order), Some(plan.keys), meta)
            }
            None => (None, None, Vec::new()),
        };
        let key_index = match key_index {
            Some(i) => i,
            None => {
                fields.push(format::key_field(key_column));
                let keys = refresh_keys.unwrap_or_else(|| match generator {
                    Some(generator) => generator.column(rows),
                    None => KeyGenerator::new().column(rows),
                });
                columns.push(ColumnData::Array(key::as_array(keys)));
                fields.len() - 1
            }
        };

        let vector_index = match vector_column {
            Some(name) => {
                let i = fields
                    .iter()
                    .position(|f| f.name() == name)
                    .with_context(|| format!("--vector-column `{name}`: no such column"))?;
                if format::vector_shape(fields[i].data_type()).is_none() {
                    bail!(
                        "--vector-column `{name}` is {}, not a column of equal-length numeric arrays",
                        fields[i].data_type()
                    );
                }
                Some(i)
            }
            None => fields
                .iter()
                .position(|f| format::vector_shape(f.data_type()).is_some()),
        };
        let vector = vector_index.and_then(|i| {
            format::vector_shape(fields[i].data_type()).map(|(dim, ty)| (i, dim, ty))
        });

        // Generated keys are increasing by construction; adopted ones were checked;
        // a refresh's are OLD's (increasing in OLD's order), then fresh ones after them.
        let mut metadata = format::FileMetadata::written(key_column);
        if let Some((i, dim, _)) = &vector {
            metadata = metadata.with_vector(fields[*i].name(), *dim);
        }
        metadata.rows = Some(rows);
        metadata.source = source
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        let mut metadata = metadata.to_map();
        // A refresh's generation and lineage entries win over the plain ones.
        metadata.extend(refresh_meta);
        let schema = Arc::new(Schema::new(fields).with_metadata(metadata));
        Ok(Table {
            schema,
            columns,
            rows,
            key_index,
            key_adopted,
            vector,
            order,
        })
    }

    /// The schema, key and metadata included.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows `start..start + len` as a record batch (vector columns are built
    /// now, every other column is a zero-copy slice).
    pub fn batch(&self, start: usize, len: usize) -> anyhow::Result<RecordBatch> {
        let start = start.min(self.rows);
        let len = len.min(self.rows - start);
        let arrays = match &self.order {
            None => self
                .columns
                .iter()
                .map(|c| c.slice(start, len))
                .collect::<Result<Vec<_>, _>>()?,
            Some(order) => {
                let keys = self.columns[self.key_index].slice(start, len)?;
                return self.batch_of(&order[start..start + len], keys);
            }
        };
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(len)),
        )
        .context("internal error: the columns do not form a table")
    }

    /// Frame rows `rows` (in that order) as a record batch with the key
    /// column `keys` (a refresh's rows: vector columns built now, every
    /// other column gathered).
    pub(crate) fn batch_of(&self, rows: &[u32], keys: ArrayRef) -> anyhow::Result<RecordBatch> {
        if keys.len() != rows.len() {
            bail!(
                "internal error: {} keys for {} rows",
                keys.len(),
                rows.len()
            );
        }
        let arrays = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == self.key_index {
                    Ok(keys.clone())
                } else {
                    refresh::gather(c, rows)
                }
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .context("internal error: the columns do not form a table")
    }

    /// A refresh's frame rows of output rows `start..start + len` (empty
    /// for a table that is not a refresh's).
    pub(crate) fn frame_rows(&self, start: usize, len: usize) -> &[u32] {
        self.order
            .as_deref()
            .and_then(|order| order.get(start..start.saturating_add(len).min(order.len())))
            .unwrap_or(&[])
    }

    /// The index of the key column.
    pub(crate) fn key_index(&self) -> usize {
        self.key_index
    }

    /// Before a second pass over the input's rows in input order (a
    /// refresh's fresh section): building vector rows releases the
    /// pickle's pages behind the last row built, from the start again.
    /// Without this, rows before where the first pass ended stay resident
    /// once read, with the pages the kernel maps around each fault.
    pub(crate) fn rewind_input_release(&self) {
        for column in &self.columns {
            if let ColumnData::Vectors(cells) = column {
                if let Some(source) = &cells.source {
                    source.rewind_release();
                }
            }
        }
    }

    /// Row count.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the key came from the input.
    pub fn key_adopted(&self) -> bool {
        self.key_adopted
    }

    /// (column index, dimension, element type) of the vector column.
    pub fn vector(&self) -> Option<(usize, usize, DataType)> {
        self.vector.clone()
    }

    /// First and last key.
    pub fn key_range(&self) -> Option<(&[u8], &[u8])> {
        let ColumnData::Array(keys) = self.columns.get(self.key_index)? else {
            return None;
        };
        let keys = keys.as_any().downcast_ref::<FixedSizeBinaryArray>()?;
        (!keys.is_empty()).then(|| (keys.value(0), keys.value(keys.len() - 1)))
    }

    /// The key of row `row`.
    pub fn key_at(&self, row: usize) -> Option<&[u8]> {
        let ColumnData::Array(keys) = self.columns.get(self.key_index)? else {
            return None;
        };
        let keys = keys.as_any().downcast_ref::<FixedSizeBinaryArray>()?;
        (row < keys.len()).then(|| keys.value(row))
    }

    /// The schema of a file holding `rows` of the table's rows (a shard):
    /// the same fields, the row count in the metadata.
    pub fn schema_for_rows(&self, rows: usize) -> SchemaRef {
        let mut metadata = self.schema.metadata().clone();
        let mut meta = format::FileMetadata::read(&metadata);
        meta.rows = Some(rows);
        metadata.extend(meta.to_map());
        Arc::new(Schema::new(self.schema.fields().clone()).with_metadata(metadata))
    }

    /// Rows per batch: the flag, or about `TARGET_BATCH_BYTES` (3 MiB) of data.
    pub fn batch_rows(&self, requested: Option<u32>) -> usize {
        if let Some(rows) = requested {
            return rows as usize;
        }
        let per_row = self
            .columns
            .iter()
            .map(ColumnData::row_bytes)
            .sum::<usize>()
            .max(1);
        (TARGET_BATCH_BYTES / per_row).clamp(MIN_AUTO_BATCH_ROWS, MAX_AUTO_BATCH_ROWS)
    }
}

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Record batches (IPC) or row groups (Parquet).
    pub batches: usize,
    /// File size.
    pub bytes: u64,
}

/// The record batches a file is written from, in order, and the final
/// values of the schema metadata entries reserved with
/// [`late_schema::PLACEHOLDER`], once every batch is out (a refresh's
/// changed count). A table's rows are one ([`write_rows`]); a refresh's
/// batches, compared with OLD as they are built, another.
pub trait BatchSource {
    /// The next batch, `None` after the last.
    fn next_batch(&mut self) -> anyhow::Result<Option<RecordBatch>>;
    /// The reserved entries' final values (each at most
    /// [`late_schema::MAX_LATE_VALUE`] bytes), asked after the last batch.
    fn settled(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Rows `next..end` of a table, `step` at a time, under `schema`.
struct TableRows<'t> {
    table: &'t Table,
    next: usize,
    end: usize,
    step: usize,
    schema: SchemaRef,
}

impl BatchSource for TableRows<'_> {
    fn next_batch(&mut self) -> anyhow::Result<Option<RecordBatch>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let len = self.step.min(self.end - self.next);
        let batch = self.table.batch(self.next, len)?;
        self.next += len;
        if Arc::ptr_eq(&self.schema, self.table.schema()) {
            return Ok(Some(batch));
        }
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.columns().to_vec(),
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map(Some)
        .context("internal error: the shard's columns do not form a table")
    }
}

/// Write `table` to `output` atomically in the format the flags ask for.
pub fn write(
    table: &Table,
    output: &Path,
    args: &ConvertArgs,
    progress: &Progress,
) -> anyhow::Result<Written> {
    write_rows(
        table,
        0..table.rows(),
        table.schema().clone(),
        output,
        args,
        progress,
    )
}

/// Write rows `range` of `table` to `output` atomically under `schema` (the
/// table's fields; a shard's metadata): one shard of a data set.
pub fn write_rows(
    table: &Table,
    range: std::ops::Range<usize>,
    schema: SchemaRef,
    output: &Path,
    args: &ConvertArgs,
    progress: &Progress,
) -> anyhow::Result<Written> {
    let step = table.batch_rows(args.batch_rows).max(1);
    let mut rows = TableRows {
        table,
        next: range.start,
        end: range.end.min(table.rows()),
        step,
        schema: schema.clone(),
    };
    write_batches(&mut rows, schema, step, output, args, progress)
}

/// Write every batch of `source` (of `schema`, about `batch_rows` rows
/// each: Parquet row groups are 16 of them) to `output` atomically; a
/// schema holding [`late_schema::PLACEHOLDER`] values gets the source's
/// settled ones (Arrow IPC only).
pub fn write_batches(
    source: &mut dyn BatchSource,
    schema: SchemaRef,
    batch_rows: usize,
    output: &Path,
    args: &ConvertArgs,
    progress: &Progress,
) -> anyhow::Result<Written> {
    let late = schema
        .metadata()
        .values()
        .any(|v| v == late_schema::PLACEHOLDER);
    let mut file = AtomicFile::create(output, args.force)?;
    let write_err = || format!("{}: writing failed", output.display());
    let mut batches = 0;
    // The file's settled start, when the source settles late metadata.
    let mut head = Vec::new();
    let written = (|| -> anyhow::Result<()> {
        match args.format {
            OutputFormat::Ipc => {
                let options = IpcWriteOptions::default();
                let mut out = LateSchemaFile::new(&mut file);
                let mut writer =
                    FileWriter::try_new_with_options(&mut out, &schema, options.clone())
                        .with_context(write_err)?;
                writer.get_mut().header_written();
                while let Some(batch) = source.next_batch()? {
                    writer.write(&batch).with_context(write_err)?;
                    batches += 1;
                    progress.inc(batch.num_rows() as u64);
                }
                if late {
                    writer.get_mut().capture_tail();
                }
                writer.finish().with_context(write_err)?;
                drop(writer);
                if late {
                    let settled = late_schema::settle_metadata(&schema, &source.settled())?;
                    head = out.settle(&settled, &options).with_context(write_err)?;
                }
            }
            OutputFormat::Parquet if late => {
                bail!("internal error: late metadata is settled in Arrow IPC files only")
            }
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(batch_rows.max(1) * 16))
                    .build();
                let mut writer = ArrowWriter::try_new(&mut file, schema.clone(), Some(props))
                    .with_context(write_err)?;
                while let Some(batch) = source.next_batch()? {
                    writer.write(&batch).with_context(write_err)?;
                    progress.inc(batch.num_rows() as u64);
                }
                batches = writer.close().with_context(write_err)?.num_row_groups();
            }
        }
        Ok(())
    })();
    // A failed write of the file itself: its own message (destination,
    // reason, advice) once, not as wrapped by the Arrow or Parquet writer.
    if let Err(e) = written {
        return Err(file.write_error().map_or(e, anyhow::Error::new));
    }
    file.commit_with_head(&head)?;
    let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    Ok(Written { batches, bytes })
}

/// Write a file of `schema` and no record batch to `output` atomically
/// (the shard of an input of 0 rows).
pub fn write_empty(schema: SchemaRef, output: &Path) -> anyhow::Result<()> {
    let mut file = AtomicFile::create(output, false)?;
    let write_err = || format!("{}: writing failed", output.display());
    let written = (|| -> anyhow::Result<()> {
        let mut writer =
            FileWriter::try_new_with_options(&mut file, &schema, IpcWriteOptions::default())
                .with_context(write_err)?;
        writer.finish().with_context(write_err)?;
        Ok(())
    })();
    if let Err(e) = written {
        return Err(file.write_error().map_or(e, anyhow::Error::new));
    }
    file.commit()?;
    Ok(())
}
