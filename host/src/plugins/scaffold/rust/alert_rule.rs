//! PLUGIN_NAME: an alert rule. Active while the p99 latency of the current
//! window is above `max_p99_ms`; the proxy fires the alert once that has
//! held for `for_ms` (10 s), and keeps it firing for `keep_firing_for_ms`
//! after it clears.
//!
//! Config (JSON, every key optional): `{"max_p99_ms": 250, "min_requests": 20}`.

use serde::Deserialize;
use switchyard_sdk::{AlertRule, Finding, RuleMeta, Severity, Snapshot};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The bound, in milliseconds.
    max_p99_ms: u64,
    /// Fewer requests than this in the window: no judgement.
    min_requests: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_p99_ms: 250, min_requests: 20 }
    }
}

struct Rule(Config);

impl AlertRule for Rule {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("PLUGIN_NAME", config)?;
        switchyard_sdk::log::info(&format!("watching p99 against {} ms", c.max_p99_ms));
        Ok(Rule(c))
    }

    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "PLUGIN_NAME".into(),
            description: "p99 latency above a bound".into(),
            for_ms: 10_000,
            keep_firing_for_ms: 30_000,
        }
    }

    fn evaluate(&mut self, s: &Snapshot) -> Vec<Finding> {
        let w = &s.current;
        if w.requests < self.0.min_requests {
            switchyard_sdk::log::debug(&format!("{} requests: not judged", w.requests));
            return vec![];
        }
        let p99_ms = w.p99_us as f64 / 1000.0;
        let max = self.0.max_p99_ms as f64;
        vec![Finding {
            key: "p99".into(),
            active: p99_ms > max,
            severity: Severity::High,
            value: p99_ms,
            threshold: max,
            labels: vec![],
            summary: format!("p99 is {p99_ms:.0} ms (bound {max:.0} ms)"),
        }]
    }
}

switchyard_sdk::export_alert_rule!(Rule);
