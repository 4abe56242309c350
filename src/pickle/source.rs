//! The input: a read-only memory map shared as zero-copy [`Bytes`], with
//! page release behind the reader so the file does not stay resident.

use std::{cell::Cell, path::Path, sync::Arc};

use bytes::Bytes;
use memmap2::Mmap;

use super::error::PickleError;

/// Owner handed to [`Bytes::from_owner`]; keeps the map alive while any
/// slice of it is.
struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Release granularity: pages are dropped in runs of at least this much.
const RELEASE_CHUNK: usize = 4 << 20;

/// The pickle's bytes, memory-mapped (or in memory for tests and fuzzing).
///
/// A mapped file must not be changed or truncated by anyone else while it is
/// read (the contract of every memory map; see `open`).
pub struct PickleSource {
    data: Bytes,
    map: Option<Arc<Mmap>>,
    released: Cell<usize>,
    page: usize,
}

impl std::fmt::Debug for PickleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickleSource")
            .field("len", &self.data.len())
            .field("mapped", &self.map.is_some())
            .finish()
    }
}

impl PickleSource {
    /// Map `path` read-only and advise sequential access.
    pub fn open(path: &Path) -> Result<PickleSource, PickleError> {
        let io = |source| PickleError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Ok(PickleSource::from_bytes(Bytes::new()));
        }
        // SAFETY: `Mmap::map` is unsafe because the file may be changed or
        // truncated by another process while it is mapped: every `&[u8]` into
        // the map (and so every payload slice, and the UTF-8 checked once by
        // `Utf8Bytes::new`) assumes its bytes stay as read. We map read-only
        // and never write the input; like every memory-mapped reader we
        // require that nobody else changes or truncates it during the run
        // (documented on `PickleSource` and in the `convert` help).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        #[cfg(unix)]
        {
            let _ = map.advise(memmap2::Advice::Sequential);
        }
        let map = Arc::new(map);
        let data = Bytes::from_owner(MapOwner(map.clone()));
        Ok(PickleSource {
            data,
            map: Some(map),
            released: Cell::new(0),
            page: page_size(),
        })
    }

    /// Bytes already in memory.
    pub fn from_bytes(data: Bytes) -> PickleSource {
        PickleSource {
            data,
            map: None,
            released: Cell::new(0),
            page: page_size(),
        }
    }

    /// All the input.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// Offset of `slice` inside the input, if it is a slice of it.
    pub fn offset_of(&self, slice: &[u8]) -> Option<usize> {
        let base = self.data.as_ptr() as usize;
        let p = slice.as_ptr() as usize;
        (p >= base && p + slice.len() <= base + self.data.len()).then(|| p - base)
    }

    /// Tell the kernel that bytes before `offset` will not be needed soon:
    /// their pages leave this process's resident set (they are re-read from
    /// the page cache if touched again). No-op for in-memory input.
    pub fn release_before(&self, offset: usize) {
        let Some(map) = &self.map else { return };
        let end = (offset.min(map.len()) / self.page) * self.page;
        let start = self.released.get();
        if end < start + RELEASE_CHUNK {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: the range lies inside the map (`end` is clamped to its
            // length, and the early return above keeps `start` below `end`). The map is read-only and file-backed
            // (memmap2 maps it MAP_SHARED), so MADV_DONTNEED only drops
            // page-table entries: later reads fault the same file contents
            // back in from the page cache, and no reference into the range
            // sees different bytes or dangles.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
        self.released.set(end);
    }

    /// Another handle on the same input (the map is shared, not copied),
    /// releasing pages on its own: for readers that come back to the input
    /// after the first pass.
    pub fn share(&self) -> PickleSource {
        PickleSource {
            data: self.data.clone(),
            map: self.map.clone(),
            released: Cell::new(0),
            page: self.page,
        }
    }

    /// Start releasing again from the beginning (for a second pass).
    pub fn rewind_release(&self) {
        self.released.set(0);
    }
}

fn page_size() -> usize {
    4096
}
