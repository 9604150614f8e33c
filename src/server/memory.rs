//! server::memory: hands freed memory back to the OS after load, so an idle node's RSS returns
//! close to where it started. Only glibc's malloc needs this (on other C libraries these are
//! no-ops). Three causes, measured with `scripts/attack.py frames`:
//! - glibc keeps one heap (arena) per thread that ever contended, up to 8 per core, and a heap
//!   keeps its peak: every worker and blocking thread ends up holding its own high-water mark;
//! - glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after
//!   the first large request every request buffer comes from those heaps instead of its own
//!   mapping that is unmapped on free;
//! - memory freed inside a heap is only returned from the heap's top unless trimmed.

use std::time::Duration;

use tokio::sync::watch;

/// Heaps glibc may create: enough that two worker threads rarely wait on each other's lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS_MAX: libc::c_int = 2;
/// Blocks from this size (the largest request frames) get their own mapping, returned to the OS
/// the moment they are freed. Set explicitly, which also stops glibc from raising it (to 32 MiB).
/// Not lower: a fresh mapping costs a page fault per 4 KiB touched, which at 128 KiB made
/// reading a burst of frames twice as slow; smaller blocks come from the heaps the trim empties.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const MALLOC_MMAP_THRESHOLD_BYTES: libc::c_int = 4 * 1024 * 1024;
/// 32-bit glibc refuses a threshold above half its heap size (HEAP_MAX_SIZE / 2 = 512 KiB).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "32"))]
const MALLOC_MMAP_THRESHOLD_BYTES: libc::c_int = 512 * 1024;
/// How often free memory inside the heaps is handed back (malloc_trim).
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Sets the allocator's limits; call before the runtime starts its threads.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; it is safe to call at any time.
        let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS_MAX) };
        // SAFETY: as above.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) };
        if arenas != 1 || mmap != 1 {
            tracing::warn!(
                "cannot set malloc's arena count or mmap threshold; memory may stay at its peak after load"
            );
        }
    }
}

/// Returns the free memory inside the allocator's heaps to the OS.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every [`TRIM_INTERVAL`] until the node stops.
pub async fn trim_loop(mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_INTERVAL) => trim(),
            _ = stop.changed() => return,
        }
    }
}
