//! Command output on stdout. `println!` panics when stdout is a closed pipe
//! (`embedstream convert … | head -1`); these writes return the error
//! instead, as a [`StdoutError`], and the CLI exits quietly (status 0) on a
//! broken pipe, as ripgrep does. Only stdout's own errors are treated so: a
//! broken pipe from a socket stays an error.
use std::io::{self, Write};

/// A write to stdout failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub struct StdoutError(#[source] pub io::Error);

impl StdoutError {
    /// Whether the reader of stdout has gone (a closed pipe).
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Write `text` to stdout and flush it.
pub fn print(text: &str) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// Whether `err` is a closed stdout (the CLI then exits quietly).
pub fn closed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<StdoutError>()
            .is_some_and(StdoutError::is_broken_pipe)
    })
}
