//! The metrics snapshot plugins see: what the WIT `snapshot` record
//! carries, as a plain Rust value the host builds, serialises for the admin
//! API and `switchyard plugin test`, and converts for the plugin runtime.

use serde::{Deserialize, Serialize};

/// Figures over one time window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowStats {
    pub window_ms: u32,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub mean_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub cache_hit_ratio: f64,
}

/// One backend as the proxy sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendStats {
    /// `upstream/address`.
    pub id: String,
    pub healthy: bool,
    pub ejected: bool,
    pub weight: u32,
    pub in_flight: u32,
    pub ewma_latency_us: u64,
    pub requests: u64,
    pub errors: u64,
    pub p99_us: u64,
}

/// Everything an alert rule or optimizer is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Snapshot {
    pub now_ms: u64,
    pub current: WindowStats,
    pub windows: Vec<WindowStats>,
    pub in_flight: u32,
    pub concurrency_limit: u32,
    pub cache_capacity_bytes: u64,
    pub cpu_utilization: f64,
    pub memory_rss_bytes: u64,
    pub memory_limit_bytes: u64,
    pub backends: Vec<BackendStats>,
    pub firing_alerts: Vec<String>,
}
