//! An optimizer built against the frozen contract 0.1.0, without the SDK:
//! it sets the concurrency limit to its config value (default 77), so a
//! test sees an old plugin's decision applied.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "optimizer",
});

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use exports::switchyard::plugins::optimize::{Adjustment, Decision, Guest};
use switchyard::plugins::types::Snapshot;

static LIMIT: AtomicU32 = AtomicU32::new(77);

struct Old;

impl Guest for Old {
    fn init(config: String) -> Result<(), String> {
        let config = config.trim().trim_matches('"');
        if !config.is_empty() {
            let limit = config
                .parse()
                .map_err(|e| format!("config must be a number: {e}"))?;
            LIMIT.store(limit, Relaxed);
        }
        Ok(())
    }

    fn decide(s: Snapshot, _state: Vec<u8>) -> Decision {
        let limit = LIMIT.load(Relaxed);
        Decision {
            adjustments: vec![Adjustment::ConcurrencyLimit(limit)],
            reason: format!(
                "contract 0.1.0 optimizer: limit {limit} (was {})",
                s.concurrency_limit
            ),
            state: Vec::new(),
        }
    }
}

export!(Old);
