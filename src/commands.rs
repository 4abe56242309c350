//! Commands that compose stages: the one place a higher-level job calls
//! two layers in turn, so that no layer calls another sideways (`serve`
//! never calls `convert`).
//!
//! `embedstream serve --data x.pkl` converts the pickle once to its sibling
//! `x.arrow` ([`arrow_to_serve`]), then serves that.

use std::path::{Path, PathBuf};

use crate::{convert, format, serve, store::MappedIpcFile};

/// `embedstream serve`: convert a pickle first if needed, then serve the Arrow file.
pub fn serve(args: serve::ServeArgs) -> anyhow::Result<()> {
    let data = arrow_to_serve(&args.data).map_err(|e| {
        anyhow::anyhow!(
            "{}: converting the pickle failed: {e:#}",
            args.data.display()
        )
    })?;
    serve::run(args, data)
}

/// The Arrow file to serve for `data`: `data` itself when it is not a pickle;
/// for a pickle, its converted sibling `.arrow`, converting it first when the
/// sibling is missing, older than the pickle, or converted from another file.
/// An up-to-date sibling is reused, so keys stay stable across restarts (the
/// Batch Server's checkpoints stay valid).
pub fn arrow_to_serve(data: &Path) -> anyhow::Result<PathBuf> {
    if !convert::is_pickle(data) {
        return Ok(data.to_path_buf());
    }
    let mut args = convert::ConvertArgs::new(data, None);
    let target = args.output_path();
    if converted_is_current(data, &target) {
        tracing::info!(
            "serving {} (converted from {})",
            target.display(),
            data.display()
        );
        return Ok(target);
    }
    tracing::info!(
        "converting {} to {} once, before serving",
        data.display(),
        target.display()
    );
    args.force = true;
    let summary = convert::convert(&args)?;
    tracing::info!("{summary}");
    Ok(target)
}

/// Whether `target` exists, is not older than `source`, and was converted
/// from a file of that name. The schema is read through the store's
/// [`MappedIpcFile`] (footer and headers only; `serve` maps the same file
/// right after, so the pages are warm).
fn converted_is_current(source: &Path, target: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(src), Some(dst)) = (modified(source), modified(target)) else {
        return false;
    };
    if dst < src {
        return false;
    }
    let expected = source.file_name().map(|n| n.to_string_lossy().into_owned());
    MappedIpcFile::open(target)
        .is_ok_and(|file| file.schema().metadata().get(format::META_SOURCE).cloned() == expected)
}
