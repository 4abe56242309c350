//! `embedstream upload` (stub).

/// Flags of `embedstream upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {}

/// Run `embedstream upload`.
pub fn run(_args: UploadArgs) -> anyhow::Result<()> {
    anyhow::bail!("upload is not built yet")
}
