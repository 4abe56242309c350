//! The `embedstream` binary: parse the command line, hand off to the library.
use std::process::ExitCode;

fn main() -> ExitCode {
    embedstream::cli::main()
}
