//! An Arrow IPC file mapped into memory and decoded in place.
//!
//! The map is wrapped in `bytes::Bytes` (its owner), so every decoded buffer
//! and every raw block handed to Flight is a reference-counted view of the
//! map: nothing is read into the heap.

use std::{fs::File, path::Path, sync::Arc};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::{
    convert::try_fb_to_schema,
    reader::{read_footer_length, FileDecoder},
    root_as_footer, Block, MetadataVersion,
};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use memmap2::Mmap;

use super::StoreError;

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

/// A mapped, decoded Arrow IPC file.
#[derive(Debug)]
pub struct MappedIpcFile {
    bytes: Bytes,
    schema: SchemaRef,
    version: MetadataVersion,
    dictionaries: Vec<Block>,
    record_batches: Vec<Block>,
    batches: Vec<RecordBatch>,
}

impl MappedIpcFile {
    /// Map `path` and decode its footer, dictionaries and record batches.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
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
        // SAFETY: the map is read-only. Truncating the file while it is served
        // is outside what we can defend against (as for any mmap reader);
        // `convert` never rewrites a file in place (it renames a new one over it).
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

    /// Decode an IPC file held in `bytes` (a map, or a buffer in tests).
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
        let footer = root_as_footer(&bytes[footer_start..len - TRAILER])
            .map_err(|e| format!("unreadable footer: {e}"))?;
        let schema = Arc::new(
            try_fb_to_schema(footer.schema().ok_or("footer has no schema")?)
                .map_err(|e| format!("unreadable schema: {e}"))?,
        );
        let version = footer.version();
        let blocks = |list: Option<flatbuffers::Vector<'_, Block>>| -> Vec<Block> {
            list.map(|v| v.iter().copied().collect())
                .unwrap_or_default()
        };
        let dictionaries = blocks(footer.dictionaries());
        let record_batches = blocks(footer.recordBatches());

        let buffer = Buffer::from(bytes.clone());
        let mut decoder = FileDecoder::new(schema.clone(), version);
        for block in &dictionaries {
            let data = block_buffer(&buffer, block)?;
            decoder
                .read_dictionary(block, &data)
                .map_err(|e| format!("dictionary: {e}"))?;
        }
        let mut batches = Vec::with_capacity(record_batches.len());
        for (i, block) in record_batches.iter().enumerate() {
            let data = block_buffer(&buffer, block)?;
            if let Some(batch) = decoder
                .read_record_batch(block, &data)
                .map_err(|e| format!("record batch {i}: {e}"))?
            {
                batches.push(batch);
            }
        }
        Ok(MappedIpcFile {
            bytes,
            schema,
            version,
            dictionaries,
            record_batches,
            batches,
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

    /// Decoded record batches, in file order (views of the map).
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Size of the mapped file in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the mapped file is empty (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw dictionary messages, in file order.
    pub fn dictionary_blocks(&self) -> impl Iterator<Item = Result<IpcBlock, String>> + '_ {
        self.dictionaries.iter().map(|b| self.raw_block(b))
    }

    /// The raw record batch message of batch `i`.
    pub fn record_batch_block(&self, i: usize) -> Option<Result<IpcBlock, String>> {
        self.record_batches.get(i).map(|b| self.raw_block(b))
    }

    /// Split a block into its flatbuffer header and body, as views of the map.
    fn raw_block(&self, block: &Block) -> Result<IpcBlock, String> {
        let (start, meta_len, body_len) = block_extent(block, self.bytes.len())?;
        let meta = self.bytes.slice(start..start + meta_len);
        // The metadata is prefixed by 0xFFFFFFFF and a little-endian length
        // (or, before format 0.15, by the length alone).
        let (prefix, flatbuffer_len): (usize, usize) = if meta.len() >= 8 && meta[..4] == [0xff; 4]
        {
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
            body: self
                .bytes
                .slice(start + meta_len..start + meta_len + body_len),
        })
    }
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
