//! The memory allocator of Causeway's binaries: mimalloc, on small pages only, keeping freed
//! memory for reuse a while before it goes back to the system. Each binary names it as its
//! global allocator and calls [`configure`] first; the daemon calls [`release_expired`] every
//! [`RELEASE_EVERY`].

use std::time::Duration;

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h of the pinned libmimalloc-sys (0.1.49, mimalloc v3),
/// which does not export it as a constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped for reuse before mimalloc may give it back. Giving it
/// back at once (a delay of 0) made every reuse fault fresh pages in again: at three nodes ×
/// 256 writers the kernel zeroing them took about a tenth of the CPU.
pub const PURGE_DELAY: Duration = Duration::from_secs(1);

/// How often the daemon asks mimalloc to give back memory whose delay has passed. mimalloc
/// checks only when it next allocates in certain paths, so a node that freed a large read (a
/// catalog listing, a snapshot it sent) and then went quiet would keep that memory resident.
pub const RELEASE_EVERY: Duration = Duration::from_secs(5);

/// Sets the purge delay and turns transparent huge pages off for the process. mimalloc asks
/// for huge pages on its arenas, so a page touched again after a purge faulted in, and zeroed,
/// 2 MiB at a time.
pub fn configure() {
    // SAFETY: sets one integer option; mimalloc allows changing options at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY.as_millis() as _) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and changes nothing but this process's
    // use of transparent huge pages. A kernel without it refuses, and the process runs as before.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Gives back to the system the freed memory whose [`PURGE_DELAY`] has passed.
pub fn release_expired() {
    // SAFETY: collects the calling thread's heap and purges expired memory; no preconditions.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Gives back every free page now, whatever its delay: for measuring the memory a process
/// really holds.
pub fn release_all() {
    // SAFETY: as above, forced.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_number_names_the_purge_delay() {
        // SAFETY: reads and sets one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // 1,000 ms is the purge delay's default in this version and no neighbour's: set another
        // value first to see that the number names it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000);
        }
        // SAFETY: sets one integer option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 7) };
        assert_eq!(get(), 7);
        configure();
        assert_eq!(get(), PURGE_DELAY.as_millis() as std::os::raw::c_long);
    }
}
