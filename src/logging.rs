//! tracing set-up shared by every subcommand. Logs go to stderr so that
//! stdout stays for the summaries a user may pipe.
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `level` follows the Python server's
/// `LOG_LEVEL` names (DEBUG, INFO, WARNING, ERROR); `RUST_LOG` wins if set.
pub fn init(level: &str) {
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        other => other.to_string(),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("embedstream={level},warn")))
        .unwrap_or_else(|_| EnvFilter::new("embedstream=info,warn"));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
