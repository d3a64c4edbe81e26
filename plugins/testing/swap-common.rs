// Shared by `test-swap-a` and `test-swap-b`, which differ only in VERSION:
// an optimizer that says which version it is and counts decisions in its
// state, so a test sees both the swap and that state carried over.

use switchyard_sdk::{Decision, Optimizer, Snapshot};

struct Version;

impl Optimizer for Version {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Version)
    }
    fn decide(&mut self, _s: &Snapshot, state: &[u8]) -> Decision {
        let count = std::str::from_utf8(state).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + 1;
        Decision { adjustments: vec![], reason: format!("version {VERSION}"), state: count.to_string().into_bytes() }
    }
}

switchyard_sdk::export_optimizer!(Version);
