//! Output files are atomic and leave no litter: a `convert` killed mid-write
//! (SIGKILL, SIGTERM, SIGINT) leaves nothing beside the output and an
//! existing output untouched; output-error messages say their cause once.
use crate::common::names;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn sample_pickle() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample.pkl")
}

/// A `convert --force` over `out` that stops once its data is written and
/// synced, before it is put in place (the hook creates `marker` then).
fn held_convert(out: &Path, marker: &Path, named_temp: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedstream"));
    cmd.args(["convert", "--no-progress", "--force"])
        .arg(sample_pickle())
        .arg("-o")
        .arg(out)
        .env("EMBEDSTREAM_TEST_HOLD_COMMIT", marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if named_temp {
        cmd.env("EMBEDSTREAM_TEST_NAMED_TEMP", "1");
    } else {
        cmd.env_remove("EMBEDSTREAM_TEST_NAMED_TEMP");
    }
    let mut child = cmd.spawn().unwrap();
    // An event, not a timing threshold: the deadline only stops a hung test.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("convert ended before the hook: {status}");
        }
        assert!(Instant::now() < deadline, "convert never reached the hook");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn kill(child: &mut Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(signal),
        "ended by the signal: {status}"
    );
}

/// Killed with the data written but not yet in place: nothing but the
/// existing output is left in the directory, and it is unchanged. With the
/// unnamed temporary file that holds even for SIGKILL; the named fallback
/// removes its file on SIGTERM and SIGINT.
#[test]
fn a_killed_convert_leaves_no_litter_and_the_old_output() {
    let cases = [
        (false, libc::SIGKILL),
        (false, libc::SIGTERM),
        (true, libc::SIGTERM),
        (true, libc::SIGINT),
    ];
    for (named_temp, signal) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.arrow");
        std::fs::write(&out, b"the old output").unwrap();
        let marker_dir = tempfile::tempdir().unwrap();
        let marker = marker_dir.path().join("held");
        let mut child = held_convert(&out, &marker, named_temp);
        if named_temp {
            // The fallback's temporary file is there while it writes.
            assert_eq!(names(dir.path()).len(), 2, "{:?}", names(dir.path()));
        } else {
            assert_eq!(names(dir.path()), ["out.arrow"], "nothing has a name yet");
        }
        kill(&mut child, signal);
        assert_eq!(
            names(dir.path()),
            ["out.arrow"],
            "named temp: {named_temp}, signal {signal}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"the old output");
    }
}

/// Without a kill, both ways put the file in place, 0644 before the umask.
#[test]
fn both_temporary_files_commit() {
    for named_temp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.arrow");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedstream"));
        cmd.args(["convert", "--no-progress"])
            .arg(sample_pickle())
            .arg("-o")
            .arg(&out);
        if named_temp {
            cmd.env("EMBEDSTREAM_TEST_NAMED_TEMP", "1");
        }
        assert!(cmd.output().unwrap().status.success());
        assert_eq!(names(dir.path()), ["out.arrow"]);
        embedstream::store::Store::open(&out, None).unwrap();
    }
}

/// A missing output directory: the destination and the reason once (it
/// read "…(os error 2) at path \"/nonexistent/.x.arrow.GJ7RWR.tmp\" (the
/// output directory does not exist): No such file or directory …" twice).
#[test]
fn a_missing_output_directory_is_said_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["convert", "--no-progress"])
        .arg(sample_pickle())
        .args(["-o", "/nonexistent-dir-xyz/x.arrow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: /nonexistent-dir-xyz/x.arrow: No such file or directory (os error 2) (the output directory does not exist)\n"
    );
}
