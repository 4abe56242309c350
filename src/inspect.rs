//! `embedstream inspect` (stub).
use std::path::PathBuf;

/// Flags of `embedstream inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The converted file.
    pub file: PathBuf,
}

/// Run `embedstream inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("inspect is not built yet: {}", args.file.display())
}
