//! Process-wide monotonic clock in nanoseconds and milliseconds.
//!
//! Shared state that must be read lock-free on the hot path (ejection
//! deadlines, EWMA timestamps) stores plain integers from this clock instead
//! of `Instant`s, so it fits in atomics.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock epoch; never 0.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

/// Milliseconds since the process's clock epoch.
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Converts an `Instant` to this clock's nanoseconds.
pub fn ns_of(instant: Instant) -> u64 {
    instant.saturating_duration_since(epoch()).as_nanos() as u64 + 1
}

/// For rings of per-second slots: moves the slot tagged `tag` to `second`
/// and returns true for exactly one caller when the slot held an older
/// second, which must then clear it. Lock-free; a writer racing the clear
/// may lose a sample, which per-second statistics absorb.
#[inline]
pub fn claim_second(tag: &AtomicU64, second: u64) -> bool {
    let seen = tag.load(Relaxed);
    seen != second && tag.compare_exchange(seen, second, Relaxed, Relaxed).is_ok()
}
