//! Allocates without bound in `evaluate`, to test the host's memory cap.

use switchyard_sdk::{AlertRule, Finding, RuleMeta, Snapshot};

struct Bomb(Vec<Vec<u8>>);

impl AlertRule for Bomb {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Bomb(Vec::new()))
    }
    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "test-memory-bomb".into(),
            description: "eats memory".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }
    fn evaluate(&mut self, _s: &Snapshot) -> Vec<Finding> {
        loop {
            self.0.push(vec![1u8; 1 << 20]);
        }
    }
}

switchyard_sdk::export_alert_rule!(Bomb);
