//! `fixed-request`: an operation generator that issues one request over and
//! over — the `wrk` workload, for measuring raw throughput and latency.
//!
//! Config (JSON, all optional): `{"method": "GET", "path": "/",
//! "headers": {"accept": "application/json"}, "body": null, "name": "get"}`.
//! The operation is reported as a `read` for GET and HEAD, else as a custom
//! operation named `name` (default: the method in lower case).

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_sdk::{BatchContext, Generator, Header, OpKind, OpResult, Operation};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            method: "GET".into(),
            path: "/".into(),
            headers: BTreeMap::new(),
            body: None,
            name: None,
        }
    }
}

struct Fixed {
    op: Operation,
}

impl Generator for Fixed {
    fn init(config: &str, _seed: u64, _state: Option<Vec<u8>>) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("fixed-request", config)?;
        let method = c.method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("invalid method \"{}\"", c.method));
        }
        if !c.path.starts_with('/') {
            return Err(format!("the path must start with /: \"{}\"", c.path));
        }
        let kind = if matches!(method.as_str(), "GET" | "HEAD") {
            OpKind::Read
        } else {
            OpKind::Custom
        };
        let mut op = Operation::new(kind, &method, c.path, c.body.map(String::into_bytes));
        op.name = c.name.unwrap_or_else(|| method.to_ascii_lowercase());
        op.headers.extend(
            c.headers
                .into_iter()
                .map(|(name, value)| Header { name, value }),
        );
        Ok(Fixed { op })
    }

    fn next_batch(&mut self, _ctx: &BatchContext, max: u32) -> Vec<Operation> {
        vec![self.op.clone(); max as usize]
    }

    fn observe(&mut self, _results: Vec<OpResult>) {}

    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }
}

switchyard_sdk::export_generator!(Fixed);
