//! Pass/fail criteria for a bench run, as k6 thresholds: `p99<250ms`,
//! `success>99%`, `read.p99.9<=1s`, `rps>=1000`, `errors<10`.
//!
//! Grammar: `[KIND.]METRIC OP VALUE`. Metrics: `p50`, `p90`, `p95`, `p99`,
//! `p99.9`, `max`, `mean` (durations, written with a unit: `us`, `ms`, `s`),
//! `success` and `error_rate` (a percentage, `99%`, or a fraction, `0.99`),
//! `rps` (operations per second), `errors` (failed operations). `KIND`
//! restricts the metric to one operation kind (`create`, `read`, ...).
//! Operators: `<`, `<=`, `>`, `>=`. A threshold on a kind that never ran
//! fails, so a typo cannot pass silently.

use std::fmt;

use super::report::Scope;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Metric {
    /// A percentile, 0 to 100.
    Quantile(f64),
    Max,
    Mean,
    Success,
    ErrorRate,
    Rps,
    Errors,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// One parsed threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub text: String,
    kind: Option<String>,
    metric: Metric,
    op: Op,
    /// In the metric's unit: microseconds, a fraction, per second, a count.
    limit: f64,
}

/// A threshold checked against a finished run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    pub threshold: String,
    /// The measured value, in the unit the threshold was written in.
    pub value: Option<f64>,
    pub passed: bool,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_duration_us(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("µs") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|v| v * scale)
}

fn parse_fraction(s: &str) -> Option<f64> {
    match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok().map(|v| v / 100.0),
        None => s.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)),
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid threshold \"{text}\": {why}");
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact
            .find(['<', '>'])
            .ok_or_else(|| bad("expected an operator: <, <=, > or >="))?;
        let (lhs, rest) = compact.split_at(at);
        let (op, value) = match rest {
            r if r.starts_with("<=") => (Op::Le, &r[2..]),
            r if r.starts_with(">=") => (Op::Ge, &r[2..]),
            r if r.starts_with('<') => (Op::Lt, &r[1..]),
            _ => (Op::Gt, &rest[1..]),
        };
        if value.is_empty() || value.contains(['<', '>', '=']) {
            return Err(bad("expected one operator and a value after it"));
        }
        // `p99.9` contains a dot, so a kind is split off only when the whole
        // left side is not already a metric.
        let (kind, name) = match lhs.split_once('.') {
            Some((k, m)) if !is_metric(lhs) => (Some(k.to_string()), m),
            _ => (None, lhs),
        };
        let metric = match name {
            "max" => Metric::Max,
            "mean" | "avg" => Metric::Mean,
            "success" => Metric::Success,
            "error_rate" => Metric::ErrorRate,
            "rps" => Metric::Rps,
            "errors" => Metric::Errors,
            p if p.starts_with('p') => {
                let q: f64 = p[1..].parse().map_err(|_| bad("unknown metric"))?;
                if !(0.0..=100.0).contains(&q) {
                    return Err(bad("a percentile must be between p0 and p100"));
                }
                Metric::Quantile(q)
            }
            "" => return Err(bad("expected a metric before the operator")),
            _ => {
                return Err(bad(
                    "unknown metric (known: p50, p90, p99, p99.9, max, mean, success, error_rate, rps, errors)",
                ));
            }
        };
        let limit = match metric {
            Metric::Quantile(_) | Metric::Max | Metric::Mean => parse_duration_us(value)
                .ok_or_else(|| bad("expected a duration with a unit, such as 250ms"))?,
            Metric::Success | Metric::ErrorRate => parse_fraction(value).ok_or_else(|| {
                bad("expected a percentage such as 99% or a fraction such as 0.99")
            })?,
            Metric::Rps | Metric::Errors => {
                value.parse::<f64>().map_err(|_| bad("expected a number"))?
            }
        };
        Ok(Threshold {
            text: text.trim().to_string(),
            kind,
            metric,
            op,
            limit,
        })
    }
}

fn is_metric(s: &str) -> bool {
    s.strip_prefix('p')
        .is_some_and(|q| q.parse::<f64>().is_ok())
}

impl Threshold {
    /// Checks the threshold against the overall scope or the kind it names.
    pub fn check(&self, overall: &Scope, kinds: &[Scope]) -> Verdict {
        let scope = match &self.kind {
            None => Some(overall),
            Some(k) => kinds.iter().find(|s| &s.name == k),
        };
        let measured = scope.map(|s| match self.metric {
            Metric::Quantile(percent) => s.quantile_us(percent / 100.0),
            Metric::Max => s.max_us as f64,
            Metric::Mean => s.mean_us,
            Metric::Success => s.success_rate(),
            Metric::ErrorRate => 1.0 - s.success_rate(),
            Metric::Rps => s.rps,
            Metric::Errors => s.failed as f64,
        });
        let passed = measured.is_some_and(|v| match self.op {
            Op::Lt => v < self.limit,
            Op::Le => v <= self.limit,
            Op::Gt => v > self.limit,
            Op::Ge => v >= self.limit,
        });
        // Report in the unit an operator wrote: ms for latencies, % for rates.
        let value = measured.map(|v| match self.metric {
            Metric::Quantile(_) | Metric::Max | Metric::Mean => v / 1e3,
            Metric::Success | Metric::ErrorRate => v * 100.0,
            Metric::Rps | Metric::Errors => v,
        });
        Verdict {
            threshold: self.text.clone(),
            value,
            passed,
        }
    }

    /// The unit `Verdict::value` is in.
    pub fn unit(&self) -> &'static str {
        match self.metric {
            Metric::Quantile(_) | Metric::Max | Metric::Mean => "ms",
            Metric::Success | Metric::ErrorRate => "%",
            Metric::Rps => "/s",
            Metric::Errors => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_documented_forms() {
        let p99 = t("p99<250ms");
        assert_eq!(
            (p99.metric, p99.op, p99.limit),
            (Metric::Quantile(99.0), Op::Lt, 250_000.0)
        );
        let p999 = t("p99.9 <= 1s");
        assert_eq!(
            (p999.metric, p999.op, p999.limit),
            (Metric::Quantile(99.9), Op::Le, 1e6)
        );
        assert_eq!(p999.kind, None);
        let read = t("read.p99.9<2ms");
        assert_eq!(read.kind.as_deref(), Some("read"));
        assert_eq!(read.metric, Metric::Quantile(99.9));
        let success = t("success>99%");
        assert!((success.limit - 0.99).abs() < 1e-12);
        assert_eq!(t("error_rate<0.01").metric, Metric::ErrorRate);
        assert_eq!(t("rps>=1000").limit, 1000.0);
        assert_eq!(t("create.errors<1").kind.as_deref(), Some("create"));
        assert_eq!(t("max<500us").limit, 500.0);
    }

    #[test]
    fn rejects_with_a_reason() {
        for (text, why) in [
            ("p99", "expected an operator"),
            ("p99<<250ms", "one operator"),
            ("p99<250", "duration with a unit"),
            ("latency<1s", "unknown metric"),
            ("success>abc", "percentage"),
            ("p101<1s", "between p0 and p100"),
            ("<5", "expected a metric"),
        ] {
            let err = text.parse::<Threshold>().expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(
                err.starts_with(&format!("invalid threshold \"{text}\"")),
                "{err}"
            );
        }
    }
}
