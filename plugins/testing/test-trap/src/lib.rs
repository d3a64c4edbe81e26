//! Traps on every `evaluate` after a successful `init`, to test that the
//! host contains it (fail open, `plugin-failed` alert). `init("trap")` traps
//! at load instead.

use switchyard_sdk::{AlertRule, Finding, RuleMeta, Snapshot};

struct Trap;

impl AlertRule for Trap {
    fn init(config: &str) -> Result<Self, String> {
        if config.contains("trap-in-init") {
            panic!("trap requested in init");
        }
        Ok(Trap)
    }
    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "test-trap".into(),
            description: "traps".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }
    fn evaluate(&mut self, _s: &Snapshot) -> Vec<Finding> {
        panic!("this rule always traps");
    }
}

switchyard_sdk::export_alert_rule!(Trap);
