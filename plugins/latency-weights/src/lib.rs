//! `latency-weights`: shifts backend weights away from backends that are
//! slower or fail more than their peers ("resource based" balancing).
//!
//! Within each upstream, a backend's target weight is
//! `max_weight × (fastest p99 / its p99)^exponent × (1 − error rate)^error_penalty`,
//! from the current window's figures, kept within `min_weight..=max_weight`
//! so a slow backend still gets the samples that show when it recovers.
//! (The window's p99 follows a recovery within one window; the Peak-EWMA
//! would take tens of seconds to forget a slow period.) Targets are smoothed
//! between decisions. Backends with fewer than `min_requests` requests in the
//! window keep their weight.
//!
//! Config (JSON), with defaults:
//! `{"max_weight": 100, "min_weight": 5, "exponent": 1.0, "error_penalty": 4.0,
//!   "smoothing": 0.5, "min_requests": 5}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_sdk::{Adjustment, BackendStats, Decision, Optimizer, Snapshot, WeightChange};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    max_weight: u32,
    min_weight: u32,
    exponent: f64,
    error_penalty: f64,
    smoothing: f64,
    min_requests: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_weight: 100,
            min_weight: 5,
            exponent: 1.0,
            error_penalty: 4.0,
            smoothing: 0.5,
            min_requests: 5,
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    /// Smoothed weight per backend id.
    weights: BTreeMap<String, f64>,
}

struct LatencyWeights(Config);

fn upstream_of(b: &BackendStats) -> &str {
    b.id.split_once('/').map_or("", |(u, _)| u)
}

impl Optimizer for LatencyWeights {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("latency-weights", config)?;
        if c.min_weight == 0 || c.min_weight > c.max_weight {
            return Err(format!(
                "need 0 < min_weight <= max_weight, got {}..{}",
                c.min_weight, c.max_weight
            ));
        }
        Ok(LatencyWeights(c))
    }

    fn decide(&mut self, s: &Snapshot, state: &[u8]) -> Decision {
        let c = &self.0;
        let mut st: State = serde_json::from_slice(state).unwrap_or_default();
        let measured =
            |b: &&BackendStats| b.requests >= c.min_requests && b.p99_us > 0 && !b.ejected;
        let mut fastest: BTreeMap<&str, u64> = BTreeMap::new();
        for b in s.backends.iter().filter(measured) {
            let f = fastest.entry(upstream_of(b)).or_insert(u64::MAX);
            *f = (*f).min(b.p99_us);
        }
        let mut adjustments = Vec::new();
        let mut notes = Vec::new();
        for b in s.backends.iter().filter(measured) {
            let best = fastest[upstream_of(b)] as f64;
            let speed = (best / b.p99_us as f64).powf(c.exponent);
            let error_rate = b.errors as f64 / b.requests as f64;
            let health = (1.0 - error_rate).max(0.0).powf(c.error_penalty);
            let target = (f64::from(c.max_weight) * speed * health)
                .clamp(f64::from(c.min_weight), f64::from(c.max_weight));
            let previous = st
                .weights
                .get(&b.id)
                .copied()
                .unwrap_or(f64::from(b.weight));
            let smoothed = previous * (1.0 - c.smoothing) + target * c.smoothing;
            st.weights.insert(b.id.clone(), smoothed);
            let weight = smoothed
                .round()
                .clamp(f64::from(c.min_weight), f64::from(c.max_weight))
                as u32;
            if weight != b.weight {
                adjustments.push(Adjustment::BackendWeight(WeightChange {
                    backend: b.id.clone(),
                    weight,
                }));
                notes.push(format!(
                    "{} p99 {:.1} ms, {:.0}% errors: weight {} -> {weight}",
                    b.id,
                    b.p99_us as f64 / 1000.0,
                    error_rate * 100.0,
                    b.weight
                ));
            }
        }
        let reason = if notes.is_empty() {
            "weights unchanged".to_string()
        } else {
            notes.join("; ")
        };
        Decision {
            adjustments,
            reason,
            state: serde_json::to_vec(&st).unwrap_or_default(),
        }
    }
}

switchyard_sdk::export_optimizer!(LatencyWeights);
