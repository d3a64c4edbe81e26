//! Flips every backend's weight between 1 and 2 at every decision, to test
//! that a weight change rebuilds nothing else (retry budgets, in-flight
//! counts and rotations carry on).

use switchyard_sdk::{Adjustment, Decision, Optimizer, Snapshot, WeightChange};

struct FlipWeights;

impl Optimizer for FlipWeights {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(FlipWeights)
    }
    fn decide(&mut self, s: &Snapshot, _state: &[u8]) -> Decision {
        let adjustments = s
            .backends
            .iter()
            .map(|b| {
                Adjustment::BackendWeight(WeightChange {
                    backend: b.id.clone(),
                    weight: if b.weight == 1 { 2 } else { 1 },
                })
            })
            .collect();
        Decision {
            adjustments,
            reason: "flip".into(),
            state: Vec::new(),
        }
    }
}

switchyard_sdk::export_optimizer!(FlipWeights);
