//! `convert NEW.pkl --previous OLD.arrow --match-on id`: keys kept across a
//! re-export, checkpoints taken on OLD resuming on NEW, `--on-change renew`,
//! idempotence and every refusal.
//!
//! Inputs are protocol-5 pickles of a dict of lists, assembled here opcode by
//! opcode: a supported input the converter reads like any other (it is what
//! `pickle.dumps({"id": [...], ...}, protocol=5)` writes), so every value of
//! OLD and NEW is known exactly.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use arrow_array::{cast::AsArray, types::Float32Type};
use embedstream::{
    convert::{convert, refresh::OnChange, ConvertArgs, OutputFormat},
    format,
    store::Store,
};

/// One row of an export: id, company, vector (float64 in the pickle).
#[derive(Debug, Clone)]
struct Row {
    id: Option<String>,
    company: String,
    vector: Vec<f64>,
}

fn row(id: &str, company: &str, seed: f64) -> Row {
    Row {
        id: Some(id.to_string()),
        company: company.to_string(),
        vector: (0..4).map(|k| seed + k as f64 * 0.25).collect(),
    }
}

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X'); // BINUNICODE
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One cell of a dict-of-lists pickle.
enum Cell<'a> {
    Str(&'a str),
    Int(i32),
    None,
    Floats(&'a [f64]),
}

/// `pickle.dumps({name: [cells...], ...}, protocol=5)`, opcode by opcode.
fn pickle_columns(columns: &[(&str, Vec<Cell<'_>>)]) -> Vec<u8> {
    let mut p = vec![0x80, 5, b'}', b'(']; // PROTO 5, EMPTY_DICT, MARK
    for (name, cells) in columns {
        unicode(&mut p, name);
        p.extend_from_slice(b"]("); // EMPTY_LIST, MARK
        for cell in cells {
            match cell {
                Cell::Str(s) => unicode(&mut p, s),
                Cell::Int(i) => {
                    p.push(b'J'); // BININT
                    p.extend_from_slice(&i.to_le_bytes());
                }
                Cell::None => p.push(b'N'),
                Cell::Floats(xs) => {
                    p.extend_from_slice(b"](");
                    for x in *xs {
                        p.push(b'G'); // BINFLOAT, big-endian
                        p.extend_from_slice(&x.to_be_bytes());
                    }
                    p.push(b'e'); // APPENDS
                }
            }
        }
        p.push(b'e');
    }
    p.extend_from_slice(b"u."); // SETITEMS, STOP
    p
}

/// `pickle.dumps({"id": [...], "Company Name": [...], "vec": [[...], ...]}, protocol=5)`.
fn pickle(rows: &[Row]) -> Vec<u8> {
    pickle_named(rows, ["id", "Company Name", "vec"])
}

fn pickle_named(rows: &[Row], names: [&str; 3]) -> Vec<u8> {
    let ids = rows
        .iter()
        .map(|r| r.id.as_deref().map_or(Cell::None, Cell::Str))
        .collect();
    let companies = rows.iter().map(|r| Cell::Str(&r.company)).collect();
    let vectors = rows.iter().map(|r| Cell::Floats(&r.vector)).collect();
    pickle_columns(&[(names[0], ids), (names[1], companies), (names[2], vectors)])
}

fn write_pickle(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pickle(rows)).unwrap();
    path
}

fn args(input: &Path, output: &Path, previous: Option<&Path>) -> ConvertArgs {
    let mut a = ConvertArgs::new(input, Some(output.to_path_buf()));
    a.batch_rows = Some(3); // several batches on both sides
    if let Some(old) = previous {
        a.previous = Some(old.to_path_buf());
        a.match_on = Some("id".into());
    }
    a
}

/// What a converted file holds, row by row in file order.
#[derive(Debug, Clone, PartialEq)]
struct FileRow {
    key: [u8; 16],
    id: String,
    company: String,
    vector: Vec<f32>,
}

fn read_file(path: &Path) -> (Vec<FileRow>, HashMap<String, String>) {
    let store = Store::open(path, None).expect("keys strictly increasing, file valid");
    let schema = store.schema().clone();
    let (id, company, vec) = (
        schema.index_of("id").unwrap(),
        schema.index_of("Company Name").unwrap(),
        schema.index_of("vec").unwrap(),
    );
    let mut rows = Vec::new();
    for b in 0..store.num_batches() {
        let batch = store.batch(b).unwrap();
        let keys = store.batch_keys(b);
        let ids = batch.column(id).as_string::<i32>();
        let companies = batch.column(company).as_string::<i32>();
        let vectors = batch.column(vec).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            let v = vectors.value(i);
            rows.push(FileRow {
                key: keys.value(i).try_into().unwrap(),
                id: ids.value(i).to_string(),
                company: companies.value(i).to_string(),
                vector: v.as_primitive::<Float32Type>().values().to_vec(),
            });
        }
    }
    (rows, schema.metadata().clone().into())
}

fn narrowed(r: &Row) -> Vec<f32> {
    r.vector.iter().map(|&x| x as f32).collect()
}

fn is_v7(key: &[u8; 16]) -> bool {
    let u = uuid::Uuid::from_bytes(*key);
    u.get_version_num() == 7 && u.get_variant() == uuid::Variant::RFC4122
}

/// OLD: a0..a9. NEW: a2 and a5 removed, a3's company and a7's vector
/// changed, a8's vector changed below float32 precision (the same once
/// narrowed: not a change), n0 added in the middle and n1 at the end, and
/// the export order shuffled a little.
fn exports() -> (Vec<Row>, Vec<Row>) {
    let old: Vec<Row> = (0..10)
        .map(|i| row(&format!("a{i}"), &format!("Company {i}"), i as f64))
        .collect();
    let mut a3 = old[3].clone();
    a3.company = "Company 3 (renamed)".into();
    let mut a7 = old[7].clone();
    a7.vector[2] += 0.5;
    let mut a8 = old[8].clone();
    a8.vector[1] += 1e-12; // below float32 resolution at 8.25
    assert_eq!(narrowed(&a8), narrowed(&old[8]));
    let new = vec![
        old[1].clone(),
        old[0].clone(),
        a3,
        old[4].clone(),
        row("n0", "New Co 0", 100.0),
        old[6].clone(),
        a7,
        a8,
        old[9].clone(),
        row("n1", "New Co 1", 101.0),
    ];
    (old, new)
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    old_rows: Vec<Row>,
    new_rows: Vec<Row>,
    old: PathBuf,
    new_pkl: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (old_rows, new_rows) = exports();
    let old_pkl = write_pickle(&dir, "old.pkl", &old_rows);
    let new_pkl = write_pickle(&dir, "new.pkl", &new_rows);
    let old = dir.join("old.arrow");
    convert(&args(&old_pkl, &old, None)).unwrap();
    Fixture {
        _dir: tmp,
        dir,
        old_rows,
        new_rows,
        old,
        new_pkl,
    }
}

fn key_of(rows: &[FileRow], id: &str) -> [u8; 16] {
    rows.iter().find(|r| r.id == id).unwrap().key
}

#[test]
fn kept_added_removed_and_changed_rows_every_key_and_value_checked() {
    let f = fixture();
    let (old_file, old_meta) = read_file(&f.old);
    assert_eq!(old_meta[format::META_GENERATION], "1");
    // OLD as written: the pickle's rows in order.
    let old_ids: Vec<&str> = old_file.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        old_ids,
        (0..10).map(|i| format!("a{i}")).collect::<Vec<_>>()
    );
    for (file_row, row) in old_file.iter().zip(&f.old_rows) {
        assert_eq!(file_row.vector, narrowed(row));
    }

    let out = f.dir.join("new.arrow");
    let summary = convert(&args(&f.new_pkl, &out, Some(&f.old))).unwrap();
    let (new_file, meta) = read_file(&out);

    // Kept rows in OLD's order with OLD's keys, then added ones in pickle order.
    let ids: Vec<&str> = new_file.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a0", "a1", "a3", "a4", "a6", "a7", "a8", "a9", "n0", "n1"]
    );
    let old_last = old_file.last().unwrap().key;
    for r in &new_file {
        let source = f
            .new_rows
            .iter()
            .find(|s| s.id.as_deref() == Some(r.id.as_str()))
            .unwrap();
        assert_eq!(r.company, source.company, "{}", r.id);
        assert_eq!(r.vector, narrowed(source), "{}", r.id);
        assert!(is_v7(&r.key), "{}", r.id);
        match old_file.iter().find(|o| o.id == r.id) {
            Some(o) => assert_eq!(r.key, o.key, "{} keeps its key", r.id),
            None => assert!(r.key > old_last, "{} is after every OLD key", r.id),
        }
    }
    for pair in new_file.windows(2) {
        assert!(pair[0].key < pair[1].key);
    }
    assert_eq!(new_file.len(), f.new_rows.len());

    let s = summary.refresh.clone().unwrap();
    assert_eq!(
        (s.kept, s.added, s.removed, s.changed, s.generation),
        (8, 2, 2, 2, 2)
    );
    assert_eq!(s.previous.rows, 10);
    assert_eq!(s.previous.file, "old.arrow");
    assert_eq!(
        s.previous.last_key.as_deref(),
        Some(format::format_uuid(&old_last).as_str())
    );
    for (k, v) in [
        (format::META_GENERATION, "2"),
        (format::META_REFRESH_KEPT, "8"),
        (format::META_REFRESH_ADDED, "2"),
        (format::META_REFRESH_REMOVED, "2"),
        (format::META_REFRESH_CHANGED, "2"),
        (format::META_REFRESH_MATCH_ON, "id"),
        (format::META_REFRESH_ON_CHANGE, "keep"),
        (format::META_PREVIOUS_FILE, "old.arrow"),
        (format::META_PREVIOUS_ROWS, "10"),
    ] {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(
        meta[format::META_PREVIOUS_LAST_KEY],
        format::format_uuid(&old_last)
    );
    assert_eq!(meta[format::META_PREVIOUS_FOOTER_XXH3].len(), 16);
    let line = summary.to_string();
    assert!(
        line.contains(
            "8 kept (2 changed, keeping their keys), 2 added, 2 removed; this is generation 2."
        ),
        "{line}"
    );

    // A refresh of the refresh: generation 3, nothing changed, every key kept.
    let again = f.dir.join("again.arrow");
    let s3 = convert(&args(&f.new_pkl, &again, Some(&out)))
        .unwrap()
        .refresh
        .unwrap();
    assert_eq!(
        (s3.kept, s3.added, s3.removed, s3.changed, s3.generation),
        (10, 0, 0, 0, 3)
    );
    assert_eq!(read_file(&again).0, new_file);
}

#[test]
fn a_checkpoint_taken_on_old_resumes_on_new_with_exactly_the_new_rows_after_it() {
    let f = fixture();
    let (old_file, _) = read_file(&f.old);
    let out = f.dir.join("new.arrow");
    convert(&args(&f.new_pkl, &out, Some(&f.old))).unwrap();
    let (new_file, _) = read_file(&out);
    let store = Store::open(&out, None).unwrap();
    let old_position = |id: &str| old_file.iter().position(|r| r.id == id);
    // Checkpoints: inside the kept rows (a3), at the last kept row (a9), at a
    // removed row's key (a5), and before everything (a0).
    for id in ["a0", "a3", "a5", "a9"] {
        let checkpoint = key_of(&old_file, id);
        let cut = old_position(id).unwrap();
        // Expected: kept rows OLD had after the checkpoint, then every added row.
        let expected: Vec<&str> = new_file
            .iter()
            .filter(|r| match old_position(&r.id) {
                Some(p) => p > cut,
                None => true,
            })
            .map(|r| r.id.as_str())
            .collect();
        let start = store.position_after(&checkpoint);
        let got: Vec<&str> = new_file[start..].iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, expected, "checkpoint at {id}");
    }
    // At the last key of NEW: nothing after it.
    assert_eq!(
        store.position_after(&new_file.last().unwrap().key),
        new_file.len()
    );
}

#[test]
fn on_change_renew_gives_changed_rows_fresh_keys_with_the_added_ones() {
    let f = fixture();
    let (old_file, _) = read_file(&f.old);
    let out = f.dir.join("renew.arrow");
    let mut a = args(&f.new_pkl, &out, Some(&f.old));
    a.on_change = OnChange::Renew;
    let s = convert(&a).unwrap().refresh.unwrap();
    assert_eq!((s.kept, s.added, s.removed, s.changed), (8, 2, 2, 2));
    let (new_file, meta) = read_file(&out);
    assert_eq!(meta[format::META_REFRESH_ON_CHANGE], "renew");
    let ids: Vec<&str> = new_file.iter().map(|r| r.id.as_str()).collect();
    // Unchanged kept rows in OLD's order, then a3, n0, a7, n1 in pickle order.
    assert_eq!(
        ids,
        ["a0", "a1", "a4", "a6", "a8", "a9", "a3", "n0", "a7", "n1"]
    );
    let old_last = old_file.last().unwrap().key;
    for r in &new_file {
        let unchanged = ["a0", "a1", "a4", "a6", "a8", "a9"].contains(&r.id.as_str());
        if unchanged {
            assert_eq!(r.key, key_of(&old_file, &r.id));
        } else {
            assert!(r.key > old_last && is_v7(&r.key), "{}", r.id);
        }
    }
    // A consumer at OLD's last key pulls exactly the renewed and added rows.
    let store = Store::open(&out, None).unwrap();
    assert_eq!(store.position_after(&old_last), 6);
}

/// The schema metadata of an IPC file as its first message holds it (what a
/// stream reader sees) and as its footer holds it (what a file reader sees).
fn both_schemas_metadata(path: &Path) -> (HashMap<String, String>, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(4).position(|w| w == [0xff; 4]).unwrap();
    let stream =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(&bytes[at..]), None).unwrap();
    let file = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(&bytes), None).unwrap();
    (
        stream.schema().metadata().clone().into(),
        file.schema().metadata().clone().into(),
    )
}

#[test]
fn the_changed_count_is_the_same_over_any_batch_sizes_in_both_modes_and_both_schemas_hold_it() {
    // Kept rows are compared as their batch is written: over batch sizes
    // that cut OLD and NEW differently, both modes find a3 and a7 (and not a8).
    let f = fixture();
    let old_pkl = write_pickle(&f.dir, "old.pkl", &f.old_rows);
    for (old_batch, new_batch) in [(1, 1), (2, 5), (3, 4), (7, 2), (10, 10)] {
        let old = f.dir.join(format!("old-{old_batch}.arrow"));
        let mut a = args(&old_pkl, &old, None);
        a.batch_rows = Some(old_batch);
        a.force = true;
        convert(&a).unwrap();
        for on_change in [OnChange::Keep, OnChange::Renew] {
            let out = f.dir.join(format!("new-{old_batch}-{new_batch}.arrow"));
            let mut a = args(&f.new_pkl, &out, Some(&old));
            a.batch_rows = Some(new_batch);
            a.on_change = on_change;
            a.force = true;
            let s = convert(&a).unwrap().refresh.unwrap();
            let case = format!("OLD batches of {old_batch}, NEW of {new_batch}, {on_change:?}");
            assert_eq!(
                (s.kept, s.added, s.removed, s.changed),
                (8, 2, 2, 2),
                "{case}"
            );
            let (first, footer) = both_schemas_metadata(&out);
            assert_eq!(first, footer, "{case}");
            assert_eq!(footer[format::META_REFRESH_CHANGED], "2", "{case}");
            assert_eq!(footer, read_file(&out).1, "{case}");
            let bytes = std::fs::read(&out).unwrap();
            assert!(
                !bytes.windows(7).any(|w| w == b"settled"),
                "{case}: a placeholder reached the file"
            );
        }
    }
}

#[test]
fn when_new_columns_are_not_olds_every_kept_row_is_changed() {
    // NEW renames a column: every kept row changed; `keep` keeps their keys,
    // `renew` gives every row a fresh key, in pickle order.
    let f = fixture();
    let (old_file, _) = read_file(&f.old);
    let renamed = f.dir.join("renamed.pkl");
    std::fs::write(
        &renamed,
        pickle_named(&f.new_rows, ["id", "Company", "vec"]),
    )
    .unwrap();
    for on_change in [OnChange::Keep, OnChange::Renew] {
        let out = f.dir.join(format!("renamed-{on_change:?}.arrow"));
        let mut a = args(&renamed, &out, Some(&f.old));
        a.on_change = on_change;
        let s = convert(&a).unwrap().refresh.unwrap();
        assert_eq!(
            (s.kept, s.added, s.removed, s.changed),
            (8, 2, 2, 8),
            "{on_change:?}"
        );
        let store = Store::open(&out, None).unwrap();
        let meta = store.schema().metadata().clone();
        assert_eq!(meta[format::META_REFRESH_CHANGED], "8");
        let ids = store.schema().index_of("id").unwrap();
        let mut rows = Vec::new();
        for b in 0..store.num_batches() {
            let batch = store.batch(b).unwrap();
            let keys = store.batch_keys(b);
            for i in 0..batch.num_rows() {
                let key: [u8; 16] = keys.value(i).try_into().unwrap();
                rows.push((
                    batch.column(ids).as_string::<i32>().value(i).to_string(),
                    key,
                ));
            }
        }
        let got: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
        let old_last = old_file.last().unwrap().key;
        match on_change {
            OnChange::Keep => {
                assert_eq!(
                    got,
                    ["a0", "a1", "a3", "a4", "a6", "a7", "a8", "a9", "n0", "n1"]
                );
                for (id, key) in &rows[..8] {
                    assert_eq!(*key, key_of(&old_file, id), "{id}");
                }
            }
            OnChange::Renew => {
                let pickle_order: Vec<String> =
                    f.new_rows.iter().map(|r| r.id.clone().unwrap()).collect();
                assert_eq!(got, pickle_order);
                assert!(rows.iter().all(|(_, key)| *key > old_last && is_v7(key)));
            }
        }
    }
}

#[test]
fn the_same_pickle_against_the_same_old_gives_identical_keys() {
    let f = fixture();
    let one = f.dir.join("one.arrow");
    let two = f.dir.join("two.arrow");
    convert(&args(&f.new_pkl, &one, Some(&f.old))).unwrap();
    convert(&args(&f.new_pkl, &two, Some(&f.old))).unwrap();
    assert_eq!(read_file(&one).0, read_file(&two).0);
    // In place over OLD with --force (the documented refresh of a served path).
    let mut a = args(&f.new_pkl, &f.old, Some(&f.old));
    a.force = true;
    convert(&a).unwrap();
    assert_eq!(read_file(&f.old).0, read_file(&one).0);
}

/// Convert with `--previous` and expect a refusal containing `needle`, with
/// nothing written.
fn refused(a: &ConvertArgs, needle: &str) {
    let output = a.output_path();
    let existed = output.exists();
    let err = format!("{:#}", convert(a).unwrap_err());
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(output.exists(), existed, "nothing written: {err}");
    let litter: Vec<_> = std::fs::read_dir(output.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains("tmp"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
}

#[test]
fn every_refusal_names_the_problem_and_writes_nothing() {
    let f = fixture();
    let out = f.dir.join("out.arrow");
    let (old_rows, new_rows) = (f.old_rows.clone(), f.new_rows.clone());

    // Duplicate and null match values in NEW.
    let mut dup = new_rows.clone();
    dup[5].id = Some("a1".into());
    let p = write_pickle(&f.dir, "dup.pkl", &dup);
    refused(
        &args(&p, &out, Some(&f.old)),
        "dup.pkl has the value \"a1\" 2 times, at rows 0, 5; match values must be unique",
    );
    let mut null = new_rows.clone();
    null[3].id = None;
    let p = write_pickle(&f.dir, "null.pkl", &null);
    refused(
        &args(&p, &out, Some(&f.old)),
        "null.pkl has a null `id` at row 3",
    );

    // Duplicate and null match values in OLD: a kept value, and a removed one.
    for (name, twice, needle) in [
        (
            "dupkept",
            "a1",
            "dupkept.arrow has the value \"a1\" 2 times, at rows 1, 4",
        ),
        (
            "dupgone",
            "a2",
            "dupgone.arrow has the value \"a2\" 2 times, at rows 2, 4",
        ),
    ] {
        let mut rows = old_rows.clone();
        rows[4].id = Some(twice.into());
        let old = f.dir.join(format!("{name}.arrow"));
        convert(&args(
            &write_pickle(&f.dir, &format!("{name}.pkl"), &rows),
            &old,
            None,
        ))
        .unwrap();
        refused(&args(&f.new_pkl, &out, Some(&old)), needle);
    }
    let mut rows = old_rows.clone();
    rows[6].id = None;
    let old_null = f.dir.join("oldnull.arrow");
    convert(&args(
        &write_pickle(&f.dir, "oldnull.pkl", &rows),
        &old_null,
        None,
    ))
    .unwrap();
    refused(
        &args(&f.new_pkl, &out, Some(&old_null)),
        "oldnull.arrow has a null `id` at row 6",
    );

    // Match column missing on either side.
    let mut a = args(&f.new_pkl, &out, Some(&f.old));
    a.match_on = Some("nope".into());
    refused(&a, "--match-on nope: --previous");
    refused(&a, "has no column `nope`");
    let other = f.dir.join("other.arrow");
    // OLD with the id column under another name.
    let p = pickle_named(&old_rows[..3], ["ID", "Company Name", "vec"]);
    std::fs::write(f.dir.join("other.pkl"), p).unwrap();
    convert(&args(&f.dir.join("other.pkl"), &other, None)).unwrap();
    refused(
        &args(&f.new_pkl, &out, Some(&other)),
        "--match-on id: --previous",
    );
    let mut a2 = args(&f.dir.join("other.pkl"), &out, Some(&f.old));
    a2.match_on = Some("id".into());
    refused(&a2, "other.pkl has no column `id`");

    // NEW already carrying a key column.
    let p = pickle_named(&new_rows, ["id", "uuid", "vec"]);
    std::fs::write(f.dir.join("keyed.pkl"), p).unwrap();
    refused(
        &args(&f.dir.join("keyed.pkl"), &out, Some(&f.old)),
        "keyed.pkl: the input already has a key column `uuid`; with --previous the keys come from",
    );

    // Integer ids in NEW against text ids in OLD.
    let ints = (0..3).map(Cell::Int).collect();
    let companies = (0..3).map(|_| Cell::Str("c")).collect();
    let p = pickle_columns(&[("id", ints), ("Company Name", companies)]);
    std::fs::write(f.dir.join("ints.pkl"), p).unwrap();
    refused(
        &args(&f.dir.join("ints.pkl"), &out, Some(&f.old)),
        "the column holds text in",
    );
    refused(
        &args(&f.dir.join("ints.pkl"), &out, Some(&f.old)),
        "but integers in",
    );

    // OLD not an embedstream file: a pickle, and an Arrow file without our metadata.
    refused(
        &args(&f.new_pkl, &out, Some(&f.new_pkl)),
        "new.pkl: not an embedstream file",
    );
    let foreign = f.dir.join("foreign.arrow");
    {
        // A valid Arrow file with a UUID column, written by another tool.
        use std::sync::Arc;
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("uuid", arrow_schema::DataType::FixedSizeBinary(16), false),
            arrow_schema::Field::new("id", arrow_schema::DataType::Utf8, false),
        ]));
        let batch = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(
                    arrow_array::FixedSizeBinaryArray::try_from_iter([[7u8; 16]].into_iter())
                        .unwrap(),
                ),
                Arc::new(arrow_array::StringArray::from(vec!["a0"])),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(&foreign).unwrap();
        let mut w = arrow_ipc::writer::FileWriter::try_new(file, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    refused(
        &args(&f.new_pkl, &out, Some(&foreign)),
        "foreign.arrow: not an embedstream file",
    );

    // OLD's key column is not this conversion's.
    let mut a = args(&f.new_pkl, &out, Some(&f.old));
    a.key_column = "row_key".into();
    refused(
        &a,
        "its key column is `uuid` but this conversion uses `row_key`; pass --key-column uuid",
    );

    // Parquet output.
    let mut a = args(&f.new_pkl, &f.dir.join("out.parquet"), Some(&f.old));
    a.format = OutputFormat::Parquet;
    refused(&a, "a refresh writes Arrow IPC only");

    // Matching on a float column.
    let mut a = args(&f.new_pkl, &out, Some(&f.old));
    a.match_on = Some("vec".into());
    refused(&a, "holds FixedSizeList");
}

#[test]
fn the_cli_prints_the_refresh_summary_and_refuses_half_given_flags() {
    let f = fixture();
    let out = f.dir.join("cli.arrow");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_embedstream"))
            .arg("convert")
            .arg(&f.new_pkl)
            .arg("-o")
            .arg(&out)
            .arg("--no-progress")
            .args(extra)
            .output()
            .unwrap()
    };
    let old = f.old.to_str().unwrap();
    let o = run(&[
        "--previous",
        old,
        "--match-on",
        "id",
        "--on-change",
        "renew",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("Refreshed against old.arrow (generation 1, 10 rows, last key ")
            && stdout.contains(
                "on `id`: 8 kept (2 changed, given fresh keys), 2 added, 2 removed; this is generation 2."
            ),
        "{stdout}"
    );
    std::fs::remove_file(&out).unwrap();
    let o = run(&["--previous", old]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--match-on <COLUMN>"));
    let o = run(&["--match-on", "id"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--previous <OLD.arrow>"));
    assert!(!out.exists());
}

/// The same resume as the Batch Server does it: StreamEmbedding on the new
/// file with a checkpoint from the old one sends exactly the rows after it.
#[tokio::test]
async fn a_served_stream_resumes_on_new_from_a_checkpoint_taken_on_old() {
    use embedstream::{
        proto::{
            embedding_stream_service_client::EmbeddingStreamServiceClient, StreamEmbeddingRequest,
        },
        serve::{Server, ServerConfig},
    };
    let f = fixture();
    let (old_file, _) = read_file(&f.old);
    let out = f.dir.join("served.arrow");
    convert(&args(&f.new_pkl, &out, Some(&f.old))).unwrap();
    let (new_file, _) = read_file(&out);
    // The test export has one text column: it feeds every RecruitRow text field.
    let mut config = ServerConfig::new(&out, "127.0.0.1:0".parse().unwrap());
    for column in [
        &mut config.mapping.company_name,
        &mut config.mapping.exp_years,
        &mut config.mapping.english_level,
        &mut config.mapping.primary_keyword,
    ] {
        *column = "Company Name".into();
    }
    let server = Server::spawn(config).await.unwrap();
    let mut client =
        EmbeddingStreamServiceClient::connect(format!("http://{}", server.local_addr()))
            .await
            .unwrap();
    for id in ["a3", "a5", "a9"] {
        let checkpoint = key_of(&old_file, id);
        let mut stream = client
            .stream_embedding(StreamEmbeddingRequest {
                last_processed_uuid: format::format_uuid(&checkpoint),
                chunk_size: 2,
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            for r in chunk.rows {
                got.push((r.id, r.company_name, r.vector));
            }
        }
        let expected: Vec<_> = new_file
            .iter()
            .filter(|r| r.key > checkpoint)
            .map(|r| {
                (
                    format::format_uuid(&r.key),
                    r.company.clone(),
                    r.vector.clone(),
                )
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(got, expected, "checkpoint at {id}");
    }
}

/// (key, id, vector) of every row of a converted reference-layout file.
fn read_reference(path: &Path) -> Vec<([u8; 16], String, Vec<f32>)> {
    let store = Store::open(path, None).unwrap();
    let schema = store.schema().clone();
    let (id, vec) = (
        schema.index_of("id").unwrap(),
        schema.index_of("job_post_vectors").unwrap(),
    );
    let mut rows = Vec::new();
    for b in 0..store.num_batches() {
        let batch = store.batch(b).unwrap();
        let keys = store.batch_keys(b);
        let ids = batch.column(id).as_string::<i32>();
        let vectors = batch.column(vec).as_fixed_size_list();
        for i in 0..batch.num_rows() {
            rows.push((
                keys.value(i).try_into().unwrap(),
                ids.value(i).to_string(),
                vectors
                    .value(i)
                    .as_primitive::<Float32Type>()
                    .values()
                    .to_vec(),
            ));
        }
    }
    rows
}

/// A real pandas pickle (numpy float64 vectors, read as views of the
/// pickle): a refresh compares each element as it is written, narrowed to
/// float32. An edit below float32 resolution is not a change; an edit of one
/// float32 ulp is, and the new value is what the file holds.
#[test]
fn numpy_vectors_are_compared_as_written_after_narrowing() {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pandas/pandas-2.1.4/reference.to_pickle.pkl"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old_pkl = dir.join("old.pkl");
    std::fs::write(&old_pkl, &data).unwrap();
    let old = dir.join("old.arrow");
    convert(&args(&old_pkl, &old, None)).unwrap();
    let old_rows = read_reference(&old);
    assert_eq!(old_rows.len(), 40);

    // Row 5's third element (its expected.json value), found once in the pickle.
    let (row, id) = (5, "21d84fc1-efb0-5ba8-b137-2d4b9a57403c");
    let x: f64 = -0.1837830088184464;
    let needle = x.to_le_bytes();
    let at: Vec<usize> = (0..data.len() - 8)
        .filter(|&i| data[i..i + 8] == needle)
        .collect();
    assert_eq!(at.len(), 1, "the element is in the pickle once");
    assert_eq!(old_rows[row].1, id);
    assert_eq!(old_rows[row].2[2], x as f32);

    let refresh_with = |value: f64, name: &str| {
        let mut edited = data.clone();
        edited[at[0]..at[0] + 8].copy_from_slice(&value.to_le_bytes());
        let new_pkl = dir.join(format!("{name}.pkl"));
        std::fs::write(&new_pkl, edited).unwrap();
        let out = dir.join(format!("{name}.arrow"));
        let s = convert(&args(&new_pkl, &out, Some(&old)))
            .unwrap()
            .refresh
            .unwrap();
        (s, read_reference(&out))
    };

    // One float64 ulp: the same float32.
    let below = f64::from_bits(x.to_bits() + 1);
    assert_eq!(below as f32, x as f32);
    let (s, rows) = refresh_with(below, "below");
    assert_eq!((s.kept, s.added, s.removed, s.changed), (40, 0, 0, 0));
    assert_eq!(rows, old_rows);

    // One float32 ulp: changed, same key, the new value written.
    let bumped = f32::from_bits((x as f32).to_bits() + 1);
    let (s, rows) = refresh_with(f64::from(bumped), "bumped");
    assert_eq!((s.kept, s.added, s.removed, s.changed), (40, 0, 0, 1));
    for (r, (new, old)) in rows.iter().zip(&old_rows).enumerate() {
        assert_eq!(
            (new.0, &new.1),
            (old.0, &old.1),
            "row {r}: same key, same id"
        );
        if r == row {
            let mut want = old.2.clone();
            want[2] = bumped;
            assert_eq!(new.2, want);
        } else {
            assert_eq!(new.2, old.2, "row {r}");
        }
    }
}
