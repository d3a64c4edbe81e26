//! Sets the concurrency limit to 77 on its first decision, then traps on
//! every later one, to test that a failing optimizer leaves the knobs as
//! they were.

use switchyard_sdk::{Adjustment, Decision, Optimizer, Snapshot};

struct TrapLater;

impl Optimizer for TrapLater {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(TrapLater)
    }
    fn decide(&mut self, _s: &Snapshot, state: &[u8]) -> Decision {
        if !state.is_empty() {
            panic!("this optimizer traps after its first decision");
        }
        Decision {
            adjustments: vec![Adjustment::ConcurrencyLimit(77)],
            reason: "first and only decision".into(),
            state: b"decided".to_vec(),
        }
    }
}

switchyard_sdk::export_optimizer!(TrapLater);
