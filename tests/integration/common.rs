//! Helpers shared by the integration tests: synthetic embedstream files with
//! the reference layout (the same columns the Batch Server's RecruitRow reads).

use std::{collections::HashMap, fs::File, path::Path, sync::Arc};

use arrow_array::{
    builder::{FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder, StringBuilder},
    ArrayRef, RecordBatch,
};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use embedstream::{
    format,
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, RowChunk,
        StreamEmbeddingRequest,
    },
};

/// Deterministic UUID v7 keys, strictly increasing: row `i` gets timestamp
/// `1_700_000_000_000 + i` ms and random bits derived from `i`.
pub fn key_for_row(i: usize) -> [u8; 16] {
    let ms = 1_700_000_000_000u64 + i as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    let r = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    b[8..].copy_from_slice(&r.to_be_bytes());
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    b
}

/// The vector value of row `i`, component `j` (exactly representable in f32).
pub fn vector_value(i: usize, j: usize) -> f32 {
    (i as f32) + (j as f32) / 1024.0
}

/// Expected cell values of row `i`.
pub fn company(i: usize) -> String {
    format!("Company {}", i % 97)
}
pub fn exp_years(i: usize) -> String {
    format!("{}y", i % 11)
}
pub fn english_level(i: usize) -> &'static str {
    ["no_english", "pre", "intermediate", "upper", "fluent"][i % 5]
}
pub fn primary_keyword(i: usize) -> &'static str {
    ["Java", "Python", "Rust", "Go", "QA", "DevOps"][i % 6]
}

/// Write an embedstream-shaped Arrow IPC file: `id` (string), `Company Name`,
/// `Exp Years`, `English Level`, `Primary Keyword`, `job_post_vectors`
/// (FixedSizeList<Float32, dim>), `uuid` key; in batches of `batch_rows`.
pub fn write_sample_file(path: &Path, rows: usize, dim: usize, batch_rows: usize) {
    write_file(path, 0..rows, dim, batch_rows, &company, &[]);
}

/// [`write_sample_file`] with `Company Name` `name_len` characters long
/// (the row number, then `x`s).
pub fn write_long_names_file(
    path: &Path,
    rows: usize,
    dim: usize,
    batch_rows: usize,
    name_len: usize,
) {
    let long_name = |i: usize| {
        let mut name = i.to_string();
        name.extend(std::iter::repeat_n(
            'x',
            name_len.saturating_sub(name.len()),
        ));
        name
    };
    write_file(path, 0..rows, dim, batch_rows, &long_name, &[]);
}

/// [`write_sample_file`] holding rows `range` (row `i` as above, so two
/// ranges give two files with different rows), with extra schema metadata.
pub fn write_sample_rows(
    path: &Path,
    range: std::ops::Range<usize>,
    dim: usize,
    batch_rows: usize,
    extra_metadata: &[(&str, &str)],
) {
    write_file(path, range, dim, batch_rows, &company, extra_metadata);
}

fn write_file(
    path: &Path,
    range: std::ops::Range<usize>,
    dim: usize,
    batch_rows: usize,
    company: &dyn Fn(usize) -> String,
    extra_metadata: &[(&str, &str)],
) {
    let rows = range.len();
    let mut metadata = HashMap::from([
        (
            format::META_KEY_COLUMN.to_string(),
            format::DEFAULT_KEY_COLUMN.to_string(),
        ),
        (
            format::META_VECTOR_COLUMN.to_string(),
            "job_post_vectors".to_string(),
        ),
        (format::META_VECTOR_DIM.to_string(), dim.to_string()),
        (format::META_ROWS.to_string(), rows.to_string()),
        (format::META_KEYS_SORTED.to_string(), "true".to_string()),
    ]);
    metadata.extend(
        extra_metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let vector_type = DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        dim as i32,
    );
    let schema = Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("Company Name", DataType::Utf8, true),
            Field::new("Exp Years", DataType::Utf8, true),
            Field::new("English Level", DataType::Utf8, true),
            Field::new("Primary Keyword", DataType::Utf8, true),
            Field::new("job_post_vectors", vector_type, false),
            format::key_field(format::DEFAULT_KEY_COLUMN),
        ])
        .with_metadata(metadata),
    );
    let mut writer = FileWriter::try_new(File::create(path).unwrap(), &schema).unwrap();
    let mut start = 0;
    while start < rows || (rows == 0 && start == 0) {
        let end = (start + batch_rows.max(1)).min(rows);
        let mut id = StringBuilder::new();
        let mut company_b = StringBuilder::new();
        let mut exp = StringBuilder::new();
        let mut english = StringBuilder::new();
        let mut keyword = StringBuilder::new();
        let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32)
            .with_field(Arc::new(Field::new_list_field(DataType::Float32, false)));
        let mut keys = FixedSizeBinaryBuilder::new(16);
        for i in range.start + start..range.start + end {
            id.append_value(format!("v5-{i}"));
            company_b.append_value(company(i));
            exp.append_value(exp_years(i));
            english.append_value(english_level(i));
            keyword.append_value(primary_keyword(i));
            for j in 0..dim {
                vectors.values().append_value(vector_value(i, j));
            }
            vectors.append(true);
            keys.append_value(key_for_row(i)).unwrap();
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(company_b.finish()),
            Arc::new(exp.finish()),
            Arc::new(english.finish()),
            Arc::new(keyword.finish()),
            Arc::new(vectors.finish()),
            Arc::new(keys.finish()),
        ];
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
        if rows == 0 {
            break;
        }
        start = end;
    }
    writer.finish().unwrap();
}

/// [`write_sample_file`], then damage row `row`'s `id` string in the batch
/// body: its first digit becomes 0xFF, which is not UTF-8 (arrow refuses it
/// when it decodes that batch). `row` must not be the last of its batch.
/// Returns the damaged batch's index.
pub fn write_damaged_sample_file(
    path: &Path,
    rows: usize,
    dim: usize,
    batch_rows: usize,
    row: usize,
) -> usize {
    assert!(row % batch_rows != batch_rows - 1 && row + 1 < rows);
    write_sample_file(path, rows, dim, batch_rows);
    let mut bytes = std::fs::read(path).unwrap();
    // Values are stored back to back: "v5-699v5-700v5-701…".
    let needle = format!("v5-{row}v5-");
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "`{needle}` occurs once in the file");
    bytes[hits[0] + 3] = 0xff;
    std::fs::write(path, bytes).unwrap();
    row / batch_rows
}

/// How [`damage_batch_header`] damages the header of a record batch.
#[derive(Debug, Clone, Copy)]
pub enum HeaderDamage {
    /// `ff ff ff 7f` over bytes 3..7 of buffer 3's offset (the issue's
    /// "byte 1427" of a converted `data/sample.pkl`).
    HugeOffset,
    /// One bit flipped: bit 0 of byte 5 of buffer 4's offset (the issue's
    /// "byte 1445").
    BitFlip,
}

/// Damage the flatbuffer header of record batch `batch` of the Arrow IPC
/// file at `path` in place; the file position of the byte(s) changed.
pub fn damage_batch_header(path: &Path, batch: usize, damage: HeaderDamage) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 10..len - 6].try_into().unwrap()) as usize;
    let footer = arrow_ipc::root_as_footer(&bytes[len - 10 - footer_len..len - 10]).unwrap();
    let block = footer.recordBatches().unwrap().get(batch);
    let start = block.offset() as usize + 8; // continuation marker and length
    let message = arrow_ipc::root_as_message(&bytes[start..]).unwrap();
    let buffers = message.header_as_record_batch().unwrap().buffers().unwrap();
    // Each buffer is 16 bytes: offset (i64), then length (i64).
    let vector = buffers.bytes().as_ptr() as usize - bytes.as_ptr() as usize;
    let at = match damage {
        HeaderDamage::HugeOffset => {
            let at = vector + 3 * 16 + 3;
            bytes[at..at + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
            at
        }
        HeaderDamage::BitFlip => {
            let at = vector + 4 * 16 + 5;
            bytes[at] ^= 1;
            at
        }
    };
    std::fs::write(path, bytes).unwrap();
    at
}

/// The write end of a pipe whose read end is already closed: a child's
/// stdout that fails every write with EPIPE (`… | head -1` after `head` ended).
pub fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    writer.into()
}

/// Every RowChunk of one StreamEmbedding call resuming after `after`
/// (empty: from the first row) in chunks of `chunk`, or its error status.
pub async fn pull(
    client: &mut EmbeddingStreamServiceClient<tonic::transport::Channel>,
    after: &str,
    chunk: i32,
) -> Result<Vec<RowChunk>, tonic::Status> {
    let mut stream = client
        .stream_embedding(StreamEmbeddingRequest {
            last_processed_uuid: after.to_string(),
            chunk_size: chunk,
        })
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// The names of the entries of `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
