//! Never returns from `evaluate`, to test the host's call deadline.

use switchyard_sdk::{AlertRule, Finding, RuleMeta, Snapshot};

struct Spin;

impl AlertRule for Spin {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Spin)
    }
    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "test-spin".into(),
            description: "loops forever".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }
    fn evaluate(&mut self, s: &Snapshot) -> Vec<Finding> {
        let mut x = s.now_ms;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            if x == 42 {
                return vec![];
            }
        }
    }
}

switchyard_sdk::export_alert_rule!(Spin);
