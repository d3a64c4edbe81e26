//! `thresholds`: an alert rule comparing the current window with fixed
//! thresholds.
//!
//! | Key | Fires when | Severity |
//! |---|---|---|
//! | `high-error-rate` | success rate < 80% / < 50% | high / critical |
//! | `high-response-time` | mean latency > 1000 ms / > 2000 ms | medium / high |
//! | `low-throughput` | requests/s < 5 (with traffic in the window) | medium |
//! | `cache-low-hit-rate` | cache hit ratio < 50% (with a cache and hits or misses) | medium |
//! | `high-cpu` | CPU utilization > 90% | high |
//! | `high-memory` | RSS > 90% of the memory limit (when there is one) | high |
//!
//! Every threshold is configurable; the config is JSON, e.g.
//! `{"success_rate_high": 0.9, "min_requests": 50, "for_ms": 5000}`.
//! A rule with too few requests in the window (`min_requests`) does not
//! judge rates: a quiet proxy is not a failing one.

use serde::Deserialize;
use switchyard_sdk::{AlertRule, Finding, Label, RuleMeta, Severity, Snapshot, SnapshotExt};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    success_rate_high: f64,
    success_rate_critical: f64,
    mean_latency_medium_ms: f64,
    mean_latency_high_ms: f64,
    throughput_medium_rps: f64,
    cache_hit_rate_medium: f64,
    cpu_high: f64,
    memory_high: f64,
    /// Requests a window needs before rates are judged.
    min_requests: u64,
    for_ms: u32,
    keep_firing_for_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            success_rate_high: 0.80,
            success_rate_critical: 0.50,
            mean_latency_medium_ms: 1000.0,
            mean_latency_high_ms: 2000.0,
            throughput_medium_rps: 5.0,
            cache_hit_rate_medium: 0.50,
            cpu_high: 0.90,
            memory_high: 0.90,
            min_requests: 20,
            for_ms: 10_000,
            keep_firing_for_ms: 30_000,
        }
    }
}

struct Thresholds(Config);

fn finding(
    key: &str,
    active: bool,
    severity: Severity,
    value: f64,
    threshold: f64,
    summary: String,
) -> Finding {
    Finding {
        key: key.into(),
        active,
        severity,
        value,
        threshold,
        labels: vec![Label {
            key: "alertname".into(),
            value: key.into(),
        }],
        summary,
    }
}

impl AlertRule for Thresholds {
    fn init(config: &str) -> Result<Self, String> {
        switchyard_sdk::json_config("thresholds", config).map(Thresholds)
    }

    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "thresholds".into(),
            description:
                "success rate, latency, throughput, cache, CPU and memory against fixed thresholds"
                    .into(),
            for_ms: self.0.for_ms,
            keep_firing_for_ms: self.0.keep_firing_for_ms,
        }
    }

    fn evaluate(&mut self, s: &Snapshot) -> Vec<Finding> {
        let c = &self.0;
        let w = &s.current;
        let judged = w.requests >= c.min_requests;
        if !judged {
            switchyard_sdk::log::debug(&format!(
                "not judged: {} requests in the window, min_requests is {}",
                w.requests, c.min_requests
            ));
        }
        let mut out = Vec::with_capacity(6);

        let success = w.success_rate();
        let (sev, threshold) = if success < c.success_rate_critical {
            (Severity::Critical, c.success_rate_critical)
        } else {
            (Severity::High, c.success_rate_high)
        };
        out.push(finding(
            "high-error-rate",
            judged && success < c.success_rate_high,
            sev,
            success,
            threshold,
            format!(
                "success rate {:.1}% over {} requests (threshold {:.0}%)",
                success * 100.0,
                w.requests,
                threshold * 100.0
            ),
        ));

        let mean_ms = w.mean_us as f64 / 1000.0;
        let (sev, threshold) = if mean_ms > c.mean_latency_high_ms {
            (Severity::High, c.mean_latency_high_ms)
        } else {
            (Severity::Medium, c.mean_latency_medium_ms)
        };
        out.push(finding(
            "high-response-time",
            judged && mean_ms > c.mean_latency_medium_ms,
            sev,
            mean_ms,
            threshold,
            format!("mean response time {mean_ms:.0} ms (threshold {threshold:.0} ms)"),
        ));

        out.push(finding(
            "low-throughput",
            w.requests > 0 && w.rps < c.throughput_medium_rps,
            Severity::Medium,
            w.rps,
            c.throughput_medium_rps,
            format!(
                "{:.1} requests/s (threshold {:.1})",
                w.rps, c.throughput_medium_rps
            ),
        ));

        out.push(finding(
            "cache-low-hit-rate",
            s.cache_capacity_bytes > 0 && judged && w.cache_hit_ratio < c.cache_hit_rate_medium,
            Severity::Medium,
            w.cache_hit_ratio,
            c.cache_hit_rate_medium,
            format!(
                "cache hit ratio {:.1}% (threshold {:.0}%)",
                w.cache_hit_ratio * 100.0,
                c.cache_hit_rate_medium * 100.0
            ),
        ));

        out.push(finding(
            "high-cpu",
            s.cpu_utilization > c.cpu_high,
            Severity::High,
            s.cpu_utilization,
            c.cpu_high,
            format!(
                "CPU at {:.0}% (threshold {:.0}%)",
                s.cpu_utilization * 100.0,
                c.cpu_high * 100.0
            ),
        ));

        let memory = if s.memory_limit_bytes > 0 {
            s.memory_rss_bytes as f64 / s.memory_limit_bytes as f64
        } else {
            0.0
        };
        out.push(finding(
            "high-memory",
            s.memory_limit_bytes > 0 && memory > c.memory_high,
            Severity::High,
            memory,
            c.memory_high,
            format!(
                "memory at {:.0}% of the limit (threshold {:.0}%)",
                memory * 100.0,
                c.memory_high * 100.0
            ),
        ));
        out
    }
}

switchyard_sdk::export_alert_rule!(Thresholds);
