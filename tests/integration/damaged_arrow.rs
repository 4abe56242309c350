//! Damaged Arrow IPC files: headers arrow's decoder would trust (buffer
//! offsets past the body, a negative width in the footer schema) are refused
//! with a clear error by `inspect`, `Store::open`, `upload` and `serve`
//! (DATA_LOSS naming the batch), never a panic; and thousands of
//! deterministic mutants of a small file are opened and fully decoded
//! without one.
use crate::common::{self, HeaderDamage};

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use bytes::Bytes;
use embedstream::{
    rows::{RecruitTable, RowMapping},
    serve::encode::encode_chunk,
    store::{MappedIpcFile, Store},
};

/// `data/sample.pkl` converted by the binary into `dir`.
fn converted_sample(dir: &Path) -> PathBuf {
    let out = dir.join("s.arrow");
    let status = Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["convert", "--no-progress", "-o"])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample.pkl"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    out
}

fn inspect(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .arg("inspect")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "nothing is printed on stdout");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The reason a damaged header gives: read back from the damaged file.
fn outside_body_reason(path: &Path, damage: HeaderDamage, at: usize) -> String {
    let bytes = std::fs::read(path).unwrap();
    let (buffer, entry) = match damage {
        HeaderDamage::HugeOffset => (3, at - 3),
        HeaderDamage::BitFlip => (4, at - 5),
    };
    let word = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let (offset, length) = (word(entry), word(entry + 8));
    let file = MappedIpcFile::from_bytes(Bytes::from(bytes.clone())).unwrap();
    let body = file.record_batch_block(0).unwrap().unwrap().body.len();
    format!("buffer {buffer} (offset {offset}, length {length}) lies outside the {body}-byte body")
}

/// The two damaged headers (bytes 1427 and 1445 of a converted
/// `data/sample.pkl`): `inspect` panicked in arrow-buffer; now it exits 1
/// naming the batch and the buffer. `Store::open` (key column only) fails
/// the same way when the damage is in a buffer it reads, else opens.
#[test]
fn inspect_refuses_damaged_buffer_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let sample = converted_sample(dir.path());
    for damage in [HeaderDamage::HugeOffset, HeaderDamage::BitFlip] {
        let path = dir.path().join(format!("{damage:?}.arrow"));
        std::fs::copy(&sample, &path).unwrap();
        let at = common::damage_batch_header(&path, 0, damage);
        let reason = outside_body_reason(&path, damage, at);
        let (code, stderr) = inspect(&path);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: {}: record batch 0 cannot be decoded ({reason}); the file is damaged\n",
                path.display()
            )
        );
        let file = MappedIpcFile::open(&path).unwrap();
        for _ in 0..2 {
            let err = file.batch(0).unwrap_err();
            assert_eq!(err.batch, 0);
            assert_eq!(err.reason, reason);
        }
    }
}

/// Position of the byte width of the key column's FixedSizeBinary type in
/// the footer's schema.
fn key_width_position(bytes: &[u8]) -> usize {
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 10..len - 6].try_into().unwrap()) as usize;
    let footer_start = len - 10 - footer_len;
    let footer = arrow_ipc::root_as_footer(&bytes[footer_start..len - 10]).unwrap();
    let fields = footer.schema().unwrap().fields().unwrap();
    let key = fields.iter().find(|f| f.name() == Some("uuid")).unwrap();
    let table = key.type_as_fixed_size_binary().unwrap()._tab;
    let field = table.vtable().get(arrow_ipc::FixedSizeBinary::VT_BYTEWIDTH) as usize;
    assert_ne!(field, 0, "the byte width is written");
    let at = table.buf().as_ptr() as usize - bytes.as_ptr() as usize + table.loc() + field;
    assert_eq!(bytes[at..at + 4], 16i32.to_le_bytes());
    at
}

/// A negative FixedSizeBinary width in the footer schema panicked arrow-data
/// (a TryFromIntError unwrap) when a batch was decoded; now opening refuses
/// the file, for `inspect`, `Store::open` and `upload` alike.
#[test]
fn a_negative_width_in_the_footer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = converted_sample(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = key_width_position(&bytes);
    bytes[at..at + 4].copy_from_slice(&(-16i32).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let expected = format!(
        "{}: not an Arrow IPC file (unreadable schema: field `uuid` has a negative byte width -16); `embedstream convert` writes one",
        path.display()
    );
    let (code, stderr) = inspect(&path);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, format!("error: {expected}\n"));
    assert_eq!(Store::open(&path, None).unwrap_err().to_string(), expected);
}

/// Something deterministic and cheap that spreads over the file.
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// Open, decode every batch whole and by column, then as the server does
/// (store, RowChunks). Returns the errors' texts.
fn exercise(bytes: &[u8], scratch: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let file = match MappedIpcFile::from_bytes(Bytes::copy_from_slice(bytes)) {
        Ok(file) => file,
        Err(e) => return vec![e],
    };
    for b in 0..file.num_batches() {
        if let Err(e) = file.batch(b) {
            errors.push(e.to_string());
        }
        for c in 0..file.schema().fields().len() {
            if let Err(e) = file.decode_column(b, c) {
                errors.push(e.to_string());
            }
        }
    }
    std::fs::write(scratch, bytes).unwrap();
    let store = match Store::open(scratch, None) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            errors.push(e.to_string());
            return errors;
        }
    };
    let Ok(layout) = RowMapping::default().resolve(store.schema(), store.layout()) else {
        return errors;
    };
    let table = RecruitTable::new(store.clone(), layout);
    let mut out = Vec::new();
    if let Err(e) = encode_chunk(&table, 0, store.num_rows(), &mut out) {
        errors.push(e.to_string());
    }
    errors
}

/// 2,000 deterministic mutants of two small files (a recruit-shaped one and
/// a converted pandas fixture with dictionaries; half with one byte changed,
/// half with a 4-byte word overwritten by an extreme or random value), each opened and fully decoded: no panic, and no panic contained
/// either (the header checks catch every one before arrow sees it).
/// `EMBEDSTREAM_MUTANTS=N` and `EMBEDSTREAM_MUTANT_SEED=S` run a longer or
/// different campaign by hand (the default is what `cargo test` runs).
#[test]
fn two_thousand_mutants_decode_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.arrow");
    common::write_sample_file(&path, 24, 3, 8);
    // And a converted pandas fixture with dictionary (categorical) columns,
    // whose dictionary messages are checked too.
    let kitchen = dir.path().join("kitchen.arrow");
    let run = Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["convert", "--no-progress", "-o"])
        .arg(&kitchen)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/pandas/pandas-2.2.3/kitchen_sink.to_pickle.pkl"),
        )
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let originals = [
        std::fs::read(&path).unwrap(),
        std::fs::read(&kitchen).unwrap(),
    ];
    let file = MappedIpcFile::open(&kitchen).unwrap();
    assert!(
        file.dictionary_blocks().count() > 0,
        "the fixture has dictionaries"
    );
    for original in &originals {
        assert!(exercise(original, &dir.path().join("x.arrow")).is_empty());
    }
    let scratch = dir.path().join("mutant.arrow");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mutants = env("EMBEDSTREAM_MUTANTS", 2000);
    let mut state = env("EMBEDSTREAM_MUTANT_SEED", 7);
    let (mut refused, mut contained) = (0, Vec::new());
    for i in 0..mutants {
        let mut bytes = originals[i as usize % 2].clone();
        let at = lcg(&mut state) as usize % bytes.len();
        if (i / 2) % 2 == 0 {
            bytes[at] ^= (lcg(&mut state) as u8) | 1;
        } else {
            let at = at.min(bytes.len() - 4);
            let word: [u8; 4] = match (i / 4) % 4 {
                0 => [0xff, 0xff, 0xff, 0x7f],
                1 => [0, 0, 0, 0x80],
                2 => [0xff; 4],
                _ => (lcg(&mut state) as u32).to_le_bytes(),
            };
            bytes[at..at + 4].copy_from_slice(&word);
        }
        let errors = exercise(&bytes, &scratch);
        if !errors.is_empty() {
            refused += 1;
        }
        contained.extend(
            errors
                .into_iter()
                .filter(|e| e.contains("arrow failed to decode"))
                .map(|e| format!("mutant {i} at {at}: {e}")),
        );
    }
    assert!(contained.is_empty(), "{contained:#?}");
    // The mutants do reach the checks: most are refused somewhere.
    assert!(
        refused > mutants / 4,
        "only {refused} of {mutants} mutants refused"
    );
}
