//! An operation generator built against the frozen contract 0.1.0, without
//! the SDK: `GET /v0-1/N`, N counting up, carried across swaps in its state.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "operation-generator",
});

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use exports::switchyard::plugins::generate::{BatchContext, Guest, OpKind, OpResult, Operation};

static NEXT: AtomicU64 = AtomicU64::new(0);

struct Old;

impl Guest for Old {
    fn init(_config: String, _seed: u64, state: Option<Vec<u8>>) -> Result<(), String> {
        if let Some(bytes) = state.and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            NEXT.store(u64::from_le_bytes(bytes), Relaxed);
        }
        Ok(())
    }

    fn next_batch(_ctx: BatchContext, max: u32) -> Vec<Operation> {
        (0..max)
            .map(|_| Operation {
                kind: OpKind::Read,
                name: String::new(),
                method: "GET".into(),
                path: format!("/v0-1/{}", NEXT.fetch_add(1, Relaxed)),
                headers: Vec::new(),
                body: None,
                idempotent: true,
                capture_id: None,
            })
            .collect()
    }

    fn observe(_results: Vec<OpResult>) {}

    fn save_state() -> Vec<u8> {
        NEXT.load(Relaxed).to_le_bytes().to_vec()
    }
}

export!(Old);
