//! Metrics: names, pre-registered handles for the hot path, and the
//! Prometheus recorder.
//!
//! Every metric goes through the `metrics` facade. Handles with their labels
//! are registered once, when a config is built, so recording on the request
//! path is an atomic add and never a registry lookup. Gauges that describe
//! state (in-flight, health, ejection) are set when `/metrics` is scraped.

pub mod export;
mod process;
mod prometheus;
mod snapshot;
pub mod trend;
pub mod windows;

pub use process::{ProcessStats, exposition as process_exposition};
pub use prometheus::{PrometheusExport, install};
pub use snapshot::{
    BackendStats, QueueClass, QueueStats, Snapshot, Trend, TrendDirection, TrendSeries, WindowStats,
};
pub use windows::{Series, Windows};

use metrics::{Counter, Histogram};

/// Metric names, in one place so docs and code agree.
pub mod names {
    pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
    pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
    pub const IN_FLIGHT: &str = "switchyard_in_flight_requests";
    pub const UPSTREAM_REQUESTS_TOTAL: &str = "switchyard_upstream_requests_total";
    pub const UPSTREAM_DURATION: &str = "switchyard_upstream_duration_seconds";
    pub const BACKEND_IN_FLIGHT: &str = "switchyard_backend_in_flight";
    pub const BACKEND_HEALTHY: &str = "switchyard_backend_healthy";
    pub const BACKEND_EJECTED: &str = "switchyard_backend_ejected";
    pub const BACKEND_EWMA: &str = "switchyard_backend_ewma_latency_seconds";
    pub const BACKEND_WEIGHT: &str = "switchyard_backend_weight";
    pub const EJECTIONS_TOTAL: &str = "switchyard_backend_ejections_total";
    pub const HEALTH_CHECKS_TOTAL: &str = "switchyard_health_checks_total";
    pub const RETRIES_TOTAL: &str = "switchyard_retries_total";
    pub const RETRY_BUDGET_EXHAUSTED: &str = "switchyard_retry_budget_exhausted_total";
    pub const BREAKER_REJECTIONS: &str = "switchyard_breaker_rejections_total";
    pub const NO_HEALTHY_BACKEND: &str = "switchyard_no_healthy_backend_total";
    pub const PANIC_ROUTED: &str = "switchyard_panic_mode_requests_total";
    pub const TUNNELS_OPEN: &str = "switchyard_tunnels_open";
    pub const TUNNEL_BYTES: &str = "switchyard_tunnel_bytes_total";
    pub const TUNNEL_DURATION: &str = "switchyard_tunnel_duration_seconds";
    pub const GRPC_RESPONSES: &str = "switchyard_grpc_responses_total";
}

/// Index of a response in [`StatusCounters`]: 1xx..5xx, then `error` for no
/// response at all (connect failure, timeout).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

#[inline]
pub fn status_class_index(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100 - 1),
        _ => 5,
    }
}

/// One counter per status class.
#[derive(Clone, Debug)]
pub struct StatusCounters([Counter; 6]);

impl StatusCounters {
    fn new(name: &'static str, labels: &[(&'static str, String)]) -> Self {
        StatusCounters(STATUS_CLASSES.map(|class| {
            let mut l: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            l.push(metrics::Label::new("status_class", class));
            metrics::counter!(name, l)
        }))
    }

    #[inline]
    pub fn record(&self, status: Option<u16>) {
        self.0[status_class_index(status)].increment(1);
    }

    pub fn noop() -> Self {
        StatusCounters(std::array::from_fn(|_| Counter::noop()))
    }
}

/// Downstream metrics of one route.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    pub requests: StatusCounters,
    pub duration: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str, upstream: &str) -> Self {
        let labels = [
            ("route", route.to_string()),
            ("upstream", upstream.to_string()),
        ];
        RouteMetrics {
            requests: StatusCounters::new(names::REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(names::REQUEST_DURATION, &labels),
        }
    }
}

/// Per-attempt metrics of one backend.
#[derive(Clone, Debug)]
pub struct BackendMetrics {
    pub requests: StatusCounters,
    pub duration: Histogram,
    pub ejections: Counter,
}

impl BackendMetrics {
    pub fn new(upstream: &str, backend: &str) -> Self {
        let labels = [
            ("upstream", upstream.to_string()),
            ("backend", backend.to_string()),
        ];
        BackendMetrics {
            requests: StatusCounters::new(names::UPSTREAM_REQUESTS_TOTAL, &labels),
            duration: metrics::histogram!(names::UPSTREAM_DURATION, &labels),
            ejections: metrics::counter!(names::EJECTIONS_TOTAL, &labels),
        }
    }

    pub fn noop() -> Self {
        BackendMetrics {
            requests: StatusCounters::noop(),
            duration: Histogram::noop(),
            ejections: Counter::noop(),
        }
    }
}

/// Per-upstream counters of the resilience mechanisms.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    pub retries: Counter,
    pub budget_exhausted: Counter,
    pub breaker_rejections: Counter,
    pub no_healthy_backend: Counter,
    pub panic_routed: Counter,
    /// Upgraded connections (WebSocket) open now, and when they close,
    /// their bytes each way and how long they lasted.
    pub tunnels_open: metrics::Gauge,
    pub tunnel_bytes_to_backend: Counter,
    pub tunnel_bytes_to_client: Counter,
    pub tunnel_duration: Histogram,
}

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> Self {
        let labels = [("upstream", upstream.to_string())];
        UpstreamMetrics {
            retries: metrics::counter!(names::RETRIES_TOTAL, &labels),
            budget_exhausted: metrics::counter!(names::RETRY_BUDGET_EXHAUSTED, &labels),
            breaker_rejections: metrics::counter!(names::BREAKER_REJECTIONS, &labels),
            no_healthy_backend: metrics::counter!(names::NO_HEALTHY_BACKEND, &labels),
            panic_routed: metrics::counter!(names::PANIC_ROUTED, &labels),
            tunnels_open: metrics::gauge!(names::TUNNELS_OPEN, &labels),
            tunnel_bytes_to_backend: metrics::counter!(
                names::TUNNEL_BYTES,
                "upstream" => upstream.to_string(),
                "direction" => "to_backend"
            ),
            tunnel_bytes_to_client: metrics::counter!(
                names::TUNNEL_BYTES,
                "upstream" => upstream.to_string(),
                "direction" => "to_client"
            ),
            tunnel_duration: metrics::histogram!(names::TUNNEL_DURATION, &labels),
        }
    }
}
