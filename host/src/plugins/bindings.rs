//! Host bindings generated from `wit/plugins.wit`, one module per world.
//! The shared `types` and `host` interfaces are generated once (in the
//! optimizer world) and reused by the others, so one `Snapshot` value serves
//! every kind.

pub mod optimizer_world {
    wasmtime::component::bindgen!({
        world: "optimizer",
        path: "../wit",
        additional_derives: [serde::Serialize],
    });
}

pub mod alert_world {
    wasmtime::component::bindgen!({
        world: "alert-rule",
        path: "../wit",
        additional_derives: [serde::Serialize],
        with: {
            "switchyard:plugins/types": super::optimizer_world::switchyard::plugins::types,
            "switchyard:plugins/host": super::optimizer_world::switchyard::plugins::host,
        },
    });
}

pub mod generator_world {
    wasmtime::component::bindgen!({
        world: "operation-generator",
        path: "../wit",
        additional_derives: [serde::Serialize],
        with: {
            "switchyard:plugins/host": super::optimizer_world::switchyard::plugins::host,
        },
    });
}

pub use alert_world::exports::switchyard::plugins::alert;
pub use generator_world::exports::switchyard::plugins::generate;
pub use optimizer_world::exports::switchyard::plugins::optimize;
pub use optimizer_world::switchyard::plugins::host;
pub use optimizer_world::switchyard::plugins::types;

use crate::telemetry;

impl From<&telemetry::WindowStats> for types::WindowStats {
    fn from(w: &telemetry::WindowStats) -> Self {
        types::WindowStats {
            window_ms: w.window_ms,
            requests: w.requests,
            errors: w.errors,
            rps: w.rps,
            mean_us: w.mean_us,
            p50_us: w.p50_us,
            p90_us: w.p90_us,
            p99_us: w.p99_us,
            max_us: w.max_us,
            cache_hit_ratio: w.cache_hit_ratio,
        }
    }
}

impl From<&telemetry::Snapshot> for types::Snapshot {
    fn from(s: &telemetry::Snapshot) -> Self {
        types::Snapshot {
            now_ms: s.now_ms,
            current: (&s.current).into(),
            windows: s.windows.iter().map(Into::into).collect(),
            in_flight: s.in_flight,
            concurrency_limit: s.concurrency_limit,
            cache_capacity_bytes: s.cache_capacity_bytes,
            cpu_utilization: s.cpu_utilization,
            memory_rss_bytes: s.memory_rss_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            backends: s
                .backends
                .iter()
                .map(|b| types::BackendStats {
                    id: b.id.clone(),
                    healthy: b.healthy,
                    ejected: b.ejected,
                    weight: b.weight,
                    in_flight: b.in_flight,
                    ewma_latency_us: b.ewma_latency_us,
                    requests: b.requests,
                    errors: b.errors,
                    p99_us: b.p99_us,
                })
                .collect(),
            firing_alerts: s.firing_alerts.clone(),
        }
    }
}
