//! [`AlignedBuf`]: a heap buffer whose address and length are multiples of [`SECTOR_BYTES`], the
//! alignment O_DIRECT asks of buffers.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::SECTOR_BYTES;

/// A zero-initialised heap buffer of whole sectors, aligned to [`SECTOR_BYTES`].
///
/// Invariants: `ptr` is aligned to 4096 and points to `cap_sectors · 4096` initialised bytes
/// allocated with `AlignedBuf::layout(cap_sectors)` (or is a dangling aligned pointer when
/// `cap_sectors == 0`); `len_sectors <= cap_sectors`. Growing keeps the first bytes, like
/// `Vec::resize`; bytes past the old length are zero or left over from an earlier, longer use.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len_sectors: usize,
    cap_sectors: usize,
}

// SAFETY: `AlignedBuf` owns its allocation exclusively (like `Vec<u8>`); no interior mutability.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give `&[u8]` access to initialised bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer (no allocation).
    pub const fn new() -> Self {
        Self {
            ptr: Self::dangling(),
            len_sectors: 0,
            cap_sectors: 0,
        }
    }

    /// A zeroed buffer of `sectors` sectors.
    pub fn with_sectors(sectors: usize) -> Self {
        let mut buf = Self::new();
        buf.resize_sectors(sectors);
        buf
    }

    const fn dangling() -> NonNull<u8> {
        /// A type with the sector alignment, only for an aligned dangling pointer.
        #[repr(C, align(4096))]
        struct Sector([u8; SECTOR_BYTES]);
        // Non-null and aligned, never dereferenced (length 0).
        NonNull::<Sector>::dangling().cast::<u8>()
    }

    fn layout(sectors: usize) -> Layout {
        let bytes = sectors
            .checked_mul(SECTOR_BYTES)
            .expect("AlignedBuf: size overflows usize");
        Layout::from_size_align(bytes, SECTOR_BYTES).expect("AlignedBuf: size overflows isize")
    }

    /// Length in sectors.
    pub fn len_sectors(&self) -> usize {
        self.len_sectors
    }

    /// Length in bytes (a multiple of [`SECTOR_BYTES`]).
    pub fn len_bytes(&self) -> usize {
        self.len_sectors * SECTOR_BYTES
    }

    /// Allocated capacity in sectors.
    pub fn capacity_sectors(&self) -> usize {
        self.cap_sectors
    }

    /// Sets the length to `sectors` sectors, reallocating when the capacity is too small (the
    /// first `min(old, new)` sectors are kept). Shrinking keeps the allocation, so one buffer
    /// reused across queries allocates only until it has seen the largest batch.
    pub fn resize_sectors(&mut self, sectors: usize) {
        if sectors > self.cap_sectors {
            let new_cap = sectors.max(self.cap_sectors.saturating_mul(2));
            let layout = Self::layout(new_cap);
            // SAFETY: `layout` has a non-zero size (new_cap >= sectors > cap_sectors >= 0).
            let raw = unsafe { alloc::alloc_zeroed(layout) };
            let Some(new_ptr) = NonNull::new(raw) else {
                alloc::handle_alloc_error(layout);
            };
            if self.cap_sectors > 0 {
                // SAFETY: both regions are valid for `len_bytes` bytes (old len <= old cap <
                // new cap), and they are distinct allocations, so they do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.ptr.as_ptr(),
                        new_ptr.as_ptr(),
                        self.len_bytes(),
                    );
                }
                // SAFETY: `ptr` was allocated with exactly `layout(cap_sectors)` and is freed once.
                unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap_sectors)) };
            }
            self.ptr = new_ptr;
            self.cap_sectors = new_cap;
        }
        self.len_sectors = sectors;
    }

    /// Sets the length to `bytes` bytes, which must be a multiple of [`SECTOR_BYTES`]; returns
    /// `false` (and leaves the buffer unchanged) when it is not.
    pub fn resize_bytes(&mut self, bytes: usize) -> bool {
        if !bytes.is_multiple_of(SECTOR_BYTES) {
            return false;
        }
        self.resize_sectors(bytes / SECTOR_BYTES);
        true
    }

    /// Raw pointer to the first byte, aligned to [`SECTOR_BYTES`]. For the I/O backends, which
    /// hand disjoint sub-ranges to the kernel or to worker threads.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap_sectors > 0 {
            // SAFETY: `ptr` was allocated with exactly `layout(cap_sectors)` and is freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap_sectors)) };
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: by the type's invariant, `ptr` is non-null, aligned, and valid for
        // `len_bytes() <= cap_sectors · 4096` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len_bytes()) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only live reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len_bytes()) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        let mut copy = Self::with_sectors(self.len_sectors);
        copy.copy_from_slice(self);
        copy
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len_sectors", &self.len_sectors)
            .field("cap_sectors", &self.cap_sectors)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_zeroed_and_keeps_prefix_when_growing() {
        let mut b = AlignedBuf::new();
        assert_eq!(b.len(), 0);
        assert_eq!(b.as_ptr() as usize % SECTOR_BYTES, 0);
        b.resize_sectors(3);
        assert_eq!(b.len(), 3 * SECTOR_BYTES);
        assert_eq!(b.as_ptr() as usize % SECTOR_BYTES, 0);
        assert!(b.iter().all(|&x| x == 0));
        b[5] = 7;
        b[3 * SECTOR_BYTES - 1] = 9;
        b.resize_sectors(10);
        assert_eq!(b.as_ptr() as usize % SECTOR_BYTES, 0);
        assert_eq!((b[5], b[3 * SECTOR_BYTES - 1]), (7, 9));
        let cap = b.capacity_sectors();
        b.resize_sectors(1);
        assert_eq!(b.capacity_sectors(), cap);
        assert_eq!(b.len_bytes(), SECTOR_BYTES);
        assert!(!b.resize_bytes(100));
        assert!(b.resize_bytes(2 * SECTOR_BYTES));
        let c = b.clone();
        assert_eq!(&c[..], &b[..]);
        assert_eq!(c[5], 7);
    }
}
