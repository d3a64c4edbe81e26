//! Returns 5,000 findings from `evaluate` (the host accepts 1,000), to test
//! the host's output bound.

use switchyard_sdk::{AlertRule, Finding, RuleMeta, Severity, Snapshot};

struct Huge;

impl AlertRule for Huge {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Huge)
    }
    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "test-huge-output".into(),
            description: "floods".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }
    fn evaluate(&mut self, _s: &Snapshot) -> Vec<Finding> {
        (0..5_000)
            .map(|i| Finding {
                key: format!("flood-{i}"),
                active: true,
                severity: Severity::Info,
                value: 0.0,
                threshold: 0.0,
                labels: vec![],
                summary: String::new(),
            })
            .collect()
    }
}

switchyard_sdk::export_alert_rule!(Huge);
