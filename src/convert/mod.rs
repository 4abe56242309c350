//! `embedstream convert` (stub).
use std::path::PathBuf;

/// Flags of `embedstream convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The pandas pickle to convert.
    pub input: PathBuf,
}

/// Run `embedstream convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    anyhow::bail!("convert is not built yet: {}", args.input.display())
}
