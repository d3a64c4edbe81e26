//! PLUGIN_NAME: an operation generator for `switchyard bench`. Creates
//! items with `POST {resource}` (a `write_share` of the operations, and
//! always first), and reads back the ones it created with
//! `GET {resource}/{id}`, the id taken from the `id` field of each create's
//! JSON answer. The ids survive a hot swap: `save_state` hands them to the
//! next version.
//!
//! Config (JSON, every key optional): `{"resource": "/items", "write_share": 0.2}`.

use serde::{Deserialize, Serialize};
use switchyard_sdk::{BatchContext, Generator, IdSource, OpKind, OpResult, Operation, Rng};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    resource: String,
    write_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { resource: "/items".into(), write_share: 0.2 }
    }
}

/// Handed to the next version on a hot swap.
#[derive(Serialize, Deserialize, Default)]
struct State {
    ids: Vec<String>,
    created: u64,
}

/// Ids remembered, at most.
const MAX_IDS: usize = 10_000;

struct Items {
    config: Config,
    state: State,
    rng: Rng,
}

impl Generator for Items {
    fn init(config: &str, seed: u64, state: Option<Vec<u8>>) -> Result<Self, String> {
        let config: Config = switchyard_sdk::json_config("PLUGIN_NAME", config)?;
        let state = match state {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("unreadable saved state: {e}"))?,
            None => State::default(),
        };
        Ok(Items { config, state, rng: Rng::new(seed) })
    }

    fn next_batch(&mut self, _ctx: &BatchContext, max: u32) -> Vec<Operation> {
        let resource = self.config.resource.trim_end_matches('/').to_string();
        (0..max)
            .map(|_| {
                if self.state.ids.is_empty() || self.rng.unit() < self.config.write_share {
                    self.state.created += 1;
                    let body = format!("{{\"name\": \"item-{}\"}}", self.state.created);
                    let mut op = Operation::new(OpKind::Create, "POST", resource.clone(), Some(body.into_bytes()));
                    op.capture_id = Some(IdSource::JsonField("id".into()));
                    op
                } else {
                    let i = self.rng.below(self.state.ids.len() as u64) as usize;
                    Operation::get(OpKind::Read, format!("{resource}/{}", self.state.ids[i]))
                }
            })
            .collect()
    }

    fn observe(&mut self, results: Vec<OpResult>) {
        for id in results.into_iter().filter_map(|r| r.created_id) {
            if self.state.ids.len() < MAX_IDS {
                self.state.ids.push(id);
            }
        }
    }

    fn save_state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }
}

switchyard_sdk::export_generator!(Items);
