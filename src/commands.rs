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
        .is_ok_and(|file| format::FileMetadata::read(file.schema().metadata()).source == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_ipc::writer::FileWriter;
    use arrow_schema::Schema;

    /// An empty Arrow file whose metadata says it came from `source`.
    fn arrow_from(path: &Path, source: &str) {
        let mut meta = format::FileMetadata::written("uuid");
        meta.source = Some(source.to_string());
        let schema =
            Arc::new(Schema::new(vec![format::key_field("uuid")]).with_metadata(meta.to_map()));
        let mut w = FileWriter::try_new(std::fs::File::create(path).unwrap(), &schema).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn a_sibling_is_current_only_if_converted_from_that_pickle() {
        let dir = tempfile::tempdir().unwrap();
        let pickle = dir.path().join("x.pkl");
        std::fs::write(&pickle, b"\x80\x04.").unwrap();
        let target = dir.path().join("x.arrow");
        assert!(!converted_is_current(&pickle, &target), "missing");
        arrow_from(&target, "x.pkl");
        assert!(converted_is_current(&pickle, &target));
        arrow_from(&target, "other.pkl");
        assert!(!converted_is_current(&pickle, &target), "another source");
        std::fs::write(&target, b"not arrow").unwrap();
        assert!(!converted_is_current(&pickle, &target), "not an Arrow file");
        // Not a pickle: served as given, nothing converted.
        assert_eq!(arrow_to_serve(&target).unwrap(), target);
    }
}
