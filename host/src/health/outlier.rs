//! Passive outlier detection, in the manner of Envoy's: a backend that fails
//! `consecutive_failures` attempts in a row (connect failure, timeout or 5xx)
//! is ejected for `base_ejection_time × times ejected`, capped at
//! `max_ejection_time`, and returns by itself when that time is up. No more
//! than `max_ejection_percent` of an upstream's backends are ejected at once
//! (at least one may always be, unless the percent is 0). A backend that
//! stays clean for `max_ejection_time` after returning starts over at one
//! base time.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::clock;
use crate::proxy::Upstream;

/// What one attempt against a backend came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response(u16),
    /// No response: connect failure, timeout, broken connection.
    Failed,
}

/// Records an attempt that ended at clock time `done_ns` after `elapsed`:
/// counters, metrics, the backend's window, and the outlier detector.
pub fn record_outcome(
    upstream: &Upstream,
    idx: usize,
    outcome: Outcome,
    elapsed: Duration,
    done_ns: u64,
) {
    let backend = &upstream.backends[idx];
    let state = &backend.state;
    state.requests.fetch_add(1, Relaxed);
    let status = match outcome {
        Outcome::Response(s) => Some(s),
        Outcome::Failed => None,
    };
    backend.metrics.requests.record(status);
    backend.metrics.duration.record(elapsed.as_secs_f64());
    let failed = status.is_none_or(|s| s >= 500);
    if failed {
        state.errors.fetch_add(1, Relaxed);
    }
    let latency_us = elapsed.as_micros() as u64;
    state
        .series
        .record(done_ns / 1_000_000, Some(latency_us), failed);
    let threshold = upstream.outlier.consecutive_failures;
    if threshold == 0 {
        return;
    }
    if !failed {
        if state.consecutive_failures.load(Relaxed) != 0 {
            state.consecutive_failures.store(0, Relaxed);
        }
        return;
    }
    if state.consecutive_failures.fetch_add(1, Relaxed) + 1 >= threshold {
        try_eject(upstream, idx, threshold);
    }
}

fn try_eject(upstream: &Upstream, idx: usize, threshold: u32) {
    let _decision = upstream
        .ejection_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let now = clock::now_ms();
    let backend = &upstream.backends[idx];
    let state = &backend.state;
    if state.is_ejected(now) || state.consecutive_failures.load(Relaxed) < threshold {
        return;
    }
    let failures = state.consecutive_failures.swap(0, Relaxed);
    let o = &upstream.outlier;
    let total = upstream.backends.len();
    let ejected = upstream
        .backends
        .iter()
        .filter(|b| b.state.is_ejected(now))
        .count();
    let allowed = (total * o.max_ejection_percent as usize / 100)
        .max(usize::from(o.max_ejection_percent > 0));
    if ejected + 1 > allowed {
        tracing::debug!(
            upstream = %upstream.name, backend = %backend.addr,
            "not ejected: {ejected} of {total} backends already are (max_ejection_percent = {})",
            o.max_ejection_percent
        );
        return;
    }
    let max = o.max_ejection_time.get();
    let last_end = state.ejected_until_ms();
    if last_end != 0 && now > last_end + max.as_millis() as u64 {
        state.ejections.store(0, Relaxed);
    }
    let times = state.ejections.fetch_add(1, Relaxed) + 1;
    let duration = o.base_ejection_time.get().saturating_mul(times).min(max);
    state.set_ejected_until(now + duration.as_millis() as u64);
    backend.metrics.ejections.increment(1);
    tracing::warn!(
        upstream = %upstream.name, backend = %backend.addr,
        "ejected for {} after {failures} consecutive failures (ejection #{times})",
        humantime::format_duration(duration)
    );
}
