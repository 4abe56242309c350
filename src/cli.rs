//! Command line: one subcommand per job. Each subcommand's flags live in its
//! own module (`convert::ConvertArgs`, `serve::ServeArgs`, ...); this module
//! only composes them, loads `.env`, sets up logging and maps errors to exit
//! codes.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{client, commands, convert, inspect, logging, serve};

/// Convert pandas embedding pickles to Arrow once, then serve them over gRPC.
///
/// Typical use: `embedstream convert data.pkl` writes `data.arrow`;
/// `embedstream serve --data data.arrow` serves it to the Batch Server
/// (StreamEmbedding) and to Arrow Flight clients on one port.
#[derive(Debug, Parser)]
#[command(
    name = "embedstream",
    version,
    about,
    long_about,
    propagate_version = true
)]
pub struct Cli {
    /// Log level: ERROR, WARNING, INFO or DEBUG (the Python server's names).
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "INFO")]
    pub log_level: String,

    /// Log line format: `text`, or `json` (one object per line) for log shippers.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = logging::LogFormat::Text)]
    pub log_format: logging::LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the largest variant's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a pandas DataFrame pickle into an Arrow IPC file with a sorted UUID v7 key
    /// (several pickles, or `-o DIR/`: a data set directory of ordered shards).
    Convert(convert::ConvertArgs),
    /// Memory-map a converted file and serve it over gRPC (StreamEmbedding and Arrow Flight).
    Serve(serve::ServeArgs),
    /// Pull the stream from a server, check it as it arrives, optionally save it.
    Stream(client::stream::StreamArgs),
    /// Upload a converted file to the Batch Server's IngestDataStream, with retries.
    Upload(client::upload::UploadArgs),
    /// Summarise a converted file (schema, rows, key range, vector column, batches) or a data
    /// set directory; `--verify` checks a data set against every checksum of its manifest.
    Inspect(inspect::InspectArgs),
    /// Ask a server's gRPC health service; exit 0 only when it is SERVING (for probes).
    Health(client::health::HealthArgs),
}

/// Entry point used by `main`: parse, run, report.
pub fn main() -> ExitCode {
    // The Python server read its settings from a `.env` file too; variables
    // already set in the environment win over the file.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Serve(args) => commands::serve(args),
        Command::Stream(args) => client::stream::run(args),
        Command::Upload(args) => client::upload::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Health(args) => client::health::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout has gone (`… | head -1`): nothing to report to.
        Err(err) if crate::stdout::closed(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: what failed, then why.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
