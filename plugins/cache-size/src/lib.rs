//! `cache-size`: sizes the response cache from its hit ratio and the
//! process's memory.
//!
//! Each decision looks at the current window:
//! - under memory pressure (resident memory above `pressure` of the cgroup
//!   limit), the cache shrinks by `step` of its capacity, whatever the hit
//!   ratio: memory for requests comes first;
//! - otherwise, when at least `min_requests` cacheable requests were seen
//!   and fewer than `target_hit_ratio` of them hit, it grows by `step`, as
//!   long as the grown cache would still fit in `headroom` of the memory
//!   limit (with no limit, only the optimizer's `cache_capacity` bounds
//!   hold it);
//! - otherwise it holds.
//!
//! A low hit ratio is not always a small cache (uncacheable or one-off
//! URLs miss at any size), so growth stops at the optimizer's bound; the
//! host clamps every step to `[optimizer.bounds.cache_capacity]`.
//!
//! Config (JSON), with defaults:
//! `{"target_hit_ratio": 0.8, "min_requests": 50, "step": 0.25,
//!   "pressure": 0.85, "headroom": 0.5}`.

use serde::Deserialize;
use switchyard_sdk::{Adjustment, Decision, Optimizer, Snapshot};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    target_hit_ratio: f64,
    min_requests: u64,
    step: f64,
    pressure: f64,
    headroom: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target_hit_ratio: 0.8,
            min_requests: 50,
            step: 0.25,
            pressure: 0.85,
            headroom: 0.5,
        }
    }
}

struct CacheSize(Config);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

impl Optimizer for CacheSize {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("cache-size", config)?;
        for (name, v) in [
            ("target_hit_ratio", c.target_hit_ratio),
            ("pressure", c.pressure),
            ("headroom", c.headroom),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be within 0.0..=1.0, got {v}"));
            }
        }
        if !(c.step > 0.0 && c.step <= 1.0) {
            return Err(format!("step must be within (0.0, 1.0], got {}", c.step));
        }
        Ok(CacheSize(c))
    }

    fn decide(&mut self, s: &Snapshot, _state: &[u8]) -> Decision {
        let c = &self.0;
        let hold = |reason: String| Decision {
            adjustments: Vec::new(),
            reason,
            state: Vec::new(),
        };
        let capacity = s.cache_capacity_bytes;
        if capacity == 0 {
            return hold("no cache".into());
        }
        let delta = ((capacity as f64 * c.step) as u64).max(1);
        let limit = s.memory_limit_bytes;
        let rss = s.memory_rss_bytes;
        if limit > 0 && rss as f64 > limit as f64 * c.pressure {
            let to = capacity.saturating_sub(delta);
            return Decision {
                adjustments: vec![Adjustment::CacheCapacityBytes(to)],
                reason: format!(
                    "memory {:.0} of {:.0} MiB is above {:.0}%: cache {:.1} -> {:.1} MiB",
                    mib(rss),
                    mib(limit),
                    c.pressure * 100.0,
                    mib(capacity),
                    mib(to)
                ),
                state: Vec::new(),
            };
        }
        let w = &s.current;
        let requests = w.requests;
        if requests < c.min_requests {
            return hold(format!(
                "{requests} requests in the window, fewer than {}",
                c.min_requests
            ));
        }
        if w.cache_hit_ratio >= c.target_hit_ratio {
            return hold(format!(
                "hit ratio {:.2} meets {:.2}",
                w.cache_hit_ratio, c.target_hit_ratio
            ));
        }
        let to = capacity.saturating_add(delta);
        if limit > 0 && to as f64 > limit as f64 * c.headroom {
            return hold(format!(
                "hit ratio {:.2} is low, but {:.1} MiB would pass {:.0}% of the {:.0} MiB limit",
                w.cache_hit_ratio,
                mib(to),
                c.headroom * 100.0,
                mib(limit)
            ));
        }
        Decision {
            adjustments: vec![Adjustment::CacheCapacityBytes(to)],
            reason: format!(
                "hit ratio {:.2} below {:.2}: cache {:.1} -> {:.1} MiB",
                w.cache_hit_ratio,
                c.target_hit_ratio,
                mib(capacity),
                mib(to)
            ),
            state: Vec::new(),
        }
    }
}

switchyard_sdk::export_optimizer!(CacheSize);
