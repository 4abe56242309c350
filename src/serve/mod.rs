//! `embedstream serve` (stub).
use std::path::PathBuf;

/// Flags of `embedstream serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The converted Arrow file to serve.
    #[arg(long, env = "EMBEDSTREAM_DATA", default_value = "data/sample.arrow")]
    pub data: PathBuf,
}

/// Run `embedstream serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve is not built yet: {}", args.data.display())
}
