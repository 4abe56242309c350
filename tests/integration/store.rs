//! The mapped store: opening, key order checks and the resume binary search.
use crate::common;

use embedstream::store::{Store, StoreError};

#[test]
fn position_after_finds_every_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.arrow");
    common::write_sample_file(&path, 1000, 4, 64);
    let store = Store::open(&path, None).unwrap();
    assert_eq!(store.num_rows(), 1000);
    assert_eq!(store.num_batches(), 16);
    for row in [0usize, 1, 63, 64, 65, 500, 998, 999] {
        let key = common::key_for_row(row);
        assert_eq!(store.key(row), &key[..]);
        assert_eq!(store.position_after(&key), row + 1, "after row {row}");
    }
    // Absent keys: before the first, between two rows, after the last.
    assert_eq!(store.position_after(&[0u8; 16]), 0);
    let mut between = common::key_for_row(500);
    between[15] = between[15].wrapping_add(1);
    assert!(between > common::key_for_row(500) && between < common::key_for_row(501));
    assert_eq!(store.position_after(&between), 501);
    assert_eq!(store.position_after(&[0xff; 16]), 1000);
}

#[test]
fn refuses_missing_and_non_arrow_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.arrow");
    let err = Store::open(&missing, None).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }));
    assert!(err.to_string().contains("embedstream convert"), "{err}");

    let junk = dir.path().join("junk.arrow");
    std::fs::write(&junk, b"this is not arrow at all, just text").unwrap();
    let err = Store::open(&junk, None).unwrap_err().to_string();
    assert!(err.contains("not an Arrow IPC file"), "{err}");
}

#[test]
fn refuses_a_missing_key_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.arrow");
    common::write_sample_file(&path, 10, 2, 4);
    let err = Store::open(&path, Some("uuid_missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no key column `uuid_missing`"), "{err}");
}

#[test]
fn a_damaged_batch_opens_and_fails_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.arrow");
    let damaged = common::write_damaged_sample_file(&path, 1000, 4, 64, 700);
    assert_eq!(damaged, 10);
    // Opening decodes only the key column: the damage is not seen.
    let store = Store::open(&path, None).unwrap();
    assert_eq!(store.num_rows(), 1000);
    assert_eq!(store.num_batches(), 16);
    assert_eq!(store.key(700), &common::key_for_row(700)[..]);
    // The batches around it decode; the damaged one names itself, every time.
    assert_eq!(store.batch(9).unwrap().num_rows(), 64);
    assert_eq!(store.batch(11).unwrap().num_rows(), 64);
    for _ in 0..2 {
        let err = store.batch(10).unwrap_err();
        assert_eq!(err.batch, 10);
        assert!(
            err.to_string()
                .starts_with("record batch 10 cannot be decoded ("),
            "{err}"
        );
        assert!(
            err.reason.contains("UTF8") || err.reason.contains("utf-8"),
            "{err}"
        );
    }
    let err = store.batch(16).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record batch 16 cannot be decoded (the file has 16 record batches)"
    );
    let decoded: Vec<bool> = store.iter_batches().map(|b| b.is_ok()).collect();
    assert_eq!(decoded.iter().filter(|ok| !**ok).count(), 1);
    assert!(!decoded[10]);
}
