//! Plugins built against contract 0.1.0 keep loading: their values are
//! converted to and from the current contract's at the call boundary.
//! 0.2.0 only added fields to the snapshot, so the conversion towards an
//! old plugin drops them and every other value maps one to one.

use super::bindings::{alert, generate, host, optimize, types};
use super::bindings::{alert_world, generator_world, optimizer_world};
use super::bindings::{backend_stats, v0_1, window_stats};
use super::host_state::HostState;
use wasmtime::Store;

/// The 0.1.0 snapshot: the current one without `queue` and `trends`.
pub fn snapshot(s: &types::Snapshot) -> v0_1::types::Snapshot {
    let window = |w: &types::WindowStats| window_stats!(v0_1::types::WindowStats, w);
    v0_1::types::Snapshot {
        now_ms: s.now_ms,
        current: window(&s.current),
        windows: s.windows.iter().map(window).collect(),
        in_flight: s.in_flight,
        concurrency_limit: s.concurrency_limit,
        cache_capacity_bytes: s.cache_capacity_bytes,
        cpu_utilization: s.cpu_utilization,
        memory_rss_bytes: s.memory_rss_bytes,
        memory_limit_bytes: s.memory_limit_bytes,
        backends: s
            .backends
            .iter()
            .map(|b| backend_stats!(v0_1::types::BackendStats, b))
            .collect(),
        firing_alerts: s.firing_alerts.clone(),
    }
}

pub fn rule_meta(m: v0_1::alert::RuleMeta) -> alert::RuleMeta {
    alert::RuleMeta {
        name: m.name,
        description: m.description,
        for_ms: m.for_ms,
        keep_firing_for_ms: m.keep_firing_for_ms,
    }
}

pub fn finding(f: v0_1::alert::Finding) -> alert::Finding {
    use v0_1::types::Severity as S;
    alert::Finding {
        key: f.key,
        active: f.active,
        severity: match f.severity {
            S::Info => types::Severity::Info,
            S::Low => types::Severity::Low,
            S::Medium => types::Severity::Medium,
            S::High => types::Severity::High,
            S::Critical => types::Severity::Critical,
        },
        value: f.value,
        threshold: f.threshold,
        labels: f
            .labels
            .into_iter()
            .map(|l| types::Label {
                key: l.key,
                value: l.value,
            })
            .collect(),
        summary: f.summary,
    }
}

pub fn decision(d: v0_1::optimize::Decision) -> optimize::Decision {
    use v0_1::optimize::Adjustment as A;
    optimize::Decision {
        adjustments: d
            .adjustments
            .into_iter()
            .map(|a| match a {
                A::ConcurrencyLimit(n) => optimize::Adjustment::ConcurrencyLimit(n),
                A::BackendWeight(w) => {
                    optimize::Adjustment::BackendWeight(optimize::WeightChange {
                        backend: w.backend,
                        weight: w.weight,
                    })
                }
                A::CacheCapacityBytes(n) => optimize::Adjustment::CacheCapacityBytes(n),
            })
            .collect(),
        reason: d.reason,
        state: d.state,
    }
}

pub fn batch_context(c: generate::BatchContext) -> v0_1::generate::BatchContext {
    v0_1::generate::BatchContext {
        now_ms: c.now_ms,
        issued: c.issued,
        in_flight: c.in_flight,
    }
}

fn op_kind(k: v0_1::generate::OpKind) -> generate::OpKind {
    use v0_1::generate::OpKind as K;
    match k {
        K::Create => generate::OpKind::Create,
        K::Read => generate::OpKind::Read,
        K::Update => generate::OpKind::Update,
        K::Delete => generate::OpKind::Delete,
        K::Custom => generate::OpKind::Custom,
    }
}

fn op_kind_back(k: generate::OpKind) -> v0_1::generate::OpKind {
    use generate::OpKind as K;
    match k {
        K::Create => v0_1::generate::OpKind::Create,
        K::Read => v0_1::generate::OpKind::Read,
        K::Update => v0_1::generate::OpKind::Update,
        K::Delete => v0_1::generate::OpKind::Delete,
        K::Custom => v0_1::generate::OpKind::Custom,
    }
}

pub fn operation(o: v0_1::generate::Operation) -> generate::Operation {
    use v0_1::generate::IdSource as I;
    generate::Operation {
        kind: op_kind(o.kind),
        name: o.name,
        method: o.method,
        path: o.path,
        headers: o
            .headers
            .into_iter()
            .map(|h| generate::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        body: o.body,
        idempotent: o.idempotent,
        capture_id: o.capture_id.map(|c| match c {
            I::JsonField(f) => generate::IdSource::JsonField(f),
            I::Header(h) => generate::IdSource::Header(h),
        }),
    }
}

pub fn op_result(r: &generate::OpResult) -> v0_1::generate::OpResult {
    v0_1::generate::OpResult {
        kind: op_kind_back(r.kind),
        path: r.path.clone(),
        status: r.status,
        latency_us: r.latency_us,
        created_id: r.created_id.clone(),
        error: r.error.clone(),
    }
}

impl v0_1::host::Host for HostState {
    fn log(&mut self, level: v0_1::host::LogLevel, message: String) {
        use v0_1::host::LogLevel as L;
        let level = match level {
            L::Trace => host::LogLevel::Trace,
            L::Debug => host::LogLevel::Debug,
            L::Info => host::LogLevel::Info,
            L::Warn => host::LogLevel::Warn,
            L::Error => host::LogLevel::Error,
        };
        host::Host::log(self, level, message);
    }
}

/// A plugin's bindings (or pre-instantiation) in the current contract or
/// in 0.1.0, chosen by what the component exports.
pub enum Versioned<C, O> {
    Current(C),
    V0_1(O),
}

impl<C, O> Versioned<C, O> {
    /// The current contract's bindings if the component fits them, else
    /// 0.1.0's; the current contract's error when neither fits.
    pub fn prepare<P: Clone>(
        pre: P,
        current: impl FnOnce(P) -> wasmtime::Result<C>,
        old: impl FnOnce(P) -> wasmtime::Result<O>,
    ) -> wasmtime::Result<Self> {
        match current(pre.clone()) {
            Ok(c) => Ok(Versioned::Current(c)),
            Err(e) => old(pre).map(Versioned::V0_1).map_err(|_| e),
        }
    }
}

/// A prepared component that can be instantiated into its bindings; one
/// implementation per generated `*Pre` type, and one for [`Versioned`].
pub trait Instantiate {
    type Bindings;
    fn instantiate_in(&self, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings>;
}

macro_rules! instantiate {
    ($($pre:ty => $bindings:ty),* $(,)?) => {$(
        impl Instantiate for $pre {
            type Bindings = $bindings;
            fn instantiate_in(
                &self,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<Self::Bindings> {
                self.instantiate(store)
            }
        }
    )*};
}

instantiate! {
    alert_world::AlertRulePre<HostState> => alert_world::AlertRule,
    optimizer_world::OptimizerPre<HostState> => optimizer_world::Optimizer,
    generator_world::OperationGeneratorPre<HostState> => generator_world::OperationGenerator,
    v0_1::alert_world::AlertRulePre<HostState> => v0_1::alert_world::AlertRule,
    v0_1::optimizer_world::OptimizerPre<HostState> => v0_1::optimizer_world::Optimizer,
    v0_1::generator_world::OperationGeneratorPre<HostState> => v0_1::generator_world::OperationGenerator,
}

impl<C: Instantiate, O: Instantiate> Instantiate for Versioned<C, O> {
    type Bindings = Versioned<C::Bindings, O::Bindings>;
    fn instantiate_in(&self, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings> {
        Ok(match self {
            Versioned::Current(p) => Versioned::Current(p.instantiate_in(store)?),
            Versioned::V0_1(p) => Versioned::V0_1(p.instantiate_in(store)?),
        })
    }
}
