//! A generator that issues `GET /ok` and traps in `next_batch` once it has
//! produced `trap_after` operations (config: the number), to test that a
//! failing generator fails operations, not the run.

use switchyard_sdk::{BatchContext, Generator, OpKind, OpResult, Operation};

struct TrapGen {
    issued: u64,
    trap_after: u64,
}

impl Generator for TrapGen {
    fn init(config: &str, _seed: u64, _state: Option<Vec<u8>>) -> Result<Self, String> {
        let trap_after = config.trim().parse().unwrap_or(u64::MAX);
        Ok(TrapGen {
            issued: 0,
            trap_after,
        })
    }
    fn next_batch(&mut self, _ctx: &BatchContext, max: u32) -> Vec<Operation> {
        if self.issued >= self.trap_after {
            panic!("generator trap after {} operations", self.issued);
        }
        self.issued += u64::from(max);
        (0..max)
            .map(|_| Operation::get(OpKind::Read, "/ok"))
            .collect()
    }
    fn observe(&mut self, _results: Vec<OpResult>) {}
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }
}

switchyard_sdk::export_generator!(TrapGen);
