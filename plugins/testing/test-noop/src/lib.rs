//! An alert rule that reports nothing: a call to it costs only the host's
//! call overhead and the snapshot's transfer, which is what benches measure.

use switchyard_sdk::{AlertRule, Finding, RuleMeta, Snapshot};

struct Noop;

impl AlertRule for Noop {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Noop)
    }
    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "test-noop".into(),
            description: "reports nothing".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }
    fn evaluate(&mut self, _s: &Snapshot) -> Vec<Finding> {
        Vec::new()
    }
}

switchyard_sdk::export_alert_rule!(Noop);
