//! What the binary writes: nothing breaks when stdout is a closed pipe
//! (`embedstream convert … | head -1`), and logs written to a file or pipe
//! carry no ANSI colour codes.
use crate::common;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use embedstream::serve::{Server, ServerConfig};

/// Run the binary with stdout a pipe whose reader is already closed.
fn with_closed_stdout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(args)
        .env("NO_COLOR", "")
        .stdin(Stdio::null())
        .stdout(common::closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn quiet_success(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(!stderr.contains("error"), "{what}: {stderr}");
}

fn sample_pickle() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample.pkl")
        .display()
        .to_string()
}

/// `convert` and `inspect` print a summary; with stdout closed they exit 0
/// without a word (println! panicked: "failed printing to stdout").
#[test]
fn convert_and_inspect_exit_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.arrow");
    let shown = out.display().to_string();
    let run = with_closed_stdout(&["convert", "--no-progress", &sample_pickle(), "-o", &shown]);
    quiet_success("convert", &run);
    assert!(out.exists(), "the file is written all the same");
    quiet_success("inspect", &with_closed_stdout(&["inspect", &shown]));
}

/// `stream` prints its report at the end; with stdout closed it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_exits_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.arrow");
    common::write_sample_file(&path, 100, 4, 16);
    let server = Server::spawn(ServerConfig::new(&path, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let run =
        tokio::task::spawn_blocking(move || with_closed_stdout(&["stream", "--server", &addr]))
            .await
            .unwrap();
    quiet_success("stream", &run);
    server.shutdown().await.unwrap();
}

/// A failure still says so when stdout is closed: only stdout's own broken
/// pipe is quiet.
#[test]
fn errors_are_still_reported_with_stdout_closed() {
    let run = with_closed_stdout(&["inspect", "/nonexistent/x.arrow"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr)
        .starts_with("error: /nonexistent/x.arrow: no such file"));
}

/// Logs captured from a pipe carry no escape byte, with or without
/// NO_COLOR (stderr is not a terminal here).
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.arrow");
    for no_color in [None, Some("1")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedstream"));
        cmd.args([
            "--log-level",
            "DEBUG",
            "convert",
            "--force",
            &sample_pickle(),
            "-o",
        ])
        .arg(&out)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let run = cmd.output().unwrap();
        assert!(run.status.success());
        assert!(!run.stderr.is_empty(), "some log lines to check");
        assert!(
            !run.stderr.contains(&0x1b),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
