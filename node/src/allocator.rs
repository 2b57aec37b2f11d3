//! The memory allocator of Causeway's binaries: mimalloc, told to give freed memory back to the
//! system at once. Each binary names it as its global allocator and calls [`configure`] first.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h of the pinned libmimalloc-sys (0.1.49, mimalloc v3),
/// which does not export it as a constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return freed memory to the system as soon as it is freed. By default it waits
/// a second, and only notices the time passed on a later allocation: a node that freed a large
/// read (a catalog listing, a snapshot it sent) and then went quiet kept that memory resident.
pub fn configure() {
    // SAFETY: sets one integer option; mimalloc allows changing options at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_number_names_the_purge_delay() {
        // SAFETY: reads and sets one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // 1,000 ms is the purge delay's default in this version and no neighbour's.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000);
        }
        configure();
        assert_eq!(get(), 0);
    }
}
