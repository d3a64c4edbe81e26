//! `switchyard plugin test`: runs a plugin against a recorded input without a
//! proxy, under the proxy's limits, and reports its output, every call's
//! time (`init` first), its `host.log` lines and its peak memory as JSON.
//! With an `expect` block it is a test case: it exits 1 and prints what is
//! missing when the output lacks what the block names.
//!
//! Input (all keys optional):
//!
//! ```json
//! { "config": {"min_requests": 5},            // handed to init (a string is passed as is)
//!   "snapshot": { "current": { "requests": 100, "errors": 30 } },   // alert rules, optimizers
//!   "state": "…",       // optimizers: the previous decision's state;
//!                       // generators: what the previous version's save-state returned
//!   "seed": 1, "batches": 2, "batch_size": 10, "simulate": true,    // generators
//!   "expect": { "findings": [{"key": "p99", "active": true}],       // alert rules
//!               "adjustments": [{"knob": "concurrency_limit"}],     // optimizers
//!               "operations": [{"kind": "create"}] } }              // generators
//! ```
//!
//! A bare snapshot object is accepted as the whole input. For generators,
//! `simulate` feeds each batch back as successful results (creates get ids
//! `sim-1`, `sim-2`, …) so a stateful generator can be watched at work.
//!
//! Each `expect` entry must match at least one item of the output: every
//! key it names must be there with an equal value (objects match the same
//! way, key by key; numbers as numbers). `"quiet": true` asks that no
//! finding is active.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use super::bindings::alert::Finding;
use super::bindings::generate::{BatchContext, IdSource, OpKind, OpResult, Operation};
use super::bindings::optimize::Adjustment;
use super::host_state::LogCapture;
use super::{
    AlertPlugin, Compiled, GeneratorPlugin, OptimizerPlugin, PluginEngine, PluginFailure, contract,
};
use crate::config::{PluginKind, PluginLimits, PluginRuntimeSection, PluginSection};
use crate::proxy::registry::{CACHE_CAPACITY, CONCURRENCY_LIMIT, requested_weight_knob};
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
    expect: Option<Expect>,
}

/// What the output must hold; see the module doc.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    findings: Vec<Value>,
    #[serde(default)]
    adjustments: Vec<Value>,
    #[serde(default)]
    operations: Vec<Value>,
    quiet: Option<bool>,
}

#[derive(Debug)]
pub enum TryRunError {
    /// The input or the file is unusable; nothing ran.
    BadInput(String),
    /// The plugin ran and failed; the report says how.
    PluginFailed(Value),
    /// The plugin ran, and its output lacks what `expect` names; the
    /// report's `expect.missing` says what.
    ExpectationFailed(Value),
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

/// Runs the plugin in `file` against the input in `input`, each call held
/// to `limits` as the proxy would hold it.
pub fn try_run(
    file: &Path,
    input: Option<&Path>,
    limits: PluginLimits,
    compiler: super::Compiler,
) -> Result<Value, TryRunError> {
    let input = read_input(input).map_err(TryRunError::BadInput)?;
    let bytes = std::fs::read(file)
        .map_err(|e| TryRunError::BadInput(format!("cannot read {}: {e}", file.display())))?;
    let engine = PluginEngine::with_compiler(None, limits.fuel.is_some(), compiler)
        .map_err(|e| TryRunError::BadInput(format!("{e:#}")))?;
    let logs = engine.capture_logs();
    let started = Instant::now();
    let hash = super::content_hash(&bytes);
    let (component, cache, compile_time) = engine
        .component(&bytes, &hash)
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
        limits,
    };
    let runtime = PluginRuntimeSection {
        quarantine_after: u32::MAX,
        ..PluginRuntimeSection::default()
    };
    let mut report = json!({
        "plugin": absolute.display().to_string(),
        "kind": kind.as_str(),
        "compiled_from_cache": cache == super::CacheOutcome::Hit,
        "compiler": compiler.as_str(),
    });
    report["limits"] = json!({
        "timeout_ms": section.limits.timeout.get().as_millis() as u64,
        "init_timeout_ms": section.limits.init_timeout.get().as_millis() as u64,
        "memory_bytes": section.limits.memory.0,
        "fuel": section.limits.fuel,
    });
    let loaded = engine
        .prepare(component, &hash, cache, compile_time, kind)
        .and_then(|compiled| Loaded::load(kind, &section, &runtime, engine, compiled, &input));
    let mut log = log_lines(&logs);
    let loaded = loaded.map_err(|e| {
        report["logs"] = json!(log);
        report["error"] = json!({ "cause": "init", "message": e });
        TryRunError::PluginFailed(report.clone())
    })?;
    report["load_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    let view = loaded.view();
    report["content_hash"] = json!(view.content_hash);
    let mut calls = vec![json!({ "call": "init", "us": loaded.init_us() })];
    let outcome = loaded.run(&input, &mut calls);
    report["calls"] = json!(calls);
    log.extend(log_lines(&logs));
    report["logs"] = json!(log);
    report["memory_peak_bytes"] = json!(loaded.peak_memory());
    match outcome {
        Ok(output) => {
            report["output"] = output;
            if let Some(expect) = &input.expect {
                let missing = expect.missing(&report["output"]);
                report["expect"] = json!({ "passed": missing.is_empty(), "missing": missing });
                if !missing.is_empty() {
                    return Err(TryRunError::ExpectationFailed(report));
                }
            }
            Ok(report)
        }
        Err(f) => {
            report["error"] = json!({ "cause": f.cause.as_str(), "message": f.message });
            Err(TryRunError::PluginFailed(report))
        }
    }
}

fn log_lines(logs: &LogCapture) -> Vec<Value> {
    logs.take()
        .into_iter()
        .map(|(level, message)| json!({ "level": level.as_str(), "message": message }))
        .collect()
}

/// Whether `actual` holds everything `expected` names: equal scalars
/// (numbers compared as numbers), objects key by key, arrays item by item.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|got| matches(v, got))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

impl Expect {
    /// The expectations the output does not meet, each with what was there
    /// instead.
    fn missing(&self, output: &Value) -> Vec<Value> {
        let operations: Vec<Value> = output["batches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .cloned()
            .collect();
        let findings = output["findings"].as_array().cloned().unwrap_or_default();
        let adjustments = output["adjustments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut missing = Vec::new();
        for (what, wanted, got) in [
            ("findings", &self.findings, &findings),
            ("adjustments", &self.adjustments, &adjustments),
            ("operations", &self.operations, &operations),
        ] {
            for w in wanted {
                if !got.iter().any(|g| matches(w, g)) {
                    missing.push(json!({ "expected": what, "item": w, "got": got }));
                }
            }
        }
        if self.quiet == Some(true) {
            let active: Vec<&Value> = findings.iter().filter(|f| f["active"] == true).collect();
            if !active.is_empty() {
                missing.push(
                    json!({ "expected": "quiet", "item": "no active finding", "got": active }),
                );
            }
        }
        missing
    }
}

/// A failed `expect` block as lines a person reads: what was expected
/// (`- `) and what the output held instead (`+ `).
pub fn expectation_diff(report: &Value) -> String {
    let mut out = String::new();
    for m in report["expect"]["missing"].as_array().into_iter().flatten() {
        let what = m["expected"].as_str().unwrap_or("?");
        out.push_str(&format!("{what}: nothing matches\n- {}\n", m["item"]));
        // What there was, shown by the keys the expectation names, each
        // distinct item once.
        let mut got: Vec<Value> = Vec::new();
        for g in m["got"].as_array().into_iter().flatten() {
            let shown = match (&m["item"], g) {
                (Value::Object(want), Value::Object(have)) => Value::Object(
                    have.iter()
                        .filter(|(k, _)| want.contains_key(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => g.clone(),
            };
            if !got.contains(&shown) {
                got.push(shown);
            }
        }
        if got.is_empty() {
            out.push_str("+ (none)\n");
        }
        for g in got.iter().take(20) {
            out.push_str(&format!("+ {g}\n"));
        }
        if got.len() > 20 {
            out.push_str(&format!("+ … {} more\n", got.len() - 20));
        }
    }
    out
}

/// A finding as the admin API writes it: severity in lower case.
fn finding_value(f: &Finding) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    v["severity"] = json!(crate::alerts::severity_name(f.severity));
    v
}

/// An adjustment named as `/admin/optimizer` names its knob.
fn adjustment_value(a: &Adjustment) -> Value {
    match a {
        Adjustment::ConcurrencyLimit(n) => json!({ "knob": CONCURRENCY_LIMIT, "value": n }),
        Adjustment::BackendWeight(w) => json!({
            "knob": requested_weight_knob(&w.backend),
            "backend": w.backend,
            "value": w.weight,
        }),
        Adjustment::CacheCapacityBytes(n) => {
            json!({ "knob": CACHE_CAPACITY, "value": n })
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

/// An operation as the contract spells it: kinds and id sources in
/// kebab case, a text body as text.
fn operation_value(op: &Operation) -> Value {
    let mut v = serde_json::to_value(op).unwrap_or(Value::Null);
    v["kind"] = json!(op.kind.as_str());
    if let Some(body) = &op.body {
        v["body"] = bytes_value(body);
    }
    v["capture_id"] = match &op.capture_id {
        Some(IdSource::JsonField(f)) => json!({ "json-field": f }),
        Some(IdSource::Header(h)) => json!({ "header": h }),
        None => Value::Null,
    };
    v
}

impl Loaded {
    /// A plugin of `kind` from `compiled`, initialised as the proxy would.
    fn load(
        kind: PluginKind,
        section: &PluginSection,
        runtime: &PluginRuntimeSection,
        engine: Arc<PluginEngine>,
        compiled: Compiled,
        input: &Input,
    ) -> Result<Loaded, String> {
        let base = PathBuf::new();
        Ok(match kind {
            PluginKind::AlertRule => Loaded::Alert(AlertPlugin::load_compiled(
                section, &base, runtime, engine, compiled, 0, None,
            )?),
            PluginKind::Optimizer => Loaded::Optimizer(OptimizerPlugin::load_compiled(
                section, &base, runtime, engine, compiled, 0, None,
            )?),
            PluginKind::OperationGenerator => {
                // A generator is given the state a previous version saved,
                // as on a hot swap.
                let state = input.state.as_ref().map(|s| s.as_bytes().to_vec());
                Loaded::Generator(GeneratorPlugin::load_compiled(
                    section,
                    &base,
                    runtime,
                    engine,
                    compiled,
                    input.seed.unwrap_or(1),
                    state,
                )?)
            }
        })
    }

    fn init_us(&self) -> f64 {
        match self {
            Loaded::Alert(p) => p.current().init_us,
            Loaded::Optimizer(p) => p.current().init_us,
            Loaded::Generator(p) => p.current().init_us,
        }
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
                let findings: Vec<Value> = findings.iter().map(finding_value).collect();
                Ok(json!({ "rule": meta, "findings": findings }))
            }
            Loaded::Optimizer(p) => {
                let state = input.state.clone().unwrap_or_default();
                let d = timed(calls, "decide", || p.decide(&snapshot, state.as_bytes()))?;
                Ok(json!({
                    "adjustments": d.adjustments.iter().map(adjustment_value).collect::<Vec<_>>(),
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
