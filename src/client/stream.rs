//! `embedstream stream` (stub).

/// Flags of `embedstream stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {}

/// Run `embedstream stream`.
pub fn run(_args: StreamArgs) -> anyhow::Result<()> {
    anyhow::bail!("stream is not built yet")
}
