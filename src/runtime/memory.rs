//! Handing memory the operator no longer uses back to the system.
//!
//! glibc's allocator keeps what a peak used — the first listing of every cache, a burst of
//! reconciles — in its heaps, between the long-lived cached objects allocated meanwhile, so the
//! resident set stays at the peak. `malloc_trim` gives the free pages inside the heaps back. The
//! operator asks for it every [`PERIOD`]; it takes a few milliseconds with a cache of thousands of
//! objects. With any other allocator (musl) this does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free memory is handed back.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Hands free memory back every [`PERIOD`] until `shutdown`.
pub async fn trim_periodically(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => trim(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// Gives the allocator's free pages back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds as free; it is safe to call
    // from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the allocator's free pages back to the system (nothing to do with this allocator).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident set of this process, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_returns_freed_memory() {
        // Many small allocations (below the mmap threshold, so they live in the heap), every
        // tenth one kept, as a cache's objects stay while a listing's pages go: the freed memory
        // lies between live blocks, and free() alone gives none of it back.
        let mut blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 2000]).collect();
        let kept: Vec<Vec<u8>> = blocks.drain(..).step_by(10).collect();
        let before = rss_kib();
        trim();
        let after = rss_kib();
        assert!(kept.iter().all(|b| b.len() == 2000));
        // About 70 MiB was freed; at least half of it must go back.
        assert!(before > after + 35 * 1024, "RSS {before} KiB before trimming, {after} KiB after");
    }
}
