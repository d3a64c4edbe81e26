//! An alert rule built against the frozen contract 0.1.0, without the SDK:
//! it fires while the current window saw requests, with their count as its
//! value, so a test sees the old snapshot arrive and the finding come back.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "alert-rule",
});

use exports::switchyard::plugins::alert::{Finding, Guest, RuleMeta};
use switchyard::plugins::types::{Label, Severity, Snapshot};

struct Old;

impl Guest for Old {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn describe() -> RuleMeta {
        RuleMeta {
            name: "v0-1-rule".into(),
            description: "fires while requests flow (contract 0.1.0)".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }

    fn evaluate(s: Snapshot) -> Vec<Finding> {
        vec![Finding {
            key: "requests".into(),
            active: s.current.requests > 0,
            severity: Severity::Medium,
            value: s.current.requests as f64,
            threshold: 0.0,
            labels: vec![Label {
                key: "contract".into(),
                value: "0.1.0".into(),
            }],
            summary: format!("{} requests in the current window", s.current.requests),
        }]
    }
}

export!(Old);
