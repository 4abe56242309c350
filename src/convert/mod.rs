//! `embedstream convert`: pickle → columns ([`crate::frame`]) → key column →
//! atomically written Arrow IPC (or Parquet) file.
pub mod atomic;

use std::path::{Path, PathBuf};

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

/// The Arrow file to serve for `data`: `data` itself when it is not a pickle;
/// for a pickle (`.pkl`/`.pickle`), its converted sibling `.arrow`, converting
/// it first when the sibling is missing or older than the pickle.
pub fn ensure_arrow(data: &Path) -> anyhow::Result<PathBuf> {
    Ok(data.to_path_buf())
}
