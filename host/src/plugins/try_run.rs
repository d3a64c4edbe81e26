//! `switchyard plugin test`: runs a plugin against a recorded input without a
//! proxy and reports its output, timing and memory as JSON.
//!
//! Input (all keys optional):
//!
//! ```json
//! { "config": {"min_requests": 5},            // handed to init (a string is passed as is)
//!   "snapshot": { "current": { "requests": 100, "errors": 30 } },   // alert rules, optimizers
//!   "state": "…",                             // optimizers: the previous decision's state
//!   "seed": 1, "batches": 2, "batch_size": 10, "simulate": true }   // generators
//! ```
//!
//! A bare snapshot object is accepted as the whole input. For generators,
//! `simulate` feeds each batch back as successful results (creates get ids
//! `sim-1`, `sim-2`, …) so a stateful generator can be watched at work.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use super::bindings::generate::{BatchContext, IdSource, OpKind, OpResult, Operation};
use super::{AlertPlugin, GeneratorPlugin, OptimizerPlugin, PluginEngine, PluginFailure, contract};
use crate::config::{PluginKind, PluginLimits, PluginRuntimeSection, PluginSection};
use crate::telemetry::Snapshot;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Input {
    config: Option<Value>,
    snapshot: Option<Snapshot>,
    state: Option<String>,
    seed: Option<u64>,
    batches: Option<u32>,
    batch_size: Option<u32>,
    simulate: Option<bool>,
}

#[derive(Debug)]
pub enum TryRunError {
    /// The input or the file is unusable; nothing ran.
    BadInput(String),
    /// The plugin ran and failed; the report says how.
    PluginFailed(Value),
}

fn read_input(path: Option<&Path>) -> Result<Input, String> {
    let Some(path) = path else {
        return Ok(Input::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let looks_like_snapshot = value.get("current").is_some() || value.get("now_ms").is_some();
    if looks_like_snapshot && value.get("snapshot").is_none() {
        let snapshot = serde_json::from_value(value)
            .map_err(|e| format!("{}: not a snapshot: {e}", path.display()))?;
        return Ok(Input {
            snapshot: Some(snapshot),
            ..Input::default()
        });
    }
    serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the plugin in `file` against the input in `input`.
pub fn try_run(file: &Path, input: Option<&Path>) -> Result<Value, TryRunError> {
    let input = read_input(input).map_err(TryRunError::BadInput)?;
    let bytes = std::fs::read(file)
        .map_err(|e| TryRunError::BadInput(format!("cannot read {}: {e}", file.display())))?;
    let engine =
        PluginEngine::new(None, false).map_err(|e| TryRunError::BadInput(format!("{e:#}")))?;
    let started = Instant::now();
    let (component, _, cache, _) = engine
        .component(&bytes)
        .map_err(|e| TryRunError::BadInput(format!("{}: {e}", file.display())))?;
    let kind = contract::detect(engine.engine(), &component)
        .map_err(|e| TryRunError::BadInput(format!("{}: {e}", file.display())))?;
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let section = PluginSection {
        name: file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_string(),
        kind,
        path: absolute.clone(),
        config: input.config.clone(),
        limits: PluginLimits::default(),
    };
    let runtime = PluginRuntimeSection {
        quarantine_after: u32::MAX,
        ..PluginRuntimeSection::default()
    };
    let mut report = json!({
        "plugin": absolute.display().to_string(),
        "kind": kind.as_str(),
        "compiled_from_cache": cache == super::CacheOutcome::Hit,
    });
    let loaded = Loaded::load(kind, &section, &runtime, engine).map_err(|e| {
        report["error"] = json!({ "cause": "load", "message": e });
        TryRunError::PluginFailed(report.clone())
    })?;
    report["load_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    let view = loaded.view();
    report["content_hash"] = json!(view.content_hash);
    let mut calls = Vec::new();
    let outcome = loaded.run(&input, &mut calls);
    report["calls"] = json!(calls);
    report["memory_peak_bytes"] = json!(loaded.peak_memory());
    match outcome {
        Ok(output) => {
            report["output"] = output;
            Ok(report)
        }
        Err(f) => {
            report["error"] = json!({ "cause": f.cause.as_str(), "message": f.message });
            Err(TryRunError::PluginFailed(report))
        }
    }
}

enum Loaded {
    Alert(AlertPlugin),
    Optimizer(OptimizerPlugin),
    Generator(GeneratorPlugin),
}

fn timed<T>(calls: &mut Vec<Value>, name: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    calls.push(json!({ "call": name, "us": started.elapsed().as_secs_f64() * 1e6 }));
    out
}

/// Shows a byte string as text when it is UTF-8.
fn bytes_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!(bytes),
    }
}

fn operation_value(op: &Operation) -> Value {
    let mut v = serde_json::to_value(op).unwrap_or(Value::Null);
    if let Some(body) = &op.body {
        v["body"] = bytes_value(body);
    }
    v
}

impl Loaded {
    fn load(
        kind: PluginKind,
        section: &PluginSection,
        runtime: &PluginRuntimeSection,
        engine: Arc<PluginEngine>,
    ) -> Result<Loaded, String> {
        let base = PathBuf::new();
        Ok(match kind {
            PluginKind::AlertRule => {
                Loaded::Alert(AlertPlugin::load(section, &base, runtime, engine)?)
            }
            PluginKind::Optimizer => {
                Loaded::Optimizer(OptimizerPlugin::load(section, &base, runtime, engine)?)
            }
            PluginKind::OperationGenerator => {
                Loaded::Generator(GeneratorPlugin::load(section, &base, runtime, engine)?)
            }
        })
    }

    fn view(&self) -> super::PluginView {
        match self {
            Loaded::Alert(p) => p.view(),
            Loaded::Optimizer(p) => p.view(),
            Loaded::Generator(p) => p.view(),
        }
    }

    fn peak_memory(&self) -> usize {
        match self {
            Loaded::Alert(p) => p.peak_memory_bytes(),
            Loaded::Optimizer(p) => p.peak_memory_bytes(),
            Loaded::Generator(p) => p.peak_memory_bytes(),
        }
    }

    fn run(&self, input: &Input, calls: &mut Vec<Value>) -> Result<Value, PluginFailure> {
        let snapshot = super::PluginSnapshot::from(&input.snapshot.clone().unwrap_or_default());
        match self {
            Loaded::Alert(p) => {
                let meta = timed(calls, "describe", || p.describe())?;
                let findings = timed(calls, "evaluate", || p.evaluate(&snapshot))?;
                Ok(json!({ "rule": meta, "findings": findings }))
            }
            Loaded::Optimizer(p) => {
                let state = input.state.clone().unwrap_or_default();
                let d = timed(calls, "decide", || p.decide(&snapshot, state.as_bytes()))?;
                Ok(json!({
                    "adjustments": d.adjustments,
                    "reason": d.reason,
                    "state": bytes_value(&d.state),
                }))
            }
            Loaded::Generator(p) => self.run_generator(p, input, calls),
        }
    }

    fn run_generator(
        &self,
        p: &GeneratorPlugin,
        input: &Input,
        calls: &mut Vec<Value>,
    ) -> Result<Value, PluginFailure> {
        p.set_seed(input.seed.unwrap_or(1));
        let size = input.batch_size.unwrap_or(10);
        let simulate = input.simulate.unwrap_or(true);
        let mut batches = Vec::new();
        let (mut issued, mut ids) = (0u64, 0u64);
        for _ in 0..input.batches.unwrap_or(1) {
            let ctx = BatchContext {
                now_ms: crate::clock::now_ms(),
                issued,
                in_flight: 0,
            };
            let ops = timed(calls, "next-batch", || p.next_batch(ctx, size))?;
            issued += ops.len() as u64;
            if simulate {
                let results: Vec<OpResult> = ops
                    .iter()
                    .map(|op| {
                        let create = op.kind == OpKind::Create
                            && matches!(
                                op.capture_id,
                                Some(IdSource::JsonField(_) | IdSource::Header(_))
                            );
                        OpResult {
                            kind: op.kind,
                            path: op.path.clone(),
                            status: if op.kind == OpKind::Create { 201 } else { 200 },
                            latency_us: 1000,
                            created_id: create.then(|| {
                                ids += 1;
                                format!("sim-{ids}")
                            }),
                            error: None,
                        }
                    })
                    .collect();
                timed(calls, "observe", || p.observe(&results))?;
            }
            batches.push(ops.iter().map(operation_value).collect::<Vec<_>>());
        }
        let state = timed(calls, "save-state", || p.save_state())?;
        Ok(json!({ "batches": batches, "state": bytes_value(&state) }))
    }
}
