//! `embedstream convert A.pkl B.pkl … -o DIR/` and `inspect DIR/ [--verify]`:
//! a data set equal to its inputs' single-file conversions, the same bytes
//! for any `--jobs`, `--shard-rows` splitting, inputs of 0 rows, every
//! refusal with its message, atomic output (no litter after success, a
//! refusal, SIGTERM; a SIGKILL's temporary swept by the next convert), and
//! `inspect --verify` naming a damaged shard and batch.
use crate::common::names;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray};
use embedstream::{
    convert::{convert, ConvertArgs},
    format::manifest::{Manifest, MANIFEST_FILE},
};

fn pandas(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pandas")
        .join(path)
}

/// The same reference frame (40 rows, dim 8) as written by four pandas versions.
fn references() -> Vec<PathBuf> {
    [
        "pandas-1.5.3/reference.to_pickle.pkl",
        "pandas-2.2.3/reference.dump-p5.pkl",
        "pandas-3.1.1-nopyarrow/reference.to_pickle.pkl",
        "pandas-3.1.1-pyarrow/reference.dump-p2.pkl",
    ]
    .iter()
    .map(|p| pandas(p))
    .collect()
}

fn empty() -> PathBuf {
    pandas("pandas-2.1.4/empty.to_pickle.pkl")
}

enum Value<'a> {
    Int(i32),
    Str(&'a str),
}

/// `pickle.dumps({name: [values…]}, protocol=5)`, opcode by opcode.
fn dict_pickle(name: &str, values: &[Value<'_>]) -> Vec<u8> {
    let unicode = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X'); // BINUNICODE
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let mut p = vec![0x80, 5, b'}', b'(']; // PROTO 5, EMPTY_DICT, MARK
    unicode(&mut p, name);
    p.extend_from_slice(b"]("); // EMPTY_LIST, MARK
    for value in values {
        match value {
            Value::Int(i) => {
                p.push(b'J'); // BININT
                p.extend_from_slice(&i.to_le_bytes());
            }
            Value::Str(s) => unicode(&mut p, s),
        }
    }
    p.extend_from_slice(b"eu."); // APPENDS, SETITEMS, STOP
    p
}

fn embedstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(args)
        .output()
        .expect("run the binary")
}

/// `convert INPUTS -o OUT --no-progress EXTRA…`.
fn convert_cli(inputs: &[PathBuf], out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["convert".into()];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend([
        "-o".into(),
        out.display().to_string(),
        "--no-progress".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    embedstream(&args)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn refused(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every column of an Arrow file by name, its batches concatenated; and the
/// number of record batches.
fn read_columns(path: &Path) -> (BTreeMap<String, Vec<ArrayRef>>, usize) {
    let reader =
        arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    let mut columns: BTreeMap<String, Vec<ArrayRef>> = BTreeMap::new();
    let mut batches = 0;
    for batch in reader {
        let batch = batch.unwrap();
        batches += 1;
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            columns
                .entry(field.name().clone())
                .or_default()
                .push(column.clone());
        }
    }
    (columns, batches)
}

/// Every column of a data set, in shard order, each one array.
fn dataset_columns(dir: &Path) -> BTreeMap<String, ArrayRef> {
    let manifest = Manifest::read(dir).unwrap();
    let mut all: BTreeMap<String, Vec<ArrayRef>> = BTreeMap::new();
    for shard in &manifest.shards {
        for (name, parts) in read_columns(&dir.join(&shard.file)).0 {
            all.entry(name).or_default().extend(parts);
        }
    }
    concat_all(all)
}

fn concat_all(parts: BTreeMap<String, Vec<ArrayRef>>) -> BTreeMap<String, ArrayRef> {
    parts
        .into_iter()
        .map(|(name, arrays)| {
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            (name, arrow_select::concat::concat(&refs).unwrap())
        })
        .collect()
}

fn keys(column: &ArrayRef) -> Vec<[u8; 16]> {
    let keys = column
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    (0..keys.len())
        .map(|i| keys.value(i).try_into().unwrap())
        .collect()
}

/// A data set of four pickles (split into shards of 7 rows, batches of 3)
/// holds, column for column and row for row, what their single-file
/// conversions hold one after another; its keys are one strictly increasing
/// v7 sequence.
#[test]
fn a_data_set_equals_its_inputs_converted_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = references();
    let out = dir.path().join("ds");
    ok(&convert_cli(
        &inputs,
        &out,
        &["--shard-rows", "7", "--batch-rows", "3"],
    ));
    let dataset = dataset_columns(&out);

    let mut expected: BTreeMap<String, Vec<ArrayRef>> = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let single = dir.path().join(format!("single-{i}.arrow"));
        convert(&ConvertArgs::new(input, Some(single.clone()))).unwrap();
        for (name, parts) in read_columns(&single).0 {
            expected.entry(name).or_default().extend(parts);
        }
    }
    let expected = concat_all(expected);
    assert_eq!(
        dataset.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the same columns"
    );
    assert_eq!(dataset["uuid"].len(), 160);
    for (name, column) in &expected {
        if name == "uuid" {
            continue;
        }
        assert_eq!(
            dataset[name].to_data(),
            column.to_data(),
            "column `{name}` equal row for row"
        );
    }
    let keys = keys(&dataset["uuid"]);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert!(keys.iter().all(|k| k[6] >> 4 == 7), "version 7");
}

/// `--jobs 2` writes the very bytes `--jobs 1` writes, manifest included,
/// given the same key seed and time (and the output is not trivially equal:
/// four inputs, one of 0 rows, several shards each).
#[test]
fn parallel_and_sequential_conversions_write_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = references();
    inputs.insert(2, empty());
    let seed = [
        "--key-seed",
        "12345",
        "--key-time",
        "2026-11-30T12:00:00Z",
        "--shard-rows",
        "9",
    ];
    let mut outputs = Vec::new();
    for jobs in ["1", "2", "2"] {
        let out = dir.path().join(format!("ds-{}", outputs.len()));
        let mut extra = seed.to_vec();
        extra.extend(["--jobs", jobs]);
        let run = convert_cli(&inputs, &out, &extra);
        ok(&run);
        assert!(
            String::from_utf8_lossy(&run.stdout).contains(&format!("({jobs} job")),
            "{}",
            String::from_utf8_lossy(&run.stdout)
        );
        outputs.push(out);
    }
    let files = names(&outputs[0]);
    assert_eq!(
        files.len(),
        4 * 5 + 1 + 1,
        "5 shards per input, 1 empty, manifest"
    );
    for other in &outputs[1..] {
        assert_eq!(names(other), files);
        for file in &files {
            assert!(
                std::fs::read(outputs[0].join(file)).unwrap()
                    == std::fs::read(other.join(file)).unwrap(),
                "{file} differs between --jobs 1 and --jobs 2"
            );
        }
    }
    // A single-file conversion takes the same flags.
    let singles: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            let single = dir.path().join(format!("single-{i}.arrow"));
            let mut args = vec!["--key-seed", "12345", "--key-time", "2026-11-30T12:00:00Z"];
            args.extend(["--batch-rows", "7"]);
            ok(&convert_cli(&inputs[..1], &single, &args));
            std::fs::read(single).unwrap()
        })
        .collect();
    assert!(
        singles[0] == singles[1],
        "a seeded single file is reproducible"
    );
    // Another seed gives other keys: the seed is what makes it reproducible.
    let other = dir.path().join("other-seed");
    ok(&convert_cli(
        &inputs,
        &other,
        &[
            "--key-seed",
            "1",
            "--key-time",
            "2026-11-30T12:00:00Z",
            "--shard-rows",
            "9",
        ],
    ));
    assert_ne!(
        std::fs::read(other.join(MANIFEST_FILE)).unwrap(),
        std::fs::read(outputs[0].join(MANIFEST_FILE)).unwrap()
    );
}

/// `--shard-rows N` splits each input into ceil(rows / N) shards, named in
/// key order, their key ranges ordered and disjoint, each shard's file
/// holding the rows and batches the (valid) manifest lists.
#[test]
fn shard_rows_splits_each_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let inputs = references()[..2].to_vec();
    ok(&convert_cli(
        &inputs,
        &out,
        &["--shard-rows", "15", "--batch-rows", "4"],
    ));
    let manifest = Manifest::read(&out).unwrap();
    manifest.check().unwrap();
    let rows: Vec<u64> = manifest.shards.iter().map(|s| s.rows).collect();
    assert_eq!(rows, [15, 15, 10, 15, 15, 10]);
    assert_eq!(manifest.rows, 80);
    let mut previous_last: Option<[u8; 16]> = None;
    for (i, shard) in manifest.shards.iter().enumerate() {
        assert_eq!(shard.file, format!("shard-{i:05}.arrow"));
        let (first, last) = shard.key_range().unwrap();
        assert!(first < last);
        if let Some(p) = previous_last {
            assert!(p < first, "shard {i} starts after the one before ends");
        }
        previous_last = Some(last);
        let (columns, batches) = read_columns(&out.join(&shard.file));
        let shard_keys = keys(&concat_all(columns.clone())["uuid"]);
        assert_eq!(shard_keys.len() as u64, shard.rows);
        assert_eq!((shard_keys[0], *shard_keys.last().unwrap()), (first, last));
        assert_eq!(batches, shard.batches.len());
        assert_eq!(batches, (shard.rows as usize).div_ceil(4));
    }
    assert_eq!(names(dir.path()), ["ds"], "no temporary left beside it");
}

/// An input of 0 rows is one shard of 0 rows, without keys or batches, under
/// the data set's schema (its empty object columns have no type of their
/// own); a data set of only that input is valid too.
#[test]
fn an_input_of_zero_rows_is_one_empty_shard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let inputs = vec![empty(), references()[0].clone(), empty()];
    ok(&convert_cli(
        &inputs,
        &out,
        &["--vector-column", "job_post_vectors"],
    ));
    let manifest = Manifest::read(&out).unwrap();
    let rows: Vec<u64> = manifest.shards.iter().map(|s| s.rows).collect();
    assert_eq!(rows, [0, 40, 0]);
    for i in [0, 2] {
        let shard = &manifest.shards[i];
        assert!(shard.first_key.is_none() && shard.batches.is_empty());
    }
    // Every shard's schema is the manifest's: --verify checks it.
    let out_str = format!("{}/", out.display());
    ok(&embedstream(&["inspect", "--verify", &out_str]));

    let alone = dir.path().join("alone");
    // One input makes a data set when -o ends with `/`.
    let alone_dir = PathBuf::from(format!("{}/", alone.display()));
    ok(&convert_cli(&[empty()], &alone_dir, &["--shard-rows", "5"]));
    let manifest = Manifest::read(&alone).unwrap();
    assert_eq!(manifest.shards.len(), 1);
    assert_eq!(manifest.rows, 0);
}

#[test]
fn inputs_with_different_schemas_are_refused_naming_both_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let a = references()[0].clone();
    let b = pandas("pandas-2.2.3/kitchen_sink.to_pickle.pkl");
    let err = refused(&convert_cli(&[a.clone(), b.clone()], &out, &[]));
    assert!(
        err.contains(&format!(
            "{} and {} have different schemas: column 0 is `id` in {}",
            a.display(),
            b.display(),
            a.display()
        )),
        "{err}"
    );
    // Same names, another type: the column is named with both types.
    let ints = dir.path().join("ints.pkl");
    let texts = dir.path().join("texts.pkl");
    std::fs::write(&ints, dict_pickle("id", &[Value::Int(1), Value::Int(2)])).unwrap();
    std::fs::write(&texts, dict_pickle("id", &[Value::Str("a")])).unwrap();
    let err = refused(&convert_cli(
        &[ints.clone(), texts.clone(), ints.clone()],
        &out,
        &["--jobs", "2"],
    ));
    assert!(
        err.contains(&format!(
            "{} and {} have different schemas: column `id` is Int64 in {} and Utf8 in {}; every input of a data set must have the same columns",
            ints.display(),
            texts.display(),
            ints.display(),
            texts.display()
        )),
        "{err}"
    );
    std::fs::remove_file(ints).unwrap();
    std::fs::remove_file(texts).unwrap();
    assert_eq!(names(dir.path()), Vec::<String>::new(), "nothing left");
}

#[test]
fn every_refusal_says_why_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = references()[..2].to_vec();
    let out = dir.path().join("ds");

    let err = refused(&convert_cli(&inputs, &out, &["--shard-rows", "0"]));
    assert!(
        err.contains("--shard-rows 0: a shard holds at least 1 row"),
        "{err}"
    );

    let mut no_output = vec!["convert".to_string(), "--no-progress".into()];
    no_output.extend(inputs.iter().map(|p| p.display().to_string()));
    let no_output: Vec<&str> = no_output.iter().map(String::as_str).collect();
    let err = refused(&embedstream(&no_output));
    assert!(
        err.contains("several inputs make a data set: name its directory with -o DIR/"),
        "{err}"
    );

    let err = refused(&convert_cli(&inputs, &out, &["--jobs", "0"]));
    assert!(err.contains("--jobs 0: give at least 1"), "{err}");

    let err = refused(&convert_cli(
        &inputs,
        &out,
        &["--previous", "old.arrow", "--match-on", "id"],
    ));
    assert!(
        err.contains("--previous refreshes one file and cannot make a data set"),
        "{err}"
    );

    let err = refused(&convert_cli(&inputs[..1], &out, &["--shard-rows", "5"]));
    assert!(
        err.contains("--shard-rows splits a data set: give its directory with -o DIR/"),
        "{err}"
    );

    let err = refused(&convert_cli(&inputs, &out, &["--format", "parquet"]));
    assert!(
        err.contains("a data set is made of Arrow IPC shards"),
        "{err}"
    );

    // A failing input is named wherever it is (inputs stopped because of
    // it are not blamed); nothing is left behind.
    let ragged = pandas("pandas-2.1.4/ragged.to_pickle.pkl");
    for at in 0..4 {
        let mut with_ragged = references()[..3].to_vec();
        with_ragged.insert(at, ragged.clone());
        let err = refused(&convert_cli(&with_ragged, &out, &["--jobs", "2"]));
        assert!(
            err.contains(&format!("{}: cannot convert", ragged.display()))
                && err.contains("ragged"),
            "at {at}: {err}"
        );
    }
    let missing = dir.path().join("missing.pkl");
    let err = refused(&convert_cli(
        &[inputs[0].clone(), missing.clone()],
        &out,
        &[],
    ));
    assert!(
        err.contains(&format!("{}: no such file", missing.display())),
        "{err}"
    );
    assert_eq!(names(dir.path()), Vec::<String>::new(), "nothing left");

    // An existing file: refused without --force.
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep").unwrap();
    let err = refused(&convert_cli(&inputs, &file, &[]));
    assert!(
        err.contains(&format!(
            "{}: already exists; pass --force to replace it",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    // A directory that is not a data set: never replaced, --force or not.
    let other = dir.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("cat.jpg"), b"meow").unwrap();
    for force in [&[][..], &["--force"][..]] {
        let err = refused(&convert_cli(&inputs, &other, force));
        assert!(
            err.contains(&format!(
                "{}: exists and is not an embedstream data set (no manifest.json); refusing to replace it",
                other.display()
            )),
            "{err}"
        );
    }
    assert_eq!(names(&other), ["cat.jpg"]);

    // An existing data set: refused without --force, replaced with it.
    ok(&convert_cli(
        &inputs[..1],
        Path::new(&format!("{}/", out.display())),
        &["--jobs", "1"],
    ));
    let before = Manifest::read(&out).unwrap();
    let err = refused(&convert_cli(&inputs, &out, &[]));
    assert!(
        err.contains(&format!(
            "{}: already exists; pass --force to replace it",
            out.display()
        )),
        "{err}"
    );
    assert_eq!(Manifest::read(&out).unwrap(), before);
    ok(&convert_cli(&inputs, &out, &["--force"]));
    assert_eq!(Manifest::read(&out).unwrap().rows, 80);
    assert_eq!(
        names(dir.path()),
        ["ds", "file", "photos"],
        "the old data set is gone"
    );
    // --force over a file replaces it too.
    ok(&convert_cli(&inputs, &file, &["--force"]));
    assert!(file.join(MANIFEST_FILE).is_file());
    assert_eq!(names(dir.path()), ["ds", "file", "photos"]);
}

/// A convert that dies by SIGKILL leaves its hidden temporary directory;
/// the next convert into the same parent removes it (its process is gone),
/// but not one whose process is alive. SIGTERM removes it at once, files
/// and all (held once the directory is complete, before its rename).
#[test]
fn temporaries_are_removed_on_sigterm_and_swept_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = references()[..2].to_vec();
    let out = dir.path().join("ds");
    for (signal, left) in [(libc::SIGTERM, false), (libc::SIGKILL, true)] {
        let marker = dir.path().join("held");
        let _ = std::fs::remove_file(&marker);
        let mut child = Command::new(env!("CARGO_BIN_EXE_embedstream"))
            .arg("convert")
            .args(&inputs)
            .args(["-o", out.to_str().unwrap(), "--no-progress", "--jobs", "1"])
            .env("EMBEDSTREAM_TEST_HOLD_DIR_COMMIT", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // An event, not a timing threshold: the deadline only stops a hung test.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !marker.exists() {
            assert!(child.try_wait().unwrap().is_none(), "convert ended early");
            assert!(Instant::now() < deadline, "convert never reached the hook");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_file(&marker).unwrap();
        let temps: Vec<String> = names(dir.path())
            .into_iter()
            .filter(|n| n.starts_with(".ds.embedstream-"))
            .collect();
        assert_eq!(temps.len(), 1, "building in a hidden sibling: {temps:?}");
        let inside = names(&dir.path().join(&temps[0]));
        assert_eq!(inside.len(), 3, "two shards and the manifest: {inside:?}");
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        child.wait().unwrap();
        let after: Vec<String> = names(dir.path());
        assert_eq!(after == temps, left, "signal {signal}: left {after:?}");
    }
    // A temporary of a live process (this one) is not touched.
    let live = dir
        .path()
        .join(format!(".x.embedstream-{}-1.tmp", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    ok(&convert_cli(&inputs, &out, &[]));
    assert_eq!(
        names(dir.path()),
        [
            format!(".x.embedstream-{}-1.tmp", std::process::id()),
            "ds".into()
        ]
    );
    assert!(out.join(MANIFEST_FILE).is_file());
}

/// Byte `at` of `path`, inverted.
fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Offset of the middle of batch `i`'s body, from the file's footer.
fn batch_body_middle(path: &Path, i: usize) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    let footer_len =
        arrow_ipc::reader::read_footer_length(bytes[n - 10..].try_into().unwrap()).unwrap();
    let footer = arrow_ipc::root_as_footer(&bytes[n - 10 - footer_len..n - 10]).unwrap();
    let block = footer.recordBatches().unwrap().get(i);
    block.offset() as usize + block.metaDataLength() as usize + block.bodyLength() as usize / 2
}

#[test]
fn inspect_summarises_a_data_set_and_verify_names_the_damaged_shard() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    ok(&convert_cli(
        &references()[..2],
        &out,
        &["--shard-rows", "20", "--batch-rows", "8"],
    ));
    let dir_arg = format!("{}/", out.display());
    let report = embedstream(&["inspect", &dir_arg]);
    ok(&report);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(text.contains("(4 shards, 80 rows, "), "{text}");
    assert!(text.contains("shard-00003.arrow"), "{text}");
    assert!(text.contains("job_post_vectors"), "{text}");
    assert!(!text.contains("verified"), "{text}");
    let verified = embedstream(&["inspect", "--verify", &dir_arg]);
    ok(&verified);
    assert!(String::from_utf8_lossy(&verified.stdout).contains("verified: 4 shards"));

    // A flipped byte in a batch body: the shard and the batch are named.
    let damaged = dir.path().join("body");
    ok(&convert_cli(
        &references()[..2],
        &damaged,
        &["--shard-rows", "20", "--batch-rows", "8", "--key-seed", "3"],
    ));
    let shard = damaged.join("shard-00002.arrow");
    flip(&shard, batch_body_middle(&shard, 1));
    let err = refused(&embedstream(&[
        "inspect",
        "--verify",
        damaged.to_str().unwrap(),
    ]));
    assert!(
        err.contains(
            "shard 2 (shard-00002.arrow): batch 1: its XXH3-128 does not match the manifest"
        ),
        "{err}"
    );
    // The summary alone reads only the manifest.
    ok(&embedstream(&["inspect", damaged.to_str().unwrap()]));

    // A flipped byte in a shard's footer: that shard is named.
    let footer = dir.path().join("footer");
    ok(&convert_cli(
        &references()[..2],
        &footer,
        &["--shard-rows", "20"],
    ));
    let shard = footer.join("shard-00001.arrow");
    let len = std::fs::metadata(&shard).unwrap().len() as usize;
    flip(&shard, len - 10 - 8);
    let err = refused(&embedstream(&[
        "inspect",
        "--verify",
        footer.to_str().unwrap(),
    ]));
    assert!(err.contains("shard 1 (shard-00001.arrow): "), "{err}");
    assert!(err.contains("the data set is damaged"), "{err}");

    // --verify needs a data set.
    let err = refused(&embedstream(&[
        "inspect",
        "--verify",
        out.join("shard-00000.arrow").to_str().unwrap(),
    ]));
    assert!(
        err.contains("--verify checks a data set directory"),
        "{err}"
    );
}
