//! Optimizers: the host's side of optimizer plugins. The host keeps each
//! plugin's state between decisions (so it survives hot swaps), holds every
//! proposed change to the bounds in `[optimizer.bounds]` (min, max, and the
//! largest step per decision), applies it or, in dry-run, only logs it, and
//! keeps the last decisions with their reasons for `GET /admin/optimizer`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// Decisions kept for the admin API.
const KEPT: usize = 100;

/// A knob value after the bounds: first at most `max_step` away from
/// `current` (when there is a current value), then within `min..=max`, so
/// the bounds always hold.
pub fn clamp(current: Option<u64>, requested: u64, min: u64, max: u64, max_step: u64) -> u64 {
    let stepped = match current {
        Some(c) => requested.clamp(c.saturating_sub(max_step), c.saturating_add(max_step)),
        None => requested,
    };
    stepped.clamp(min, max)
}

/// One change an optimizer asked for, and what was made of it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Change {
    /// `concurrency_limit`, `weight app/10.0.0.1:80` or `cache_capacity_bytes`.
    pub knob: String,
    pub from: u64,
    pub requested: u64,
    pub to: u64,
    /// `to` differs from `requested` because of the bounds.
    pub clamped: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecisionRecord {
    pub at: String,
    pub plugin: String,
    pub reason: String,
    pub changes: Vec<Change>,
    /// Dry run: nothing was applied.
    pub dry_run: bool,
    /// The plugin failed; nothing was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DecisionRecord {
    pub fn new(
        plugin: &str,
        reason: String,
        changes: Vec<Change>,
        dry_run: bool,
        error: Option<String>,
    ) -> Self {
        DecisionRecord {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            plugin: plugin.to_string(),
            reason,
            changes,
            dry_run,
            error,
        }
    }
}

#[derive(Default)]
pub struct OptimizerHost {
    states: Mutex<HashMap<String, Vec<u8>>>,
    decisions: Mutex<VecDeque<DecisionRecord>>,
}

impl OptimizerHost {
    /// The state the plugin returned last (empty at first).
    pub fn state(&self, plugin: &str) -> Vec<u8> {
        self.states
            .lock()
            .ok()
            .and_then(|s| s.get(plugin).cloned())
            .unwrap_or_default()
    }

    pub fn set_state(&self, plugin: &str, state: Vec<u8>) {
        if let Ok(mut s) = self.states.lock() {
            s.insert(plugin.to_string(), state);
        }
    }

    pub fn record(&self, decision: DecisionRecord) {
        if let Ok(mut d) = self.decisions.lock() {
            d.push_front(decision);
            d.truncate(KEPT);
        }
    }

    /// Newest first.
    pub fn decisions(&self) -> Vec<DecisionRecord> {
        self.decisions
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::clamp;

    #[test]
    fn bounds_hold_and_steps_are_limited() {
        assert_eq!(
            clamp(Some(100), 500, 10, 1000, 50),
            150,
            "one step at a time"
        );
        assert_eq!(clamp(Some(100), 10, 10, 1000, 50), 50);
        assert_eq!(clamp(Some(100), 5000, 10, 120, 50), 120, "max holds");
        assert_eq!(clamp(Some(20), 1, 10, 1000, 50), 10, "min holds");
        assert_eq!(
            clamp(None, 5000, 10, 1000, 50),
            1000,
            "no current value: bounds only"
        );
        assert_eq!(
            clamp(Some(5000), 100, 10, 1000, 50),
            1000,
            "bounds win over the step"
        );
    }
}
