//! `slo-burn-rate`: multi-window, multi-burn-rate alerts for an availability
//! SLO, as the Google SRE workbook recommends.
//!
//! The burn rate of a window is its error rate divided by the error budget
//! (1 − objective). A fast burn pages: the 1 h and the 5 m windows both burn
//! faster than 14.4× (2% of a 30-day budget in an hour) → `critical`. A slow
//! burn opens a ticket: the 6 h and the 30 m windows both faster than 6× →
//! `high`. Requiring the short window too makes the alert stop soon after the
//! burn does.
//!
//! Config (JSON), with defaults:
//! `{"objective": 0.999, "fast_burn": 14.4, "slow_burn": 6.0, "min_requests": 10}`.

use serde::Deserialize;
use switchyard_sdk::{AlertRule, Finding, Label, RuleMeta, Severity, Snapshot, SnapshotExt};

const MINUTE: u32 = 60_000;
const HOUR: u32 = 60 * MINUTE;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    objective: f64,
    fast_burn: f64,
    slow_burn: f64,
    min_requests: u64,
    for_ms: u32,
    keep_firing_for_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            objective: 0.999,
            fast_burn: 14.4,
            slow_burn: 6.0,
            min_requests: 10,
            for_ms: 0,
            keep_firing_for_ms: 60_000,
        }
    }
}

struct SloBurnRate(Config);

impl SloBurnRate {
    fn burn(&self, s: &Snapshot, window_ms: u32) -> (f64, u64) {
        let w = s.window(window_ms);
        let budget = (1.0 - self.0.objective).max(1e-9);
        (w.error_rate() / budget, w.requests)
    }

    fn check(
        &self,
        s: &Snapshot,
        key: &str,
        long: u32,
        short: u32,
        factor: f64,
        severity: Severity,
    ) -> Finding {
        let (long_burn, long_n) = self.burn(s, long);
        let (short_burn, short_n) = self.burn(s, short);
        let enough = long_n >= self.0.min_requests && short_n >= self.0.min_requests;
        let active = enough && long_burn > factor && short_burn > factor;
        let name = |ms: u32| {
            if ms >= HOUR {
                format!("{}h", ms / HOUR)
            } else {
                format!("{}m", ms / MINUTE)
            }
        };
        Finding {
            key: key.into(),
            active,
            severity,
            value: long_burn.min(short_burn),
            threshold: factor,
            labels: vec![
                Label {
                    key: "objective".into(),
                    value: format!("{}", self.0.objective),
                },
                Label {
                    key: "windows".into(),
                    value: format!("{}/{}", name(long), name(short)),
                },
            ],
            summary: format!(
                "error budget burning {long_burn:.1}x over {} and {short_burn:.1}x over {} (alert above {factor}x)",
                name(long),
                name(short)
            ),
        }
    }
}

impl AlertRule for SloBurnRate {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("slo-burn-rate", config)?;
        if !(c.objective > 0.0 && c.objective < 1.0) {
            return Err(format!(
                "objective must be between 0 and 1 (exclusive), got {}",
                c.objective
            ));
        }
        Ok(SloBurnRate(c))
    }

    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "slo-burn-rate".into(),
            description: format!(
                "multi-window burn rate of a {}% availability SLO",
                self.0.objective * 100.0
            ),
            for_ms: self.0.for_ms,
            keep_firing_for_ms: self.0.keep_firing_for_ms,
        }
    }

    fn evaluate(&mut self, s: &Snapshot) -> Vec<Finding> {
        vec![
            self.check(
                s,
                "fast-burn",
                HOUR,
                5 * MINUTE,
                self.0.fast_burn,
                Severity::Critical,
            ),
            self.check(
                s,
                "slow-burn",
                6 * HOUR,
                30 * MINUTE,
                self.0.slow_burn,
                Severity::High,
            ),
        ]
    }
}

switchyard_sdk::export_alert_rule!(SloBurnRate);
