//! An Arrow IPC file mapped into memory and decoded in place, lazily.
//!
//! The map is wrapped in `bytes::Bytes` (its owner), so every decoded buffer
//! and every raw block handed to Flight is a reference-counted view of the
//! map: nothing is read into the heap.
//!
//! Opening reads the footer, the dictionaries and each record batch's
//! message header (its row count), nothing else: its cost does not depend on
//! the size of the batches. A record batch's body is decoded (and validated
//! by arrow: UTF-8, offsets, lengths) the first time [`MappedIpcFile::batch`]
//! asks for it, then cached; [`MappedIpcFile::decode_column`] decodes one
//! column of a batch without the others (how the store reads the key).
//!
//! arrow's decoder trusts the offsets and lengths in a message header (a
//! buffer past the body panics in arrow-buffer, a negative width in the
//! schema panics in arrow-data). Every header is therefore checked here
//! before arrow sees it ([`check_batch_header`], [`check_types`]), and each
//! call into arrow's decoder runs under [`contained`], which turns a panic
//! the checks missed into an error: a damaged file is an error, never a
//! crash (and a failed batch decode is cached like any other).

use std::{
    fs::File,
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    sync::{Arc, OnceLock},
};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::{
    convert::try_fb_to_schema,
    reader::{read_footer_length, FileDecoder},
    root_as_footer, root_as_message, Block, MessageHeader, MetadataVersion,
};
use arrow_schema::{DataType, SchemaRef};
use bytes::Bytes;
use memmap2::Mmap;

use super::{
    lease::{Lease, Policy, ProtectedBytes},
    StoreError,
};

const MAGIC: &[u8] = b"ARROW1";
/// Trailer: footer length (4) + magic (6).
const TRAILER: usize = 10;

/// Where one IPC message sits in the file: its flatbuffer header (without the
/// continuation marker and length prefix) and its body.
#[derive(Debug, Clone)]
pub struct IpcBlock {
    /// The flatbuffer `Message` bytes.
    pub header: Bytes,
    /// The message body (the batch's buffers).
    pub body: Bytes,
}

/// A record batch that cannot be decoded: found the first time it is read,
/// since opening the file does not decode batch bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record batch {batch} cannot be decoded ({reason})")]
pub struct BatchError {
    /// Index of the batch in the file.
    pub batch: usize,
    /// What arrow (or the bounds check) said.
    pub reason: String,
}

/// A mapped Arrow IPC file: footer, schema and dictionaries read, record
/// batches decoded on first use.
#[derive(Debug)]
pub struct MappedIpcFile {
    bytes: Bytes,
    /// The same map as an arrow buffer (decoded arrays are slices of it).
    buffer: Buffer,
    schema: SchemaRef,
    version: MetadataVersion,
    dictionaries: Vec<Block>,
    /// The blocks holding a record batch (message header type RecordBatch), in file order.
    record_batches: Vec<Block>,
    /// Row count of each record batch, from its message header.
    rows: Vec<usize>,
    /// Decodes whole batches; holds the decoded dictionaries.
    decoder: FileDecoder,
    /// Each batch, decoded the first time it is asked for (or why it cannot be).
    batches: Vec<OnceLock<Result<RecordBatch, String>>>,
    /// How the bytes are protected from writes to the file.
    policy: Policy,
    /// The read lease, under [`Policy::Lease`].
    lease: Option<Arc<Lease>>,
}

impl MappedIpcFile {
    /// Map `path` and read its footer, dictionaries and record batch headers.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let (shown, file) = open_file(path)?;
        // SAFETY: the map is read-only. This open is for one-shot readers
        // (`upload`, `inspect`); a served file is opened with
        // [`MappedIpcFile::open_protected`], which in-place writes cannot reach.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| StoreError::Io {
            path: shown.clone(),
            source,
        })?;
        let not_arrow = |reason: String| StoreError::NotArrow {
            path: shown.clone(),
            reason,
        };
        Self::from_bytes(Bytes::from_owner(map)).map_err(not_arrow)
    }

    /// Open `path` for serving, protected from in-place writes (see
    /// [`super::lease`]): under a read lease if one can be taken, else as a
    /// private copy in memory. The caller must already catch SIGIO.
    pub fn open_protected(path: &Path) -> Result<Self, StoreError> {
        let (shown, file) = open_file(path)?;
        let protected = ProtectedBytes::open(file, path).map_err(|source| StoreError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut opened =
            Self::from_bytes(protected.bytes).map_err(|reason| StoreError::NotArrow {
                path: shown.clone(),
                reason,
            })?;
        opened.policy = protected.policy;
        opened.lease = protected.lease;
        Ok(opened)
    }

    /// How the bytes are protected from writes to the file.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The read lease, if the file is served under one.
    pub fn lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
    }

    /// Read an IPC file held in `bytes` (a map, or a buffer in tests): its
    /// footer, schema, dictionaries and the header of each record batch.
    /// Batch bodies are not decoded.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, String> {
        let len = bytes.len();
        if len < MAGIC.len() * 2 + TRAILER
            || &bytes[..MAGIC.len()] != MAGIC
            || &bytes[len - MAGIC.len()..] != MAGIC
        {
            return Err("missing the ARROW1 magic at its start or end".into());
        }
        let trailer: [u8; TRAILER] = bytes[len - TRAILER..]
            .try_into()
            .map_err(|_| "short trailer".to_string())?;
        let footer_len = read_footer_length(trailer).map_err(|e| e.to_string())?;
        let footer_start = (len - TRAILER)
            .checked_sub(footer_len)
            .ok_or("footer length points before the file start")?;
        let footer = contained("footer", || {
            root_as_footer(&bytes[footer_start..len - TRAILER])
        })?
        .map_err(|e| format!("unreadable footer: {e}"))?;
        let fb_schema = footer.schema().ok_or("footer has no schema")?;
        let schema = contained("schema", || try_fb_to_schema(fb_schema))?
            .map_err(|e| format!("unreadable schema: {e}"))?;
        for field in schema.fields() {
            check_types(field.name(), field.data_type())
                .map_err(|e| format!("unreadable schema: {e}"))?;
        }
        let schema = Arc::new(schema);
        let version = footer.version();
        let dictionaries: Vec<Block> = footer
            .dictionaries()
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();

        let buffer = Buffer::from(bytes.clone());
        let mut decoder = FileDecoder::new(schema.clone(), version);
        for (i, block) in dictionaries.iter().enumerate() {
            let data = block_buffer(&buffer, block)?;
            let raw = raw_block(&bytes, block)?;
            let values = dictionary_schema(&schema, &raw);
            check_batch_header(&raw, Part::Dictionary, values.as_ref(), version, None)
                .map_err(|e| format!("dictionary {i}: {e}"))?;
            contained("dictionary", || decoder.read_dictionary(block, &data))?
                .map_err(|e| format!("dictionary {i}: {e}"))?;
        }

        // Record batches: only their flatbuffer headers are read here.
        let mut record_batches = Vec::new();
        let mut rows = Vec::new();
        let batch_blocks = footer.recordBatches().into_iter().flatten().copied();
        for (i, block) in batch_blocks.enumerate() {
            if let Some(n) =
                batch_rows(&bytes, &block, version).map_err(|e| format!("record batch {i}: {e}"))?
            {
                record_batches.push(block);
                rows.push(n);
            }
        }
        let batches = record_batches.iter().map(|_| OnceLock::new()).collect();
        Ok(MappedIpcFile {
            bytes,
            buffer,
            schema,
            version,
            dictionaries,
            record_batches,
            rows,
            decoder,
            batches,
            policy: Policy::Unprotected,
            lease: None,
        })
    }

    /// The file's schema, with its metadata.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The IPC metadata version the file was written with.
    pub fn version(&self) -> MetadataVersion {
        self.version
    }

    /// Number of record batches.
    pub fn num_batches(&self) -> usize {
        self.record_batches.len()
    }

    /// Row count of batch `i` as its message header says (`None` past the end).
    pub fn batch_num_rows(&self, i: usize) -> Option<usize> {
        self.rows.get(i).copied()
    }

    /// Record batch `i`, decoded (and validated) on the first call, then
    /// cached: a view of the map. A decode failure is cached too.
    pub fn batch(&self, i: usize) -> Result<&RecordBatch, BatchError> {
        let cell = self.batches.get(i).ok_or_else(|| self.no_batch(i))?;
        cell.get_or_init(|| self.decode(i, &self.decoder, None))
            .as_ref()
            .map_err(|reason| BatchError {
                batch: i,
                reason: reason.clone(),
            })
    }

    /// Column `column` of batch `i`, decoded on its own (the other columns'
    /// buffers are skipped, not validated). Not cached. A column whose type
    /// holds a dictionary needs the file's dictionaries: it is taken from the
    /// whole batch ([`MappedIpcFile::batch`]) instead.
    pub fn decode_column(&self, i: usize, column: usize) -> Result<ArrayRef, BatchError> {
        let field = self.schema.fields().get(column).ok_or_else(|| BatchError {
            batch: i,
            reason: format!("no column {column} in the schema"),
        })?;
        if has_dictionary(field.data_type()) {
            return Ok(self.batch(i)?.column(column).clone());
        }
        let projected =
            FileDecoder::new(self.schema.clone(), self.version).with_projection(vec![column]);
        let batch = self
            .decode(i, &projected, Some(column))
            .map_err(|reason| BatchError { batch: i, reason })?;
        batch.columns().first().cloned().ok_or_else(|| BatchError {
            batch: i,
            reason: "the projected batch has no column".into(),
        })
    }

    /// Decode batch `i` with `decoder`: whole, or only column `projection`
    /// (then only that column's part of the header is checked: arrow skips
    /// the other columns' buffers without reading them).
    fn decode(
        &self,
        i: usize,
        decoder: &FileDecoder,
        projection: Option<usize>,
    ) -> Result<RecordBatch, String> {
        let block = self
            .record_batches
            .get(i)
            .ok_or_else(|| format!("no record batch {i}"))?;
        check_batch_header(
            &raw_block(&self.bytes, block)?,
            Part::RecordBatch,
            Some(&self.schema),
            self.version,
            projection,
        )?;
        let data = block_buffer(&self.buffer, block)?;
        contained("record batch", || decoder.read_record_batch(block, &data))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the message holds no record batch".to_string())
    }

    fn no_batch(&self, i: usize) -> BatchError {
        BatchError {
            batch: i,
            reason: format!("the file has {} record batches", self.num_batches()),
        }
    }

    /// Size of the mapped file in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The whole mapped file (what a data set's whole-file SHA-256 covers).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the mapped file is empty (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw dictionary messages, in file order.
    pub fn dictionary_blocks(&self) -> impl Iterator<Item = Result<IpcBlock, String>> + '_ {
        self.dictionaries.iter().map(|b| raw_block(&self.bytes, b))
    }

    /// The raw record batch message of batch `i`.
    pub fn record_batch_block(&self, i: usize) -> Option<Result<IpcBlock, String>> {
        self.record_batches
            .get(i)
            .map(|b| raw_block(&self.bytes, b))
    }

    /// The bytes of dictionary block `i` as the footer locates them
    /// (metadata, then body): what a data set manifest checksums.
    pub fn dictionary_extent(&self, i: usize) -> Option<Result<Bytes, String>> {
        self.dictionaries
            .get(i)
            .map(|b| extent_bytes(&self.bytes, b))
    }

    /// The bytes of record batch block `i` as the footer locates them
    /// (metadata, then body): what a data set manifest checksums.
    pub fn record_batch_extent(&self, i: usize) -> Option<Result<Bytes, String>> {
        self.record_batches
            .get(i)
            .map(|b| extent_bytes(&self.bytes, b))
    }

    /// Number of dictionary blocks.
    pub fn num_dictionaries(&self) -> usize {
        self.dictionaries.len()
    }
}

/// Open `path` read-only; returns its display form too.
fn open_file(path: &Path) -> Result<(String, File), StoreError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing {
                path: shown.clone(),
            }
        } else {
            StoreError::Io {
                path: shown.clone(),
                source,
            }
        }
    })?;
    Ok((shown, file))
}

/// The row count in a record batch block's message header; `None` for a
/// message with no header (arrow skips those too).
fn batch_rows(
    bytes: &Bytes,
    block: &Block,
    version: MetadataVersion,
) -> Result<Option<usize>, String> {
    let raw = raw_block(bytes, block)?;
    let message = root_as_message(&raw.header).map_err(|e| format!("unreadable header: {e}"))?;
    // As arrow's FileDecoder: old files may leave the footer version unset.
    if version != MetadataVersion::V1 && message.version() != version {
        return Err(format!(
            "message version {:?} differs from the footer's {:?}",
            message.version(),
            version
        ));
    }
    match message.header_type() {
        MessageHeader::RecordBatch => {
            let batch = message
                .header_as_record_batch()
                .ok_or("unreadable record batch header")?;
            usize::try_from(batch.length())
                .map(Some)
                .map_err(|_| format!("negative row count {}", batch.length()))
        }
        MessageHeader::NONE => Ok(None),
        t => Err(format!("expected a RecordBatch message, found {t:?}")),
    }
}

/// Run `f`, a call into arrow's decoder, turning a panic into an error:
/// the last line of defence behind the header checks. (Under a fuzzer the
/// panic hook aborts first, so fuzzing still finds what the checks miss.)
fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("arrow failed to decode the {what}: {message}")
    })
}

/// The one-column schema a dictionary message's data is read with (its
/// values' type, as arrow does), so its buffers are checked like a batch's;
/// `None` if the message or its id is not readable (arrow then refuses it).
fn dictionary_schema(
    schema: &arrow_schema::Schema,
    raw: &IpcBlock,
) -> Option<arrow_schema::Schema> {
    let message = root_as_message(&raw.header).ok()?;
    let id = message.header_as_dictionary_batch()?.id();
    #[allow(deprecated)] // arrow's reader finds the field the same way
    let fields = schema.fields_with_dict_id(id);
    match fields.first()?.data_type() {
        DataType::Dictionary(_, values) => {
            Some(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "",
                values.as_ref().clone(),
                true,
            )]))
        }
        _ => None,
    }
}

/// Which message a block should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    RecordBatch,
    Dictionary,
}

/// Check what arrow's decoder trusts in a record batch (or dictionary)
/// message header: every buffer lies inside the message body, and every
/// field node has a non-negative length and null count, the null count at
/// most the length; and, given the schema, that each buffer arrow reads as
/// an array of fixed-width values holds a whole number of them (arrow-buffer
/// asserts it) and that a union's type ids and offsets cover its length (arrow
/// slices them unchecked). A message with no header passes (arrow skips it).
fn check_batch_header(
    raw: &IpcBlock,
    part: Part,
    schema: Option<&arrow_schema::Schema>,
    version: MetadataVersion,
    projection: Option<usize>,
) -> Result<(), String> {
    let message = root_as_message(&raw.header).map_err(|e| format!("unreadable header: {e}"))?;
    let batch = match (message.header_type(), part) {
        (MessageHeader::NONE, _) => return Ok(()),
        (MessageHeader::RecordBatch, Part::RecordBatch) => message
            .header_as_record_batch()
            .ok_or("unreadable record batch header")?,
        (MessageHeader::DictionaryBatch, Part::Dictionary) => message
            .header_as_dictionary_batch()
            .ok_or("unreadable dictionary header")?
            .data()
            .ok_or("dictionary message without data")?,
        (t, _) => return Err(format!("unexpected {t:?} message")),
    };
    if batch.length() < 0 {
        return Err(format!("negative row count {}", batch.length()));
    }
    let mut walk = BufferWalk {
        nodes: batch
            .nodes()
            .into_iter()
            .flatten()
            .map(|n| n.length())
            .collect(),
        buffers: batch
            .buffers()
            .into_iter()
            .flatten()
            .map(|b| b.length())
            .collect(),
        projection,
        version,
        ..BufferWalk::default()
    };
    // First pass: which column each node and buffer belongs to, so that a
    // projected decode checks only its column's (and any unattributed) parts.
    walk.run(schema, batch.variadicBufferCounts())?;
    let (node_owner, buffer_owner) = (walk.node_owner.clone(), walk.buffer_owner.clone());
    let wanted = |owner: Option<&Option<usize>>| match (owner.copied().flatten(), projection) {
        (Some(column), Some(p)) => column == p,
        _ => true,
    };
    let body = raw.body.len() as u64;
    for (i, buffer) in batch.buffers().into_iter().flatten().enumerate() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let inside = u64::try_from(offset)
            .ok()
            .zip(u64::try_from(length).ok())
            .and_then(|(o, l)| o.checked_add(l))
            .is_some_and(|end| end <= body);
        if !inside && wanted(buffer_owner.get(i)) {
            return Err(format!(
                "buffer {i} (offset {offset}, length {length}) lies outside the {body}-byte body"
            ));
        }
    }
    for (i, node) in batch.nodes().into_iter().flatten().enumerate() {
        let (length, nulls) = (node.length(), node.null_count());
        if (length < 0 || nulls < 0 || nulls > length) && wanted(node_owner.get(i)) {
            return Err(format!(
                "field node {i} has length {length} and null count {nulls}"
            ));
        }
    }
    // Second pass, the buffers now known to lie in the body: their sizes.
    walk.check = true;
    walk.run(schema, batch.variadicBufferCounts())
}

/// Why [`BufferWalk`] stopped.
enum Walked {
    /// The header has fewer nodes, buffers or variadic counts than the schema needs.
    RanOut,
    /// What arrow would have trusted, and must not.
    Bad(String),
}

/// A record batch header's field node lengths and buffer lengths, walked in
/// the order arrow's reader consumes them (depth-first over the schema).
#[derive(Default)]
struct BufferWalk {
    nodes: Vec<i64>,
    next_node: usize,
    buffers: Vec<i64>,
    next_buffer: usize,
    variadic: std::collections::VecDeque<i64>,
    version: MetadataVersion,
    /// The top-level column being walked.
    column: usize,
    /// Check only this column (a projected decode).
    projection: Option<usize>,
    /// Whether to check sizes (the second pass) or only attribute.
    check: bool,
    /// The top-level column of each node and buffer (`None`: not reached).
    node_owner: Vec<Option<usize>>,
    buffer_owner: Vec<Option<usize>>,
}

impl BufferWalk {
    /// Walk every column of `schema` (nothing without one: a dictionary).
    fn run(
        &mut self,
        schema: Option<&arrow_schema::Schema>,
        variadic: Option<impl IntoIterator<Item = i64>>,
    ) -> Result<(), String> {
        let Some(schema) = schema else {
            return Ok(());
        };
        self.variadic = variadic.into_iter().flatten().collect();
        (self.next_node, self.next_buffer) = (0, 0);
        self.node_owner = vec![None; self.nodes.len()];
        self.buffer_owner = vec![None; self.buffers.len()];
        for (column, field) in schema.fields().iter().enumerate() {
            self.column = column;
            match self.field(field.data_type()) {
                Ok(()) => {}
                // Fewer nodes or buffers than the schema needs: arrow says so.
                Err(Walked::RanOut) => break,
                Err(Walked::Bad(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether sizes of the current column are checked.
    fn checking(&self) -> bool {
        self.check && self.projection.is_none_or(|p| p == self.column)
    }

    fn node(&mut self) -> Result<i64, Walked> {
        let i = self.next_node;
        let n = *self.nodes.get(i).ok_or(Walked::RanOut)?;
        self.node_owner[i] = Some(self.column);
        self.next_node += 1;
        Ok(n)
    }

    /// The next buffer: its index and length.
    fn buffer(&mut self) -> Result<(usize, i64), Walked> {
        let i = self.next_buffer;
        let len = *self.buffers.get(i).ok_or(Walked::RanOut)?;
        self.buffer_owner[i] = Some(self.column);
        self.next_buffer += 1;
        Ok((i, len))
    }

    /// The next buffer, read by arrow as `width`-byte values.
    fn values(&mut self, width: usize) -> Result<(), Walked> {
        let (i, len) = self.buffer()?;
        if self.checking() && width > 1 && !(len as u64).is_multiple_of(width as u64) {
            return Err(Walked::Bad(format!(
                "buffer {i} holds {len} bytes, not a whole number of {width}-byte values"
            )));
        }
        Ok(())
    }

    /// The next buffer, which arrow slices to `need` bytes unchecked.
    fn at_least(&mut self, need: i64, what: &str) -> Result<(), Walked> {
        let (i, len) = self.buffer()?;
        if self.checking() && len < need {
            return Err(Walked::Bad(format!(
                "buffer {i} holds {len} bytes, fewer than the {need} the {what} need"
            )));
        }
        Ok(())
    }

    fn field(&mut self, t: &DataType) -> Result<(), Walked> {
        use DataType::*;
        match t {
            Null => self.node().map(drop),
            Utf8 | Binary | LargeUtf8 | LargeBinary => {
                self.node()?;
                self.buffer()?;
                self.values(if matches!(t, Utf8 | Binary) { 4 } else { 8 })?;
                self.buffer().map(drop)
            }
            Utf8View | BinaryView => {
                let count = self.variadic.pop_front().ok_or(Walked::RanOut)?;
                self.buffer()?;
                self.values(16)?;
                for _ in 0..count.max(0) {
                    self.buffer()?;
                }
                self.node().map(drop)
            }
            List(f) | LargeList(f) | Map(f, _) => {
                self.node()?;
                self.buffer()?;
                self.values(if matches!(t, LargeList(_)) { 8 } else { 4 })?;
                self.field(f.data_type())
            }
            ListView(f) | LargeListView(f) => {
                self.node()?;
                self.buffer()?;
                let width = if matches!(t, LargeListView(_)) { 8 } else { 4 };
                self.values(width)?;
                self.values(width)?;
                self.field(f.data_type())
            }
            FixedSizeList(f, size) => {
                let i = self.next_node;
                let len = self.node()?;
                // arrow-data multiplies the two unchecked (an overflow panics).
                if self.checking()
                    && len
                        .checked_mul(i64::from(*size))
                        .and_then(|n| usize::try_from(n).ok())
                        .is_none()
                {
                    return Err(Walked::Bad(format!(
                        "field node {i}: {len} lists of {size} values overflow"
                    )));
                }
                self.buffer()?;
                self.field(f.data_type())
            }
            Struct(fields) => {
                self.node()?;
                self.buffer()?;
                fields.iter().try_for_each(|f| self.field(f.data_type()))
            }
            RunEndEncoded(ends, values) => {
                self.node()?;
                self.field(ends.data_type())?;
                self.field(values.data_type())
            }
            Union(fields, mode) => {
                let len = self.node()?;
                if self.version < MetadataVersion::V5 {
                    self.buffer()?;
                }
                self.at_least(len, "union's type ids")?;
                if *mode == arrow_schema::UnionMode::Dense {
                    self.at_least(len.saturating_mul(4), "union's offsets")?;
                }
                fields
                    .iter()
                    .try_for_each(|(_, f)| self.field(f.data_type()))
            }
            Dictionary(key, _) => {
                self.node()?;
                self.buffer()?;
                self.values(key.primitive_width().unwrap_or(1))
            }
            _ => {
                self.node()?;
                self.buffer()?;
                self.values(t.primitive_width().unwrap_or(1))
            }
        }
    }
}

/// Refuse the types arrow accepts from a schema but cannot lay out (a
/// negative FixedSizeBinary width or FixedSizeList size panics in arrow-data).
fn check_types(name: &str, t: &DataType) -> Result<(), String> {
    match t {
        DataType::FixedSizeBinary(n) if *n < 0 => {
            Err(format!("field `{name}` has a negative byte width {n}"))
        }
        DataType::FixedSizeList(_, n) if *n < 0 => {
            Err(format!("field `{name}` has a negative list size {n}"))
        }
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => check_types(f.name(), f.data_type()),
        DataType::Struct(fields) => fields
            .iter()
            .try_for_each(|f| check_types(f.name(), f.data_type())),
        DataType::Union(fields, _) => fields
            .iter()
            .try_for_each(|(_, f)| check_types(f.name(), f.data_type())),
        DataType::Dictionary(_, values) => check_types(name, values),
        DataType::RunEndEncoded(ends, values) => {
            check_types(ends.name(), ends.data_type())?;
            check_types(values.name(), values.data_type())
        }
        _ => Ok(()),
    }
}

/// Whether `t` is, or has a child that is, dictionary-encoded.
fn has_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(_, values) => has_dictionary(values.data_type()),
        _ => false,
    }
}

/// Split a block into its flatbuffer header and body, as views of the map.
fn raw_block(bytes: &Bytes, block: &Block) -> Result<IpcBlock, String> {
    let (start, meta_len, body_len) = block_extent(block, bytes.len())?;
    let meta = bytes.slice(start..start + meta_len);
    // The metadata is prefixed by 0xFFFFFFFF and a little-endian length
    // (or, before format 0.15, by the length alone).
    let (prefix, flatbuffer_len): (usize, usize) = if meta.len() >= 8 && meta[..4] == [0xff; 4] {
        (
            8,
            u32::from_le_bytes([meta[4], meta[5], meta[6], meta[7]]) as usize,
        )
    } else if meta.len() >= 4 {
        (
            4,
            u32::from_le_bytes([meta[0], meta[1], meta[2], meta[3]]) as usize,
        )
    } else {
        return Err("IPC block metadata too short".into());
    };
    let header_end = prefix
        .checked_add(flatbuffer_len)
        .filter(|&end| end <= meta.len())
        .ok_or("IPC block metadata length out of range")?;
    Ok(IpcBlock {
        header: meta.slice(prefix..header_end),
        body: bytes.slice(start + meta_len..start + meta_len + body_len),
    })
}

/// A block's whole extent: metadata and body.
fn extent_bytes(bytes: &Bytes, block: &Block) -> Result<Bytes, String> {
    let (start, meta_len, body_len) = block_extent(block, bytes.len())?;
    Ok(bytes.slice(start..start + meta_len + body_len))
}

/// Offset, metadata length and body length of a block, checked against the file size.
fn block_extent(block: &Block, file_len: usize) -> Result<(usize, usize, usize), String> {
    let start = usize::try_from(block.offset()).map_err(|_| "negative block offset")?;
    let meta_len =
        usize::try_from(block.metaDataLength()).map_err(|_| "negative metadata length")?;
    let body_len = usize::try_from(block.bodyLength()).map_err(|_| "negative body length")?;
    start
        .checked_add(meta_len)
        .and_then(|e| e.checked_add(body_len))
        .filter(|&end| end <= file_len)
        .ok_or_else(|| format!("block at offset {start} runs past the end of the file"))?;
    Ok((start, meta_len, body_len))
}

fn block_buffer(buffer: &Buffer, block: &Block) -> Result<Buffer, String> {
    let (start, meta_len, body_len) = block_extent(block, buffer.len())?;
    Ok(buffer.slice_with_length(start, meta_len + body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last line of defence: a panic inside arrow becomes an error
    /// naming what was being decoded and arrow's message.
    #[test]
    fn a_panic_in_the_decoder_becomes_an_error() {
        let err = contained("record batch", || -> usize {
            panic!("offset {} too big", 7)
        })
        .unwrap_err();
        assert_eq!(
            err,
            "arrow failed to decode the record batch: offset 7 too big"
        );
        let err = contained("schema", || -> usize { panic!("plain") }).unwrap_err();
        assert_eq!(err, "arrow failed to decode the schema: plain");
        assert_eq!(contained("footer", || 5), Ok(5));
    }
}
