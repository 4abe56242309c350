//! The binary as a user meets it: help, exit codes, messages.
use crate::common;

use std::process::{Command, Output};

fn embedstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(args)
        .env_remove("GRPC_PORT")
        .env_remove("CHUNK_SIZE")
        .output()
        .expect("run the binary")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn help_names_every_subcommand_and_explains_convert_flags() {
    let out = embedstream(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in ["convert", "serve", "stream", "upload", "inspect"] {
        assert!(help.contains(sub), "--help lacks {sub}:\n{help}");
    }
    let out = embedstream(&["convert", "--help"]);
    // Collapse the wrapping clap applies to long help lines.
    let help = text(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for flag in [
        "--output",
        "--force",
        "--format",
        "--batch-rows",
        "--key-column",
        "--keep-float64",
        "--vector-column",
    ] {
        assert!(help.contains(flag), "convert --help lacks {flag}:\n{help}");
    }
    assert!(help.contains("no code in it ever runs"), "{help}");
}

#[test]
fn convert_of_a_missing_file_fails_with_advice() {
    let out = embedstream(&["convert", "/nonexistent/embeddings.pkl"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: /nonexistent/embeddings.pkl: no such file; give the path of a pandas pickle"
    );
}

#[test]
fn inspect_summarises_a_converted_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.arrow");
    common::write_sample_file(&path, 100, 8, 32);
    let out = embedstream(&["inspect", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("rows:     100 in 4 record batches (4 to 32 rows each)"),
        "{report}"
    );
    assert!(
        report.contains("uuid                     FixedSizeBinary(16) [arrow.uuid] not null"),
        "{report}"
    );
    assert!(
        report.contains("order   strictly increasing (checked every row)"),
        "{report}"
    );
    assert!(
        report.contains("vectors:  `job_post_vectors`, dimension 8"),
        "{report}"
    );
    let first = embedstream::format::format_uuid(&common::key_for_row(0));
    assert!(
        report.contains(&format!("first   {first} (v7, 2023-11-14T22:13:20.000Z)")),
        "{report}"
    );
}

#[test]
fn inspect_refuses_a_file_that_is_not_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.arrow");
    std::fs::write(&path, "just some text, definitely not arrow").unwrap();
    let out = embedstream(&["inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("not an Arrow IPC file (missing the ARROW1 magic at its start or end)"),
        "{err}"
    );
}
