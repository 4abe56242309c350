//! `serve --data DIR/`: a data set directory of shards and its manifest.
//! Data sets are built here (shard files with arrow's FileWriter, the
//! manifest from `format::manifest`'s types), so these tests do not depend
//! on `convert -o DIR/`. Rows are those of `common` (row `i` has key
//! `key_for_row(i)`), so a data set over rows `0..n` must serve exactly what
//! a single file of those rows does.

use crate::common;

use std::{fs::File, ops::Range, path::Path, sync::Arc};

use arrow_array::{
    builder::{
        FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder, StringBuilder,
        StringDictionaryBuilder,
    },
    cast::AsArray,
    types::Int32Type,
    Array, ArrayRef, RecordBatch,
};
use arrow_flight::{
    flight_service_client::FlightServiceClient, FlightClient, FlightData, FlightDescriptor,
    FlightInfo, Ticket,
};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use embedstream::{
    dataset::{Dataset, DatasetOptions},
    format::{
        self,
        manifest::{
            block_checksum, schema_entries, sha256_hex, BatchEntry, Manifest, ShardEntry,
            MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
        },
    },
    proto::{
        embedding_stream_service_client::EmbeddingStreamServiceClient, RowChunk,
        StreamEmbeddingRequest,
    },
    serve::{ServeError, Server, ServerConfig},
    store::MappedIpcFile,
};
use futures::TryStreamExt;
use tonic::{transport::Channel, Code, Status};

const DIM: usize = 4;

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn uuid_text(key: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(key).hyphenated().to_string()
}

/// Write one shard: rows `range` of `common`, in batches of `batch_rows`
/// (a shard of 0 rows holds no batch, except `0..0`, which holds one batch
/// of 0 rows: both forms are tested). With `categorical`,
/// `Company Name` and `English Level` are dictionaries of strings, one
/// dictionary per shard holding its own values in order of appearance (so
/// two shards have different dictionaries).
fn write_shard(path: &Path, range: Range<usize>, batch_rows: usize, categorical: bool) {
    let text = |categorical: bool| {
        if categorical {
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        } else {
            DataType::Utf8
        }
    };
    let vector_type = DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, false)),
        DIM as i32,
    );
    let mut meta = format::FileMetadata::written(format::DEFAULT_KEY_COLUMN);
    meta.keys_sorted = true;
    let schema = Arc::new(
        Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("Company Name", text(categorical), true),
            Field::new("Exp Years", DataType::Utf8, true),
            Field::new("English Level", text(categorical), true),
            Field::new("Primary Keyword", DataType::Utf8, true),
            Field::new("job_post_vectors", vector_type, false),
            format::key_field(format::DEFAULT_KEY_COLUMN),
        ])
        .with_metadata(meta.to_map()),
    );
    let strings = |values: Vec<String>, categorical: bool| -> ArrayRef {
        if categorical {
            let mut b = StringDictionaryBuilder::<Int32Type>::new();
            values.iter().for_each(|v| b.append_value(v));
            Arc::new(b.finish())
        } else {
            let mut b = StringBuilder::new();
            values.iter().for_each(|v| b.append_value(v));
            Arc::new(b.finish())
        }
    };
    let rows = || range.clone();
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), DIM as i32)
        .with_field(Arc::new(Field::new_list_field(DataType::Float32, false)));
    let mut keys = FixedSizeBinaryBuilder::new(16);
    for i in rows() {
        for j in 0..DIM {
            vectors.values().append_value(common::vector_value(i, j));
        }
        vectors.append(true);
        keys.append_value(common::key_for_row(i)).unwrap();
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows().map(|i| format!("v5-{i}")).collect(), false),
        strings(rows().map(common::company).collect(), categorical),
        strings(rows().map(common::exp_years).collect(), false),
        strings(
            rows()
                .map(|i| common::english_level(i).to_string())
                .collect(),
            categorical,
        ),
        strings(
            rows()
                .map(|i| common::primary_keyword(i).to_string())
                .collect(),
            false,
        ),
        Arc::new(vectors.finish()),
        Arc::new(keys.finish()),
    ];
    // One dictionary per shard: every batch is a slice of the same arrays.
    let whole = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer = FileWriter::try_new(File::create(path).unwrap(), &schema).unwrap();
    let mut start = 0;
    while range.start == 0 || start < whole.num_rows() {
        let len = batch_rows.min(whole.num_rows() - start);
        writer.write(&whole.slice(start, len)).unwrap();
        start += len;
        if start >= whole.num_rows() {
            break;
        }
    }
    writer.finish().unwrap();
}

/// The manifest entry of the shard file `DIR/name`, as `convert` writes it.
fn shard_entry(dir: &Path, name: &str) -> (ShardEntry, Schema) {
    let path = dir.join(name);
    let file = MappedIpcFile::open(&path).unwrap();
    let batches: Vec<BatchEntry> = (0..file.num_batches())
        .map(|b| BatchEntry {
            rows: file.batch_num_rows(b).unwrap() as u64,
            xxh3: block_checksum(&file.record_batch_extent(b).unwrap().unwrap()),
        })
        .collect();
    let rows: u64 = batches.iter().map(|b| b.rows).sum();
    let store = embedstream::store::Store::open(&path, None).unwrap();
    let range = store
        .key_range()
        .map(|(a, b)| (format::format_uuid(a), format::format_uuid(b)));
    let entry = ShardEntry {
        file: name.to_string(),
        rows,
        first_key: range.as_ref().map(|r| r.0.clone()),
        last_key: range.map(|r| r.1),
        bytes: std::fs::metadata(&path).unwrap().len(),
        sha256: sha256_hex(&std::fs::read(&path).unwrap()),
        dictionaries: (0..file.num_dictionaries())
            .map(|d| block_checksum(&file.dictionary_extent(d).unwrap().unwrap()))
            .collect(),
        batches,
    };
    (entry, file.schema().as_ref().clone())
}

/// A data set in `dir`: one shard per range (`shard-0000N.arrow`) and its
/// manifest. Returns the manifest.
fn make_dataset(
    dir: &Path,
    shards: &[Range<usize>],
    batch_rows: usize,
    categorical: bool,
) -> Manifest {
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = Vec::new();
    let mut schema = None;
    for (i, range) in shards.iter().enumerate() {
        let name = format!("shard-{i:05}.arrow");
        write_shard(&dir.join(&name), range.clone(), batch_rows, categorical);
        let (entry, s) = shard_entry(dir, &name);
        schema = Some(s);
        entries.push(entry);
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        format_version: MANIFEST_VERSION,
        key_column: format::DEFAULT_KEY_COLUMN.into(),
        schema: schema_entries(&schema.unwrap()),
        rows: entries.iter().map(|e| e.rows).sum(),
        shards: entries,
    };
    write_manifest(dir, &manifest);
    manifest
}

fn write_manifest(dir: &Path, manifest: &Manifest) {
    std::fs::write(dir.join(MANIFEST_FILE), manifest.to_json()).unwrap();
}

/// Shards over rows 0..250 with a shard of 0 rows first (one empty batch),
/// in the middle and last (no batches); batches of 32 rows.
const SHARDS: [Range<usize>; 5] = [0..0, 0..100, 100..100, 100..250, 250..250];
const ROWS: usize = 250;

async fn serve(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::new(dir, local());
    tweak(&mut config);
    Server::spawn(config).await.unwrap()
}

/// Pull StreamEmbedding from the start in chunks of `chunk_size` until it
/// fails: the rows received before the error, and the error.
async fn rows_until_error(server: &Server, chunk_size: i32) -> (usize, tonic::Status) {
    let mut client = EmbeddingStreamServiceClient::new(channel(server).await);
    let mut stream = client
        .stream_embedding(StreamEmbeddingRequest {
            last_processed_uuid: String::new(),
            chunk_size,
        })
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => rows += chunk.rows.len(),
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return (rows, status),
        }
    }
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn pull(server: &Server, after: &str, chunk: i32) -> Result<Vec<RowChunk>, Status> {
    let mut client = EmbeddingStreamServiceClient::new(channel(server).await)
        .max_decoding_message_size(usize::MAX);
    common::pull(&mut client, after, chunk).await
}

/// Every row of `chunks` is row `from + k` of `common`, and they end at `to`.
fn check_rows(chunks: &[RowChunk], from: usize, to: usize) {
    let rows: Vec<_> = chunks.iter().flat_map(|c| &c.rows).collect();
    assert_eq!(rows.len(), to - from, "rows {from}..{to}");
    for (k, row) in rows.iter().enumerate() {
        let i = from + k;
        assert_eq!(row.id, uuid_text(common::key_for_row(i)), "row {i}");
        assert_eq!(row.company_name, common::company(i));
        assert_eq!(row.exp_years, (i % 11) as i32);
        assert_eq!(row.english_level, common::english_level(i));
        assert_eq!(row.primary_keyword, common::primary_keyword(i));
        let want: Vec<f32> = (0..DIM).map(|j| common::vector_value(i, j)).collect();
        assert_eq!(row.vector, want, "row {i}");
    }
}

#[tokio::test]
async fn stream_embedding_resumes_across_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &SHARDS, 32, false);
    let server = serve(&dir, |_| {}).await;

    // Everything, in chunks that cross shard boundaries.
    check_rows(&pull(&server, "", 70).await.unwrap(), 0, ROWS);
    // Before the first key.
    check_rows(
        &pull(&server, &uuid_text([0; 16]), 0).await.unwrap(),
        0,
        ROWS,
    );
    // At the last row of a shard (shard 1 ends at row 99).
    let after = uuid_text(common::key_for_row(99));
    check_rows(&pull(&server, &after, 33).await.unwrap(), 100, ROWS);
    // At a key between two shards (absent from both).
    let mut between = common::key_for_row(99);
    between[9..].copy_from_slice(&[0xff; 7]);
    assert!(between > common::key_for_row(99) && between < common::key_for_row(100));
    check_rows(
        &pull(&server, &uuid_text(between), 0).await.unwrap(),
        100,
        ROWS,
    );
    // Inside a shard, mid-batch.
    let after = uuid_text(common::key_for_row(150));
    check_rows(&pull(&server, &after, 0).await.unwrap(), 151, ROWS);
    // At the last row of all, and after the last key: empty, successful.
    let last = uuid_text(common::key_for_row(ROWS - 1));
    assert!(pull(&server, &last, 0).await.unwrap().is_empty());
    assert!(pull(&server, &uuid_text([0xff; 16]), 0)
        .await
        .unwrap()
        .is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_set_of_one_empty_shard_serves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    make_dataset(&dir, std::slice::from_ref(&(0..0)), 32, false);
    let server = serve(&dir, |_| {}).await;
    assert!(pull(&server, "", 0).await.unwrap().is_empty());
    let mut flight = FlightClient::new(channel(&server).await);
    let info = flight
        .get_flight_info(FlightDescriptor::new_path(vec!["empty".into()]))
        .await
        .unwrap();
    assert_eq!(info.total_records, 0);
    assert!(info.endpoint.is_empty());
    let got: Vec<RecordBatch> = flight
        .do_get(Ticket::new("all"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    server.shutdown().await.unwrap();
}

/// The refusal `Dataset::open` gives for the data set in `dir`.
fn refusal(dir: &Path) -> String {
    Dataset::open(dir, &DatasetOptions::default())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn every_manifest_refusal_names_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    let good = make_dataset(&dir, &[0..100, 100..180, 180..250], 32, false);
    Dataset::open(&dir, &DatasetOptions::default()).unwrap();
    let manifest_path = dir.join(MANIFEST_FILE).display().to_string();
    let refused_with = |m: &Manifest, want: &str| {
        write_manifest(&dir, m);
        let got = refusal(&dir);
        assert!(
            got.starts_with(&format!("{manifest_path}: {want}")),
            "want `{want}`, got `{got}`"
        );
    };
    let k = |i: usize| uuid_text(common::key_for_row(i));

    // File size.
    let mut m = good.clone();
    m.shards[1].bytes += 1;
    let size = good.shards[1].bytes;
    refused_with(
        &m,
        &format!(
            "shard 1 (shard-00001.arrow): the file has {size} bytes, the manifest lists {}",
            size + 1
        ),
    );
    // Schema.
    let mut m = good.clone();
    m.schema[1].data_type = "LargeUtf8".into();
    refused_with(&m, "shard 0 (shard-00000.arrow): its schema differs from the manifest's at column 1 (the file has `Company Name` Utf8, the manifest `Company Name` LargeUtf8)");
    // Row count (batches and totals agree with each other, not with the file).
    let mut m = good.clone();
    m.shards[2].rows += 1;
    m.shards[2].batches[0].rows += 1;
    m.rows += 1;
    refused_with(
        &m,
        "shard 2 (shard-00002.arrow): the file holds 70 rows, the manifest lists 71",
    );
    // Rows of one batch (the shard's total unchanged).
    let mut m = good.clone();
    m.shards[0].batches[0].rows -= 1;
    m.shards[0].batches[1].rows += 1;
    refused_with(
        &m,
        "shard 0 (shard-00000.arrow): its record batch 0 holds 32 rows, the manifest lists 31",
    );
    // Number of batches.
    let mut m = good.clone();
    let last = m.shards[0].batches.pop().unwrap();
    m.shards[0].batches[0].rows += last.rows;
    refused_with(
        &m,
        "shard 0 (shard-00000.arrow): the file holds 4 record batches, the manifest lists 3",
    );
    // Number of dictionaries.
    let mut m = good.clone();
    m.shards[1].dictionaries.push(block_checksum(b"x"));
    refused_with(
        &m,
        "shard 1 (shard-00001.arrow): the file holds 0 dictionaries, the manifest lists 1",
    );
    // Key range: the manifest's last key is not the file's.
    let mut m = good.clone();
    m.shards[1].last_key = Some(k(178));
    refused_with(
        &m,
        &format!(
            "shard 1 (shard-00001.arrow): its keys run {} to {}, the manifest lists {} to {}",
            k(100),
            k(179),
            k(100),
            k(178)
        ),
    );
    // Overlap, and shards listed out of key order.
    let mut m = good.clone();
    m.shards[1].first_key = Some(k(99));
    refused_with(&m, "shard 1 (shard-00001.arrow): its keys overlap or precede those of shard 0 (shard-00000.arrow)");
    let mut m = good.clone();
    m.shards.swap(0, 1);
    refused_with(&m, "shard 1 (shard-00000.arrow): its keys overlap or precede those of shard 0 (shard-00001.arrow)");
    // Version, format, JSON.
    let mut m = good.clone();
    m.format_version = 9;
    refused_with(&m, "format_version 9 is not supported by this embedstream");
    let mut m = good.clone();
    m.format = "other".into();
    refused_with(&m, "format `other` is not `embedstream.dataset`");
    std::fs::write(dir.join(MANIFEST_FILE), "{\"format\": ").unwrap();
    assert!(refusal(&dir).starts_with(&format!("{manifest_path}: not a data set manifest: ")));
    // No shards.
    let mut m = good.clone();
    m.shards.clear();
    m.rows = 0;
    refused_with(&m, "the data set lists no shards");
    // A missing shard file.
    write_manifest(&dir, &good);
    std::fs::rename(dir.join("shard-00002.arrow"), tmp.path().join("away")).unwrap();
    assert_eq!(
        refusal(&dir),
        format!(
            "{manifest_path}: shard 2 (shard-00002.arrow): no such file in {}",
            dir.display()
        )
    );
    std::fs::rename(tmp.path().join("away"), dir.join("shard-00002.arrow")).unwrap();
    // A key column other than the manifest's.
    let options = DatasetOptions {
        key_column: Some("id".into()),
        ..DatasetOptions::default()
    };
    let err = Dataset::open(&dir, &options).map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{manifest_path}: --key-column `id` differs from the data set's key column `uuid`")
    );
    // A directory without a manifest.
    std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
    assert!(refusal(&dir).starts_with(&format!("{manifest_path}: no such file; ")));
    // And the good manifest opens again.
    write_manifest(&dir, &good);
    Dataset::open(&dir, &DatasetOptions::default()).unwrap();
}

/// Byte offset in `path` of a block's body, the block chosen from the
/// footer by `pick` (a record batch or a dictionary).
fn body_offset(path: &Path, pick: impl Fn(&arrow_ipc::Footer<'_>) -> arrow_ipc::Block) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    let footer_len =
        arrow_ipc::reader::read_footer_length(bytes[len - 10..].try_into().unwrap()).unwrap();
    let footer = arrow_ipc::root_as_footer(&bytes[len - 10 - footer_len..len - 10]).unwrap();
    let block = pick(&footer);
    (block.offset() + i64::from(block.metaDataLength())) as usize
}

/// Byte offset in `path` of record batch `b`'s body.
fn batch_body_offset(path: &Path, b: usize) -> usize {
    body_offset(path, |f| *f.recordBatches().unwrap().get(b))
}

#[tokio::test]
async fn a_damaged_batch_is_data_loss_naming_the_shard_and_the_rest_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &[0..100, 100..200, 200..250], 32, false);
    // Flip one byte of the vectors of shard 1's batch 1 (rows 132..164): the
    // batch still decodes, only its checksum can tell.
    let shard = dir.join("shard-00001.arrow");
    let mut bytes = std::fs::read(&shard).unwrap();
    let offset = batch_body_offset(&shard, 1);
    let store = embedstream::store::Store::open(&shard, None).unwrap();
    let vectors = store.batch(1).unwrap().column(5).to_data();
    let values = &vectors.child_data()[0].buffers()[0];
    let file_start = store.file().record_batch_block(1).unwrap().unwrap().body;
    let within = values.as_ptr() as usize - file_start.as_ptr() as usize;
    drop(store);
    bytes[offset + within + 4] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();

    let server = serve(&dir, |_| {}).await;
    let want = "the served file is damaged: record batch 5 cannot be decoded (shard 1 (shard-00001.arrow), its record batch 1: its bytes do not match their checksum";
    // StreamEmbedding: every row before the batch, then DATA_LOSS.
    let (rows, status) = rows_until_error(&server, 10).await;
    assert_eq!(rows, 130);
    assert_eq!(status.code(), Code::DataLoss);
    assert!(status.message().starts_with(want), "{}", status.message());

    // Flight: `all` ends with the same DATA_LOSS.
    let mut flight = FlightClient::new(channel(&server).await);
    let err = flight
        .do_get(Ticket::new("all"))
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    let arrow_flight::error::FlightError::Tonic(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::DataLoss);
    assert!(status.message().starts_with(want), "{}", status.message());

    // The other shards still serve: their endpoints, and a resume past the damage.
    let info = flight
        .get_flight_info(FlightDescriptor::new_path(vec!["set".into()]))
        .await
        .unwrap();
    let tickets: Vec<Ticket> = info
        .endpoint
        .iter()
        .map(|e| e.ticket.clone().unwrap())
        .collect();
    assert_eq!(tickets.len(), 3);
    for (t, range) in [(0usize, 0..100usize), (2, 200..250)] {
        let got: Vec<RecordBatch> = flight
            .do_get(tickets[t].clone())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(keys_of(&got), keys(range));
    }
    let after = uuid_text(common::key_for_row(199));
    check_rows(&pull(&server, &after, 0).await.unwrap(), 200, 250);
    server.shutdown().await.unwrap();
}

fn keys(range: Range<usize>) -> Vec<[u8; 16]> {
    range.map(common::key_for_row).collect()
}

fn keys_of(batches: &[RecordBatch]) -> Vec<[u8; 16]> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("uuid").unwrap().as_fixed_size_binary();
            (0..column.len())
                .map(|i| column.value(i).try_into().unwrap())
                .collect::<Vec<[u8; 16]>>()
        })
        .collect()
}

/// Every row of `batches` as (key, company, English level), dictionaries
/// resolved to their strings.
fn text_rows(batches: &[RecordBatch]) -> Vec<([u8; 16], String, String)> {
    let strings = |b: &RecordBatch, name: &str| -> Vec<String> {
        let column =
            arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let column = column.as_string::<i32>();
        (0..column.len())
            .map(|i| column.value(i).to_string())
            .collect()
    };
    let keys = keys_of(batches);
    let company: Vec<String> = batches
        .iter()
        .flat_map(|b| strings(b, "Company Name"))
        .collect();
    let english: Vec<String> = batches
        .iter()
        .flat_map(|b| strings(b, "English Level"))
        .collect();
    keys.into_iter()
        .zip(company)
        .zip(english)
        .map(|((k, c), e)| (k, c, e))
        .collect()
}

fn expected_text_rows(range: Range<usize>) -> Vec<([u8; 16], String, String)> {
    range
        .map(|i| {
            (
                common::key_for_row(i),
                common::company(i),
                common::english_level(i).to_string(),
            )
        })
        .collect()
}

async fn info_of(flight: &mut FlightClient, name: &str) -> FlightInfo {
    flight
        .get_flight_info(FlightDescriptor::new_path(vec![name.into()]))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_partition_too_small_for_the_endpoint_cap_is_widened_and_still_covers_every_row_once() {
    // 3 shards, 10,500 rows: --partition-rows 1 would list 10,500 endpoints.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    let rows = 10_500;
    make_dataset(&dir, &[0..4_000, 4_000..4_001, 4_001..rows], 512, false);
    let server = serve(&dir, |c| c.partition_rows = Some(1)).await;
    let mut flight = FlightClient::new(channel(&server).await);
    let info = info_of(&mut flight, "set").await;
    assert!(
        info.endpoint.len() <= embedstream::wire::MAX_FLIGHT_ENDPOINTS,
        "{} endpoints",
        info.endpoint.len()
    );
    assert!(
        info.endpoint.len() > 3,
        "still split: {}",
        info.endpoint.len()
    );
    // Consecutive inclusive key ranges from row 0 to the last, none across a shard.
    let row_of: std::collections::HashMap<String, usize> = (0..rows)
        .map(|r| (uuid_text(common::key_for_row(r)), r))
        .collect();
    let mut next = 0;
    for endpoint in &info.endpoint {
        let ticket = String::from_utf8(endpoint.ticket.clone().unwrap().ticket.to_vec()).unwrap();
        let (first, last) = ticket
            .strip_prefix("range:")
            .and_then(|t| t.split_once(':'))
            .unwrap();
        let (first, last) = (row_of[first], row_of[last]);
        assert_eq!(first, next, "{ticket}");
        assert!(last >= first);
        let shard_of = |r: usize| (r >= 4_000) as u8 + (r > 4_000) as u8;
        assert_eq!(shard_of(first), shard_of(last), "{ticket} crosses a shard");
        let meta: serde_json::Value = serde_json::from_slice(&endpoint.app_metadata).unwrap();
        assert_eq!(meta["rows"].as_u64().unwrap() as usize, last + 1 - first);
        next = last + 1;
    }
    assert_eq!(next, rows);
    // One widened endpoint, read: its rows.
    let one = FlightInfo {
        endpoint: vec![info.endpoint[5].clone()],
        ..info.clone()
    };
    let parts = read_endpoints(&server, &one).await;
    let ticket =
        String::from_utf8(info.endpoint[5].ticket.clone().unwrap().ticket.to_vec()).unwrap();
    let (first, last) = ticket["range:".len()..].split_once(':').unwrap();
    assert_eq!(
        text_rows(&parts[0]),
        expected_text_rows(row_of[first]..row_of[last] + 1)
    );
    server.shutdown().await.unwrap();
}

/// Read every endpoint of `info` with a client of `server`; the rows of
/// each endpoint in turn.
async fn read_endpoints(server: &Server, info: &FlightInfo) -> Vec<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for endpoint in &info.endpoint {
        let mut flight = FlightClient::new(channel(server).await);
        let got: Vec<RecordBatch> = flight
            .do_get(endpoint.ticket.clone().unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        out.push(got);
    }
    out
}

#[tokio::test]
async fn flight_endpoints_cover_every_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &SHARDS, 32, true);
    let everything = expected_text_rows(0..ROWS);

    // Default: one endpoint per shard with rows, the server's own location.
    let server = serve(&dir, |_| {}).await;
    let mut flight = FlightClient::new(channel(&server).await);
    let info = info_of(&mut flight, "set").await;
    assert_eq!(info.total_records, ROWS as i64);
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != MANIFEST_FILE)
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(info.total_bytes, bytes as i64);
    assert_eq!(info.endpoint.len(), 2);
    let own = format!("grpc://{}", server.local_addr());
    for (endpoint, (shard, range)) in info.endpoint.iter().zip([
        ("shard-00001.arrow", 0..100usize),
        ("shard-00003.arrow", 100..250),
    ]) {
        let ticket = String::from_utf8(endpoint.ticket.clone().unwrap().ticket.to_vec()).unwrap();
        assert_eq!(
            ticket,
            format!(
                "range:{}:{}",
                uuid_text(common::key_for_row(range.start)),
                uuid_text(common::key_for_row(range.end - 1))
            )
        );
        let uris: Vec<&str> = endpoint.location.iter().map(|l| l.uri.as_str()).collect();
        assert_eq!(uris, [own.as_str()]);
        let meta: serde_json::Value = serde_json::from_slice(&endpoint.app_metadata).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"shard": shard, "rows": range.len()})
        );
    }
    let parts = read_endpoints(&server, &info).await;
    let got: Vec<_> = parts.iter().flat_map(|p| text_rows(p)).collect();
    assert_eq!(got, everything);
    // The same rows as StreamEmbedding sends.
    let streamed: Vec<String> = pull(&server, "", 0)
        .await
        .unwrap()
        .iter()
        .flat_map(|c| c.rows.iter().map(|r| r.id.clone()))
        .collect();
    let ids: Vec<String> = got.iter().map(|r| uuid_text(r.0)).collect();
    assert_eq!(streamed, ids);

    // `all` and `after:` over shards with different dictionaries.
    let all: Vec<RecordBatch> = flight
        .do_get(Ticket::new("all"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(text_rows(&all), everything);
    for after in [0usize, 50, 99, 100, 131, 200, ROWS - 1] {
        let ticket = Ticket::new(format!("after:{}", uuid_text(common::key_for_row(after))));
        let got: Vec<RecordBatch> = flight
            .do_get(ticket)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            text_rows(&got),
            expected_text_rows(after + 1..ROWS),
            "after {after}"
        );
    }
    // A range ticket cutting batches at both ends, across a shard boundary.
    let ticket = Ticket::new(format!(
        "range:{}:{}",
        uuid_text(common::key_for_row(40)),
        uuid_text(common::key_for_row(170))
    ));
    let got: Vec<RecordBatch> = flight
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(text_rows(&got), expected_text_rows(40..171));
    server.shutdown().await.unwrap();

    // --partition-rows 40 and --advertise: ranges of at most 40 rows within
    // a shard, every location listed.
    let advertise = vec![
        "grpc://127.0.0.2:50051".to_string(),
        "grpc://127.0.0.3:50051".to_string(),
    ];
    let server = serve(&dir, |c| {
        c.partition_rows = Some(40);
        c.advertise = advertise.clone();
    })
    .await;
    let mut flight = FlightClient::new(channel(&server).await);
    let info = info_of(&mut flight, "set").await;
    // Shard 1: 40+40+20; shard 3: 40+40+40+30.
    let sizes: Vec<u64> = info
        .endpoint
        .iter()
        .map(|e| {
            let meta: serde_json::Value = serde_json::from_slice(&e.app_metadata).unwrap();
            meta["rows"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(sizes, [40, 40, 20, 40, 40, 40, 30]);
    for endpoint in &info.endpoint {
        let uris: Vec<String> = endpoint.location.iter().map(|l| l.uri.clone()).collect();
        assert_eq!(uris, advertise);
    }
    let parts = read_endpoints(&server, &info).await;
    for (part, size) in parts.iter().zip(&sizes) {
        assert_eq!(
            part.iter().map(|b| b.num_rows()).sum::<usize>() as u64,
            *size
        );
    }
    let got: Vec<_> = parts.iter().flat_map(|p| text_rows(p)).collect();
    assert_eq!(got, everything);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_advertised_uri_is_refused_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &[0..5, 5..10], 32, false);
    let mut config = ServerConfig::new(&dir, local());
    config.advertise = vec!["grpc://127.0.0.2:1".into(), "grpc//oops".into()];
    match Server::spawn(config).await {
        Err(ServeError::Settings(message)) => assert!(
            message.starts_with("--advertise `grpc//oops`: not a URI (no `scheme://`); "),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Every FlightData message of a DoGet of `ticket`, as received.
async fn raw_do_get(server: &Server, ticket: &str) -> Vec<FlightData> {
    let mut client =
        FlightServiceClient::new(channel(server).await).max_decoding_message_size(usize::MAX);
    client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_replicas_answer_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &SHARDS, 32, true);
    let (a, b) = (serve(&dir, |_| {}).await, serve(&dir, |_| {}).await);
    let mid = uuid_text(common::key_for_row(120));
    let info = info_of(&mut FlightClient::new(channel(&a).await), "set").await;
    let mut tickets = vec!["all".to_string(), format!("after:{mid}")];
    tickets.extend(
        info.endpoint
            .iter()
            .map(|e| String::from_utf8(e.ticket.clone().unwrap().ticket.to_vec()).unwrap()),
    );
    for ticket in &tickets {
        let (x, y) = (raw_do_get(&a, ticket).await, raw_do_get(&b, ticket).await);
        assert!(x.len() > 1, "{ticket}");
        assert_eq!(x, y, "{ticket}");
    }
    for checkpoint in [String::new(), mid] {
        let (x, y) = (
            pull(&a, &checkpoint, 37).await.unwrap(),
            pull(&b, &checkpoint, 37).await.unwrap(),
        );
        assert!(!x.is_empty());
        assert_eq!(x, y);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_set_renamed_into_place_is_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &[0..60, 60..100], 32, false);
    let server = serve(&dir, |_| {}).await;
    let rows = || server.dataset().current().unwrap().num_rows();
    assert_eq!(rows(), 100);
    // A running stream keeps its generation.
    let before = pull(&server, "", 0).await.unwrap();
    check_rows(&before, 0, 100);

    // A damaged replacement is refused: a reload validates it whole, every
    // block's checksum included.
    let bad = tmp.path().join("bad");
    make_dataset(&bad, &[0..70, 70..140], 32, false);
    let shard = bad.join("shard-00001.arrow");
    let mut bytes = std::fs::read(&shard).unwrap();
    let offset = batch_body_offset(&shard, 0);
    bytes[offset + 1] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let err = Dataset::open(&bad, &DatasetOptions::default())
        .unwrap()
        .validate_fully()
        .unwrap_err();
    assert!(
        err.starts_with("record batch 3 cannot be decoded (shard 1 (shard-00001.arrow), its record batch 0: its bytes do not match their checksum"),
        "{err}"
    );
    // The new data set renamed into place (the old one moved away first).
    let good = tmp.path().join("good");
    make_dataset(&good, &[0..70, 70..120, 120..150], 32, false);
    std::fs::rename(&dir, tmp.path().join("old")).unwrap();
    std::fs::rename(&good, &dir).unwrap();
    crate::serve_e2e::eventually("the new data set is served", || rows() == 150).await;
    check_rows(&pull(&server, "", 0).await.unwrap(), 0, 150);
    server.shutdown().await.unwrap();
}

/// `embedstream serve --data DIR/` as a child process, its log in `log`.
struct Child {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Child {
    fn start(data: &Path, log: std::path::PathBuf) -> Child {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_embedstream"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data"])
            .arg(data)
            .env("LOG_LEVEL", "INFO")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Child { child, log }
    }

    /// Wait (bounded by a hang guard) until the log has `n` lines with `needle`.
    fn wait_log(&mut self, needle: &str, n: usize) -> String {
        for _ in 0..3000 {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().filter(|l| l.contains(needle)).nth(n - 1) {
                return line.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited ({status}) before logging `{needle}`:\n{text}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no `{needle}` in the log");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_a_data_set_directory_from_the_command_line_and_reload_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &[0..60, 60..100], 32, false);
    // `--data DIR/` with its trailing slash.
    let mut data = dir.clone().into_os_string();
    data.push("/");
    let mut server = Child::start(Path::new(&data), tmp.path().join("serve.log"));
    server.wait_log("serving StreamEmbedding", 1);
    // Replace the contents of the directory in place (no rename: only
    // SIGHUP can tell), then signal.
    std::fs::remove_dir_all(&dir).unwrap();
    make_dataset(&dir, &[0..70, 70..130], 32, false);
    let pid = libc::pid_t::try_from(server.child.id()).unwrap();
    // SAFETY: kill(2) only sends a signal, to our own child, not yet reaped
    // (wait_log just saw it running).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let line = server.wait_log("serving generation 2", 1);
    assert!(line.contains("rows=130"), "{line}");

    // A manifest that disagrees with a shard: the command refuses to start,
    // naming it.
    let mut manifest = Manifest::parse(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    manifest.shards[1].bytes += 1;
    write_manifest(&dir, &manifest);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shard 1 (shard-00001.arrow): the file has "),
        "{stderr}"
    );
}

/// Byte offset in `path` of dictionary block `d`'s body.
fn dictionary_body_offset(path: &Path, d: usize) -> usize {
    body_offset(path, |f| *f.dictionaries().unwrap().get(d))
}

#[tokio::test]
async fn a_damaged_dictionary_is_data_loss_naming_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    make_dataset(&dir, &[0..100, 100..200], 32, true);
    // The last byte of shard 1's first dictionary body (a string byte or
    // padding: either way only the checksum sees it).
    let shard = dir.join("shard-00001.arrow");
    let mut bytes = std::fs::read(&shard).unwrap();
    let start = dictionary_body_offset(&shard, 0);
    bytes[start + 8] ^= 0x01;
    std::fs::write(&shard, &bytes).unwrap();
    let server = serve(&dir, |_| {}).await;
    let want = "the served file is damaged: record batch 4 cannot be decoded (shard 1 (shard-00001.arrow), its record batch 0: dictionary 0: its bytes do not match their checksum";
    let (rows, status) = rows_until_error(&server, 25).await;
    assert_eq!(rows, 100);
    assert_eq!(status.code(), Code::DataLoss);
    assert!(status.message().starts_with(want), "{}", status.message());
    // Flight, resuming inside shard 1: its dictionaries are checked first.
    let after = uuid_text(common::key_for_row(150));
    let status = FlightServiceClient::new(channel(&server).await)
        .do_get(Ticket::new(format!("after:{after}")))
        .await
        .unwrap()
        .into_inner()
        .try_collect::<Vec<FlightData>>()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss);
    assert!(
        status.message().starts_with(
            "the served file is damaged: record batch 5 cannot be decoded (shard 1 (shard-00001.arrow), its record batch 1: dictionary 0: its bytes do not match their checksum"
        ),
        "{}",
        status.message()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_single_file_is_partitioned_with_partition_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("one.arrow");
    common::write_sample_file(&path, 100, DIM, 16);
    let server = serve(&path, |c| c.partition_rows = Some(30)).await;
    let info = info_of(&mut FlightClient::new(channel(&server).await), "one").await;
    let sizes: Vec<u64> = info
        .endpoint
        .iter()
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&e.app_metadata).unwrap()["rows"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(sizes, [30, 30, 30, 10]);
    let got: Vec<[u8; 16]> = read_endpoints(&server, &info)
        .await
        .iter()
        .flat_map(|p| keys_of(p))
        .collect();
    assert_eq!(got, keys(0..100));
    server.shutdown().await.unwrap();
}
