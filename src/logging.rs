//! tracing set-up shared by every subcommand. Logs go to stderr so that
//! stdout stays for the summaries a user may pipe.
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// Install the global subscriber. `level` follows the Python server's
/// `LOG_LEVEL` names (DEBUG, INFO, WARNING, ERROR); `RUST_LOG` wins if set.
pub fn init(level: &str, format: LogFormat) {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        other => other.to_string(),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("embedstream={level},warn")))
        .unwrap_or_else(|_| EnvFilter::new("embedstream=info,warn"));
    // A second init (tests) is harmless: keep the first subscriber.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
