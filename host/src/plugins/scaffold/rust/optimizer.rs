//! PLUGIN_NAME: an optimizer. Lowers the concurrency limit by a tenth while
//! the p99 latency is above `target_p99_ms`, and raises it by 10 while it
//! is below, within `min_limit..=max_limit` (the proxy holds every change
//! to its `[optimizer.bounds]` as well).
//!
//! Config (JSON, every key optional):
//! `{"target_p99_ms": 100, "min_limit": 10, "max_limit": 1000, "min_requests": 20}`.

use serde::{Deserialize, Serialize};
use switchyard_sdk::{Adjustment, Decision, Optimizer, Snapshot};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    target_p99_ms: u64,
    min_limit: u32,
    max_limit: u32,
    /// Fewer requests than this in the window: no change.
    min_requests: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { target_p99_ms: 100, min_limit: 10, max_limit: 1000, min_requests: 20 }
    }
}

/// Kept by the proxy between decisions, and across a hot swap.
#[derive(Serialize, Deserialize, Default)]
struct State {
    decisions: u64,
}

struct Limit(Config);

impl Optimizer for Limit {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("PLUGIN_NAME", config)?;
        if c.min_limit == 0 || c.min_limit > c.max_limit {
            return Err(format!("need 0 < min_limit <= max_limit, got {}..{}", c.min_limit, c.max_limit));
        }
        Ok(Limit(c))
    }

    fn decide(&mut self, s: &Snapshot, state: &[u8]) -> Decision {
        let c = &self.0;
        let mut st: State = serde_json::from_slice(state).unwrap_or_default();
        st.decisions += 1;
        let state = serde_json::to_vec(&st).unwrap_or_default();
        // 0: no limit in force yet; start from the top.
        let limit = if s.concurrency_limit == 0 { c.max_limit } else { s.concurrency_limit };
        if s.current.requests < c.min_requests {
            return Decision {
                adjustments: vec![],
                reason: format!("limit {limit} kept: {} requests", s.current.requests),
                state,
            };
        }
        let p99_ms = s.current.p99_us / 1000;
        let next = if p99_ms > c.target_p99_ms { limit - limit / 10 } else { limit + 10 }
            .clamp(c.min_limit, c.max_limit);
        Decision {
            adjustments: if next == limit { vec![] } else { vec![Adjustment::ConcurrencyLimit(next)] },
            reason: format!("p99 {p99_ms} ms against {} ms: limit {limit} -> {next}", c.target_p99_ms),
            state,
        }
    }
}

switchyard_sdk::export_optimizer!(Limit);
