//! `embedstream convert` end to end, as a user runs it: real pickles from
//! real pandas in, a file pyarrow-compatible file out; hostile pickles refused
//! with a message that names the reason, nothing run and nothing written.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use embedstream::store::Store;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn convert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .arg("convert")
        .args(args)
        .arg("--no-progress")
        .output()
        .expect("run the binary")
}

#[test]
fn hostile_pickles_are_refused_and_nothing_runs_or_is_written() {
    let expected: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(fixtures().join("hostile/expected.json")).unwrap())
            .unwrap();
    assert!(expected.len() >= 30, "the hostile set is there");
    let canary = Path::new("/tmp/embedstream-pwned");
    let _ = std::fs::remove_file(canary);
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, needle) in &expected {
        let out_path = dir.path().join(format!("{name}.arrow"));
        let input = fixtures().join("hostile").join(name);
        let out = convert(&[input.to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || !stderr.contains(needle.as_str()) || out_path.exists() {
            failures.push(format!(
                "{name}: exit {:?}, wanted {needle:?} in: {}",
                out.status.code(),
                stderr.trim()
            ));
        }
    }
    assert!(!canary.exists(), "a hostile pickle ran code");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no output or temporary file is left behind: {leftovers:?}"
    );
    assert!(
        failures.is_empty(),
        "{} refusals wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_reference_layout_converts_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut converted = 0;
    for combo in std::fs::read_dir(fixtures().join("pandas")).unwrap() {
        let combo = combo.unwrap().path();
        if !combo.is_dir() {
            continue;
        }
        for writer in ["to_pickle", "dump-p2", "dump-p4", "dump-p5"] {
            let input = combo.join(format!("reference.{writer}.pkl"));
            let output = dir.path().join(format!(
                "{}-{writer}.arrow",
                combo.file_name().unwrap().to_string_lossy()
            ));
            let out = convert(&[input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                input.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let summary = String::from_utf8_lossy(&out.stdout);
            assert!(summary.contains("40 rows × 7 columns"), "{summary}");
            assert!(
                summary.contains("vectors `job_post_vectors`: 8 × Float32"),
                "{summary}"
            );
            let store = Store::open(&output, None).unwrap();
            assert_eq!(store.num_rows(), 40);
            assert_eq!(store.layout().vector_dim, 8);
            converted += 1;
        }
    }
    assert_eq!(converted, 20, "5 pandas versions × 4 writers");
}

#[test]
fn a_ragged_vector_column_is_refused_naming_column_row_and_lengths() {
    let input = fixtures().join("pandas/pandas-2.1.4/ragged.to_pickle.pkl");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("r.arrow");
    let out = convert(&[input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["job_post_vectors", "ragged", "row 5", "7", "8"] {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
    assert!(!output.exists());
}

#[test]
fn keep_float64_and_parquet_flags() {
    let input = fixtures().join("pandas/pandas-2.1.4/reference.to_pickle.pkl");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("r64.arrow");
    let out = convert(&[
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--keep-float64",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 × Float64"));
    let parquet = dir.path().join("r.parquet");
    let out = convert(&[
        input.to_str().unwrap(),
        "-o",
        parquet.to_str().unwrap(),
        "--format",
        "parquet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&std::fs::read(&parquet).unwrap()[..4], b"PAR1");
}
