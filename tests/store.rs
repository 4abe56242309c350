//! The mapped store: opening, key order checks and the resume binary search.
mod common;

use embedstream::store::{Store, StoreError};

#[test]
fn position_after_finds_every_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.arrow");
    common::write_sample_file(&path, 1000, 4, 64);
    let store = Store::open(&path, None).unwrap();
    assert_eq!(store.num_rows(), 1000);
    assert_eq!(store.batches().len(), 16);
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
