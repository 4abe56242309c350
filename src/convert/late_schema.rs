//! An Arrow IPC file whose schema metadata is settled after its record
//! batches are written.
//!
//! Why: a refresh counts its changed rows while it writes them (each kept
//! row is compared with OLD's as it goes out, instead of in a pass of its
//! own over the pickle: measured in BENCHMARKS.md, section 0c). The count
//! belongs in the schema's metadata, which the IPC file format holds twice:
//! in the schema message at the start and in the footer at the end.
//!
//! How, with arrow's own [`FileWriter`](arrow_ipc::writer::FileWriter):
//! - the table's schema carries [`PLACEHOLDER`] for each late value, longer
//!   than any final value ([`MAX_LATE_VALUE`]), so the schema message the
//!   writer puts first reserves at least the room the final one needs;
//! - [`LateSchemaFile`] passes everything the writer writes to the file,
//!   except the footer, which it keeps;
//! - [`LateSchemaFile::settle`] then writes the footer encoded again with
//!   the final schema (the same blocks, version and dictionary ids), and
//!   returns the start of the file with the schema message encoded again
//!   and padded to the reserved length, for the caller to write over the
//!   start ([`crate::fs::AtomicFile::commit_with_head`]). The message's
//!   metadata length keeps covering the reservation (the format counts
//!   padding after a message's flatbuffer in it), so every block offset
//!   the footer lists stays true.

use std::{io, io::Write};

use anyhow::{anyhow, bail, ensure};
use arrow_ipc::{
    convert::IpcSchemaEncoder,
    writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions},
    Block, FooterBuilder,
};
use arrow_schema::Schema;

/// What a late metadata value holds until it is settled: longer than any
/// final value by more than any flatbuffer alignment, so the final schema
/// message always fits in the room this one took.
pub const PLACEHOLDER: &str = "(settled once the rows are written)";

/// The longest final value (a `u64` in decimal).
pub const MAX_LATE_VALUE: usize = 20;

const MAGIC: &[u8; 6] = b"ARROW1";
const CONTINUATION: [u8; 4] = [0xff; 4];

/// The file under an arrow [`FileWriter`](arrow_ipc::writer::FileWriter):
/// see the module docs.
pub struct LateSchemaFile<'a, W: Write> {
    inner: &'a mut W,
    /// The start of the file, up to the end of the schema message: kept
    /// until [`LateSchemaFile::header_written`].
    head: Vec<u8>,
    head_done: bool,
    /// The writer's closing bytes (end-of-stream marker, footer, trailer),
    /// kept from [`LateSchemaFile::capture_tail`] on.
    tail: Option<Vec<u8>>,
}

impl<'a, W: Write> LateSchemaFile<'a, W> {
    /// A file written through `inner`.
    pub fn new(inner: &'a mut W) -> Self {
        LateSchemaFile {
            inner,
            head: Vec::new(),
            head_done: false,
            tail: None,
        }
    }

    /// The writer has written the magic and the schema message (it does so
    /// when created).
    pub fn header_written(&mut self) {
        self.head_done = true;
    }

    /// Every record batch is written: what comes next (the footer) is kept.
    pub fn capture_tail(&mut self) {
        self.tail.get_or_insert_with(Vec::new);
    }

    /// Write the footer with `schema` (the table's schema with its final
    /// values) and return the file's new start, to write over its first
    /// bytes.
    pub fn settle(self, schema: &Schema, options: &IpcWriteOptions) -> anyhow::Result<Vec<u8>> {
        let head = settled_head(&self.head, schema, options)?;
        let tail = self
            .tail
            .ok_or_else(|| anyhow!("internal error: the footer was not captured"))?;
        self.inner.write_all(&settled_tail(&tail, schema)?)?;
        Ok(head)
    }
}

impl<W: Write> Write for LateSchemaFile<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(tail) = &mut self.tail {
            tail.extend_from_slice(buf);
            return Ok(buf.len());
        }
        let n = self.inner.write(buf)?;
        if !self.head_done {
            self.head.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Every late value is a number no longer than [`MAX_LATE_VALUE`], and no
/// placeholder is left.
fn check_settled(schema: &Schema) -> anyhow::Result<()> {
    if let Some((key, _)) = schema.metadata().iter().find(|(_, v)| *v == PLACEHOLDER) {
        bail!("internal error: the metadata entry `{key}` was never settled");
    }
    Ok(())
}

/// `head` (magic, padding, schema message) with the schema message encoded
/// from `schema` and padded to the same length.
fn settled_head(
    head: &[u8],
    schema: &Schema,
    options: &IpcWriteOptions,
) -> anyhow::Result<Vec<u8>> {
    check_settled(schema)?;
    let bad = |what: &str| anyhow!("internal error: the file's header {what}");
    if !head.starts_with(MAGIC) {
        return Err(bad("does not start with the Arrow magic"));
    }
    // The magic's padding is zeros, so the first continuation marker after
    // it starts the schema message.
    let at = head[MAGIC.len()..]
        .windows(4)
        .position(|w| w == CONTINUATION)
        .map(|p| p + MAGIC.len())
        .ok_or_else(|| bad("has no schema message"))?;
    let len_bytes: [u8; 4] = head
        .get(at + 4..at + 8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("ends inside the schema message's length"))?;
    let reserved =
        usize::try_from(i32::from_le_bytes(len_bytes)).map_err(|_| bad("has a negative length"))?;
    ensure!(
        at + 8 + reserved == head.len(),
        "internal error: the file's header is {} bytes, its schema message ends at {}",
        head.len(),
        at + 8 + reserved
    );
    let message = IpcDataGenerator::default()
        .schema_to_bytes_with_dictionary_tracker(schema, &mut DictionaryTracker::new(true), options)
        .ipc_message;
    ensure!(
        message.len() <= reserved,
        "internal error: the settled schema ({} bytes) outgrew its reservation ({reserved} bytes)",
        message.len()
    );
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(&head[..at + 8]);
    out.extend_from_slice(&message);
    out.resize(head.len(), 0);
    Ok(out)
}

/// `tail` (end-of-stream marker, footer, footer length, magic) with the
/// footer encoded again with `schema`.
fn settled_tail(tail: &[u8], schema: &Schema) -> anyhow::Result<Vec<u8>> {
    check_settled(schema)?;
    let bad = |what: &str| anyhow!("internal error: the file's footer {what}");
    let trailer = tail
        .len()
        .checked_sub(4 + MAGIC.len())
        .ok_or_else(|| bad("is cut short"))?;
    if &tail[trailer + 4..] != MAGIC {
        return Err(bad("does not end with the Arrow magic"));
    }
    let footer_len = i32::from_le_bytes(
        tail[trailer..trailer + 4]
            .try_into()
            .map_err(|_| bad("length is unreadable"))?,
    );
    let start = usize::try_from(footer_len)
        .ok()
        .and_then(|len| trailer.checked_sub(len))
        .ok_or_else(|| bad("length points outside it"))?;
    let footer = arrow_ipc::root_as_footer(&tail[start..trailer])
        .map_err(|e| anyhow!("internal error: the file's footer is unreadable: {e}"))?;
    if footer.custom_metadata().is_some_and(|m| !m.is_empty()) {
        return Err(bad("has custom metadata, which is not carried over"));
    }
    let dictionaries: Vec<Block> = footer
        .dictionaries()
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default();
    let batches: Vec<Block> = footer
        .recordBatches()
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default();

    // As arrow's FileWriter::finish builds it.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let dictionaries = fbb.create_vector(&dictionaries);
    let batches = fbb.create_vector(&batches);
    let mut tracker = DictionaryTracker::new(true);
    let schema = IpcSchemaEncoder::new()
        .with_dictionary_tracker(&mut tracker)
        .schema_to_fb_offset(&mut fbb, schema);
    let mut builder = FooterBuilder::new(&mut fbb);
    builder.add_version(footer.version());
    builder.add_schema(schema);
    builder.add_dictionaries(dictionaries);
    builder.add_recordBatches(batches);
    let root = builder.finish();
    fbb.finish(root, None);
    let data = fbb.finished_data();

    let mut out = Vec::with_capacity(start + data.len() + 4 + MAGIC.len());
    out.extend_from_slice(&tail[..start]);
    out.extend_from_slice(data);
    out.extend_from_slice(
        &i32::try_from(data.len())
            .map_err(|_| bad("is too large"))?
            .to_le_bytes(),
    );
    out.extend_from_slice(MAGIC);
    Ok(out)
}

/// `schema` with `entries` set in its metadata; each must replace a
/// [`PLACEHOLDER`] and be at most [`MAX_LATE_VALUE`] long.
pub fn settle_metadata(schema: &Schema, entries: &[(String, String)]) -> anyhow::Result<Schema> {
    let mut metadata = schema.metadata().clone();
    for (key, value) in entries {
        ensure!(
            metadata.get(key).map(String::as_str) == Some(PLACEHOLDER),
            "internal error: `{key}` was not reserved for a late value"
        );
        ensure!(
            value.len() <= MAX_LATE_VALUE,
            "internal error: the late value of `{key}` is longer than {MAX_LATE_VALUE} bytes"
        );
        metadata.insert(key.clone(), value.clone());
    }
    Ok(Schema::new(schema.fields().clone()).with_metadata(metadata))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        types::Int32Type, ArrayRef, DictionaryArray, Float32Array, RecordBatch, StringArray,
    };
    use arrow_ipc::{
        reader::{FileReader, StreamReader},
        writer::FileWriter,
    };
    use std::collections::HashMap;

    use arrow_schema::{DataType, Field};

    use super::*;

    fn write(rows: usize, batches: usize, late: &str) -> (Vec<u8>, Schema) {
        let mut metadata = HashMap::new();
        metadata.insert("a".to_string(), "1".to_string());
        metadata.insert("late".to_string(), PLACEHOLDER.to_string());
        metadata.insert("z".to_string(), "last".to_string());
        let schema = Arc::new(
            Schema::new(vec![
                Field::new("x", DataType::Float32, false),
                Field::new(
                    "d",
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    true,
                ),
            ])
            .with_metadata(metadata),
        );
        let mut file = Vec::new();
        let options = IpcWriteOptions::default();
        let mut late_file = LateSchemaFile::new(&mut file);
        let mut writer =
            FileWriter::try_new_with_options(&mut late_file, &schema, options.clone()).unwrap();
        writer.get_mut().header_written();
        for b in 0..batches {
            let x: ArrayRef = Arc::new(Float32Array::from_iter_values(
                (0..rows).map(|i| (b * rows + i) as f32),
            ));
            let d: DictionaryArray<Int32Type> = (0..rows).map(|i| ["p", "q", "r"][i % 3]).collect();
            let batch = RecordBatch::try_new(schema.clone(), vec![x, Arc::new(d)]).unwrap();
            writer.write(&batch).unwrap();
        }
        writer.get_mut().capture_tail();
        writer.finish().unwrap();
        drop(writer);
        let settled = settle_metadata(&schema, &[("late".to_string(), late.to_string())]).unwrap();
        let head = late_file.settle(&settled, &options).unwrap();
        file[..head.len()].copy_from_slice(&head);
        (file, settled)
    }

    #[test]
    fn the_settled_file_reads_back_with_its_final_metadata_from_both_ends() {
        for late in ["", "0", "7", "14189", "1234567", "18446744073709551615"] {
            for batches in [0, 1, 3] {
                let (file, settled) = write(5, batches, late);
                // The footer (file readers).
                let reader = FileReader::try_new(std::io::Cursor::new(&file), None).unwrap();
                assert_eq!(reader.schema().metadata(), settled.metadata(), "{late:?}");
                let read: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
                assert_eq!(read.len(), batches);
                let xs: Vec<f32> = read
                    .iter()
                    .flat_map(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<Float32Array>()
                            .unwrap()
                            .values()
                            .to_vec()
                    })
                    .collect();
                assert_eq!(xs, (0..5 * batches).map(|i| i as f32).collect::<Vec<_>>());
                for b in &read {
                    let d = b
                        .column(1)
                        .as_any()
                        .downcast_ref::<DictionaryArray<Int32Type>>()
                        .unwrap();
                    let values = d.values().as_any().downcast_ref::<StringArray>().unwrap();
                    let got: Vec<&str> = d
                        .keys()
                        .iter()
                        .map(|k| values.value(k.unwrap() as usize))
                        .collect();
                    assert_eq!(got, ["p", "q", "r", "p", "q"]);
                }
                // The schema message at the start (stream readers).
                let at = file.windows(4).position(|w| w == CONTINUATION).unwrap();
                let stream =
                    StreamReader::try_new(std::io::Cursor::new(&file[at..]), None).unwrap();
                assert_eq!(stream.schema().metadata(), settled.metadata(), "{late:?}");
                assert_eq!(stream.map(Result::unwrap).count(), batches);
                assert!(!file
                    .windows(PLACEHOLDER.len())
                    .any(|w| w == PLACEHOLDER.as_bytes()));
            }
        }
    }

    #[test]
    fn a_late_value_must_have_been_reserved_and_fit() {
        let schema = Schema::new(vec![Field::new("x", DataType::Int8, false)]).with_metadata(
            HashMap::from([("late".to_string(), PLACEHOLDER.to_string())]),
        );
        let err = settle_metadata(&schema, &[("other".into(), "1".into())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: `other` was not reserved for a late value"
        );
        let err = settle_metadata(&schema, &[("late".into(), "1".repeat(21))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: the late value of `late` is longer than 20 bytes"
        );
        let err = check_settled(&schema).unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: the metadata entry `late` was never settled"
        );
    }
}
