//! Atomic output files: write to a temporary file in the destination's
//! directory, fsync, then rename over the destination. A crash or an error
//! never leaves a half-written file under the final name, and an existing file
//! is replaced only when asked to.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use tempfile::NamedTempFile;

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicFileError {
    /// The destination exists and `force` was not given.
    #[error("{0}: already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// The destination's directory is missing or not writable, or the disk is full.
    #[error("{path}: {source}{hint}")]
    Io {
        /// The destination.
        path: PathBuf,
        /// The cause.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

impl AtomicFileError {
    fn io(path: &Path, source: io::Error) -> Self {
        let hint = match source.raw_os_error() {
            Some(28) => " (the disk is full: free space or write elsewhere with -o)",
            Some(13) => " (permission denied: choose a writable place with -o)",
            _ if source.kind() == io::ErrorKind::NotFound => {
                " (the output directory does not exist)"
            }
            _ => "",
        };
        AtomicFileError::Io {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }
}

/// A file being written under a temporary name next to `dest`.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    force: bool,
    writer: BufWriter<NamedTempFile>,
}

impl AtomicFile {
    /// Start writing `dest`. Fails early if it exists and `force` is false.
    pub fn create(dest: &Path, force: bool) -> Result<Self, AtomicFileError> {
        if !force && dest.exists() {
            return Err(AtomicFileError::Exists(dest.to_path_buf()));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let prefix = format!(
            ".{}.",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // tempfile creates 0600 files; an output file is an ordinary file
        // (0644 before the umask), readable by whoever serves or reads it.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let temp = builder
            .tempfile_in(dir)
            .map_err(|e| AtomicFileError::io(dest, e))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            force,
            writer: BufWriter::with_capacity(1 << 20, temp),
        })
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flush, fsync and rename into place. Dropping an `AtomicFile` without
    /// committing deletes the temporary file.
    pub fn commit(self) -> Result<(), AtomicFileError> {
        let dest = self.dest;
        let temp = self
            .writer
            .into_inner()
            .map_err(|e| AtomicFileError::io(&dest, e.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| AtomicFileError::io(&dest, e))?;
        let persisted = if self.force {
            temp.persist(&dest)
        } else {
            temp.persist_noclobber(&dest)
        };
        match persisted {
            Ok(_file) => Ok(()),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                Err(AtomicFileError::Exists(dest))
            }
            Err(e) => Err(AtomicFileError::io(&dest, e.error)),
        }
    }

    /// The underlying temporary file (e.g. for writers that need `File`).
    pub fn file(&self) -> &File {
        self.writer.get_ref().as_file()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.arrow");
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!dest.exists(), "nothing under the final name before commit");
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode & 0o044,
                0o044,
                "group and others can read the output ({mode:o})"
            );
        }

        let err = AtomicFile::create(&dest, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: already exists; pass --force to replace it",
                dest.display()
            )
        );

        let mut f = AtomicFile::create(&dest, true).unwrap();
        f.write_all(b"again").unwrap();
        drop(f); // abandoned: the old file stays, no temp file is left
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut f = AtomicFile::create(&dest, true).unwrap();
        f.write_all(b"again").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"again");
    }

    #[test]
    fn missing_directory_says_so() {
        let err =
            AtomicFile::create(Path::new("/nonexistent-dir-xyz/out.arrow"), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("the output directory does not exist"),
            "{err}"
        );
    }
}
