//! Keeping the bytes of a served file from changing under its readers.
//!
//! A memory map follows the file: truncating it makes a read of a page past
//! the new end raise SIGBUS, and rewriting it changes offsets arrow has
//! already validated (SIGSEGV) or strings (invalid UTF-8 on the wire).
//! [`ProtectedBytes::open`] therefore opens a served file under one of two
//! policies:
//!
//! - **lease** (Linux, a file we own or `CAP_LEASE`): a read lease
//!   (`fcntl(F_SETLEASE, F_RDLCK)`) is taken on the descriptor before the
//!   file is mapped. A process that opens the file for writing, or truncates
//!   it, is blocked by the kernel (up to `/proc/sys/fs/lease-break-time`)
//!   and this process is sent SIGIO first. The server then revokes the
//!   generation ([`Lease::revoke`]), ends its streams, waits for every view
//!   of the map to be dropped, which unmaps it, and releases the lease
//!   ([`Lease::release`]); only then does the writer's `open` return. If
//!   views are still held when the deadline passes, [`Lease::detach`]
//!   replaces the mapped pages with a private copy of the same bytes before
//!   releasing, so no reader can see the write.
//! - **copy**: when no lease can be taken (another filesystem, not the
//!   owner, or the file is open for writing elsewhere), the file is read
//!   into anonymous memory once, so nothing written to the file later can
//!   reach what is served (costs the file's size in memory).

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use arrow_buffer::MutableBuffer;
use bytes::Bytes;

/// How a served file's bytes are protected from writes to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Mapped under a read lease: writers wait until the server lets go.
    Lease,
    /// Read into anonymous memory at open (the reason no lease was taken).
    Copy(NoLease),
    /// Mapped with no protection (one-shot readers: `upload`, `inspect`).
    Unprotected,
}

/// Why no lease could be taken on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLease {
    /// Another process has the file open for writing.
    Writing,
    /// This process neither owns the file nor has CAP_LEASE.
    NotOwner,
    /// The filesystem (or OS) has no leases.
    Unsupported,
    /// Anything else the kernel said.
    Other(String),
}

impl std::fmt::Display for NoLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoLease::Writing => f.write_str("the file is open for writing by another process"),
            NoLease::NotOwner => {
                f.write_str("this process does not own the file and has no CAP_LEASE")
            }
            NoLease::Unsupported => f.write_str("the filesystem does not support leases"),
            NoLease::Other(e) => f.write_str(e),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Lease => f.write_str("read lease (writers wait until the server lets go)"),
            Policy::Copy(why) => write!(f, "private copy in memory (no lease: {why})"),
            Policy::Unprotected => f.write_str("unprotected map"),
        }
    }
}

/// The read lease on one open descriptor of a served file, and the map it
/// guards. Shared by the map's owner (dropped with the last view) and the
/// server's revocation logic.
#[derive(Debug)]
pub struct Lease {
    file: File,
    path: PathBuf,
    revoked: AtomicBool,
    released: AtomicBool,
    /// The mapping while it exists: (address, length). `None` once the
    /// last view dropped it. The lock orders unmapping against [`Lease::detach`].
    region: Mutex<Option<(usize, usize)>>,
}

impl Lease {
    /// The leased file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether another process is waiting to write the file: the kernel
    /// reports a lease being broken as its target type, `F_UNLCK`.
    pub fn breaking(&self) -> bool {
        !self.released.load(Ordering::SeqCst)
            && get_lease(&self.file).is_ok_and(|kind| kind != libc::F_RDLCK)
    }

    /// Mark the generation revoked: readers stop at their next step.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    /// Whether the generation was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Whether the map has been unmapped (every view dropped).
    pub fn unmapped(&self) -> bool {
        self.lock_region().is_none()
    }

    /// Let the writer go on. Idempotent.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            let _ = set_lease(&self.file, libc::F_UNLCK);
        }
    }

    /// Replace the mapped pages, at the same address, with a private copy of
    /// the same bytes, so views still held keep reading what they read
    /// before and nothing the writer does can reach them. Call only while
    /// the lease is held (the bytes are still those validated). Returns
    /// whether a copy was made (false: already unmapped).
    pub fn detach(&self) -> std::io::Result<bool> {
        let guard = self.lock_region();
        let Some((addr, len)) = *guard else {
            return Ok(false);
        };
        detach_region(addr, len)?;
        Ok(true)
    }

    fn lock_region(&self) -> std::sync::MutexGuard<'_, Option<(usize, usize)>> {
        match self.region.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The owner of a leased map: unmaps it when the last `Bytes` view drops.
struct LeasedMap {
    lease: Arc<Lease>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the region is read-only shared memory that lives until `drop`;
// `&[u8]` views of it may be sent to and shared by any thread.
unsafe impl Send for LeasedMap {}
// SAFETY: as above; nothing mutates through `LeasedMap`.
unsafe impl Sync for LeasedMap {}

impl AsRef<[u8]> for LeasedMap {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped PROT_READ from `map_file` until
        // `drop` (a detach swaps in an anonymous copy at the same address
        // and length, never a hole); the file cannot be written or truncated
        // while the lease is held, and after a detach the copy is private.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for LeasedMap {
    fn drop(&mut self) {
        let mut region = self.lease.lock_region();
        // SAFETY: this owner created the mapping and is its last user (every
        // `Bytes` view is gone); the lock keeps `detach` from touching it
        // concurrently.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        *region = None;
    }
}

/// The bytes of a served file, protected under a [`Policy`].
#[derive(Debug, Clone)]
pub struct ProtectedBytes {
    /// The file's bytes (a view of the map, or of the private copy).
    pub bytes: Bytes,
    /// The policy in force.
    pub policy: Policy,
    /// The lease, under [`Policy::Lease`].
    pub lease: Option<Arc<Lease>>,
}

impl ProtectedBytes {
    /// Open `file` (read-only, opened from `path`) under a lease if one can
    /// be taken, else read it into memory.
    ///
    /// The caller must already catch SIGIO (the lease break signal), or a
    /// writer would kill the process instead of waiting.
    pub fn open(file: File, path: &Path) -> std::io::Result<Self> {
        match set_lease(&file, libc::F_RDLCK) {
            Ok(()) => {
                let len = usize::try_from(file.metadata()?.len())
                    .map_err(|_| std::io::Error::other("file too large to map"))?;
                let lease = Arc::new(Lease {
                    file,
                    path: path.to_path_buf(),
                    revoked: AtomicBool::new(false),
                    released: AtomicBool::new(false),
                    region: Mutex::new(None),
                });
                if len == 0 {
                    return Ok(ProtectedBytes {
                        bytes: Bytes::new(),
                        policy: Policy::Lease,
                        lease: Some(lease),
                    });
                }
                let ptr = map_file(&lease.file, len)?;
                *lease.lock_region() = Some((ptr as usize, len));
                let owner = LeasedMap {
                    lease: lease.clone(),
                    ptr,
                    len,
                };
                Ok(ProtectedBytes {
                    bytes: Bytes::from_owner(owner),
                    policy: Policy::Lease,
                    lease: Some(lease),
                })
            }
            Err(e) => {
                let why = lease_refusal(&e);
                Ok(ProtectedBytes {
                    bytes: read_aligned(file)?,
                    policy: Policy::Copy(why),
                    lease: None,
                })
            }
        }
    }
}

/// Whether another process has `path` open for writing (a read lease on
/// it is refused with EAGAIN). Checked before a reload, so that a file being
/// written is not read into memory for nothing. False where leases are not
/// available, or the file cannot be opened.
pub fn open_for_writing_elsewhere(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match set_lease(&file, libc::F_RDLCK) {
        Ok(()) => {
            let _ = set_lease(&file, libc::F_UNLCK);
            false
        }
        Err(e) => lease_refusal(&e) == NoLease::Writing,
    }
}

/// Why no lease was taken.
fn lease_refusal(e: &std::io::Error) -> NoLease {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => NoLease::Writing,
        Some(libc::EACCES) | Some(libc::EPERM) => NoLease::NotOwner,
        Some(libc::EINVAL) | Some(libc::ENOSYS) => NoLease::Unsupported,
        _ => NoLease::Other(e.to_string()),
    }
}

/// The whole file read into 64-byte aligned memory (arrow's alignment, so
/// decoding needs no realignment copy).
fn read_aligned(mut file: File) -> std::io::Result<Bytes> {
    use std::io::Read;
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| std::io::Error::other("file too large to read"))?;
    let mut buffer = MutableBuffer::from_len_zeroed(len);
    file.read_exact(buffer.as_slice_mut())?;
    // A file that grew meanwhile is read as it was at `len` bytes; one that
    // shrank fails `read_exact` above.
    let buffer: arrow_buffer::Buffer = buffer.into();
    Ok(Bytes::from_owner(buffer))
}

fn map_file(file: &File, len: usize) -> std::io::Result<*const u8> {
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
    // descriptor; the kernel picks the address. The result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ptr as *const u8)
}

#[cfg(target_os = "linux")]
fn detach_region(addr: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: a fresh anonymous private mapping; checked below.
    let copy = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if copy == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `addr..addr+len` is our live read-only mapping (the caller
    // holds the region lock, so it is not being unmapped) and `copy` is a
    // distinct writable mapping of the same length.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, copy.cast::<u8>(), len) };
    // SAFETY: `copy` is ours and of length `len`; moving it over
    // `addr..addr+len` atomically replaces the file's pages with identical
    // private ones (MREMAP_FIXED unmaps the old range as part of the move),
    // so a reader never sees a hole. The owner's later `munmap(addr, len)`
    // unmaps the copy.
    let moved = unsafe {
        libc::mprotect(copy, len, libc::PROT_READ);
        libc::mremap(
            copy,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            addr as *mut libc::c_void,
        )
    };
    if moved == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        // SAFETY: the move failed, so `copy` is still ours to unmap.
        unsafe { libc::munmap(copy, len) };
        return Err(e);
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn detach_region(_addr: usize, _len: usize) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(target_os = "linux")]
fn set_lease(file: &File, kind: libc::c_int) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, kind) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn get_lease(file: &File) -> std::io::Result<libc::c_int> {
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    match unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLEASE) } {
        -1 => Err(std::io::Error::last_os_error()),
        kind => Ok(kind),
    }
}

#[cfg(not(target_os = "linux"))]
fn set_lease(_file: &File, _kind: libc::c_int) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(not(target_os = "linux"))]
fn get_lease(_file: &File) -> std::io::Result<libc::c_int> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("served.arrow");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn a_file_open_for_writing_is_copied_and_later_writes_do_not_reach_it() {
        let original: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (_dir, path) = file_with(&original);
        // Another writer holds the file open: no read lease can be taken.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let opened = ProtectedBytes::open(File::open(&path).unwrap(), &path).unwrap();
        assert!(open_for_writing_elsewhere(&path));
        assert_eq!(opened.policy, Policy::Copy(NoLease::Writing));
        assert!(opened.lease.is_none());
        assert_eq!(opened.bytes.as_ptr() as usize % 64, 0, "arrow-aligned");
        writer.write_all(&[0xff; 4096]).unwrap();
        writer.set_len(10).unwrap();
        assert_eq!(&opened.bytes[..], &original[..]);
    }

    #[test]
    fn a_detached_map_keeps_its_bytes_after_the_file_is_truncated() {
        let original: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 13) as u8).collect();
        let (_dir, path) = file_with(&original);
        assert!(!open_for_writing_elsewhere(&path));
        let opened = ProtectedBytes::open(File::open(&path).unwrap(), &path).unwrap();
        assert_eq!(
            opened.policy,
            Policy::Lease,
            "leases work on the test's temp dir"
        );
        let lease = opened.lease.clone().unwrap();
        assert!(!lease.breaking());
        let view = opened.bytes.slice(4096..);
        drop(opened);
        assert!(lease.detach().unwrap(), "a view was still held");
        lease.release();
        // No lease any more: this truncation does not signal us, and the
        // view reads the private copy, not the (now missing) pages.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(&view[..], &original[4096..]);
        drop(view);
        assert!(lease.unmapped());
        assert!(!lease.detach().unwrap(), "nothing left to copy");
    }
}
