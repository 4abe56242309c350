//! Arbitrary bytes as a converted Arrow IPC file: open it (footer, schema,
//! dictionaries, batch headers), decode every batch as `inspect` does, then
//! open it as the server does (`Store`, key index) and encode every batch as
//! `RowChunk`s. Any input must end in Ok or a typed error, never a panic.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use embedstream::{
    rows::{RecruitTable, RowMapping},
    serve::encode::encode_chunk,
    store::{MappedIpcFile, Store},
};
use libfuzzer_sys::fuzz_target;

/// `Store` opens a path: one scratch file per fuzzing process, in memory
/// where /dev/shm exists.
fn scratch() -> std::path::PathBuf {
    let dir = std::path::Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("embedstream-fuzz-{}.arrow", std::process::id()))
}

fn guessed_mapping(schema: &arrow_schema::Schema) -> RowMapping {
    use arrow_schema::DataType;
    let strings: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..)
            )
        })
        .map(|f| f.name().clone())
        .collect();
    let pick = |i: usize| strings.get(i % strings.len().max(1)).cloned().unwrap_or_default();
    RowMapping {
        company_name: pick(0),
        exp_years: pick(1),
        english_level: pick(2),
        primary_keyword: pick(3),
        vector: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = MappedIpcFile::from_bytes(Bytes::copy_from_slice(data)) else {
        return;
    };
    // inspect-style: every batch, whole, then each column on its own.
    for b in 0..file.num_batches() {
        let _ = file.batch(b);
        for c in 0..file.schema().fields().len() {
            let _ = file.decode_column(b, c);
        }
        let _ = file.record_batch_block(b);
    }
    for block in file.dictionary_blocks() {
        let _ = block;
    }

    // serve-style: the store (key column and order), then RowChunks.
    let path = scratch();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let store = Store::open(&path, None);
    let _ = std::fs::remove_file(&path);
    let Ok(store) = store else {
        return;
    };
    let store = Arc::new(store);
    // The default column names, else any string columns the file has (the
    // fixtures are not recruit files): the encoder runs on every input whose
    // schema gives it something to read.
    let layout = RowMapping::default()
        .resolve(store.schema(), store.layout())
        .or_else(|_| guessed_mapping(store.schema()).resolve(store.schema(), store.layout()));
    let Ok(layout) = layout else {
        return;
    };
    let table = RecruitTable::new(store.clone(), layout);
    let mut out = Vec::new();
    for b in 0..store.num_batches() {
        let start = store.batch_start(b);
        let end = store.batch_start(b + 1);
        out.clear();
        let _ = encode_chunk(&table, start, end, &mut out);
    }
});
