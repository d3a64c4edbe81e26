//! Host bindings generated from `wit/plugins.wit`, one module per world.
//! The shared `types` and `host` interfaces are generated once (in the
//! optimizer world) and reused by the others, so one `Snapshot` value serves
//! every kind.
//!
//! [`v0_1`] holds the bindings of the frozen contract 0.1.0
//! (`wit/0.1.0/plugins.wit`), so plugins built against it still load; see
//! `compat` for the conversions.

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

/// Contract 0.1.0: what plugins built before 0.2.0 export and import.
pub mod v0_1 {
    pub mod optimizer_world {
        wasmtime::component::bindgen!({
            world: "optimizer",
            path: "../wit/0.1.0",
        });
    }

    pub mod alert_world {
        wasmtime::component::bindgen!({
            world: "alert-rule",
            path: "../wit/0.1.0",
            with: {
                "switchyard:plugins/types": super::optimizer_world::switchyard::plugins::types,
                "switchyard:plugins/host": super::optimizer_world::switchyard::plugins::host,
            },
        });
    }

    pub mod generator_world {
        wasmtime::component::bindgen!({
            world: "operation-generator",
            path: "../wit/0.1.0",
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
}

pub use alert_world::exports::switchyard::plugins::alert;
pub use generator_world::exports::switchyard::plugins::generate;
pub use optimizer_world::exports::switchyard::plugins::optimize;
pub use optimizer_world::switchyard::plugins::host;
pub use optimizer_world::switchyard::plugins::types;

use crate::telemetry;

/// Builds a record of type `$ty` from `$src` by copying the named fields,
/// for the generated records that mirror a host type (or an older
/// contract's) field for field; `rest` fills the fields that differ.
macro_rules! same_fields {
    ($ty:path, $src:expr, [$($f:ident),* $(,)?] $(, $($rest:tt)*)?) => {{
        let src = $src;
        $ty { $($f: Clone::clone(&src.$f),)* $($($rest)*)? }
    }};
}
pub(crate) use same_fields;

/// A `window-stats` record of any contract version from another.
macro_rules! window_stats {
    ($ty:path, $src:expr) => {
        $crate::plugins::bindings::same_fields!(
            $ty,
            $src,
            [
                window_ms,
                requests,
                errors,
                rps,
                mean_us,
                p50_us,
                p90_us,
                p99_us,
                max_us,
                cache_hit_ratio
            ]
        )
    };
}
pub(crate) use window_stats;

/// A `backend-stats` record of any contract version from another.
macro_rules! backend_stats {
    ($ty:path, $src:expr) => {
        $crate::plugins::bindings::same_fields!(
            $ty,
            $src,
            [
                id,
                healthy,
                ejected,
                weight,
                in_flight,
                ewma_latency_us,
                requests,
                errors,
                p99_us
            ]
        )
    };
}
pub(crate) use backend_stats;

impl From<&telemetry::WindowStats> for types::WindowStats {
    fn from(w: &telemetry::WindowStats) -> Self {
        window_stats!(types::WindowStats, w)
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
                .map(|b| backend_stats!(types::BackendStats, b))
                .collect(),
            firing_alerts: s.firing_alerts.clone(),
            queue: types::QueueStats {
                depth: s.queue.depth,
                capacity: s.queue.capacity,
                window_ms: s.queue.window_ms,
                admitted: s.queue.admitted,
                timeouts: s.queue.timeouts,
                wait_mean_us: s.queue.wait_mean_us,
                wait_p50_us: s.queue.wait_p50_us,
                wait_p99_us: s.queue.wait_p99_us,
                classes: s
                    .queue
                    .classes
                    .iter()
                    .map(|c| {
                        same_fields!(
                            types::QueueClass,
                            c,
                            [
                                priority,
                                depth,
                                admitted,
                                timeouts,
                                wait_p50_us,
                                wait_p99_us
                            ]
                        )
                    })
                    .collect(),
            },
            trends: s.trends.iter().map(Into::into).collect(),
        }
    }
}

impl From<&telemetry::Trend> for types::Trend {
    fn from(t: &telemetry::Trend) -> Self {
        use telemetry::{TrendDirection as D, TrendSeries as S};
        types::Trend {
            series: match t.series {
                S::Rps => types::TrendSeries::Rps,
                S::ErrorRate => types::TrendSeries::ErrorRate,
                S::P99 => types::TrendSeries::P99,
            },
            window_ms: t.window_ms,
            points: t.points,
            slope_per_s: t.slope_per_s,
            mean: t.mean,
            value: t.value,
            horizon_ms: t.horizon_ms,
            predicted: t.predicted,
            r_squared: t.r_squared,
            direction: match t.direction {
                D::Increasing => types::TrendDirection::Increasing,
                D::Decreasing => types::TrendDirection::Decreasing,
                D::Stable => types::TrendDirection::Stable,
                D::Volatile => types::TrendDirection::Volatile,
            },
        }
    }
}
