//! `crud-mix`: an operation generator issuing a percentage mix of create,
//! read, update and delete operations against a REST-style resource.
//!
//! Creates are `POST {resource}` with a JSON body; the host captures the new
//! entity's id from the response's `id` field (or `id_field`). Reads, updates
//! and deletes go to `{resource}/{id}` of entities this generator created and
//! has not deleted, so a run exercises live data. Before any entity exists,
//! an operation that needs one is issued as a create.
//!
//! Profiles set the mix (the matching `config/profiles/*.toml` of
//! `switchyard bench` set concurrency and phases):
//!
//! | profile | create | read | update | delete |
//! |---|---|---|---|---|
//! | development | 25 | 50 | 20 | 5 |
//! | load-testing | 30 | 40 | 25 | 5 |
//! | production (default) | 30 | 40 | 25 | 5 |
//! | read-heavy | 5 | 85 | 8 | 2 |
//! | write-heavy | 40 | 15 | 35 | 10 |
//!
//! Config (JSON): `{"profile": "production", "mix": {"create": 30, "read": 40,
//! "update": 25, "delete": 5}, "resource": "/items", "payload_bytes": 64,
//! "id_field": "id", "max_live": 100000}`; `mix` overrides the profile's.

use serde::{Deserialize, Serialize};
use switchyard_sdk::{BatchContext, Generator, IdSource, OpKind, OpResult, Operation, Rng};

#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Mix {
    create: u32,
    read: u32,
    update: u32,
    delete: u32,
}

fn profile_mix(name: &str) -> Option<Mix> {
    let (create, read, update, delete) = match name {
        "development" => (25, 50, 20, 5),
        "load-testing" | "production" => (30, 40, 25, 5),
        "read-heavy" => (5, 85, 8, 2),
        "write-heavy" => (40, 15, 35, 10),
        _ => return None,
    };
    Some(Mix {
        create,
        read,
        update,
        delete,
    })
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    profile: String,
    mix: Option<Mix>,
    resource: String,
    payload_bytes: usize,
    id_field: String,
    max_live: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: "production".into(),
            mix: None,
            resource: "/items".into(),
            payload_bytes: 64,
            id_field: "id".into(),
            max_live: 100_000,
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    live: Vec<String>,
    created: u64,
    rng: u64,
}

struct CrudMix {
    mix: Mix,
    total: u32,
    resource: String,
    payload: String,
    id_field: String,
    max_live: usize,
    live: Vec<String>,
    created: u64,
    rng: Rng,
}

impl CrudMix {
    fn create(&mut self) -> Operation {
        self.created += 1;
        let body = format!(
            "{{\"name\":\"item-{}\",\"payload\":\"{}\"}}",
            self.created, self.payload
        );
        let mut op = Operation::new(
            OpKind::Create,
            "POST",
            self.resource.clone(),
            Some(body.into_bytes()),
        );
        op.capture_id = Some(IdSource::JsonField(self.id_field.clone()));
        op
    }

    fn pick_live(&mut self) -> usize {
        self.rng.below(self.live.len() as u64) as usize
    }

    fn one(&mut self) -> Operation {
        let roll = self.rng.below(u64::from(self.total)) as u32;
        let m = self.mix;
        let kind = if roll < m.create {
            OpKind::Create
        } else if roll < m.create + m.read {
            OpKind::Read
        } else if roll < m.create + m.read + m.update {
            OpKind::Update
        } else {
            OpKind::Delete
        };
        if kind == OpKind::Create || self.live.is_empty() {
            return self.create();
        }
        let i = self.pick_live();
        match kind {
            OpKind::Read => {
                Operation::get(OpKind::Read, format!("{}/{}", self.resource, self.live[i]))
            }
            OpKind::Update => {
                let body = format!(
                    "{{\"name\":\"updated-{}\",\"payload\":\"{}\"}}",
                    self.live[i], self.payload
                );
                Operation::new(
                    OpKind::Update,
                    "PUT",
                    format!("{}/{}", self.resource, self.live[i]),
                    Some(body.into_bytes()),
                )
            }
            _ => {
                // Forget it at once so nothing else is aimed at a deleted entity.
                let id = self.live.swap_remove(i);
                Operation::new(
                    OpKind::Delete,
                    "DELETE",
                    format!("{}/{id}", self.resource),
                    None,
                )
            }
        }
    }
}

impl Generator for CrudMix {
    fn init(config: &str, seed: u64, state: Option<Vec<u8>>) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("crud-mix", config)?;
        let mix = match c.mix {
            Some(m) => m,
            None => profile_mix(&c.profile).ok_or_else(|| {
                format!(
                    "unknown profile \"{}\" (known: development, load-testing, production, read-heavy, write-heavy)",
                    c.profile
                )
            })?,
        };
        let total = mix.create + mix.read + mix.update + mix.delete;
        if total == 0 {
            return Err("the mix must not be all zero".into());
        }
        let saved: State = match state {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("unreadable saved state: {e}"))?,
            None => State {
                rng: seed,
                ..State::default()
            },
        };
        Ok(CrudMix {
            mix,
            total,
            resource: c.resource.trim_end_matches('/').to_string(),
            payload: "x".repeat(c.payload_bytes),
            id_field: c.id_field,
            max_live: c.max_live.max(1),
            live: saved.live,
            created: saved.created,
            rng: Rng::new(saved.rng),
        })
    }

    fn next_batch(&mut self, _ctx: &BatchContext, max: u32) -> Vec<Operation> {
        (0..max).map(|_| self.one()).collect()
    }

    fn observe(&mut self, results: Vec<OpResult>) {
        for r in results {
            match (r.kind, r.created_id) {
                (OpKind::Create, Some(id)) if (200..300).contains(&r.status) => {
                    if self.live.len() >= self.max_live {
                        let i = self.pick_live();
                        self.live.swap_remove(i);
                    }
                    self.live.push(id);
                }
                (OpKind::Read | OpKind::Update, _) if r.status == 404 => {
                    if let Some(id) = r.path.rsplit('/').next()
                        && let Some(i) = self.live.iter().position(|l| l == id)
                    {
                        self.live.swap_remove(i);
                    }
                }
                _ => {}
            }
        }
    }

    fn save_state(&self) -> Vec<u8> {
        let state = State {
            live: self.live.clone(),
            created: self.created,
            rng: self.rng.state(),
        };
        serde_json::to_vec(&state).unwrap_or_default()
    }
}

switchyard_sdk::export_generator!(CrudMix);
