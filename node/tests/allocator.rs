//! The binaries' allocator gives freed memory back: at once when asked to, and after its delay
//! through the daemon's periodic release. A test binary of its own, with the binaries' global
//! allocator and one test, so that nothing else allocates meanwhile.

use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: causeway::allocator::MiMalloc = causeway::allocator::MiMalloc;

/// Allocated and freed by each round: far above what the test harness holds.
const ROUND_BYTES: usize = 256 << 20;
/// In blocks of this size, as redb's caches and the catalog's reads free them.
const BLOCK: usize = 64 << 10;
/// How long the periodic release may take to give back memory freed a [`PURGE_DELAY`] ago.
///
/// [`PURGE_DELAY`]: causeway::allocator::PURGE_DELAY
const RELEASE_DEADLINE: Duration = Duration::from_secs(60);

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .expect("VmRSS value")
        .parse()
        .expect("VmRSS kB");
    kb * 1024
}

/// Allocates and touches [`ROUND_BYTES`], frees it, and returns the RSS while it was held.
fn allocate_and_free() -> usize {
    let blocks: Vec<Vec<u8>> = (0..ROUND_BYTES / BLOCK).map(|i| vec![i as u8 | 1; BLOCK]).collect();
    let held = rss();
    drop(blocks);
    held
}

#[test]
fn freed_memory_goes_back_to_the_system() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: reads RSS from /proc");
        return;
    }
    causeway::allocator::configure();
    let before = rss();

    // What the daemon does every `RELEASE_EVERY`: memory freed while it was quiet goes back.
    let held = allocate_and_free();
    assert!(
        held >= before + ROUND_BYTES / 2,
        "the blocks were resident: {before} -> {held}"
    );
    let deadline = Instant::now() + RELEASE_DEADLINE;
    loop {
        causeway::allocator::release_expired();
        let now = rss();
        if now < before + ROUND_BYTES / 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {now} bytes resident after {RELEASE_DEADLINE:?} (held {held})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // What the bench does before reading RSS: everything free goes back at once.
    let held = allocate_and_free();
    assert!(
        held >= before + ROUND_BYTES / 2,
        "the blocks were resident again: {before} -> {held}"
    );
    causeway::allocator::release_all();
    let after = rss();
    assert!(
        after < before + ROUND_BYTES / 4,
        "{after} bytes resident after release_all (held {held})"
    );
}
