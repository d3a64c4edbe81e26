//! `trend`: an alert rule that fires before a threshold is crossed, when
//! the least-squares line through a series predicts the crossing, as
//! Prometheus's `predict_linear(x[window], horizon) > threshold` does.
//!
//! The host fits the lines (`snapshot.trends`, contract 0.2.0): requests
//! per second, error rate and p99 over 1 m, 5 m, 15 m, 1 h, 6 h and 24 h.
//! Each configured prediction picks one series and window, and fires when
//! the line's value `horizon_ms` ahead is past its threshold and the line
//! is trusted: at least `min_points` points and an R² of at least
//! `min_r_squared` (a scattered series predicts nothing).
//!
//! The config is JSON:
//!
//! ```json
//! {"predictions": [{"name": "p99-heading-up", "series": "p99", "window_ms": 60000,
//!                   "above": 500, "horizon_ms": 60000, "severity": "high"}],
//!  "for_ms": 0, "keep_firing_for_ms": 30000}
//! ```
//!
//! | Key | Meaning | Default |
//! |---|---|---|
//! | `name` | the finding's key | `SERIES-heading-up` / `SERIES-heading-down` |
//! | `series` | `rps`, `error-rate` (0.0–1.0) or `p99` (milliseconds) | required |
//! | `window_ms` | the trend window (the closest of the six is used) | 900000 |
//! | `above` / `below` | the threshold, in the series' unit; exactly one | required |
//! | `horizon_ms` | how far ahead to predict | the window's length |
//! | `min_points` | points the line needs | 10 |
//! | `min_r_squared` | confidence the line needs | 0.8 |
//! | `severity` | `info`, `low`, `medium`, `high`, `critical` | `medium` |
//!
//! Without `predictions`, two are watched: p99 heading above 1000 ms and
//! the error rate heading above 5%, each over 15 minutes.

use serde::Deserialize;
use switchyard_sdk::{AlertRule, Finding, Label, RuleMeta, Severity, Snapshot, TrendSeries};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    predictions: Vec<Prediction>,
    for_ms: u32,
    keep_firing_for_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        let above = |series: &str, threshold: f64| Prediction {
            name: None,
            series: series.into(),
            window_ms: 900_000,
            above: Some(threshold),
            below: None,
            horizon_ms: None,
            min_points: 10,
            min_r_squared: 0.8,
            severity: "medium".into(),
        };
        Config {
            predictions: vec![above("p99", 1000.0), above("error-rate", 0.05)],
            for_ms: 0,
            keep_firing_for_ms: 30_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Prediction {
    name: Option<String>,
    series: String,
    #[serde(default = "default_window")]
    window_ms: u32,
    above: Option<f64>,
    below: Option<f64>,
    horizon_ms: Option<u32>,
    #[serde(default = "default_min_points")]
    min_points: u32,
    #[serde(default = "default_min_r_squared")]
    min_r_squared: f64,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_window() -> u32 {
    900_000
}
fn default_min_points() -> u32 {
    10
}
fn default_min_r_squared() -> f64 {
    0.8
}
fn default_severity() -> String {
    "medium".into()
}

/// One prediction, checked and resolved at `init`.
struct Watch {
    key: String,
    series: TrendSeries,
    unit: &'static str,
    /// Multiplier from the host's unit to the one thresholds are written in.
    scale: f64,
    window_ms: u32,
    threshold: f64,
    /// `true`: fires above the threshold; `false`: below.
    rising: bool,
    horizon_ms: Option<u32>,
    min_points: u32,
    min_r_squared: f64,
    severity: Severity,
}

impl Watch {
    fn new(p: Prediction) -> Result<Watch, String> {
        let (series, unit, scale) = match p.series.as_str() {
            "rps" => (TrendSeries::Rps, " requests/s", 1.0),
            "error-rate" => (TrendSeries::ErrorRate, "", 1.0),
            "p99" => (TrendSeries::P99, " ms", 0.001),
            other => {
                return Err(format!(
                    "series {other:?}: expected \"rps\", \"error-rate\" or \"p99\""
                ));
            }
        };
        let (threshold, rising) = match (p.above, p.below) {
            (Some(t), None) => (t, true),
            (None, Some(t)) => (t, false),
            _ => return Err(format!("{}: set exactly one of above and below", p.series)),
        };
        if !threshold.is_finite() || threshold < 0.0 {
            return Err(format!(
                "{}: threshold {threshold} must be 0 or more",
                p.series
            ));
        }
        if !(0.0..=1.0).contains(&p.min_r_squared) {
            return Err(format!(
                "{}: min_r_squared {} must be within 0.0 to 1.0",
                p.series, p.min_r_squared
            ));
        }
        let severity = match p.severity.as_str() {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            other => {
                return Err(format!(
                    "severity {other:?}: expected info, low, medium, high or critical"
                ));
            }
        };
        let way = if rising { "up" } else { "down" };
        Ok(Watch {
            key: p
                .name
                .unwrap_or_else(|| format!("{}-heading-{way}", p.series)),
            series,
            unit,
            scale,
            window_ms: p.window_ms,
            threshold,
            rising,
            horizon_ms: p.horizon_ms,
            min_points: p.min_points.max(3),
            min_r_squared: p.min_r_squared,
            severity,
        })
    }

    fn evaluate(&self, s: &Snapshot) -> Option<Finding> {
        let t = s.trend(self.series, self.window_ms)?;
        let horizon_ms = self.horizon_ms.unwrap_or(t.horizon_ms);
        let predicted = t.at(horizon_ms) * self.scale;
        let now = t.value.max(0.0) * self.scale;
        let trusted = t.points >= self.min_points && t.r_squared >= self.min_r_squared;
        let crosses = if self.rising {
            predicted >= self.threshold
        } else {
            predicted <= self.threshold
        };
        let (unit, window) = (self.unit, label_ms(t.window_ms));
        let summary = format!(
            "{} heading for {predicted:.3}{unit} in {} (now {now:.3}{unit}, {:+.3}{unit} per s, \
             R² {:.2} over {} points of the {window} window); threshold {}{unit}",
            series_name(self.series),
            label_ms(horizon_ms),
            t.slope_per_s * self.scale,
            t.r_squared,
            t.points,
            self.threshold,
        );
        let label = |key: &str, value: String| Label {
            key: key.into(),
            value,
        };
        Some(Finding {
            key: self.key.clone(),
            active: trusted && crosses,
            severity: self.severity,
            value: predicted,
            threshold: self.threshold,
            labels: vec![
                label("alertname", self.key.clone()),
                label("series", series_name(self.series).into()),
                label("window", window),
                label("current", format!("{now:.3}")),
            ],
            summary,
        })
    }
}

fn series_name(s: TrendSeries) -> &'static str {
    match s {
        TrendSeries::Rps => "rps",
        TrendSeries::ErrorRate => "error rate",
        TrendSeries::P99 => "p99",
    }
}

/// `60000` → `1m`, `21600000` → `6h`, `1500` → `1500ms`.
fn label_ms(ms: u32) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 && ms > 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

struct TrendRule {
    watches: Vec<Watch>,
    for_ms: u32,
    keep_firing_for_ms: u32,
}

impl AlertRule for TrendRule {
    fn init(config: &str) -> Result<Self, String> {
        let c: Config = switchyard_sdk::json_config("trend", config)?;
        let watches = c
            .predictions
            .into_iter()
            .map(Watch::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("trend: {e}"))?;
        let mut keys: Vec<&str> = watches.iter().map(|w| w.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(k) = keys.windows(2).find(|k| k[0] == k[1]) {
            return Err(format!("trend: two predictions are named {:?}", k[0]));
        }
        Ok(TrendRule {
            watches,
            for_ms: c.for_ms,
            keep_firing_for_ms: c.keep_firing_for_ms,
        })
    }

    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "trend".into(),
            description: "fires when a trend line predicts a threshold crossing".into(),
            for_ms: self.for_ms,
            keep_firing_for_ms: self.keep_firing_for_ms,
        }
    }

    fn evaluate(&mut self, s: &Snapshot) -> Vec<Finding> {
        self.watches.iter().filter_map(|w| w.evaluate(s)).collect()
    }
}

switchyard_sdk::export_alert_rule!(TrendRule);
