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
    pub queue: QueueStats,
    pub trends: Vec<Trend>,
}

/// One priority class of the admission queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueClass {
    pub priority: u8,
    pub depth: u32,
    pub admitted: u64,
    pub timeouts: u64,
    pub wait_p50_us: u64,
    pub wait_p99_us: u64,
}

/// The admission queue: depth now, and waits over a short window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueStats {
    pub depth: u32,
    pub capacity: u32,
    pub window_ms: u32,
    pub admitted: u64,
    pub timeouts: u64,
    pub wait_mean_us: u64,
    pub wait_p50_us: u64,
    pub wait_p99_us: u64,
    /// Highest class first; idle classes left out.
    pub classes: Vec<QueueClass>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrendSeries {
    #[default]
    Rps,
    ErrorRate,
    P99,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrendDirection {
    Increasing,
    Decreasing,
    #[default]
    Stable,
    Volatile,
}

/// A least-squares line through one series over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trend {
    pub series: TrendSeries,
    pub window_ms: u32,
    pub points: u32,
    pub slope_per_s: f64,
    pub mean: f64,
    pub value: f64,
    pub horizon_ms: u32,
    pub predicted: f64,
    pub r_squared: f64,
    pub direction: TrendDirection,
}
