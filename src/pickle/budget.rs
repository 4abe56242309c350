//! The memory budget of the value arena.
//!
//! Everything the machine holds while it runs (the [`super::Heap`] vectors and
//! every container inside it, the stack, the memo, nesting depths and decoded
//! payloads) grows through [`Budget::reserve`] or [`Budget::charge`]. Both
//! count the bytes *reserved* (vector capacity, not length), refuse before
//! allocating once the total would pass the limit, and reserve with
//! `try_reserve_exact`, so neither a hostile pickle nor a failed allocation
//! can abort the process.

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exhausted {
    /// The budget would be exceeded.
    Budget,
    /// The allocator refused (`try_reserve` failed) this many bytes.
    Alloc(usize),
    /// More than `u32::MAX` items of one kind (ids are 32-bit).
    Count,
}

/// Bytes the arena may reserve, and bytes reserved so far.
#[derive(Debug)]
pub(super) struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Budget {
        Budget { limit, used: 0 }
    }

    /// The limit, in bytes.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved so far.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Count `bytes` held outside any vector reserved here (decoded payloads).
    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), Exhausted> {
        match self.used.checked_add(bytes) {
            Some(u) if u <= self.limit => {
                self.used = u;
                Ok(())
            }
            _ => Err(Exhausted::Budget),
        }
    }

    /// Make room for `extra` more items in `v`, growing its capacity
    /// geometrically but never past what the budget has left.
    #[inline]
    pub(super) fn reserve<T>(&mut self, v: &mut Vec<T>, extra: usize) -> Result<(), Exhausted> {
        if v.capacity() - v.len() >= extra {
            return Ok(());
        }
        self.grow(v, extra)
    }

    /// Append `items` to `v` within the budget.
    pub(super) fn extend<T: Clone>(
        &mut self,
        v: &mut Vec<T>,
        items: &[T],
    ) -> Result<(), Exhausted> {
        self.reserve(v, items.len())?;
        v.extend_from_slice(items);
        Ok(())
    }

    #[cold]
    fn grow<T>(&mut self, v: &mut Vec<T>, extra: usize) -> Result<(), Exhausted> {
        let size = std::mem::size_of::<T>();
        let cap = v.capacity();
        let need = v.len().checked_add(extra).ok_or(Exhausted::Budget)?;
        if size == 0 {
            return Ok(());
        }
        // Items the budget still affords beyond the current capacity.
        let room = (self.limit.saturating_sub(self.used)) / size;
        // The first reservation is exact (most containers never grow past
        // their first batch of items); later ones double.
        let target = if cap == 0 {
            need
        } else {
            need.max(cap.saturating_mul(2))
        }
        .min(cap.saturating_add(room));
        if target < need {
            return Err(Exhausted::Budget);
        }
        v.try_reserve_exact(target - v.len())
            .map_err(|_| Exhausted::Alloc((target - cap).saturating_mul(size)))?;
        // The allocator may hand out more than asked: count what it gave.
        self.used = self
            .used
            .saturating_add((v.capacity() - cap).saturating_mul(size));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_within_the_limit_and_counts_capacity() {
        let mut b = Budget::new(1000);
        let mut v: Vec<u64> = Vec::new();
        for i in 0..100 {
            b.reserve(&mut v, 1).unwrap();
            v.push(i);
        }
        assert_eq!(b.used(), v.capacity() * 8);
        assert!(b.used() <= 1000);
        // 125 u64 fit in 1000 bytes; 126 do not.
        b.reserve(&mut v, 25).unwrap();
        assert_eq!(b.reserve(&mut v, 26), Err(Exhausted::Budget));
        assert_eq!(b.charge(1), Err(Exhausted::Budget));
    }
}
