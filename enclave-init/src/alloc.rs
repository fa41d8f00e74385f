//! The enclave's allocator: the system's, except that a large block (the lot table and the
//! other structures an auction reserves at open, hundreds of MiB at the default limits) is
//! faulted in by the kernel in one call instead of one page fault per 4 KiB page as the
//! session first writes it. The session writes every page of its reservation at open anyway
//! (so that the memory is really there, `lots::filled`); asking for the pages first costs
//! the same memory and saves tens of thousands of traps, which are dearer still in a VM.
//! The advice is only that: a kernel without `MADV_POPULATE_WRITE` (before Linux 5.14) says
//! no, and the pages come one fault at a time as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks from this size up are faulted in when they are made.
const LARGE: usize = 16 << 20;

/// Off until the process says it is the enclave: `bidctl` has this allocator too, and its other
/// roles (the parent above all) reserve large blocks they fill only in part.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub struct Prefaulting;

/// From now on, large blocks are faulted in when made: for the enclave's process only.
pub fn prefault_large_blocks() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn large(size: usize) -> bool {
    size >= LARGE && ENABLED.load(Ordering::Relaxed)
}

// SAFETY: every call goes to `System` with the caller's own arguments; `populate` only advises
// the kernel about whole pages inside a block `System` just returned.
unsafe impl GlobalAlloc for Prefaulting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if large(layout.size()) {
            populate(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above. Zeroed blocks come from fresh mappings already: left lazy.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if large(new_size) && new_size > layout.size() {
            populate(p, new_size);
        }
        p
    }
}

/// Asks the kernel to fault in the whole pages of `len` bytes at `p` for writing.
fn populate(p: *mut u8, len: usize) {
    if p.is_null() {
        return;
    }
    const PAGE: usize = 4096;
    let start = (p as usize).next_multiple_of(PAGE);
    let end = (p as usize + len) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the block just allocated, which this process owns;
        // the advice neither moves nor changes its contents.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}
