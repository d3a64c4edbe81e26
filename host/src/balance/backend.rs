//! Backends and the state the proxy learns about them.
//!
//! [`BackendState`] is what must survive a config reload: in-flight count,
//! Peak-EWMA latency, health, ejection and counters. It is shared through
//! the proxy's registry (`proxy::registry`), keyed by upstream name and
//! address. [`Backend`] is one entry of an upstream's current member list:
//! the address, the weight in force (the config's, or an optimizer's) and a
//! handle on that shared state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::uri::Authority;
use serde::Serialize;

use crate::clock;
use crate::config::BackendAddr;
use crate::telemetry::{BackendMetrics, Series};

/// Seconds of per-backend history kept: per-backend figures in snapshots
/// cover at most the last 10 seconds.
pub const BACKEND_WINDOW_SECONDS: usize = 12;

/// Decay period of the Peak-EWMA latency estimate (as linkerd2-proxy uses).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for a backend that has not answered yet, so it gets tried.
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// Peak-EWMA latency estimate: jumps to any higher sample at once, decays
/// towards lower samples with time, and, when a backend is not used, decays
/// towards zero so it is probed again eventually.
///
/// A backend with requests in flight is not idle: its estimate does not
/// decay, and is at least the time since its last response. A backend that
/// stalls — takes requests and answers none — thus grows more expensive by
/// the millisecond and stops being picked at once, instead of looking as
/// fast as it last was until its requests time out.
#[derive(Debug, Default)]
pub struct PeakEwma {
    estimate_ns: AtomicU64, // f64 bits
    stamp_ns: AtomicU64,    // 0: no sample yet
}

impl PeakEwma {
    pub fn observe(&self, rtt: Duration, now_ns: u64) {
        let rtt = rtt.as_nanos() as f64;
        let stamp = self.stamp_ns.load(Relaxed);
        let prior = f64::from_bits(self.estimate_ns.load(Relaxed));
        let next = if stamp == 0 || prior < rtt {
            rtt
        } else {
            let elapsed = now_ns.saturating_sub(stamp) as f64;
            let decay = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            prior * decay + rtt * (1.0 - decay)
        };
        // Racing updates may lose a sample; the estimate stays a valid blend.
        self.estimate_ns.store(next.to_bits(), Relaxed);
        self.stamp_ns.store(now_ns, Relaxed);
    }

    /// The estimate in nanoseconds as of `now_ns`, for a backend with
    /// `in_flight` requests outstanding.
    #[inline]
    pub fn estimate_ns(&self, now_ns: u64, in_flight: u32) -> f64 {
        let stamp = self.stamp_ns.load(Relaxed);
        if stamp == 0 {
            return DEFAULT_RTT.as_nanos() as f64;
        }
        let est = f64::from_bits(self.estimate_ns.load(Relaxed));
        let idle = now_ns.saturating_sub(stamp);
        if in_flight > 0 {
            // Waiting that long for an answer means at least that latency.
            return est.max(idle as f64);
        }
        // Skip the exp() while the estimate is fresh: it would round to ~1.
        if idle < 100_000_000 {
            return est;
        }
        est * (-(idle as f64) / EWMA_DECAY.as_nanos() as f64).exp()
    }
}

/// Learned state of one backend, shared across reloads.
#[derive(Debug)]
pub struct BackendState {
    pub in_flight: AtomicU32,
    pub ewma: PeakEwma,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    healthy: AtomicBool,
    /// Active checks: consecutive passes (>0) or failures (<0), as a pair.
    check_passes: AtomicU32,
    check_failures: AtomicU32,
    /// Passive: consecutive gateway failures (no response, 502, 503, 504).
    pub consecutive_failures: AtomicU32,
    /// Passive: consecutive 5xx of any kind, no response included.
    pub consecutive_5xx: AtomicU32,
    /// Clock ms until which the backend is ejected; 0 when not ejected.
    ejected_until_ms: AtomicU64,
    /// Times ejected; scales the next ejection's length.
    pub ejections: AtomicU32,
    /// Attempts per second over the last seconds, for snapshots.
    pub series: Series,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            in_flight: AtomicU32::new(0),
            ewma: PeakEwma::default(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            // New backends are healthy until active checks say otherwise, so a
            // fresh config serves at once; passive detection covers the gap.
            healthy: AtomicBool::new(true),
            check_passes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            series: Series::new(BACKEND_WINDOW_SECONDS),
        }
    }
}

/// Outcome of recording an active check.
#[derive(Debug, PartialEq, Eq)]
pub enum HealthChange {
    None,
    BecameHealthy,
    BecameUnhealthy,
}

impl BackendState {
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    #[inline]
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Relaxed) > now_ms
    }

    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }

    pub fn set_ejected_until(&self, ms: u64) {
        self.ejected_until_ms.store(ms, Relaxed);
    }

    /// Records an active check result with rise/fall thresholds.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32) -> HealthChange {
        if passed {
            self.check_failures.store(0, Relaxed);
            let passes = self.check_passes.fetch_add(1, Relaxed).saturating_add(1);
            if !self.is_healthy() && passes >= rise {
                self.healthy.store(true, Relaxed);
                return HealthChange::BecameHealthy;
            }
        } else {
            self.check_passes.store(0, Relaxed);
            let failures = self.check_failures.fetch_add(1, Relaxed).saturating_add(1);
            if self.is_healthy() && failures >= fall {
                self.healthy.store(false, Relaxed);
                return HealthChange::BecameUnhealthy;
            }
        }
        HealthChange::None
    }
}

/// One member of an upstream as the current config describes it.
#[derive(Debug)]
pub struct Backend {
    pub addr: BackendAddr,
    pub authority: Authority,
    /// The weight in force; an optimizer moves it without a rebuild.
    weight: AtomicU32,
    pub max_in_flight: u32,
    pub state: Arc<BackendState>,
    pub metrics: BackendMetrics,
}

impl Backend {
    pub fn new(
        addr: BackendAddr,
        weight: u32,
        max_in_flight: u32,
        state: Arc<BackendState>,
        metrics: BackendMetrics,
    ) -> Self {
        Backend {
            authority: addr.authority(),
            addr,
            weight: AtomicU32::new(weight),
            max_in_flight,
            state,
            metrics,
        }
    }

    /// A backend with fresh state of its own and no metrics; for tools and
    /// benchmarks that pick without a running proxy.
    pub fn detached(addr: BackendAddr, weight: u32) -> Self {
        Backend::new(
            addr,
            weight,
            u32::MAX,
            Arc::new(BackendState::default()),
            BackendMetrics::noop(),
        )
    }

    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Changes the weight in force; the balancer must then be told
    /// ([`super::Balancer::reweigh`]).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Relaxed);
    }

    /// Whether the balancer may pick this backend now: healthy, not ejected,
    /// and under its circuit-breaker limit.
    #[inline]
    pub fn is_available(&self, now_ms: u64) -> bool {
        let s = &*self.state;
        s.is_healthy() && !s.is_ejected(now_ms) && self.under_limit()
    }

    #[inline]
    pub fn under_limit(&self) -> bool {
        self.state.in_flight.load(Relaxed) < self.max_in_flight
    }

    /// What `GET /admin/backends` shows for this backend.
    pub fn view(&self) -> BackendView {
        let now = clock::now_ns();
        let s = &*self.state;
        let until = s.ejected_until_ms();
        BackendView {
            address: self.addr.to_string(),
            healthy: s.is_healthy(),
            ejected: s.is_ejected(now / 1_000_000),
            ejected_for_ms: until.saturating_sub(now / 1_000_000),
            ejections: s.ejections.load(Relaxed),
            weight: self.weight(),
            in_flight: s.in_flight.load(Relaxed),
            ewma_latency_us: (s.ewma.estimate_ns(now, s.in_flight.load(Relaxed)) / 1000.0) as u64,
            requests: s.requests.load(Relaxed),
            errors: s.errors.load(Relaxed),
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct BackendView {
    pub address: String,
    pub healthy: bool,
    pub ejected: bool,
    pub ejected_for_ms: u64,
    pub ejections: u32,
    pub weight: u32,
    pub in_flight: u32,
    pub ewma_latency_us: u64,
    pub requests: u64,
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let e = PeakEwma::default();
        let t0 = 1_000_000_000;
        e.observe(Duration::from_millis(10), t0);
        assert_eq!(e.estimate_ns(t0, 0), 10e6);
        e.observe(Duration::from_millis(50), t0 + 1);
        assert_eq!(e.estimate_ns(t0 + 1, 0), 50e6, "peak is taken at once");
        // A lower sample 10 s later pulls the estimate most of the way down.
        let t1 = t0 + EWMA_DECAY.as_nanos() as u64;
        e.observe(Duration::from_millis(10), t1);
        let est = e.estimate_ns(t1, 0);
        assert!(est > 10e6 && est < 30e6, "{est}");
        // Unused for a minute: decays towards zero so it is probed again.
        assert!(e.estimate_ns(t1 + 60_000_000_000, 0) < 1e6);
        // Busy but silent: no decay, and at least the time since an answer.
        let two_seconds_later = t1 + 2_000_000_000;
        assert_eq!(e.estimate_ns(two_seconds_later, 3), 2e9);
    }

    #[test]
    fn rise_and_fall_thresholds() {
        let s = BackendState::default();
        assert_eq!(s.record_check(false, 2, 3), HealthChange::None);
        assert_eq!(s.record_check(false, 2, 3), HealthChange::None);
        assert_eq!(s.record_check(false, 2, 3), HealthChange::BecameUnhealthy);
        assert_eq!(s.record_check(true, 2, 3), HealthChange::None);
        assert_eq!(s.record_check(false, 2, 3), HealthChange::None);
        assert_eq!(s.record_check(true, 2, 3), HealthChange::None);
        assert_eq!(s.record_check(true, 2, 3), HealthChange::BecameHealthy);
    }
}
