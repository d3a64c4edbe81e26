//! Passive outlier detection, in the manner of Envoy's, with defaults that
//! never turn a small fault into an outage.
//!
//! - A backend is ejected after `consecutive_failures` *gateway* failures
//!   in a row: no response (connect failure, broken connection, timeout)
//!   or a 502, 503 or 504 from it. An application's own 500s do not count
//!   unless `consecutive_5xx` is set, as nginx's `max_fails` does not count
//!   them by default: a few failing URLs must not take a healthy backend
//!   out.
//! - Optionally (`success_rate`), every interval the backends whose success
//!   rate falls well below their peers' are ejected.
//! - An ejection lasts `base_ejection_time × times ejected`, capped at
//!   `max_ejection_time`; a backend that stays clean for
//!   `max_ejection_time` after returning starts over at one base time.
//! - No more than `max_ejection_percent` of an upstream's backends are
//!   ejected at once, and never the last one that is not: an upstream
//!   always has a backend to send to. (Below the upstream's
//!   `panic_threshold`, traffic is spread over all backends anyway.)

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::clock;
use crate::config::SuccessRateSection;
use crate::proxy::Upstream;

/// What one attempt against a backend came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response(u16),
    /// No response: connect failure, timeout, broken connection.
    Failed,
}

impl Outcome {
    /// A failure of the path to the application rather than of the
    /// application: what a gateway reports as 502, 503 or 504.
    fn is_gateway_failure(self) -> bool {
        match self {
            Outcome::Failed => true,
            Outcome::Response(s) => matches!(s, 502..=504),
        }
    }

    fn is_5xx(self) -> bool {
        match self {
            Outcome::Failed => true,
            Outcome::Response(s) => s >= 500,
        }
    }
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
    let failed = outcome.is_5xx();
    if failed {
        state.errors.fetch_add(1, Relaxed);
    }
    let latency_us = elapsed.as_micros() as u64;
    state
        .series
        .record(done_ns / 1_000_000, Some(latency_us), failed);
    let o = &upstream.outlier;
    let count = |counter: &std::sync::atomic::AtomicU32, hit: bool| -> u32 {
        if hit {
            counter.fetch_add(1, Relaxed) + 1
        } else {
            // Most attempts succeed: a load first, to skip the store.
            if counter.load(Relaxed) != 0 {
                counter.store(0, Relaxed);
            }
            0
        }
    };
    let gateway = count(&state.consecutive_failures, outcome.is_gateway_failure());
    let any_5xx = count(&state.consecutive_5xx, failed);
    let tripped = (o.consecutive_failures > 0 && gateway >= o.consecutive_failures)
        || (o.consecutive_5xx > 0 && any_5xx >= o.consecutive_5xx);
    if tripped {
        let why = if o.consecutive_failures > 0 && gateway >= o.consecutive_failures {
            format!("{gateway} consecutive gateway failures")
        } else {
            format!("{any_5xx} consecutive 5xx")
        };
        try_eject(upstream, idx, &why);
    }
}

/// Ejects backend `idx` unless the limits forbid it; `why` goes to the log.
fn try_eject(upstream: &Upstream, idx: usize, why: &str) -> bool {
    let _decision = upstream
        .learned
        .ejection_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let now = clock::now_ms();
    let backend = &upstream.backends[idx];
    let state = &backend.state;
    if state.is_ejected(now) {
        return false;
    }
    state.consecutive_failures.store(0, Relaxed);
    state.consecutive_5xx.store(0, Relaxed);
    let o = &upstream.outlier;
    let total = upstream.backends.len();
    let ejected = upstream
        .backends
        .iter()
        .filter(|b| b.state.is_ejected(now))
        .count();
    let allowed = (total * o.max_ejection_percent as usize / 100)
        .max(usize::from(o.max_ejection_percent > 0))
        .min(total - 1);
    if ejected + 1 > allowed {
        tracing::debug!(
            upstream = %upstream.name, backend = %backend.addr,
            "not ejected after {why}: {ejected} of {total} backends already are \
             (max_ejection_percent = {}; the last backend is never ejected)",
            o.max_ejection_percent
        );
        return false;
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
        "ejected for {} after {why} (ejection #{times})",
        humantime::format_duration(duration)
    );
    true
}

/// Success rates below `mean - stdev_factor × stdev`, over the backends
/// with at least `min_requests` attempts, when there are `min_hosts` of
/// them: the outliers, as indices. `rates` is `(requests, errors)`.
fn success_rate_outliers(rates: &[(u64, u64)], section: &SuccessRateSection) -> Vec<usize> {
    let counted: Vec<(usize, f64)> = rates
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| *n >= u64::from(section.min_requests))
        .map(|(i, (n, e))| (i, 1.0 - *e as f64 / *n as f64))
        .collect();
    if counted.len() < section.min_hosts as usize {
        return Vec::new();
    }
    let mean = counted.iter().map(|(_, r)| r).sum::<f64>() / counted.len() as f64;
    let variance =
        counted.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / counted.len() as f64;
    let floor = mean - section.stdev_factor * variance.sqrt();
    counted
        .into_iter()
        .filter(|(_, r)| *r < floor)
        .map(|(i, _)| i)
        .collect()
}

/// Runs success-rate ejection for `upstream` every interval, until dropped
/// with its task.
pub async fn sweep_success_rates(upstream: Arc<Upstream>, section: SuccessRateSection) {
    let interval = section.interval.get();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now_s = clock::now_ms() / 1000;
        let span = interval.as_secs().clamp(1, 10);
        // Whole seconds only: the current one is still filling.
        let rates: Vec<(u64, u64)> = upstream
            .backends
            .iter()
            .map(|b| {
                let w = b.state.series.totals(now_s.saturating_sub(span), now_s);
                (w.requests, w.errors)
            })
            .collect();
        for idx in success_rate_outliers(&rates, &section) {
            let (n, e) = rates[idx];
            let why = format!(
                "a success rate of {:.1}% over {n} attempts",
                100.0 * (1.0 - e as f64 / n as f64)
            );
            try_eject(&upstream, idx, &why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_failures_and_application_errors_are_told_apart() {
        assert!(Outcome::Failed.is_gateway_failure());
        for s in [502, 503, 504] {
            assert!(Outcome::Response(s).is_gateway_failure());
        }
        assert!(!Outcome::Response(500).is_gateway_failure());
        assert!(Outcome::Response(500).is_5xx());
        assert!(!Outcome::Response(404).is_5xx());
    }

    #[test]
    fn success_rate_outliers_follow_envoys_rule() {
        let section = SuccessRateSection {
            min_hosts: 3,
            min_requests: 10,
            ..SuccessRateSection::default()
        };
        let healthy = (100, 1);
        let rates = [healthy, healthy, healthy, healthy, (100, 60)];
        assert_eq!(success_rate_outliers(&rates, &section), vec![4]);
        assert!(
            success_rate_outliers(&[healthy, healthy, (100, 60)], &section).is_empty(),
            "one bad host among three pulls the mean down too much to stand out"
        );
        let too_few = [healthy, (5, 5), (100, 60)];
        assert!(
            success_rate_outliers(&too_few, &section).is_empty(),
            "min_hosts"
        );
    }
}
