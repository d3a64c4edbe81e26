//! `gradient-limit`: an adaptive concurrency limit in the manner of Netflix's
//! Gradient2 (and Envoy's gradient controller).
//!
//! Each decision compares the short-term latency (this window's p50) with a
//! long-term baseline (a slow moving average of it). While latency is near
//! the baseline the gradient is 1 and the limit grows by a queue allowance
//! of √limit; when latency rises the gradient falls towards 0.5 and the limit
//! shrinks with it. The limit only grows while the proxy actually uses at
//! least half of it (waiters in the admission queue count as use), so a
//! quiet period does not inflate it. The result is smoothed and kept within
//! `min_limit..=max_limit`; the host clamps again.
//!
//! Queueing delay (contract 0.2.0): the latency the proxy measures leaves
//! out the time a request waited in the admission queue, so a limit that is
//! too low shows as queue wait, not as a slower backend. While the backend
//! is at its baseline (gradient 1) and requests wait in the queue longer
//! than `queue_tolerance` × the service latency, the limit is what holds
//! them back: the growth allowance is multiplied by how many service times
//! they wait (up to 4×), so the limit catches up with demand in a few
//! decisions instead of creeping by √limit. When latency rises the queue
//! changes nothing: the backend is the bottleneck and the queue is the
//! right place for the excess.
//!
//! Config (JSON), with defaults:
//! `{"initial_limit": 100, "min_limit": 4, "max_limit": 1000, "smoothing": 0.3,
//!   "tolerance": 1.5, "long_window": 30, "min_requests": 20,
//!   "queue_tolerance": 1.0}`.

use serde::{Deserialize, Serialize};
use switchyard_sdk::{Adjustment, Decision, Optimizer, Snapshot};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    initial_limit: u32,
    min_limit: u32,
    max_limit: u32,
    /// Weight of the newly computed limit against the current one.
    smoothing: f64,
    /// How much slower than the baseline latency may get before the limit falls.
    tolerance: f64,
    /// Decisions the long-term baseline averages over.
    long_window: u32,
    /// Requests a window needs before it is judged.
    min_requests: u64,
    /// Queue wait (p99), in service times (p50), above which the limit,
    /// not the backend, is taken to hold requests back.
    queue_tolerance: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_limit: 100,
            min_limit: 4,
            max_limit: 1000,
            smoothing: 0.3,
            tolerance: 1.5,
            long_window: 30,
            min_requests: 20,
            queue_tolerance: 1.0,
        }
    }
}

/// Carried between decisions and across hot swaps.
#[derive(Serialize, Deserialize, Default)]
struct State {
    /// Long-term latency baseline in µs; 0 before the first sample.
    long_us: f64,
    /// The limit as computed, before rounding.
    limit: f64,
    decisions: u64,
}

struct GradientLimit(Config);

impl Optimizer for GradientLimit {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("gradient-limit", config)?;
        if c.min_limit == 0 || c.min_limit > c.max_limit {
            return Err(format!(
                "need 0 < min_limit <= max_limit, got {}..{}",
                c.min_limit, c.max_limit
            ));
        }
        Ok(GradientLimit(c))
    }

    fn decide(&mut self, s: &Snapshot, state: &[u8]) -> Decision {
        let c = &self.0;
        let mut st: State = serde_json::from_slice(state).unwrap_or_default();
        st.decisions += 1;
        let current = if s.concurrency_limit > 0 {
            f64::from(s.concurrency_limit)
        } else if st.limit > 0.0 {
            st.limit
        } else {
            f64::from(c.initial_limit)
        };
        let w = &s.current;
        let keep = |st: &State, reason: String| Decision {
            adjustments: if s.concurrency_limit == 0 {
                vec![Adjustment::ConcurrencyLimit(current.round() as u32)]
            } else {
                vec![]
            },
            reason,
            state: serde_json::to_vec(st).unwrap_or_default(),
        };
        if w.requests < c.min_requests || w.p50_us == 0 {
            st.limit = current;
            return keep(
                &st,
                format!(
                    "limit {current:.0} kept: {} requests in the window",
                    w.requests
                ),
            );
        }
        let short = w.p50_us as f64;
        if st.long_us <= 0.0 {
            st.long_us = short;
        } else {
            let n = f64::from(c.long_window.max(1));
            st.long_us += (short - st.long_us) / n;
            // After a slow period, let the baseline catch up with recovery fast.
            if st.long_us / short > 2.0 {
                st.long_us *= 0.95;
            }
        }
        let gradient = (c.tolerance * st.long_us / short).clamp(0.5, 1.0);
        let in_flight = f64::from(s.in_flight + s.queue.depth);
        if gradient >= 1.0 && in_flight < current / 2.0 {
            st.limit = current;
            return keep(
                &st,
                format!(
                    "limit {current:.0} kept: {in_flight:.0} in flight uses less than half of it"
                ),
            );
        }
        // Waits in service times: how far the limit lags behind demand.
        let waits = s.queue.wait_p99_us as f64 / short;
        let boost = if gradient >= 1.0
            && s.queue.admitted + s.queue.timeouts > 0
            && waits > c.queue_tolerance
        {
            waits.clamp(1.0, 4.0)
        } else {
            1.0
        };
        let queue = current.sqrt() * boost;
        let target = current * gradient + queue;
        let next = (current * (1.0 - c.smoothing) + target * c.smoothing)
            .clamp(f64::from(c.min_limit), f64::from(c.max_limit));
        st.limit = next;
        let rounded = next.round() as u32;
        Decision {
            adjustments: vec![Adjustment::ConcurrencyLimit(rounded)],
            reason: format!(
                "p50 {:.1} ms vs baseline {:.1} ms, gradient {gradient:.2}, queue wait p99 {:.1} ms{}: limit {current:.0} -> {rounded}",
                short / 1000.0,
                st.long_us / 1000.0,
                s.queue.wait_p99_us as f64 / 1000.0,
                if boost > 1.0 {
                    format!(" (growth ×{boost:.1}: the limit holds requests back)")
                } else {
                    String::new()
                }
            ),
            state: serde_json::to_vec(&st).unwrap_or_default(),
        }
    }
}

switchyard_sdk::export_optimizer!(GradientLimit);
