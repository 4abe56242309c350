//! File-system helpers shared by the commands: atomic output files
//! ([`AtomicFile`]), atomic output directories ([`AtomicDir`], a data set)
//! and byte counts for people ([`human_bytes`]).
//!
//! An output file is written where no reader can see it, fsynced, then put
//! in place under its final name in one step. A crash, a kill or an error
//! never leaves a half-written file under the final name, nor litter beside
//! it, and an existing file is replaced only when asked to:
//! - on Linux the data goes to an unnamed temporary file (`O_TMPFILE` in the
//!   destination's directory): if the process dies, the kernel frees it,
//!   whatever the signal (even SIGKILL). Committing links it into place
//!   (`linkat` through `/proc/self/fd`, which fails if the destination
//!   exists); with `--force` it is linked under a hidden temporary name and
//!   renamed over the destination;
//! - where the filesystem has no `O_TMPFILE` (some network and FUSE mounts,
//!   other systems) it goes to a named temporary file `.NAME.XXXXXX.tmp`,
//!   removed on drop and, if the process is ended by SIGINT or SIGTERM, by a
//!   signal handler (SIGKILL cannot be caught: only there can a temporary
//!   file be left).
//!
//! Where the filesystem allows it, the data is written with `O_DIRECT` from an
//! aligned buffer ([`DirectSink`]). Converting writes gigabytes once and never
//! reads them back in the same process: going through the page cache costs a
//! kernel copy of every byte plus the final `fsync` flush (measured here: a
//! buffered 2.2 GB write spends 3.4 s in the kernel, an `O_DIRECT` one 0.2 s).
//! Filesystems that refuse `O_DIRECT` (tmpfs, some network and FUSE mounts)
//! get ordinary buffered writes.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use tempfile::NamedTempFile;

/// "812 B", "3.4 kB", "232.1 MB", "4.49 GB" (decimal units, as `ls --si`).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicFileError {
    /// The destination exists and `force` was not given.
    #[error("{0}: already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// A data set's destination is a directory that is not a data set.
    #[error("{0}: exists and is not an embedstream data set (no manifest.json); refusing to replace it: remove it or choose another -o")]
    NotADataSet(PathBuf),
    /// The destination's directory is missing or not writable, or the disk
    /// is full. The message names the destination and the system's reason
    /// once (not the temporary file: the user never sees it), then advice.
    #[error("{path}: {error}{hint}")]
    Io {
        /// The destination.
        path: PathBuf,
        /// The cause (deliberately not a `source`: the message already
        /// holds it, and error chains would print it twice).
        error: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

impl AtomicFileError {
    fn io(path: &Path, error: io::Error) -> Self {
        // tempfile adds the temporary file's path to its errors, keeping
        // only the kind: the common kinds get their system reason back.
        let code = error.raw_os_error().or(match error.kind() {
            io::ErrorKind::NotFound => Some(libc::ENOENT),
            io::ErrorKind::PermissionDenied => Some(libc::EACCES),
            io::ErrorKind::ReadOnlyFilesystem => Some(libc::EROFS),
            io::ErrorKind::StorageFull => Some(libc::ENOSPC),
            _ => None,
        });
        let error = match code {
            Some(code) => io::Error::from_raw_os_error(code),
            None => error,
        };
        AtomicFileError::Io {
            path: path.to_path_buf(),
            hint: hint(&error),
            error,
        }
    }
}

/// What to do about an I/O error while creating or writing an output file.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => " (the disk is full: free space or write elsewhere with -o)",
        Some(libc::EACCES) => " (permission denied: choose a writable place with -o)",
        Some(libc::EROFS) => " (a read-only file system: write elsewhere with -o)",
        _ if e.kind() == io::ErrorKind::NotFound => " (the output directory does not exist)",
        _ => "",
    }
}

/// Where the data goes until it is committed.
#[derive(Debug)]
enum Temp {
    /// An `O_TMPFILE` file in `dir`: nothing to clean up, ever.
    Unnamed { file: File, dir: PathBuf },
    /// A named temporary file, removed on drop or by the signal handler
    /// (`slot` is its registration there).
    Named {
        temp: NamedTempFile,
        slot: Option<cleanup::Slot>,
    },
}

impl Temp {
    fn file(&self) -> &File {
        match self {
            Temp::Unnamed { file, .. } => file,
            Temp::Named { temp, .. } => temp.as_file(),
        }
    }
}

/// A file being written where no reader sees it, put in place by [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    force: bool,
    temp: Temp,
    sink: DirectSink,
    /// The first write error (with its OS code), for [`AtomicFile::write_error`].
    failed: Option<(io::ErrorKind, Option<i32>)>,
}

/// The hidden name a temporary file gets beside `dest`: `.NAME.`.
fn temp_prefix(dest: &Path) -> String {
    format!(
        ".{}.",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
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
        let temp = match unnamed::create(dir) {
            Ok(Some(file)) => Temp::Unnamed {
                file,
                dir: dir.to_path_buf(),
            },
            Ok(None) => Self::named(dest, dir)?,
            Err(e) => return Err(AtomicFileError::io(dest, e)),
        };
        let sink = DirectSink::new(&temp).map_err(|e| AtomicFileError::io(dest, e))?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            force,
            temp,
            sink,
            failed: None,
        })
    }

    /// The fallback: a named temporary file beside `dest`, registered for
    /// removal on SIGINT/SIGTERM.
    fn named(dest: &Path, dir: &Path) -> Result<Temp, AtomicFileError> {
        let prefix = temp_prefix(dest);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // tempfile creates 0600 files; an output file is an ordinary file
        // (0644 before the umask), readable by whoever serves or reads it.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let temp = builder
            .tempfile_in(dir)
            .map_err(|e| AtomicFileError::io(dest, e))?;
        let slot = cleanup::register(temp.path());
        Ok(Temp::Named { temp, slot })
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The first error a write returned, as an [`AtomicFileError`] naming the
    /// destination: what a caller reports instead of the error a format
    /// writer (Arrow, Parquet) wrapped around it.
    pub fn write_error(&self) -> Option<AtomicFileError> {
        self.failed.map(|(kind, code)| {
            let error = code.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error);
            AtomicFileError::io(&self.dest, error)
        })
    }

    /// Flush, fsync and put in place. Dropping an `AtomicFile` without
    /// committing leaves nothing behind.
    pub fn commit(self) -> Result<(), AtomicFileError> {
        self.commit_with_head(&[])
    }

    /// [`commit`](Self::commit), with the first `head.len()` bytes written
    /// so far replaced by `head` first (a header settled after the rest of
    /// the file was written). A `head` longer than what was written is
    /// refused, and nothing is put in place.
    pub fn commit_with_head(self, head: &[u8]) -> Result<(), AtomicFileError> {
        let AtomicFile {
            dest,
            force,
            temp,
            sink,
            ..
        } = self;
        let written = sink.offset + sink.current.len as u64;
        if head.len() as u64 > written {
            return Err(AtomicFileError::io(
                &dest,
                io::Error::other("internal error: a settled header longer than the file"),
            ));
        }
        sink.finish()
            .and_then(|()| write_at(temp.file(), head, 0))
            .and_then(|()| temp.file().sync_all())
            .map_err(|e| AtomicFileError::io(&dest, e))?;
        test_hook::hold_before_commit();
        match temp {
            Temp::Unnamed { file, dir } => {
                unnamed::link(&file, &dir, &dest, force)?;
                // The new name's directory entry, durable too (best effort:
                // some filesystems refuse to fsync a directory).
                let _ = File::open(&dir).and_then(|d| d.sync_all());
                Ok(())
            }
            Temp::Named { temp, slot } => {
                let persisted = if force {
                    temp.persist(&dest)
                } else {
                    temp.persist_noclobber(&dest)
                };
                drop(slot);
                match persisted {
                    Ok(_file) => Ok(()),
                    Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                        Err(AtomicFileError::Exists(dest))
                    }
                    Err(e) => Err(AtomicFileError::io(&dest, e.error)),
                }
            }
        }
    }
}

impl Write for AtomicFile {
    /// Errors carry the same advice as [`AtomicFileError`] (they reach the
    /// user through the Arrow or Parquet writer).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.write(buf).map_err(|e| {
            self.failed.get_or_insert((e.kind(), e.raw_os_error()));
            match hint(&e) {
                "" => e,
                advice => io::Error::new(e.kind(), format!("{e}{advice}")),
            }
        })
    }
    /// Buffered bytes stay buffered until a whole aligned block is ready
    /// (or [`AtomicFile::commit`]); nobody reads the temporary file before.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The hidden marker in a temporary data set directory's name: the
/// directory is `.NAME.embedstream-PID-NONCE.tmp` beside the destination.
const DIR_TEMP_MARK: &str = ".embedstream-";

/// A directory (a data set) built where no reader looks, then put in place
/// in one step ([`AtomicDir::commit`]):
/// - it is built in a hidden sibling `.NAME.embedstream-PID-NONCE.tmp`;
/// - commit renames it to the destination (`renameat2(RENAME_NOREPLACE)`),
///   or, over an existing data set with `force` (or an empty directory),
///   swaps the two (`RENAME_EXCHANGE`) and then removes the old one;
/// - dropped without a commit (an error), or on SIGINT/SIGTERM, the
///   temporary directory is removed; after a SIGKILL it stays, and the next
///   [`AtomicDir::create`] in the same parent removes every such directory
///   whose process is gone.
///
/// A destination that is a directory but not a data set (no
/// `manifest.json`, not empty) is never replaced, `force` or not.
#[derive(Debug)]
pub struct AtomicDir {
    dest: PathBuf,
    temp: PathBuf,
    replace: bool,
    committed: bool,
    _slot: Option<cleanup::Slot>,
}

impl AtomicDir {
    /// Start building `dest`. Fails early if it exists (and `force` is
    /// false, or it is a directory that is not a data set).
    pub fn create(dest: &Path, force: bool) -> Result<Self, AtomicFileError> {
        let dest = strip_trailing_slash(dest);
        let replace = match std::fs::symlink_metadata(&dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(AtomicFileError::io(&dest, e)),
            Ok(meta) if meta.is_dir() => {
                let empty = std::fs::read_dir(&dest)
                    .map_err(|e| AtomicFileError::io(&dest, e))?
                    .next()
                    .is_none();
                if !empty && !dest.join(crate::format::manifest::MANIFEST_FILE).is_file() {
                    return Err(AtomicFileError::NotADataSet(dest));
                }
                if !empty && !force {
                    return Err(AtomicFileError::Exists(dest));
                }
                true
            }
            Ok(_) if !force => return Err(AtomicFileError::Exists(dest)),
            Ok(_) => true,
        };
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        sweep_stale_dirs(&parent);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let temp = parent.join(format!(
                ".{name}{DIR_TEMP_MARK}{}-{:x}.tmp",
                std::process::id(),
                nonce.wrapping_add(attempt)
            ));
            match std::fs::create_dir(&temp) {
                Ok(()) => {
                    let slot = cleanup::register_dir(&temp);
                    return Ok(AtomicDir {
                        dest,
                        temp,
                        replace,
                        committed: false,
                        _slot: slot,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(AtomicFileError::io(&dest, e)),
            }
        }
        Err(AtomicFileError::io(
            &dest,
            io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"),
        ))
    }

    /// Where to write the files (the temporary directory).
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Sync the directory and put it in place (see the type's documentation).
    pub fn commit(mut self) -> Result<(), AtomicFileError> {
        let dest = self.dest.clone();
        File::open(&self.temp)
            .and_then(|d| d.sync_all())
            .map_err(|e| AtomicFileError::io(&dest, e))?;
        test_hook::hold_before_dir_commit();
        if self.replace {
            match rename::exchange(&self.temp, &dest) {
                // The destination went away meanwhile: nothing to swap with.
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.temp.is_dir() => {
                    rename::no_replace(&self.temp, &dest)
                        .map_err(|e| AtomicFileError::io(&dest, e))?;
                    self.committed = true;
                    return Ok(());
                }
                other => other.map_err(|e| AtomicFileError::io(&dest, e))?,
            }
            // The old data set (or file) is now under the temporary name.
            self.committed = true;
            let old = self.temp.clone();
            let removed = if old.is_dir() {
                std::fs::remove_dir_all(&old)
            } else {
                std::fs::remove_file(&old)
            };
            if let Err(e) = removed {
                tracing::warn!(
                    "{}: the replaced data set could not be removed: {e}",
                    old.display()
                );
            }
        } else {
            rename::no_replace(&self.temp, &dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    AtomicFileError::Exists(dest.clone())
                } else {
                    AtomicFileError::io(&dest, e)
                }
            })?;
            self.committed = true;
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

/// `dir/` → `dir` (a trailing slash would make `dir`'s parent `dir` itself).
fn strip_trailing_slash(path: &Path) -> PathBuf {
    path.components().collect()
}

/// Remove the temporary data set directories in `parent` whose process is
/// gone (a convert killed by SIGKILL). A directory whose PID is alive (or
/// reused by another process) is left alone.
fn sweep_stale_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_dir_pid(&name) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || process_alive(pid) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => tracing::info!(
                "removed {}, left by a convert (process {pid}) that was killed",
                entry.path().display()
            ),
            Err(e) => tracing::warn!("{}: cannot remove: {e}", entry.path().display()),
        }
    }
}

/// The PID in `.NAME.embedstream-PID-NONCE.tmp`.
fn stale_dir_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tail) = rest.rsplit_once(DIR_TEMP_MARK)?;
    let (pid, nonce) = tail.split_once('-')?;
    if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` exists (`kill(pid, 0)`; EPERM means it does).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        if pid <= 0 {
            return true;
        }
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Renames of a whole directory that never clobber by accident.
mod rename {
    use std::{io, path::Path};

    #[cfg(target_os = "linux")]
    fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
        use std::{ffi::CString, os::unix::ffi::OsStrExt};
        let from = CString::new(from.as_os_str().as_bytes())?;
        let to = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths that live across the
        // call; the kernel reads them and keeps no pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Whether a `renameat2` error means the filesystem or kernel lacks it.
    #[cfg(target_os = "linux")]
    fn unsupported(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        )
    }

    /// `from` → `to`, failing with `AlreadyExists` if `to` exists.
    pub(super) fn no_replace(from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        match renameat2(from, to, libc::RENAME_NOREPLACE) {
            Err(e) if unsupported(&e) => {}
            other => return other,
        }
        // Without RENAME_NOREPLACE: check, then rename (a race window).
        if to.exists() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        std::fs::rename(from, to)
    }

    /// Swap `from` and `to` in one step; where the filesystem cannot, move
    /// `to` aside to `from`'s sibling, then `from` into place (two steps).
    pub(super) fn exchange(from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        match renameat2(from, to, libc::RENAME_EXCHANGE) {
            Err(e) if unsupported(&e) => {}
            other => return other,
        }
        let aside = from.with_extension("old");
        std::fs::rename(to, &aside)?;
        if let Err(e) = std::fs::rename(from, to) {
            let _ = std::fs::rename(&aside, to);
            return Err(e);
        }
        std::fs::rename(&aside, from)
    }
}

/// Buffer size: large writes keep the device busy with few system calls.
const SINK_BUFFER: usize = 8 << 20;
/// `O_DIRECT` alignment of memory, offsets and lengths. 4096 covers devices
/// with 512-byte and 4-KiB logical blocks.
const DIRECT_ALIGN: usize = 4096;

/// A buffer whose data starts at a [`DIRECT_ALIGN`]-aligned address.
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn new() -> io::Result<Self> {
        let storage = vec![0u8; SINK_BUFFER + DIRECT_ALIGN];
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        if start > DIRECT_ALIGN {
            return Err(io::Error::other("cannot align the output buffer"));
        }
        Ok(AlignedBuffer {
            storage,
            start,
            len: 0,
        })
    }

    fn data(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// Copy as much of `buf` as fits; how much that was.
    fn fill(&mut self, buf: &[u8]) -> usize {
        let take = buf.len().min(SINK_BUFFER - self.len);
        let at = self.start + self.len;
        self.storage[at..at + take].copy_from_slice(&buf[..take]);
        self.len += take;
        take
    }

    /// Zero-pad to the next multiple of [`DIRECT_ALIGN`].
    fn pad(&mut self) {
        let padded = self.len.next_multiple_of(DIRECT_ALIGN);
        let (lo, hi) = (self.start + self.len, self.start + padded);
        self.storage[lo..hi].fill(0);
        self.len = padded;
    }
}

/// Buffers the output and hands each full buffer to a writer thread, so the
/// disk writes while the next buffer is being filled (two buffers in turn).
/// The thread writes at explicit offsets through a second, `O_DIRECT`
/// descriptor of the temporary file when possible, through the temporary
/// file's own descriptor otherwise.
///
/// Invariant: every buffer sent before [`DirectSink::finish`] is full, so
/// each write starts at a multiple of [`DIRECT_ALIGN`].
struct DirectSink {
    direct: Option<File>,
    buffered: File,
    current: AlignedBuffer,
    writer: Option<BackgroundWriter>,
    /// Bytes handed to the writer so far.
    offset: u64,
}

/// The writer thread: full buffers go in, empty ones come back.
struct BackgroundWriter {
    full: std::sync::mpsc::SyncSender<(AlignedBuffer, u64)>,
    empty: std::sync::mpsc::Receiver<AlignedBuffer>,
    thread: std::thread::JoinHandle<io::Result<Option<File>>>,
}

impl std::fmt::Debug for DirectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSink")
            .field("direct", &self.direct.is_some())
            .field("offset", &self.offset)
            .finish()
    }
}

impl DirectSink {
    fn new(temp: &Temp) -> io::Result<Self> {
        let direct = match temp {
            // The unnamed file has no path but its descriptor's.
            Temp::Unnamed { file, .. } => unnamed::proc_path(file).and_then(|p| open_direct(&p)),
            Temp::Named { temp, .. } => open_direct(temp.path()),
        };
        Ok(DirectSink {
            direct,
            buffered: temp.file().try_clone()?,
            current: AlignedBuffer::new()?,
            writer: None,
            offset: 0,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.current.len == SINK_BUFFER {
            self.send()?;
        }
        Ok(self.current.fill(buf))
    }

    /// Hand the current buffer to the writer thread (started on first use)
    /// and continue in a free one.
    fn send(&mut self) -> io::Result<()> {
        if self.writer.is_none() {
            let second = AlignedBuffer::new()?;
            self.writer = Some(BackgroundWriter::start(
                self.direct.take(),
                self.buffered.try_clone()?,
                second,
            )?);
        }
        let Some(writer) = &self.writer else {
            return Err(io::Error::other("the output writer did not start"));
        };
        let len = self.current.len as u64;
        let next = match writer.empty.recv() {
            Ok(buffer) => buffer,
            // The thread stopped: its error is reported by `finish`/`stop`.
            Err(_) => return Err(self.stop()),
        };
        let full = std::mem::replace(&mut self.current, next);
        if writer.full.send((full, self.offset)).is_err() {
            return Err(self.stop());
        }
        self.offset += len;
        self.current.len = 0;
        Ok(())
    }

    /// The writer thread's error (it has stopped).
    fn stop(&mut self) -> io::Error {
        match self.writer.take().map(BackgroundWriter::join) {
            Some(Err(e)) => e,
            _ => io::Error::other("the output writer stopped"),
        }
    }

    /// Write what is buffered and wait for every write. With `O_DIRECT` the
    /// tail is padded to the alignment and the file then cut to its length.
    fn finish(mut self) -> io::Result<()> {
        let end = self.offset + self.current.len as u64;
        let mut direct = self.direct.take();
        if let Some(writer) = self.writer.take() {
            // The thread hands back the O_DIRECT descriptor if it kept it.
            direct = writer.join()?;
        }
        if direct.is_some() && !self.current.len.is_multiple_of(DIRECT_ALIGN) {
            self.current.pad();
        }
        write_buffer(direct, &self.buffered, self.current.data(), self.offset)?;
        let written = self.offset + self.current.len as u64;
        if written != end {
            self.buffered.set_len(end)?;
        }
        Ok(())
    }
}

impl BackgroundWriter {
    fn start(direct: Option<File>, buffered: File, spare: AlignedBuffer) -> io::Result<Self> {
        let (full, full_rx) = std::sync::mpsc::sync_channel::<(AlignedBuffer, u64)>(1);
        let (empty_tx, empty) = std::sync::mpsc::sync_channel::<AlignedBuffer>(2);
        empty_tx
            .send(spare)
            .map_err(|_| io::Error::other("the output writer did not start"))?;
        let thread = std::thread::Builder::new()
            .name("embedstream-writer".into())
            .spawn(move || -> io::Result<Option<File>> {
                let mut direct = direct;
                for (buffer, offset) in full_rx {
                    direct = write_buffer(direct, &buffered, buffer.data(), offset)?;
                    // The sink may be gone already (finishing): nothing to return to.
                    let _ = empty_tx.send(buffer);
                }
                Ok(direct)
            })?;
        Ok(BackgroundWriter {
            full,
            empty,
            thread,
        })
    }

    /// Close the queue and wait for the last write; the `O_DIRECT`
    /// descriptor if it is still in use.
    fn join(self) -> io::Result<Option<File>> {
        drop(self.full);
        drop(self.empty);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output writer panicked")))
    }
}

/// Write `data` at `offset`: with `O_DIRECT` if `direct` is given and the
/// filesystem takes it; a filesystem that accepts the open but refuses the
/// write (`EINVAL`) gets these and all later bytes through `buffered`.
/// Returns the descriptor to use next.
fn write_buffer(
    direct: Option<File>,
    buffered: &File,
    data: &[u8],
    offset: u64,
) -> io::Result<Option<File>> {
    if let Some(file) = direct {
        match write_at(&file, data, offset) {
            Ok(()) => return Ok(Some(file)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    write_at(buffered, data, offset)?;
    Ok(None)
}

/// `O_DIRECT` descriptor of `path`, or `None` where that is not possible.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// `pwrite` all of `data` at `offset`.
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, data, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)
    }
}

/// The unnamed temporary file (`O_TMPFILE`) and how it is linked into place.
#[cfg(target_os = "linux")]
mod unnamed {
    use std::{
        ffi::CString,
        fs::{File, OpenOptions},
        io,
        os::unix::{ffi::OsStrExt, fs::OpenOptionsExt, io::AsRawFd},
        path::{Path, PathBuf},
    };

    use super::{cleanup, test_hook, AtomicFileError};

    /// An unnamed file in `dir`, mode 0644 before the umask; `None` where
    /// the filesystem (or kernel) has no `O_TMPFILE`, or `/proc` is missing
    /// (linking goes through it).
    pub(super) fn create(dir: &Path) -> io::Result<Option<File>> {
        if test_hook::named_only() || !Path::new("/proc/self/fd").is_dir() {
            return Ok(None);
        }
        match OpenOptions::new()
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(file) => Ok(Some(file)),
            // EOPNOTSUPP: the filesystem lacks it; EISDIR, EINVAL: the
            // kernel predates it (3.11).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `/proc/self/fd/N`: the path that reopens (or links) the descriptor.
    pub(super) fn proc_path(file: &File) -> Option<PathBuf> {
        Some(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
    }

    /// `linkat(2)` of the descriptor's file to `to`; fails if `to` exists.
    fn link_to(file: &File, to: &Path) -> io::Result<()> {
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let to = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both arguments are valid NUL-terminated paths that live
        // across the call; linkat reads them and keeps no pointer.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Give the unnamed file its name: `dest` itself when it must not be
    /// replaced (the link fails if it exists), else a hidden name beside it
    /// renamed over `dest` (rename is atomic; link is not allowed to replace).
    pub(super) fn link(
        file: &File,
        dir: &Path,
        dest: &Path,
        force: bool,
    ) -> Result<(), AtomicFileError> {
        if !force {
            return link_to(file, dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    AtomicFileError::Exists(dest.to_path_buf())
                } else {
                    AtomicFileError::io(dest, e)
                }
            });
        }
        let prefix = super::temp_prefix(dest);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let hidden = dir.join(format!(
                "{prefix}{}-{stamp:x}-{attempt}.tmp",
                std::process::id()
            ));
            match link_to(file, &hidden) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(AtomicFileError::io(dest, e)),
            }
            // Named for the time of one rename: removed if a signal comes.
            let slot = cleanup::register(&hidden);
            let renamed = std::fs::rename(&hidden, dest);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&hidden);
            }
            drop(slot);
            return renamed.map_err(|e| AtomicFileError::io(dest, e));
        }
        Err(AtomicFileError::io(
            dest,
            io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"),
        ))
    }
}

/// Elsewhere there is no unnamed file: always the named fallback.
#[cfg(not(target_os = "linux"))]
mod unnamed {
    use std::{
        fs::File,
        io,
        path::{Path, PathBuf},
    };

    use super::AtomicFileError;

    pub(super) fn create(_dir: &Path) -> io::Result<Option<File>> {
        Ok(None)
    }

    pub(super) fn proc_path(_file: &File) -> Option<PathBuf> {
        None
    }

    pub(super) fn link(
        _file: &File,
        _dir: &Path,
        dest: &Path,
        _force: bool,
    ) -> Result<(), AtomicFileError> {
        Err(AtomicFileError::io(dest, io::ErrorKind::Unsupported.into()))
    }
}

/// Removal of named temporary files when SIGINT or SIGTERM ends the
/// process. The handler is installed, on first use, only for a signal whose
/// disposition is still the default (a program that handles the signal
/// itself, such as `serve`, shuts down and drops its files); it unlinks every
/// registered path, then lets the signal end the process as it would have.
#[cfg(unix)]
mod cleanup {
    use std::{
        ffi::{c_char, c_int, CString},
        os::unix::ffi::OsStrExt,
        path::Path,
        ptr::null_mut,
        sync::{
            atomic::{AtomicPtr, Ordering},
            Once,
        },
    };

    /// Registered paths: at most this many named temporary files at once
    /// get the handler's cleanup (a command writes one or two).
    const SLOTS: usize = 8;
    static PATHS: [AtomicPtr<c_char>; SLOTS] = [const { AtomicPtr::new(null_mut()) }; SLOTS];
    /// Registered temporary directories (data sets being built): their
    /// files are unlinked, then the directory itself.
    static DIRS: [AtomicPtr<c_char>; SLOTS] = [const { AtomicPtr::new(null_mut()) }; SLOTS];
    static INSTALL: Once = Once::new();

    /// A registered path; dropping it unregisters it.
    #[derive(Debug)]
    pub(super) struct Slot(&'static [AtomicPtr<c_char>; SLOTS], usize);

    impl Drop for Slot {
        fn drop(&mut self) {
            // The string is leaked, not freed: a handler running on another
            // thread may still be reading it (a few dozen bytes per file).
            self.0[self.1].store(null_mut(), Ordering::SeqCst);
        }
    }

    /// Have `path` removed if SIGINT or SIGTERM ends the process; `None` if
    /// every slot is taken (the file is then only removed on drop).
    pub(super) fn register(path: &Path) -> Option<Slot> {
        register_in(&PATHS, path)
    }

    /// Have the directory `path` and the files in it removed if SIGINT or
    /// SIGTERM ends the process (it holds no subdirectories).
    pub(super) fn register_dir(path: &Path) -> Option<Slot> {
        register_in(&DIRS, path)
    }

    fn register_in(table: &'static [AtomicPtr<c_char>; SLOTS], path: &Path) -> Option<Slot> {
        INSTALL.call_once(install);
        let raw = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
        for (i, slot) in table.iter().enumerate() {
            if slot
                .compare_exchange(null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(Slot(table, i));
            }
        }
        // SAFETY: `raw` comes from `CString::into_raw` above and was never
        // published, so this is its only owner.
        drop(unsafe { CString::from_raw(raw) });
        None
    }

    extern "C" fn on_signal(signal: c_int) {
        for slot in &PATHS {
            let path = slot.load(Ordering::SeqCst);
            if !path.is_null() {
                // SAFETY: a registered pointer is a leaked, NUL-terminated
                // CString that is never freed; unlink is async-signal-safe.
                unsafe { libc::unlink(path) };
            }
        }
        for slot in &DIRS {
            let path = slot.load(Ordering::SeqCst);
            if !path.is_null() {
                // SAFETY: as above: a leaked, NUL-terminated CString.
                unsafe { remove_flat_dir(path) };
            }
        }
        // SAFETY: signal and raise are async-signal-safe; with the default
        // disposition restored, the re-raised signal (blocked until this
        // handler returns) ends the process as it would have without us.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    /// Unlink every entry of the directory `path` (files only), then the
    /// directory, with async-signal-safe calls only: open, getdents64 into
    /// a stack buffer, unlinkat, close, rmdir. Entries are read again from
    /// the start until a pass removes nothing (removal shifts the listing).
    ///
    /// # Safety
    /// `path` is a valid NUL-terminated string.
    #[cfg(target_os = "linux")]
    unsafe fn remove_flat_dir(path: *const c_char) {
        // SAFETY: for the whole body: `path` is valid (the caller's contract);
        // `buf` outlives every call that writes it, and getdents64 writes at
        // most `buf.len()` bytes; each record is read within the `n` bytes
        // the kernel returned, its name NUL-terminated inside the record.
        unsafe {
            let fd = libc::open(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
            if fd < 0 {
                return;
            }
            let mut buf = [0u8; 4096];
            for _pass in 0..16 {
                if libc::lseek(fd, 0, libc::SEEK_SET) != 0 {
                    break;
                }
                let mut removed = 0;
                loop {
                    let n = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    let n = n as usize;
                    let mut at = 0;
                    // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
                    while at + 19 < n {
                        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                        if reclen == 0 || at + reclen > n {
                            break;
                        }
                        let name = &buf[at + 19..at + reclen];
                        let dot = name.starts_with(b".\0") || name.starts_with(b"..\0");
                        if !dot && libc::unlinkat(fd, name.as_ptr().cast(), 0) == 0 {
                            removed += 1;
                        }
                        at += reclen;
                    }
                }
                if removed == 0 {
                    break;
                }
            }
            libc::close(fd);
            libc::rmdir(path);
        }
    }

    #[cfg(not(target_os = "linux"))]
    unsafe fn remove_flat_dir(_path: *const c_char) {}

    fn install() {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: sigaction with a zeroed (valid) struct to read the
            // current disposition, then to install `on_signal`, which only
            // makes async-signal-safe calls.
            unsafe {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut current) != 0
                    || current.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(not(unix))]
mod cleanup {
    #[derive(Debug)]
    pub(super) struct Slot;

    pub(super) fn register(_path: &std::path::Path) -> Option<Slot> {
        None
    }

    pub(super) fn register_dir(_path: &std::path::Path) -> Option<Slot> {
        None
    }
}

/// Hooks for the tests that kill a `convert` mid-write (environment
/// variables, read only where they act).
mod test_hook {
    /// `EMBEDSTREAM_TEST_NAMED_TEMP` set: use the named temporary file even
    /// where `O_TMPFILE` works (tests the fallback on any filesystem).
    pub(super) fn named_only() -> bool {
        std::env::var_os("EMBEDSTREAM_TEST_NAMED_TEMP").is_some()
    }

    /// `EMBEDSTREAM_TEST_HOLD_COMMIT=PATH`: once every byte is written and
    /// synced, create PATH and wait to be killed (for at most 10 minutes).
    pub(super) fn hold_before_commit() {
        hold("EMBEDSTREAM_TEST_HOLD_COMMIT");
    }

    /// `EMBEDSTREAM_TEST_HOLD_DIR_COMMIT=PATH`: the same, once a data set
    /// directory is complete, before it is renamed into place.
    pub(super) fn hold_before_dir_commit() {
        hold("EMBEDSTREAM_TEST_HOLD_DIR_COMMIT");
    }

    fn hold(variable: &str) {
        if let Some(marker) = std::env::var_os(variable) {
            let _ = std::fs::File::create(marker);
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
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

    /// Several buffers' worth, in writes of odd sizes, ending mid-block:
    /// through `O_DIRECT` where the test directory's filesystem allows it,
    /// and through the buffered fallback.
    #[test]
    fn large_unaligned_writes_come_back_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * SINK_BUFFER + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for direct in [true, false] {
            let dest = dir.path().join(format!("out-{direct}.arrow"));
            let mut f = AtomicFile::create(&dest, false).unwrap();
            if !direct {
                f.sink.direct = None;
            }
            for chunk in data.chunks(1_000_003) {
                f.write_all(chunk).unwrap();
            }
            f.commit().unwrap();
            let back = std::fs::read(&dest).unwrap();
            assert_eq!(back.len(), data.len(), "direct: {direct}");
            assert!(back == data, "direct: {direct}: contents differ");
        }
        // Nothing but the two outputs is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// A write that fails in the writer thread (here: `/dev/full`, which
    /// answers every write with ENOSPC) comes back to the writer of the
    /// next buffer with the advice, and nothing lands under the final name.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_says_so_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.arrow");
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.sink.direct = None;
        f.sink.buffered = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let chunk = vec![7u8; 1 << 20];
        let err = (0..64)
            .find_map(|_| f.write_all(&chunk).err())
            .expect("writing 64 MiB to /dev/full fails");
        assert_eq!(err.raw_os_error(), None, "the error was annotated");
        assert!(
            err.to_string().ends_with(
                "(os error 28) (the disk is full: free space or write elsewhere with -o)"
            ),
            "{err}"
        );
        // What convert reports instead of the Arrow writer's wrapping: the
        // destination, the reason and the advice, once.
        assert_eq!(
            f.write_error().unwrap().to_string(),
            format!(
                "{}: No space left on device (os error 28) (the disk is full: free space or write elsewhere with -o)",
                dest.display()
            )
        );
        drop(f);
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Each cause once, with its advice, and never the temporary file's
    /// name: ENOSPC, EROFS, ENOENT, EACCES.
    #[test]
    fn output_errors_say_their_cause_once() {
        let dest = Path::new("/data/out.arrow");
        let cases = [
            (libc::ENOSPC, "No space left on device (os error 28) (the disk is full: free space or write elsewhere with -o)"),
            (libc::EROFS, "Read-only file system (os error 30) (a read-only file system: write elsewhere with -o)"),
            (libc::ENOENT, "No such file or directory (os error 2) (the output directory does not exist)"),
            (libc::EACCES, "Permission denied (os error 13) (permission denied: choose a writable place with -o)"),
        ];
        for (code, expected) in cases {
            let err = AtomicFileError::io(dest, io::Error::from_raw_os_error(code));
            assert_eq!(err.to_string(), format!("/data/out.arrow: {expected}"));
            // No source: `{:#}` (anyhow's chain) would print the cause again.
            assert!(std::error::Error::source(&err).is_none());
            assert_eq!(
                format!("{:#}", anyhow::Error::new(err)),
                format!("/data/out.arrow: {expected}")
            );
        }
        // tempfile's own error (the named fallback) names its temporary
        // file: only the reason is kept.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let raw = tempfile::Builder::new().tempfile_in(&missing).unwrap_err();
        assert!(raw.to_string().contains("at path"), "{raw}");
        let dest = missing.join("out.arrow");
        assert_eq!(
            AtomicFileError::io(&dest, raw).to_string(),
            format!(
                "{}: No such file or directory (os error 2) (the output directory does not exist)",
                dest.display()
            )
        );
    }

    #[test]
    fn a_directory_appears_whole_and_replaces_only_a_data_set() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("ds");
        let manifest = crate::format::manifest::MANIFEST_FILE;
        let built = AtomicDir::create(&parent.path().join("ds/"), false).unwrap();
        assert_eq!(
            built.dest(),
            dest.as_path(),
            "a trailing slash names the same directory"
        );
        std::fs::write(built.path().join(manifest), b"one").unwrap();
        assert!(!dest.exists(), "nothing under the final name before commit");
        built.commit().unwrap();
        assert_eq!(std::fs::read(dest.join(manifest)).unwrap(), b"one");

        let err = AtomicDir::create(&dest, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: already exists; pass --force to replace it",
                dest.display()
            )
        );
        // Abandoned: the temporary directory goes, the data set stays.
        let abandoned = AtomicDir::create(&dest, true).unwrap();
        std::fs::write(abandoned.path().join(manifest), b"two").unwrap();
        drop(abandoned);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
        // Replaced in one step, the old one removed.
        let again = AtomicDir::create(&dest, true).unwrap();
        std::fs::write(again.path().join(manifest), b"two").unwrap();
        again.commit().unwrap();
        assert_eq!(std::fs::read(dest.join(manifest)).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);

        let other = parent.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("keep"), b"").unwrap();
        assert!(matches!(
            AtomicDir::create(&other, true),
            Err(AtomicFileError::NotADataSet(_))
        ));
        // An empty directory is taken without --force.
        let empty = parent.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let into_empty = AtomicDir::create(&empty, false).unwrap();
        std::fs::write(into_empty.path().join(manifest), b"three").unwrap();
        into_empty.commit().unwrap();
        assert_eq!(std::fs::read(empty.join(manifest)).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 3);
    }

    #[test]
    fn stale_temporary_names_are_recognised() {
        assert_eq!(stale_dir_pid(".ds.embedstream-1234-9af.tmp"), Some(1234));
        assert_eq!(stale_dir_pid(".a.b.embedstream-7-0.tmp"), Some(7));
        assert_eq!(stale_dir_pid("ds.embedstream-1234-9af.tmp"), None);
        assert_eq!(stale_dir_pid(".ds.embedstream-1234-xyz.tmp"), None);
        assert_eq!(stale_dir_pid(".ds.embedstream-x-1.tmp"), None);
        assert_eq!(stale_dir_pid(".out.arrow.123-abc-0.tmp"), None);
        assert!(process_alive(std::process::id()));
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
