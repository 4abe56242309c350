//! The converter's back half: columns → key → atomically written file, read
//! back through the mapped store (IPC) and the parquet reader.
use std::{path::Path, sync::Arc};

use arrow_array::{
    builder::{FixedSizeListBuilder, Float32Builder},
    Array, ArrayRef, FixedSizeBinaryArray, Int64Array, StringArray,
};
use embedstream::{
    convert::{self, write::Table, ConvertArgs, OutputFormat},
    format::{self, FileLayout},
    frame::{ColumnData, Frame, FrameColumn},
    progress::{Progress, ProgressMode, Unit},
    store::Store,
};

fn vectors(rows: usize, dim: usize) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
    for i in 0..rows {
        for j in 0..dim {
            b.values().append_value(i as f32 + j as f32 / 8.0);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn frame(rows: usize) -> Frame {
    let names: Vec<Option<String>> = (0..rows)
        .map(|i| (i % 7 != 3).then(|| format!("Company {i}")))
        .collect();
    Frame {
        rows,
        columns: vec![
            FrameColumn {
                name: "id".into(),
                data: ColumnData::Array(Arc::new(StringArray::from(names.clone()))),
            },
            FrameColumn {
                name: "n".into(),
                data: ColumnData::Array(Arc::new(Int64Array::from_iter_values(0..rows as i64))),
            },
            FrameColumn {
                name: "job_post_vectors".into(),
                data: ColumnData::Array(vectors(rows, 4)),
            },
        ],
    }
}

fn write(
    table: &Table,
    out: &Path,
    format: OutputFormat,
    batch_rows: u32,
) -> convert::write::Written {
    let mut args = ConvertArgs::new("in.pkl", Some(out.to_path_buf()));
    args.format = format;
    args.batch_rows = Some(batch_rows);
    convert::write::write(
        table,
        out,
        &args,
        &Progress::new("t", None, Unit::Rows, ProgressMode::Hidden),
    )
    .unwrap()
}

#[test]
fn ipc_file_round_trips_through_the_store_with_a_sorted_v7_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.arrow");
    let table = Table::from_frame(frame(1000), "uuid", None, Path::new("/x/in.pkl")).unwrap();
    let written = write(&table, &out, OutputFormat::Ipc, 128);
    assert_eq!(written.batches, 8);

    let store = Store::open(&out, None).unwrap();
    assert_eq!(store.num_rows(), 1000);
    let schema = store.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["id", "n", "job_post_vectors", "uuid"],
        "columns keep their order; the key comes last"
    );
    let meta = schema.metadata();
    assert_eq!(meta[format::META_KEY_COLUMN], "uuid");
    assert_eq!(meta[format::META_VECTOR_COLUMN], "job_post_vectors");
    assert_eq!(meta[format::META_VECTOR_DIM], "4");
    assert_eq!(meta[format::META_ROWS], "1000");
    assert_eq!(meta[format::META_SOURCE], "in.pkl");
    assert_eq!(meta[format::META_KEYS_SORTED], "true");
    assert_eq!(
        schema.field(3).metadata()[format::EXTENSION_NAME_KEY],
        format::UUID_EXTENSION_NAME
    );
    let layout = FileLayout::from_schema(schema, None).unwrap();
    assert_eq!(
        (layout.key_index, layout.vector_index, layout.vector_dim),
        (3, Some(2), 4)
    );

    // Every key is v7 and strictly increasing, every value as written.
    let mut previous: Option<Vec<u8>> = None;
    for row in 0..1000 {
        let key = store.key(row).to_vec();
        assert_eq!(uuid::Uuid::from_slice(&key).unwrap().get_version_num(), 7);
        if let Some(p) = &previous {
            assert!(p < &key, "row {row}");
        }
        previous = Some(key);
    }
    let (b, i) = store.locate(704);
    let batch = store.batch(b).unwrap();
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(ids.value(i), "Company 704");
    assert!(!ids.is_null(i));
    let first_ids = store
        .batch(0)
        .unwrap()
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert!(first_ids.is_null(3), "None stays null");
    let v = batch
        .column(2)
        .as_any()
        .downcast_ref::<arrow_array::FixedSizeListArray>()
        .unwrap()
        .value(i);
    let v = v
        .as_any()
        .downcast_ref::<arrow_array::Float32Array>()
        .unwrap();
    assert_eq!(v.values(), &[704.0, 704.125, 704.25, 704.375]);
}

#[test]
fn parquet_output_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let table = Table::from_frame(frame(300), "uuid", None, Path::new("in.pkl")).unwrap();
    write(&table, &out, OutputFormat::Parquet, 100);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&out).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 300);
    let keys = batches[0]
        .column_by_name("uuid")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert_eq!(keys.value_length(), 16);
}

#[test]
fn an_existing_v7_key_is_kept_so_converting_twice_never_rekeys() {
    let first = Table::from_frame(frame(50), "uuid", None, Path::new("a.pkl")).unwrap();
    let keys = first
        .batch(0, 50)
        .unwrap()
        .column_by_name("uuid")
        .unwrap()
        .clone();
    let strings: Vec<String> = {
        let k = keys
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap();
        (0..k.len())
            .map(|i| format::format_uuid(k.value(i)))
            .collect()
    };
    let mut again = frame(50);
    again.columns.insert(
        1,
        FrameColumn {
            name: "uuid".into(),
            data: ColumnData::Array(Arc::new(StringArray::from(strings))),
        },
    );
    let second = Table::from_frame(again, "uuid", None, Path::new("b.pkl")).unwrap();
    assert!(second.key_adopted());
    assert_eq!(
        second.schema().field(1).name(),
        "uuid",
        "the adopted key stays where it was"
    );
    assert_eq!(
        second.batch(0, 50).unwrap().column(1).as_ref(),
        keys.as_ref()
    );
}

#[test]
fn refusals_say_what_to_do() {
    // A clashing column.
    let mut clash = frame(3);
    clash.columns.push(FrameColumn {
        name: "uuid".into(),
        data: ColumnData::Array(Arc::new(Int64Array::from(vec![1, 2, 3]))),
    });
    let err = Table::from_frame(clash, "uuid", None, Path::new("a.pkl"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already has a column `uuid` that cannot be the key")
            && err.contains("--key-column"),
        "{err}"
    );

    // Two columns of one name.
    let mut twice = frame(3);
    twice.columns.push(FrameColumn {
        name: "n".into(),
        data: ColumnData::Array(Arc::new(Int64Array::from(vec![1, 2, 3]))),
    });
    let err = Table::from_frame(twice, "uuid", None, Path::new("a.pkl"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "the input has two columns named `n`; rename one before converting"
    );

    // A vector column that is not one.
    let err = Table::from_frame(frame(3), "uuid", Some("n"), Path::new("a.pkl"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "--vector-column `n` is Int64, not a column of equal-length numeric arrays"
    );
    let err = Table::from_frame(frame(3), "uuid", Some("zz"), Path::new("a.pkl"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "--vector-column `zz`: no such column");

    // Missing input, output already there, output = input.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pkl");
    let err = format!(
        "{:#}",
        convert::convert(&ConvertArgs::new(&missing, None)).unwrap_err()
    );
    assert!(
        err.ends_with("missing.pkl: no such file; give the path of a pandas pickle"),
        "{err}"
    );

    let input = dir.path().join("in.pkl");
    std::fs::write(&input, b"\x80\x05N.").unwrap();
    let existing = dir.path().join("in.arrow");
    std::fs::write(&existing, b"old").unwrap();
    let err = format!(
        "{:#}",
        convert::convert(&ConvertArgs::new(&input, None)).unwrap_err()
    );
    assert!(
        err.ends_with("in.arrow: already exists; pass --force to replace it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"old", "nothing is lost");
    let err = format!(
        "{:#}",
        convert::convert(&ConvertArgs::new(&input, Some(input.clone()))).unwrap_err()
    );
    assert!(
        err.ends_with("the output would overwrite the input; choose another path with -o"),
        "{err}"
    );
}

#[test]
fn an_empty_frame_writes_a_servable_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty.arrow");
    let table = Table::from_frame(
        Frame {
            rows: 0,
            columns: vec![],
        },
        "uuid",
        None,
        Path::new("e.pkl"),
    )
    .unwrap();
    write(&table, &out, OutputFormat::Ipc, 10);
    let store = Store::open(&out, None).unwrap();
    assert_eq!(store.num_rows(), 0);
    assert_eq!(store.position_after(&[0; 16]), 0);
}
